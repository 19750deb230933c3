//! `from_netdev`: ingress of the underlay device. Traffic from other nodes
//! for local pods goes straight to them; only the tunnel, with its checks,
//! leads to pods in VXLAN mode.

use aya_ebpf::{macros::classifier, programs::TcContext};
use knet_common::{
    drop_event::Hook,
    node::{DataplaneConfig, MODE_NATIVE, MODE_VXLAN, SUBNET_LOCAL},
    Endpoint, Stat,
};

use crate::{
    deliver,
    headers::{self, Frame, Ipv4, ETH_LEN, INNER_ETH_AT},
    raw::maps,
    router, tunnel,
    verdict::{self, Verdict},
};

#[classifier]
pub fn from_netdev(ctx: TcContext) -> i32 {
    let verdict = try_from_netdev(&ctx);
    verdict::finish(&ctx, Hook::FromNetdev, verdict)
}

fn try_from_netdev(ctx: &TcContext) -> Verdict {
    let cfg = maps::config();
    // The node's own traffic (ARP, IPv6, whatever the stack will judge)
    // is none of knet's business.
    let Some((_, Frame::Ipv4)) = headers::frame_at(ctx, 0) else {
        return Verdict::Pass(Stat::PassUnderlay);
    };
    let Ok(ip) = headers::ipv4_at(ctx, ETH_LEN) else {
        return Verdict::Pass(Stat::PassUnderlay);
    };
    match cfg.mode {
        MODE_VXLAN => from_tunnel(ctx, &cfg, &ip),
        MODE_NATIVE => from_native(ctx, &cfg, &ip),
        _ => Verdict::Pass(Stat::PassUnderlay),
    }
}

fn from_tunnel(ctx: &TcContext, cfg: &DataplaneConfig, outer: &Ipv4) -> Verdict {
    let Some(packet) = headers::vxlan_at(ctx, outer) else {
        return match maps::node_subnet(outer.dst()) {
            Some(_) => Verdict::Drop(Stat::DropPlainToPod),
            None => Verdict::Pass(Stat::PassUnderlay),
        };
    };
    if packet.vni != cfg.vni {
        return Verdict::Pass(Stat::PassOtherVni);
    }
    if packet.outer.is_fragment() {
        return Verdict::Drop(Stat::DropTunnelFragment);
    }
    if outer.dst() != cfg.node_ip {
        return Verdict::Drop(Stat::DropTunnelWrongDestination);
    }
    if !maps::is_known_node(outer.src()) {
        return Verdict::Drop(Stat::DropUnknownTunnelSource);
    }
    let inner = match headers::frame_at(ctx, INNER_ETH_AT) {
        Some((_, Frame::Ipv4)) => headers::ipv4_at(ctx, INNER_ETH_AT + ETH_LEN),
        _ => Err(()),
    };
    let Ok(inner) = inner else {
        return Verdict::Drop(Stat::DropTunnelMalformedInner);
    };
    if !sent_by(outer.src(), inner.src()) {
        return Verdict::Drop(Stat::DropTunnelForgedSource);
    }
    let Some(receiver) = maps::endpoint(inner.dst()) else {
        return Verdict::Drop(Stat::DropTunnelNoEndpoint);
    };
    if let Some(answered) = router::expired_in_tunnel(ctx, cfg, outer, &inner) {
        return answered;
    }
    if let Err(reason) = tunnel::decap(ctx, outer.src()) {
        return Verdict::Drop(reason);
    }
    to_local_pod(ctx, cfg, &inner, &receiver)
}

/// Whether a node at `node_ip` may send a packet from `src`: one of its
/// pods, or the node itself (its host traffic to remote pods).
#[inline(always)]
fn sent_by(node_ip: u32, src: u32) -> bool {
    if src == node_ip {
        return true;
    }
    match maps::node_subnet(src) {
        Some(subnet) => subnet.node_ip == node_ip && subnet.flags & SUBNET_LOCAL == 0,
        None => false,
    }
}

fn from_native(ctx: &TcContext, cfg: &DataplaneConfig, ip: &Ipv4) -> Verdict {
    if let Some(receiver) = maps::endpoint(ip.dst()) {
        return to_local_pod(ctx, cfg, ip, &receiver);
    }
    match maps::node_subnet(ip.dst()) {
        Some(subnet) if subnet.flags & SUBNET_LOCAL != 0 => Verdict::Drop(Stat::DropNoEndpoint),
        _ => Verdict::Pass(Stat::PassUnderlay),
    }
}

/// The last hop: the router's checks, then into the pod.
#[inline(always)]
fn to_local_pod(ctx: &TcContext, cfg: &DataplaneConfig, ip: &Ipv4, receiver: &Endpoint) -> Verdict {
    match router::hop(ctx, ip, None) {
        Ok(()) => deliver::to_local_pod(ctx, receiver, Stat::DeliverFromNode),
        Err(refusal) => router::answer(ctx, cfg, ip, refusal),
    }
}
