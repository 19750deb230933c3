//! `to_netdev`: what leaves by the underlay. In VXLAN mode the host's own
//! traffic to remote pods is encapsulated here; everything else passes.

use knet_common::Stat;
use knet_tests::{
    frames::{self, eth, Ipv4, ETH_ARP, ETH_IPV4},
    test_run::{Maps, Program, Skb},
};

use crate::{
    fixture::*,
    table::{
        Expect::{self, Drop, Pass},
        Expected,
        Out::{Is, Same},
        Row,
    },
};

fn row(name: impl Into<String>, maps: Maps, frame: Vec<u8>, expect: Expect) -> Row {
    Row { name: name.into(), program: Program::ToNetdev, maps, skb: Skb::default(), frame, expect }
}

/// The host sends `ip` with `payload` to its next hop, node B.
fn host_sends(ip: &Ipv4, payload: &[u8]) -> Vec<u8> {
    eth(NODE_B_MAC, NODE_MAC, ETH_IPV4, &ip.packet(payload))
}

fn encapsulated_to_b(frame: &[u8]) -> Expect {
    Pass(Stat::EncapFromHost, Is(encapsulated(Expected { bytes: frame.to_vec(), random: Vec::new() }, NODE_B)))
}

pub fn rows() -> Vec<Row> {
    let to_pod_b = host_sends(&udp_ip(NODE_IP, POD_B), &payload());
    let tunnel_mtu = UNDERLAY_MTU as usize - VXLAN_OVERHEAD;
    let fitting = host_sends(&Ipv4 { dont_fragment: true, ..udp_ip(NODE_IP, POD_B) }, &payload_for(tunnel_mtu));
    let too_big = host_sends(&udp_ip(NODE_IP, POD_B), &payload_for(tunnel_mtu + 1));
    // What from_pod made of a pod's packet to node B.
    let encapsulated_by_from_pod = host_sends(
        &outer_ip(NODE_IP, NODE_B),
        &frames::udp(50000, VXLAN_PORT, &frames::vxlan(VNI, &POD_1.sends(&udp_ip(POD_1.ip, POD_B), &payload()))),
    );
    vec![
        row("host to a pod of node B: encapsulated", vxlan(), to_pod_b.clone(), encapsulated_to_b(&to_pod_b)),
        row("host to a pod of node B, exactly the tunnel's MTU", vxlan(), fitting.clone(), encapsulated_to_b(&fitting)),
        row("host to a pod of node B, one byte too big", vxlan(), too_big, Drop(Stat::DropTooBig, Same)),
        Row {
            // A GSO skb of no GSO type: the kernel will not grow it.
            skb: Skb { gso_size: 1400, ..Skb::default() },
            ..row(
                "GSO: the kernel refuses to encapsulate",
                vxlan(),
                to_pod_b.clone(),
                Drop(Stat::DropResizeFailed, Same),
            )
        },
        row("already encapsulated", vxlan(), encapsulated_by_from_pod, Pass(Stat::PassUnderlayEgress, Same)),
        row(
            "host to the outside",
            vxlan(),
            host_sends(&udp_ip(NODE_IP, OUTSIDE), &payload()),
            Pass(Stat::PassUnderlayEgress, Same),
        ),
        row(
            "host to a pod address of this node",
            vxlan(),
            host_sends(&udp_ip(NODE_IP, POD_2.ip), &payload()),
            Pass(Stat::PassUnderlayEgress, Same),
        ),
        row(
            "ARP",
            vxlan(),
            eth([0xff; 6], NODE_MAC, ETH_ARP, &frames::arp_request(NODE_MAC, NODE_IP, NODE_B)),
            Pass(Stat::PassUnderlayEgress, Same),
        ),
        row(
            "IPv4 with IHL 4",
            vxlan(),
            host_sends(&Ipv4 { version_ihl_override: Some(0x44), ..udp_ip(NODE_IP, POD_B) }, &payload()),
            Pass(Stat::PassUnderlayEgress, Same),
        ),
        row("native mode: host to a pod of node B", native(), to_pod_b, Pass(Stat::PassUnderlayEgress, Same)),
    ]
}
