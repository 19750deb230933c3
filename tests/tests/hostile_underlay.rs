//! A hostile host on the underlay, in VXLAN mode: VXLAN it forges in a
//! known node's name, and plain packets it routes at the pods. None reaches
//! a pod, and each is counted under its own drop reason; the same frame
//! without the lie is delivered, so the drops are the checks' doing. Needs
//! root; run with `cargo xtask test`.

use std::{net::Ipv4Addr, time::Duration};

use knet_agent::config::Mode;
use knet_agent::mac::MacAddr;
use knet_common::{node::VXLAN_PORT, Stat};
use knet_tests::{
    capture::Capture,
    cluster::{self, Cluster},
    frames::{self, Ipv4, PROTO_ICMP, PROTO_UDP},
    inject::Injector,
    topology::link_mac,
    traffic, wait,
};

/// The agents' VNI (the default; `cross_node` checks it on the wire).
const VNI: u32 = 1;
const WAIT: Duration = Duration::from_secs(5);

/// An echo request for pod 0 of node 0 in VXLAN, as node 1 would send it,
/// but put on the underlay by the outside host; the fields a case forges.
#[derive(Clone)]
struct Tunnelled {
    outer_dst: Ipv4Addr,
    more_fragments: bool,
    inner_src: Ipv4Addr,
    /// The echo's identifier, to tell the frames apart in a capture.
    id: u16,
}

impl Tunnelled {
    /// What node 1 really sends: from one of its pods to node 0.
    fn genuine(id: u16) -> Self {
        Tunnelled {
            outer_dst: cluster::node_address(0),
            more_fragments: false,
            inner_src: cluster::pod_address(1, 0),
            id,
        }
    }

    fn frame(&self, c: &Cluster) -> Vec<u8> {
        let pod = &c.pods[0][0];
        let inner_ip =
            Ipv4::new(self.inner_src, pod.ip, PROTO_ICMP).packet(&frames::icmp_echo(self.id, 1, &[0x6b; 32]));
        let inner = frames::eth(mac(&pod.mac), [0x02, 0, 0, 0, 0, 0x11], frames::ETH_IPV4, &inner_ip);
        let udp = frames::udp(49152 + self.id % 1000, VXLAN_PORT, &frames::vxlan(VNI, &inner));
        let outer = Ipv4 {
            more_fragments: self.more_fragments,
            id: self.id,
            ..Ipv4::new(cluster::node_address(1), self.outer_dst, PROTO_UDP)
        };
        let node0 = mac(&link_mac(&c.nodes[0].ns, "eth0").unwrap());
        let outside = mac(&link_mac(&c.outside, "eth0").unwrap());
        frames::eth(node0, outside, frames::ETH_IPV4, &outer.packet(&udp))
    }
}

fn mac(text: &str) -> [u8; 6] {
    text.parse::<MacAddr>().unwrap().0
}

/// The `tcpdump -nn` text of the echo request with `id`.
fn echo(id: u16) -> String {
    format!("ICMP echo request, id {id},")
}

/// Sends each forged frame from the outside host, each followed by the
/// genuine frame it was made from: the genuine one reaches the pod, the
/// forged one does not, and `stat` counts each forged frame once.
fn forged_vxlan_reaches_no_pod(stat: Stat, cases: &[(&str, Tunnelled)]) {
    let c = Cluster::new(2, 1, Mode::Vxlan).unwrap();
    let pod = &c.pods[0][0];
    let cap = Capture::start(&pod.ns, "eth0", &[], "icmp").unwrap();
    let injector = Injector::open(&c.outside, "eth0").unwrap();
    let agent = &c.agents[0];
    let forged_ids: Vec<u16> = (0..cases.len() as u16).map(|i| 0xf000 + i).collect();
    for (i, (what, forged)) in cases.iter().enumerate() {
        let (forged_id, genuine_id) = (forged_ids[i], 0xe000 + i as u16);
        let dropped = agent.stat(stat).unwrap().0;
        let delivered = agent.stat(Stat::DeliverFromNode).unwrap().0;
        injector.send(&Tunnelled { id: forged_id, ..forged.clone() }.frame(&c)).unwrap();
        injector.send(&Tunnelled::genuine(genuine_id).frame(&c)).unwrap();

        let before = cap.lines_before(&[&echo(genuine_id)], WAIT).unwrap_or_else(|e| {
            panic!("{what}: the genuine frame after the forged one was not delivered (is the injector right?): {e:#}")
        });
        assert!(
            before.iter().all(|l| !l.contains(&echo(forged_id))),
            "VXLAN with {what} reached the pod:\n{}",
            before.join("\n")
        );
        let counted = wait::until(&format!("{} to count {what}", stat.name()), WAIT, || {
            let now = agent.stat(stat).ok()?.0;
            (now > dropped).then_some(now)
        })
        .unwrap();
        assert_eq!(counted, dropped + 1, "{what}: one frame, counted {} times", counted - dropped);
        // Only the genuine frame was delivered (its answer goes the other way).
        assert_eq!(agent.stat(Stat::DeliverFromNode).unwrap().0, delivered + 1, "{what}");
    }
    // Nothing forged came in late either, behind a genuine frame.
    let late = cap.drain();
    assert!(forged_ids.iter().all(|id| late.iter().all(|l| !l.contains(&echo(*id)))), "late:\n{}", late.join("\n"));
}

#[test]
fn vxlan_with_an_inner_source_its_outer_source_does_not_own_reaches_no_pod() {
    forged_vxlan_reaches_no_pod(
        Stat::DropTunnelForgedSource,
        &[
            (
                "an inner source outside the cluster",
                Tunnelled { inner_src: Ipv4Addr::new(172, 16, 5, 5), ..Tunnelled::genuine(0) },
            ),
            (
                "an inner source of node 0's own pod subnet",
                Tunnelled { inner_src: cluster::pod_address(0, 1), ..Tunnelled::genuine(0) },
            ),
        ],
    );
}

#[test]
fn vxlan_for_another_outer_destination_reaches_no_pod() {
    forged_vxlan_reaches_no_pod(
        Stat::DropTunnelWrongDestination,
        &[(
            "an outer destination that is not node 0",
            Tunnelled { outer_dst: Ipv4Addr::new(192, 168, 77, 99), ..Tunnelled::genuine(0) },
        )],
    );
}

#[test]
fn vxlan_in_an_outer_fragment_reaches_no_pod() {
    forged_vxlan_reaches_no_pod(
        Stat::DropTunnelFragment,
        &[("an outer first fragment", Tunnelled { more_fragments: true, ..Tunnelled::genuine(0) })],
    );
}

#[test]
fn a_plain_packet_from_the_underlay_to_a_pod_is_dropped_and_counted() {
    let c = Cluster::new(2, 1, Mode::Vxlan).unwrap();
    let (pod, other) = (&c.pods[0][0], &c.pods[1][0]);
    // The outside host routes node 0's pod subnet at node 0, as any host on
    // the underlay can; node 0 itself answers by that same path.
    c.outside.ip(&["route", "add", &cluster::pod_cidr(0), "via", &cluster::node_address(0).to_string()]).unwrap();
    traffic::ping(&c.outside, cluster::node_address(0), 1).unwrap();

    let cap = Capture::start(&pod.ns, "eth0", &[], "icmp").unwrap();
    let dropped = c.agents[0].stat(Stat::DropPlainToPod).unwrap().0;
    assert!(!traffic::ping_once(&c.outside, pod.ip), "a plain echo request from the underlay reached {}", pod.ip);
    // A pod of node 1 through the tunnel, after it: that path is open.
    traffic::ping(&other.ns, pod.ip, 1).unwrap();
    let before = cap.lines_before(&[&format!("{} > {}: ICMP echo request", other.ip, pod.ip)], WAIT).unwrap();
    let outside = format!("{} > ", cluster::OUTSIDE);
    assert!(before.iter().all(|l| !l.contains(&outside)), "the pod saw the outside host:\n{}", before.join("\n"));
    assert_eq!(c.agents[0].stat(Stat::DropPlainToPod).unwrap().0, dropped + 1);
}
