//! All raw pointer work and every other `unsafe` of the programs: packet
//! bytes, the skb context, map values and raw helpers. Everything outside
//! this module is safe code working on typed values.

use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_redir_neigh, bpf_redir_neigh__bindgen_ty_1,
        BPF_ADJ_ROOM_ENCAP_L2_SHIFT, BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L2_ETH,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_ADJ_ROOM_FIXED_GSO,
    },
    helpers::generated::{bpf_get_hash_recalc, bpf_redirect_neigh, bpf_redirect_peer},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use knet_common::{
    node::{DataplaneConfig, NodeSubnet, VXLAN_OVERHEAD, VXLAN_PORT},
    Endpoint, Stat,
};

use crate::maps::{CONFIG, ENDPOINTS, NODES, NODE_SUBNETS, STATS};

const ETH_P_IP: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_TCP: u8 = 6;
const AF_INET: u32 = 2;
/// VXLAN flags byte with the I bit: the VNI is valid.
const VXLAN_FLAG_VNI: u8 = 0x08;

#[repr(C)]
#[derive(Clone, Copy)]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    ether_type: [u8; 2],
}
const _: () = assert!(size_of::<EthHdr>() == 14);

/// The fixed part of an IPv4 header. Only byte fields, so the struct has
/// alignment 1 and no padding: it sits at offsets that are not 4-aligned.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    tot_len: [u8; 2],
    id: [u8; 2],
    frag_off: [u8; 2],
    ttl: u8,
    protocol: u8,
    check: [u8; 2],
    saddr: [u8; 4],
    daddr: [u8; 4],
}
const _: () = assert!(size_of::<Ipv4Hdr>() == 20);

#[repr(C)]
#[derive(Clone, Copy)]
struct UdpHdr {
    source: [u8; 2],
    dest: [u8; 2],
    len: [u8; 2],
    check: [u8; 2],
}
const _: () = assert!(size_of::<UdpHdr>() == 8);

#[repr(C)]
#[derive(Clone, Copy)]
struct VxlanHdr {
    flags: u8,
    reserved: [u8; 3],
    /// VNI in the first three bytes, then a reserved byte.
    vni: [u8; 4],
}
const _: () = assert!(size_of::<VxlanHdr>() == 8);

/// Everything VXLAN puts between the outer Ethernet header and the inner
/// IPv4 header. Written in one store after `adjust_room`.
#[repr(C)]
#[derive(Clone, Copy)]
struct VxlanEncap {
    ip: Ipv4Hdr,
    udp: UdpHdr,
    vxlan: VxlanHdr,
    inner_eth: EthHdr,
}
const _: () = assert!(size_of::<VxlanEncap>() == VXLAN_OVERHEAD as usize);

const ETH_LEN: usize = size_of::<EthHdr>();

/// What the network layer of a frame is, as far as forwarding cares.
pub(crate) enum L3 {
    /// Source and destination as map keys (wire order).
    Ipv4 {
        src: u32,
        dst: u32,
    },
    NotIpv4,
    /// EtherType says IPv4 but the header is cut short or not version 4.
    Unparsed,
}

/// A VXLAN packet for this node, as `from_netdev` sees it.
pub(crate) struct Vxlan {
    pub outer_src: u32,
    pub vni: u32,
    pub inner_dst: u32,
}

/// A pointer to a `T` at `offset` into the packet, if all of it is inside
/// the linear data the program may touch.
#[inline(always)]
fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// A copy of the `T` at `offset`, if it is inside the packet.
#[inline(always)]
fn read_at<T: Copy>(ctx: &TcContext, offset: usize) -> Option<T> {
    // SAFETY: `ptr_at` checked that the whole `T` lies within the packet;
    // every header type here has alignment 1.
    ptr_at::<T>(ctx, offset).map(|p| unsafe { p.read() })
}

#[inline(always)]
fn ipv4_at(ctx: &TcContext, offset: usize) -> Option<Result<Ipv4Hdr, ()>> {
    let eth: EthHdr = read_at(ctx, offset)?;
    if u16::from_be_bytes(eth.ether_type) != ETH_P_IP {
        return None;
    }
    let Some(ip) = read_at::<Ipv4Hdr>(ctx, offset + ETH_LEN) else {
        return Some(Err(()));
    };
    if ip.version_ihl >> 4 != 4 || ip.version_ihl & 0x0f < 5 {
        return Some(Err(()));
    }
    Some(Ok(ip))
}

#[inline(always)]
pub(crate) fn l3(ctx: &TcContext) -> L3 {
    match ipv4_at(ctx, 0) {
        None => L3::NotIpv4,
        Some(Err(())) => L3::Unparsed,
        Some(Ok(ip)) => L3::Ipv4 { src: u32::from_ne_bytes(ip.saddr), dst: u32::from_ne_bytes(ip.daddr) },
    }
}

/// The VXLAN packet in this frame, if it is one (outer IPv4 without
/// options, UDP to the VXLAN port, the I flag, an inner IPv4 frame).
#[inline(always)]
pub(crate) fn vxlan(ctx: &TcContext) -> Option<Vxlan> {
    let Some(Ok(outer)) = ipv4_at(ctx, 0) else {
        return None;
    };
    if outer.protocol != IPPROTO_UDP || outer.version_ihl & 0x0f != 5 {
        return None;
    }
    let udp: UdpHdr = read_at(ctx, ETH_LEN + 20)?;
    if u16::from_be_bytes(udp.dest) != VXLAN_PORT {
        return None;
    }
    let vxlan: VxlanHdr = read_at(ctx, ETH_LEN + 28)?;
    if vxlan.flags & VXLAN_FLAG_VNI == 0 {
        return None;
    }
    let Some(Ok(inner)) = ipv4_at(ctx, ETH_LEN + 36) else {
        return None;
    };
    Some(Vxlan {
        outer_src: u32::from_ne_bytes(outer.saddr),
        vni: u32::from_be_bytes([0, vxlan.vni[0], vxlan.vni[1], vxlan.vni[2]]),
        inner_dst: u32::from_ne_bytes(inner.daddr),
    })
}

/// Rewrite the Ethernet addresses of the frame.
#[inline(always)]
pub(crate) fn set_macs(ctx: &TcContext, dst: &[u8; 6], src: &[u8; 6]) -> Result<(), ()> {
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(())?;
    // SAFETY: `ptr_at` checked bounds; no helper that could move packet data
    // ran since.
    unsafe {
        (*eth).dst = *dst;
        (*eth).src = *src;
    }
    Ok(())
}

/// The standard Internet checksum of an IPv4 header.
#[inline(always)]
fn ipv4_checksum(ip: &Ipv4Hdr) -> [u8; 2] {
    // SAFETY: `Ipv4Hdr` is 20 plain bytes; viewing it as bytes is sound.
    let bytes: &[u8; 20] = unsafe { &*(ip as *const Ipv4Hdr as *const [u8; 20]) };
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < 20 {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_be_bytes()
}

/// Wraps the frame's IPv4 packet in VXLAN (outer IPv4 from `cfg.node_ip` to
/// `remote`, UDP to the VXLAN port, the VNI); the frame's Ethernet header
/// stays in front as the outer one, and a copy becomes the inner one.
///
/// The kernel lowers the MSS of GSO packets by the overhead and marks them
/// as UDP-tunnel GSO, so super-frames stay whole until the underlay.
#[inline(always)]
pub(crate) fn encap_vxlan(ctx: &TcContext, cfg: &DataplaneConfig, remote: u32) -> Result<(), Stat> {
    let inner_eth: EthHdr = read_at(ctx, 0).ok_or(Stat::PassUnparsed)?;
    // SAFETY: `skb` is the context pointer the kernel passed to the program.
    let (gso_size, len) = unsafe { ((*ctx.skb.skb).gso_size, (*ctx.skb.skb).len) };
    if gso_size == 0 && len - ETH_LEN as u32 + VXLAN_OVERHEAD > cfg.underlay_mtu {
        return Err(Stat::DropTooBigForTunnel);
    }
    // SAFETY: a plain helper call on the program's own skb.
    let hash = unsafe { bpf_get_hash_recalc(ctx.skb.skb) };
    let mut flags = u64::from(BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH)
        | ((ETH_LEN as u64) << BPF_ADJ_ROOM_ENCAP_L2_SHIFT);
    // The kernel lowers a GSO packet's segment size by the overhead unless
    // told not to. A TCP sender that already sized its segments for the
    // tunnel (the pod's route MTU) would then send needlessly short ones:
    // keep its size when the encapsulated segments still fit the underlay.
    if gso_size != 0 && tcp_segment_len(ctx, gso_size).is_some_and(|seg| seg + VXLAN_OVERHEAD <= cfg.underlay_mtu) {
        flags |= u64::from(BPF_F_ADJ_ROOM_FIXED_GSO);
    }
    ctx.adjust_room(VXLAN_OVERHEAD as i32, BPF_ADJ_ROOM_MAC, flags).map_err(|_| Stat::DropAdjustRoomFailed)?;

    let ip_len = (ctx.len() - ETH_LEN as u32) as u16;
    let mut ip = Ipv4Hdr {
        version_ihl: 0x45,
        tos: 0,
        tot_len: ip_len.to_be_bytes(),
        id: [0; 2],
        frag_off: [0; 2],
        ttl: 64,
        protocol: IPPROTO_UDP,
        check: [0; 2],
        saddr: cfg.node_ip.to_ne_bytes(),
        daddr: remote.to_ne_bytes(),
    };
    ip.check = ipv4_checksum(&ip);
    // Source port from the flow hash, in 49152..=65535, so the underlay can
    // spread flows; checksum 0 (allowed over IPv4).
    let sport = 49152 | (hash as u16 & 0x3fff);
    let vni = cfg.vni.to_be_bytes();
    let encap = VxlanEncap {
        ip,
        udp: UdpHdr {
            source: sport.to_be_bytes(),
            dest: VXLAN_PORT.to_be_bytes(),
            len: (ip_len - 20).to_be_bytes(),
            check: [0; 2],
        },
        vxlan: VxlanHdr { flags: VXLAN_FLAG_VNI, reserved: [0; 3], vni: [vni[1], vni[2], vni[3], 0] },
        inner_eth,
    };
    let at = ptr_at::<VxlanEncap>(ctx, ETH_LEN).ok_or(Stat::DropAdjustRoomFailed)?;
    // SAFETY: `ptr_at` checked bounds after `adjust_room` moved the data.
    unsafe { at.write(encap) };
    Ok(())
}

/// The IP length of each TCP segment of a GSO packet: payload plus the
/// IPv4 and TCP headers; `None` if it is not TCP over IPv4.
#[inline(always)]
fn tcp_segment_len(ctx: &TcContext, gso_size: u32) -> Option<u32> {
    let ip: Ipv4Hdr = read_at(ctx, ETH_LEN)?;
    if ip.protocol != IPPROTO_TCP {
        return None;
    }
    let ihl = usize::from(ip.version_ihl & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    // Byte 12 of the TCP header holds the data offset in its high nibble.
    let data_offset: u8 = read_at(ctx, ETH_LEN + ihl + 12)?;
    Some(gso_size + ihl as u32 + u32::from(data_offset >> 4) * 4)
}

/// Removes the outer IPv4, UDP, VXLAN and inner Ethernet headers, leaving
/// the outer Ethernet header in front of the inner IPv4 packet.
#[inline(always)]
pub(crate) fn decap_vxlan(ctx: &TcContext) -> Result<(), Stat> {
    // FIXED_GSO: the inner segments keep their size; without it the kernel
    // would grow gso_size by the overhead removed.
    let flags = BPF_F_ADJ_ROOM_DECAP_L3_IPV4 | BPF_F_ADJ_ROOM_FIXED_GSO;
    ctx.adjust_room(-(VXLAN_OVERHEAD as i32), BPF_ADJ_ROOM_MAC, u64::from(flags))
        .map_err(|_| Stat::DropAdjustRoomFailed)
}

/// The ifindex of the device the packet is on.
#[inline(always)]
pub(crate) fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` is the context pointer the kernel passed to the program.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// A copy of the local endpoint with this address, if there is one.
#[inline(always)]
pub(crate) fn endpoint(ip: u32) -> Option<Endpoint> {
    // SAFETY: the pointer comes from a successful map lookup and is read
    // once, by value; a concurrent update can at worst give a stale copy.
    ENDPOINTS.get_ptr(ip).map(|p| unsafe { p.read() })
}

/// The node subnet containing `ip`, longest prefix first.
#[inline(always)]
pub(crate) fn node_subnet(ip: u32) -> Option<NodeSubnet> {
    NODE_SUBNETS.get(Key::new(32, ip)).copied()
}

/// Whether `ip` is the underlay address of a known node.
#[inline(always)]
pub(crate) fn is_known_node(ip: u32) -> bool {
    NODES.get_ptr(ip).is_some()
}

#[inline(always)]
pub(crate) fn config() -> Option<DataplaneConfig> {
    CONFIG.get(0).copied()
}

/// Count the packet under `stat`.
#[inline(always)]
pub(crate) fn count(ctx: &TcContext, stat: Stat) {
    if let Some(counter) = STATS.get_ptr_mut(stat.slot()) {
        // SAFETY: a per-CPU slot from a successful lookup; only this CPU
        // writes it, and programs are not preempted mid-run.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += u64::from(ctx.len());
        }
    }
}

/// Move the packet into the peer of `host_ifindex` (the pod's interface),
/// arriving there as if received.
#[inline(always)]
pub(crate) fn redirect_peer(host_ifindex: u32) -> i32 {
    // SAFETY: a plain helper call; it validates the ifindex itself.
    unsafe { bpf_redirect_peer(host_ifindex, 0) as i32 }
}

/// Send the packet out of `ifindex`, its Ethernet addresses filled in from
/// the neighbour table for `next_hop` (wire order), or for the packet's
/// own destination (after a route lookup) when `next_hop` is `None`.
#[inline(always)]
pub(crate) fn redirect_neigh(ifindex: u32, next_hop: Option<u32>) -> i32 {
    match next_hop {
        Some(nh) => {
            let mut params =
                bpf_redir_neigh { nh_family: AF_INET, __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 { ipv4_nh: nh } };
            // SAFETY: `params` lives across the call and has the size passed.
            unsafe { bpf_redirect_neigh(ifindex, &mut params, size_of::<bpf_redir_neigh>() as i32, 0) as i32 }
        }
        // SAFETY: NULL params are allowed: the kernel looks the route up.
        None => unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as i32 },
    }
}
