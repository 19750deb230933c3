//! A node configured exactly as flanneld's vxlan backend configures one
//! (flannel's `pkg/backend/vxlan`: `device.go` and `vxlan_network.go`),
//! with no agent: the bench's `flannel-vxlan` baseline and the flannel node
//! of the mixed-cluster tests. The one owner of that setup.
//!
//! flanneld gives a node `flannel.1` (VNI 1, port 8472, no learning, its
//! public IP as the local address, the node's subnet's network address as
//! a /32 on it), and for each peer lease a route to the peer's subnet via
//! that subnet's network address on `flannel.1` (onlink), a permanent
//! neighbour entry mapping that address to the peer's VTEP MAC, and an FDB
//! entry sending the MAC to the peer's public IP.

use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;
use serde_json::Value;

use crate::{topology::link_mac, Netns};

pub const DEVICE: &str = "flannel.1";
pub const VNI: u32 = 1;
pub const PORT: u16 = 8472;
/// The device's (and flannel's pods') MTU: the underlay's 1500 less VXLAN's 50.
pub const MTU: u32 = 1450;

/// flannel's node annotations (its default prefix).
pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
pub const KUBE_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// A peer as flanneld's vxlan backend takes it from a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub public_ip: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub vtep_mac: String,
}

/// `flannel.1` on the node of `ns`, whose underlay is `eth0` with
/// `public_ip`, for the pod subnet `subnet`.
pub fn add_device(ns: &Netns, public_ip: Ipv4Addr, subnet: Ipv4Net) -> Result<()> {
    let local = public_ip.to_string();
    ns.ip(&[
        "link",
        "add",
        DEVICE,
        "type",
        "vxlan",
        "id",
        &VNI.to_string(),
        "local",
        &local,
        "dev",
        "eth0",
        "dstport",
        &PORT.to_string(),
        "nolearning",
    ])?;
    ns.ip(&["link", "set", DEVICE, "mtu", &MTU.to_string(), "up"])?;
    ns.ip(&["addr", "add", &format!("{}/32", subnet.network()), "dev", DEVICE])?;
    Ok(())
}

/// What flanneld programs for a peer's lease.
pub fn add_peer(ns: &Netns, peer: &Peer) -> Result<()> {
    let gw = peer.subnet.network().to_string();
    ns.ip(&["route", "add", &peer.subnet.to_string(), "via", &gw, "dev", DEVICE, "onlink"])?;
    ns.ip(&["neigh", "add", &gw, "lladdr", &peer.vtep_mac, "dev", DEVICE, "nud", "permanent"])?;
    ns.exec("bridge", &["fdb", "append", &peer.vtep_mac, "dev", DEVICE, "dst", &peer.public_ip.to_string()])?;
    Ok(())
}

/// The node's VTEP MAC: its `flannel.1`'s address.
pub fn vtep_mac(ns: &Netns) -> Result<String> {
    link_mac(ns, DEVICE)
}

/// The annotations flanneld writes on this flannel node's own Node (Go's
/// `json.Marshal` of its `vxlanLeaseAttrs`, no spaces).
pub fn annotations(ns: &Netns, public_ip: Ipv4Addr) -> Result<BTreeMap<String, String>> {
    let mac = vtep_mac(ns)?;
    Ok(BTreeMap::from([
        (BACKEND_TYPE.to_string(), "vxlan".to_string()),
        (BACKEND_DATA.to_string(), format!(r#"{{"VNI":{VNI},"VtepMAC":"{mac}"}}"#)),
        (PUBLIC_IP.to_string(), public_ip.to_string()),
        (KUBE_SUBNET_MANAGER.to_string(), "true".to_string()),
    ]))
}

/// A peer from a `Node` object as the API serves it, read the way
/// flanneld's Kubernetes subnet manager reads one (`nodeToLease`, and its
/// vxlan backend's handling of the lease): only a node it manages, of
/// backend type vxlan, its subnet from `spec.podCIDRs`. Read here on its
/// own terms, not with knet's parser, so the two cannot agree on a mistake.
pub fn peer_from_node(node: &Value) -> Result<Peer> {
    let name = node["metadata"]["name"].as_str().unwrap_or("?");
    let annotation = |key: &str| node["metadata"]["annotations"][key].as_str();
    if annotation(KUBE_SUBNET_MANAGER) != Some("true") {
        bail!("node {name}: flanneld ignores a node without {KUBE_SUBNET_MANAGER}=true");
    }
    if annotation(BACKEND_TYPE) != Some("vxlan") {
        bail!("node {name}: backend type {:?} is not vxlan", annotation(BACKEND_TYPE));
    }
    let public_ip = annotation(PUBLIC_IP)
        .and_then(|ip| ip.parse().ok())
        .with_context(|| format!("node {name}: no IPv4 {PUBLIC_IP}"))?;
    let data: Value = serde_json::from_str(annotation(BACKEND_DATA).unwrap_or(""))
        .with_context(|| format!("node {name}: {BACKEND_DATA} is not JSON"))?;
    let vtep_mac = data["VtepMAC"].as_str().with_context(|| format!("node {name}: no VtepMAC in {data}"))?.to_string();
    let cidrs = node["spec"]["podCIDRs"].as_array().cloned().unwrap_or_default();
    let subnet = cidrs
        .iter()
        .filter_map(Value::as_str)
        .chain(node["spec"]["podCIDR"].as_str())
        .find_map(|c| c.parse::<Ipv4Net>().ok())
        .with_context(|| format!("node {name}: no IPv4 pod CIDR"))?;
    Ok(Peer { public_ip, subnet, vtep_mac })
}

/// The value flanneld's vxlan backend writes for this flannel node's
/// lease in etcd (Go's `json.Marshal` of its lease attributes), byte for
/// byte.
pub fn lease_value(ns: &Netns, public_ip: Ipv4Addr) -> Result<String> {
    let mac = vtep_mac(ns)?;
    Ok(format!(
        r#"{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":{VNI},"VtepMAC":"{mac}"}}}}"#
    ))
}

/// A peer from an etcd lease (`<prefix>/subnets/a.b.c.d-len` and its
/// value), read the way flanneld's etcd subnet manager and vxlan backend
/// read one: the subnet from the key, `PublicIP`, and `BackendData.VtepMAC`
/// of a vxlan lease. On its own terms, not with knet's parser.
pub fn peer_from_lease(key: &str, value: &str) -> Result<Peer> {
    let tail = key.rsplit('/').next().unwrap_or(key);
    let (net, len) = tail.split_once('-').with_context(|| format!("lease key {key} is not a.b.c.d-len"))?;
    let subnet: Ipv4Net = format!("{net}/{len}").parse().with_context(|| format!("lease key {key}"))?;
    let lease: Value = serde_json::from_str(value).with_context(|| format!("lease {key} is not JSON"))?;
    if lease["BackendType"].as_str() != Some("vxlan") {
        bail!("lease {key}: backend type {} is not vxlan", lease["BackendType"]);
    }
    let public_ip = lease["PublicIP"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .with_context(|| format!("lease {key}: no PublicIP"))?;
    let vtep_mac = lease["BackendData"]["VtepMAC"]
        .as_str()
        .with_context(|| format!("lease {key}: no BackendData.VtepMAC"))?
        .to_string();
    Ok(Peer { public_ip, subnet, vtep_mac })
}

/// `rx_otherhost_dropped` of the node's `flannel.1`: decapsulated frames
/// it dropped because their inner destination was not its MAC.
pub fn rx_otherhost_dropped(ns: &Netns) -> Result<u64> {
    ns.with_netlink(|netlink| async move {
        netlink.rx_otherhost_dropped(DEVICE).await?.context("no rx_otherhost_dropped for flannel.1")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_read_from_a_node_as_flanneld_reads_it() {
        let node = serde_json::json!({
            "metadata": {"name": "n1", "annotations": {
                BACKEND_TYPE: "vxlan",
                BACKEND_DATA: r#"{"VNI":1,"VtepMAC":"02:6b:c0:a8:4d:0b"}"#,
                PUBLIC_IP: "192.168.77.11",
                KUBE_SUBNET_MANAGER: "true",
            }},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
        });
        let peer = peer_from_node(&node).unwrap();
        assert_eq!(
            peer,
            Peer {
                public_ip: Ipv4Addr::new(192, 168, 77, 11),
                subnet: "10.244.1.0/24".parse().unwrap(),
                vtep_mac: "02:6b:c0:a8:4d:0b".into()
            }
        );
        let mut unmanaged = node.clone();
        unmanaged["metadata"]["annotations"][KUBE_SUBNET_MANAGER] = Value::Null;
        assert!(peer_from_node(&unmanaged).is_err());
    }
}
