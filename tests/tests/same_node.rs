//! Two pods on one node, forwarded by `from_pod` with `bpf_redirect_peer`.
//! Needs root; run with `cargo xtask test` (one test at a time).

use std::net::Ipv4Addr;

use knet_common::Stat;
use knet_tests::{
    agent::CallError,
    traffic::{self, IperfOptions},
    Agent, AgentOptions, Node, Pod,
};

const POD_CIDR: &str = "10.244.0.0/24";

struct SameNode {
    // Field order is drop order: the agent stops before its namespaces go.
    agent: Agent,
    a: Pod,
    b: Pod,
    node: Node,
}

fn same_node() -> SameNode {
    let node = Node::new("node", Ipv4Addr::new(192, 168, 77, 10)).unwrap();
    let a = node.add_pod("pod-a", Ipv4Addr::new(10, 244, 0, 2)).unwrap();
    let b = node.add_pod("pod-b", Ipv4Addr::new(10, 244, 0, 3)).unwrap();
    let agent =
        Agent::start(&node.ns, &AgentOptions { node_name: "node-0".into(), pod_cidr: Some(POD_CIDR.into()) }).unwrap();
    agent.add_pod(&a).unwrap();
    agent.add_pod(&b).unwrap();
    SameNode { agent, a, b, node }
}

#[test]
fn pods_on_one_node_talk_through_redirect_not_the_stack() {
    let t = same_node();
    let (redirected_before, _) = t.agent.stat(Stat::RedirectLocal).unwrap();
    let forwarded_before = t.node.ns.forwarded_datagrams().unwrap();
    let sent_before = t.a.tx_packets().unwrap() + t.b.tx_packets().unwrap();

    traffic::ping(&t.a.ns, t.b.ip, 5).unwrap();
    traffic::ping(&t.b.ns, t.a.ip, 5).unwrap();
    let opts = IperfOptions { seconds: 1, ..Default::default() };
    let a_to_b = traffic::iperf3(&t.a.ns, &t.b.ns, t.b.ip, opts).unwrap();
    let b_to_a = traffic::iperf3(&t.a.ns, &t.b.ns, t.b.ip, IperfOptions { reverse: true, ..opts }).unwrap();
    assert!(a_to_b.bytes_received > 1_000_000, "A->B moved only {} bytes", a_to_b.bytes_received);
    assert!(b_to_a.bytes_received > 1_000_000, "B->A moved only {} bytes", b_to_a.bytes_received);

    let sent = t.a.tx_packets().unwrap() + t.b.tx_packets().unwrap() - sent_before;
    let (redirected_after, _) = t.agent.stat(Stat::RedirectLocal).unwrap();
    let redirected = redirected_after - redirected_before;
    // Every packet the pods sent (IPv6 is off, the gateway's neighbour entry
    // is static: all of it is IPv4 to the other pod) went through the redirect.
    assert!(sent >= 20, "pods sent only {sent} packets");
    assert!(redirected >= sent, "redirect counter rose by {redirected}, pods sent {sent}");
    let forwarded = t.node.ns.forwarded_datagrams().unwrap() - forwarded_before;
    assert_eq!(forwarded, 0, "the node's stack forwarded {forwarded} datagrams");
    assert_eq!(t.agent.stat(Stat::DropSpoofedSource).unwrap().0, 0);
}

#[test]
fn pod_reaches_its_node_and_node_reaches_pod() {
    let t = same_node();
    let (to_stack_before, _) = t.agent.stat(Stat::PassToStack).unwrap();
    traffic::ping(&t.a.ns, t.node.address, 3).unwrap();
    traffic::ping(&t.node.ns, t.a.ip, 3).unwrap();
    traffic::ping(&t.node.ns, t.b.ip, 3).unwrap();
    let tcp = traffic::iperf3(&t.a.ns, &t.node.ns, t.node.address, IperfOptions::default()).unwrap();
    assert!(tcp.bytes_received > 1_000_000);
    let (to_stack_after, _) = t.agent.stat(Stat::PassToStack).unwrap();
    // Pod-to-node traffic is not a local pod's: from_pod hands it to the stack.
    let to_stack = to_stack_after - to_stack_before;
    assert!(to_stack >= 3, "{} rose only by {to_stack}", Stat::PassToStack.name());
}

#[test]
fn deleting_an_endpoint_removes_its_entry_and_program_only() {
    let t = same_node();
    assert_eq!(t.agent.map_ips().unwrap(), vec!["10.244.0.2", "10.244.0.3"]);
    assert_eq!(t.agent.tcx_ingress(&t.b.host_veth).unwrap(), vec!["from_pod"]);

    t.agent.delete_pod(&t.b).unwrap();

    assert_eq!(t.agent.map_ips().unwrap(), vec!["10.244.0.2"], "B's map entry is still there");
    assert!(t.agent.tcx_ingress(&t.b.host_veth).unwrap().is_empty(), "from_pod still attached to B's veth");
    assert_eq!(t.agent.tcx_ingress(&t.a.host_veth).unwrap(), vec!["from_pod"], "A lost its program");
    let listed = t.agent.endpoints().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].ip.to_string(), "10.244.0.2");

    // A still reaches its node through its program, and B (no longer a knet
    // endpoint, and the node does not forward) is no longer redirected to.
    let (redirected_before, _) = t.agent.stat(Stat::RedirectLocal).unwrap();
    traffic::ping(&t.a.ns, t.node.address, 3).unwrap();
    assert!(!traffic::ping_once(&t.a.ns, t.b.ip), "A still reaches B after B's endpoint was deleted");
    assert_eq!(t.agent.stat(Stat::RedirectLocal).unwrap().0, redirected_before);

    // Deleting again is a 404 and changes nothing; adding B back restores it.
    let again = t.agent.delete_pod(&t.b);
    assert!(matches!(again, Err(CallError::Refused { status, .. }) if status == 404), "{again:?}");
    t.agent.add_pod(&t.b).unwrap();
    traffic::ping(&t.a.ns, t.b.ip, 3).unwrap();
}

#[test]
fn a_spoofed_source_is_dropped_and_counted() {
    let t = same_node();
    // The pod claims an address that is not its own (another of the subnet).
    t.a.ns.ip(&["addr", "add", "10.244.0.99/32", "dev", "eth0"]).unwrap();
    let (drops_before, _) = t.agent.stat(Stat::DropSpoofedSource).unwrap();
    let spoofed = knet_tests::cmd::output(
        "ip",
        &t.a.ns.exec_args("ping", &["-c", "3", "-i", "0.05", "-W", "1", "-I", "10.244.0.99", &t.b.ip.to_string()]),
    )
    .unwrap();
    assert!(!spoofed.status.success(), "a ping from a spoofed source got through");
    let (drops_after, _) = t.agent.stat(Stat::DropSpoofedSource).unwrap();
    assert!(drops_after - drops_before >= 3, "spoofed drops rose by {}", drops_after - drops_before);
    // Its own address still works.
    traffic::ping(&t.a.ns, t.b.ip, 2).unwrap();
}

#[test]
fn the_data_path_outlives_the_agent_and_a_new_agent_adopts_it() {
    let mut t = same_node();
    traffic::ping(&t.a.ns, t.b.ip, 2).unwrap();
    let (redirected_before, _) = t.agent.stat(Stat::RedirectLocal).unwrap();
    let socket = t.agent.socket().to_path_buf();

    let status = t.agent.stop().unwrap();
    assert!(status.success(), "agent exited with {status} on SIGTERM");
    assert!(!socket.exists(), "the API socket was left behind");

    // The data path outlives the agent: its links are pinned. With the
    // agent gone, pods still talk through the redirect (the node does not
    // forward, so there is no other way).
    let forwarded_before = t.node.ns.forwarded_datagrams().unwrap();
    traffic::ping(&t.a.ns, t.b.ip, 3).unwrap();
    assert_eq!(t.node.ns.forwarded_datagrams().unwrap(), forwarded_before);

    t.agent.restart().unwrap();
    // The new agent found both endpoints in the pinned map, re-attached
    // from_pod, and the pinned counters carried on.
    assert_eq!(t.agent.map_ips().unwrap(), vec!["10.244.0.2", "10.244.0.3"]);
    assert_eq!(t.agent.endpoints().unwrap().len(), 2);
    // The new agent swapped its program into the pinned links: still
    // exactly one program on each veth.
    assert_eq!(t.agent.tcx_ingress(&t.a.host_veth).unwrap(), vec!["from_pod"]);
    assert_eq!(t.agent.tcx_ingress(&t.b.host_veth).unwrap(), vec!["from_pod"]);
    assert!(t.agent.stat(Stat::RedirectLocal).unwrap().0 >= redirected_before + 6);
    traffic::ping(&t.a.ns, t.b.ip, 3).unwrap();
    assert!(t.agent.stat(Stat::RedirectLocal).unwrap().0 >= redirected_before + 12);
}
