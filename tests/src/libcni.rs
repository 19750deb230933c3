//! CNI through libcni, as containerd and CRI-O call plugins: the driver in
//! `tests/libcni` (Go, Debian's libcni 1.1) runs ADD, CHECK and DEL of a
//! network configuration list with `AddNetworkList`, `CheckNetworkList` and
//! `DelNetworkList`, caching results in a directory of the test's own. So
//! CHECK and DEL get what libcni cached as `prevResult`, not what the plugin
//! printed: whatever libcni's result types drop is gone.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{
    agent::agent_binary,
    cmd,
    cni::{self, result_ip, TempDir},
    netns::unique_name,
    Netns,
};

/// How long one libcni operation (every plugin of the list) may take; the
/// driver's own bound, with `timeout(1)` around it as a backstop.
const OPERATION_TIMEOUT_SECS: u32 = 60;

/// The driver: `KNET_LIBCNI_BIN`, or the one `cargo xtask test` builds next
/// to the workspace's debug binaries.
pub fn driver_binary() -> Result<PathBuf> {
    cmd::workspace_binary("KNET_LIBCNI_BIN", "knet-libcni")
}

/// What one libcni operation printed and how it exited.
#[derive(Debug, Clone)]
pub struct LibcniOutput {
    pub status: Option<i32>,
    /// ADD's result, or the driver's `{"code","msg"}` on failure.
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
}

impl LibcniOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// Panics with everything libcni and the plugins said unless it
    /// succeeded.
    pub fn expect_ok(self, what: &str) -> Self {
        assert!(
            self.success(),
            "{what} through libcni failed ({:?}): stdout {} stderr {}",
            self.status,
            self.stdout.trim(),
            self.stderr.trim()
        );
        self
    }

    /// Panics unless the operation failed with a plugin's CNI error `code`;
    /// libcni's message.
    pub fn expect_error(self, code: u64, what: &str) -> String {
        assert!(!self.success(), "{what}: expected error code {code}, libcni succeeded: {}", self.stdout.trim());
        assert_eq!(
            self.json["code"].as_u64(),
            Some(code),
            "{what}: wrong error: {} (stderr {})",
            self.stdout.trim(),
            self.stderr.trim()
        );
        self.json["msg"].as_str().unwrap_or_default().to_string()
    }
}

/// knet's network on one node as a runtime holds it: the conflist that
/// `knet-agent cni-config` writes (knet with host-local IPAM, then portmap)
/// in a configuration directory, host-local's data directory and libcni's
/// cache directory, all the test's own and removed on drop.
pub struct LibcniNetwork {
    /// The conflist's network name.
    pub name: String,
    pub conflist: Value,
    pub conf_dir: TempDir,
    pub cache_dir: TempDir,
    pub data_dir: TempDir,
    driver: PathBuf,
    cni_path: String,
    node_ns: String,
}

impl LibcniNetwork {
    /// The conflist `knet-agent cni-config` makes for `pod_cidr`, `mtu` and
    /// the node's agent socket, with host-local given a data directory of
    /// its own (so its leases can be counted).
    pub fn new(node: &Netns, pod_cidr: &str, agent_socket: &Path, mtu: u32) -> Result<Self> {
        let driver = driver_binary()?;
        let agent = agent_binary()?;
        let agent_path = agent.to_str().context("agent path")?;
        let socket = agent_socket.to_str().context("socket path")?;
        let text = cmd::run(
            agent_path,
            &["cni-config", "--pod-cidr", pod_cidr, "--mtu", &mtu.to_string(), "--api-socket", socket],
        )?;
        let mut conflist: Value = serde_json::from_str(&text).with_context(|| format!("cni-config printed {text}"))?;
        let data_dir = TempDir::new("ipam")?;
        let knet = conflist["plugins"]
            .as_array_mut()
            .and_then(|p| p.iter_mut().find(|p| p["type"] == "knet"))
            .with_context(|| format!("no knet plugin in {text}"))?;
        knet["ipam"]["dataDir"] = Value::from(data_dir.0.to_str().context("data dir")?);
        let name = conflist["name"].as_str().context("conflist without a name")?.to_string();
        let conf_dir = TempDir::new("net.d")?;
        std::fs::write(conf_dir.0.join("10-knet.conflist"), serde_json::to_string_pretty(&conflist)?)?;
        Ok(LibcniNetwork {
            name,
            conflist,
            conf_dir,
            cache_dir: TempDir::new("cni-cache")?,
            data_dir,
            cni_path: cni::cni_path(&cni::plugin_binary()?),
            driver,
            node_ns: node.name().to_string(),
        })
    }

    pub fn conflist_path(&self) -> PathBuf {
        self.conf_dir.0.join("10-knet.conflist")
    }

    /// Replaces the conflist file (a runtime reads it on every operation).
    pub fn write_conflist(&mut self, conflist: Value) -> Result<()> {
        std::fs::write(self.conflist_path(), serde_json::to_string_pretty(&conflist)?)?;
        self.conflist = conflist;
        Ok(())
    }

    /// Runs `command` (ADD, CHECK, DEL) through libcni inside the node's
    /// namespace for `container_id` and interface eth0.
    pub fn run(&self, command: &str, container_id: &str, netns: Option<&Netns>) -> Result<LibcniOutput> {
        let conflist = self.conflist_path();
        let cache = self.cache_dir.0.to_str().context("cache dir")?.to_string();
        let netns = netns.map(cni::netns_path).unwrap_or_default();
        let timeout = format!("{OPERATION_TIMEOUT_SECS}s");
        let backstop = (OPERATION_TIMEOUT_SECS + 10).to_string();
        let driver = self.driver.to_str().context("driver path")?;
        let args = [
            "netns",
            "exec",
            &self.node_ns,
            "timeout",
            "-s",
            "KILL",
            &backstop,
            driver,
            "-conflist",
            conflist.to_str().context("conflist path")?,
            "-cache-dir",
            &cache,
            "-netns",
            &netns,
            "-container-id",
            container_id,
            "-ifname",
            "eth0",
            "-path",
            &self.cni_path,
            "-timeout",
            &timeout,
            command,
        ];
        let mut child = std::process::Command::new("ip");
        child.args(args);
        // The runtime's environment has no CNI_* of its own.
        for (k, _) in std::env::vars() {
            if k.starts_with("CNI_") {
                child.env_remove(k);
            }
        }
        let out = child.output().context("cannot run the libcni driver")?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(LibcniOutput {
            status: out.status.code(),
            json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// A new pod namespace ADDed through libcni under a unique container
    /// ID, with a guard that DELs it through libcni on drop.
    pub fn add_pod(&self, role: &str) -> Result<LibcniPod<'_>> {
        let ns = Netns::new(role)?;
        let container_id = unique_name(&format!("ctr-{role}"));
        let out = self.run("ADD", &container_id, Some(&ns))?;
        // Even a failed ADD may have left something (libcni does not undo
        // the plugins before the one that failed): DEL it all the same.
        let mut pod =
            LibcniPod { net: self, container_id, result: Value::Null, ip: Ipv4Addr::UNSPECIFIED, ns, deleted: false };
        if !out.success() {
            bail!(
                "ADD of {role} through libcni failed ({:?}): {} {}",
                out.status,
                out.stdout.trim(),
                out.stderr.trim()
            );
        }
        pod.ip = result_ip(&out.json)?;
        pod.result = out.json;
        Ok(pod)
    }

    /// libcni's cache file for `container_id` and eth0.
    pub fn cache_file(&self, container_id: &str) -> PathBuf {
        self.cache_dir.0.join("results").join(format!("{}-{container_id}-eth0", self.name))
    }

    /// The result libcni cached for `container_id` (what CHECK and DEL get
    /// as prevResult).
    pub fn cached_result(&self, container_id: &str) -> Result<Value> {
        let path = self.cache_file(container_id);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("no libcni cache file {}", path.display()))?;
        let v: Value = serde_json::from_str(&text)?;
        Ok(v["result"].clone())
    }

    /// The addresses host-local has leased (its files named by address).
    pub fn leases(&self) -> Vec<Ipv4Addr> {
        let dir = self.data_dir.0.join(&self.name);
        let mut out: Vec<Ipv4Addr> = std::fs::read_dir(dir)
            .map(|entries| entries.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// A pod ADDed through libcni; DELed through libcni on drop (before its
/// namespace goes) unless `del` already succeeded.
pub struct LibcniPod<'a> {
    net: &'a LibcniNetwork,
    pub container_id: String,
    /// ADD's result as libcni returned it to the runtime.
    pub result: Value,
    pub ip: Ipv4Addr,
    pub ns: Netns,
    deleted: bool,
}

impl LibcniPod<'_> {
    pub fn check(&self) -> Result<LibcniOutput> {
        self.net.run("CHECK", &self.container_id, Some(&self.ns))
    }

    /// DEL now; once it succeeded, drop does not run it again.
    pub fn del(&mut self) -> Result<LibcniOutput> {
        let out = self.net.run("DEL", &self.container_id, Some(&self.ns))?;
        self.deleted |= out.success();
        Ok(out)
    }

    /// The host veth's name from ADD's result.
    pub fn host_veth(&self) -> Result<String> {
        cni::result_host_veth(&self.result)
    }
}

impl Drop for LibcniPod<'_> {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        match self.del() {
            Ok(out) if out.success() => {}
            Ok(out) => eprintln!(
                "cleanup: DEL of {} through libcni: {} {}",
                self.container_id,
                out.stdout.trim(),
                out.stderr.trim()
            ),
            Err(e) => eprintln!("cleanup: DEL of {} through libcni: {e:#}", self.container_id),
        }
    }
}
