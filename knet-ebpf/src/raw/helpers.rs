//! Raw helper calls that take or return plain numbers.

use core::mem::size_of;

use aya_ebpf::{
    bindings::{bpf_redir_neigh, bpf_redir_neigh__bindgen_ty_1},
    helpers::generated::{
        bpf_get_hash_recalc, bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_redirect_neigh, bpf_redirect_peer,
    },
    programs::TcContext,
};

const AF_INET: u32 = 2;

/// Moves the packet into the peer of `host_ifindex` (the pod's interface),
/// arriving there as if received. The helper's verdict.
#[inline(always)]
pub(crate) fn redirect_peer(host_ifindex: u32) -> i32 {
    // SAFETY: a plain helper call; the kernel validates the ifindex when it
    // performs the redirect.
    unsafe { bpf_redirect_peer(host_ifindex, 0) as i32 }
}

/// Sends the packet out of `ifindex`, its Ethernet addresses filled in from
/// the neighbour table for `next_hop` (wire order), or for the packet's
/// own destination after a route lookup when `next_hop` is `None`.
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

/// The packet's flow hash, computed if the skb has none yet.
#[inline(always)]
pub(crate) fn flow_hash(ctx: &TcContext) -> u32 {
    // SAFETY: a plain helper call on the program's own skb.
    unsafe { bpf_get_hash_recalc(ctx.skb.skb) }
}

#[inline(always)]
pub(crate) fn random_u32() -> u32 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_get_prandom_u32() }
}

/// Monotonic time in nanoseconds.
#[inline(always)]
pub(crate) fn now_ns() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}
