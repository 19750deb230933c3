//! `from_netdev`: ingress of the underlay device. Traffic from other nodes
//! for local pods goes straight to them.

use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};

use crate::{encap, parse};

#[classifier]
pub fn from_netdev(ctx: TcContext) -> i32 {
    match parse::config() {
        Some(cfg) => encap::from_underlay(&ctx, &cfg),
        None => TC_ACT_OK,
    }
}
