//! `cargo xtask bench`: how close knet comes to the machine's physical
//! limit, and how it compares with what users run instead, measured side by
//! side in one run and reported as ratios (../shared/bench.md).
//!
//! Every data plane of a case is built up front in its own namespaces; the
//! repetitions interleave the planes so that the machine's noise falls on
//! all of them alike.

mod control_plane;
mod kube_rules;
mod pod_creation;
mod report;
mod topologies;

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::{build, root, setup, step, test::require_root};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Repetitions of every measurement (interleaved across data planes).
    #[arg(long, default_value_t = 5)]
    reps: u32,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// iperf3 parallel stream counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    streams: Vec<u32>,
    /// Seconds of sockperf ping-pong per plane and repetition (0: none).
    #[arg(long, default_value_t = 3)]
    latency_seconds: u32,
    /// Load every node with this many kube-proxy-style iptables rules
    /// (reported as its own case).
    #[arg(long, default_value_t = 0)]
    node_rules: u32,
    /// Cases to run.
    #[arg(long, value_delimiter = ',', default_value = "same-node,cross-node,control-plane")]
    cases: Vec<Case>,
    /// One short repetition of every case (1 s transfers, 1 stream, 1 s of
    /// latency): proves every data plane builds and measures, as CI runs
    /// it; its figures are not for comparing.
    #[arg(long)]
    quick: bool,
}

impl BenchArgs {
    /// The settings `--quick` stands for, over whatever else was given.
    fn effective(mut self) -> Self {
        if self.quick {
            self.reps = 1;
            self.seconds = 1;
            self.streams = vec![1];
            self.latency_seconds = self.latency_seconds.min(1);
            self.cases = vec![Case::SameNode, Case::CrossNode, Case::ControlPlane];
        }
        self
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Case {
    SameNode,
    CrossNode,
    /// Node programming, watch-event latency, memory and CNI ADD timing
    /// against the Kubernetes source.
    ControlPlane,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::SameNode => "same-node",
            Case::CrossNode => "cross-node",
            Case::ControlPlane => "control-plane",
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub case: String,
    pub plane: String,
    pub streams: u32,
    pub rep: u32,
    pub gbit_per_s: f64,
}

/// One latency measurement: sockperf TCP ping-pong, half round trip.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencySample {
    pub case: String,
    pub plane: String,
    pub rep: u32,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// A speed target: `plane` >= `ratio` x `baseline` in `case`.
pub struct Target {
    pub case: &'static str,
    pub plane: &'static str,
    pub baseline: &'static str,
    pub ratio: f64,
}

impl Target {
    /// A case's targets hold on loaded nodes too (`same-node/5000-rules`).
    pub fn applies_to(&self, case: &str) -> bool {
        case == self.case || case.strip_prefix(self.case).is_some_and(|rest| rest.starts_with('/'))
    }
}

const TARGETS: &[Target] = &[
    Target { case: "same-node", plane: "knet", baseline: "veth-direct", ratio: 0.97 },
    Target { case: "same-node", plane: "knet", baseline: "kernel-routed", ratio: 1.10 },
    Target { case: "cross-node", plane: "knet-vxlan", baseline: "flannel-vxlan", ratio: 1.15 },
    Target { case: "cross-node", plane: "knet-native", baseline: "host-gw", ratio: 1.05 },
    Target { case: "cross-node", plane: "knet-native", baseline: "underlay", ratio: 0.95 },
];

pub fn run(args: BenchArgs) -> Result<()> {
    require_root("cargo xtask bench")?;
    let args = args.effective();
    let tc = setup::ensure_ready()?;
    // Release binaries: the control plane's costs are the agent's own, and a
    // debug build would measure the compiler's settings instead.
    let bin_dir = build::all(&tc, true)?;
    std::env::set_var("KNET_AGENT_BIN", bin_dir.join("knet-agent"));
    std::env::set_var("KNET_CNI_BIN", bin_dir.join("knet"));

    let mut samples = Vec::new();
    let mut latencies = Vec::new();
    let mut control = Vec::new();
    for case in &args.cases {
        if let Case::ControlPlane = case {
            step("control plane: an agent watching the Kubernetes test API server");
            control = control_plane::run(args.reps, |line| eprintln!("  control-plane {line}"))?;
            step("control plane: RunPodSandbox through containerd, knet against the reference bridge plugin");
            for (plugin, rep, ms) in pod_creation::measure(args.reps)? {
                let metric = if plugin == "knet" { control_plane::SANDBOX_KNET } else { control_plane::SANDBOX_BRIDGE };
                eprintln!("  control-plane {metric} rep {rep}: {ms:.1} ms");
                control.push(control_plane::ControlSample { metric, unit: "ms", rep, value: ms });
            }
            continue;
        }
        step(format!("building the {} data planes", case.name()));
        let planes = match case {
            Case::SameNode => topologies::same_node()?,
            Case::CrossNode => topologies::cross_node()?,
            Case::ControlPlane => unreachable!("measured above"),
        };
        let case_name = match args.node_rules {
            0 => case.name().to_string(),
            n => format!("{}/{n}-rules", case.name()),
        };
        if args.node_rules > 0 {
            let script = kube_rules::ruleset(args.node_rules);
            for plane in &planes {
                for ns in plane.nodes() {
                    kube_rules::load(ns, &script)?;
                }
            }
        }
        let total = args.reps as usize * args.streams.len() * planes.len();
        let mut done = 0;
        for rep in 1..=args.reps {
            for &streams in &args.streams {
                for plane in &planes {
                    let gbit = plane
                        .measure(args.seconds, streams)
                        .with_context(|| format!("{case_name} {} ({streams} streams)", plane.name))?;
                    done += 1;
                    eprintln!(
                        "  [{done:>3}/{total}] {case_name} {:<14} {streams} stream(s) rep {rep}: {gbit:6.2} Gbit/s",
                        plane.name
                    );
                    samples.push(Sample {
                        case: case_name.clone(),
                        plane: plane.name.into(),
                        streams,
                        rep,
                        gbit_per_s: gbit,
                    });
                }
            }
            if args.latency_seconds > 0 {
                for plane in &planes {
                    let l = plane
                        .latency(args.latency_seconds)
                        .with_context(|| format!("{case_name} {} latency", plane.name))?;
                    eprintln!(
                        "  {case_name} {:<14} latency rep {rep}: p50 {:6.1} us, p99 {:6.1} us",
                        plane.name, l.p50_us, l.p99_us
                    );
                    latencies.push(LatencySample {
                        case: case_name.clone(),
                        plane: plane.name.into(),
                        rep,
                        p50_us: l.p50_us,
                        p99_us: l.p99_us,
                    });
                }
            }
        }
    }

    let table = report::table(&samples, TARGETS);
    println!("{table}");
    if !latencies.is_empty() {
        println!("{}", report::latency_table(&latencies));
    }
    if !control.is_empty() {
        println!("{}", control_plane::table(&control));
    }
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let json = dir.join(format!("bench-{stamp}.json"));
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&{
            let mut json = report::json(&samples, &latencies, &args.streams, args.seconds);
            json["control_plane"] = serde_json::to_value(&control)?;
            json
        })?,
    )?;
    let svg = dir.join(format!("bench-{stamp}.svg"));
    std::fs::write(&svg, report::svg(&samples, TARGETS))?;
    step(format!("samples in {}, chart in {}", json.display(), svg.display()));
    Ok(())
}
