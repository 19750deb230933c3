//! `cargo xtask run`: a sandbox cluster out of network namespaces. Node
//! namespaces on an underlay bridge, one real agent per node with the
//! static node file, pods added through the knet CNI plugin exactly as a
//! container runtime adds them; then the topology, the full connectivity
//! matrix and every node's data path counters. It stays up until Ctrl-C
//! (or `--duration`) and tears everything down, CNI DEL of every pod first.

use std::{
    io::Write,
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use knet_agent::config::Mode;
use knet_common::Stat;
use knet_tests::{
    cluster::{self, Cluster},
    traffic::{self, IperfOptions},
    Netns,
};
use serde::Deserialize;

use crate::{build, setup, step, test::require_root};

const DEFAULT_SANDBOX: &str = include_str!("../sandbox.toml");

/// Bounds of the sandbox's addressing (see `knet_tests::cluster`): node
/// `i` is 192.168.77.(10+i) with pod CIDR 10.244.i.0/24.
const MAX_NODES: u32 = 64;
const MAX_PODS: u32 = 200;

#[derive(clap::Args)]
pub struct RunArgs {
    /// A sandbox file like xtask/sandbox.toml (the embedded default otherwise).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Node namespaces on the underlay bridge.
    #[arg(long)]
    nodes: Option<u32>,
    /// Pods per node.
    #[arg(long)]
    pods: Option<u32>,
    /// How traffic crosses between nodes.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Tear down after this many seconds instead of waiting for Ctrl-C.
    #[arg(long)]
    duration: Option<u64>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Sandbox {
    nodes: u32,
    pods: u32,
    mode: Mode,
}

impl Sandbox {
    /// The file's settings with the flags on top, checked.
    fn resolve(text: &str, args: &RunArgs) -> Result<Self> {
        let mut s: Sandbox = toml::from_str(text).context("invalid sandbox config")?;
        s.nodes = args.nodes.unwrap_or(s.nodes);
        s.pods = args.pods.unwrap_or(s.pods);
        s.mode = args.mode.unwrap_or(s.mode);
        if !(1..=MAX_NODES).contains(&s.nodes) {
            bail!("nodes must be 1..={MAX_NODES}, not {}", s.nodes);
        }
        if !(1..=MAX_PODS).contains(&s.pods) {
            bail!("pods must be 1..={MAX_PODS} per node, not {}", s.pods);
        }
        Ok(s)
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    require_root("cargo xtask run")?;
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
        None => DEFAULT_SANDBOX.to_string(),
    };
    let sandbox = Sandbox::resolve(&text, &args)?;
    let tc = setup::ensure_ready()?;
    // The debug build is where the harness looks for the agent and the plugin.
    build::all(&tc, false)?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }

    step(format!(
        "building the sandbox: {} nodes, {} pods each, {} mode, pods added through the knet CNI plugin",
        sandbox.nodes, sandbox.pods, sandbox.mode
    ));
    let cluster = Cluster::with_cni(sandbox.nodes as usize, sandbox.pods as usize, sandbox.mode)?;
    let outcome = report(&cluster, &sandbox, &stop);
    if outcome.is_ok() {
        let deadline = args.duration.map(|s| Instant::now() + Duration::from_secs(s));
        match args.duration {
            Some(s) => println!("\nup for {s}s; Ctrl-C to stop sooner"),
            None => {
                let (a, b) = (&cluster.pods[0][0], cluster.all_pods().last().expect("a pod").1);
                println!("\nup; try `ip netns exec {} ping {}`. Ctrl-C tears it all down.", a.ns.name(), b.ip)
            }
        }
        while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    step("tearing down (CNI DEL of every pod, then the agents and namespaces)");
    drop(cluster);
    step("done");
    outcome
}

/// Topology, matrix and counters; an error if any connectivity check failed.
fn report(cluster: &Cluster, sandbox: &Sandbox, stop: &AtomicBool) -> Result<()> {
    print_topology(cluster, sandbox)?;
    let failures = print_matrix(cluster, stop)?;
    print_stats(cluster, sandbox)?;
    if failures > 0 {
        bail!("{failures} connectivity checks failed");
    }
    Ok(())
}

fn print_topology(cluster: &Cluster, sandbox: &Sandbox) -> Result<()> {
    let nodes_file = cluster.nodes_file();
    println!("\nsandbox: {} nodes, {} mode", sandbox.nodes, sandbox.mode);
    println!("  underlay bridge br0 in netns {}", cluster.fabric.name());
    println!("  outside host {} (netns {})", cluster::OUTSIDE, cluster.outside.name());
    println!("  node file {}:", nodes_file.display());
    for line in std::fs::read_to_string(&nodes_file)?.lines() {
        println!("    {line}");
    }
    let mut attachments = cluster.attachments.iter();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let agent = &cluster.agents[i];
        let view = agent.node()?;
        println!(
            "\nnode {} (netns {}), underlay {} on eth0, pod CIDR {}, route MTU {}",
            view.node_name,
            node.ns.name(),
            node.address,
            view.pod_cidr,
            view.route_mtu.map_or_else(|| "the device's".to_string(), |m| m.to_string()),
        );
        println!("  agent API socket {}", agent.socket().display());
        if let Some(net) = cluster.networks.get(i) {
            let plugin = net.plugin.canonicalize().unwrap_or_else(|_| net.plugin.clone());
            println!("  CNI: knet plugin {}, host-local data {}", plugin.display(), net.data_dir.0.display());
        }
        for pod in &cluster.pods[i] {
            let container = attachments.next().map(|a| a.container_id.as_str()).unwrap_or("-");
            println!(
                "  pod {:<12} netns {:<24} host veth {:<15} mac {}  container {container}",
                pod.ip,
                pod.ns.name(),
                pod.host_veth,
                pod.mac
            );
        }
    }
    Ok(())
}

/// One end of the matrix: a pod or a node.
struct End<'a> {
    name: String,
    ns: &'a Netns,
    ip: Ipv4Addr,
}

const CELL: usize = 18;

/// Ping and a short iperf3 TCP transfer from every pod and node to every
/// other; the number of failed checks. Ctrl-C stops it between rows.
fn print_matrix(cluster: &Cluster, stop: &AtomicBool) -> Result<usize> {
    let mut ends: Vec<End> = cluster
        .pods
        .iter()
        .enumerate()
        .flat_map(|(i, pods)| {
            pods.iter().enumerate().map(move |(j, p)| End { name: format!("n{i}p{j}"), ns: &p.ns, ip: p.ip })
        })
        .collect();
    ends.extend(cluster.nodes.iter().enumerate().map(|(i, n)| End {
        name: cluster::node_name(i),
        ns: &n.ns,
        ip: n.address,
    }));
    println!("\nconnectivity, every pod and node to every pod and node (ping / 1 s iperf3 TCP):");
    print!("  {:<22}", "from \\ to");
    for e in &ends {
        print!(" {:<CELL$}", e.name);
    }
    print!("\n  {:<22}", "");
    for e in &ends {
        print!(" {:<CELL$}", e.ip);
    }
    println!();
    let mut failures = 0;
    let opts = IperfOptions { seconds: 1, ..Default::default() };
    for from in &ends {
        if stop.load(Ordering::Relaxed) {
            println!("  (interrupted)");
            break;
        }
        print!("  {:<22}", format!("{} {}", from.name, from.ip));
        for to in &ends {
            if from.ip == to.ip {
                print!(" {:<CELL$}", "-");
                continue;
            }
            let ping = traffic::ping(from.ns, to.ip, 2).is_ok();
            let tcp = traffic::iperf3(from.ns, to.ns, to.ip, opts).map(|t| format!("{:.1}G", t.bits_per_second / 1e9));
            failures += usize::from(!ping) + usize::from(tcp.is_err());
            let cell = format!("{} / {}", if ping { "ok" } else { "FAIL" }, tcp.unwrap_or_else(|_| "FAIL".into()));
            print!(" {cell:<CELL$}");
            let _ = std::io::stdout().flush();
        }
        println!();
    }
    if failures == 0 {
        println!("  all ok");
    }
    Ok(failures)
}

/// Every node's `STATS`: the forwarding counters and the drops.
fn print_stats(cluster: &Cluster, sandbox: &Sandbox) -> Result<()> {
    let cross = if sandbox.mode == Mode::Vxlan { Stat::RedirectTunnel } else { Stat::RedirectNative };
    let columns = [Stat::RedirectLocal, cross, Stat::DeliverFromNode, Stat::PassToStack];
    println!("\ndata path counters per node (packets, GET /v1/stats):");
    print!("  {:<8}", "node");
    for c in columns {
        print!(" {:>18}", c.name());
    }
    println!(" {:>8}  drops by reason", "drops");
    for (i, agent) in cluster.agents.iter().enumerate() {
        let stats = agent.stats()?;
        let packets = |stat: Stat| stats.iter().find(|(s, _)| *s == stat).map_or(0, |(_, c)| c.packets);
        print!("  {:<8}", cluster::node_name(i));
        for c in columns {
            print!(" {:>18}", packets(c));
        }
        let drops: Vec<(Stat, u64)> = stats.iter().filter(|(s, _)| s.is_drop()).map(|(s, c)| (*s, c.packets)).collect();
        let total: u64 = drops.iter().map(|(_, n)| n).sum();
        let named: Vec<String> =
            drops.iter().filter(|(_, n)| *n > 0).map(|(s, n)| format!("{} {n}", s.name())).collect();
        println!(" {total:>8}  {}", if named.is_empty() { "-".to_string() } else { named.join(", ") });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(nodes: Option<u32>, pods: Option<u32>, mode: Option<Mode>) -> RunArgs {
        RunArgs { config: None, nodes, pods, mode, duration: None }
    }

    #[test]
    fn the_embedded_default_is_two_nodes_two_pods_vxlan() {
        let s = Sandbox::resolve(DEFAULT_SANDBOX, &args(None, None, None)).unwrap();
        assert_eq!(s, Sandbox { nodes: 2, pods: 2, mode: Mode::Vxlan });
    }

    #[test]
    fn flags_override_the_file() {
        let s = Sandbox::resolve(DEFAULT_SANDBOX, &args(Some(3), Some(1), Some(Mode::Native))).unwrap();
        assert_eq!(s, Sandbox { nodes: 3, pods: 1, mode: Mode::Native });
    }

    #[test]
    fn out_of_range_and_unknown_settings_are_refused() {
        assert!(Sandbox::resolve(DEFAULT_SANDBOX, &args(Some(0), None, None)).is_err());
        assert!(Sandbox::resolve(DEFAULT_SANDBOX, &args(None, Some(MAX_PODS + 1), None)).is_err());
        assert!(Sandbox::resolve("nodes = 2\npods = 2\nmode = \"gre\"\n", &args(None, None, None)).is_err());
        assert!(
            Sandbox::resolve("nodes = 2\npods = 2\nmode = \"vxlan\"\nextra = 1\n", &args(None, None, None)).is_err()
        );
    }
}
