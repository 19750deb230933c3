//! What pods and nodes must not reach: an address of a node's pod subnet
//! that no pod has (the node's default route would carry it away), and the
//! node over IPv6 (no dual stack yet; link-local addresses would open the
//! node's services to every pod). Needs root; run with `cargo xtask test`.

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream},
    time::Duration,
};

use knet_agent::config::Mode;
use knet_common::Stat;
use knet_tests::{
    capture::Capture,
    cluster::{self, Cluster},
    traffic, wait, Netns,
};

const WAIT: Duration = Duration::from_secs(5);

/// An address of node 0's pod subnet that no pod has.
const UNASSIGNED: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 77);
/// Somewhere only node 0's default route leads.
const BEYOND: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

/// A cluster whose node 0 has a default route out of the underlay through
/// the outside host, as real nodes have, and a capture of everything node 0
/// sends onto the underlay (tunnelled packets decoded to their inner one).
fn cluster_with_a_gateway() -> (Cluster, Capture) {
    let c = Cluster::new(2, 1, Mode::Vxlan).unwrap();
    c.nodes[0].ns.ip(&["route", "add", "default", "via", &cluster::OUTSIDE.to_string()]).unwrap();
    let port = cluster::fabric_port(0);
    let cap = Capture::start(&c.fabric, &port, &["-Q", "in", "-T", "vxlan"], "ip").unwrap();
    (c, cap)
}

/// What node 0 sent onto the underlay before it sent an echo request to
/// `BEYOND` by its default route, the way a leak would have gone.
fn sent_by_node_0(c: &Cluster, cap: &Capture) -> Vec<String> {
    // No answer comes from there; the request leaving is enough.
    let _ = traffic::ping_once(&c.nodes[0].ns, BEYOND);
    let marker = format!("{} > {BEYOND}: ICMP echo request", c.nodes[0].address);
    cap.lines_before(&[&marker], WAIT).expect("node 0's default route sends nothing the capture sees")
}

fn mentions(lines: &[String], ip: Ipv4Addr) -> Vec<&String> {
    let ip = ip.to_string();
    lines.iter().filter(|l| l.split([' ', ':']).any(|w| w == ip)).collect()
}

#[test]
fn an_unassigned_pod_address_gets_no_reply_and_never_leaves_the_node() {
    let (c, cap) = cluster_with_a_gateway();
    let agent = &c.agents[0];
    let (local, remote) = (&c.pods[0][0], &c.pods[1][0]);
    let (no_endpoint, tunnel_no_endpoint) =
        (agent.stat(Stat::DropNoEndpoint).unwrap().0, agent.stat(Stat::DropTunnelNoEndpoint).unwrap().0);

    assert!(!traffic::ping_once(&local.ns, UNASSIGNED), "a pod of node 0 got an answer from {UNASSIGNED}");
    assert!(!traffic::ping_once(&remote.ns, UNASSIGNED), "a pod of node 1 got an answer from {UNASSIGNED}");
    let sent = sent_by_node_0(&c, &cap);
    let leaked = mentions(&sent, UNASSIGNED);
    assert!(leaked.is_empty(), "node 0 sent {UNASSIGNED} onto the underlay:\n{leaked:#?}");

    assert_eq!(agent.stat(Stat::DropNoEndpoint).unwrap().0, no_endpoint + 1, "the local pod's echo request");
    assert_eq!(agent.stat(Stat::DropTunnelNoEndpoint).unwrap().0, tunnel_no_endpoint + 1, "the remote pod's");
    // The assigned address next to it answers both.
    traffic::ping(&local.ns, cluster::pod_address(1, 0), 1).unwrap();
    traffic::ping(&remote.ns, local.ip, 1).unwrap();
}

#[test]
fn the_node_itself_never_sends_an_unassigned_pod_address_to_its_gateway() {
    let (c, cap) = cluster_with_a_gateway();
    let node = &c.nodes[0];
    assert!(!traffic::ping_once(&node.ns, UNASSIGNED), "node 0 got an answer from {UNASSIGNED}");
    let sent = sent_by_node_0(&c, &cap);
    let leaked = mentions(&sent, UNASSIGNED);
    assert!(leaked.is_empty(), "node 0's stack sent {UNASSIGNED} to its default gateway:\n{leaked:#?}");
    // The stack knows it has no route there (the agent's route for its
    // own pod CIDR), rather than the packet vanishing somewhere.
    let lookup = node.ns.ip(&["route", "get", &UNASSIGNED.to_string()]);
    assert!(lookup.is_err(), "node 0 has a route to {UNASSIGNED}: {lookup:?}");
    // Its pods are still reachable from it.
    traffic::ping(&node.ns, c.pods[0][0].ip, 1).unwrap();
}

/// A TCP connection from inside `ns` to `to`, bounded.
fn connect(ns: &Netns, to: SocketAddr) -> std::io::Result<TcpStream> {
    ns.run_in(|| TcpStream::connect_timeout(&to, Duration::from_secs(3))).unwrap()
}

#[test]
fn a_pod_cannot_connect_to_its_node_over_ipv6_but_can_over_ipv4() {
    let c = Cluster::new(1, 1, Mode::Vxlan).unwrap();
    let (node, pod, agent) = (&c.nodes[0], &c.pods[0][0], &c.agents[0]);
    node.ns.enable_ipv6(&pod.host_veth).unwrap();
    pod.ns.enable_ipv6("eth0").unwrap();
    let node_ll = node.ns.link_local(&pod.host_veth).unwrap();
    pod.ns.link_local("eth0").unwrap();
    let scope: u32 = pod.ns.read("/sys/class/net/eth0/ifindex").unwrap().trim().parse().unwrap();

    // One listener on the node for both families (`[::]`, not V6ONLY).
    let listener = node.ns.run_in(|| TcpListener::bind("[::]:0")).unwrap().unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (dropped, discovery) =
        (agent.stat(Stat::DropIpv6).unwrap().0, agent.stat(Stat::PassNeighbourDiscovery).unwrap().0);

    let v6 = SocketAddr::V6(SocketAddrV6::new(node_ll, port, 0, scope));
    if let Ok(stream) = connect(&pod.ns, v6) {
        panic!("the pod connected to its node over IPv6: {:?} -> {v6}", stream.local_addr());
    }
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the node's listener got {other:?} from the IPv6 attempt"),
    }
    assert!(agent.stat(Stat::DropIpv6).unwrap().0 > dropped, "{} did not move", Stat::DropIpv6.name());
    // IPv6 itself works on the link: the pod resolved the node's address
    // (neighbour discovery passes), only the connection was refused.
    assert!(
        agent.stat(Stat::PassNeighbourDiscovery).unwrap().0 > discovery,
        "the pod's neighbour solicitation for {node_ll} did not pass"
    );
    let neighbours = pod.ns.ip(&["-6", "neigh", "show", "dev", "eth0"]).unwrap();
    let host_mac = knet_tests::topology::link_mac(&node.ns, &pod.host_veth).unwrap();
    assert!(
        neighbours.lines().any(|l| l.starts_with(&format!("{node_ll} lladdr {host_mac}"))),
        "the pod did not resolve {node_ll}: {neighbours}"
    );

    // The same listener over IPv4: the node is reachable, and this test
    // did not pass for want of a listener.
    let v4 = SocketAddr::from((node.address, port));
    let _stream = connect(&pod.ns, v4).unwrap_or_else(|e| panic!("the pod cannot connect to {v4}: {e}"));
    let (_accepted, peer) =
        wait::until("the node to accept the IPv4 connection", WAIT, || listener.accept().ok()).unwrap();
    let SocketAddr::V6(peer) = peer else { panic!("a [::] listener gave an IPv4 peer: {peer}") };
    assert_eq!(peer.ip().to_ipv4_mapped(), Some(pod.ip));
}
