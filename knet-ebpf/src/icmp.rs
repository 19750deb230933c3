//! ICMP errors built in place of the packet that caused them, the way
//! Cilium's and Calico's data paths do: the packet is cut to its IPv4
//! header and the first 8 bytes after it (the quote RFC 792 asks for), an
//! IPv4 and an ICMP header are put in front, and the result is addressed
//! back to the packet's source. Rate-limited per CPU like the kernel's own.

use aya_ebpf::{bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, programs::TcContext};
use knet_common::{
    csum,
    icmp::{is_icmp_error, ICMP_DEST_UNREACHABLE, ICMP_FRAG_NEEDED, ICMP_TIME_EXCEEDED, ICMP_TTL_EXCEEDED_IN_TRANSIT},
    node::{DataplaneConfig, POD_GATEWAY},
    Stat,
};
use network_types::{
    eth::{EthHdr, EtherType},
    icmp::Icmpv4Hdr,
    ip::{IpProto, Ipv4Hdr},
    udp::UdpHdr,
    vxlan::VxlanHdr,
};

use crate::{
    headers::{self, Ipv4, ETH_LEN, INNER_ETH_AT, IPV4_LEN},
    raw::{helpers, maps, packet},
    tunnel,
};

/// The IPv4 header (without options) and 8 bytes of what followed it.
const QUOTE_LEN: usize = IPV4_LEN + 8;
/// IPv4 and ICMP header of the error, then the quote.
const ERROR_IP_LEN: usize = IPV4_LEN + Icmpv4Hdr::LEN + QUOTE_LEN;
/// DSCP CS6 (network control), as the kernel marks the ICMP it sends.
const TOS_NETWORK_CONTROL: u8 = 0xc0;
/// `bpf_skb_adjust_room` moves at most this many bytes per call.
const MAX_ADJUST: u32 = 0xfff;

/// An ICMP error the programs send: a plain value with every field set
/// (the builders are BPF functions of their own, and an enum's unused
/// payload would reach them as an uninitialised register).
#[derive(Clone, Copy)]
pub(crate) struct IcmpError {
    kind: u8,
    code: u8,
    /// The next hop's MTU (fragmentation needed), else 0.
    mtu: u16,
}

impl IcmpError {
    /// TTL exceeded in transit.
    pub(crate) const TIME_EXCEEDED: IcmpError =
        IcmpError { kind: ICMP_TIME_EXCEEDED, code: ICMP_TTL_EXCEEDED_IN_TRANSIT, mtu: 0 };

    /// Destination unreachable, fragmentation needed, with the MTU of the
    /// next hop.
    pub(crate) const fn frag_needed(mtu: u32) -> IcmpError {
        IcmpError { kind: ICMP_DEST_UNREACHABLE, code: ICMP_FRAG_NEEDED, mtu: mtu as u16 }
    }

    /// The drop reason when this error may not be sent.
    fn refused(self) -> Stat {
        if self.kind == ICMP_TIME_EXCEEDED {
            Stat::DropTtlExceeded
        } else {
            Stat::DropTooBig
        }
    }
}

/// An error's IPv4 and ICMP headers and its quote: what follows the
/// Ethernet header of a plain error, or the inner one of a tunnelled one.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ErrorPacket {
    ip: Ipv4Hdr,
    icmp: Icmpv4Hdr,
    quote: [u8; QUOTE_LEN],
}
const _: () = assert!(core::mem::size_of::<ErrorPacket>() == ERROR_IP_LEN);

/// An error sent back inside the tunnel the packet came through. Built in
/// a per-CPU scratch map (`raw::maps::tunnelled_error`), as is a plain
/// error's `ErrorPacket`: on the stack they would not fit beside the
/// programs' own frames.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct TunnelledError {
    eth: EthHdr,
    ip: Ipv4Hdr,
    udp: UdpHdr,
    vxlan: VxlanHdr,
    inner_eth: EthHdr,
    error: ErrorPacket,
}
const _: () = assert!(core::mem::size_of::<TunnelledError>() == INNER_ETH_AT + ETH_LEN + ERROR_IP_LEN);

/// Whether an error about the IPv4 packet `ip` (its ICMP header, if any,
/// at `l4_at`) may be sent (RFC 1812 4.3.2.7: never about an ICMP error, a
/// later fragment or a source that is no single host; never beyond the
/// rate limit); `Err` with the reason to drop it instead. GSO packets get
/// none: resizing one would resize its segments.
#[inline(always)]
fn may_answer(ctx: &TcContext, ip: &Ipv4, l4_at: usize, error: IcmpError) -> Result<(), Stat> {
    let refused = error.refused();
    if !ip.may_get_icmp_error() || ip.has_options() || packet::gso_size(ctx) != 0 {
        return Err(refused);
    }
    if ip.proto() == IpProto::Icmp as u8 {
        match headers::icmp_type_at(ctx, l4_at) {
            Some(kind) if !is_icmp_error(kind) => {}
            _ => return Err(refused),
        }
    }
    if !maps::take_icmp_token(helpers::now_ns()) {
        return Err(Stat::DropIcmpRateLimited);
    }
    Ok(())
}

/// Copies the quote into `quote`: the packet's IPv4 header at `at` and
/// the 8 bytes after it, zeros where the packet is shorter. A BPF
/// function of its own: its byte-by-byte tail would crowd the builders'
/// stack frames.
#[inline(never)]
fn copy_quote(ctx: &TcContext, at: usize, quote: &mut [u8; QUOTE_LEN]) -> Result<(), Stat> {
    if packet::load_into(ctx, at, quote).is_ok() {
        return Ok(());
    }
    let mut header = [0; IPV4_LEN];
    packet::load_into(ctx, at, &mut header).map_err(|()| Stat::DropMalformed)?;
    *quote = [0; QUOTE_LEN];
    quote[..IPV4_LEN].copy_from_slice(&header);
    for i in IPV4_LEN..QUOTE_LEN {
        let mut byte = [0];
        if packet::load_into(ctx, at + i, &mut byte).is_err() {
            break;
        }
        quote[i] = byte[0];
    }
    Ok(())
}

/// The Ethernet header at `at` with its addresses swapped: a reply's.
#[inline(always)]
fn swapped_eth(ctx: &TcContext, at: usize) -> Result<EthHdr, Stat> {
    let eth: EthHdr = packet::load(ctx, at).ok_or(Stat::DropMalformed)?;
    Ok(EthHdr { dst_addr: eth.src_addr, src_addr: eth.dst_addr, ether_type: EtherType::Ipv4 as u16 })
}

/// Writes the error about `ip` as this node sends it into `out`.
#[inline(always)]
/// (its quote copied in already).
fn fill_error(out: &mut ErrorPacket, cfg: &DataplaneConfig, ip: &Ipv4, error: IcmpError) {
    let IcmpError { kind, code, mtu } = error;
    let [hi, lo] = mtu.to_be_bytes();
    let rest = [0, 0, hi, lo];
    let head = [kind, code, 0, 0, rest[0], rest[1], rest[2], rest[3]];
    let check = csum::finish(csum::sum_words(&head) + csum::sum_words(&out.quote));
    // The node's underlay address names this hop (and passes the receiving
    // node's tunnel source check); a node without one uses the gateway.
    let from = if cfg.node_ip != 0 { cfg.node_ip } else { u32::from_ne_bytes(POD_GATEWAY) };
    let id = helpers::random_u32() as u16;
    out.ip = headers::new_ipv4(from, ip.src(), IpProto::Icmp, ERROR_IP_LEN as u16, id, false, TOS_NETWORK_CONTROL);
    out.icmp = Icmpv4Hdr { type_: kind, code, check, data: rest };
}

/// Makes the packet `len` bytes long by adding or removing room right
/// after the Ethernet header (what was there is overwritten next). Unlike
/// `bpf_skb_change_tail`, this works on an skb the kernel still marks as
/// encapsulated, as a decapsulated packet from a veth is.
#[inline(always)]
fn resize(ctx: &TcContext, len: u32) -> Result<(), Stat> {
    for _ in 0..3 {
        let now = packet::len(ctx);
        if now == len {
            return Ok(());
        }
        let diff = if now > len { -((now - len).min(MAX_ADJUST) as i32) } else { (len - now).min(MAX_ADJUST) as i32 };
        packet::adjust_room(ctx, diff, BPF_ADJ_ROOM_MAC, 0).map_err(|()| Stat::DropResizeFailed)?;
    }
    if packet::len(ctx) == len {
        Ok(())
    } else {
        Err(Stat::DropResizeFailed)
    }
}

/// Turns the IPv4 packet `ip` (at `ETH_LEN`) into `error` for its source
/// (`ip.src()`, where the caller sends it). `Err` with the reason to drop
/// it instead (see `may_answer`), or when the kernel cannot resize it.
/// Its own function in the object (a BPF-to-BPF call), so its frame is
/// not added to the callers'.
#[inline(never)]
pub(crate) fn build(ctx: &TcContext, cfg: &DataplaneConfig, ip: &Ipv4, error: IcmpError) -> Result<(), Stat> {
    may_answer(ctx, ip, ETH_LEN + IPV4_LEN, error)?;
    let scratch = maps::tunnelled_error().ok_or(Stat::DropResizeFailed)?;
    scratch.eth = swapped_eth(ctx, 0)?;
    copy_quote(ctx, ETH_LEN, &mut scratch.error.quote)?;
    fill_error(&mut scratch.error, cfg, ip, error);
    resize(ctx, (ETH_LEN + ERROR_IP_LEN) as u32)?;
    packet::store_from(ctx, 0, &scratch.eth).map_err(|()| Stat::DropResizeFailed)?;
    packet::store_from(ctx, ETH_LEN, &scratch.error).map_err(|()| Stat::DropResizeFailed)
}

/// Turns a VXLAN packet whose inner packet `inner` cannot be delivered
/// into `error` for the inner source, inside a tunnel packet back to the
/// node it came from (`outer`'s source): the reply needs no encapsulation
/// of its own (the kernel refuses to encapsulate an skb it still marks as
/// encapsulated, as a decapsulated one from a veth is), and passes that
/// node's tunnel checks (outer and inner source are this node's address).
/// The caller sends it out of the underlay. Its own function in the object
/// (a BPF-to-BPF call), so its frame is not added to `from_netdev`'s.
#[inline(never)]
pub(crate) fn build_in_tunnel(
    ctx: &TcContext,
    cfg: &DataplaneConfig,
    outer: &Ipv4,
    inner: &Ipv4,
    error: IcmpError,
) -> Result<(), Stat> {
    let inner_ip_at = INNER_ETH_AT + ETH_LEN;
    may_answer(ctx, inner, inner_ip_at + IPV4_LEN, error)?;
    let reply = maps::tunnelled_error().ok_or(Stat::DropResizeFailed)?;
    reply.eth = swapped_eth(ctx, 0)?;
    reply.inner_eth = swapped_eth(ctx, INNER_ETH_AT)?;
    copy_quote(ctx, inner_ip_at, &mut reply.error.quote)?;
    fill_error(&mut reply.error, cfg, inner, error);
    let outer_len = (core::mem::size_of::<TunnelledError>() - ETH_LEN) as u16;
    let id = helpers::random_u32() as u16;
    reply.ip = headers::new_ipv4(cfg.node_ip, outer.src(), IpProto::Udp, outer_len, id, true, 0);
    (reply.udp, reply.vxlan) = tunnel::udp_and_vxlan(cfg, helpers::flow_hash(ctx), outer_len);
    resize(ctx, core::mem::size_of::<TunnelledError>() as u32)?;
    packet::store_from(ctx, 0, reply).map_err(|()| Stat::DropResizeFailed)
}
