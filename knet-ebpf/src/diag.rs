//! The rare diagnostics of the kernel side, through aya-log: a helper that
//! failed where it should not. Off unless the agent loads the object with
//! `KNET_EBPF_LOG` set (its `ebpf_log` setting): the value is a read-only
//! global fixed at load, so with it off the verifier proves every log call
//! dead and removes it, and the programs pay nothing.

use aya_ebpf::{programs::TcContext, Global};
use aya_log_ebpf::warn;

/// Set to 1 by the loader to turn the diagnostics on.
#[unsafe(no_mangle)]
static KNET_EBPF_LOG: Global<u32> = Global::new(0);

#[inline(always)]
fn enabled() -> bool {
    KNET_EBPF_LOG.load() != 0
}

/// A redirect helper refused the packet (`ret` is its verdict).
#[inline(always)]
pub(crate) fn redirect_failed(ctx: &TcContext, ifindex: u32, ret: i32) {
    if enabled() {
        warn!(ctx, "knet: redirect refused on ifindex {} (helper returned {})", ifindex, ret);
    }
}

/// The kernel refused to resize a packet: an ICMP error or an
/// encapsulation could not be built.
#[inline(always)]
pub(crate) fn resize_failed(ctx: &TcContext, ifindex: u32, len: u32) {
    if enabled() {
        warn!(
            ctx,
            "knet: packet of {} bytes on ifindex {} could not be resized (no ICMP error or encapsulation sent)",
            len,
            ifindex
        );
    }
}
