//! The network configuration lists containerd's CRI plugin loads from its
//! `conf_dir`: knet's (as `knet-agent cni-config` writes it) and the
//! reference `bridge` one it is measured against.

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::{
    cluster::{pod_cidr, Cluster},
    cni::{KnetNetwork, TempDir},
    netns::unique_name,
};

/// containerd 1.6's libcni (1.1) does not accept 1.1.0.
pub const CNI_VERSION: &str = "1.0.0";

/// The knet network of cluster node `i` as `Cluster::with_cni` makes it:
/// the node's pod CIDR, its agent's socket, `mtu` the underlay's, and a
/// host-local data directory of its own (so leases can be counted).
pub fn knet_network(cluster: &Cluster, i: usize) -> Result<KnetNetwork> {
    let node = &cluster.nodes[i];
    let mut net = KnetNetwork::new(&node.ns, &pod_cidr(i), cluster.agents[i].socket())?;
    let mtu = node.ns.read("/sys/class/net/eth0/mtu")?;
    net.mtu = mtu.trim().parse().with_context(|| format!("underlay mtu {mtu:?}"))?;
    Ok(net)
}

/// knet with host-local, chained with portmap: knet-agent's
/// `cni/conflist.rs` with the test network's name, MTU, socket and IPAM
/// directory.
pub fn knet(net: &KnetNetwork) -> Value {
    let mut entry = net.conf();
    if let Some(o) = entry.as_object_mut() {
        // A conflist carries them once, for every plugin.
        o.remove("cniVersion");
        o.remove("name");
    }
    json!({
        "cniVersion": CNI_VERSION,
        "name": net.name,
        "plugins": [entry, {"type": "portmap", "capabilities": {"portMappings": true}}],
    })
}

/// The reference `bridge` plugin with host-local over a pod CIDR, chained
/// with portmap like knet's: what a plain kubeadm-style node runs.
pub struct BridgeNetwork {
    pub name: String,
    pub pod_cidr: String,
    pub data_dir: TempDir,
}

impl BridgeNetwork {
    pub fn new(pod_cidr: &str) -> Result<Self> {
        Ok(BridgeNetwork {
            name: unique_name("bridge-net"),
            pod_cidr: pod_cidr.into(),
            data_dir: TempDir::new("ipam")?,
        })
    }

    pub fn conflist(&self) -> Value {
        json!({
            "cniVersion": CNI_VERSION,
            "name": self.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.pod_cidr}]],
                        "dataDir": self.data_dir.0,
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        })
    }
}
