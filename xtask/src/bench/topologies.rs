//! The data planes a bench case compares, each in its own namespaces
//! (../shared/bench.md). Every plane of a case is built before the first
//! measurement and lives until the last. Pods are wired by the plugin each
//! plane's users run: the reference `ptp` and `bridge` plugins, the
//! `bridge` plugin configured as flannel's CNI plugin delegates to it, and
//! knet's own plugin with its agent.

use std::{net::Ipv4Addr, path::Path};

use anyhow::{Context, Result};
use knet_agent::config::Mode;
use knet_tests::{
    cluster::{self, Cluster},
    cni::{self, CniPod, PluginPod, TempDir},
    flannel, kube_api,
    traffic::{self, IperfOptions, Latency, PacketRate},
    Agent, AgentOptions, Netns, Node,
};
use serde_json::{json, Value};

use super::kube_rules;

/// Something with a client and a server to measure between.
trait Topology {
    /// (client, server, server address)
    fn ends(&self) -> (&Netns, &Netns, Ipv4Addr);
    /// The node namespaces (where a real cluster's kube-proxy rules live).
    fn nodes(&self) -> Vec<&Netns>;
}

/// One TCP run: throughput and what it cost the two CPUs.
pub struct Throughput {
    pub gbit_per_s: f64,
    pub cpu: Option<traffic::CpuUse>,
}

/// A data plane ready to measure.
pub struct Plane {
    pub name: String,
    topology: Box<dyn Topology>,
}

/// Client and server on CPUs of their own where there are two: the
/// scheduler's placement otherwise moves results more than the planes do,
/// and each run's CPU cost is then read from those two CPUs.
fn cpus() -> Option<(u32, u32)> {
    (std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2).then_some((0, 1))
}

impl Plane {
    fn new(name: impl Into<String>, topology: impl Topology + 'static) -> Self {
        Plane { name: name.into(), topology: Box::new(topology) }
    }

    pub fn nodes(&self) -> Vec<&Netns> {
        self.topology.nodes()
    }

    /// iperf3 TCP from client to server.
    pub fn tcp(&self, seconds: u32, streams: u32) -> Result<Throughput> {
        let (client, server, ip) = self.topology.ends();
        let opts = IperfOptions { seconds, streams, cpus: cpus(), ..Default::default() };
        let t = traffic::iperf3(client, server, ip, opts)?;
        Ok(Throughput { gbit_per_s: t.bits_per_second / 1e9, cpu: t.cpu })
    }

    /// iperf3 UDP with `len`-byte datagrams: packets delivered per second.
    pub fn udp(&self, seconds: u32, len: u32) -> Result<PacketRate> {
        let (client, server, ip) = self.topology.ends();
        traffic::udp_packet_rate(client, server, ip, len, IperfOptions { seconds, cpus: cpus(), ..Default::default() })
    }

    /// sockperf TCP ping-pong latency from client to server.
    pub fn latency(&self, seconds: u32) -> Result<Latency> {
        let (client, server, ip) = self.topology.ends();
        traffic::sockperf(client, server, ip, seconds)
    }
}

/// Another build of knet measured beside this one: its planes are named
/// `PLANE@NAME` and run the agent binary (with the eBPF object it embeds)
/// at `agent_bin`.
#[derive(Clone, Debug)]
pub struct Variant {
    pub name: String,
    pub agent_bin: std::path::PathBuf,
}

impl std::str::FromStr for Variant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, bin) = s.split_once('=').ok_or_else(|| format!("{s:?} is not NAME=AGENT_BINARY"))?;
        if name.is_empty() || name.contains(['/', '@', ' ']) {
            return Err(format!("variant name {name:?} must be non-empty, without '/', '@' or spaces"));
        }
        let agent_bin = std::path::PathBuf::from(bin);
        if !agent_bin.is_file() {
            return Err(format!("variant {name}: no agent binary at {bin}"));
        }
        Ok(Variant { name: name.into(), agent_bin })
    }
}

/// Builds `knet` planes once for this build and once per variant, each
/// variant's agents started from its own binary (the harness takes the
/// binary from `KNET_AGENT_BIN` when an agent starts; it is put back after).
fn knet_planes(name: &str, variants: &[Variant], build: impl Fn() -> Result<Box<dyn Topology>>) -> Result<Vec<Plane>> {
    let mut planes = vec![Plane { name: name.into(), topology: build()? }];
    let ours = std::env::var_os("KNET_AGENT_BIN");
    for v in variants {
        std::env::set_var("KNET_AGENT_BIN", &v.agent_bin);
        let built = build();
        match &ours {
            Some(bin) => std::env::set_var("KNET_AGENT_BIN", bin),
            None => std::env::remove_var("KNET_AGENT_BIN"),
        }
        planes.push(Plane { name: format!("{name}@{}", v.name), topology: built? });
    }
    Ok(planes)
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

/// Two pods on one node, ADDed through a plugin. Field order is drop order:
/// the pods' CNI DEL first (with the agent, if any, still up), then the
/// agent, the IPAM directory and the node.
struct NodePods {
    pods: Vec<PluginPod>,
    knet_pods: Vec<CniPod>,
    _agent: Option<Agent>,
    _network: Option<cni::KnetNetwork>,
    _ipam: Option<TempDir>,
    node: Node,
}

impl NodePods {
    fn addresses(&self) -> Vec<(&Netns, Ipv4Addr)> {
        let reference = self.pods.iter().map(|p| (&p.ns, p.ip));
        reference.chain(self.knet_pods.iter().map(|p| (&p.pod.ns, p.pod.ip))).collect()
    }
}

impl Topology for NodePods {
    fn ends(&self) -> (&Netns, &Netns, Ipv4Addr) {
        let pods = self.addresses();
        (pods[0].0, pods[1].0, pods[1].1)
    }

    fn nodes(&self) -> Vec<&Netns> {
        vec![&self.node.ns]
    }
}

/// Pod to pod on one node: the veth limit, the two reference plugins most
/// clusters' pods are wired by, and knet.
pub fn same_node(variants: &[Variant]) -> Result<Vec<Plane>> {
    let mut planes = vec![
        Plane::new("veth-direct", veth_direct()?),
        Plane::new("kernel-routed", reference_pods("ptp", ptp_conf)?),
        Plane::new("bridge", reference_pods("bridge", |subnet, ipam| bridge_conf(subnet, ipam, 1500, None))?),
    ];
    planes.extend(knet_planes("knet", variants, || Ok(Box::new(knet_pods()?)))?);
    Ok(planes)
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

const SAME_NODE_SUBNET: &str = "10.244.0.0/24";

/// host-local IPAM of `subnet` in `dir`, with `routes`.
fn host_local(subnet: &str, dir: &Path, routes: Value) -> Value {
    json!({"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": routes, "dataDir": dir})
}

/// The reference `ptp` plugin as its README configures it: a veth per pod,
/// /32 routes on the node, the node's stack forwarding between them (what
/// Calico's iptables mode does too).
fn ptp_conf(subnet: &str, ipam: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "bench-ptp",
        "type": "ptp",
        "ipMasq": false,
        "mtu": 1500,
        "ipam": host_local(subnet, ipam, json!([{"dst": "0.0.0.0/0"}])),
    })
}

/// The reference `bridge` plugin as flannel's CNI plugin delegates to it
/// (flannel-io/cni-plugin: `type` bridge, `ipMasq` false since flanneld
/// masquerades, `isGateway` true, `mtu` from subnet.env; kube-flannel.yml's
/// delegate adds `hairpinMode` and `isDefaultGateway`; IPAM host-local
/// over the node's subnet with a route to the cluster network): `cni0`
/// switching pods of one node, the stack routing the rest.
fn bridge_conf(subnet: &str, ipam: &Path, mtu: u32, cluster_cidr: Option<&str>) -> Value {
    let routes = cluster_cidr.map_or(json!([]), |c| json!([{"dst": c}]));
    json!({
        "cniVersion": "1.0.0",
        "name": "cbr0",
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": true,
        "isDefaultGateway": true,
        "hairpinMode": true,
        "ipMasq": false,
        "mtu": mtu,
        "ipam": host_local(subnet, ipam, routes),
    })
}

fn reference_plugin(name: &str) -> std::path::PathBuf {
    Path::new(cni::REFERENCE_PLUGINS).join(name)
}

/// Two pods on a node of their own, ADDed through reference plugin `plugin`.
fn reference_pods(plugin: &str, conf: impl Fn(&str, &Path) -> Value) -> Result<NodePods> {
    let node = Node::new(&format!("bench-{plugin}-node"), Ipv4Addr::new(192, 168, 77, 10))?;
    let ipam = TempDir::new("bench-ipam")?;
    let conf = conf(SAME_NODE_SUBNET, &ipam.0);
    let mut pods = NodePods { pods: vec![], knet_pods: vec![], _agent: None, _network: None, _ipam: None, node };
    for role in ["bench-a", "bench-b"] {
        let pod = cni::add_through(pods.node.ns.name(), &reference_plugin(plugin), &conf, role)
            .with_context(|| format!("{plugin} plugin"))?;
        pods.pods.push(pod);
    }
    pods._ipam = Some(ipam);
    Ok(pods)
}

/// Two pods ADDed through knet's plugin, with the agent running.
fn knet_pods() -> Result<NodePods> {
    let node = Node::new("bench-knet-node", Ipv4Addr::new(192, 168, 77, 10))?;
    let opts = AgentOptions { node_name: "bench-0".into(), pod_cidr: Some(SAME_NODE_SUBNET.into()) };
    let agent = Agent::start(&node.ns, &opts)?;
    let network = cni::KnetNetwork::new(&node.ns, SAME_NODE_SUBNET, agent.socket())?;
    let mut pods = NodePods { pods: vec![], knet_pods: vec![], _agent: None, _network: None, _ipam: None, node };
    for role in ["bench-a", "bench-b"] {
        pods.knet_pods.push(network.add_pod(role).context("knet plugin")?);
    }
    pods._agent = Some(agent);
    pods._network = Some(network);
    Ok(pods)
}

/// Two nodes on an underlay bridge, no agent: the kernel baselines. Field
/// order is drop order (pods' CNI DEL while the nodes exist).
struct TwoNodes {
    pods: Vec<PluginPod>,
    _ipam: Vec<TempDir>,
    nodes: [Node; 2],
    _fabric: Netns,
}

impl Topology for TwoNodes {
    /// Pod to pod; node to node where there are no pods (the underlay).
    fn ends(&self) -> (&Netns, &Netns, Ipv4Addr) {
        match &self.pods[..] {
            [a, b] => (&a.ns, &b.ns, b.ip),
            _ => (&self.nodes[0].ns, &self.nodes[1].ns, self.nodes[1].address),
        }
    }

    fn nodes(&self) -> Vec<&Netns> {
        self.nodes.iter().map(|n| &n.ns).collect()
    }
}

/// A knet cluster, with anything the plane adds that must go before it
/// (more pods, DELed while the agents run).
struct KnetCluster {
    extra_pods: Vec<CniPod>,
    cluster: Cluster,
}

impl Topology for KnetCluster {
    fn ends(&self) -> (&Netns, &Netns, Ipv4Addr) {
        let c = &self.cluster;
        (&c.pods[0][0].ns, &c.pods[1][0].ns, c.pods[1][0].ip)
    }

    fn nodes(&self) -> Vec<&Netns> {
        self.cluster.nodes.iter().map(|n| &n.ns).collect()
    }
}

fn knet_cluster(mode: Mode) -> Result<KnetCluster> {
    Ok(KnetCluster { extra_pods: vec![], cluster: Cluster::with_cni(2, 1, mode)? })
}

/// Pod to pod across two nodes: the underlay limit, flannel's two backends,
/// and knet in both modes, every pod ADDed through its plane's plugin.
pub fn cross_node(variants: &[Variant]) -> Result<Vec<Plane>> {
    let mut planes = vec![
        Plane::new("underlay", two_nodes(Baseline::Underlay)?),
        Plane::new("host-gw", two_nodes(Baseline::HostGw)?),
        Plane::new("flannel-vxlan", two_nodes(Baseline::FlannelVxlan)?),
    ];
    planes.extend(knet_planes("knet-vxlan", variants, || Ok(Box::new(knet_cluster(Mode::Vxlan)?)))?);
    planes.extend(knet_planes("knet-native", variants, || Ok(Box::new(knet_cluster(Mode::Native)?)))?);
    Ok(planes)
}

/// How cross-node cost grows with work: knet-vxlan with 3 node subnets and
/// 2 pods per node (the first plane, which the others are compared with),
/// with 1,000 and 10,000 node subnets in its map, and with 250 pods per
/// node.
pub fn scaling() -> Result<Vec<Plane>> {
    Ok(vec![
        Plane::new("knet-vxlan", with_subnets(3)?),
        Plane::new("knet-vxlan/1000-subnets", with_subnets(1_000)?),
        Plane::new("knet-vxlan/10000-subnets", with_subnets(10_000)?),
        Plane::new("knet-vxlan/250-pods", with_pods(250)?),
    ])
}

/// A two-node knet-vxlan cluster whose node file names `subnets` nodes in
/// all (the other nodes' underlay addresses routed to the outside host, as
/// the load test routes them), each agent waited for until all are in its
/// map.
fn with_subnets(subnets: usize) -> Result<KnetCluster> {
    let mut c = knet_cluster(Mode::Vxlan)?;
    let bulk = kube_api::bulk_nodes(subnets.saturating_sub(2) as u32);
    let lines = bulk.into_iter().map(|(name, ip, cidr)| format!("{name} {ip} {}\n", cidr.unwrap_or_default()));
    let file: String = (0..2).map(cluster::node_line).chain(lines).collect();
    for node in &c.cluster.nodes {
        node.ns.ip(&["route", "add", kube_api::BULK_UNDERLAY, "via", &cluster::OUTSIDE.to_string()])?;
    }
    c.cluster.write_nodes_file(&file)?;
    for agent in &c.cluster.agents {
        agent.wait_programmed(subnets, std::time::Duration::from_secs(180))?;
    }
    // A pod more on each node: the cluster's 2 pods per node, as on the others.
    add_pods(&mut c, 1)?;
    Ok(c)
}

/// A two-node knet-vxlan cluster with `pods` pods on each node.
fn with_pods(pods: usize) -> Result<KnetCluster> {
    let mut c = knet_cluster(Mode::Vxlan)?;
    add_pods(&mut c, pods - 1)?;
    Ok(c)
}

fn add_pods(c: &mut KnetCluster, per_node: usize) -> Result<()> {
    for (i, net) in c.cluster.networks.iter().enumerate() {
        for j in 0..per_node {
            c.extra_pods.push(net.add_pod(&format!("bench-s{i}p{j}")).with_context(|| format!("pod {j} on node {i}"))?);
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Baseline {
    Underlay,
    HostGw,
    FlannelVxlan,
}

/// The cluster network flannel's `net-conf.json` names.
const FLANNEL_NETWORK: &str = "10.244.0.0/16";

fn two_nodes(kind: Baseline) -> Result<TwoNodes> {
    let fabric = Netns::new("bench-fabric")?;
    fabric.ip(&["link", "add", "br0", "type", "bridge"])?;
    fabric.ip(&["link", "set", "br0", "up"])?;
    let nodes = [
        Node::on_fabric("bench-n0", cluster::node_address(0), &fabric, "n0")?,
        Node::on_fabric("bench-n1", cluster::node_address(1), &fabric, "n1")?,
    ];
    let mut planes = TwoNodes { pods: vec![], _ipam: vec![], nodes, _fabric: fabric };
    if kind == Baseline::Underlay {
        return Ok(planes);
    }
    for (i, node) in planes.nodes.iter().enumerate() {
        // flanneld: ip_forward on, its masquerade and forward rules
        // (trafficmngr/iptables: --ip-masq, as kube-flannel.yml runs it).
        node.ns.sysctl("net.ipv4.ip_forward", "1")?;
        kube_rules::load(&node.ns, &kube_rules::flannel_ruleset(FLANNEL_NETWORK, &cluster::pod_cidr(i)))?;
        if kind == Baseline::FlannelVxlan {
            flannel::add_device(&node.ns, cluster::node_address(i), cluster::pod_cidr(i).parse()?)?;
        }
    }
    if kind == Baseline::FlannelVxlan {
        for (i, j) in [(0, 1), (1, 0)] {
            let peer = flannel::Peer {
                public_ip: cluster::node_address(j),
                subnet: cluster::pod_cidr(j).parse()?,
                vtep_mac: flannel::vtep_mac(&planes.nodes[j].ns)?,
            };
            flannel::add_peer(&planes.nodes[i].ns, &peer)?;
        }
    }
    if kind == Baseline::HostGw {
        // flannel's host-gw backend: a route to each peer's subnet via the
        // peer's public IP on the external interface (backend/hostgw).
        for (i, j) in [(0, 1), (1, 0)] {
            let via = cluster::node_address(j).to_string();
            planes.nodes[i].ns.ip(&["route", "add", &cluster::pod_cidr(j), "via", &via, "dev", "eth0"])?;
        }
    }
    // flannel's subnet.env MTU: the VXLAN device's for vxlan, the
    // interface's for host-gw.
    let mtu = if kind == Baseline::FlannelVxlan { flannel::MTU } else { 1500 };
    for i in 0..2 {
        let ipam = TempDir::new("bench-ipam")?;
        let conf = bridge_conf(&cluster::pod_cidr(i), &ipam.0, mtu, Some(FLANNEL_NETWORK));
        planes._ipam.push(ipam);
        let node = planes.nodes[i].ns.name().to_string();
        let pod = cni::add_through(&node, &reference_plugin("bridge"), &conf, &format!("bench-p{i}"))
            .context("bridge plugin, as flannel delegates")?;
        planes.pods.push(pod);
    }
    Ok(planes)
}
