//! The default network configuration list: `knet` with `host-local` IPAM
//! over the node's pod CIDR, chained with the reference `portmap` plugin.

use std::path::Path;

use ipnet::Ipv4Net;
use serde_json::{json, Value};

use super::spec::{DEFAULT_AGENT_SOCKET, DEFAULT_MTU};

/// The conflist's version: 1.0.0, not knet's latest (1.1.0). Tried here
/// through libcni 1.1.2 (Debian's, what containerd 1.6 and CRI-O build
/// with): a 1.1.0 conflist runs knet's ADD, then libcni refuses the result
/// ("unsupported CNI result version"), so the runtime fails the pod; and
/// Debian's host-local and portmap (plugins 1.1.1) list no 1.1.0 either.
/// At 1.0.0 the routes' MTUs are not in the result, which CHECK does not
/// need (it asks the agent). `tests/tests/libcni.rs` shows both.
pub const CONFLIST_VERSION: &str = "1.0.0";

pub struct ConflistOptions<'a> {
    pub pod_cidr: Ipv4Net,
    pub mtu: u32,
    pub agent_socket: &'a Path,
}

impl<'a> ConflistOptions<'a> {
    pub fn new(pod_cidr: Ipv4Net) -> Self {
        ConflistOptions { pod_cidr, mtu: DEFAULT_MTU, agent_socket: Path::new(DEFAULT_AGENT_SOCKET) }
    }
}

/// `knet.conflist` for a node.
pub fn conflist(o: &ConflistOptions<'_>) -> Value {
    json!({
        "cniVersion": CONFLIST_VERSION,
        "name": "knet",
        "plugins": [
            {
                "type": "knet",
                "mtu": o.mtu,
                "agentSocket": o.agent_socket,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": o.pod_cidr.trunc().to_string()}]]
                }
            },
            {
                "type": "portmap",
                "capabilities": {"portMappings": true}
            }
        ]
    })
}

/// Writes `value` to `path` atomically (a temporary file renamed over it),
/// so a runtime watching the directory never reads half a file.
pub fn write(path: &Path, value: &Value) -> anyhow::Result<()> {
    use anyhow::Context;
    let text = serde_json::to_string_pretty(value)? + "\n";
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file_name = path.file_name().with_context(|| format!("{} names no file", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp", file_name.to_string_lossy()));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot move {} to {}", tmp.display(), path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::spec;

    #[test]
    fn chains_knet_with_portmap_over_the_pod_cidr() {
        let c = conflist(&ConflistOptions::new("10.244.3.0/24".parse().unwrap()));
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["name"], "knet");
        let plugins = c["plugins"].as_array().unwrap();
        assert_eq!(plugins.len(), 2);
        assert_eq!(plugins[0]["type"], "knet");
        assert_eq!(plugins[0]["ipam"]["type"], "host-local");
        assert_eq!(plugins[0]["ipam"]["ranges"], json!([[{"subnet": "10.244.3.0/24"}]]));
        assert_eq!(plugins[0]["agentSocket"], "/run/knet/agent.sock");
        assert_eq!(plugins[0]["mtu"], 1500);
        assert_eq!(plugins[1], json!({"type": "portmap", "capabilities": {"portMappings": true}}));
    }

    #[test]
    fn writes_the_file_atomically() {
        let dir = std::env::temp_dir().join(format!("knet-conflist-{}", std::process::id()));
        let path = dir.join("net.d/10-knet.conflist");
        let value = conflist(&ConflistOptions::new("10.244.0.0/24".parse().unwrap()));
        write(&path, &value).unwrap();
        let back: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let entries = std::fs::read_dir(dir.join("net.d")).unwrap().count();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(back, value);
        assert_eq!(entries, 1, "the temporary file was left behind");
    }

    #[test]
    fn knet_s_entry_is_a_config_the_plugin_accepts() {
        // libcni hands each plugin its entry with cniVersion and name added.
        let c = conflist(&ConflistOptions {
            pod_cidr: "10.244.0.0/16".parse().unwrap(),
            mtu: 1450,
            agent_socket: Path::new("/var/run/knet.sock"),
        });
        let mut entry = c["plugins"][0].clone();
        entry["cniVersion"] = c["cniVersion"].clone();
        entry["name"] = c["name"].clone();
        let parsed = spec::parse_netconf(entry.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.mtu, 1450);
        assert_eq!(parsed.agent_socket, Path::new("/var/run/knet.sock"));
        assert_eq!(parsed.ipam_type, "host-local");
    }
}
