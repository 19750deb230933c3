//! Nodes and pods as namespaces, wired the way knet's pods are: a veth
//! pair per pod, the pod's address as a /32, a default route through the
//! link-local gateway 169.254.1.1 with a static neighbour entry for the
//! host-side veth, and a /32 route back to the pod on the node.

use std::{cell::Cell, net::Ipv4Addr};

use anyhow::{Context, Result};

use crate::netns::Netns;

/// The gateway address every pod routes through (never on the wire: the
/// pod's neighbour entry for it is static).
pub const POD_GATEWAY: &str = "169.254.1.1";

pub struct Node {
    pub ns: Netns,
    /// The node's own address (on its loopback, or on `eth0` toward the
    /// underlay).
    pub address: Ipv4Addr,
    next_veth: Cell<u32>,
    /// The node's pod subnet, which pods reach at the device MTU, and the
    /// MTU of their default route (what the agent reports).
    pod_routes: Option<(String, u32)>,
}

impl Node {
    /// A node alone: its address on its loopback.
    pub fn new(role: &str, address: Ipv4Addr) -> Result<Self> {
        let ns = Netns::new(role)?;
        ns.ip(&["addr", "add", &format!("{address}/32"), "dev", "lo"])?;
        Ok(Node { ns, address, next_veth: Cell::new(0), pod_routes: None })
    }

    /// A node on an underlay: `eth0` with `address/24`, its peer `port` in
    /// `fabric` on the bridge `br0`.
    pub fn on_fabric(role: &str, address: Ipv4Addr, fabric: &Netns, port: &str) -> Result<Self> {
        let ns = Netns::new(role)?;
        fabric.ip(&["link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.name()])?;
        // The fabric is the wire. A real one carries what the sender's NIC
        // segments and the receiver's GRO puts back together, whatever
        // size the nodes' devices allow; a veth fabric passes GSO packets
        // whole, and a port left at 64 KiB would segment a node's BIG TCP
        // packets in software, which no switch does. The nodes' own
        // devices keep the kernel's defaults: raising theirs is the agent's
        // call (BIG TCP), and the baselines never have it.
        fabric.raise_gso_limits(port, knet_agent::host::BIG_TCP_SIZE)?;
        fabric.ip(&["link", "set", port, "master", "br0", "up"])?;
        ns.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        Ok(Node { ns, address, next_veth: Cell::new(0), pod_routes: None })
    }

    /// From now on pods reach `pod_cidr` at the device MTU and everything
    /// else with `route_mtu` (as the CNI plugin wires them).
    pub fn set_pod_routes(&mut self, pod_cidr: &str, route_mtu: u32) {
        self.pod_routes = Some((pod_cidr.to_string(), route_mtu));
    }

    /// A pod with address `ip`, wired to this node. The agent is not told.
    pub fn add_pod(&self, role: &str, ip: Ipv4Addr) -> Result<Pod> {
        let n = self.next_veth.get();
        self.next_veth.set(n + 1);
        let host_veth = format!("kv{n}");
        let ns = Netns::new(role)?;
        self.ns.ip(&["link", "add", &host_veth, "type", "veth", "peer", "name", "eth0", "netns", ns.name()])?;
        self.ns.ip(&["link", "set", &host_veth, "up"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
        let gateway_mac = link_mac(&self.ns, &host_veth)?;
        ns.ip(&["neigh", "add", POD_GATEWAY, "lladdr", &gateway_mac, "dev", "eth0", "nud", "permanent"])?;
        ns.ip(&["route", "add", POD_GATEWAY, "dev", "eth0", "scope", "link"])?;
        let via = ["via", POD_GATEWAY, "dev", "eth0", "onlink"];
        match &self.pod_routes {
            None => ns.ip(&[&["route", "add", "default"][..], &via].concat())?,
            Some((cidr, mtu)) => {
                ns.ip(&[&["route", "add", cidr.as_str()][..], &via].concat())?;
                ns.ip(&[&["route", "add", "default"][..], &via, &["mtu", &mtu.to_string()]].concat())?
            }
        };
        self.ns.ip(&["route", "add", &format!("{ip}/32"), "dev", &host_veth])?;
        let mac = link_mac(&ns, "eth0")?;
        Ok(Pod { ns, ip, mac, host_veth })
    }
}

pub struct Pod {
    pub ns: Netns,
    pub ip: Ipv4Addr,
    pub mac: String,
    /// The host-side veth, inside the node's namespace.
    pub host_veth: String,
}

impl Pod {
    /// Packets the pod's interface has sent.
    pub fn tx_packets(&self) -> Result<u64> {
        let text = self.ns.read("/sys/class/net/eth0/statistics/tx_packets")?;
        text.trim().parse().context("tx_packets")
    }
}

/// The MAC address of a link inside a namespace.
pub fn link_mac(ns: &Netns, link: &str) -> Result<String> {
    let json = ns.ip(&["-j", "link", "show", link])?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    v[0]["address"].as_str().map(str::to_string).context("link has no address")
}
