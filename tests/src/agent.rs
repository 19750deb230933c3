//! The real `knet-agent` binary, running inside a node's namespace, and a
//! raw HTTP client for its Unix socket (raw, so tests can also send what no
//! well-behaved client would).

use std::{
    io::{Read, Write},
    os::unix::{net::UnixStream, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use knet_common::{Counter, Stat};
use serde_json::Value;

use knet_agent::{
    api::{client::Client, DatapathView, LinkPrograms, NodeView, StatEntry},
    endpoints::{AddEndpoint, Endpoint},
    reconciler::{ClusterView, StatusView},
};
use serde::de::DeserializeOwned;

pub use knet_agent::api::client::CallError;

use crate::{netns::unique_name, topology::Pod, wait, Netns};

/// Runs one call of the agent's async client to its end, on a runtime of
/// its own (the harness's callers are plain threads).
fn block_on<F: std::future::Future>(call: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime").block_on(call)
}

/// The agent binary: `KNET_AGENT_BIN`, or the workspace's debug build.
pub fn agent_binary() -> Result<PathBuf> {
    crate::cmd::workspace_binary("KNET_AGENT_BIN", "knet-agent")
}

pub struct AgentOptions {
    pub node_name: String,
    /// `None`: not configured (the kubernetes source reads it from the Node).
    pub pod_cidr: Option<String>,
}

/// What the kubelet gives a pod to reach the API server.
#[derive(Debug, Clone)]
pub struct InCluster {
    /// A directory laid out as /var/run/secrets/kubernetes.io/serviceaccount.
    pub service_account: PathBuf,
    pub host: std::net::Ipv4Addr,
    pub port: u16,
}

/// A running agent; stopped with SIGTERM (SIGKILL if it does not stop) and
/// its files removed on drop.
pub struct Agent {
    child: Option<Child>,
    /// The binary, taken from `KNET_AGENT_BIN` when the agent was first
    /// started: a restart runs the same build (the bench compares builds
    /// by starting each one's agents under its own `KNET_AGENT_BIN`).
    bin: PathBuf,
    /// Run as a pod is: the API server's address in the environment and
    /// the service account's files at their in-cluster path.
    in_cluster: Option<InCluster>,
    netns: String,
    dir: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    pin_dir: PathBuf,
}

impl Agent {
    /// Starts the agent for `node` and waits (bounded) until its API answers.
    pub fn start(node: &Netns, opts: &AgentOptions) -> Result<Self> {
        Self::start_with(node, opts, "")
    }

    /// Like `start`, with extra lines for the agent's TOML config
    /// (`nodes_file`, `mode`, ...).
    pub fn start_with(node: &Netns, opts: &AgentOptions, extra_config: &str) -> Result<Self> {
        Self::start_full(node, opts, extra_config, None)
    }

    /// Like `start_with`, run as a pod: `KUBERNETES_SERVICE_HOST` and
    /// `_PORT` set, the service account's files mounted at their in-cluster
    /// path (in a mount namespace of the agent's own, on a fresh /run).
    pub fn start_in_cluster(node: &Netns, opts: &AgentOptions, extra_config: &str, pod: InCluster) -> Result<Self> {
        Self::start_full(node, opts, extra_config, Some(pod))
    }

    fn start_full(
        node: &Netns,
        opts: &AgentOptions,
        extra_config: &str,
        in_cluster: Option<InCluster>,
    ) -> Result<Self> {
        let bin = agent_binary()?;
        let name = unique_name("agent");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("agent.sock");
        let log = dir.join("agent.log");
        let config = dir.join("agent.toml");
        let pin_dir = format!("/sys/fs/bpf/{name}");
        let pod_cidr = opts.pod_cidr.as_ref().map(|c| format!("pod_cidr = {c:?}\n")).unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "node_name = {:?}\n{pod_cidr}api_socket = {:?}\nbpf_pin_dir = {:?}\n{}",
                opts.node_name,
                socket.display().to_string(),
                pin_dir,
                extra_config,
            ),
        )?;
        let mut agent = Agent {
            child: None,
            bin,
            in_cluster,
            netns: node.name().to_string(),
            dir,
            config,
            socket,
            log,
            pin_dir: pin_dir.into(),
        };
        agent.spawn()?;
        Ok(agent)
    }

    /// Starts the agent process and waits until its API answers. It runs in
    /// the node's network namespace but the host's mount namespace (as a
    /// DaemonSet with /sys/fs/bpf mounted from the host does), so its pins
    /// outlive it, as they must for a restart.
    fn spawn(&mut self) -> Result<()> {
        let bin = self.bin.clone();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut command = Command::new("nsenter");
        command.arg(format!("--net=/run/netns/{}", self.netns));
        if let Some(pod) = &self.in_cluster {
            // unshare and sh exec, so the child's pid stays the agent's.
            command
                .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
                .arg(
                    "mount -n -t tmpfs tmpfs /run && d=/run/secrets/kubernetes.io/serviceaccount && mkdir -p $d && cp \"$0\"/* $d/ && exec \"$@\"",
                )
                .arg(&pod.service_account)
                .env("KUBERNETES_SERVICE_HOST", pod.host.to_string())
                .env("KUBERNETES_SERVICE_PORT", pod.port.to_string());
        }
        let child = command
            .arg(&bin)
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            // A process group of its own: a terminal's Ctrl-C reaches the
            // sandbox or test, which stops the agent itself after the pods'
            // CNI DEL (which needs it) has run.
            .process_group(0)
            .spawn()
            .context("cannot start knet-agent")?;
        self.child = Some(child);
        let ready = wait::until("the agent's API to answer", Duration::from_secs(30), || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Some(Err(status));
            }
            self.request("GET", "/healthz", None).ok().filter(|(s, _)| *s == 200).map(|_| Ok(()))
        });
        match ready {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => {
                self.child = None;
                bail!("knet-agent exited ({status}) while starting:\n{}", self.log_text())
            }
            Err(e) => bail!("{e:#}\n{}", self.log_text()),
        }
    }

    /// Stops the agent with SIGTERM if it runs, then starts it again on the
    /// same configuration and pins.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            let status = self.stop()?;
            if !status.success() {
                bail!("agent exited with {status} on SIGTERM");
            }
        }
        self.spawn()
    }

    /// The agent's TOML config; a `restart` reads it again.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Where the agent pins its maps.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The agent's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One HTTP/1.1 request with a raw body; the status and the parsed JSON
    /// body (`Value::Null` when the body is not JSON). For what no typed
    /// client would send (bad bodies, unknown paths) and status checks;
    /// everything else goes through the typed methods below.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Value)> {
        request(&self.socket, method, path, body)
    }

    /// Sends raw bytes; the status code and the body of the answer.
    pub fn raw(&self, bytes: &[u8]) -> Result<(u16, String)> {
        raw(&self.socket, bytes)
    }

    /// `GET path` through the agent's own typed client (the one the CLI
    /// and the CNI plugin use), from the harness's threads.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        block_on(Client::new(&self.socket).get(path))
    }

    /// `POST /v1/endpoints`; the agent's refusal as its typed error.
    pub fn add_endpoint(&self, req: &AddEndpoint) -> Result<Endpoint, CallError> {
        block_on(Client::new(&self.socket).post("/v1/endpoints", req))
    }

    /// Registers a pod as an endpoint.
    pub fn add_pod(&self, pod: &Pod) -> Result<Endpoint, CallError> {
        self.add_endpoint(&AddEndpoint {
            ip: pod.ip.to_string(),
            host_veth: pod.host_veth.clone(),
            pod_mac: pod.mac.clone(),
        })
    }

    pub fn delete_pod(&self, pod: &Pod) -> Result<Endpoint, CallError> {
        self.delete_endpoint(pod.ip)
    }

    /// `DELETE /v1/endpoints/IP`.
    pub fn delete_endpoint(&self, ip: std::net::Ipv4Addr) -> Result<Endpoint, CallError> {
        block_on(Client::new(&self.socket).delete(&format!("/v1/endpoints/{ip}")))
    }

    /// Every `STATS` counter the agent reports, read through `Stat`: a
    /// name this build of `knet-common` does not know is an error, not a
    /// counter that silently stays at zero.
    pub fn stats(&self) -> Result<Vec<(Stat, Counter)>> {
        let entries: Vec<StatEntry> = self.get("/v1/stats")?;
        entries
            .into_iter()
            .map(|e| {
                let stat = Stat::from_name(&e.name).with_context(|| format!("unknown stat {:?}", e.name))?;
                Ok((stat, Counter { packets: e.packets, bytes: e.bytes }))
            })
            .collect()
    }

    /// One `STATS` counter: (packets, bytes).
    pub fn stat(&self, stat: Stat) -> Result<(u64, u64)> {
        let stats = self.stats()?;
        let (_, c) = stats.iter().find(|(s, _)| *s == stat).with_context(|| format!("no stat {}", stat.name()))?;
        Ok((c.packets, c.bytes))
    }

    /// Endpoints as the agent lists them.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, CallError> {
        self.get("/v1/endpoints")
    }

    /// IPs of the endpoints the agent lists, sorted.
    pub fn endpoint_ips(&self) -> Result<Vec<String>> {
        let mut ips: Vec<String> = self.endpoints()?.iter().map(|e| e.ip.to_string()).collect();
        ips.sort();
        Ok(ips)
    }

    /// What the kernel's maps hold, as the agent reads them.
    pub fn datapath(&self) -> Result<DatapathView, CallError> {
        self.get("/v1/datapath")
    }

    /// Keys of the kernel's `ENDPOINTS` map, sorted.
    pub fn map_ips(&self) -> Result<Vec<String>> {
        let mut ips: Vec<String> = self.datapath()?.endpoint_map_ips.iter().map(|i| i.to_string()).collect();
        ips.sort();
        Ok(ips)
    }

    /// The programs on the tcx ingress of a link in the node's namespace.
    pub fn link_programs(&self, link: &str) -> Result<LinkPrograms, CallError> {
        self.get(&format!("/v1/datapath/links/{link}"))
    }

    /// Names of the programs on the tcx ingress of a link.
    pub fn tcx_ingress(&self, link: &str) -> Result<Vec<String>> {
        Ok(self.link_programs(link)?.tcx_ingress)
    }

    /// `GET /readyz`: ready, or the agent's reason (503) as its error.
    pub fn ready(&self) -> Result<(), CallError> {
        block_on(Client::new(&self.socket).probe("/readyz"))
    }

    /// Waits (bounded) until the agent is ready.
    pub fn wait_ready(&self, limit: Duration) -> Result<()> {
        wait::until("the agent to be ready", limit, || self.ready().ok()).map_err(|e| {
            let why = self.ready().err().map(|e| e.to_string()).unwrap_or_default();
            anyhow::anyhow!("{e:#}: {why}\n{}", self.log_text())
        })
    }

    /// (id, tag) of each program on the tcx ingress of a link.
    pub fn tcx_ingress_ids(&self, link: &str) -> Result<Vec<(u64, String)>> {
        Ok(self.link_programs(link)?.tcx_ingress_ids.into_iter().map(|p| (u64::from(p.id), p.tag)).collect())
    }

    /// `GET /v1/status`: `GET /v1/nodes` without the node list.
    pub fn status(&self) -> Result<StatusView, CallError> {
        self.get("/v1/status")
    }

    /// Waits (bounded) until `count` nodes are programmed, the source is in
    /// step and no reconcile is running or failing; the status then.
    pub fn wait_programmed(&self, count: usize, limit: Duration) -> Result<StatusView> {
        wait::until(&format!("{count} nodes programmed"), limit, || {
            let v = self.status().ok()?;
            let s = &v.source;
            (v.nodes == count && s.in_sync && !s.applying && s.error.is_none()).then_some(v)
        })
    }

    /// `GET /v1/nodes`.
    pub fn nodes(&self) -> Result<ClusterView, CallError> {
        self.get("/v1/nodes")
    }

    /// `GET /v1/node`: this node as the CNI plugin sees it.
    pub fn node(&self) -> Result<NodeView, CallError> {
        self.get("/v1/node")
    }

    /// Runs `knet-agent SUBCOMMAND ARGS --api-socket S --bpf-pin-dir P` in the
    /// node's network namespace (and the host's mount namespace, where the
    /// pins are), as an operator on the node would; bounded by `timeout`.
    /// Works whether the agent runs or not.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new("timeout")
            .arg("30")
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg(&self.bin)
            .args(args)
            .arg("--api-socket")
            .arg(&self.socket)
            .arg("--bpf-pin-dir")
            .arg(&self.pin_dir)
            .output()
            .context("cannot run knet-agent")
    }

    /// Waits (bounded) for an agent that something else killed to exit,
    /// and reaps it; `restart` then starts it again.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let child = self.child.as_mut().context("not running")?;
        let status = wait::until("the agent to exit", limit, || child.try_wait().ok().flatten())?;
        self.child = None;
        Ok(status)
    }

    /// `GET path` over TCP at `address` inside the agent's namespace (its
    /// metrics listener); the status code and the body as text.
    pub fn get_tcp(&self, address: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
        let timeout = Duration::from_secs(10);
        let stream = crate::netns::run_in(&self.netns, || std::net::TcpStream::connect_timeout(&address, timeout))?
            .with_context(|| format!("cannot connect to {address} in {}", self.netns))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        exchange(stream, format!("GET {path} HTTP/1.1\r\nHost: knet\r\nConnection: close\r\n\r\n").as_bytes())
    }

    /// Stops the agent with SIGTERM; its exit status.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let Some(mut child) = self.child.take() else { bail!("already stopped") };
        // nsenter execs the agent, so the child's pid is the agent's.
        let _ = crate::cmd::run("kill", &["-TERM", &child.id().to_string()]);
        let status =
            wait::until("the agent to exit after SIGTERM", Duration::from_secs(10), || child.try_wait().ok().flatten());
        match status {
            Ok(s) => Ok(s),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Err(e) = self.stop() {
                eprintln!("cleanup: {e:#}");
            }
        }
        if std::thread::panicking() {
            eprintln!("--- knet-agent log ---\n{}", self.log_text());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// One HTTP/1.1 request to an agent's socket with a raw body; the status
/// and the parsed JSON body (`Value::Null` when the body is not JSON).
pub fn request(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Value)> {
    let body = body.unwrap_or("");
    let raw_request = format!(
        "{method} {path} HTTP/1.1\r\nHost: knet\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, body) = raw(socket, raw_request.as_bytes())?;
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

/// Sends raw bytes to an agent's socket; the status code and the body.
pub fn raw(socket: &Path, bytes: &[u8]) -> Result<(u16, String)> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    exchange(stream, bytes)
}

/// Writes one request, reads the answer until the agent closes; its status
/// code and body.
fn exchange(mut stream: impl Read + Write, bytes: &[u8]) -> Result<(u16, String)> {
    stream.write_all(bytes)?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}
