//! Reading and building headers: safe code over copies of the
//! `network-types` structs, which `raw::packet` moves in and out of the
//! packet.

use knet_common::{csum, node::VXLAN_PORT};
use network_types::{
    eth::{EthHdr, EtherType},
    icmp::Icmpv4Hdr,
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
    vxlan::VxlanHdr,
};

use crate::raw::packet;

pub(crate) const ETH_LEN: usize = EthHdr::LEN;
pub(crate) const IPV4_LEN: usize = Ipv4Hdr::LEN;
/// Where the inner Ethernet header of a VXLAN packet starts.
pub(crate) const INNER_ETH_AT: usize = ETH_LEN + IPV4_LEN + UdpHdr::LEN + VxlanHdr::LEN;

const IP_DF: u8 = 0x40;
const IP_MF: u8 = 0x20;

/// What a frame carries, by its EtherType.
pub(crate) enum Frame {
    Ipv4,
    Arp,
    Ipv6,
    Other,
}

/// The EtherType of the Ethernet header at `offset`; `None` if the frame
/// is shorter than one.
#[inline(always)]
pub(crate) fn frame_at(ctx: &aya_ebpf::programs::TcContext, offset: usize) -> Option<(EthHdr, Frame)> {
    let eth: EthHdr = packet::load(ctx, offset)?;
    let kind = if eth.ether_type == EtherType::Ipv4 as u16 {
        Frame::Ipv4
    } else if eth.ether_type == EtherType::Arp as u16 {
        Frame::Arp
    } else if eth.ether_type == EtherType::Ipv6 as u16 {
        Frame::Ipv6
    } else {
        Frame::Other
    };
    Some((eth, kind))
}

/// An IPv4 header that passed the checks every router makes (RFC 1812
/// 5.2.2): version 4, a header of at least 20 bytes, a total length that
/// covers the header and fits the frame.
#[derive(Clone, Copy)]
pub(crate) struct Ipv4 {
    pub hdr: Ipv4Hdr,
}

impl Ipv4 {
    /// Source address as a map key (wire order read natively).
    pub fn src(&self) -> u32 {
        u32::from_ne_bytes(self.hdr.src_addr)
    }
    pub fn dst(&self) -> u32 {
        u32::from_ne_bytes(self.hdr.dst_addr)
    }
    pub fn has_options(&self) -> bool {
        self.hdr.vihl & 0x0f != 5
    }
    pub fn dont_fragment(&self) -> bool {
        self.hdr.frags[0] & IP_DF != 0
    }
    /// Part of a fragmented datagram (any fragment).
    pub fn is_fragment(&self) -> bool {
        self.hdr.frags[0] & IP_MF != 0 || self.is_later_fragment()
    }
    /// A fragment other than the first: its transport header is elsewhere.
    pub fn is_later_fragment(&self) -> bool {
        (self.hdr.frags[0] & 0x1f) != 0 || self.hdr.frags[1] != 0
    }
    pub fn proto(&self) -> u8 {
        self.hdr.proto
    }
    pub fn ttl(&self) -> u8 {
        self.hdr.ttl
    }
    /// Whether the destination is a broadcast or multicast address.
    pub fn dst_is_group(&self) -> bool {
        self.hdr.dst_addr == [255; 4] || self.hdr.dst_addr[0] & 0xf0 == 0xe0
    }
    /// Whether an ICMP error may be sent to the source at all (RFC 1812
    /// 4.3.2.7): not about a later fragment, not to a source that is no
    /// single host.
    pub fn may_get_icmp_error(&self) -> bool {
        let s = self.hdr.src_addr;
        !self.is_later_fragment() && s != [0; 4] && s != [255; 4] && s[0] & 0xf0 != 0xe0 && s[0] != 127
    }
}

/// The IPv4 header at `offset`, checked; `Err` if it is cut short or
/// malformed.
#[inline(always)]
pub(crate) fn ipv4_at(ctx: &aya_ebpf::programs::TcContext, offset: usize) -> Result<Ipv4, ()> {
    let hdr: Ipv4Hdr = packet::load(ctx, offset).ok_or(())?;
    let header_len = usize::from(hdr.vihl & 0x0f) * 4;
    let total = match u16::from_be_bytes(hdr.tot_len) {
        // BIG TCP: a TCP GSO packet larger than 64 KiB carries length 0 and
        // is as long as the skb (the kernel's `iph_totlen`).
        0 if hdr.proto == IpProto::Tcp as u8 && packet::gso_size(ctx) != 0 => packet::len(ctx) as usize - offset,
        len => usize::from(len),
    };
    if hdr.vihl >> 4 != 4 || header_len < IPV4_LEN || total < header_len {
        return Err(());
    }
    if offset + total > packet::len(ctx) as usize {
        return Err(());
    }
    Ok(Ipv4 { hdr })
}

/// The IPv6 header at `offset`, if the frame holds one.
#[inline(always)]
pub(crate) fn ipv6_at(ctx: &aya_ebpf::programs::TcContext, offset: usize) -> Option<Ipv6Hdr> {
    packet::load(ctx, offset)
}

/// IPv6 discovery a pod may send (RFC 4861, hop limit 255, no extension
/// headers): router solicitations (133), neighbour solicitations (135)
/// and advertisements (136). Never a router advertisement (134) or a
/// redirect (137): with them a pod could make itself the node's router.
#[inline(always)]
pub(crate) fn is_neighbour_discovery(ctx: &aya_ebpf::programs::TcContext, ip: &Ipv6Hdr) -> bool {
    if ip.next_hdr != IpProto::Ipv6Icmp as u8 || ip.hop_limit != 255 {
        return false;
    }
    match packet::load::<u8>(ctx, ETH_LEN + Ipv6Hdr::LEN) {
        Some(kind) => matches!(kind, 133 | 135 | 136),
        None => false,
    }
}

/// The ICMP type of the ICMP message after a 20-byte IPv4 header.
#[inline(always)]
pub(crate) fn icmp_type_at(ctx: &aya_ebpf::programs::TcContext, offset: usize) -> Option<u8> {
    let icmp: Icmpv4Hdr = packet::load(ctx, offset)?;
    Some(icmp.type_)
}

/// A VXLAN packet on knet's port, as far as the outer headers go.
pub(crate) struct Vxlan {
    pub outer: Ipv4,
    pub vni: u32,
}

/// The VXLAN packet in this frame (UDP to the VXLAN port after an outer
/// IPv4 header without options, with the I flag), if it is one. A later
/// outer fragment has no UDP header and is never one.
#[inline(always)]
pub(crate) fn vxlan_at(ctx: &aya_ebpf::programs::TcContext, outer: &Ipv4) -> Option<Vxlan> {
    if outer.proto() != IpProto::Udp as u8 || outer.has_options() || outer.is_later_fragment() {
        return None;
    }
    let udp: UdpHdr = packet::load(ctx, ETH_LEN + IPV4_LEN)?;
    if u16::from_be_bytes(udp.dst) != VXLAN_PORT {
        return None;
    }
    let vxlan: VxlanHdr = packet::load(ctx, ETH_LEN + IPV4_LEN + UdpHdr::LEN)?;
    if !vxlan.vni_present() {
        return None;
    }
    Some(Vxlan { outer: *outer, vni: vxlan.vni() })
}

/// Lowers the TTL of the IPv4 header at `offset` by one, updating its
/// checksum incrementally.
#[inline(always)]
pub(crate) fn decrement_ttl(ctx: &aya_ebpf::programs::TcContext, offset: usize, ip: &Ipv4) -> Result<(), ()> {
    let mut hdr = ip.hdr;
    hdr.ttl -= 1;
    hdr.check = csum::after_ttl_decrement(hdr.check);
    packet::store(ctx, offset, hdr)
}

/// An IPv4 header without options, its checksum filled in.
#[inline(always)]
pub(crate) fn new_ipv4(
    src: u32,
    dst: u32,
    proto: IpProto,
    total_len: u16,
    id: u16,
    dont_fragment: bool,
    tos: u8,
) -> Ipv4Hdr {
    let mut hdr = Ipv4Hdr {
        vihl: 0x45,
        tos,
        tot_len: total_len.to_be_bytes(),
        id: id.to_be_bytes(),
        frags: [if dont_fragment { IP_DF } else { 0 }, 0],
        ttl: 64,
        proto: proto as u8,
        check: [0; 2],
        src_addr: src.to_ne_bytes(),
        dst_addr: dst.to_ne_bytes(),
    };
    hdr.check = ipv4_checksum(&hdr);
    hdr
}

/// The checksum of a header (its own checksum field read as zero), summed
/// field by field: no copy of the header is made.
#[inline(always)]
pub(crate) fn ipv4_checksum(h: &Ipv4Hdr) -> [u8; 2] {
    let word = |a: u8, b: u8| u32::from(u16::from_be_bytes([a, b]));
    let (l, i, f, s, d) = (h.tot_len, h.id, h.frags, h.src_addr, h.dst_addr);
    csum::finish(
        word(h.vihl, h.tos)
            + word(l[0], l[1])
            + word(i[0], i[1])
            + word(f[0], f[1])
            + word(h.ttl, h.proto)
            + word(s[0], s[1])
            + word(s[2], s[3])
            + word(d[0], d[1])
            + word(d[2], d[3]),
    )
}
