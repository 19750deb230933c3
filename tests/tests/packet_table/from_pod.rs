//! `from_pod`: what a pod (POD_1, on loopback in the test run) sends.

use std::net::Ipv4Addr;

use knet_common::Stat;
use knet_tests::{
    frames::{self, eth, Ipv4, ETH_ARP, ETH_IPV6, ETH_LLDP, ETH_VLAN, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP},
    test_run::{Maps, Program, Skb},
};

use crate::{
    fixture::*,
    table::{
        Expect::{self, Drop, Pass, Redirect, Refused},
        Expected,
        Out::{Is, Same},
        Row,
    },
};

fn row(name: impl Into<String>, maps: Maps, frame: Vec<u8>, expect: Expect) -> Row {
    Row { name: name.into(), program: Program::FromPod, maps, skb: Skb::default(), frame, expect }
}

/// A UDP packet from POD_1 to `dst`.
fn to(dst: Ipv4Addr) -> Ipv4 {
    udp_ip(POD_1.ip, dst)
}

fn sent(ip: &Ipv4) -> Vec<u8> {
    POD_1.sends(ip, &payload())
}

/// `ip` one hop later: TTL one lower, checksum recomputed from scratch
/// (the programs update it incrementally; both must agree).
fn hop(ip: &Ipv4) -> Ipv4 {
    Ipv4 { ttl: ip.ttl - 1, ..ip.clone() }
}

fn exact(bytes: Vec<u8>) -> Expected {
    Expected { bytes, random: Vec::new() }
}

pub fn rows() -> Vec<Row> {
    let mut rows = headers();
    rows.extend(addresses());
    rows.extend(ttl());
    rows.extend(mtu());
    rows.extend(icmp_errors());
    rows
}

/// What a router checks before it looks at addresses.
fn headers() -> Vec<Row> {
    let v6 = |next_header, hop_limit, payload: &[u8]| {
        let (src, dst) = (
            [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 1],
        );
        eth([0x33, 0x33, 0xff, 0, 0, 1], POD_1.mac, ETH_IPV6, &frames::ipv6(src, dst, next_header, hop_limit, payload))
    };
    let solicitation = frames::icmp(135, 0, [0; 4], &[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    let advertisement = frames::icmp(136, 0, [0x60, 0, 0, 0], &[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    let router_solicitation = frames::icmp(133, 0, [0; 4], &[]);
    // A router advertisement (hop limit 64, lifetime 1800 s): would make the
    // pod the node's IPv6 default router.
    let router_advertisement = frames::icmp(134, 0, [64, 0, 0x07, 0x08], &[0; 8]);
    let good = sent(&to(POD_2.ip));
    vec![
        row("13-byte frame: the kernel refuses", vxlan(), good[..13].to_vec(), Refused(libc::EINVAL)),
        // Linux 6.18 refuses to run a program on an IPv4 (IPv6) frame
        // shorter than the Ethernet header and 20 (40) bytes, so the
        // programs' checks for a header cut short cannot be reached here.
        row("14-byte frame of EtherType IPv4: the kernel refuses", vxlan(), good[..14].to_vec(), Refused(libc::EINVAL)),
        row("IPv4 header cut to 19 bytes: the kernel refuses", vxlan(), good[..33].to_vec(), Refused(libc::EINVAL)),
        row(
            "IPv4 header of exactly 20 bytes, no payload, to a pod here",
            vxlan(),
            POD_1.sends(&to(POD_2.ip), &[]),
            Redirect(
                Stat::RedirectLocal,
                POD_2.target(),
                Is(exact(POD_2.receives(&POD_1.sends(&hop(&to(POD_2.ip)), &[])))),
            ),
        ),
        row(
            "IHL 4",
            vxlan(),
            sent(&Ipv4 { version_ihl_override: Some(0x44), ..to(POD_2.ip) }),
            Drop(Stat::DropMalformed, Same),
        ),
        row(
            "IP version 6 in an IPv4 frame",
            vxlan(),
            sent(&Ipv4 { version_ihl_override: Some(0x65), ..to(POD_2.ip) }),
            Drop(Stat::DropMalformed, Same),
        ),
        row(
            "total length beyond the frame",
            vxlan(),
            sent(&Ipv4 { total_len_override: Some((good.len() - 14 + 1) as u16), ..to(POD_2.ip) }),
            Drop(Stat::DropMalformed, Same),
        ),
        row(
            "total length shorter than the header",
            vxlan(),
            sent(&Ipv4 { total_len_override: Some(19), ..to(POD_2.ip) }),
            Drop(Stat::DropMalformed, Same),
        ),
        row(
            "IP options (IHL 6): to the stack",
            vxlan(),
            sent(&Ipv4 { options: vec![1, 1, 1, 0], ..to(POD_2.ip) }),
            Pass(Stat::PassIpOptions, Same),
        ),
        row(
            "ARP request",
            vxlan(),
            eth([0xff; 6], POD_1.mac, ETH_ARP, &frames::arp_request(POD_1.mac, POD_1.ip, POD_GATEWAY)),
            Pass(Stat::PassArp, Same),
        ),
        row(
            "LLDP",
            vxlan(),
            eth([0x01, 0x80, 0xc2, 0, 0, 0x0e], POD_1.mac, ETH_LLDP, &[0x02, 0x07, 0x04, 0, 0, 0, 0, 0, 0]),
            Drop(Stat::DropUnsupportedEthertype, Same),
        ),
        row("VLAN-tagged IPv4", vxlan(), vlan_tagged(&good), Drop(Stat::DropUnsupportedEthertype, Same)),
        row("IPv6 TCP", vxlan(), v6(PROTO_TCP, 64, &frames::tcp_syn(40000, 22)), Drop(Stat::DropIpv6, Same)),
        row(
            "IPv6 neighbour solicitation, hop limit 255",
            vxlan(),
            v6(PROTO_ICMPV6, 255, &solicitation),
            Pass(Stat::PassNeighbourDiscovery, Same),
        ),
        row(
            "IPv6 neighbour advertisement",
            vxlan(),
            v6(PROTO_ICMPV6, 255, &advertisement),
            Pass(Stat::PassNeighbourDiscovery, Same),
        ),
        row(
            "IPv6 router solicitation",
            vxlan(),
            v6(PROTO_ICMPV6, 255, &router_solicitation),
            Pass(Stat::PassNeighbourDiscovery, Same),
        ),
        row(
            "IPv6 router advertisement from a pod",
            vxlan(),
            v6(PROTO_ICMPV6, 255, &router_advertisement),
            Drop(Stat::DropIpv6, Same),
        ),
        row(
            "IPv6 neighbour solicitation, hop limit 64",
            vxlan(),
            v6(PROTO_ICMPV6, 64, &solicitation),
            Drop(Stat::DropIpv6, Same),
        ),
        row(
            "IPv6 header cut to 39 bytes: the kernel refuses",
            vxlan(),
            v6(PROTO_TCP, 64, &[])[..53].to_vec(),
            Refused(libc::EINVAL),
        ),
    ]
}

/// `frame` with an 802.1Q tag (VLAN 100) after its MAC addresses.
fn vlan_tagged(frame: &[u8]) -> Vec<u8> {
    let mut tagged = frame[..12].to_vec();
    tagged.extend_from_slice(&ETH_VLAN.to_be_bytes());
    tagged.extend_from_slice(&100u16.to_be_bytes());
    tagged.extend_from_slice(&frame[12..]);
    tagged
}

/// Who may send, and where it goes.
fn addresses() -> Vec<Row> {
    let local = to(POD_2.ip);
    let first_fragment = Ipv4 { more_fragments: true, ..to(POD_2.ip) };
    let later_fragment = Ipv4 { fragment_offset: 100, ..to(POD_2.ip) };
    let remote_later_fragment = Ipv4 { fragment_offset: 100, ..to(POD_B) };
    vec![
        row(
            "to a pod on this node",
            vxlan(),
            sent(&local),
            Redirect(Stat::RedirectLocal, POD_2.target(), Is(exact(POD_2.receives(&sent(&hop(&local)))))),
        ),
        row(
            "first fragment to a pod on this node",
            vxlan(),
            sent(&first_fragment),
            Redirect(Stat::RedirectLocal, POD_2.target(), Is(exact(POD_2.receives(&sent(&hop(&first_fragment)))))),
        ),
        row(
            "later fragment to a pod on this node",
            vxlan(),
            sent(&later_fragment),
            Redirect(Stat::RedirectLocal, POD_2.target(), Is(exact(POD_2.receives(&sent(&hop(&later_fragment)))))),
        ),
        row(
            "later fragment to a pod of node B (VXLAN)",
            vxlan(),
            sent(&remote_later_fragment),
            Redirect(
                Stat::RedirectTunnel,
                via_underlay_to(NODE_B),
                Is(encapsulated(exact(sent(&hop(&remote_later_fragment))), NODE_B)),
            ),
        ),
        row(
            "to a pod of node B (native)",
            native(),
            sent(&to(POD_B)),
            Redirect(Stat::RedirectNative, via_underlay_to(NODE_B), Is(exact(sent(&hop(&to(POD_B)))))),
        ),
        row(
            "to the broadcast address",
            vxlan(),
            sent(&to(Ipv4Addr::BROADCAST)),
            Drop(Stat::DropBroadcastOrMulticast, Same),
        ),
        row(
            "to a multicast group",
            vxlan(),
            sent(&to(Ipv4Addr::new(224, 0, 0, 251))),
            Drop(Stat::DropBroadcastOrMulticast, Same),
        ),
        row(
            "from an address that is no pod's",
            vxlan(),
            sent(&udp_ip(Ipv4Addr::new(10, 244, 0, 77), POD_2.ip)),
            Drop(Stat::DropSpoofedSource, Same),
        ),
        row(
            "from the other pod's address, on this pod's veth",
            vxlan(),
            sent(&udp_ip(POD_2.ip, POD_B)),
            Drop(Stat::DropSpoofedSource, Same),
        ),
        row(
            "to an unassigned address of this node's subnet",
            vxlan(),
            sent(&to(UNASSIGNED)),
            Drop(Stat::DropNoEndpoint, Same),
        ),
        row("to the outside world", vxlan(), sent(&to(OUTSIDE)), Pass(Stat::PassToStack, Same)),
        row("to this node's underlay address", vxlan(), sent(&to(NODE_IP)), Pass(Stat::PassToStack, Same)),
        row("to the pod gateway", vxlan(), sent(&to(POD_GATEWAY)), Pass(Stat::PassToStack, Same)),
        row("to a pod of node B in local-only mode", local_only(), sent(&to(POD_B)), Pass(Stat::PassToStack, Same)),
        Row {
            // A GSO skb of no GSO type: the kernel will not grow it.
            skb: Skb { gso_size: 1400, ..Skb::default() },
            ..row(
                "GSO packet to a pod of node B: the kernel refuses to grow it",
                vxlan(),
                sent(&to(POD_B)),
                // The router's checks ran (and lowered the TTL) before the
                // encapsulation failed.
                Drop(Stat::DropResizeFailed, Is(exact(sent(&hop(&to(POD_B)))))),
            )
        },
    ]
    .into_iter()
    .chain(big_tcp())
    .collect()
}

/// IPv4 BIG TCP: a TCP GSO packet over 64 KiB has total length 0 and the
/// skb's length (the kernel's `iph_totlen`). Only that combination; length
/// 0 is still malformed on anything else.
fn big_tcp() -> Vec<Row> {
    let tcp = |proto| Ipv4 { proto, total_len_override: Some(0), ..to(POD_B) };
    let frame = |ip: &Ipv4| POD_1.sends(ip, &frames::tcp_syn(40000, 5201));
    let gso = Skb { gso_size: 1400, ..Skb::default() };
    let big = tcp(PROTO_TCP);
    vec![
        Row {
            skb: gso,
            ..row(
                "BIG TCP (length 0, a TCP GSO skb) to a pod of node B (native)",
                native(),
                frame(&big),
                Redirect(Stat::RedirectNative, via_underlay_to(NODE_B), Is(exact(frame(&hop(&big))))),
            )
        },
        row("length 0, not GSO", native(), frame(&big), Drop(Stat::DropMalformed, Same)),
        Row {
            skb: gso,
            ..row("length 0, GSO, but UDP", native(), frame(&tcp(frames::PROTO_UDP)), Drop(Stat::DropMalformed, Same))
        },
    ]
}

/// TTL 0, 1 and 2 on each path that bypasses the stack: 0 and 1 are
/// answered with time exceeded, delivered back into the sender; 2 leaves
/// with 1.
fn ttl() -> Vec<Row> {
    type Forwarded = fn(&Ipv4) -> Expect;
    let paths: [(&str, Maps, Ipv4Addr, Forwarded); 4] = [
        ("a pod on this node", vxlan(), POD_2.ip, |ip| {
            Redirect(Stat::RedirectLocal, POD_2.target(), Is(exact(POD_2.receives(&sent(&hop(ip))))))
        }),
        ("node B (VXLAN)", vxlan(), POD_B, |ip| {
            Redirect(Stat::RedirectTunnel, via_underlay_to(NODE_B), Is(encapsulated(exact(sent(&hop(ip))), NODE_B)))
        }),
        ("node C (VXLAN, behind a router: the route picks the next hop)", vxlan(), POD_C, |ip| {
            Redirect(Stat::RedirectTunnel, via_underlay(), Is(encapsulated(exact(sent(&hop(ip))), NODE_C)))
        }),
        ("node B (native)", native(), POD_B, |ip| {
            Redirect(Stat::RedirectNative, via_underlay_to(NODE_B), Is(exact(sent(&hop(ip)))))
        }),
    ];
    let mut rows = Vec::new();
    for (path, maps, dst, forwarded) in paths {
        for ttl in 0..=2u8 {
            let ip = Ipv4 { ttl, ..to(dst) };
            let frame = sent(&ip);
            let expect = if ttl < 2 {
                Redirect(Stat::ReplyTimeExceeded, POD_1.target(), Is(into_pod(&POD_1, time_exceeded(&frame))))
            } else {
                forwarded(&ip)
            };
            rows.push(row(format!("TTL {ttl} to {path}"), maps.clone(), frame, expect));
        }
    }
    let expiring = sent(&Ipv4 { ttl: 1, ..to(POD_2.ip) });
    rows.push(row(
        "TTL 1 in local-only mode: time exceeded from the pod gateway",
        local_only(),
        expiring.clone(),
        Redirect(
            Stat::ReplyTimeExceeded,
            POD_1.target(),
            Is(into_pod(&POD_1, icmp_error(&expiring, POD_GATEWAY, 11, 0, [0; 4]))),
        ),
    ));
    let short = POD_1.sends(&Ipv4 { ttl: 1, ..to(POD_2.ip) }, &[1, 2, 3, 4]);
    rows.push(row(
        "TTL 1, 4 bytes of payload: the quote is zero-padded",
        vxlan(),
        short.clone(),
        Redirect(Stat::ReplyTimeExceeded, POD_1.target(), Is(into_pod(&POD_1, time_exceeded(&short)))),
    ));
    rows
}

/// The path MTU to other nodes: the underlay's, less 50 in VXLAN mode.
fn mtu() -> Vec<Row> {
    let tunnel_mtu = UNDERLAY_MTU as usize - VXLAN_OVERHEAD;
    let big = |len: usize, df: bool| POD_1.sends(&Ipv4 { dont_fragment: df, ..to(POD_B) }, &payload_for(len));
    let fitting = big(tunnel_mtu, true);
    let fitting_hop = POD_1.sends(&Ipv4 { ttl: 63, dont_fragment: true, ..to(POD_B) }, &payload_for(tunnel_mtu));
    vec![
        row(
            "exactly the tunnel's MTU with DF",
            vxlan(),
            fitting,
            Redirect(Stat::RedirectTunnel, via_underlay_to(NODE_B), Is(encapsulated(exact(fitting_hop), NODE_B))),
        ),
        row(
            "one byte over the tunnel's MTU with DF: fragmentation needed",
            vxlan(),
            big(tunnel_mtu + 1, true),
            Redirect(
                Stat::ReplyFragNeeded,
                POD_1.target(),
                Is(into_pod(&POD_1, frag_needed(&big(tunnel_mtu + 1, true), tunnel_mtu as u16))),
            ),
        ),
        row(
            "one byte over the underlay's MTU with DF (native): fragmentation needed",
            native(),
            big(UNDERLAY_MTU as usize + 1, true),
            Redirect(
                Stat::ReplyFragNeeded,
                POD_1.target(),
                Is(into_pod(&POD_1, frag_needed(&big(UNDERLAY_MTU as usize + 1, true), UNDERLAY_MTU as u16))),
            ),
        ),
        row(
            "too big without DF: to the stack to fragment",
            vxlan(),
            big(tunnel_mtu + 1, false),
            Pass(Stat::PassToFragment, Same),
        ),
    ]
}

/// No ICMP error about an ICMP error or a later fragment; none beyond the
/// rate limit; an ICMP query gets one.
fn icmp_errors() -> Vec<Row> {
    let icmp = |kind: u8, ttl: u8, df: bool, body_len: usize| {
        let ip = Ipv4 { ttl, dont_fragment: df, ..Ipv4::new(POD_1.ip, POD_B, PROTO_ICMP) };
        POD_1.sends(&ip, &frames::icmp(kind, 0, [0; 4], &vec![0x11; body_len]))
    };
    let echo = icmp(8, 1, false, 32);
    let rate_limited = Maps { icmp_tat: u64::MAX / 2, ..vxlan() };
    vec![
        row(
            "TTL 1 echo request: time exceeded",
            vxlan(),
            echo.clone(),
            Redirect(Stat::ReplyTimeExceeded, POD_1.target(), Is(into_pod(&POD_1, time_exceeded(&echo)))),
        ),
        row(
            "TTL 1 destination unreachable: no error about an error",
            vxlan(),
            icmp(3, 1, false, 28),
            Drop(Stat::DropTtlExceeded, Same),
        ),
        row(
            "TTL 1 time exceeded: no error about an error",
            vxlan(),
            icmp(11, 1, false, 28),
            Drop(Stat::DropTtlExceeded, Same),
        ),
        row(
            "TTL 1 later fragment: no error about it",
            vxlan(),
            sent(&Ipv4 { ttl: 1, fragment_offset: 100, ..to(POD_B) }),
            Drop(Stat::DropTtlExceeded, Same),
        ),
        row(
            "too big with DF, a destination unreachable: no error about an error",
            vxlan(),
            icmp(3, 64, true, UNDERLAY_MTU as usize),
            Drop(Stat::DropTooBig, Same),
        ),
        row(
            "TTL 1 with the rate limit spent",
            rate_limited,
            sent(&Ipv4 { ttl: 1, ..to(POD_2.ip) }),
            Drop(Stat::DropIcmpRateLimited, Same),
        ),
    ]
}
