//! Maps pinned by an earlier agent are adopted (their entries are the
//! running data path), but only if their layout is the one this build's
//! programs use: the kernel would hand a program a map of another size
//! without complaint, and lookups past its end fail silently.

use std::path::Path;

use anyhow::{bail, Context, Result};
use aya::maps::MapData;
use knet_common::{
    drop_event::{DropEventCounts, DROP_EVENT_RING_BYTES},
    endpoint::MAX_ENDPOINTS,
    map_names,
    node::{DataplaneConfig, NodeInfo, NodeSubnet, MAX_NODES},
    peer::{PeerCounters, MAX_PEERS},
    Counter, Endpoint, STAT_SLOTS,
};

/// Sizes that define a map's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// What to do with a pinned map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopt {
    Keep,
    /// Counters only: unpin it so a new one is made (the counts restart).
    Replace,
    /// State the data path needs: refuse to start rather than lose it.
    Refuse,
}

const fn size<T>() -> u32 {
    core::mem::size_of::<T>() as u32
}

/// Every pinned map and the layout this build expects.
pub const EXPECTED: [(&str, Layout); 8] = [
    (map_names::ENDPOINTS, Layout { key_size: 4, value_size: size::<Endpoint>(), max_entries: MAX_ENDPOINTS }),
    // LPM trie keys: a 4-byte prefix length, then the address.
    (map_names::NODE_SUBNETS, Layout { key_size: 8, value_size: size::<NodeSubnet>(), max_entries: MAX_NODES }),
    (map_names::NODES, Layout { key_size: 4, value_size: size::<NodeInfo>(), max_entries: MAX_NODES }),
    (map_names::CONFIG, Layout { key_size: 4, value_size: size::<DataplaneConfig>(), max_entries: 1 }),
    (map_names::STATS, Layout { key_size: 4, value_size: size::<Counter>(), max_entries: STAT_SLOTS }),
    (map_names::PEER_STATS, Layout { key_size: 4, value_size: size::<PeerCounters>(), max_entries: MAX_PEERS }),
    // A ring buffer has neither key nor value; its size is its bytes.
    (map_names::DROP_EVENTS, Layout { key_size: 0, value_size: 0, max_entries: DROP_EVENT_RING_BYTES }),
    (
        map_names::DROP_EVENT_STATS,
        Layout { key_size: 4, value_size: size::<DropEventCounts>(), max_entries: STAT_SLOTS },
    ),
];

/// Maps whose loss only restarts what an operator sees: counters and
/// events, never forwarding state.
const REPLACEABLE: [&str; 4] =
    [map_names::STATS, map_names::PEER_STATS, map_names::DROP_EVENTS, map_names::DROP_EVENT_STATS];

pub fn decide(name: &str, found: Layout, want: Layout) -> Adopt {
    if found == want {
        Adopt::Keep
    } else if REPLACEABLE.contains(&name) {
        Adopt::Replace
    } else {
        Adopt::Refuse
    }
}

/// Checks the maps pinned in `pin_dir` before the object is loaded.
pub fn check(pin_dir: &Path) -> Result<()> {
    for (name, want) in EXPECTED {
        let pin = pin_dir.join(name);
        if !pin.exists() {
            continue;
        }
        let info = MapData::from_pin(&pin)
            .and_then(|m| m.info())
            .with_context(|| format!("cannot read the pinned map {}", pin.display()))?;
        let found =
            Layout { key_size: info.key_size(), value_size: info.value_size(), max_entries: info.max_entries() };
        match decide(name, found, want) {
            Adopt::Keep => {}
            Adopt::Replace => {
                std::fs::remove_file(&pin).with_context(|| format!("cannot unpin {}", pin.display()))?;
                tracing::warn!(map = name, ?found, ?want, "the pinned map has another layout: its counts or events restart");
            }
            Adopt::Refuse => bail!(
                "the pinned map {} has another layout ({found:?}) than this build's ({want:?}): this upgrade cannot adopt the running data path; remove {} (pods lose connectivity until re-added) or run a matching build",
                pin.display(),
                pin_dir.display()
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_counters_are_replaced_and_only_on_a_mismatch() {
        let (_, stats) = EXPECTED[4];
        assert_eq!(decide(map_names::STATS, stats, stats), Adopt::Keep);
        let old_stats = Layout { max_entries: 32, ..stats };
        assert_eq!(decide(map_names::STATS, old_stats, stats), Adopt::Replace);
        let (_, endpoints) = EXPECTED[0];
        assert_eq!(decide(map_names::ENDPOINTS, endpoints, endpoints), Adopt::Keep);
        let smaller = Layout { max_entries: 1024, ..endpoints };
        assert_eq!(decide(map_names::ENDPOINTS, smaller, endpoints), Adopt::Refuse);
        let (_, peers) = EXPECTED[5];
        assert_eq!(decide(map_names::PEER_STATS, Layout { value_size: 16, ..peers }, peers), Adopt::Replace);
        let (_, ring) = EXPECTED[6];
        let smaller_ring = Layout { max_entries: 4096, ..ring };
        assert_eq!(decide(map_names::DROP_EVENTS, smaller_ring, ring), Adopt::Replace, "events restart");
        let (_, event_stats) = EXPECTED[7];
        assert_eq!(decide(map_names::DROP_EVENT_STATS, event_stats, event_stats), Adopt::Keep);
    }
}
