//! Pods on different nodes, in VXLAN and native mode. Needs root; run with
//! `cargo xtask test`.

use std::{net::Ipv4Addr, time::Duration};

use knet_agent::config::Mode;
use knet_common::Stat;
use knet_tests::{
    capture::Capture,
    cluster::{self, Cluster},
    traffic::{self, IperfOptions},
    Netns,
};

/// The source address the receiver sees for an echo request from `from`.
fn seen_source(from: &Netns, to_ns: &Netns, to_ip: Ipv4Addr) -> String {
    let cap = Capture::start(to_ns, "eth0", &[], "icmp[icmptype] == icmp-echo").unwrap();
    traffic::ping(from, to_ip, 1).unwrap();
    let line = cap.expect(&[&format!("> {to_ip}: ICMP echo request")], Duration::from_secs(5)).unwrap();
    line.split_whitespace().skip_while(|w| *w != "IP").nth(1).unwrap_or("").to_string()
}

fn full_connectivity(mode: Mode) {
    let c = Cluster::new(3, 2, mode).unwrap();
    let pods: Vec<_> = c.all_pods().collect();
    for (i, a) in &pods {
        for (j, b) in &pods {
            if a.ip == b.ip {
                continue;
            }
            traffic::ping(&a.ns, b.ip, 1)
                .unwrap_or_else(|e| panic!("{mode}: pod {} (node {i}) -> pod {} (node {j}): {e:#}", a.ip, b.ip));
            traffic::tcp_transfer(&a.ns, &b.ns, b.ip, 1 << 20)
                .unwrap_or_else(|e| panic!("{mode}: TCP pod {} (node {i}) -> pod {} (node {j}): {e:#}", a.ip, b.ip));
            if i != j {
                let src = seen_source(&a.ns, &b.ns, b.ip);
                assert_eq!(src, a.ip.to_string(), "{mode}: {} saw {src} for {}", b.ip, a.ip);
            }
        }
        // Every pod reaches every node.
        for (n, node) in c.nodes.iter().enumerate() {
            traffic::ping(&a.ns, node.address, 1).unwrap_or_else(|e| panic!("{mode}: pod {} -> node {n}: {e:#}", a.ip));
            traffic::tcp_transfer(&a.ns, &node.ns, node.address, 1 << 20)
                .unwrap_or_else(|e| panic!("{mode}: TCP pod {} -> node {n}: {e:#}", a.ip));
        }
    }
    // Every node reaches every pod.
    for (n, node) in c.nodes.iter().enumerate() {
        for (_, p) in &pods {
            traffic::ping(&node.ns, p.ip, 1).unwrap_or_else(|e| panic!("{mode}: node {n} -> pod {}: {e:#}", p.ip));
            traffic::tcp_transfer(&node.ns, &p.ns, p.ip, 1 << 20)
                .unwrap_or_else(|e| panic!("{mode}: TCP node {n} -> pod {}: {e:#}", p.ip));
        }
    }
    // TCP across nodes both ways, with the default MSS, and node to remote pod.
    let (a, b) = (&c.pods[0][0], &c.pods[2][1]);
    let opts = IperfOptions { seconds: 1, ..Default::default() };
    assert!(traffic::iperf3(&a.ns, &b.ns, b.ip, opts).unwrap().bytes_received > 1_000_000);
    assert!(
        traffic::iperf3(&a.ns, &b.ns, b.ip, IperfOptions { reverse: true, ..opts }).unwrap().bytes_received > 1_000_000
    );
    assert!(traffic::iperf3(&c.nodes[1].ns, &b.ns, b.ip, opts).unwrap().bytes_received > 1_000_000);
    assert!(traffic::iperf3(&a.ns, &c.nodes[2].ns, c.nodes[2].address, opts).unwrap().bytes_received > 1_000_000);
    let stat = if mode == Mode::Vxlan { Stat::RedirectTunnel } else { Stat::RedirectNative };
    assert!(c.agents[0].stat(stat).unwrap().0 > 100, "{} did not count the cross-node traffic", stat.name());
    assert!(c.agents[2].stat(Stat::DeliverFromNode).unwrap().0 > 100);

    // A pod reaches an address outside the cluster through its node's one
    // masquerade rule: the outside sees the node's address.
    let src = seen_source(&a.ns, &c.outside, cluster::OUTSIDE);
    assert_eq!(src, c.nodes[0].address.to_string(), "{mode}: the outside saw {src}");
}

/// Native mode: pods' veths (both ends, wired by the CNI plugin) and the
/// underlay take IPv4 packets of BIG TCP's size, and TCP between pods of
/// two nodes sends them; VXLAN mode keeps the kernel's 64 KiB.
#[test]
fn big_tcp_in_native_mode_and_not_in_vxlan() {
    use knet_agent::host::{BIG_TCP_SIZE, LEGACY_GSO_SIZE};
    for mode in [Mode::Native, Mode::Vxlan] {
        let c = Cluster::with_cni(2, 1, mode).unwrap();
        let want = if mode == Mode::Native { BIG_TCP_SIZE } else { LEGACY_GSO_SIZE };
        let (a, b) = (&c.pods[0][0], &c.pods[1][0]);
        for (what, ns, link) in [("pod's eth0", &a.ns, "eth0"), ("host veth", &c.nodes[0].ns, a.host_veth.as_str())] {
            let l = ns.gso_limits(link).unwrap();
            assert_eq!((l.gso_ipv4_max_size, l.gro_ipv4_max_size), (want, want), "{mode}: {what}: {l:?}");
        }
        let underlay = c.nodes[1].ns.gso_limits("eth0").unwrap();
        if mode == Mode::Vxlan {
            assert_eq!(underlay.gso_ipv4_max_size, LEGACY_GSO_SIZE, "{mode}: the underlay was changed: {underlay:?}");
            continue;
        }
        assert!(
            underlay.gso_ipv4_max_size >= BIG_TCP_SIZE && underlay.gro_ipv4_max_size >= BIG_TCP_SIZE,
            "{underlay:?}"
        );
        // Packets over 64 KiB arrive at the other node whole (the filter
        // sees the skb's length; tcpdump prints their IPv4 length 0 as
        // "IP bad-len 0").
        let cap = Capture::start(&c.nodes[1].ns, "eth0", &[], &format!("tcp and dst host {} and greater 65600", b.ip))
            .unwrap();
        traffic::tcp_transfer(&a.ns, &b.ns, b.ip, 32 << 20).unwrap();
        cap.expect(&["IP "], Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("no TCP packet over 64 KiB between the nodes: {e:#}"));
    }
}

#[test]
fn vxlan_every_pod_reaches_every_pod_and_node() {
    full_connectivity(Mode::Vxlan);
}

#[test]
fn native_every_pod_reaches_every_pod_and_node() {
    full_connectivity(Mode::Native);
}

#[test]
fn vxlan_on_the_wire_is_udp_8472_with_vni_1() {
    let c = Cluster::new(2, 1, Mode::Vxlan).unwrap();
    let (a, b) = (&c.pods[0][0], &c.pods[1][0]);
    let cap = Capture::start(&c.fabric, "br0", &["-T", "vxlan"], "udp port 8472").unwrap();
    traffic::ping(&a.ns, b.ip, 2).unwrap();
    // tcpdump decodes the outer header, VXLAN with its VNI, then (next line)
    // the inner packet with the pods' own addresses.
    let outer = format!("IP {}.", c.nodes[0].address);
    let to = format!("> {}.8472: VXLAN, flags [I] (0x08), vni 1", c.nodes[1].address);
    cap.expect(&[&outer, &to], Duration::from_secs(5)).unwrap();
    let inner = format!("IP {} > {}: ICMP echo request", a.ip, b.ip);
    let next = cap.expect(&["IP "], Duration::from_secs(5)).unwrap();
    assert!(next.contains(&inner), "the line after the VXLAN header is not the inner packet: {next}");
}

#[test]
fn native_on_the_wire_is_plain_pod_to_pod_ip() {
    let c = Cluster::new(2, 1, Mode::Native).unwrap();
    let (a, b) = (&c.pods[0][0], &c.pods[1][0]);
    let cap = Capture::start(&c.fabric, "br0", &["-e"], "icmp or udp port 8472").unwrap();
    traffic::ping(&a.ns, b.ip, 2).unwrap();
    let line = cap.expect(&[&format!("{} > {}: ICMP echo request", a.ip, b.ip)], Duration::from_secs(5)).unwrap();
    assert!(!line.contains("VXLAN") && !line.contains(".8472"), "native traffic was encapsulated: {line}");
    assert!(cap.drain().iter().all(|l| !l.contains(".8472")), "native mode sent VXLAN");
}

#[test]
fn vxlan_from_an_unknown_source_is_dropped_and_counted() {
    let c = Cluster::new(2, 1, Mode::Vxlan).unwrap();
    let target = &c.pods[0][0];
    // The outside host is on the underlay but not in the node file. A Linux
    // VXLAN device there sends real VXLAN (VNI 1, port 8472) to node 0.
    let out = &c.outside;
    out.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "1",
        "dstport",
        "8472",
        "remote",
        &c.nodes[0].address.to_string(),
        "dev",
        "eth0",
    ])
    .unwrap();
    out.ip(&["addr", "add", "10.244.0.200/24", "dev", "vx0"]).unwrap();
    out.ip(&["link", "set", "vx0", "up"]).unwrap();
    out.ip(&["neigh", "add", &target.ip.to_string(), "lladdr", &target.mac, "dev", "vx0", "nud", "permanent"]).unwrap();

    let (before, _) = c.agents[0].stat(Stat::DropUnknownTunnelSource).unwrap();
    let delivered_before = c.agents[0].stat(Stat::DeliverFromNode).unwrap().0;
    assert!(!traffic::ping_once(out, target.ip), "a VXLAN packet from an unknown source reached the pod");
    let (after, _) = c.agents[0].stat(Stat::DropUnknownTunnelSource).unwrap();
    assert!(after > before, "the drop was not counted under drop_unknown_tunnel_source");
    assert_eq!(c.agents[0].stat(Stat::DeliverFromNode).unwrap().0, delivered_before);
    // Known nodes still get through.
    traffic::ping(&c.pods[1][0].ns, target.ip, 2).unwrap();
}

#[test]
fn full_size_packets_work_at_the_reduced_mtu() {
    let c = Cluster::new(2, 1, Mode::Vxlan).unwrap();
    let (a, b) = (&c.pods[0][0], &c.pods[1][0]);
    let nodes = c.agents[0].nodes().unwrap();
    assert_eq!(nodes.route_mtu, Some(1450), "{nodes:?}");
    // TCP with the default MSS (from the route MTU) across nodes.
    let t = traffic::iperf3(&a.ns, &b.ns, b.ip, IperfOptions { seconds: 2, ..Default::default() }).unwrap();
    assert!(t.bytes_received > 10_000_000, "only {} bytes crossed", t.bytes_received);
    // The largest unfragmented ping that fits the route MTU crosses.
    let big = knet_tests::cmd::output(
        "ip",
        &a.ns.exec_args("ping", &["-c", "2", "-W", "2", "-M", "do", "-s", "1422", &b.ip.to_string()]),
    )
    .unwrap();
    assert!(big.status.success(), "1450-byte packets do not cross: {}", String::from_utf8_lossy(&big.stdout));
    // One byte more is refused by the pod's own stack, loudly: no black hole.
    let too_big = knet_tests::cmd::output(
        "ip",
        &a.ns.exec_args("ping", &["-c", "1", "-W", "2", "-M", "do", "-s", "1423", &b.ip.to_string()]),
    )
    .unwrap();
    assert!(!too_big.status.success());
    let said = format!("{}{}", String::from_utf8_lossy(&too_big.stdout), String::from_utf8_lossy(&too_big.stderr));
    assert!(said.contains("mtu = 1450") || said.contains("too long"), "not refused locally: {said}");
    // Same-node pods keep the full MTU.
    assert_eq!(c.agents[1].stat(Stat::DropTooBig).unwrap().0, 0);
}

fn generation(c: &Cluster, i: usize) -> u64 {
    c.agents[i].nodes().unwrap().source.generation
}

fn route_to_subnet(c: &Cluster, node: usize, subnet: &str) -> String {
    c.nodes[node].ns.ip(&["route", "show", subnet]).unwrap()
}

#[test]
fn nodes_join_and_leave_through_the_file_while_others_keep_talking() {
    let c = Cluster::new(3, 1, Mode::Vxlan).unwrap();
    let (p0, p1, p2) = (&c.pods[0][0], &c.pods[1][0], &c.pods[2][0]);
    traffic::ping(&p0.ns, p2.ip, 1).unwrap();
    let steady = traffic::BackgroundPing::start(&p0.ns, p1.ip, 250).unwrap();

    // Node 2 leaves: nodes 0 and 1 withdraw its subnet, route and tunnel source.
    let (g0, g1) = (generation(&c, 0), generation(&c, 1));
    c.write_nodes_file(&format!("{}{}", cluster::node_line(0), cluster::node_line(1))).unwrap();
    for (i, g) in [(0, g0), (1, g1)] {
        let v = c.wait_for_source(i, g).unwrap();
        assert!(v.source.error.is_none(), "{v:?}");
        assert_eq!(v.nodes.len(), 2);
    }
    let dp = c.agents[0].datapath().unwrap();
    assert!(!dp.node_subnets.iter().any(|s| s.starts_with("10.244.2.0/24")), "{dp:?}");
    assert!(!dp.tunnel_sources.contains(&c.nodes[2].address), "{dp:?}");
    assert!(route_to_subnet(&c, 0, "10.244.2.0/24").is_empty());
    assert!(!traffic::ping_once(&p0.ns, p2.ip), "node 2's pod is still reachable after it left");

    // Node 2 joins again: its pods are reachable.
    let g0 = generation(&c, 0);
    c.write_nodes_file(&(0..3).map(cluster::node_line).collect::<String>()).unwrap();
    let v = c.wait_for_source(0, g0).unwrap();
    assert_eq!(v.nodes.len(), 3, "{v:?}");
    assert!(route_to_subnet(&c, 0, "10.244.2.0/24").contains("via 192.168.77.12"));
    traffic::ping(&p0.ns, p2.ip, 2).unwrap();
    traffic::ping(&p2.ns, p0.ip, 2).unwrap();

    // Traffic between nodes 0 and 1 never stopped.
    let (sent, received) = steady.finish().unwrap();
    assert!(sent >= 100, "only {sent} pings were sent");
    assert_eq!(sent, received, "pings between untouched nodes were lost during the changes");
}

#[test]
fn bad_node_files_are_rejected_by_line_and_change_nothing() {
    let c = Cluster::new(2, 1, Mode::Vxlan).unwrap();
    let good: String = (0..2).map(cluster::node_line).collect();
    let before_nodes = c.agents[0].nodes().unwrap().nodes;
    let before_dp = c.agents[0].datapath().unwrap();
    let before_routes = c.nodes[0].ns.ip(&["route", "show", "proto", "75"]).unwrap();
    for (bad, needle) in [
        (format!("{good}node-2 192.168.77.12 10.244.1.0/24\n"), "line 3: pod CIDR 10.244.1.0/24 overlaps node node-1"),
        (format!("{good}node-2 192.168.77.12 10.244.0.0/16\n"), "line 3: pod CIDR 10.244.0.0/16 contains node node-0"),
        (format!("{good}node-2 192.168.77.312 10.244.2.0/24\n"), "line 3: underlay IP \"192.168.77.312\""),
        (format!("{good}node-1 192.168.77.12 10.244.2.0/24\n"), "line 3: duplicate node name node-1"),
        // Valid for no running agent: each misses its own line.
        ("node-5 192.168.77.15 10.244.5.0/24\n".to_string(), "this node (node-0) has no line"),
    ] {
        c.write_nodes_file(&bad).unwrap();
        let v = knet_tests::wait::until("the agent to reject the file", Duration::from_secs(10), || {
            let v = c.agents[0].nodes().ok()?;
            v.source.error.as_ref().is_some_and(|e| e.contains(needle)).then_some(v)
        })
        .unwrap_or_else(|e| panic!("{bad:?}: {e:#}\n{:?}", c.agents[0].nodes()));
        assert_eq!(v.nodes, before_nodes, "nodes changed after {bad:?}");
        assert_eq!(c.agents[0].datapath().unwrap(), before_dp, "maps changed after {bad:?}");
        assert_eq!(c.nodes[0].ns.ip(&["route", "show", "proto", "75"]).unwrap(), before_routes);
        traffic::ping(&c.pods[0][0].ns, c.pods[1][0].ip, 1).unwrap();
        // Put the good file back: the error clears.
        c.write_nodes_file(&good).unwrap();
        knet_tests::wait::until("the error to clear", Duration::from_secs(10), || {
            c.agents[0].nodes().ok()?.source.error.is_none().then_some(())
        })
        .unwrap();
    }
}

#[test]
fn an_agent_refuses_to_start_on_a_bad_node_file_naming_the_line() {
    let c = Cluster::new(1, 0, Mode::Vxlan).unwrap();
    let node = knet_tests::Node::on_fabric("node-late", cluster::node_address(5), &c.fabric, "n5").unwrap();
    c.write_nodes_file(&format!("{}{}node-5 192.168.77.15 10.244.0.128/25\n", cluster::node_line(0), "# late\n"))
        .unwrap();
    let opts = knet_tests::AgentOptions { node_name: "node-5".into(), pod_cidr: Some("10.244.0.128/25".into()) };
    let extra = format!("nodes_file = {:?}\n", c.nodes_file().display().to_string());
    let err = match knet_tests::Agent::start_with(&node.ns, &opts, &extra) {
        Ok(_) => panic!("the agent started on an overlapping node file"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("line 3: pod CIDR 10.244.0.128/25 overlaps node node-0"), "{err}");
}

#[test]
fn native_mode_refuses_a_peer_off_the_underlay_segment() {
    let c = Cluster::new(1, 1, Mode::Native).unwrap();
    // A peer behind a router (the outside host) is not on node 0's segment.
    c.nodes[0].ns.ip(&["route", "add", "172.31.0.0/24", "via", &cluster::OUTSIDE.to_string()]).unwrap();
    let g = generation(&c, 0);
    c.write_nodes_file(&format!("{}node-9 172.31.0.9 10.244.9.0/24\n", cluster::node_line(0))).unwrap();
    let v = c.wait_for_source(0, g).unwrap();
    let err = v.source.error.as_deref().unwrap_or_else(|| panic!("accepted an off-segment peer: {v:?}"));
    assert!(err.contains("native mode needs every node on the underlay's L2 segment"), "{err}");
    assert!(err.contains("node-9") && err.contains("router 192.168.77.250"), "{err}");
    assert_eq!(v.nodes.len(), 1);
    assert!(c.nodes[0].ns.ip(&["route", "show", "10.244.9.0/24"]).unwrap().is_empty());
}

#[test]
fn vxlan_segments_fill_the_underlay_mtu_and_never_exceed_it() {
    let c = Cluster::new(2, 1, Mode::Vxlan).unwrap();
    let (a, b) = (&c.pods[0][0], &c.pods[1][0]);
    // Segment in software at node 0's underlay device, so the capture sees
    // the packets a NIC would put on the wire rather than GSO super-frames.
    c.nodes[0]
        .ns
        .exec("ethtool", &["-K", "eth0", "tso", "off", "gso", "off", "tx-udp_tnl-segmentation", "off"])
        .unwrap();
    let filter = format!("udp port 8472 and src host {} and greater 1000", c.nodes[0].address);
    let cap = Capture::start(&c.fabric, "br0", &["-e"], &filter).unwrap();
    let t = traffic::iperf3(&a.ns, &b.ns, b.ip, IperfOptions { seconds: 1, ..Default::default() }).unwrap();
    assert!(t.bytes_received > 1_000_000);
    cap.expect(&["length"], Duration::from_secs(5)).unwrap();
    // Outer frames only (tcpdump also prints the inner frame of the overlay).
    let outer = format!(": {}.", c.nodes[0].address);
    let mut frames = std::collections::BTreeMap::<u32, usize>::new();
    for line in cap.drain().iter().filter(|l| l.contains(&outer)) {
        if let Some(len) = line.split("length ").nth(1).and_then(|r| r.split(':').next()?.trim().parse().ok()) {
            *frames.entry(len).or_default() += 1;
        }
    }
    let total: usize = frames.values().sum();
    assert!(total > 100, "only {total} large VXLAN frames captured");
    // Ethernet (14) + the underlay MTU (1500): never more, and the data
    // segments fill it (the kernel's default would cut 50 bytes off each).
    let largest = *frames.keys().last().unwrap();
    let commonest = frames.iter().max_by_key(|(_, n)| **n).map(|(len, _)| *len).unwrap();
    assert_eq!(largest, 1514, "frame sizes: {frames:?}");
    assert_eq!(commonest, 1514, "frame sizes: {frames:?}");
}
