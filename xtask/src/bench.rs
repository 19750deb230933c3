//! `cargo xtask bench`: how close knet comes to the machine's physical
//! limit, and how it compares with what users run instead, measured side by
//! side in one run and reported as ratios (../shared/bench.md).
//!
//! Every data plane of a case is built up front in its own namespaces; the
//! repetitions interleave the planes so that the machine's noise falls on
//! all of them alike.

mod control_plane;
mod kube_rules;
mod machine;
mod pod_creation;
mod report;
mod topologies;

use std::{
    io::IsTerminal,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};

use crate::{build, root, setup, step, test::require_root};

#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    /// Repetitions of every measurement (interleaved across data planes).
    #[arg(long, default_value_t = 5)]
    reps: u32,
    /// Seconds per iperf3 run (TCP and UDP).
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// iperf3 TCP parallel stream counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    streams: Vec<u32>,
    /// Seconds of sockperf ping-pong per plane and repetition (0: none).
    #[arg(long, default_value_t = 3)]
    latency_seconds: u32,
    /// Node loads to measure the same-node and cross-node cases on: 0 is
    /// clean nodes, N loads every node with N kube-proxy-style iptables
    /// rules (a case of its own, `CASE/N-rules`, measured with 1 stream,
    /// UDP and latency).
    #[arg(long, value_delimiter = ',', default_value = "0,5000")]
    node_rules: Vec<u32>,
    /// Cases to run.
    #[arg(long, value_delimiter = ',', default_value = "same-node,cross-node,scaling,control-plane")]
    cases: Vec<Case>,
    /// Only the measurements whose `CASE/METRIC` contains one of these
    /// (`cross-node`, `udp64`, `same-node/tcp-1`, `latency`, `control-plane`).
    #[arg(long, value_delimiter = ',')]
    filter: Vec<String>,
    /// One short repetition of every case (1 s transfers, 1 stream, 1 s of
    /// latency): proves every data plane builds and measures, as CI runs
    /// it; its figures are not for comparing.
    #[arg(long)]
    quick: bool,
    /// Another knet build measured beside this one, as NAME=AGENT_BINARY
    /// (repeatable): its planes are `knet@NAME`, `knet-vxlan@NAME`, ... in
    /// the same interleaved repetitions, so two builds are compared under
    /// the same noise.
    #[arg(long = "variant")]
    variants: Vec<topologies::Variant>,
}

impl BenchArgs {
    /// The settings `--quick` stands for, over whatever else was given.
    fn effective(mut self) -> Self {
        if self.quick {
            self.reps = 1;
            self.seconds = 1;
            self.streams = vec![1];
            self.latency_seconds = self.latency_seconds.min(1);
        }
        self
    }

    /// Loads are applied in the order given, each on the nodes of the one
    /// before: rules can be added, never taken away, and there is one rule
    /// set (kube-proxy's chains are written once).
    fn check(&self) -> Result<()> {
        let nonzero = self.node_rules.iter().filter(|&&n| n > 0).count();
        if nonzero > 1 || self.node_rules.windows(2).any(|w| w[0] >= w[1]) {
            anyhow::bail!(
                "--node-rules {:?}: give 0 (clean nodes), one rule count, or 0 then one count (0,5000)",
                self.node_rules
            );
        }
        Ok(())
    }

    fn wants(&self, key: &str) -> bool {
        self.filter.is_empty() || self.filter.iter().any(|f| key.contains(f.as_str()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Case {
    SameNode,
    CrossNode,
    /// Cross-node knet-vxlan with 3, 1,000 and 10,000 node subnets in its
    /// map, and with 250 pods per node.
    Scaling,
    /// Node programming, watch-event latency, memory and CNI ADD timing
    /// against the Kubernetes source, and pod creation through the CRI.
    ControlPlane,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::SameNode => "same-node",
            Case::CrossNode => "cross-node",
            Case::Scaling => "scaling",
            Case::ControlPlane => "control-plane",
        }
    }
}

/// What one measurement of a plane runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// iperf3 TCP with this many streams, and its CPU cost.
    Tcp(u32),
    /// iperf3 UDP with 64-byte datagrams: packets per second delivered.
    Udp64,
    /// sockperf TCP ping-pong.
    Latency,
}

impl Measure {
    fn key(self) -> String {
        match self {
            Measure::Tcp(n) => format!("tcp-{n}"),
            Measure::Udp64 => "udp64".into(),
            Measure::Latency => "latency".into(),
        }
    }
}

/// One figure of one plane in one repetition. Every metric is a series of
/// these: `tcp-4` (Gbit/s), `tcp-4 cpu sender` (cores per Gbit/s),
/// `udp64` (Mpps), `latency p99` (us), ...
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub case: String,
    pub plane: String,
    pub metric: String,
    pub unit: &'static str,
    pub rep: u32,
    pub value: f64,
}

/// What to measure in a case: (measurements in the order they run).
fn plan(args: &BenchArgs, case: Case, rules: u32) -> Vec<Measure> {
    let mut plan: Vec<Measure> = match (case, rules) {
        (Case::Scaling, _) => vec![Measure::Tcp(1)],
        (_, 0) => args.streams.iter().map(|&n| Measure::Tcp(n)).chain([Measure::Udp64]).collect(),
        // Loaded nodes: what the rules could change (per-packet and
        // per-connection cost), not every stream count again.
        _ => vec![Measure::Tcp(1), Measure::Udp64],
    };
    if args.latency_seconds > 0 {
        plan.push(Measure::Latency);
    }
    plan
}

fn case_name(case: Case, rules: u32) -> String {
    match rules {
        0 => case.name().to_string(),
        n => format!("{}/{n}-rules", case.name()),
    }
}

/// Counts a case's measurements done against those planned, and says how
/// long the case has left (its planes are built, so their number is known).
struct Progress {
    case: String,
    done: usize,
    total: usize,
    started: Instant,
    tty: bool,
}

impl Progress {
    fn start_case(&mut self, case: &str, total: usize) {
        self.finish();
        *self = Progress { case: case.into(), done: 0, total, started: Instant::now(), tty: self.tty };
    }

    fn line(&mut self, text: &str) {
        self.done += 1;
        let per = self.started.elapsed().as_secs_f64() / self.done as f64;
        let left = (self.total.saturating_sub(self.done) as f64 * per) as u64;
        let line = format!(
            "  [{:>4}/{} of {}, ~{}m{:02}s left in it] {text}",
            self.done,
            self.total,
            self.case,
            left / 60,
            left % 60
        );
        if self.tty {
            // One live line on a terminal; a log keeps every line.
            eprint!("\r\x1b[K{line}");
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        if self.tty && self.done > 0 {
            eprintln!();
        }
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    require_root("cargo xtask bench")?;
    let args = args.effective();
    args.check()?;
    // Taken before anything is measured: the commit and the tree measured,
    // not whatever the checkout holds when the run ends.
    let machine = machine::describe();
    let tc = setup::ensure_ready()?;
    // Release binaries: the control plane's costs are the agent's own, and a
    // debug build would measure the compiler's settings instead.
    let bin_dir = build::all(&tc, true)?;
    std::env::set_var("KNET_AGENT_BIN", bin_dir.join("knet-agent"));
    std::env::set_var("KNET_CNI_BIN", bin_dir.join("knet"));

    let data_cases: Vec<Case> = args.cases.iter().copied().filter(|c| *c != Case::ControlPlane).collect();
    let rules_of = |case: Case| -> Vec<u32> {
        if case == Case::Scaling {
            vec![0]
        } else {
            args.node_rules.clone()
        }
    };
    let wanted = |case: Case, rules: u32| -> Vec<Measure> {
        let name = case_name(case, rules);
        plan(&args, case, rules).into_iter().filter(|m| args.wants(&format!("{name}/{}", m.key()))).collect()
    };
    let mut progress = Progress {
        case: String::new(),
        done: 0,
        total: 0,
        started: Instant::now(),
        tty: std::io::stderr().is_terminal(),
    };

    let mut samples = Vec::new();
    for &case in &data_cases {
        let loads: Vec<(u32, Vec<Measure>)> =
            rules_of(case).into_iter().map(|r| (r, wanted(case, r))).filter(|(_, m)| !m.is_empty()).collect();
        if loads.is_empty() {
            continue;
        }
        step(format!("building the {} data planes", case.name()));
        let planes = match case {
            Case::SameNode => topologies::same_node(&args.variants)?,
            Case::CrossNode => topologies::cross_node(&args.variants)?,
            Case::Scaling => topologies::scaling()?,
            Case::ControlPlane => unreachable!("not a data plane case"),
        };
        let total = loads.iter().map(|(_, m)| m.len()).sum::<usize>() * planes.len() * args.reps as usize;
        progress.start_case(case.name(), total);
        let mut loaded = 0;
        for (rules, measures) in loads {
            let name = case_name(case, rules);
            if rules > loaded {
                let script = kube_rules::ruleset(rules);
                for plane in &planes {
                    for ns in plane.nodes() {
                        kube_rules::load(ns, &script)?;
                    }
                }
                loaded = rules;
            }
            for rep in 1..=args.reps {
                for &m in &measures {
                    for plane in &planes {
                        let got = measure(&args, plane, m, &name, rep)
                            .with_context(|| format!("{name} {} {}", plane.name, m.key()))?;
                        let shown = got.first().map(|s| format!("{:.2} {}", s.value, s.unit)).unwrap_or_default();
                        progress.line(&format!("{name} {} {} rep {rep}: {shown}", plane.name, m.key()));
                        samples.extend(got);
                    }
                }
            }
        }
    }
    progress.finish();

    let mut control = Vec::new();
    if args.cases.contains(&Case::ControlPlane) && args.wants("control-plane") {
        step("control plane: an agent watching the Kubernetes test API server");
        control = control_plane::run(args.reps, |line| eprintln!("  control-plane {line}"))?;
        step("control plane: RunPodSandbox through containerd, knet against the reference bridge plugin");
        for (plugin, rep, ms) in pod_creation::measure(args.reps)? {
            let metric = if plugin == "knet" { control_plane::SANDBOX_KNET } else { control_plane::SANDBOX_BRIDGE };
            eprintln!("  control-plane {metric} rep {rep}: {ms:.1} ms");
            control.push(control_plane::ControlSample { metric, unit: "ms", rep, value: ms });
        }
    }

    println!("{}", report::tables(&samples));
    println!("{}", report::ratio_table(&samples, report::TARGETS));
    if !control.is_empty() {
        println!("{}", control_plane::table(&control));
    }
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let json = dir.join(format!("bench-{stamp}.json"));
    let settings = serde_json::json!({
        "reps": args.reps,
        "seconds": args.seconds,
        "streams": args.streams,
        "latency_seconds": args.latency_seconds,
        "node_rules": args.node_rules,
        "quick": args.quick,
        "filter": args.filter,
        "variants": args.variants.iter().map(|v| format!("{}={}", v.name, v.agent_bin.display())).collect::<Vec<_>>(),
    });
    let body = serde_json::json!({
        "machine": machine,
        "settings": settings,
        "samples": samples,
        "ratios": report::ratios_json(&samples, report::TARGETS),
        "control_plane": control,
    });
    std::fs::write(&json, serde_json::to_string_pretty(&body)?)?;
    let svg = dir.join(format!("bench-{stamp}.svg"));
    std::fs::write(&svg, report::svg(&samples, report::TARGETS))?;
    step(format!("samples in {}, chart in {}", json.display(), svg.display()));
    Ok(())
}

/// One measurement of one plane: its samples (the headline figure first).
fn measure(args: &BenchArgs, plane: &topologies::Plane, m: Measure, case: &str, rep: u32) -> Result<Vec<Sample>> {
    let sample = |metric: String, unit, value| Sample {
        case: case.to_string(),
        plane: plane.name.clone(),
        metric,
        unit,
        rep,
        value,
    };
    let key = m.key();
    Ok(match m {
        Measure::Tcp(streams) => {
            let t = plane.tcp(args.seconds, streams)?;
            let mut out = vec![sample(key.clone(), "Gbit/s", t.gbit_per_s)];
            out.extend(cpu_samples(&key, t.cpu, t.gbit_per_s * f64::from(args.seconds), "cores per Gbit/s", &sample));
            out
        }
        Measure::Udp64 => {
            let r = plane.udp(args.seconds, 64)?;
            let mpps = r.delivered_pps / 1e6;
            let mut out = vec![sample(key.clone(), "Mpps", mpps)];
            out.push(sample(format!("{key} sent"), "Mpps", r.sent_pps / 1e6));
            out.extend(cpu_samples(&key, r.cpu, mpps * f64::from(args.seconds), "cores per Mpps", &sample));
            out
        }
        Measure::Latency => {
            let l = plane.latency(args.latency_seconds)?;
            vec![
                sample("latency p50".into(), "us", l.p50_us),
                sample("latency p99".into(), "us", l.p99_us),
                sample("latency p99.9".into(), "us", l.p999_us),
            ]
        }
    })
}

/// CPU per unit of work: busy CPU-seconds over the work done in the run
/// (Gbit, or millions of packets), which is cores per (Gbit/s or Mpps).
fn cpu_samples(
    key: &str,
    cpu: Option<knet_tests::traffic::CpuUse>,
    work: f64,
    unit: &'static str,
    sample: &impl Fn(String, &'static str, f64) -> Sample,
) -> Vec<Sample> {
    let Some(cpu) = cpu.filter(|_| work > 0.0) else { return vec![] };
    vec![
        sample(format!("{key} cpu"), unit, (cpu.client_s + cpu.server_s) / work),
        sample(format!("{key} cpu sender"), unit, cpu.client_s / work),
        sample(format!("{key} cpu receiver"), unit, cpu.server_s / work),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn args(extra: &[&str]) -> BenchArgs {
        Cli::parse_from(std::iter::once("bench").chain(extra.iter().copied())).bench.effective()
    }

    #[test]
    fn the_default_run_measures_everything_the_issue_names() {
        let a = args(&[]);
        assert_eq!(a.reps, 5);
        assert_eq!(a.node_rules, vec![0, 5000]);
        let clean: Vec<String> = plan(&a, Case::CrossNode, 0).iter().map(|m| m.key()).collect();
        assert_eq!(clean, ["tcp-1", "tcp-4", "tcp-8", "udp64", "latency"]);
        let loaded: Vec<String> = plan(&a, Case::SameNode, 5000).iter().map(|m| m.key()).collect();
        assert_eq!(loaded, ["tcp-1", "udp64", "latency"]);
        assert_eq!(case_name(Case::SameNode, 5000), "same-node/5000-rules");
        assert!(a.check().is_ok());
        assert!(args(&["--node-rules", "5000"]).check().is_ok());
        assert!(args(&["--node-rules", "0,1000,5000"]).check().is_err(), "one rule set only");
        assert!(args(&["--node-rules", "5000,0"]).check().is_err(), "rules are never taken away");
    }

    #[test]
    fn quick_is_one_short_repetition_of_every_case() {
        let a = args(&["--quick"]);
        assert_eq!((a.reps, a.seconds, a.latency_seconds), (1, 1, 1));
        assert_eq!(a.streams, vec![1]);
        assert_eq!(a.cases.len(), 4);
    }

    #[test]
    fn a_filter_keeps_the_measurements_it_names() {
        let a = args(&["--filter", "cross-node/tcp,udp64"]);
        assert!(a.wants("cross-node/tcp-4"));
        assert!(a.wants("same-node/udp64"));
        assert!(!a.wants("same-node/tcp-1"));
        assert!(!a.wants("control-plane"));
        assert!(args(&[]).wants("control-plane"));
    }

    #[test]
    fn cpu_cost_is_busy_time_over_work() {
        let s = |metric, unit, value| Sample { case: "c".into(), plane: "p".into(), metric, unit, rep: 1, value };
        let cpu = knet_tests::traffic::CpuUse { client_s: 3.0, server_s: 1.0 };
        let out = cpu_samples("tcp-1", Some(cpu), 50.0, "cores per Gbit/s", &s);
        let v: Vec<(String, f64)> = out.into_iter().map(|s| (s.metric, s.value)).collect();
        assert_eq!(
            v,
            [("tcp-1 cpu".into(), 0.08), ("tcp-1 cpu sender".into(), 0.06), ("tcp-1 cpu receiver".into(), 0.02)]
        );
        assert!(cpu_samples("tcp-1", Some(cpu), 0.0, "u", &s).is_empty(), "no work, no cost per unit");
    }
}
