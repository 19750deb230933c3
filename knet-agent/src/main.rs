//! `knet-agent`: the node daemon (`run`) and the operator's view of it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use knet_agent::{
    api::{client::Client, StatEntry},
    config::{Config, RawConfig, DEFAULT_API_SOCKET, DEFAULT_BPF_PIN_DIR},
    daemon,
    endpoints::{AddEndpoint, Endpoint},
    monitor,
    operator::{self, InspectReport, Section, StatusReport},
};

#[derive(Parser)]
#[command(name = "knet-agent", version, about = "knet's node agent: eBPF pod networking")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once at start; `run`'s settings are most of the CLI")]
enum Command {
    /// Load the data path and serve the local endpoint API until SIGINT/SIGTERM.
    Run {
        /// TOML file with the settings below; flags and env vars override it.
        #[arg(long, env = "KNET_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: RawConfig,
    },
    /// Add, delete or list local endpoints through a running agent.
    Endpoint {
        #[arg(long, env = "KNET_API_SOCKET", default_value = DEFAULT_API_SOCKET)]
        api_socket: PathBuf,
        #[command(subcommand)]
        action: EndpointAction,
    },
    /// Exit 0 if the agent is live (`live`) or ready (`ready`): the
    /// DaemonSet's probes.
    Probe {
        #[arg(long, env = "KNET_API_SOCKET", default_value = DEFAULT_API_SOCKET)]
        api_socket: PathBuf,
        #[arg(value_enum)]
        what: Probe,
    },
    /// Mount bpffs at PATH unless it is one already (the DaemonSet's
    /// init container; the agent does the same when it starts).
    MountBpffs {
        #[arg(long, default_value = "/sys/fs/bpf")]
        path: PathBuf,
    },
    /// Install the `knet` CNI plugin binary into a CNI bin directory,
    /// atomically (the DaemonSet's init container).
    InstallCni {
        /// The plugin binary to install.
        #[arg(long, default_value = "/usr/local/bin/knet")]
        from: PathBuf,
        /// The CNI bin directory, e.g. /host/opt/cni/bin.
        #[arg(long)]
        to: PathBuf,
    },
    /// The node at a glance: mode, pod CIDR, peers, endpoints, attach
    /// points, counters, node source. From the pins when the agent does
    /// not answer (then exits 1).
    Status {
        #[command(flatten)]
        at: Where,
        #[arg(long)]
        json: bool,
    },
    /// What the kernel holds, read from the pins (works with the agent
    /// stopped or wedged), compared with what the agent reports when it
    /// answers. Exits 1 if they disagree.
    Inspect {
        #[arg(value_enum)]
        section: Section,
        #[command(flatten)]
        at: Where,
        #[arg(long)]
        json: bool,
    },
    /// Print the data path's packet counters.
    Stats {
        #[arg(long, env = "KNET_API_SOCKET", default_value = DEFAULT_API_SOCKET)]
        api_socket: PathBuf,
    },
    /// Stream the data path's drop events, one line each (like `cilium
    /// monitor --type drop`), from the pinned ring buffer: works with the
    /// agent stopped too. One monitor at a time per node.
    Monitor {
        /// The agent's bpffs pin directory.
        #[arg(long, env = "KNET_BPF_PIN_DIR", default_value = DEFAULT_BPF_PIN_DIR)]
        bpf_pin_dir: PathBuf,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Only this drop reason (e.g. drop_spoofed_source); repeatable.
        #[arg(long = "reason", value_name = "NAME")]
        reasons: Vec<String>,
        /// Only packets with this IPv4 source or destination.
        #[arg(long)]
        ip: Option<std::net::Ipv4Addr>,
        /// Only packets dropped on this interface.
        #[arg(long)]
        interface: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
    },
    /// Write the CNI network configuration (knet.conflist: the `knet` plugin
    /// with host-local IPAM over the pod CIDR, chained with `portmap`).
    CniConfig {
        /// This node's pod CIDR, e.g. 10.244.1.0/24.
        #[arg(long)]
        pod_cidr: String,
        /// Where to write it (atomically), e.g. /etc/cni/net.d/10-knet.conflist;
        /// stdout if not given.
        #[arg(long)]
        output: Option<PathBuf>,
        /// MTU of the pods' interfaces.
        #[arg(long, default_value_t = 1500)]
        mtu: u32,
        /// The agent's API socket, as the plugin will reach it.
        #[arg(long, env = "KNET_API_SOCKET", default_value = DEFAULT_API_SOCKET)]
        api_socket: PathBuf,
    },
}

/// Where an agent's socket and pins are.
#[derive(clap::Args)]
struct Where {
    #[arg(long, env = "KNET_API_SOCKET", default_value = DEFAULT_API_SOCKET)]
    api_socket: PathBuf,
    /// The agent's bpffs pin directory.
    #[arg(long, env = "KNET_BPF_PIN_DIR", default_value = DEFAULT_BPF_PIN_DIR)]
    bpf_pin_dir: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Probe {
    Live,
    Ready,
}

#[derive(Subcommand)]
enum EndpointAction {
    Add {
        #[arg(long)]
        ip: String,
        #[arg(long)]
        host_veth: String,
        #[arg(long)]
        pod_mac: String,
    },
    Del {
        ip: String,
    },
    List,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::CniConfig { pod_cidr, output, mtu, api_socket } => {
            return cni_config(pod_cidr, output.as_deref(), *mtu, api_socket)
        }
        Command::MountBpffs { path } => return knet_agent::dataplane::ensure_bpffs(path),
        Command::InstallCni { from, to } => return install_cni(from, to),
        _ => {}
    }
    if !matches!(cli.command, Command::Run { .. }) {
        knet_agent::logging::init_default();
    }
    // Two workers: the reconciler's bursts (thousands of nodes) never hold
    // up the API's answers.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Run { config, settings } => run(config, settings).await,
            Command::Probe { api_socket, what } => {
                let path = match what {
                    Probe::Live => "/healthz",
                    Probe::Ready => "/readyz",
                };
                Client::new(&api_socket).probe(path).await?;
                println!("ok");
                Ok(())
            }
            Command::Endpoint { api_socket, action } => endpoint(&api_socket, action).await,
            Command::Status { at, json } => {
                let report = operator::status(&at.api_socket, &at.bpf_pin_dir).await?;
                print_report(json, &report, StatusReport::text)?;
                if !report.agent.reachable {
                    std::process::exit(1);
                }
                Ok(())
            }
            Command::Inspect { section, at, json } => {
                let report = operator::inspect(section, &at.api_socket, &at.bpf_pin_dir).await?;
                print_report(json, &report, InspectReport::text)?;
                if !report.disagreements.is_empty() {
                    std::process::exit(1);
                }
                Ok(())
            }
            Command::CniConfig { .. } | Command::MountBpffs { .. } | Command::InstallCni { .. } => {
                unreachable!("handled above")
            }
            Command::Monitor { bpf_pin_dir, json, reasons, ip, interface, count, timeout } => {
                let reasons = reasons.iter().map(|r| monitor::Filter::reason(r)).collect::<Result<_>>()?;
                let timeout = timeout
                    .map(|t| std::time::Duration::try_from_secs_f64(t).context("--timeout must be a number of seconds"))
                    .transpose()?;
                let filter = monitor::Filter { reasons, ip, interface };
                let bounds = monitor::Bounds { count, timeout };
                let ready = || eprintln!("monitoring the drop events of {}", bpf_pin_dir.display());
                let summary = monitor::run(&bpf_pin_dir, &filter, bounds, json, std::io::stdout().lock(), ready)?;
                eprintln!(
                    "{} events shown ({} read, {} from before the monitor started)",
                    summary.shown, summary.read, summary.stale
                );
                let lost = monitor::event_counts(&bpf_pin_dir)?
                    .into_iter()
                    .fold(knet_common::drop_event::DropEventCounts::default(), |acc, (_, c)| acc.add(c));
                eprintln!(
                    "since the data path was loaded: {} events sent, {} rate limited, {} lost to a full ring",
                    lost.sent, lost.rate_limited, lost.ring_full
                );
                Ok(())
            }
            Command::Stats { api_socket } => {
                let stats: Vec<StatEntry> = Client::new(&api_socket).get("/v1/stats").await?;
                for s in stats {
                    println!("{:<24} {:>14} packets {:>18} bytes", s.name, s.packets, s.bytes);
                }
                Ok(())
            }
        }
    })
}

fn print_report<R: serde::Serialize>(json: bool, report: &R, text: impl Fn(&R) -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", text(report));
    }
    Ok(())
}

async fn run(file: Option<PathBuf>, flags: RawConfig) -> Result<()> {
    let mut raw = match file {
        Some(path) => RawConfig::from_file(&path)?.overridden_by(flags),
        None => flags,
    };
    // The DaemonSet passes the node's name through the downward API.
    if raw.node_name.is_none() {
        raw.node_name = std::env::var("NODE_NAME").ok();
    }
    let config = Config::try_from(raw).context("invalid configuration")?;
    knet_agent::logging::init(&config.log);
    daemon::run(config, shutdown_signal()).await
}

fn cni_config(pod_cidr: &str, output: Option<&std::path::Path>, mtu: u32, api_socket: &std::path::Path) -> Result<()> {
    use knet_agent::cni::conflist::{self, ConflistOptions};
    let cidr: ipnet::Ipv4Net =
        pod_cidr.parse().with_context(|| format!("--pod-cidr {pod_cidr:?} is not an IPv4 CIDR"))?;
    anyhow::ensure!(cidr == cidr.trunc(), "--pod-cidr {pod_cidr} has host bits set (did you mean {}?)", cidr.trunc());
    anyhow::ensure!((68..=65535).contains(&mtu), "--mtu {mtu} is outside 68..=65535");
    let value = conflist::conflist(&ConflistOptions { pod_cidr: cidr, mtu, agent_socket: api_socket });
    match output {
        Some(path) => conflist::write(path, &value),
        None => {
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
    }
}

/// Copies the plugin next to its final name, then renames it over: a
/// runtime never runs half a binary.
fn install_cni(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let name = from.file_name().context("--from names no file")?;
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let target = to.join(name);
    let tmp = to.join(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::copy(from, &tmp).with_context(|| format!("cannot copy {} to {}", from.display(), tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &target).with_context(|| format!("cannot move {} into place", target.display()))?;
    println!("installed {}", target.display());
    Ok(())
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when the future is first polled: a signal that arrives
/// while the agent starts must stop it gracefully, not kill it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}

async fn endpoint(socket: &std::path::Path, action: EndpointAction) -> Result<()> {
    let client = Client::new(socket);
    match action {
        EndpointAction::Add { ip, host_veth, pod_mac } => {
            let ep: Endpoint = client.post("/v1/endpoints", &AddEndpoint { ip, host_veth, pod_mac }).await?;
            println!("{}", serde_json::to_string(&ep)?);
        }
        EndpointAction::Del { ip } => {
            let ep: Endpoint = client.delete(&format!("/v1/endpoints/{ip}")).await?;
            println!("{}", serde_json::to_string(&ep)?);
        }
        EndpointAction::List => {
            let eps: Vec<Endpoint> = client.get("/v1/endpoints").await?;
            for ep in eps {
                println!(
                    "{:<16} {:<16} ifindex {:<6} pod {} gw {}",
                    ep.ip, ep.host_veth, ep.host_ifindex, ep.pod_mac, ep.host_mac
                );
            }
        }
    }
    Ok(())
}
