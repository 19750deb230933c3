//! All raw pointer work and every other `unsafe` of the programs: packet
//! bytes, the skb context, map values and raw helpers. Everything outside
//! this module is safe code working on typed values.

use core::mem::size_of;

use aya_ebpf::{helpers::generated::bpf_redirect_peer, programs::TcContext};
use knet_common::{Endpoint, Stat};

use crate::maps::{ENDPOINTS, STATS};

const ETH_P_IP: u16 = 0x0800;

#[repr(C)]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    ether_type: u16,
}
const _: () = assert!(size_of::<EthHdr>() == 14);

/// The fixed part of an IPv4 header. Addresses are byte arrays so the struct
/// has alignment 1: it sits at offset 14, which is not 4-aligned.
#[repr(C)]
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

/// What the network layer of a frame is, as far as forwarding cares.
pub(crate) enum L3 {
    /// Source and destination as `ENDPOINTS` keys.
    Ipv4 {
        src: u32,
        dst: u32,
    },
    NotIpv4,
    /// EtherType says IPv4 but the header is cut short or not version 4.
    Unparsed,
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

#[inline(always)]
pub(crate) fn l3(ctx: &TcContext) -> L3 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return L3::NotIpv4;
    };
    // SAFETY: `ptr_at` checked that the whole header lies within the packet.
    let ether_type = u16::from_be(unsafe { (*eth).ether_type });
    if ether_type != ETH_P_IP {
        return L3::NotIpv4;
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, size_of::<EthHdr>()) else {
        return L3::Unparsed;
    };
    // SAFETY: `ptr_at` checked that the whole header lies within the packet;
    // `Ipv4Hdr` has alignment 1.
    let (version_ihl, saddr, daddr) = unsafe { ((*ip).version_ihl, (*ip).saddr, (*ip).daddr) };
    if version_ihl >> 4 != 4 || version_ihl & 0x0f < 5 {
        return L3::Unparsed;
    }
    L3::Ipv4 {
        src: u32::from_ne_bytes(saddr),
        dst: u32::from_ne_bytes(daddr),
    }
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

/// The ifindex of the device the packet arrived on.
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
