//! `from_pod`: ingress of every pod's host-side veth, i.e. every packet a
//! pod sends.

use aya_ebpf::{macros::classifier, programs::TcContext};
use knet_common::{
    drop_event::Hook,
    node::{MODE_LOCAL_ONLY, MODE_VXLAN, SUBNET_LOCAL},
    Stat,
};

use crate::{
    deliver,
    headers::{self, Frame, ETH_LEN},
    raw::{maps, packet},
    remote, router,
    verdict::{self, Verdict},
};

#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    let verdict = try_from_pod(&ctx);
    verdict::finish(&ctx, Hook::FromPod, verdict)
}

fn try_from_pod(ctx: &TcContext) -> Verdict {
    let Some((_, frame)) = headers::frame_at(ctx, 0) else {
        return Verdict::Drop(Stat::DropMalformed);
    };
    match frame {
        Frame::Ipv4 => {}
        Frame::Arp => return Verdict::Pass(Stat::PassArp),
        Frame::Ipv6 => return ipv6(ctx),
        Frame::Other => return Verdict::Drop(Stat::DropUnsupportedEthertype),
    }
    let Ok(ip) = headers::ipv4_at(ctx, ETH_LEN) else {
        return Verdict::Drop(Stat::DropMalformed);
    };

    // Anti-spoofing: a pod may only send from its own address, and its
    // address is registered against exactly this veth.
    match maps::endpoint(ip.src()) {
        Some(sender) if sender.host_ifindex == packet::ifindex(ctx) => {}
        _ => return Verdict::Drop(Stat::DropSpoofedSource),
    }
    if ip.dst_is_group() {
        return Verdict::Drop(Stat::DropBroadcastOrMulticast);
    }
    if ip.has_options() {
        return Verdict::Pass(Stat::PassIpOptions);
    }

    let cfg = maps::config();
    if let Some(receiver) = maps::endpoint(ip.dst()) {
        return match router::hop(ctx, &ip, None) {
            Ok(()) => deliver::to_local_pod(ctx, &receiver, Stat::RedirectLocal),
            Err(refusal) => router::answer(ctx, &cfg, &ip, refusal),
        };
    }
    match maps::node_subnet(ip.dst()) {
        // An address of this node's subnet that no pod has: the stack has
        // no better route for it than the default, which leads away.
        Some(subnet) if subnet.flags & SUBNET_LOCAL != 0 => Verdict::Drop(Stat::DropNoEndpoint),
        Some(subnet) if cfg.mode != MODE_LOCAL_ONLY => match router::hop(ctx, &ip, Some(router::path_mtu(&cfg))) {
            Ok(()) => {
                let stat = if cfg.mode == MODE_VXLAN { Stat::RedirectTunnel } else { Stat::RedirectNative };
                remote::to_node(ctx, &cfg, &subnet, stat)
            }
            Err(refusal) => router::answer(ctx, &cfg, &ip, refusal),
        },
        _ => Verdict::Pass(Stat::PassToStack),
    }
}

/// IPv6 from a pod. There is no dual stack yet: the node answers neighbour
/// discovery (so the pod's stack behaves), and nothing else gets through,
/// or pods could reach the node's services over link-local addresses.
fn ipv6(ctx: &TcContext) -> Verdict {
    match headers::ipv6_at(ctx, ETH_LEN) {
        None => Verdict::Drop(Stat::DropMalformed),
        Some(ip) if headers::is_neighbour_discovery(ctx, &ip) => Verdict::Pass(Stat::PassNeighbourDiscovery),
        Some(_) => Verdict::Drop(Stat::DropIpv6),
    }
}
