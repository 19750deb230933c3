//! Ending a program: every verdict is counted before it is returned.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};
use knet_common::Stat;

use crate::parse;

/// Hand the packet to the host stack, counted under `stat`.
#[inline(always)]
pub(crate) fn pass(ctx: &TcContext, stat: Stat) -> i32 {
    parse::count(ctx, stat);
    TC_ACT_OK
}

/// Drop the packet, counted under its drop reason.
#[inline(always)]
pub(crate) fn drop_with(ctx: &TcContext, reason: Stat) -> i32 {
    parse::count(ctx, reason);
    TC_ACT_SHOT
}
