//! Every map the programs use, each wrapped once. Names and layouts come
//! from `knet-common`; the node and endpoint maps, the counters and the
//! drop events are pinned by the agent (`knet-agent/src/pinned_maps.rs`
//! names them) so that they outlive an agent restart. They are BTF maps
//! (`.maps`): the kernel then knows their key and value types, and
//! `bpftool map dump` prints entries as structs.

use crate::icmp::TunnelledError;
use aya_ebpf::{
    btf_maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray, PerCpuHashMap, RingBuf},
    macros::btf_map,
};
use knet_common::{
    drop_event::{DropEvent, DropEventCounts, DROP_EVENT_LIMIT, DROP_EVENT_RING_BYTES},
    endpoint::MAX_ENDPOINTS,
    icmp::ICMP_LIMIT,
    node::{DataplaneConfig, NodeInfo, NodeSubnet, LPM_FLAGS, MAX_NODES, MODE_LOCAL_ONLY},
    peer::{PeerCounters, MAX_PEERS, PEER_STATS_FLAGS},
    rate::RateLimit,
    Counter, Endpoint, Stat, STAT_SLOTS,
};

/// Local pod IPv4 address (wire order, see `knet_common::ipv4_key`) -> how
/// to deliver to it.
#[btf_map]
static ENDPOINTS: HashMap<u32, Endpoint, { MAX_ENDPOINTS as usize }> = HashMap::new();

/// Pod subnet of every node -> the node's underlay address.
#[btf_map]
static NODE_SUBNETS: LpmTrie<u32, NodeSubnet, { MAX_NODES as usize }, { LPM_FLAGS as usize }> = LpmTrie::new();

/// Underlay address of every known node: the tunnel sources accepted.
#[btf_map]
static NODES: HashMap<u32, NodeInfo, { MAX_NODES as usize }> = HashMap::new();

/// This node's data path settings, slot 0.
#[btf_map]
static CONFIG: Array<DataplaneConfig, 1> = Array::new();

/// Per-CPU packet and byte counters, indexed by `knet_common::Stat`.
#[btf_map]
static STATS: PerCpuArray<Counter, { STAT_SLOTS as usize }> = PerCpuArray::new();

/// Per-CPU tunnel counters per peer node (underlay address, wire order);
/// the agent removes a peer's entry when the peer leaves. Not
/// preallocated (`PEER_STATS_FLAGS`): entries come and go with peers.
#[btf_map]
static PEER_STATS: PerCpuHashMap<u32, PeerCounters, { MAX_PEERS as usize }, { PEER_STATS_FLAGS as usize }> =
    PerCpuHashMap::new();

/// Per-CPU state of the ICMP error rate limit (see `RateLimit`).
#[btf_map]
static ICMP_RATE: PerCpuArray<u64, 1> = PerCpuArray::new();

/// One `DropEvent` per dropped packet the rate limit lets through; pinned
/// so that `knet-agent monitor` reads it with or without a running agent.
#[btf_map]
static DROP_EVENTS: RingBuf<DropEvent, { DROP_EVENT_RING_BYTES as usize }> = RingBuf::new();

/// Per drop reason and CPU: what became of each drop's event.
#[btf_map(name = "DROP_EVT_STATS")]
static DROP_EVENT_STATS: PerCpuArray<DropEventCounts, { STAT_SLOTS as usize }> = PerCpuArray::new();

/// Per-CPU state of the drop event rate limit.
#[btf_map]
static DROP_EVENT_RATE: PerCpuArray<u64, 1> = PerCpuArray::new();

/// Per-CPU room to build a tunnelled ICMP error in (too big for the stack
/// beside `from_netdev`'s frame).
#[btf_map]
static ICMP_SCRATCH: PerCpuArray<TunnelledError, 1> = PerCpuArray::new();

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
    NODE_SUBNETS.get(&Key::new(32, ip)).copied()
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
    take_token(&ICMP_RATE, ICMP_LIMIT, now)
}

/// Takes one drop event from this CPU's rate limit at `now` (ns).
#[inline(always)]
pub(crate) fn take_drop_event_token(now: u64) -> bool {
    take_token(&DROP_EVENT_RATE, DROP_EVENT_LIMIT, now)
}

#[inline(always)]
fn take_token(state: &PerCpuArray<u64, 1>, limit: RateLimit, now: u64) -> bool {
    let Some(tat) = state.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU slot from a successful lookup, as in `count`.
    unsafe {
        match limit.allowed(*tat, now) {
            Some(next) => {
                *tat = next;
                true
            }
            None => false,
        }
    }
}

/// This CPU's event counts for the drop reason in `slot`.
#[inline(always)]
pub(crate) fn drop_event_counts(slot: u32) -> Option<&'static mut DropEventCounts> {
    // SAFETY: a per-CPU slot from a successful lookup, as in `count`; the
    // reference does not outlive the program's run.
    DROP_EVENT_STATS.get_ptr_mut(slot).map(|p| unsafe { &mut *p })
}

/// Puts `event` into the ring; `false` if the ring is full.
#[inline(always)]
pub(crate) fn send_drop_event(event: &DropEvent) -> bool {
    DROP_EVENTS.output(event, 0).is_ok()
}
