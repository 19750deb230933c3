//! What a router does for a packet it forwards without the host stack
//! (RFC 1812 5.3): refuse an expiring TTL, refuse what does not fit the
//! next hop, lower the TTL; and answer the refusals with ICMP, routed back
//! the way any packet from this node would go.

use aya_ebpf::programs::TcContext;
use knet_common::{
    node::{DataplaneConfig, MODE_LOCAL_ONLY, MODE_VXLAN, SUBNET_LOCAL, VXLAN_OVERHEAD},
    Stat,
};

use crate::{
    deliver,
    headers::{self, Ipv4, ETH_LEN},
    icmp::{self, IcmpError},
    raw::{maps, packet},
    remote,
    verdict::Verdict,
};

/// Why a packet cannot be forwarded as it is.
pub(crate) enum Refusal {
    /// TTL 0 or 1: it would leave with none.
    TimeExceeded,
    /// Larger than the next hop's MTU with DF set.
    TooBig { mtu: u32 },
    /// Larger than the next hop's MTU, DF clear: someone must fragment it.
    MustFragment,
    /// The header could not be rewritten (not reached: it was just read).
    Unwritable,
}

/// The MTU of the path to other nodes: the underlay's, less VXLAN's
/// overhead in VXLAN mode.
#[inline(always)]
pub(crate) fn path_mtu(cfg: &DataplaneConfig) -> u32 {
    if cfg.mode == MODE_VXLAN {
        cfg.underlay_mtu - VXLAN_OVERHEAD
    } else {
        cfg.underlay_mtu
    }
}

/// Whether a packet fits `mtu` once it leaves. GSO super-packets fit: the
/// kernel cuts them into segments sized for the route.
#[inline(always)]
pub(crate) fn fits(ctx: &TcContext, mtu: u32) -> bool {
    packet::gso_size(ctx) != 0 || packet::len(ctx) - ETH_LEN as u32 <= mtu
}

/// The router's checks for the IPv4 packet `ip` at `ETH_LEN`, leaving on a
/// path with `mtu` (`None`: delivered on this node); on success its TTL is
/// one lower.
#[inline(always)]
pub(crate) fn hop(ctx: &TcContext, ip: &Ipv4, mtu: Option<u32>) -> Result<(), Refusal> {
    if ip.ttl() <= 1 {
        return Err(Refusal::TimeExceeded);
    }
    if let Some(mtu) = mtu {
        if !fits(ctx, mtu) {
            return Err(if ip.dont_fragment() { Refusal::TooBig { mtu } } else { Refusal::MustFragment });
        }
    }
    headers::decrement_ttl(ctx, ETH_LEN, ip).map_err(|()| Refusal::Unwritable)
}

/// What becomes of a refused packet: an ICMP error to its source, or the
/// host stack to fragment it.
#[inline(always)]
pub(crate) fn answer(ctx: &TcContext, cfg: &DataplaneConfig, ip: &Ipv4, refusal: Refusal) -> Verdict {
    let (error, stat) = match refusal {
        Refusal::TimeExceeded => (IcmpError::TIME_EXCEEDED, Stat::ReplyTimeExceeded),
        Refusal::TooBig { mtu } => (IcmpError::frag_needed(mtu), Stat::ReplyFragNeeded),
        Refusal::MustFragment => return Verdict::Pass(Stat::PassToFragment),
        Refusal::Unwritable => return Verdict::Drop(Stat::DropMalformed),
    };
    match icmp::build(ctx, cfg, ip, error) {
        Ok(()) => send_from_node(ctx, cfg, ip.src(), stat),
        Err(reason) => Verdict::Drop(reason),
    }
}

/// The receiving end of a tunnel for an inner packet `inner` whose TTL
/// expires here: the error goes back inside the tunnel to the node that
/// sent it (`outer`'s source), built before decapsulation. `None` if the
/// TTL does not expire.
#[inline(always)]
pub(crate) fn expired_in_tunnel(ctx: &TcContext, cfg: &DataplaneConfig, outer: &Ipv4, inner: &Ipv4) -> Option<Verdict> {
    if inner.ttl() > 1 {
        return None;
    }
    Some(match icmp::build_in_tunnel(ctx, cfg, outer, inner, IcmpError::TIME_EXCEEDED) {
        Ok(()) => remote::by_route(ctx, cfg, Stat::ReplyTimeExceeded),
        Err(reason) => Verdict::Drop(reason),
    })
}

/// Sends a packet this node made (an ICMP error) to `dst`: a local pod
/// directly, a remote pod through the tunnel or native route, anything
/// else by the host's route out of the underlay.
#[inline(always)]
fn send_from_node(ctx: &TcContext, cfg: &DataplaneConfig, dst: u32, stat: Stat) -> Verdict {
    if let Some(endpoint) = maps::endpoint(dst) {
        return deliver::to_local_pod(ctx, &endpoint, stat);
    }
    match maps::node_subnet(dst) {
        Some(subnet) if subnet.flags & SUBNET_LOCAL == 0 && cfg.mode != MODE_LOCAL_ONLY => {
            remote::to_node(ctx, cfg, &subnet, stat)
        }
        _ => remote::by_route(ctx, cfg, stat),
    }
}
