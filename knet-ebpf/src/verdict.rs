//! How a program ends: every packet is counted once, under the verdict or
//! drop reason that decided it, after the decision took effect; a drop
//! also reports an event (`drop_events`).

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    programs::TcContext,
};
use knet_common::{drop_event::Hook, Stat};

use crate::{
    diag, drop_events,
    raw::{maps, packet},
};

pub(crate) enum Verdict {
    /// Hand the packet to the host stack.
    Pass(Stat),
    Drop(Stat),
    /// A redirect helper ran and returned `ret`; counted under `stat` only
    /// if the helper accepted it.
    Redirect {
        stat: Stat,
        ret: i32,
    },
}

/// Counts the verdict of the program at `hook` and turns it into the TC
/// return code.
#[inline(always)]
pub(crate) fn finish(ctx: &TcContext, hook: Hook, verdict: Verdict) -> i32 {
    let len = packet::len(ctx);
    match verdict {
        Verdict::Pass(stat) => {
            maps::count(stat, len);
            TC_ACT_OK
        }
        Verdict::Drop(reason) => {
            if reason == Stat::DropResizeFailed {
                diag::resize_failed(ctx, packet::ifindex(ctx), len);
            }
            dropped(ctx, hook, reason, len)
        }
        Verdict::Redirect { stat, ret } if ret == TC_ACT_REDIRECT => {
            maps::count(stat, len);
            ret
        }
        Verdict::Redirect { ret, .. } => {
            diag::redirect_failed(ctx, packet::ifindex(ctx), ret);
            dropped(ctx, hook, Stat::DropRedirectFailed, len)
        }
    }
}

#[inline(always)]
fn dropped(ctx: &TcContext, hook: Hook, reason: Stat, len: u32) -> i32 {
    maps::count(reason, len);
    drop_events::report(ctx, hook as u32, reason.slot(), len);
    TC_ACT_SHOT
}
