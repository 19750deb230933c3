//! Every map the programs use. Names and layouts come from `knet-common`;
//! all maps are pinned by name so that they outlive an agent restart.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use knet_common::{endpoint::MAX_ENDPOINTS, Counter, Endpoint, STAT_SLOTS};

/// Local pod IPv4 address (wire order, see `knet_common::ipv4_key`) -> how
/// to deliver to it.
#[map(name = "ENDPOINTS")]
pub(crate) static ENDPOINTS: HashMap<u32, Endpoint> = HashMap::pinned(MAX_ENDPOINTS, 0);

/// Per-CPU packet and byte counters, indexed by `knet_common::Stat`.
#[map(name = "STATS")]
pub(crate) static STATS: PerCpuArray<Counter> = PerCpuArray::pinned(STAT_SLOTS, 0);
