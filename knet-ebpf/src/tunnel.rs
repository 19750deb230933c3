//! VXLAN done by the programs themselves (measured faster here than a
//! VXLAN device): the bytes of encapsulation and decapsulation, and the
//! per-peer counters of both (`PEER_STATS`), so every tunnel packet is
//! counted where it enters or leaves the tunnel.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_ADJ_ROOM_ENCAP_L2_SHIFT, BPF_F_ADJ_ROOM_DECAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
        BPF_F_ADJ_ROOM_FIXED_GSO,
    },
    programs::TcContext,
};
use knet_common::{
    node::{self, DataplaneConfig, NodeSubnet, VXLAN_OVERHEAD, VXLAN_PORT},
    Stat,
};
use network_types::{eth::EthHdr, ip::IpProto, udp::UdpHdr, vxlan::VxlanHdr};

use crate::{
    headers::{self, ETH_LEN, IPV4_LEN},
    raw::{
        helpers,
        maps::{self, PeerDirection},
        packet,
    },
};

/// Everything VXLAN puts between the outer Ethernet header and the inner
/// IPv4 header. Written in one store after `adjust_room`.
#[repr(C)]
#[derive(Clone, Copy)]
struct VxlanEncap {
    ip: network_types::ip::Ipv4Hdr,
    udp: UdpHdr,
    vxlan: VxlanHdr,
    inner_eth: EthHdr,
}
const _: () = assert!(core::mem::size_of::<VxlanEncap>() == VXLAN_OVERHEAD as usize);

/// Wraps the frame's IPv4 packet in VXLAN (outer IPv4 from `cfg.node_ip` to
/// the node of `remote`, UDP to the VXLAN port, the VNI); the frame's
/// Ethernet header stays in front as the outer one. The inner one goes
/// from this node's VTEP MAC to the peer's: a kernel VXLAN peer (a flannel
/// node) hands the stack only frames for its own MAC, and drops a frame
/// from its own MAC as a loop.
///
/// The outer header has DF set, as the pods' MTU already leaves room for
/// it: an underlay hop with a smaller MTU must say so (ICMP) rather than
/// fragment, because a receiver cannot check a fragment's VXLAN header.
/// The kernel lowers the MSS of GSO packets by the overhead and marks them
/// as UDP-tunnel GSO, so super-frames stay whole until the underlay.
///
/// A BPF function of its own: inlined, its headers would share a stack
/// frame with the ICMP builders' callers and overflow the 512 bytes.
#[inline(never)]
pub(crate) fn encap(ctx: &TcContext, cfg: &DataplaneConfig, remote: &NodeSubnet) -> Result<(), Stat> {
    let eth: EthHdr = packet::load(ctx, 0).ok_or(Stat::DropMalformed)?;
    let inner_eth =
        EthHdr { dst_addr: remote.vtep_mac, src_addr: node::vtep_mac(cfg.node_ip), ether_type: eth.ether_type };
    let remote = remote.node_ip;
    let gso_size = packet::gso_size(ctx);
    let hash = helpers::flow_hash(ctx);
    let mut flags = u64::from(BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH)
        | ((ETH_LEN as u64) << BPF_ADJ_ROOM_ENCAP_L2_SHIFT);
    // The kernel lowers a GSO packet's segment size by the overhead unless
    // told not to. A TCP sender that already sized its segments for the
    // tunnel (the pod's route MTU) would then send needlessly short ones:
    // keep its size when the encapsulated segments still fit the underlay.
    if gso_size != 0 && tcp_segment_len(ctx, gso_size).is_some_and(|seg| seg + VXLAN_OVERHEAD <= cfg.underlay_mtu) {
        flags |= u64::from(BPF_F_ADJ_ROOM_FIXED_GSO);
    }
    packet::adjust_room(ctx, VXLAN_OVERHEAD as i32, BPF_ADJ_ROOM_MAC, flags).map_err(|()| Stat::DropResizeFailed)?;

    let ip_len = (packet::len(ctx) - ETH_LEN as u32) as u16;
    let ip = headers::new_ipv4(cfg.node_ip, remote, IpProto::Udp, ip_len, helpers::random_u32() as u16, true, 0);
    let (udp, vxlan) = udp_and_vxlan(cfg, hash, ip_len);
    let encap = VxlanEncap { ip, udp, vxlan, inner_eth };
    packet::store(ctx, ETH_LEN, encap).map_err(|()| Stat::DropResizeFailed)?;
    maps::count_peer(remote, PeerDirection::Tx, packet::len(ctx));
    Ok(())
}

/// The UDP and VXLAN headers of a tunnel packet whose outer IPv4 packet is
/// `ip_len` bytes long. The source port comes from the flow hash, in
/// 49152..=65535, so the underlay can spread flows; the UDP checksum is 0
/// (allowed over IPv4).
#[inline(always)]
pub(crate) fn udp_and_vxlan(cfg: &DataplaneConfig, hash: u32, ip_len: u16) -> (UdpHdr, VxlanHdr) {
    let vni = cfg.vni.to_be_bytes();
    (
        UdpHdr {
            src: (49152 | (hash as u16 & 0x3fff)).to_be_bytes(),
            dst: VXLAN_PORT.to_be_bytes(),
            len: (ip_len - IPV4_LEN as u16).to_be_bytes(),
            check: [0; 2],
        },
        VxlanHdr { flags: 0x08, _reserved1: [0; 3], vni: [vni[1], vni[2], vni[3]], _reserved2: 0 },
    )
}

/// The IP length of each TCP segment of a GSO packet: payload plus the
/// IPv4 and TCP headers; `None` if it is not TCP over IPv4 without options
/// (then the kernel's own MSS adjustment applies).
#[inline(always)]
fn tcp_segment_len(ctx: &TcContext, gso_size: u32) -> Option<u32> {
    let ip: network_types::ip::Ipv4Hdr = packet::load(ctx, ETH_LEN)?;
    if ip.proto != IpProto::Tcp as u8 || ip.vihl != 0x45 {
        return None;
    }
    // Byte 12 of the TCP header holds the data offset in its high nibble.
    let data_offset: u8 = packet::load(ctx, ETH_LEN + IPV4_LEN + 12)?;
    Some(gso_size + IPV4_LEN as u32 + u32::from(data_offset >> 4) * 4)
}

/// Removes the outer IPv4, UDP, VXLAN and inner Ethernet headers of a
/// packet from the node at `peer`, leaving the outer Ethernet header in
/// front of the inner IPv4 packet. The peer's counter takes the frame as
/// it arrived.
#[inline(always)]
pub(crate) fn decap(ctx: &TcContext, peer: u32) -> Result<(), Stat> {
    let wire_len = packet::len(ctx);
    // FIXED_GSO: the inner segments keep their size; without it the kernel
    // would grow gso_size by the overhead removed.
    let flags = BPF_F_ADJ_ROOM_DECAP_L3_IPV4 | BPF_F_ADJ_ROOM_FIXED_GSO;
    packet::adjust_room(ctx, -(VXLAN_OVERHEAD as i32), BPF_ADJ_ROOM_MAC, u64::from(flags))
        .map_err(|()| Stat::DropResizeFailed)?;
    maps::count_peer(peer, PeerDirection::Rx, wire_len);
    Ok(())
}
