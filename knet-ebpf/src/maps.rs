//! Every map the programs use. Names and layouts come from `knet-common`;
//! all maps are pinned by name so that they outlive an agent restart.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray},
};
use knet_common::{
    endpoint::MAX_ENDPOINTS,
    node::{DataplaneConfig, NodeInfo, NodeSubnet, LPM_FLAGS, MAX_NODES},
    Counter, Endpoint, STAT_SLOTS,
};

/// Local pod IPv4 address (wire order, see `knet_common::ipv4_key`) -> how
/// to deliver to it.
#[map(name = "ENDPOINTS")]
pub(crate) static ENDPOINTS: HashMap<u32, Endpoint> = HashMap::pinned(MAX_ENDPOINTS, 0);

/// Pod subnet of every node -> the node's underlay address.
#[map(name = "NODE_SUBNETS")]
pub(crate) static NODE_SUBNETS: LpmTrie<u32, NodeSubnet> = LpmTrie::pinned(MAX_NODES, LPM_FLAGS);

/// Underlay address of every known node: the tunnel sources accepted.
#[map(name = "NODES")]
pub(crate) static NODES: HashMap<u32, NodeInfo> = HashMap::pinned(MAX_NODES, 0);

/// This node's data path settings, slot 0.
#[map(name = "CONFIG")]
pub(crate) static CONFIG: Array<DataplaneConfig> = Array::pinned(1, 0);

/// Per-CPU packet and byte counters, indexed by `knet_common::Stat`.
#[map(name = "STATS")]
pub(crate) static STATS: PerCpuArray<Counter> = PerCpuArray::pinned(STAT_SLOTS, 0);
