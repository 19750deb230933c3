//! `from_netdev`: what arrives on the underlay. In VXLAN mode only the
//! tunnel, with its checks, leads to pods; in native mode packets for
//! pods go straight in.

use std::net::Ipv4Addr;

use knet_common::Stat;
use knet_tests::{
    frames::{self, eth, Ipv4, ETH_ARP, ETH_IPV4, PROTO_TCP},
    test_run::{Maps, Program, Skb},
};

use crate::{
    fixture::*,
    table::{
        Expect::{self, Drop, Pass, Redirect},
        Expected,
        Out::{Is, Same},
        Row,
    },
};

fn row(name: impl Into<String>, maps: Maps, frame: Vec<u8>, expect: Expect) -> Row {
    Row { name: name.into(), program: Program::FromNetdev, maps, skb: Skb::default(), frame, expect }
}

fn exact(bytes: Vec<u8>) -> Expected {
    Expected { bytes, random: Vec::new() }
}

/// POD_2 receiving `inner` with `payload()`, one hop later, under the
/// Ethernet header the frame arrived with.
fn delivered(inner: &Ipv4) -> Expect {
    let arrived = inner_frame(&Ipv4 { ttl: inner.ttl - 1, ..inner.clone() }, &payload());
    Redirect(Stat::DeliverFromNode, POD_2.target(), Is(exact(POD_2.receives(&arrived))))
}

pub fn rows() -> Vec<Row> {
    let mut rows = underlay();
    rows.extend(tunnel());
    rows.extend(native_mode());
    rows
}

/// The node's own traffic and unencapsulated packets.
fn underlay() -> Vec<Row> {
    let for_node = from_router(&Ipv4::new(STRANGER, NODE_IP, PROTO_TCP), &frames::tcp_syn(40000, 22));
    vec![
        row(
            "ARP",
            vxlan(),
            eth([0xff; 6], ROUTER_MAC, ETH_ARP, &frames::arp_request(ROUTER_MAC, STRANGER, NODE_IP)),
            Pass(Stat::PassUnderlay, Same),
        ),
        row(
            "IPv4 with IHL 4: the stack judges it",
            vxlan(),
            from_router(&Ipv4 { version_ihl_override: Some(0x44), ..udp_ip(POD_B, POD_2.ip) }, &payload()),
            Pass(Stat::PassUnderlay, Same),
        ),
        row("TCP for the node itself", vxlan(), for_node.clone(), Pass(Stat::PassUnderlay, Same)),
        row("TCP for the node itself, local-only mode", local_only(), for_node, Pass(Stat::PassUnderlay, Same)),
        row(
            "VXLAN mode: plain IPv4 to a pod here",
            vxlan(),
            from_router(&udp_ip(POD_B, POD_2.ip), &payload()),
            Drop(Stat::DropPlainToPod, Same),
        ),
        row(
            "VXLAN mode: plain IPv4 to a pod of node C",
            vxlan(),
            from_router(&udp_ip(OUTSIDE, POD_C), &payload()),
            Drop(Stat::DropPlainToPod, Same),
        ),
    ]
}

/// VXLAN from node B, and everything a tunnel packet may get wrong.
fn tunnel() -> Vec<Row> {
    let inner = udp_ip(POD_B, POD_2.ip);
    let from_b = |outer: &Ipv4, vni: u32| tunnelled(outer, vni, &inner_frame(&inner, &payload()));
    let outer = outer_ip(NODE_B, NODE_IP);
    let expiring = Ipv4 { ttl: 1, ..inner.clone() };
    // After decapsulation: the outer Ethernet header, then the inner packet.
    let decapsulated = eth(NODE_MAC, NODE_B_MAC, ETH_IPV4, &expiring.packet(&payload()));
    let mut without_i_flag = from_b(&outer, VNI);
    without_i_flag[14 + 20 + 8] = 0;
    let later_fragment = Ipv4 { dont_fragment: false, fragment_offset: 100, ..outer.clone() };
    vec![
        row("to a pod here", vxlan(), from_node_b(&inner, &payload()), delivered(&inner)),
        row(
            "inner TTL 2 leaves with 1",
            vxlan(),
            from_node_b(&Ipv4 { ttl: 2, ..inner.clone() }, &payload()),
            delivered(&Ipv4 { ttl: 2, ..inner.clone() }),
        ),
        row(
            "inner TTL 1: time exceeded back through the tunnel",
            vxlan(),
            from_node_b(&expiring, &payload()),
            Redirect(Stat::ReplyTimeExceeded, via_underlay(), Is(encapsulated(time_exceeded(&decapsulated), NODE_B))),
        ),
        row(
            "inner source node B itself: accepted",
            vxlan(),
            from_node_b(&udp_ip(NODE_B, POD_2.ip), &payload()),
            delivered(&udp_ip(NODE_B, POD_2.ip)),
        ),
        row(
            "from a host that is no node",
            vxlan(),
            tunnelled(&outer_ip(STRANGER, NODE_IP), VNI, &inner_frame(&udp_ip(STRANGER, POD_2.ip), &payload())),
            Drop(Stat::DropUnknownTunnelSource, Same),
        ),
        row(
            "outer destination not this node",
            vxlan(),
            from_b(&outer_ip(NODE_B, Ipv4Addr::new(192, 168, 50, 9)), VNI),
            Drop(Stat::DropTunnelWrongDestination, Same),
        ),
        row(
            "inner source a pod of node C",
            vxlan(),
            from_node_b(&udp_ip(POD_C, POD_2.ip), &payload()),
            Drop(Stat::DropTunnelForgedSource, Same),
        ),
        row(
            "inner source a pod of this node",
            vxlan(),
            from_node_b(&udp_ip(POD_1.ip, POD_2.ip), &payload()),
            Drop(Stat::DropTunnelForgedSource, Same),
        ),
        row(
            "inner source outside the cluster",
            vxlan(),
            from_node_b(&udp_ip(OUTSIDE, POD_2.ip), &payload()),
            Drop(Stat::DropTunnelForgedSource, Same),
        ),
        row(
            "inner source node C's address",
            vxlan(),
            from_node_b(&udp_ip(NODE_C, POD_2.ip), &payload()),
            Drop(Stat::DropTunnelForgedSource, Same),
        ),
        row(
            "inner source this node's address",
            vxlan(),
            from_node_b(&udp_ip(NODE_IP, POD_2.ip), &payload()),
            Drop(Stat::DropTunnelForgedSource, Same),
        ),
        row(
            "from node C, inner source a pod of node C: accepted",
            vxlan(),
            tunnelled(&outer_ip(NODE_C, NODE_IP), VNI, &inner_frame(&udp_ip(POD_C, POD_2.ip), &payload())),
            delivered(&udp_ip(POD_C, POD_2.ip)),
        ),
        row("another VNI", vxlan(), from_b(&outer, VNI + 1), Pass(Stat::PassOtherVni, Same)),
        row("no VNI (I flag clear): not VXLAN", vxlan(), without_i_flag, Pass(Stat::PassUnderlay, Same)),
        row(
            "outer first fragment (MF)",
            vxlan(),
            from_b(&Ipv4 { dont_fragment: false, more_fragments: true, ..outer.clone() }, VNI),
            Drop(Stat::DropTunnelFragment, Same),
        ),
        // Without a UDP header it is no VXLAN to the program: the stack
        // gets it and never completes it, its first fragment dropped.
        row("outer later fragment", vxlan(), from_b(&later_fragment, VNI), Pass(Stat::PassUnderlay, Same)),
        row(
            "inner frame ARP",
            vxlan(),
            tunnelled(
                &outer,
                VNI,
                &eth(NODE_MAC, NODE_B_MAC, ETH_ARP, &frames::arp_request(NODE_B_MAC, POD_B, POD_2.ip)),
            ),
            Drop(Stat::DropTunnelMalformedInner, Same),
        ),
        row(
            "inner IPv4 with IHL 4",
            vxlan(),
            from_node_b(&Ipv4 { version_ihl_override: Some(0x44), ..inner.clone() }, &payload()),
            Drop(Stat::DropTunnelMalformedInner, Same),
        ),
        row(
            "inner IPv4 frame cut to its Ethernet header",
            vxlan(),
            tunnelled(&outer, VNI, &inner_frame(&inner, &payload())[..14]),
            Drop(Stat::DropTunnelMalformedInner, Same),
        ),
        row(
            "to an unassigned address here",
            vxlan(),
            from_node_b(&udp_ip(POD_B, UNASSIGNED), &payload()),
            Drop(Stat::DropTunnelNoEndpoint, Same),
        ),
        Row {
            // A GSO skb of no GSO type: the kernel will not shrink it.
            skb: Skb { gso_size: 1400, ..Skb::default() },
            ..row(
                "GSO: the kernel refuses to decapsulate",
                vxlan(),
                from_node_b(&inner, &payload()),
                Drop(Stat::DropResizeFailed, Same),
            )
        },
    ]
}

/// Native routing: pods' packets arrive as they are.
fn native_mode() -> Vec<Row> {
    let arrives = |ip: &Ipv4| from_router(ip, &payload());
    let from_outside = Ipv4 { ttl: 1, ..udp_ip(OUTSIDE, POD_2.ip) };
    let no_underlay = {
        let mut maps = native();
        maps.config.underlay_ifindex = 0;
        maps
    };
    let from_pod_b = Ipv4 { ttl: 1, ..udp_ip(POD_B, POD_2.ip) };
    vec![
        row(
            "native: to a pod here",
            native(),
            arrives(&udp_ip(POD_B, POD_2.ip)),
            Redirect(
                Stat::DeliverFromNode,
                POD_2.target(),
                Is(exact(POD_2.receives(&arrives(&Ipv4 { ttl: 63, ..udp_ip(POD_B, POD_2.ip) })))),
            ),
        ),
        row(
            "native: to an unassigned address here",
            native(),
            arrives(&udp_ip(POD_B, UNASSIGNED)),
            Drop(Stat::DropNoEndpoint, Same),
        ),
        row("native: to a pod of node C", native(), arrives(&udp_ip(OUTSIDE, POD_C)), Pass(Stat::PassUnderlay, Same)),
        row(
            "native: TTL 1 from outside: time exceeded by the host's route",
            native(),
            arrives(&from_outside),
            Redirect(Stat::ReplyTimeExceeded, via_underlay(), Is(time_exceeded(&arrives(&from_outside)))),
        ),
        row(
            "native: TTL 1 from a pod of node B: time exceeded straight to node B",
            native(),
            arrives(&from_pod_b),
            Redirect(Stat::ReplyTimeExceeded, via_underlay_to(NODE_B), Is(time_exceeded(&arrives(&from_pod_b)))),
        ),
        row(
            "native without an underlay: TTL 1 from outside has no way back",
            no_underlay,
            arrives(&from_outside),
            Drop(Stat::DropRedirectFailed, Is(time_exceeded(&arrives(&from_outside)))),
        ),
        row(
            "native: TTL 1 from 0.0.0.0: no error to a source that is no host",
            native(),
            arrives(&Ipv4 { ttl: 1, ..udp_ip(Ipv4Addr::UNSPECIFIED, POD_2.ip) }),
            Drop(Stat::DropTtlExceeded, Same),
        ),
    ]
}
