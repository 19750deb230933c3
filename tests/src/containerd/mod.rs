//! A real container runtime on a test node: Debian's containerd (with
//! runc) running inside the node's network namespace, with a network
//! configuration list of the test's in its CNI directory, driven through
//! its CRI exactly as kubelet drives it. Facts this rests on are in
//! `../shared/toolchain.md` ("A real container runtime").
//!
//! Everything a `Containerd` makes is its own: root, state, sockets, CNI
//! directories, runc's state and the cgroup parent of its pods are per
//! run. It runs in mount and pid namespaces of its own that end with it,
//! taking shims and pause processes along; `/run` and `/var/lib` are
//! fresh tmpfs mounts in there, so what containerd 1.6 puts at fixed paths
//! whatever its config says (shim sockets in `/run/containerd/s`, libcni's
//! result cache in `/var/lib/cni`) never reaches the host. On drop every
//! sandbox is stopped and removed through the CRI (so CNI DEL runs while
//! the node's agent is still up), then containerd is killed and its
//! cgroups and files removed.

pub mod conflist;
pub mod cri;
pub mod path_traffic;
pub mod pause_image;

use std::{
    net::Ipv4Addr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};
use serde_json::Value;

pub use cri::{Cri, PodMeta};
use k8s_cri::v1::PodSandboxState;

use crate::{
    cmd,
    cni::{plugin_binary, TempDir, REFERENCE_PLUGINS},
    netns::unique_name,
    wait, Netns,
};

/// The reference plugins containerd's `bin_dir` holds next to knet:
/// loopback (the CRI plugin sets up every pod's `lo` with it), the IPAM,
/// portmap, and bridge for the reference network.
const REFERENCE: &[&str] = &["loopback", "host-local", "portmap", "bridge"];

const SOCKET: &str = "containerd.sock";
const LOG: &str = "containerd.log";

/// Run as pid 1 of containerd's namespaces, with the config as `$1`.
/// `mount -n` leaves the host's `/run/mount/utab` alone. bpffs is made a
/// shared mount in here (as on a systemd host) when it is mounted, so a
/// container can take it with HostToContainer propagation, as the knet
/// DaemonSet does.
const PRIVATE_MOUNTS_THEN_CONTAINERD: &str = concat!(
    "mount -n -t tmpfs -o mode=0755 knet-run /run",
    " && mount -n -t tmpfs -o mode=0755 knet-var-lib /var/lib",
    " && { ! mountpoint -q /sys/fs/bpf || mount -n --make-shared /sys/fs/bpf; }",
    " && exec containerd --config \"$1\"",
);

pub struct Containerd {
    cri: Option<Cri>,
    /// The `unshare` process (nsenter execs it); containerd is its child.
    child: Option<Child>,
    /// containerd's pid as the host sees it.
    pid: u32,
    /// The first level of every sandbox's cgroup parent.
    cgroup_root: String,
    /// containerd's root, state, sockets, config, log, CNI directories.
    dir: TempDir,
}

/// A pod sandbox as the runtime reports it.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub id: String,
    /// `PodSandboxStatus.state` is SANDBOX_READY.
    pub ready: bool,
    /// `PodSandboxStatus.network.ip`.
    pub ip: Ipv4Addr,
    /// The pod's network namespace as the host reaches it
    /// (`/proc/<containerd>/root<netns path>`).
    pub netns: PathBuf,
    /// The host-side interfaces of the CNI result containerd keeps (those
    /// without a sandbox), e.g. knet's host veth.
    pub host_interfaces: Vec<String>,
    /// containerd's verbose status info (`runtimeSpec`, `cniResult`, ...).
    pub info: Value,
}

impl Containerd {
    /// Starts containerd in `node`'s network namespace with `conflist` as
    /// its only CNI network, waits (bounded) for its CRI to answer, and
    /// imports the pause image.
    pub fn start(node: &Netns, conflist: &Value) -> Result<Self> {
        Self::start_with(node, Some(conflist))
    }

    /// Like `start`, with no network configuration: a node whose CNI
    /// configuration the network's own DaemonSet is to write.
    pub fn start_empty(node: &Netns) -> Result<Self> {
        Self::start_with(node, None)
    }

    fn start_with(node: &Netns, conflist: Option<&Value>) -> Result<Self> {
        let image = pause_image::archive()?;
        let dir = TempDir::new("containerd")?;
        let d = dir.0.clone();
        let (bin_dir, conf_dir) = (d.join("cni/bin"), d.join("cni/net.d"));
        std::fs::create_dir_all(&bin_dir)?;
        std::fs::create_dir_all(&conf_dir)?;
        std::os::unix::fs::symlink(plugin_binary()?, bin_dir.join("knet"))?;
        for p in REFERENCE {
            std::os::unix::fs::symlink(Path::new(REFERENCE_PLUGINS).join(p), bin_dir.join(p))?;
        }
        if let Some(conflist) = conflist {
            std::fs::write(conf_dir.join("10-test.conflist"), serde_json::to_string_pretty(conflist)?)?;
        }
        let socket = d.join(SOCKET);
        let config = d.join("config.toml");
        std::fs::write(&config, config_toml(&d, &socket, &bin_dir, &conf_dir))?;
        let log = d.join(LOG);

        // The CRI stream server binds 127.0.0.1; containerd exits without it.
        node.ip(&["link", "set", "lo", "up"])?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", node.name()))
            // Slave propagation: the host's mounts (bpffs) reach containers
            // with HostToContainer propagation, nothing mounted in here
            // reaches the host.
            .args(["--", "unshare", "--mount", "--propagation", "slave", "--pid", "--fork", "--kill-child"])
            // A /proc of the new pid namespace: containerd finds its own
            // threads' namespaces there.
            .args(["--mount-proc", "--", "sh", "-c", PRIVATE_MOUNTS_THEN_CONTAINERD, "sh"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            // Its own process group: a terminal's Ctrl-C reaches the test,
            // whose drop removes the sandboxes before containerd goes.
            .process_group(0)
            .spawn()
            .context("cannot start containerd (nsenter, unshare)")?;
        let mut c = Containerd { cri: None, pid: 0, child: Some(child), cgroup_root: unique_name("cri"), dir };
        c.wait_ready().map_err(|e| anyhow::anyhow!("{e:#}\n--- containerd log ---\n{}", c.log_tail(60)))?;
        c.import(image)?;
        wait::until("the CRI plugin to see the pause image", Duration::from_secs(10), || {
            c.cri().has_image(pause_image::PAUSE_IMAGE).ok().filter(|&known| known)
        })?;
        Ok(c)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let unshare = self.child.as_ref().context("no child")?.id();
        self.pid = wait::until("containerd to be forked", Duration::from_secs(10), || {
            let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).ok()?;
            children.split_whitespace().next()?.parse().ok()
        })?;
        let socket = self.socket();
        let child = self.child.as_mut().context("no child")?;
        let cri = wait::until("containerd's CRI to answer", Duration::from_secs(60), || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(anyhow::anyhow!("containerd exited ({status}) while starting")));
            }
            if !socket.exists() {
                return None;
            }
            Cri::connect(&socket).ok().map(Ok)
        })??;
        self.cri = Some(cri);
        Ok(())
    }

    /// CNI configuration directory (`cni.conf_dir`).
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.0.join("cni/net.d")
    }

    /// CNI plugin directory (`cni.bin_dir`).
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.dir.0.join("cni/bin")
    }

    /// A path of containerd's mount namespace (its own `/run`) as the host
    /// reaches it.
    pub fn host_path(&self, inside: &Path) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{}", self.pid, inside.display()))
    }

    /// The cgroup parent kubelet would give the pod with `uid`.
    pub fn cgroup_parent(&self, uid: &str) -> String {
        format!("/{}/pod{uid}", self.cgroup_root)
    }

    /// Imports an OCI archive into the CRI's image namespace.
    pub fn import(&self, archive: &Path) -> Result<()> {
        let socket = self.socket();
        let socket = socket.to_str().context("socket path")?;
        let archive_s = archive.to_str().context("archive path")?;
        cmd::run("ctr", &["-n", "k8s.io", "--address", socket, "images", "import", archive_s])?;
        Ok(())
    }

    /// containerd's gRPC socket (the CRI's and `ctr`'s).
    pub fn socket(&self) -> PathBuf {
        self.dir.0.join(SOCKET)
    }

    pub fn cri(&self) -> &Cri {
        self.cri.as_ref().expect("a started containerd has a CRI client")
    }

    /// containerd's pid as the host sees it.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// RunPodSandbox for `meta` under this runtime's cgroup parent, as
    /// kubelet with the cgroupfs driver sends it; the sandbox id, or the
    /// runtime's error (CNI failures quote the plugin).
    pub fn run_pod(&self, meta: &PodMeta) -> Result<String> {
        self.cri().run_pod_sandbox(meta, &self.cgroup_parent(&meta.uid))
    }

    /// A sandbox's address, namespace and CNI interfaces, from
    /// PodSandboxStatus (verbose).
    pub fn sandbox(&self, id: &str) -> Result<Sandbox> {
        let status = self.cri().pod_sandbox_status(id)?;
        let ready = status.status.as_ref().is_some_and(|s| s.state == PodSandboxState::SandboxReady as i32);
        let ip = status.status.as_ref().and_then(|s| s.network.as_ref()).map(|n| n.ip.clone()).unwrap_or_default();
        let ip = ip.parse().with_context(|| format!("sandbox {id} has no IPv4 address ({ip:?})"))?;
        let info: Value = serde_json::from_str(status.info.get("info").context("no verbose info")?)?;
        let netns = info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .and_then(|ns| ns.iter().find(|n| n["type"] == "network"))
            .and_then(|n| n["path"].as_str())
            .with_context(|| format!("no network namespace path in the runtime spec of {id}"))?;
        let mut host_interfaces: Vec<String> = info["cniResult"]["Interfaces"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| v["Sandbox"].as_str().unwrap_or("").is_empty())
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        host_interfaces.sort();
        Ok(Sandbox {
            id: id.into(),
            ready,
            ip,
            netns: PathBuf::from(format!("/proc/{}/root{netns}", self.pid)),
            host_interfaces,
            info,
        })
    }

    /// StopPodSandbox then RemovePodSandbox, as kubelet deletes a pod.
    pub fn delete_pod(&self, id: &str) -> Result<()> {
        self.cri().stop_pod_sandbox(id)?;
        self.cri().remove_pod_sandbox(id)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.0.join(LOG)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills containerd (pid 1 of its pid namespace, so the kernel kills
    /// shims and pause processes with it) and waits until every process of
    /// that namespace is gone.
    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // pid 0 (containerd never forked) would signal our own group.
        let pid_ns = (self.pid != 0).then(|| std::fs::read_link(format!("/proc/{}/ns/pid", self.pid)).ok()).flatten();
        if self.pid != 0 {
            let _ = cmd::run("kill", &["-KILL", &self.pid.to_string()]);
        }
        if wait::until("containerd's unshare to exit", Duration::from_secs(10), || child.try_wait().ok().flatten())
            .is_err()
        {
            // --kill-child: containerd goes with it.
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(ns) = pid_ns {
            if let Err(e) = wait::until("containerd's processes to end", Duration::from_secs(10), || {
                (!pid_namespace_in_use(&ns)).then_some(())
            }) {
                eprintln!("cleanup: {e:#}");
            }
        }
    }

    /// Removes this runtime's cgroup trees, deepest first, in every
    /// hierarchy (runc's cgroupfs driver makes one per controller).
    fn remove_cgroups(&self) {
        let mut roots = vec![Path::new("/sys/fs/cgroup").join(&self.cgroup_root)];
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            roots.extend(hierarchies.flatten().map(|h| h.path().join(&self.cgroup_root)));
        }
        for root in roots.into_iter().filter(|r| r.is_dir()) {
            if let Err(e) = wait::until(&format!("{} to be removable", root.display()), Duration::from_secs(10), || {
                remove_cgroup_tree(&root).ok()
            }) {
                eprintln!("cleanup: {e:#}");
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let running = self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if let (true, Some(cri)) = (running, &self.cri) {
            match cri.list_pod_sandboxes() {
                Ok(ids) => {
                    for id in ids {
                        if let Err(e) = self.delete_pod(&id) {
                            eprintln!("cleanup: sandbox {id}: {e:#}");
                        }
                    }
                }
                Err(e) => eprintln!("cleanup: listing sandboxes: {e:#}"),
            }
        }
        if std::thread::panicking() {
            eprintln!("--- containerd log (last 80 lines) ---\n{}", self.log_tail(80));
        }
        self.cri = None;
        self.kill();
        self.remove_cgroups();
        // `dir` (root, state, runc state, CNI directories, log) goes last,
        // with the field.
    }
}

/// Whether any process still lives in the pid namespace `ns`
/// (`pid:[inode]`, as `/proc/PID/ns/pid` reads).
fn pid_namespace_in_use(ns: &Path) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else { return false };
    procs
        .flatten()
        .filter(|p| p.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .any(|p| std::fs::read_link(p.path().join("ns/pid")).is_ok_and(|l| l == ns))
}

/// rmdir of a cgroup and every cgroup below it, deepest first (a cgroup
/// directory goes only when it has no children and no processes).
fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&e.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// containerd's configuration: every path its own, the CRI plugin on the
/// test's CNI directories (../shared/toolchain.md says why each setting).
fn config_toml(dir: &Path, socket: &Path, bin_dir: &Path, conf_dir: &Path) -> String {
    let p = |p: &Path| format!("{:?}", p.display().to_string());
    let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
    format!(
        r#"version = 2
root = {root}
state = {state}

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[{cri}]
  sandbox_image = "{image}"
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  restrict_oom_score_adj = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = {runc_root}

[{cri}.cni]
  bin_dir = {bin_dir}
  conf_dir = {conf_dir}
"#,
        root = p(&dir.join("root")),
        state = p(&dir.join("state")),
        socket = p(socket),
        ttrpc = p(&dir.join("containerd.ttrpc.sock")),
        opt = p(&dir.join("opt")),
        image = pause_image::PAUSE_IMAGE,
        runc_root = p(&dir.join("runc")),
        bin_dir = p(bin_dir),
        conf_dir = p(conf_dir),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_quotes_paths() {
        let t = config_toml(Path::new("/tmp/x"), Path::new("/tmp/x/c.sock"), Path::new("/b"), Path::new("/c"));
        assert!(t.contains("root = \"/tmp/x/root\""), "{t}");
        assert!(
            t.contains("[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"/b\"\n  conf_dir = \"/c\""),
            "{t}"
        );
        assert!(t.contains("restrict_oom_score_adj = true"));
    }
}
