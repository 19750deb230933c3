//! CNI plugins run exactly as a container runtime runs them: inside the
//! node's network namespace (`ip netns exec NODE PLUGIN`), with the `CNI_*`
//! variables in the environment and the network configuration on stdin;
//! stdout parsed as JSON, the exit status kept.

use std::{
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{netns::unique_name, topology::Pod, Netns};

/// Where Debian's containernetworking-plugins puts host-local and portmap.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// How long one plugin run may take before the helper kills it.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The knet plugin: `KNET_CNI_BIN`, or the workspace's debug build.
pub fn plugin_binary() -> Result<PathBuf> {
    crate::cmd::workspace_binary("KNET_CNI_BIN", "knet")
}

/// A CNI plugin directory with the knet binary and the reference plugins:
/// the runtime's `CNI_PATH`.
pub fn cni_path(plugin: &Path) -> String {
    let dir = plugin.parent().unwrap_or(Path::new("."));
    format!("{}:{REFERENCE_PLUGINS}", dir.display())
}

/// What one plugin run printed and how it exited.
#[derive(Debug, Clone)]
pub struct CniOutput {
    pub status: Option<i32>,
    /// stdout as JSON; `Value::Null` when empty or not JSON.
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CniOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The `code` of an error answer.
    pub fn error_code(&self) -> Option<u64> {
        self.json["code"].as_u64()
    }

    /// Panics with everything the plugin said unless it succeeded.
    pub fn expect_ok(self, what: &str) -> Self {
        assert!(
            self.success(),
            "{what} failed ({:?}): stdout {} stderr {}",
            self.status,
            self.stdout.trim(),
            self.stderr.trim()
        );
        self
    }

    /// Panics unless the run failed with a spec error JSON of `code`.
    pub fn expect_error(self, code: u64, what: &str) -> Self {
        assert!(!self.success(), "{what}: expected error code {code}, the plugin succeeded: {}", self.stdout.trim());
        assert_eq!(
            self.error_code(),
            Some(code),
            "{what}: wrong error: {} (stderr {})",
            self.stdout.trim(),
            self.stderr.trim()
        );
        assert!(self.json["cniVersion"].is_string(), "{what}: error without cniVersion: {}", self.stdout);
        assert!(self.json["msg"].as_str().is_some_and(|m| !m.is_empty()), "{what}: error without msg: {}", self.stdout);
        self
    }
}

/// The variables of one invocation.
#[derive(Debug, Clone)]
pub struct CniEnv {
    pub command: String,
    pub container_id: String,
    pub netns: Option<String>,
    pub ifname: String,
    pub path: String,
}

/// Runs `plugin` inside the namespace named `node` as a runtime does.
/// Other `CNI_*` variables of the test's own environment are removed.
pub fn exec(node: &str, plugin: &Path, env: &CniEnv, stdin: &[u8]) -> Result<CniOutput> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", node]).arg(plugin).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("CNI_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("CNI_COMMAND", &env.command)
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_PATH", &env.path);
    if let Some(ns) = &env.netns {
        cmd.env("CNI_NETNS", ns);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot run {}", plugin.display()))?;
    let pid = child.id();
    let mut input = child.stdin.take().context("stdin")?;
    // A plugin that exits without reading closes the pipe: not our error.
    let _ = input.write_all(stdin);
    drop(input);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(PLUGIN_TIMEOUT) {
        Ok(out) => out?,
        Err(_) => {
            // `ip netns exec` execs the plugin: the pid is the plugin's.
            let _ = crate::cmd::run("kill", &["-9", &pid.to_string()]);
            bail!("{} {} did not finish within {PLUGIN_TIMEOUT:?}", plugin.display(), env.command);
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(CniOutput {
        status: out.status.code(),
        json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    })
}

/// The path a runtime passes as CNI_NETNS for a namespace.
pub fn netns_path(ns: &Netns) -> String {
    format!("/run/netns/{}", ns.name())
}

/// A directory removed with everything in it on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(role: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(unique_name(role));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A lone node with a running agent (`node-0`, no node source) and a knet
/// network on it: what the plugin's tests start from. Fields drop in
/// order: the network's files, then the agent, then the node.
pub struct PluginNode {
    pub net: KnetNetwork,
    pub agent: crate::Agent,
    pub node: crate::Node,
}

impl PluginNode {
    pub fn start(address: Ipv4Addr, pod_cidr: &str) -> Result<Self> {
        let node = crate::Node::new("node", address)?;
        let options = crate::AgentOptions { node_name: "node-0".into(), pod_cidr: Some(pod_cidr.into()) };
        let agent = crate::Agent::start(&node.ns, &options)?;
        let net = KnetNetwork::new(&node.ns, pod_cidr, agent.socket())?;
        Ok(PluginNode { net, agent, node })
    }
}

/// Everything a CNI ADD could change on a node, for before/after
/// comparisons: addresses, routes, links, leases, and the endpoints as the
/// agent lists them and as its kernel map holds them.
#[derive(Debug, PartialEq, Eq)]
pub struct NodeState {
    pub addresses: String,
    pub routes: String,
    pub links: Vec<String>,
    pub leases: Vec<Ipv4Addr>,
    pub endpoints: Vec<String>,
    pub endpoint_map: Vec<String>,
}

impl NodeState {
    pub fn of(node: &Netns, net: &KnetNetwork, agent: &crate::Agent) -> Result<Self> {
        Ok(NodeState {
            addresses: node.ip(&["-4", "addr", "show"])?,
            routes: node.ip(&["route", "show", "table", "all"])?,
            links: links(node)?,
            leases: net.leases(),
            endpoints: agent.endpoint_ips()?,
            endpoint_map: agent.map_ips()?,
        })
    }
}

impl PluginNode {
    pub fn state(&self) -> NodeState {
        NodeState::of(&self.node.ns, &self.net, &self.agent).expect("the node's state")
    }
}

/// A knet network on one node: its configuration (host-local IPAM with a
/// data directory of its own, so its leases can be counted) and the way to
/// run the plugin for it.
pub struct KnetNetwork {
    pub name: String,
    pub pod_cidr: String,
    /// The configuration's `mtu` (1500 unless set).
    pub mtu: u32,
    pub agent_socket: PathBuf,
    pub plugin: PathBuf,
    pub data_dir: TempDir,
    node_ns: String,
}

impl KnetNetwork {
    pub fn new(node: &Netns, pod_cidr: &str, agent_socket: &Path) -> Result<Self> {
        Ok(KnetNetwork {
            name: unique_name("net"),
            pod_cidr: pod_cidr.to_string(),
            mtu: 1500,
            agent_socket: agent_socket.to_path_buf(),
            plugin: plugin_binary()?,
            data_dir: TempDir::new("ipam")?,
            node_ns: node.name().to_string(),
        })
    }

    /// knet's entry of the conflist as libcni hands it to the plugin.
    pub fn conf(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "type": "knet",
            "mtu": self.mtu,
            "agentSocket": self.agent_socket,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.pod_cidr}]],
                "dataDir": self.data_dir.0,
            }
        })
    }

    pub fn env(&self, command: &str, container_id: &str, netns: Option<&Netns>) -> CniEnv {
        CniEnv {
            command: command.into(),
            container_id: container_id.into(),
            netns: netns.map(netns_path),
            ifname: "eth0".into(),
            path: cni_path(&self.plugin),
        }
    }

    /// Runs the knet plugin with `env` and `conf`.
    pub fn run(&self, env: &CniEnv, conf: &Value) -> Result<CniOutput> {
        self.run_raw(env, conf.to_string().as_bytes())
    }

    pub fn run_raw(&self, env: &CniEnv, stdin: &[u8]) -> Result<CniOutput> {
        exec(&self.node_ns, &self.plugin, env, stdin)
    }

    /// Runs a reference plugin (`portmap`, ...) from /usr/lib/cni.
    pub fn run_reference(&self, plugin: &str, env: &CniEnv, conf: &Value) -> Result<CniOutput> {
        let path = Path::new(REFERENCE_PLUGINS).join(plugin);
        exec(&self.node_ns, &path, env, conf.to_string().as_bytes())
    }

    pub fn add(&self, container_id: &str, pod: &Netns) -> Result<CniOutput> {
        self.run(&self.env("ADD", container_id, Some(pod)), &self.conf())
    }

    /// DEL with the ADD result as prevResult, as libcni does when it has one.
    pub fn del(&self, container_id: &str, pod: Option<&Netns>, prev: Option<&Value>) -> Result<CniOutput> {
        let mut conf = self.conf();
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        self.run(&self.env("DEL", container_id, pod), &conf)
    }

    pub fn check(&self, container_id: &str, pod: &Netns, prev: &Value) -> Result<CniOutput> {
        let mut conf = self.conf();
        conf["prevResult"] = prev.clone();
        self.run(&self.env("CHECK", container_id, Some(pod)), &conf)
    }

    /// A new pod namespace, ADDed through the plugin exactly as a runtime
    /// does (`CNI_*` environment, configuration on stdin, in the node's
    /// namespace), under a unique container ID. The pod as the result
    /// describes it, with a guard that DELs it on drop.
    pub fn add_pod(&self, role: &str) -> Result<CniPod> {
        let PluginPod { attachment, ns, ip, add_elapsed } =
            add_through(&self.node_ns, &self.plugin, &self.conf(), role)?;
        let r = &attachment.result;
        let host_veth = result_host_veth(r)?;
        let mac = r["interfaces"][1]["mac"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("no interfaces[1].mac in {r}"))?;
        Ok(CniPod { attachment, pod: Pod { ns, ip, mac, host_veth }, add_elapsed })
    }

    /// host-local's directory for this network.
    pub fn lease_dir(&self) -> PathBuf {
        self.data_dir.0.join(&self.name)
    }

    /// The addresses host-local has leased (its files named by address).
    pub fn leases(&self) -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> =
            self.files().iter().filter_map(|f| Path::new(f).file_name()?.to_str()?.parse().ok()).collect();
        out.sort();
        out
    }

    /// Every file under the data directory, relative, sorted.
    pub fn files(&self) -> Vec<String> {
        files_under(&self.data_dir.0)
    }
}

/// A pod ADDed through any plugin: its namespace and first address. Field
/// order is drop order: the attachment's CNI DEL runs while the namespace
/// still exists.
pub struct PluginPod {
    pub attachment: Attachment,
    pub ns: Netns,
    pub ip: Ipv4Addr,
    pub add_elapsed: Duration,
}

/// A new pod namespace ADDed through `plugin` with `conf`, run in the node's
/// namespace exactly as a runtime runs it (`CNI_*` environment, `eth0`,
/// the configuration on stdin), under a unique container ID; DELed on drop.
/// For the reference plugins (`ptp`, `bridge`) as for knet's.
pub fn add_through(node_ns: &str, plugin: &Path, conf: &Value, role: &str) -> Result<PluginPod> {
    let ns = Netns::new(role)?;
    let container_id = unique_name(&format!("ctr-{role}"));
    let env = |command: &str| CniEnv {
        command: command.into(),
        container_id: container_id.clone(),
        netns: Some(netns_path(&ns)),
        ifname: "eth0".into(),
        path: cni_path(plugin),
    };
    let out = exec(node_ns, plugin, &env("ADD"), conf.to_string().as_bytes())?;
    let add_elapsed = out.elapsed;
    if !out.success() {
        bail!(
            "CNI ADD of {role} through {} failed ({:?}): {} {}",
            plugin.display(),
            out.status,
            out.stdout.trim(),
            out.stderr.trim()
        );
    }
    // From here on the guard DELs the pod if anything fails (it drops
    // before `ns`).
    let attachment = Attachment {
        env: env("DEL"),
        container_id: container_id.clone(),
        result: out.json,
        conf: conf.clone(),
        node_ns: node_ns.to_string(),
        plugin: plugin.to_path_buf(),
        deleted: false,
    };
    let ip = result_ip(&attachment.result)?;
    Ok(PluginPod { attachment, ns, ip, add_elapsed })
}

/// A pod added through the plugin. Field order is drop order: the
/// attachment's CNI DEL runs while the pod's namespace still exists.
pub struct CniPod {
    pub attachment: Attachment,
    pub pod: Pod,
    /// How long the ADD took, as the runtime saw it.
    pub add_elapsed: Duration,
}

/// One ADD's result; runs CNI DEL (with the result as `prevResult`, as
/// libcni does) on drop unless `del` already succeeded. Holds copies of
/// what DEL needs, so it may outlive the `KnetNetwork` value (not the
/// network's IPAM directory, nor the agent, if DEL is to clean up fully).
pub struct Attachment {
    pub container_id: String,
    /// The ADD result as the plugin printed it.
    pub result: Value,
    conf: Value,
    env: CniEnv,
    node_ns: String,
    plugin: PathBuf,
    deleted: bool,
}

impl Attachment {
    /// CNI DEL now; the plugin's answer. Once it succeeded, drop does not
    /// run it again.
    pub fn del(&mut self) -> Result<CniOutput> {
        let mut conf = self.conf.clone();
        conf["prevResult"] = self.result.clone();
        let out = exec(&self.node_ns, &self.plugin, &self.env, conf.to_string().as_bytes())?;
        self.deleted |= out.success();
        Ok(out)
    }

    /// CNI CHECK with the ADD result as `prevResult`.
    pub fn check(&self) -> Result<CniOutput> {
        let mut conf = self.conf.clone();
        conf["prevResult"] = self.result.clone();
        let env = CniEnv { command: "CHECK".into(), ..self.env.clone() };
        exec(&self.node_ns, &self.plugin, &env, conf.to_string().as_bytes())
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        match self.del() {
            Ok(out) if out.success() => {}
            Ok(out) => {
                eprintln!("cleanup: CNI DEL of {}: {} {}", self.container_id, out.stdout.trim(), out.stderr.trim())
            }
            Err(e) => eprintln!("cleanup: CNI DEL of {}: {e:#}", self.container_id),
        }
    }
}

/// The MTU the kernel uses toward `dst` from inside `ns` when the route
/// sets one (`ip route get` shows it as `mtu N`); `None` for the device's.
pub fn route_mtu(ns: &Netns, dst: Ipv4Addr) -> Result<Option<u32>> {
    let text = ns.ip(&["route", "get", &dst.to_string()])?;
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mtu" {
            let v = words.next().context("mtu without a value")?;
            return Ok(Some(v.parse().with_context(|| format!("mtu {v:?} in {text:?}"))?));
        }
    }
    Ok(None)
}

/// Every file under `dir` (recursively), relative to it, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    collect(dir, dir, &mut out);
    out.sort();
    out
}

fn collect(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(base, &p, out);
        } else if let Ok(rel) = p.strip_prefix(base) {
            out.push(rel.display().to_string());
        }
    }
}

/// The pod's address from an ADD result (`ips[0].address` without prefix).
pub fn result_ip(result: &Value) -> Result<Ipv4Addr> {
    let addr = result["ips"][0]["address"].as_str().with_context(|| format!("no ips[0].address in {result}"))?;
    let ip = addr.split('/').next().unwrap_or(addr);
    ip.parse().with_context(|| format!("{addr} is not IPv4"))
}

/// The host veth's name from an ADD result (`interfaces[0].name`).
pub fn result_host_veth(result: &Value) -> Result<String> {
    result["interfaces"][0]["name"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no interfaces[0].name in {result}"))
}

/// Names of the links in a namespace, sorted.
pub fn links(ns: &Netns) -> Result<Vec<String>> {
    let json = ns.ip(&["-j", "link", "show"])?;
    let v: Value = serde_json::from_str(&json)?;
    let mut names: Vec<String> = v
        .as_array()
        .context("ip -j link show")?
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}
