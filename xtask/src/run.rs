//! `cargo xtask run`: a sandbox node with pods as network namespaces,
//! wired through a real agent, its connectivity matrix, then it stays up
//! until Ctrl-C and tears everything down.

use std::{
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use knet_tests::{
    traffic::{self, IperfOptions},
    Agent, AgentOptions, Netns, Node, Pod,
};
use serde::Deserialize;

use crate::{build, setup, step, test::require_root};

const DEFAULT_SANDBOX: &str = include_str!("../sandbox.toml");

#[derive(clap::Args)]
pub struct RunArgs {
    /// A sandbox file like xtask/sandbox.toml (the embedded default otherwise).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Tear down after this many seconds instead of waiting for Ctrl-C.
    #[arg(long)]
    duration: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sandbox {
    node_name: String,
    pod_cidr: String,
    node_address: Ipv4Addr,
    pods: u8,
}

impl Sandbox {
    fn pod_ips(&self) -> Result<Vec<Ipv4Addr>> {
        let (net, len) = self.pod_cidr.split_once('/').context("pod_cidr needs a prefix length")?;
        let net: Ipv4Addr = net.parse().context("pod_cidr")?;
        let len: u32 = len.parse().context("pod_cidr prefix")?;
        let room = 2u32.saturating_pow(32 - len.min(32)).saturating_sub(2);
        if u32::from(self.pods) > room {
            bail!("{} pods do not fit in {}", self.pods, self.pod_cidr);
        }
        Ok((0..u32::from(self.pods)).map(|i| Ipv4Addr::from(u32::from(net) + 2 + i)).collect())
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    require_root("cargo xtask run")?;
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
        None => DEFAULT_SANDBOX.to_string(),
    };
    let sandbox: Sandbox = toml::from_str(&text).context("invalid sandbox config")?;
    let tc = setup::ensure_ready()?;
    // The debug build is where the harness looks for the agent.
    build::all(&tc, false)?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }

    step("building the sandbox");
    let node = Node::new("sandbox-node", sandbox.node_address)?;
    let pods: Vec<Pod> = sandbox
        .pod_ips()?
        .into_iter()
        .enumerate()
        .map(|(i, ip)| node.add_pod(&format!("sandbox-pod{i}"), ip))
        .collect::<Result<_>>()?;
    let agent = Agent::start(
        &node.ns,
        &AgentOptions { node_name: sandbox.node_name.clone(), pod_cidr: sandbox.pod_cidr.clone() },
    )?;
    for pod in &pods {
        agent.add_pod(pod)?;
    }

    print_topology(&sandbox, &node, &pods, &agent);
    print_matrix(&node, &pods)?;
    println!("\ndata path counters (knet-agent stats):");
    for name in ["redirect_local", "pass_to_stack", "pass_not_ipv4", "drop_spoofed_source"] {
        let (packets, bytes) = agent.stat(name)?;
        println!("  {name:<22} {packets:>10} packets {bytes:>12} bytes");
    }

    let deadline = args.duration.map(|s| Instant::now() + Duration::from_secs(s));
    match deadline {
        Some(_) => println!("\nup for {}s; Ctrl-C to stop sooner", args.duration.unwrap_or(0)),
        None => println!(
            "\nup; try `ip netns exec {} ping {}`. Ctrl-C tears it all down.",
            pods[0].ns.name(),
            pods.last().map(|p| p.ip).unwrap_or(sandbox.node_address)
        ),
    }
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(200));
    }
    step("tearing down");
    drop(agent);
    drop(pods);
    drop(node);
    step("done");
    Ok(())
}

fn print_topology(sandbox: &Sandbox, node: &Node, pods: &[Pod], agent: &Agent) {
    println!(
        "\nnode {} (netns {}), address {}, pod CIDR {}",
        sandbox.node_name,
        node.ns.name(),
        node.address,
        sandbox.pod_cidr
    );
    println!("  agent API socket {}", agent.socket().display());
    for pod in pods {
        println!("  pod {:<14} netns {:<28} host veth {:<5} mac {}", pod.ip, pod.ns.name(), pod.host_veth, pod.mac);
    }
}

/// Ping and a short TCP transfer from every endpoint to every other.
fn print_matrix(node: &Node, pods: &[Pod]) -> Result<()> {
    let mut ends: Vec<(String, &Netns, Ipv4Addr)> =
        pods.iter().enumerate().map(|(i, p)| (format!("pod{i}"), &p.ns, p.ip)).collect();
    ends.push(("node".to_string(), &node.ns, node.address));
    println!("\nconnectivity (ping / TCP):");
    print!("  {:<8}", "from\\to");
    for (name, _, ip) in &ends {
        print!(" {:<22}", format!("{name} {ip}"));
    }
    println!();
    let mut failures = 0;
    for (from, from_ns, _) in &ends {
        print!("  {from:<8}");
        for (to, to_ns, to_ip) in &ends {
            if from == to {
                print!(" {:<22}", "-");
                continue;
            }
            let ping = traffic::ping(from_ns, *to_ip, 2).is_ok();
            let tcp = traffic::iperf3(from_ns, to_ns, *to_ip, IperfOptions { seconds: 1, ..Default::default() })
                .map(|t| format!("{:.1} Gbit/s", t.bits_per_second / 1e9));
            failures += usize::from(!ping) + usize::from(tcp.is_err());
            let cell = format!("{} / {}", if ping { "ok" } else { "FAIL" }, tcp.unwrap_or_else(|_| "FAIL".into()));
            print!(" {cell:<22}");
        }
        println!();
    }
    if failures > 0 {
        bail!("{failures} connectivity checks failed");
    }
    Ok(())
}
