//! A cluster moving off flannel: one node configured exactly as flanneld's
//! vxlan backend configures one (`knet_tests::flannel`, no agent) and two
//! knet nodes, on one underlay, with one Kubernetes API. The flannel node
//! is programmed only from what the knet agents published on their Node
//! objects (read back from the API server, as flanneld would read them);
//! the agents learn the flannel node from the annotations flanneld writes.
//! The same with the static node file: the flannel node is its fourth
//! column's MAC, and is programmed from what the agents report. And with
//! one etcd: the flannel node's lease is written by hand as flanneld writes
//! it, and the flannel node is programmed from the knet agents' leases.
//! Needs root; run with `cargo xtask test`.

use std::{collections::BTreeSet, time::Duration};

use ipnet::Ipv4Net;
use knet_agent::config::Mode;
use knet_common::Stat;
use knet_tests::{
    cluster::{
        fabric_port, node_address, node_line, node_name, pod_address, pod_address_in, pod_cidr, Cluster, EtcdOptions,
        ETCD_NETWORK, ETCD_PREFIX,
    },
    flannel,
    kube_api::KubeApi,
    traffic, wait, Node, Pod,
};

const WAIT: Duration = Duration::from_secs(20);
/// The flannel node's index: its address, subnet and fabric port.
const FLANNEL: usize = 2;

struct Mixed {
    // Drop order: the flannel node's pod and node, then the cluster.
    flannel_pod: Pod,
    flannel: Node,
    /// The flannel node's pod subnet.
    flannel_subnet: Ipv4Net,
    c: Cluster,
}

impl Mixed {
    fn api(&self) -> &KubeApi {
        self.c.kube.as_ref().expect("a Kubernetes cluster")
    }

    /// Every pod, the flannel node's last.
    fn pods(&self) -> Vec<&Pod> {
        let mut pods: Vec<&Pod> = self.c.all_pods().map(|(_, p)| p).collect();
        pods.push(&self.flannel_pod);
        pods
    }

    /// What flanneld writes on the flannel node's own Node.
    fn publish_flannel_annotations(&self) {
        let annotations = flannel::annotations(&self.flannel.ns, node_address(FLANNEL)).unwrap();
        self.api().set_annotations(&node_name(FLANNEL), &annotations);
    }

    /// Waits until every agent has the flannel node's subnet in its map
    /// with the VTEP MAC `mac`.
    fn wait_programmed(&self, mac: &str) {
        let want = format!("{} via {} vtep {mac}", self.flannel_subnet, node_address(FLANNEL));
        for (i, agent) in self.c.agents.iter().enumerate() {
            wait::until(&format!("agent {i} to program {want}"), WAIT, || {
                agent.datapath().ok()?.node_subnets.contains(&want).then_some(())
            })
            .unwrap();
        }
    }
}

/// The flannel node of cluster `c`, on its fabric, with a pod; flannel
/// gives its pods the device's MTU.
fn with_flannel_node(c: Cluster) -> Mixed {
    with_flannel_node_in(c, pod_cidr(FLANNEL).parse().unwrap())
}

/// The same, the flannel node's pods in `subnet`.
fn with_flannel_node_in(c: Cluster, subnet: Ipv4Net) -> Mixed {
    let mut flannel = Node::on_fabric("vt-flannel", node_address(FLANNEL), &c.fabric, &fabric_port(FLANNEL)).unwrap();
    flannel.ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
    flannel::add_device(&flannel.ns, node_address(FLANNEL), subnet).unwrap();
    flannel.set_pod_routes(&subnet.to_string(), flannel::MTU);
    let pod_ip =
        if subnet.to_string() == pod_cidr(FLANNEL) { pod_address(FLANNEL, 0) } else { pod_address_in(subnet, 0) };
    let flannel_pod = flannel.add_pod("vt-fp0", pod_ip).unwrap();
    Mixed { flannel_pod, flannel, flannel_subnet: subnet, c }
}

/// Two knet nodes with a pod each, watching the test API server, and the
/// flannel node with a pod, its Node in the API (with flanneld's
/// annotations when `annotated`), programmed as flanneld programs a lease
/// for each knet node from that node's Node object.
fn mixed(annotated: bool) -> Mixed {
    let m = with_flannel_node(Cluster::kubernetes(2, 1, Mode::Vxlan).unwrap());

    let api = m.api();
    api.set_node(&node_name(FLANNEL), node_address(FLANNEL), Some(&pod_cidr(FLANNEL)));
    if annotated {
        m.publish_flannel_annotations();
    }
    // flanneld: a route, neighbour and FDB entry per lease, here from the
    // knet nodes' Node objects once their agents have annotated them.
    for i in 0..2 {
        let peer = wait::until(&format!("{}'s flannel annotations", node_name(i)), WAIT, || {
            flannel::peer_from_node(&api.node(&node_name(i))?).ok()
        })
        .unwrap();
        assert_eq!((peer.public_ip, peer.subnet.to_string()), (node_address(i), pod_cidr(i)), "{peer:?}");
        flannel::add_peer(&m.flannel.ns, &peer).unwrap();
    }
    m
}

/// Ping and TCP between every pair of pods, both ways, and not one frame
/// of knet's refused by `flannel.1`.
fn every_pod_reaches_every_pod(m: &Mixed) {
    let dropped_before = flannel::rx_otherhost_dropped(&m.flannel.ns).unwrap();
    let pods = m.pods();
    for a in &pods {
        for b in &pods {
            if a.ip == b.ip {
                continue;
            }
            traffic::ping(&a.ns, b.ip, 2).unwrap_or_else(|e| panic!("ping {} -> {}: {e:#}", a.ip, b.ip));
            traffic::tcp_transfer(&a.ns, &b.ns, b.ip, 1 << 20)
                .unwrap_or_else(|e| panic!("TCP {} -> {}: {e:#}", a.ip, b.ip));
        }
    }
    // The flannel node's kernel took every frame knet sent it.
    assert_eq!(flannel::rx_otherhost_dropped(&m.flannel.ns).unwrap(), dropped_before);
    // Both knet nodes carried the flannel pod's traffic in their own tunnel.
    for (i, agent) in m.c.agents.iter().enumerate() {
        assert!(agent.stat(Stat::RedirectTunnel).unwrap().0 > 100, "agent {i} encapsulated nothing");
        assert!(agent.stat(Stat::DeliverFromNode).unwrap().0 > 100, "agent {i} decapsulated nothing");
    }
}

#[test]
fn pods_on_flannel_and_knet_nodes_reach_each_other_both_ways() {
    let m = mixed(true);
    m.wait_programmed(&flannel::vtep_mac(&m.flannel.ns).unwrap());
    every_pod_reaches_every_pod(&m);
    // Each agent annotated its own Node, and no other.
    let patched: BTreeSet<String> = m.api().metadata_patches().into_iter().map(|p| p.node).collect();
    assert_eq!(patched, BTreeSet::from([node_name(0), node_name(1)]));
}

#[test]
fn without_the_flannel_nodes_vtep_mac_its_kernel_drops_knets_frames_until_it_is_published() {
    let m = mixed(false);
    // A Node without flannel's annotations: knet sends it the MAC a knet
    // node has, which flannel.1 is not.
    let knet_default = knet_agent::mac::MacAddr::vtep_for(node_address(FLANNEL)).to_string();
    m.wait_programmed(&knet_default);
    let (knet_pod, flannel_pod) = (&m.c.pods[0][0], &m.flannel_pod);
    let before = flannel::rx_otherhost_dropped(&m.flannel.ns).unwrap();
    assert!(!traffic::ping_once(&knet_pod.ns, flannel_pod.ip), "flannel.1 took a frame for another MAC");
    // The other way the request arrives, and the reply dies the same way.
    assert!(!traffic::ping_once(&flannel_pod.ns, knet_pod.ip));
    let after = flannel::rx_otherhost_dropped(&m.flannel.ns).unwrap();
    assert!(after >= before + 2, "rx_otherhost_dropped went from {before} to {after}");

    // flanneld publishes the node's VTEP MAC: the agents rewrite that
    // node's entry (a changed MAC is a change) and traffic flows.
    m.publish_flannel_annotations();
    m.wait_programmed(&flannel::vtep_mac(&m.flannel.ns).unwrap());
    traffic::ping(&knet_pod.ns, flannel_pod.ip, 2).unwrap();
    traffic::ping(&flannel_pod.ns, knet_pod.ip, 2).unwrap();
    assert_eq!(flannel::rx_otherhost_dropped(&m.flannel.ns).unwrap(), after);
}

#[test]
fn a_flannel_node_in_the_node_file_with_its_vtep_mac_reaches_knet_pods_both_ways() {
    let m = with_flannel_node(Cluster::new(2, 1, Mode::Vxlan).unwrap());
    let mac = flannel::vtep_mac(&m.flannel.ns).unwrap();
    let flannel_line = format!("{} {} {} {mac}\n", node_name(FLANNEL), node_address(FLANNEL), pod_cidr(FLANNEL));
    m.c.write_nodes_file(&format!("{}{}{flannel_line}", node_line(0), node_line(1))).unwrap();
    m.wait_programmed(&mac);
    // flanneld's programming toward each knet node, from what its agent
    // reports of itself.
    for (i, agent) in m.c.agents.iter().enumerate() {
        let node = agent.node().unwrap();
        let vtep_mac = node.vtep_mac.expect("a VXLAN agent reports its VTEP MAC").to_string();
        let peer = flannel::Peer { public_ip: node_address(i), subnet: node.pod_cidr, vtep_mac };
        flannel::add_peer(&m.flannel.ns, &peer).unwrap();
    }
    every_pod_reaches_every_pod(&m);
}

#[test]
fn a_flannel_node_leased_by_hand_in_etcd_and_knet_nodes_leasing_beside_it_reach_each_other_both_ways() {
    // The agents lease from the first free subnets; the flannel node's is
    // past where they look (flannel's random pick among the first 100).
    let subnet: Ipv4Net = "10.244.200.0/24".parse().unwrap();
    let options = EtcdOptions { lease_ttl_seconds: 60, network_config: ETCD_NETWORK, tls: false };
    let m = with_flannel_node_in(Cluster::etcd(2, 1, Mode::Vxlan, options).unwrap(), subnet);
    let etcd = m.c.etcd.as_ref().expect("an etcd cluster");
    // The flannel node's lease, written by hand exactly as flanneld writes it.
    let key = format!("{ETCD_PREFIX}/subnets/{}-{}", subnet.network(), subnet.prefix_len());
    etcd.put(&key, &flannel::lease_value(&m.flannel.ns, node_address(FLANNEL)).unwrap(), Some(120)).unwrap();
    // flanneld: a route, neighbour and FDB entry for every other lease,
    // read from etcd (what the knet agents published, and nothing else).
    let leases = etcd.list(&format!("{ETCD_PREFIX}/subnets/")).unwrap();
    let mut peers = 0;
    for (k, v) in leases.iter().filter(|(k, _)| *k != key) {
        let peer = flannel::peer_from_lease(k, v).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(m.c.pod_cidrs.contains(&peer.subnet), "{peer:?} is not a knet agent's lease");
        flannel::add_peer(&m.flannel.ns, &peer).unwrap();
        peers += 1;
    }
    assert_eq!(peers, 2, "one lease per knet agent: {leases:?}");
    m.wait_programmed(&flannel::vtep_mac(&m.flannel.ns).unwrap());
    every_pod_reaches_every_pod(&m);
}
