//! Sending to other nodes: VXLAN encapsulated by the programs, or native
//! routing, both out of the underlay with `bpf_redirect_neigh`.

use aya_ebpf::programs::TcContext;
use knet_common::{
    node::{DataplaneConfig, NodeSubnet, MODE_NATIVE, MODE_VXLAN, SUBNET_NEIGHBOUR},
    Stat,
};

use crate::{
    raw::{helpers, packet},
    tunnel,
    verdict::Verdict,
};

/// Sends the packet to the node that owns `subnet`, counted under `stat`.
#[inline(always)]
pub(crate) fn to_node(ctx: &TcContext, cfg: &DataplaneConfig, subnet: &NodeSubnet, stat: Stat) -> Verdict {
    let node_ip = subnet.node_ip;
    match cfg.mode {
        MODE_VXLAN => {
            if let Err(reason) = tunnel::encap(ctx, cfg, subnet) {
                return Verdict::Drop(reason);
            }
            // The outer destination is the node. A neighbour on the
            // underlay is sent to directly; for a node behind a router the
            // kernel's route to it picks the next hop, per packet.
            let next_hop = if subnet.flags & SUBNET_NEIGHBOUR != 0 { Some(node_ip) } else { None };
            out_of_underlay(ctx, cfg, stat, next_hop)
        }
        MODE_NATIVE => {
            packet::note_redirect(ctx, cfg.underlay_ifindex, node_ip);
            Verdict::Redirect { stat, ret: helpers::redirect_neigh(cfg.underlay_ifindex, Some(node_ip)) }
        }
        _ => Verdict::Pass(Stat::PassToStack),
    }
}

/// Sends the packet out of the underlay to the next hop of the host's
/// route to its destination.
#[inline(always)]
pub(crate) fn by_route(ctx: &TcContext, cfg: &DataplaneConfig, stat: Stat) -> Verdict {
    out_of_underlay(ctx, cfg, stat, None)
}

/// Sends the packet out of the underlay to `next_hop` (wire order), or to
/// the next hop of the host's route to its destination.
#[inline(always)]
fn out_of_underlay(ctx: &TcContext, cfg: &DataplaneConfig, stat: Stat, next_hop: Option<u32>) -> Verdict {
    if cfg.underlay_ifindex == 0 {
        // Local-only: no underlay to send it out of.
        return Verdict::Drop(Stat::DropRedirectFailed);
    }
    packet::note_redirect(ctx, cfg.underlay_ifindex, next_hop.unwrap_or(0));
    Verdict::Redirect { stat, ret: helpers::redirect_neigh(cfg.underlay_ifindex, next_hop) }
}
