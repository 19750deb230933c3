//! `from_pod`: ingress of every pod's host-side veth, i.e. every packet a
//! pod sends.

use aya_ebpf::{macros::classifier, programs::TcContext};
use knet_common::{node::SUBNET_LOCAL, Stat};

use crate::{
    deliver, encap,
    parse::{self, L3},
    verdict,
};

#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    let (src, dst) = match parse::l3(&ctx) {
        L3::Ipv4 { src, dst } => (src, dst),
        L3::NotIpv4 => return verdict::pass(&ctx, Stat::PassNotIpv4),
        L3::Unparsed => return verdict::pass(&ctx, Stat::PassUnparsed),
    };

    // Anti-spoofing: a pod may only send from its own address, and its
    // address is registered against exactly this veth.
    match parse::endpoint(src) {
        Some(sender) if sender.host_ifindex == parse::ifindex(&ctx) => {}
        _ => return verdict::drop_with(&ctx, Stat::DropSpoofedSource),
    }

    if let Some(receiver) = parse::endpoint(dst) {
        return deliver::to_local_pod(&ctx, &receiver, Stat::RedirectLocal);
    }
    if let (Some(subnet), Some(cfg)) = (parse::node_subnet(dst), parse::config()) {
        if subnet.flags & SUBNET_LOCAL == 0 {
            return encap::to_remote_node(&ctx, &cfg, &subnet);
        }
    }
    verdict::pass(&ctx, Stat::PassToStack)
}
