//! Pods on different nodes, in VXLAN and native mode. Needs root; run with
//! `cargo xtask test`.

use std::{net::Ipv4Addr, time::Duration};

use knet_tests::{
    capture::Capture,
    cluster::{self, Cluster},
    traffic::{self, IperfOptions},
};

/// The source address the receiver sees for an echo request from `from`.
fn seen_source(c: &Cluster, from: &knet_tests::Netns, to_ns: &knet_tests::Netns, to_ip: Ipv4Addr) -> String {
    let cap = Capture::start(to_ns, "any", &[], "icmp[icmptype] == icmp-echo").unwrap();
    traffic::ping(from, to_ip, 1).unwrap();
    let line = cap.expect(&[&format!("> {to_ip}: ICMP echo request")], Duration::from_secs(5)).unwrap();
    let _ = c;
    line.split_whitespace().skip_while(|w| *w != "IP").nth(1).unwrap_or("").to_string()
}

fn full_connectivity(mode: &str) {
    let c = Cluster::new(3, 2, mode).unwrap();
    let pods: Vec<_> = c.all_pods().collect();
    for (i, a) in &pods {
        for (j, b) in &pods {
            if a.ip == b.ip {
                continue;
            }
            traffic::ping(&a.ns, b.ip, 1).unwrap_or_else(|e| panic!("{mode}: pod {} (node {i}) -> pod {} (node {j}): {e:#}", a.ip, b.ip));
            if i != j {
                let src = seen_source(&c, &a.ns, &b.ns, b.ip);
                assert_eq!(src, a.ip.to_string(), "{mode}: {} saw {src} for {}", b.ip, a.ip);
            }
        }
        // Every pod reaches every node.
        for (n, node) in c.nodes.iter().enumerate() {
            traffic::ping(&a.ns, node.address, 1).unwrap_or_else(|e| panic!("{mode}: pod {} -> node {n}: {e:#}", a.ip));
        }
    }
    // Every node reaches every pod.
    for (n, node) in c.nodes.iter().enumerate() {
        for (_, p) in &pods {
            traffic::ping(&node.ns, p.ip, 1).unwrap_or_else(|e| panic!("{mode}: node {n} -> pod {}: {e:#}", p.ip));
        }
    }
    // TCP across nodes both ways, with the default MSS, and node to remote pod.
    let (a, b) = (&c.pods[0][0], &c.pods[2][1]);
    let opts = IperfOptions { seconds: 1, ..Default::default() };
    assert!(traffic::iperf3(&a.ns, &b.ns, b.ip, opts).unwrap().bytes_received > 1_000_000);
    assert!(traffic::iperf3(&a.ns, &b.ns, b.ip, IperfOptions { reverse: true, ..opts }).unwrap().bytes_received > 1_000_000);
    assert!(traffic::iperf3(&c.nodes[1].ns, &b.ns, b.ip, opts).unwrap().bytes_received > 1_000_000);
    assert!(traffic::iperf3(&a.ns, &c.nodes[2].ns, c.nodes[2].address, opts).unwrap().bytes_received > 1_000_000);
    let stat = if mode == "vxlan" { "redirect_tunnel" } else { "redirect_native" };
    assert!(c.agents[0].stat(stat).unwrap().0 > 100, "{stat} did not count the cross-node traffic");
    assert!(c.agents[2].stat("deliver_from_node").unwrap().0 > 100);
    let _ = cluster::OUTSIDE;
}

#[test]
fn vxlan_every_pod_reaches_every_pod_and_node() {
    full_connectivity("vxlan");
}

#[test]
fn native_every_pod_reaches_every_pod_and_node() {
    full_connectivity("native");
}
