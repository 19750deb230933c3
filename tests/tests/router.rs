//! The programs forward as a router does (RFC 1812): every node a packet
//! crosses without its stack lowers the TTL and answers an expiring one with
//! ICMP time exceeded, and a DF packet too big for the tunnel gets ICMP
//! fragmentation needed with the tunnel's MTU, from the node's underlay
//! address. Needs root; run with `cargo xtask test`.

use std::net::Ipv4Addr;

use knet_agent::config::Mode;
use knet_common::Stat;
use knet_tests::{
    cluster::{self, Cluster},
    topology::POD_GATEWAY,
    Netns,
};

/// What `ping -c 1 -W 2 args... to` from `from` printed, stdout and stderr.
fn ping_says(from: &Netns, to: Ipv4Addr, args: &[&str]) -> String {
    let to = to.to_string();
    let mut full = vec!["-c", "1", "-W", "2"];
    full.extend_from_slice(args);
    full.push(&to);
    let out = knet_tests::cmd::output("ip", &from.exec_args("ping", &full)).unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// One counter on every node.
fn counts(c: &Cluster, stat: Stat) -> Vec<u64> {
    c.agents.iter().map(|a| a.stat(stat).unwrap().0).collect()
}

fn expiring_ttls_are_answered_by_the_hop_where_they_expire(mode: Mode) {
    let c = Cluster::new(2, 2, mode).unwrap();
    let (a, neighbour, remote) = (&c.pods[0][0], &c.pods[0][1], &c.pods[1][0]);
    // (TTL, destination, the node whose hop it expires at): the sender's
    // node is the first hop, the receiver's node the second.
    for (ttl, to, hop) in [(1, neighbour.ip, 0), (1, remote.ip, 0), (2, remote.ip, 1)] {
        let before = counts(&c, Stat::ReplyTimeExceeded);
        let said = ping_says(&a.ns, to, &["-t", &ttl.to_string()]);
        let want = format!("From {} icmp_seq=1 Time to live exceeded", cluster::node_address(hop));
        assert!(said.contains(&want), "{mode}: TTL {ttl} from {} to {to}: want {want:?}, ping said:\n{said}", a.ip);
        let mut expected = before.clone();
        expected[hop] += 1;
        assert_eq!(
            counts(&c, Stat::ReplyTimeExceeded),
            expected,
            "{mode}: TTL {ttl} to {to}: {} per node",
            Stat::ReplyTimeExceeded.name()
        );
    }
    // One more hop's worth of TTL and the echo is answered: each node
    // lowers it by exactly one.
    for (ttl, to) in [(2, neighbour.ip), (3, remote.ip)] {
        let said = ping_says(&a.ns, to, &["-t", &ttl.to_string()]);
        assert!(said.contains("1 received"), "{mode}: TTL {ttl} to {to} was not answered:\n{said}");
    }
}

#[test]
fn vxlan_expiring_ttls_are_answered_by_the_hop_where_they_expire() {
    expiring_ttls_are_answered_by_the_hop_where_they_expire(Mode::Vxlan);
}

#[test]
fn native_expiring_ttls_are_answered_by_the_hop_where_they_expire() {
    expiring_ttls_are_answered_by_the_hop_where_they_expire(Mode::Native);
}

#[test]
fn a_df_packet_too_big_for_the_tunnel_gets_fragmentation_needed_with_its_mtu() {
    let c = Cluster::new(2, 1, Mode::Vxlan).unwrap();
    let (a, b) = (&c.pods[0][0], &c.pods[1][0]);
    let route_mtu = c.agents[0].nodes().unwrap().route_mtu.unwrap();
    assert_eq!(route_mtu, 1450);
    // A pod that ignores the route MTU it was given: its own stack lets
    // 1488-byte packets go, and only the node can refuse them.
    a.ns.ip(&["route", "replace", "default", "via", POD_GATEWAY, "dev", "eth0", "onlink"]).unwrap();

    // DF clear: the node's stack fragments it for the tunnel (first, before
    // an ICMP error teaches the pod the path MTU).
    let to_fragment = c.agents[0].stat(Stat::PassToFragment).unwrap().0;
    let said = ping_says(&a.ns, b.ip, &["-M", "dont", "-s", "1460"]);
    assert!(said.contains("1 received"), "a 1488-byte packet without DF did not cross:\n{said}");
    assert_eq!(c.agents[0].stat(Stat::PassToFragment).unwrap().0, to_fragment + 1);

    // DF set: refused with the tunnel's MTU, by the first hop.
    let before = counts(&c, Stat::ReplyFragNeeded);
    let said = ping_says(&a.ns, b.ip, &["-M", "do", "-s", "1460"]);
    let want = format!("From {} icmp_seq=1 Frag needed and DF set (mtu = {route_mtu})", cluster::node_address(0));
    assert!(said.contains(&want), "want {want:?}, ping said:\n{said}");
    assert_eq!(counts(&c, Stat::ReplyFragNeeded), vec![before[0] + 1, before[1]]);

    // What fits the tunnel crosses with DF set.
    let said = ping_says(&a.ns, b.ip, &["-M", "do", "-s", "1422"]);
    assert!(said.contains("1 received"), "a 1450-byte DF packet did not cross:\n{said}");
}
