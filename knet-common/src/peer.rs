//! `PEER_STATS`: per-CPU packet and byte counters of the tunnel, per peer
//! node, keyed by the peer's underlay IPv4 address (wire order, see
//! `ipv4_key`). `tx` counts what the programs encapsulated toward the peer,
//! `rx` what they accepted from it and decapsulated; bytes are the outer
//! frame's (VXLAN headers included), as the underlay carries them.

use crate::{node::MAX_NODES, Counter};

/// One entry per peer: only known nodes are counted (the receiving side
/// checks `NODES` first, the sending side takes the peer from
/// `NODE_SUBNETS`), so the map never needs more room than there are nodes.
pub const MAX_PEERS: u32 = MAX_NODES;

/// `BPF_F_NO_PREALLOC`: memory only for peers that carried traffic, not
/// `MAX_PEERS` entries on every CPU up front.
pub const PEER_STATS_FLAGS: u32 = 1;

/// Value of `PEER_STATS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCounters {
    pub tx: Counter,
    pub rx: Counter,
}

const _: () = assert!(core::mem::size_of::<PeerCounters>() == 32);

#[cfg(feature = "user")]
// SAFETY: `PeerCounters` is `repr(C)`, `Copy`, two `Counter`s (four
// `u64`s), no padding (size asserted above).
unsafe impl aya::Pod for PeerCounters {}
