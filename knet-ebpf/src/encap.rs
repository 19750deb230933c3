//! Carrying traffic to and from other nodes: VXLAN encapsulated by the
//! programs themselves (measured faster here than a VXLAN device), or
//! native routing with `bpf_redirect_neigh`.

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use knet_common::{
    node::{DataplaneConfig, NodeSubnet, MODE_NATIVE, MODE_VXLAN},
    Stat,
};

use crate::{deliver, parse, verdict};

/// A pod's packet for a pod of another node.
#[inline(always)]
pub(crate) fn to_remote_node(ctx: &TcContext, cfg: &DataplaneConfig, subnet: &NodeSubnet) -> i32 {
    match cfg.mode {
        MODE_VXLAN => {
            if let Err(reason) = parse::encap_vxlan(ctx, cfg, subnet.node_ip) {
                return verdict::drop_with(ctx, reason);
            }
            parse::count(ctx, Stat::RedirectTunnel);
            // The outer destination is the node; the kernel's route to it
            // picks the next hop, so routed underlays work too.
            parse::redirect_neigh(cfg.underlay_ifindex, None)
        }
        MODE_NATIVE => {
            parse::count(ctx, Stat::RedirectNative);
            parse::redirect_neigh(cfg.underlay_ifindex, Some(subnet.node_ip))
        }
        _ => verdict::pass(ctx, Stat::PassToStack),
    }
}

/// A packet arriving on the underlay: VXLAN from a known node, or (native
/// mode) a plain packet for a local pod.
#[inline(always)]
pub(crate) fn from_underlay(ctx: &TcContext, cfg: &DataplaneConfig) -> i32 {
    if cfg.mode == MODE_VXLAN {
        let Some(packet) = parse::vxlan(ctx) else {
            return TC_ACT_OK;
        };
        if packet.vni != cfg.vni {
            return TC_ACT_OK;
        }
        if !parse::is_known_node(packet.outer_src) {
            return verdict::drop_with(ctx, Stat::DropUnknownTunnelSource);
        }
        let Some(receiver) = parse::endpoint(packet.inner_dst) else {
            return verdict::drop_with(ctx, Stat::DropTunnelNoEndpoint);
        };
        if let Err(reason) = parse::decap_vxlan(ctx) {
            return verdict::drop_with(ctx, reason);
        }
        return deliver::to_local_pod(ctx, &receiver, Stat::DeliverFromNode);
    }
    if cfg.mode == MODE_NATIVE {
        if let parse::L3::Ipv4 { dst, .. } = parse::l3(ctx) {
            if let Some(receiver) = parse::endpoint(dst) {
                return deliver::to_local_pod(ctx, &receiver, Stat::DeliverFromNode);
            }
        }
    }
    // Not ours (node traffic, ARP, ...): untouched and uncounted, as the
    // underlay carries far more than pod traffic.
    TC_ACT_OK
}

/// A packet the host itself sends out of the underlay: one for a remote
/// pod is encapsulated (VXLAN mode); everything else leaves untouched.
#[inline(always)]
pub(crate) fn from_host(ctx: &TcContext, cfg: &DataplaneConfig) -> i32 {
    if cfg.mode != MODE_VXLAN {
        return TC_ACT_OK;
    }
    let parse::L3::Ipv4 { dst, .. } = parse::l3(ctx) else {
        return TC_ACT_OK;
    };
    match parse::node_subnet(dst) {
        Some(subnet) if subnet.flags & knet_common::node::SUBNET_LOCAL == 0 => {
            if let Err(reason) = parse::encap_vxlan(ctx, cfg, subnet.node_ip) {
                return verdict::drop_with(ctx, reason);
            }
            // The host's route to the remote subnet goes via the same next
            // hop as the node itself, so the Ethernet header is already right.
            verdict::pass(ctx, Stat::EncapFromHost)
        }
        _ => TC_ACT_OK,
    }
}
