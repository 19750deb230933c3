//! How a program ends: every packet is counted once, under the verdict or
//! drop reason that decided it, after the decision took effect.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    programs::TcContext,
};
use knet_common::Stat;

use crate::raw::{maps, packet};

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

/// Counts the verdict and turns it into the TC return code.
#[inline(always)]
pub(crate) fn finish(ctx: &TcContext, verdict: Verdict) -> i32 {
    let len = packet::len(ctx);
    match verdict {
        Verdict::Pass(stat) => {
            maps::count(stat, len);
            TC_ACT_OK
        }
        Verdict::Drop(reason) => {
            maps::count(reason, len);
            TC_ACT_SHOT
        }
        Verdict::Redirect { stat, ret } if ret == TC_ACT_REDIRECT => {
            maps::count(stat, len);
            ret
        }
        Verdict::Redirect { .. } => {
            maps::count(Stat::DropRedirectFailed, len);
            TC_ACT_SHOT
        }
    }
}
