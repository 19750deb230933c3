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

use crate::{netns::unique_name, topology::Pod, wait, Netns};

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
        agent_binary()?;
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
        let bin = agent_binary()?;
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
    /// body (`Value::Null` when the body is not JSON).
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Value)> {
        request(&self.socket, method, path, body)
    }

    /// Sends raw bytes; the status code and the body of the answer.
    pub fn raw(&self, bytes: &[u8]) -> Result<(u16, String)> {
        raw(&self.socket, bytes)
    }

    /// Registers a pod as an endpoint; panics with the agent's answer if it
    /// refuses.
    pub fn add_pod(&self, pod: &Pod) -> Result<Value> {
        let body = serde_json::json!({"ip": pod.ip.to_string(), "host_veth": pod.host_veth, "pod_mac": pod.mac});
        let (status, v) = self.request("POST", "/v1/endpoints", Some(&body.to_string()))?;
        if status != 201 {
            bail!("adding {} failed: {status} {v}", pod.ip);
        }
        Ok(v)
    }

    pub fn delete_pod(&self, pod: &Pod) -> Result<()> {
        let (status, v) = self.request("DELETE", &format!("/v1/endpoints/{}", pod.ip), None)?;
        if status != 200 {
            bail!("deleting {} failed: {status} {v}", pod.ip);
        }
        Ok(())
    }

    /// Every `STATS` counter the agent reports, read through `Stat`: a
    /// name this build of `knet-common` does not know is an error, not a
    /// counter that silently stays at zero.
    pub fn stats(&self) -> Result<Vec<(Stat, Counter)>> {
        let (status, v) = self.request("GET", "/v1/stats", None)?;
        if status != 200 {
            bail!("stats: {status} {v}");
        }
        let entries = v.as_array().with_context(|| format!("stats is not a list: {v}"))?;
        entries
            .iter()
            .map(|e| {
                let name = e["name"].as_str().with_context(|| format!("stat without a name: {e}"))?;
                let stat = Stat::from_name(name).with_context(|| format!("unknown stat {name:?}"))?;
                let packets = e["packets"].as_u64().with_context(|| format!("{name}: no packets"))?;
                let bytes = e["bytes"].as_u64().with_context(|| format!("{name}: no bytes"))?;
                Ok((stat, Counter { packets, bytes }))
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
    pub fn endpoints(&self) -> Result<Value> {
        Ok(self.request("GET", "/v1/endpoints", None)?.1)
    }

    /// IPs of the endpoints the agent lists, sorted.
    pub fn endpoint_ips(&self) -> Result<Vec<String>> {
        let v = self.endpoints()?;
        let mut ips: Vec<String> = v
            .as_array()
            .with_context(|| format!("endpoints: {v}"))?
            .iter()
            .filter_map(|e| e["ip"].as_str().map(str::to_string))
            .collect();
        ips.sort();
        Ok(ips)
    }

    /// Keys of the kernel's `ENDPOINTS` map, sorted.
    pub fn map_ips(&self) -> Result<Vec<String>> {
        let (_, v) = self.request("GET", "/v1/datapath", None)?;
        let mut ips: Vec<String> = v["endpoint_map_ips"]
            .as_array()
            .context("no endpoint_map_ips")?
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect();
        ips.sort();
        Ok(ips)
    }

    /// Programs on the tcx ingress of a link in the node's namespace.
    pub fn tcx_ingress(&self, link: &str) -> Result<Vec<String>> {
        let (status, v) = self.request("GET", &format!("/v1/datapath/links/{link}"), None)?;
        if status != 200 {
            bail!("tcx query of {link}: {status} {v}");
        }
        Ok(v["tcx_ingress"]
            .as_array()
            .context("no tcx_ingress")?
            .iter()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect())
    }

    /// Waits (bounded) until `GET /readyz` answers 200.
    pub fn wait_ready(&self, limit: Duration) -> Result<()> {
        wait::until("the agent to be ready", limit, || {
            self.request("GET", "/readyz", None).ok().filter(|(s, _)| *s == 200).map(drop)
        })
        .map_err(|e| {
            let why = self.request("GET", "/readyz", None).map(|(_, v)| v.to_string()).unwrap_or_default();
            anyhow::anyhow!("{e:#}: {why}\n{}", self.log_text())
        })
    }

    /// (id, tag) of each program on the tcx ingress of a link.
    pub fn tcx_ingress_ids(&self, link: &str) -> Result<Vec<(u64, String)>> {
        let (status, v) = self.request("GET", &format!("/v1/datapath/links/{link}"), None)?;
        if status != 200 {
            bail!("tcx query of {link}: {status} {v}");
        }
        let ids = v["tcx_ingress_ids"].as_array().context("no tcx_ingress_ids")?;
        Ok(ids.iter().filter_map(|p| Some((p["id"].as_u64()?, p["tag"].as_str()?.to_string()))).collect())
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
