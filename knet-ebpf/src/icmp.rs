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
    ip::IpProto,
};

use crate::{
    headers::{self, Ipv4, ETH_LEN, IPV4_LEN},
    raw::{helpers, maps, packet},
};

/// The IPv4 header (without options) and 8 bytes of what followed it.
const QUOTE_LEN: usize = IPV4_LEN + 8;
/// IPv4 and ICMP header of the error, then the quote.
const ERROR_IP_LEN: u16 = (IPV4_LEN + Icmpv4Hdr::LEN + QUOTE_LEN) as u16;
/// DSCP CS6 (network control), as the kernel marks the ICMP it sends.
const TOS_NETWORK_CONTROL: u8 = 0xc0;

pub(crate) enum IcmpError {
    /// TTL exceeded in transit.
    TimeExceeded,
    /// Destination unreachable, fragmentation needed, with the MTU of the
    /// next hop.
    FragNeeded { mtu: u32 },
}

/// The headers that replace the packet's Ethernet header and lead the error.
#[repr(C)]
#[derive(Clone, Copy)]
struct ErrorHeaders {
    eth: EthHdr,
    ip: network_types::ip::Ipv4Hdr,
    icmp: Icmpv4Hdr,
}
const _: () = assert!(core::mem::size_of::<ErrorHeaders>() == ETH_LEN + IPV4_LEN + Icmpv4Hdr::LEN);

/// Turns the IPv4 packet `ip` (at `ETH_LEN`) into `error` for its source;
/// the error's destination (the original source). `Err` with the reason
/// to drop it instead when no error may be sent (RFC 1812 4.3.2.7: never
/// about an ICMP error, a later fragment or a source that is no single
/// host), when the rate limit refuses, or when the kernel cannot resize.
#[inline(always)]
pub(crate) fn build(ctx: &TcContext, cfg: &DataplaneConfig, ip: &Ipv4, error: IcmpError) -> Result<u32, Stat> {
    let refused = match error {
        IcmpError::TimeExceeded => Stat::DropTtlExceeded,
        IcmpError::FragNeeded { .. } => Stat::DropTooBig,
    };
    if !ip.may_get_icmp_error() || ip.has_options() {
        return Err(refused);
    }
    if ip.proto() == IpProto::Icmp as u8 {
        match headers::icmp_type_at(ctx, ETH_LEN + IPV4_LEN) {
            Some(kind) if !is_icmp_error(kind) => {}
            _ => return Err(refused),
        }
    }
    if !maps::take_icmp_token(helpers::now_ns()) {
        return Err(Stat::DropIcmpRateLimited);
    }
    let eth: EthHdr = packet::load(ctx, 0).ok_or(Stat::DropMalformed)?;

    // Cut (or pad with zeros) to the quote, then open room for the headers.
    packet::change_tail(ctx, (ETH_LEN + QUOTE_LEN) as u32).map_err(|()| Stat::DropResizeFailed)?;
    let quote: [u8; QUOTE_LEN] = packet::load(ctx, ETH_LEN).ok_or(Stat::DropResizeFailed)?;
    packet::adjust_room(ctx, (IPV4_LEN + Icmpv4Hdr::LEN) as i32, BPF_ADJ_ROOM_MAC, 0)
        .map_err(|()| Stat::DropResizeFailed)?;

    let (kind, code, rest) = match error {
        IcmpError::TimeExceeded => (ICMP_TIME_EXCEEDED, ICMP_TTL_EXCEEDED_IN_TRANSIT, [0; 4]),
        IcmpError::FragNeeded { mtu } => {
            let [hi, lo] = (mtu as u16).to_be_bytes();
            (ICMP_DEST_UNREACHABLE, ICMP_FRAG_NEEDED, [0, 0, hi, lo])
        }
    };
    let head = [kind, code, 0, 0, rest[0], rest[1], rest[2], rest[3]];
    let check = csum::finish(csum::sum_words(&head) + csum::sum_words(&quote));
    // The node's underlay address names this hop (and passes the receiving
    // node's tunnel source check); a node without one uses the gateway.
    let from = if cfg.node_ip != 0 { cfg.node_ip } else { u32::from_ne_bytes(POD_GATEWAY) };
    let id = helpers::random_u32() as u16;
    let reply_ip = headers::new_ipv4(from, ip.src(), IpProto::Icmp, ERROR_IP_LEN, id, false, TOS_NETWORK_CONTROL);
    let headers = ErrorHeaders {
        eth: EthHdr { dst_addr: eth.src_addr, src_addr: eth.dst_addr, ether_type: EtherType::Ipv4 as u16 },
        ip: reply_ip,
        icmp: Icmpv4Hdr { type_: kind, code, check, data: rest },
    };
    packet::store(ctx, 0, headers).map_err(|()| Stat::DropResizeFailed)?;
    Ok(ip.src())
}
