//! `to_netdev`: egress of the underlay device. In VXLAN mode, traffic the
//! host itself sends to remote pods is encapsulated here.

use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};

use crate::{encap, parse};

#[classifier]
pub fn to_netdev(ctx: TcContext) -> i32 {
    match parse::config() {
        Some(cfg) => encap::from_host(&ctx, &cfg),
        None => TC_ACT_OK,
    }
}
