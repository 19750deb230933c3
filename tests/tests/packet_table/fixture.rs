//! The cluster every row runs in, as seen from this node: its maps, the
//! frames its pods and peers send, and what the programs should make of
//! them, built byte by byte with `knet_tests::frames`.

use std::net::Ipv4Addr;

use knet_common::{
    ipv4_key,
    node::{
        self, DataplaneConfig, NodeSubnet, MODE_LOCAL_ONLY, MODE_NATIVE, MODE_VXLAN, SUBNET_LOCAL, SUBNET_NEIGHBOUR,
    },
    Endpoint,
};
use knet_tests::{
    frames::{self, eth, Ipv4, ETH_IPV4, ETH_LEN, PROTO_ICMP, PROTO_UDP},
    test_run::Maps,
};

use crate::table::{Expected, Random, Target};

/// This node's underlay address, and two peers with a pod subnet each.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
pub const NODE_B: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
pub const NODE_C: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 3);
/// On the underlay, but no node.
pub const STRANGER: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 66);
/// A pod of node B, one of node C.
pub const POD_B: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
pub const POD_C: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 5);
/// In this node's pod subnet, but no pod's.
pub const UNASSIGNED: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 99);
/// Outside the cluster.
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
/// What ICMP errors come from on a node without an underlay address.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

pub const VNI: u32 = 7;
pub const VXLAN_PORT: u16 = 8472;
/// The test run never sends, so the underlay device need not exist.
pub const UNDERLAY_IFINDEX: u32 = 9;
pub const UNDERLAY_MTU: u32 = 1500;
/// Outer IPv4, UDP and VXLAN headers and the inner Ethernet header.
pub const VXLAN_OVERHEAD: usize = 50;

/// This node's underlay MAC, node B's, and the underlay's router.
pub const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x01];
pub const NODE_B_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x02];
pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0xfe];

/// Node B's VTEP MAC as its source published it (a flannel node's random
/// `flannel.1` MAC); node C published none and has the one knet gives it.
pub const NODE_B_VTEP: [u8; 6] = [0x9a, 0x3f, 0x5c, 0x1e, 0x77, 0x02];

/// The VTEP MAC the maps hold for `node` (this node: knet's own).
pub fn vtep_of(node: Ipv4Addr) -> [u8; 6] {
    if node == NODE_B {
        NODE_B_VTEP
    } else {
        node::vtep_mac(ipv4_key(node.octets()))
    }
}

/// A pod on this node, as `ENDPOINTS` has it.
pub struct Pod {
    pub ip: Ipv4Addr,
    /// Its host-side veth: where `from_pod` sees its packets.
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub host_mac: [u8; 6],
}

/// The sender of most rows. A test run with ifindex 0 runs on loopback
/// (ifindex 1), so that is its veth.
pub const POD_1: Pod =
    Pod { ip: Ipv4Addr::new(10, 244, 0, 2), ifindex: 1, mac: [0x02, 0, 0, 0, 1, 2], host_mac: [0x02, 0, 0, 0, 1, 1] };
pub const POD_2: Pod =
    Pod { ip: Ipv4Addr::new(10, 244, 0, 3), ifindex: 42, mac: [0x02, 0, 0, 0, 2, 2], host_mac: [0x02, 0, 0, 0, 2, 1] };

impl Pod {
    fn endpoint(&self) -> Endpoint {
        Endpoint { host_ifindex: self.ifindex, pod_mac: self.mac, host_mac: self.host_mac }
    }

    /// A frame the pod sends to its gateway.
    pub fn sends(&self, ip: &Ipv4, payload: &[u8]) -> Vec<u8> {
        eth(self.host_mac, self.mac, ETH_IPV4, &ip.packet(payload))
    }

    /// `frame` as it arrives in the pod: addressed from its gateway.
    pub fn receives(&self, frame: &[u8]) -> Vec<u8> {
        eth(self.mac, self.host_mac, ETH_IPV4, &frame[ETH_LEN..])
    }

    /// Delivery into the pod by redirect to its host-side veth.
    pub fn target(&self) -> Target {
        Target { ifindex: self.ifindex, next_hop: None }
    }
}

/// This node in `mode` with the underlay, both pods and both peers.
fn cluster(mode: u32) -> Maps {
    let subnet = |a, b, c, node_ip: Ipv4Addr, flags| {
        let vtep_mac = if flags & SUBNET_LOCAL != 0 { [0; 6] } else { vtep_of(node_ip) };
        (
            Ipv4Addr::new(a, b, c, 0),
            24,
            NodeSubnet { node_ip: ipv4_key(node_ip.octets()), flags, vtep_mac, _pad: [0; 2] },
        )
    };
    Maps {
        config: DataplaneConfig {
            mode,
            vni: VNI,
            underlay_ifindex: UNDERLAY_IFINDEX,
            underlay_mtu: UNDERLAY_MTU,
            node_ip: ipv4_key(NODE_IP.octets()),
        },
        endpoints: vec![(POD_1.ip, POD_1.endpoint()), (POD_2.ip, POD_2.endpoint())],
        subnets: vec![
            subnet(10, 244, 0, NODE_IP, SUBNET_LOCAL),
            // B shares the underlay's segment; C is behind a router.
            subnet(10, 244, 1, NODE_B, SUBNET_NEIGHBOUR),
            subnet(10, 244, 2, NODE_C, 0),
        ],
        nodes: vec![NODE_B, NODE_C],
        icmp_tat: 0,
    }
}

pub fn vxlan() -> Maps {
    cluster(MODE_VXLAN)
}

pub fn native() -> Maps {
    cluster(MODE_NATIVE)
}

/// A single node: no underlay device, no underlay address, no peers.
pub fn local_only() -> Maps {
    let mut maps = cluster(MODE_LOCAL_ONLY);
    maps.config = DataplaneConfig { mode: MODE_LOCAL_ONLY, vni: 0, underlay_ifindex: 0, underlay_mtu: 0, node_ip: 0 };
    maps.subnets.truncate(1);
    maps.nodes.clear();
    maps
}

/// An IPv4 header for a UDP datagram: TTL 64, DF clear.
pub fn udp_ip(src: Ipv4Addr, dst: Ipv4Addr) -> Ipv4 {
    Ipv4::new(src, dst, PROTO_UDP)
}

/// The UDP datagram most rows carry.
pub fn payload() -> Vec<u8> {
    frames::udp(40000, 5001, b"knet packet table")
}

/// A payload that makes the IPv4 packet `ip_len` bytes long.
pub fn payload_for(ip_len: usize) -> Vec<u8> {
    frames::udp(40000, 5001, &vec![0x5a; ip_len - frames::IPV4_LEN - 8])
}

/// `ip` with `payload` arriving on the underlay from its router.
pub fn from_router(ip: &Ipv4, payload: &[u8]) -> Vec<u8> {
    eth(NODE_MAC, ROUTER_MAC, ETH_IPV4, &ip.packet(payload))
}

/// An outer IPv4 header of VXLAN from `src` to `dst`, as knet sends it.
pub fn outer_ip(src: Ipv4Addr, dst: Ipv4Addr) -> Ipv4 {
    Ipv4 { dont_fragment: true, ..udp_ip(src, dst) }
}

/// The inner frame of a tunnel packet from node B: `ip` with `payload`,
/// from B's VTEP MAC to this node's.
pub fn inner_frame(ip: &Ipv4, payload: &[u8]) -> Vec<u8> {
    eth(vtep_of(NODE_IP), NODE_B_VTEP, ETH_IPV4, &ip.packet(payload))
}

/// `inner` in VXLAN with `vni` under the outer header `outer`, as node B
/// sends it to this node.
pub fn tunnelled(outer: &Ipv4, vni: u32, inner: &[u8]) -> Vec<u8> {
    eth(NODE_MAC, NODE_B_MAC, ETH_IPV4, &outer.packet(&frames::udp(50123, VXLAN_PORT, &frames::vxlan(vni, inner))))
}

/// From node B to a pod here: `inner` (an IPv4 header) with `payload`.
pub fn from_node_b(inner: &Ipv4, payload: &[u8]) -> Vec<u8> {
    tunnelled(&outer_ip(NODE_B, NODE_IP), VNI, &inner_frame(inner, payload))
}

/// `inner` (a whole frame, with its random fields) encapsulated by this
/// node toward `node`: the frame's own Ethernet header in front, then an
/// outer IPv4 header with DF and TTL 64, UDP to the VXLAN port from a
/// hashed port (checksum 0), the VNI, and the frame itself addressed from
/// this node's VTEP MAC to `node`'s (a kernel VXLAN peer takes no other).
pub fn encapsulated(inner: Expected, node: Ipv4Addr) -> Expected {
    let outer = Ipv4 { id: 0, ..outer_ip(NODE_IP, node) };
    let inner_frame = eth(vtep_of(node), vtep_of(NODE_IP), ETH_IPV4, &inner.bytes[ETH_LEN..]);
    let bytes = eth(
        inner.bytes[..6].try_into().unwrap(),
        inner.bytes[6..12].try_into().unwrap(),
        ETH_IPV4,
        &outer.packet(&frames::udp(0, VXLAN_PORT, &frames::vxlan(VNI, &inner_frame))),
    );
    let mut random = vec![Random::IpId { header_at: ETH_LEN }, Random::VxlanSourcePort { udp_at: ETH_LEN + 20 }];
    random.extend(inner.random.iter().map(|r| r.shifted(VXLAN_OVERHEAD)));
    Expected { bytes, random }
}

/// An ICMP error about the IPv4 packet of `frame` as a router at `from`
/// sends it: IPv4 with TOS 0xc0, TTL 64, a random ID, to the packet's
/// source; ICMP `kind`/`code` with `rest`; the offending header and the 8
/// bytes after it (zero-padded if the packet is shorter). Ethernet
/// addresses swapped.
pub fn icmp_error(frame: &[u8], from: Ipv4Addr, kind: u8, code: u8, rest: [u8; 4]) -> Expected {
    let offending = &frame[ETH_LEN..];
    let mut quote = offending[..offending.len().min(28)].to_vec();
    quote.resize(28, 0);
    let to = Ipv4Addr::new(offending[12], offending[13], offending[14], offending[15]);
    let ip = Ipv4 { tos: 0xc0, id: 0, ..Ipv4::new(from, to, PROTO_ICMP) };
    let bytes = eth(
        frame[6..12].try_into().unwrap(),
        frame[..6].try_into().unwrap(),
        ETH_IPV4,
        &ip.packet(&frames::icmp(kind, code, rest, &quote)),
    );
    assert_eq!(bytes.len(), ETH_LEN + 56, "an ICMP error is 56 bytes of IPv4");
    Expected { bytes, random: vec![Random::IpId { header_at: ETH_LEN }] }
}

/// ICMP time exceeded in transit from this node.
pub fn time_exceeded(frame: &[u8]) -> Expected {
    icmp_error(frame, NODE_IP, 11, 0, [0; 4])
}

/// ICMP fragmentation needed with the next hop's `mtu`, from this node.
pub fn frag_needed(frame: &[u8], mtu: u16) -> Expected {
    let [hi, lo] = mtu.to_be_bytes();
    icmp_error(frame, NODE_IP, 3, 4, [0, 0, hi, lo])
}

/// `expected` as it arrives in `pod`.
pub fn into_pod(pod: &Pod, expected: Expected) -> Expected {
    Expected { bytes: pod.receives(&expected.bytes), ..expected }
}

/// Redirected out of the underlay to node `node` (native routing).
pub fn via_underlay_to(node: Ipv4Addr) -> Target {
    Target { ifindex: UNDERLAY_IFINDEX, next_hop: Some(node) }
}

/// Redirected out of the underlay by the host's route.
pub fn via_underlay() -> Target {
    Target { ifindex: UNDERLAY_IFINDEX, next_hop: None }
}
