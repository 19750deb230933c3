//! The data planes a bench case compares, each in its own namespaces
//! (../shared/bench.md). Every plane of a case is built before the first
//! measurement and lives until the last.

use std::net::Ipv4Addr;

use anyhow::Result;
use knet_agent::config::Mode;
use knet_tests::{
    cluster::{self, Cluster},
    flannel,
    traffic::{self, IperfOptions},
    Agent, AgentOptions, Netns, Node, Pod,
};

/// Something with a client and a server to measure between.
trait Topology {
    /// (client, server, server address)
    fn ends(&self) -> (&Netns, &Netns, Ipv4Addr);
    /// The node namespaces (where a real cluster's kube-proxy rules live).
    fn nodes(&self) -> Vec<&Netns>;
}

/// A data plane ready to measure.
pub struct Plane {
    pub name: &'static str,
    topology: Box<dyn Topology>,
}

impl Plane {
    fn new(name: &'static str, topology: impl Topology + 'static) -> Self {
        Plane { name, topology: Box::new(topology) }
    }

    pub fn nodes(&self) -> Vec<&Netns> {
        self.topology.nodes()
    }

    /// iperf3 TCP throughput from client to server, in Gbit/s.
    pub fn measure(&self, seconds: u32, streams: u32) -> Result<f64> {
        let (client, server, ip) = self.topology.ends();
        // Client and server on CPUs of their own where there are two: the
        // scheduler's placement otherwise moves results more than the planes do.
        let cpus = (std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2).then_some((0, 1));
        let t = traffic::iperf3(client, server, ip, IperfOptions { seconds, streams, reverse: false, cpus })?;
        Ok(t.bits_per_second / 1e9)
    }

    /// sockperf TCP ping-pong latency from client to server.
    pub fn latency(&self, seconds: u32) -> Result<traffic::Latency> {
        let (client, server, ip) = self.topology.ends();
        traffic::sockperf(client, server, ip, seconds)
    }
}

/// Two pods on one node, with whatever runs the node (an agent or nothing).
struct TwoPods {
    // Field order is drop order.
    _agent: Option<Agent>,
    a: Pod,
    b: Pod,
    node: Node,
}

impl Topology for TwoPods {
    fn ends(&self) -> (&Netns, &Netns, Ipv4Addr) {
        (&self.a.ns, &self.b.ns, self.b.ip)
    }

    fn nodes(&self) -> Vec<&Netns> {
        vec![&self.node.ns]
    }
}

/// Two namespaces on one veth pair.
struct VethPair {
    a: Netns,
    b: Netns,
}

impl Topology for VethPair {
    fn ends(&self) -> (&Netns, &Netns, Ipv4Addr) {
        (&self.a, &self.b, Ipv4Addr::new(10, 99, 0, 2))
    }

    /// The physical limit has no node.
    fn nodes(&self) -> Vec<&Netns> {
        vec![]
    }
}

/// Pod to pod on one node: the veth limit, kernel routing, and knet.
pub fn same_node() -> Result<Vec<Plane>> {
    Ok(vec![
        Plane::new("veth-direct", veth_direct()?),
        Plane::new("kernel-routed", two_pods(false)?),
        Plane::new("knet", two_pods(true)?),
    ])
}

/// Two namespaces on one veth pair: the physical limit of a hop.
fn veth_direct() -> Result<VethPair> {
    let a = Netns::new("bench-vd-a")?;
    let b = Netns::new("bench-vd-b")?;
    a.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.name()])?;
    for (ns, ip) in [(&a, "10.99.0.1/24"), (&b, "10.99.0.2/24")] {
        ns.ip(&["addr", "add", ip, "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
    }
    Ok(VethPair { a, b })
}

/// Routed veths with /32 routes: with `knet`, the agent redirects; without,
/// the node's stack forwards (the reference `ptp` plugin, Calico's
/// iptables mode).
fn two_pods(knet: bool) -> Result<TwoPods> {
    let node = Node::new(if knet { "bench-knet-node" } else { "bench-kr-node" }, Ipv4Addr::new(192, 168, 77, 10))?;
    let a = node.add_pod("bench-a", Ipv4Addr::new(10, 244, 0, 2))?;
    let b = node.add_pod("bench-b", Ipv4Addr::new(10, 244, 0, 3))?;
    let agent = if knet {
        let agent = Agent::start(
            &node.ns,
            &AgentOptions { node_name: "bench-0".into(), pod_cidr: Some("10.244.0.0/24".into()) },
        )?;
        agent.add_pod(&a)?;
        agent.add_pod(&b)?;
        Some(agent)
    } else {
        node.ns.sysctl("net.ipv4.ip_forward", "1")?;
        None
    };
    Ok(TwoPods { _agent: agent, a, b, node })
}

/// Two nodes on an underlay bridge, a pod on each, no agent: the kernel
/// baselines set their own routes.
struct TwoNodes {
    pod0: Pod,
    pod1: Pod,
    nodes: [Node; 2],
    _fabric: Netns,
    /// Measure node to node instead of pod to pod.
    node_to_node: bool,
}

impl Topology for TwoNodes {
    fn ends(&self) -> (&Netns, &Netns, Ipv4Addr) {
        if self.node_to_node {
            (&self.nodes[0].ns, &self.nodes[1].ns, self.nodes[1].address)
        } else {
            (&self.pod0.ns, &self.pod1.ns, self.pod1.ip)
        }
    }

    fn nodes(&self) -> Vec<&Netns> {
        self.nodes.iter().map(|n| &n.ns).collect()
    }
}

impl Topology for Cluster {
    fn ends(&self) -> (&Netns, &Netns, Ipv4Addr) {
        (&self.pods[0][0].ns, &self.pods[1][0].ns, self.pods[1][0].ip)
    }

    fn nodes(&self) -> Vec<&Netns> {
        self.nodes.iter().map(|n| &n.ns).collect()
    }
}

/// Pod to pod across two nodes: the underlay limit, flannel's two backends,
/// and knet in both modes.
pub fn cross_node() -> Result<Vec<Plane>> {
    Ok(vec![
        Plane::new("underlay", two_nodes(Baseline::Underlay)?),
        Plane::new("host-gw", two_nodes(Baseline::HostGw)?),
        Plane::new("flannel-vxlan", two_nodes(Baseline::FlannelVxlan)?),
        Plane::new("knet-vxlan", Cluster::new(2, 1, Mode::Vxlan)?),
        Plane::new("knet-native", Cluster::new(2, 1, Mode::Native)?),
    ])
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Baseline {
    Underlay,
    HostGw,
    FlannelVxlan,
}

fn two_nodes(kind: Baseline) -> Result<TwoNodes> {
    let fabric = Netns::new("bench-fabric")?;
    fabric.ip(&["link", "add", "br0", "type", "bridge"])?;
    fabric.ip(&["link", "set", "br0", "up"])?;
    let mut nodes = [
        Node::on_fabric("bench-n0", cluster::node_address(0), &fabric, "n0")?,
        Node::on_fabric("bench-n1", cluster::node_address(1), &fabric, "n1")?,
    ];
    for (i, node) in nodes.iter().enumerate() {
        node.ns.sysctl("net.ipv4.ip_forward", "1")?;
        if kind == Baseline::FlannelVxlan {
            flannel::add_device(&node.ns, cluster::node_address(i), cluster::pod_cidr(i).parse()?)?;
        }
    }
    if kind == Baseline::FlannelVxlan {
        for (i, j) in [(0, 1), (1, 0)] {
            let peer = flannel::Peer {
                public_ip: cluster::node_address(j),
                subnet: cluster::pod_cidr(j).parse()?,
                vtep_mac: flannel::vtep_mac(&nodes[j].ns)?,
            };
            flannel::add_peer(&nodes[i].ns, &peer)?;
        }
        // flannel gives pods the VXLAN device's MTU.
        for (i, node) in nodes.iter_mut().enumerate() {
            node.set_pod_routes(&cluster::pod_cidr(i), flannel::MTU);
        }
    }
    if kind == Baseline::HostGw {
        for (i, j) in [(0, 1), (1, 0)] {
            let via = cluster::node_address(j).to_string();
            nodes[i].ns.ip(&["route", "add", &cluster::pod_cidr(j), "via", &via, "dev", "eth0"])?;
        }
    }
    let pod0 = nodes[0].add_pod("bench-p0", cluster::pod_address(0, 0))?;
    let pod1 = nodes[1].add_pod("bench-p1", cluster::pod_address(1, 0))?;
    Ok(TwoNodes { pod0, pod1, nodes, _fabric: fabric, node_to_node: kind == Baseline::Underlay })
}
