//! The data planes a bench case compares, each in its own namespaces.

use std::net::Ipv4Addr;

use anyhow::Result;
use knet_tests::{
    traffic::{self, IperfOptions},
    Agent, AgentOptions, Netns, Node, Pod,
};

/// A data plane ready to measure: a client and a server namespace, and
/// whatever keeps the path between them alive.
pub struct Plane {
    pub name: String,
    client: Netns,
    server: Netns,
    server_ip: Ipv4Addr,
    /// Dropped with the plane: agents first, then namespaces.
    _keep: Vec<Box<dyn std::any::Any>>,
}

impl Plane {
    /// iperf3 TCP throughput from client to server, in Gbit/s.
    pub fn measure(&self, seconds: u32, streams: u32) -> Result<f64> {
        let t = traffic::iperf3(
            &self.client,
            &self.server,
            self.server_ip,
            IperfOptions { seconds, streams, reverse: false },
        )?;
        Ok(t.bits_per_second / 1e9)
    }
}

fn pods(node: &Node) -> Result<(Pod, Pod)> {
    Ok((node.add_pod("bench-a", Ipv4Addr::new(10, 244, 0, 2))?, node.add_pod("bench-b", Ipv4Addr::new(10, 244, 0, 3))?))
}

/// Pod to pod on one node: the veth limit, kernel routing, and knet.
pub fn same_node() -> Result<Vec<Plane>> {
    Ok(vec![veth_direct()?, kernel_routed()?, knet_same_node()?])
}

/// Two namespaces on one veth pair: the physical limit of a hop.
fn veth_direct() -> Result<Plane> {
    let a = Netns::new("bench-vd-a")?;
    let b = Netns::new("bench-vd-b")?;
    a.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.name()])?;
    for (ns, ip) in [(&a, "10.99.0.1/24"), (&b, "10.99.0.2/24")] {
        ns.ip(&["addr", "add", ip, "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
    }
    Ok(Plane {
        name: "veth-direct".into(),
        client: a,
        server: b,
        server_ip: Ipv4Addr::new(10, 99, 0, 2),
        _keep: vec![],
    })
}

/// Routed veths with /32 routes and no eBPF (the reference `ptp` plugin,
/// Calico's iptables mode): the node's stack forwards.
fn kernel_routed() -> Result<Plane> {
    let node = Node::new("bench-kr-node", Ipv4Addr::new(192, 168, 77, 10))?;
    node.ns.sysctl("net.ipv4.ip_forward", "1")?;
    let (a, b) = pods(&node)?;
    let Pod { ns: client, .. } = a;
    let Pod { ns: server, ip: server_ip, .. } = b;
    Ok(Plane { name: "kernel-routed".into(), client, server, server_ip, _keep: vec![Box::new(node)] })
}

/// The same wiring with the knet agent and its redirect.
fn knet_same_node() -> Result<Plane> {
    let node = Node::new("bench-knet-node", Ipv4Addr::new(192, 168, 77, 10))?;
    let (a, b) = pods(&node)?;
    let agent =
        Agent::start(&node.ns, &AgentOptions { node_name: "bench-0".into(), pod_cidr: "10.244.0.0/24".into() })?;
    agent.add_pod(&a)?;
    agent.add_pod(&b)?;
    let Pod { ns: client, .. } = a;
    let Pod { ns: server, ip: server_ip, .. } = b;
    Ok(Plane { name: "knet".into(), client, server, server_ip, _keep: vec![Box::new(agent), Box::new(node)] })
}
