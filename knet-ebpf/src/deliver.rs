//! Delivery to a pod on this node: the frame is readdressed as if the pod's
//! gateway (its host-side veth) had sent it, then moved straight into the
//! pod's namespace with `bpf_redirect_peer`, skipping the host stack.

use aya_ebpf::programs::TcContext;
use knet_common::{Endpoint, Stat};
use network_types::eth::{EthHdr, EtherType};

use crate::{
    raw::{helpers, packet},
    verdict::Verdict,
};

/// Delivers the IPv4 packet to `endpoint`, counted under `stat`.
#[inline(always)]
pub(crate) fn to_local_pod(ctx: &TcContext, endpoint: &Endpoint, stat: Stat) -> Verdict {
    let eth = EthHdr { dst_addr: endpoint.pod_mac, src_addr: endpoint.host_mac, ether_type: EtherType::Ipv4 as u16 };
    if packet::store(ctx, 0, eth).is_err() {
        // Callers read an Ethernet header already, so this is not reached.
        return Verdict::Drop(Stat::DropMalformed);
    }
    packet::note_redirect(ctx, endpoint.host_ifindex, 0);
    Verdict::Redirect { stat, ret: helpers::redirect_peer(endpoint.host_ifindex) }
}
