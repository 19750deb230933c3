//! Delivery to a pod on this node: the frame is readdressed as if the pod's
//! gateway (its host-side veth) had sent it, then moved straight into the
//! pod's namespace with `bpf_redirect_peer`, skipping the host stack.

use aya_ebpf::programs::TcContext;
use knet_common::{Endpoint, Stat};

use crate::{parse, verdict};

/// Delivers to `endpoint`, counted under `stat`.
#[inline(always)]
pub(crate) fn to_local_pod(ctx: &TcContext, endpoint: &Endpoint, stat: Stat) -> i32 {
    if parse::set_macs(ctx, &endpoint.pod_mac, &endpoint.host_mac).is_err() {
        // Callers parsed an Ethernet header already; this cannot be hit,
        // but if it were, the stack is the safe place for the packet.
        return verdict::pass(ctx, Stat::PassUnparsed);
    }
    parse::count(ctx, stat);
    parse::redirect_peer(endpoint.host_ifindex)
}
