//! Every map the programs use, each wrapped once. Names and layouts come
//! from `knet-common`; the node and endpoint maps and the counters are
//! pinned by name so that they outlive an agent restart.

use crate::icmp::TunnelledError;
use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray, PerCpuHashMap},
};
use knet_common::{
    endpoint::MAX_ENDPOINTS,
    icmp::icmp_allowed,
    node::{DataplaneConfig, NodeInfo, NodeSubnet, LPM_FLAGS, MAX_NODES, MODE_LOCAL_ONLY},
    peer::{PeerCounters, MAX_PEERS, PEER_STATS_FLAGS},
    Counter, Endpoint, Stat, STAT_SLOTS,
};

/// Local pod IPv4 address (wire order, see `knet_common::ipv4_key`) -> how
/// to deliver to it.
#[map(name = "ENDPOINTS")]
static ENDPOINTS: HashMap<u32, Endpoint> = HashMap::pinned(MAX_ENDPOINTS, 0);

/// Pod subnet of every node -> the node's underlay address.
#[map(name = "NODE_SUBNETS")]
static NODE_SUBNETS: LpmTrie<u32, NodeSubnet> = LpmTrie::pinned(MAX_NODES, LPM_FLAGS);

/// Underlay address of every known node: the tunnel sources accepted.
#[map(name = "NODES")]
static NODES: HashMap<u32, NodeInfo> = HashMap::pinned(MAX_NODES, 0);

/// This node's data path settings, slot 0.
#[map(name = "CONFIG")]
static CONFIG: Array<DataplaneConfig> = Array::pinned(1, 0);

/// Per-CPU packet and byte counters, indexed by `knet_common::Stat`.
#[map(name = "STATS")]
static STATS: PerCpuArray<Counter> = PerCpuArray::pinned(STAT_SLOTS, 0);

/// Per-CPU tunnel counters per peer node (underlay address, wire order);
/// the agent removes a peer's entry when the peer leaves.
#[map(name = "PEER_STATS")]
static PEER_STATS: PerCpuHashMap<u32, PeerCounters> = PerCpuHashMap::pinned(MAX_PEERS, PEER_STATS_FLAGS);

/// Per-CPU state of the ICMP error rate limit (see `icmp_allowed`).
#[map(name = "ICMP_RATE")]
static ICMP_RATE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room to build a tunnelled ICMP error in (too big for the stack
/// beside `from_netdev`'s frame).
#[map(name = "ICMP_SCRATCH")]
static ICMP_SCRATCH: PerCpuArray<TunnelledError> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's tunnelled-error scratch space.
#[inline(always)]
pub(crate) fn tunnelled_error() -> Option<&'static mut TunnelledError> {
    // SAFETY: a per-CPU slot; a program runs to its end on one CPU without
    // being preempted, and this is the only reference taken in a run.
    ICMP_SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// A copy of the local endpoint with this address, if there is one.
#[inline(always)]
pub(crate) fn endpoint(ip: u32) -> Option<Endpoint> {
    // SAFETY: the pointer comes from a successful lookup and is read once,
    // by value; a concurrent update can at worst give a stale copy.
    ENDPOINTS.get_ptr(ip).map(|p| unsafe { p.read() })
}

/// The node subnet containing `ip`, longest prefix first.
#[inline(always)]
pub(crate) fn node_subnet(ip: u32) -> Option<NodeSubnet> {
    NODE_SUBNETS.get(Key::new(32, ip)).copied()
}

/// Whether `ip` is the underlay address of a known node.
#[inline(always)]
pub(crate) fn is_known_node(ip: u32) -> bool {
    NODES.get_ptr(ip).is_some()
}

/// This node's settings; all zero (local-only) until the agent writes them.
#[inline(always)]
pub(crate) fn config() -> DataplaneConfig {
    CONFIG.get(0).copied().unwrap_or(DataplaneConfig {
        mode: MODE_LOCAL_ONLY,
        vni: 0,
        underlay_ifindex: 0,
        underlay_mtu: 0,
        node_ip: 0,
    })
}

/// Counts one packet of `bytes` under `stat`.
#[inline(always)]
pub(crate) fn count(stat: Stat, bytes: u32) {
    if let Some(counter) = STATS.get_ptr_mut(stat.slot()) {
        // SAFETY: a per-CPU slot from a successful lookup; only this CPU
        // writes it, and programs are not preempted mid-run.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += u64::from(bytes);
        }
    }
}

/// Which way a tunnel packet went, for `count_peer`.
#[derive(Clone, Copy)]
pub(crate) enum PeerDirection {
    Tx,
    Rx,
}

/// Counts one tunnel packet of `bytes` to or from the peer at `peer`.
#[inline(always)]
pub(crate) fn count_peer(peer: u32, direction: PeerDirection, bytes: u32) {
    let add = |c: &mut PeerCounters| {
        let counter = match direction {
            PeerDirection::Tx => &mut c.tx,
            PeerDirection::Rx => &mut c.rx,
        };
        counter.packets += 1;
        counter.bytes += u64::from(bytes);
    };
    let add_existing = || match PEER_STATS.get_ptr_mut(peer) {
        Some(counters) => {
            // SAFETY: a per-CPU value from a successful lookup; only this
            // CPU writes it, and programs are not preempted mid-run. The map
            // is not preallocated, so a removed entry is freed only after an
            // RCU grace period that this run holds off: the memory is not
            // reused under us.
            add(unsafe { &mut *counters });
            true
        }
        None => false,
    };
    if add_existing() {
        return;
    }
    // The peer's first packet on any CPU: the kernel sets this CPU's value
    // and zeroes the others'. BPF_NOEXIST, so an entry another CPU created
    // meanwhile is counted into, never reset.
    let mut first = PeerCounters::default();
    add(&mut first);
    if PEER_STATS.insert(peer, first, u64::from(aya_ebpf::bindings::BPF_NOEXIST)).is_err() {
        add_existing();
    }
}

/// Takes one ICMP error from this CPU's rate limit at `now` (ns); `false`
/// if the limit refuses it.
#[inline(always)]
pub(crate) fn take_icmp_token(now: u64) -> bool {
    let Some(tat) = ICMP_RATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU slot from a successful lookup, as in `count`.
    unsafe {
        match icmp_allowed(*tat, now) {
            Some(next) => {
                *tat = next;
                true
            }
            None => false,
        }
    }
}
