//! The event of a dropped packet, for `knet-agent monitor`: its reason,
//! where it was dropped and what it was (addresses, protocol, ports).
//! Rate-limited per CPU before any work is spent on it, and every event
//! is accounted for in `DROP_EVENT_STATS` (sent, rate limited or lost to
//! a full ring), so a flood costs the data path one comparison a packet
//! and the counters in `STATS` stay exact.

use aya_ebpf::programs::TcContext;
use knet_common::drop_event::{DropEvent, EVENT_IPV4, EVENT_PORTS};
use network_types::ip::IpProto;

use crate::{
    headers::{ETH_LEN, IPV4_LEN},
    raw::{helpers, maps, packet},
};

/// Offset of the EtherType in the Ethernet header.
const ETHERTYPE_AT: usize = 12;
const ETHERTYPE_IPV4: u16 = 0x0800;

/// Reports the packet of `len` bytes dropped for the reason in `slot` by
/// the program `hook` (a `knet_common::drop_event::Hook`). A BPF function
/// of its own, called only on drops, so the forwarding paths keep their
/// code and stack frames; its arguments are plain integers, which reach a
/// BPF function whole (an enum's unused bits might not).
#[inline(never)]
pub(crate) fn report(ctx: &TcContext, hook: u32, slot: u32, len: u32) {
    let Some(counts) = maps::drop_event_counts(slot) else {
        return;
    };
    let now = helpers::now_ns();
    if !maps::take_drop_event_token(now) {
        counts.rate_limited += 1;
        return;
    }
    let mut event = DropEvent {
        time_ns: now,
        reason: slot,
        ifindex: packet::ifindex(ctx),
        len,
        hook: hook as u8,
        ..DropEvent::default()
    };
    describe(ctx, &mut event);
    if maps::send_drop_event(&event) {
        counts.sent += 1;
    } else {
        counts.ring_full += 1;
    }
}

/// Fills in what the packet's front says, as far as it can be read: it
/// may be the malformed packet that caused the drop, so nothing is
/// assumed. Copies with `bpf_skb_load_bytes`, which never changes the skb.
#[inline(always)]
fn describe(ctx: &TcContext, event: &mut DropEvent) {
    let mut ethertype = [0u8; 2];
    if packet::load_into(ctx, ETHERTYPE_AT, &mut ethertype).is_err() {
        return;
    }
    event.ethertype = u16::from_be_bytes(ethertype);
    let mut ip = [0u8; IPV4_LEN];
    if event.ethertype != ETHERTYPE_IPV4 || packet::load_into(ctx, ETH_LEN, &mut ip).is_err() || ip[0] >> 4 != 4 {
        return;
    }
    event.src = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);
    event.dst = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
    event.protocol = ip[9];
    event.flags = EVENT_IPV4;
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let later_fragment = ip[6] & 0x1f != 0 || ip[7] != 0;
    let has_ports = event.protocol == IpProto::Tcp as u8 || event.protocol == IpProto::Udp as u8;
    if !has_ports || later_fragment || header_len < IPV4_LEN {
        return;
    }
    let mut ports = [0u8; 4];
    if packet::load_into(ctx, ETH_LEN + header_len, &mut ports).is_ok() {
        event.src_port = u16::from_be_bytes([ports[0], ports[1]]);
        event.dst_port = u16::from_be_bytes([ports[2], ports[3]]);
        event.flags |= EVENT_PORTS;
    }
}
