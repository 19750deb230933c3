//! `to_netdev`: egress of the underlay device. In VXLAN mode, traffic the
//! host itself sends (or forwards) to remote pods is encapsulated here.

use aya_ebpf::{macros::classifier, programs::TcContext};
use knet_common::{
    drop_event::Hook,
    node::{MODE_VXLAN, SUBNET_LOCAL},
    Stat,
};

use crate::{
    headers::{self, Frame, ETH_LEN},
    raw::maps,
    router, tunnel,
    verdict::{self, Verdict},
};

#[classifier]
pub fn to_netdev(ctx: TcContext) -> i32 {
    let verdict = try_to_netdev(&ctx);
    verdict::finish(&ctx, Hook::ToNetdev, verdict)
}

fn try_to_netdev(ctx: &TcContext) -> Verdict {
    let cfg = maps::config();
    if cfg.mode != MODE_VXLAN {
        return Verdict::Pass(Stat::PassUnderlayEgress);
    }
    let Some((_, Frame::Ipv4)) = headers::frame_at(ctx, 0) else {
        return Verdict::Pass(Stat::PassUnderlayEgress);
    };
    let Ok(ip) = headers::ipv4_at(ctx, ETH_LEN) else {
        return Verdict::Pass(Stat::PassUnderlayEgress);
    };
    match maps::node_subnet(ip.dst()) {
        Some(subnet) if subnet.flags & SUBNET_LOCAL == 0 => {
            // The stack already applied the route MTU (and fragmented or
            // answered); what still does not fit was sent around it.
            if !router::fits(ctx, router::path_mtu(&cfg)) {
                return Verdict::Drop(Stat::DropTooBig);
            }
            if let Err(reason) = tunnel::encap(ctx, &cfg, &subnet) {
                return Verdict::Drop(reason);
            }
            // The host's route to the remote subnet goes via the same next
            // hop as the node itself, so the Ethernet header is already right.
            Verdict::Pass(Stat::EncapFromHost)
        }
        _ => Verdict::Pass(Stat::PassUnderlayEgress),
    }
}
