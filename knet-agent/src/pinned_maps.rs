//! Maps pinned by an earlier agent are adopted (their entries are the
//! running data path), but only if their layout is the one this build's
//! programs use: the kernel would hand a program a map of another size
//! without complaint, and lookups past its end fail silently.

use std::{net::Ipv4Addr, path::Path};

use anyhow::{bail, Context, Result};
use aya::maps::{lpm_trie::LpmTrie, Map, MapData};
use ipnet::Ipv4Net;
use knet_common::{
    drop_event::{DropEventCounts, DROP_EVENT_RING_BYTES},
    endpoint::MAX_ENDPOINTS,
    map_names,
    node::{DataplaneConfig, NodeInfo, NodeSubnet, NodeSubnetV1, MAX_NODES, SUBNET_LOCAL},
    peer::{PeerCounters, MAX_PEERS},
    Counter, Endpoint, STAT_SLOTS,
};

use crate::{dataplane::SubnetEntry, mac::MacAddr};

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
    /// `NODE_SUBNETS` of the build before the VTEP MAC: its entries are
    /// read, it is unpinned, and the entries go into the new map before
    /// any new program runs (the reconcile then rewrites what changed).
    Carry,
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

/// `NODE_SUBNETS` as builds before the VTEP MAC pinned it.
pub const NODE_SUBNETS_V1: Layout = Layout { key_size: 8, value_size: size::<NodeSubnetV1>(), max_entries: MAX_NODES };

pub fn decide(name: &str, found: Layout, want: Layout) -> Adopt {
    if found == want {
        Adopt::Keep
    } else if name == map_names::NODE_SUBNETS && found == NODE_SUBNETS_V1 {
        Adopt::Carry
    } else if REPLACEABLE.contains(&name) {
        Adopt::Replace
    } else {
        Adopt::Refuse
    }
}

/// Where an old `NODE_SUBNETS` is kept (pinned under this name in the pin
/// directory) until its entries are in the new map: an agent stopped in
/// between finds them there on its next start.
/// (bpffs refuses a `.` in a pin name.)
pub const NODE_SUBNETS_PREVIOUS: &str = "NODE_SUBNETS_PREVIOUS";

/// Entries read from a map of an earlier layout, for the new map.
#[derive(Debug, Default)]
pub struct Carried {
    pub subnets: Vec<(Ipv4Net, SubnetEntry)>,
    /// The old map's pin, to remove once `subnets` are written.
    pub previous_pin: Option<std::path::PathBuf>,
}

impl Carried {
    /// Call once the entries are in the new map.
    pub fn done(self) -> Result<()> {
        if let Some(pin) = self.previous_pin {
            std::fs::remove_file(&pin).with_context(|| format!("cannot unpin {}", pin.display()))?;
        }
        Ok(())
    }
}

/// An entry of the old `NODE_SUBNETS` as this build writes it: the old
/// build knew no peer's MAC, so a remote subnet gets the MAC a knet peer
/// has (the reconcile rewrites it where the node source says otherwise).
pub fn carry_subnet(v: NodeSubnetV1) -> SubnetEntry {
    let node_ip = Ipv4Addr::from(v.node_ip.to_ne_bytes());
    let local = v.flags & SUBNET_LOCAL != 0;
    let vtep_mac = if local { MacAddr([0; 6]) } else { MacAddr::vtep_for(node_ip) };
    // The old layout had no neighbour flag: the route lookup per packet it
    // did goes on until the reconciler rewrites the entry.
    SubnetEntry { node_ip, local, neighbour: false, vtep_mac }
}

fn read_old_subnets(pin: &Path) -> Result<Vec<(Ipv4Net, SubnetEntry)>> {
    let map = Map::from_map_data(MapData::from_pin(pin)?)?;
    let trie: LpmTrie<MapData, u32, NodeSubnetV1> = LpmTrie::try_from(map)?;
    let mut out = Vec::new();
    for entry in trie.iter() {
        let (key, value) = entry?;
        let net = Ipv4Net::new(Ipv4Addr::from(key.data().to_ne_bytes()), key.prefix_len() as u8)?;
        out.push((net, carry_subnet(value)));
    }
    Ok(out)
}

/// Checks the maps pinned in `pin_dir` before the object is loaded; what
/// it returns goes into the new maps before any program is attached.
pub fn check(pin_dir: &Path) -> Result<Carried> {
    let mut carried = Carried::default();
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
            Adopt::Carry => {
                carried.subnets = read_old_subnets(&pin)
                    .with_context(|| format!("cannot read the entries of the pinned map {}", pin.display()))?;
                let previous = pin_dir.join(NODE_SUBNETS_PREVIOUS);
                std::fs::rename(&pin, &previous)
                    .with_context(|| format!("cannot move {} to {}", pin.display(), previous.display()))?;
                carried.previous_pin = Some(previous);
                tracing::warn!(
                    map = name,
                    ?found,
                    ?want,
                    entries = carried.subnets.len(),
                    "the pinned map has an earlier layout: its entries are carried into a new one"
                );
            }
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
    let previous = pin_dir.join(NODE_SUBNETS_PREVIOUS);
    if carried.previous_pin.is_none() && previous.exists() {
        // An earlier start moved the old map aside and stopped before its
        // entries were in the new one (which is then empty, or holds some
        // of them): carry them again.
        carried.subnets = read_old_subnets(&previous)
            .with_context(|| format!("cannot read the entries of the pinned map {}", previous.display()))?;
        tracing::warn!(entries = carried.subnets.len(), pin = %previous.display(), "carrying the entries of an earlier layout's NODE_SUBNETS left by an interrupted start");
        carried.previous_pin = Some(previous);
    }
    Ok(carried)
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

    #[test]
    fn node_subnets_of_the_build_before_the_vtep_mac_are_carried_and_no_other() {
        let (_, subnets) = EXPECTED[1];
        assert_eq!(subnets.value_size, 16);
        assert_eq!(decide(map_names::NODE_SUBNETS, NODE_SUBNETS_V1, subnets), Adopt::Carry);
        assert_eq!(decide(map_names::NODE_SUBNETS, subnets, subnets), Adopt::Keep);
        let other = Layout { max_entries: 1024, ..subnets };
        assert_eq!(decide(map_names::NODE_SUBNETS, other, subnets), Adopt::Refuse);
        // The old layout of another map means nothing.
        let (_, nodes) = EXPECTED[2];
        assert_eq!(decide(map_names::NODES, Layout { value_size: 8, ..nodes }, nodes), Adopt::Refuse);
    }

    #[test]
    fn a_carried_subnet_keeps_its_node_and_gets_a_knet_peers_mac() {
        let ip = |s: &str| knet_common::ipv4_key(s.parse::<Ipv4Addr>().unwrap().octets());
        let remote = carry_subnet(NodeSubnetV1 { node_ip: ip("192.168.77.11"), flags: 0 });
        assert_eq!(remote.node_ip, Ipv4Addr::new(192, 168, 77, 11));
        assert!(!remote.local);
        assert_eq!(remote.vtep_mac.to_string(), "02:6b:c0:a8:4d:0b");
        let own = carry_subnet(NodeSubnetV1 { node_ip: ip("192.168.77.10"), flags: SUBNET_LOCAL });
        assert!(own.local);
        assert_eq!(own.vtep_mac, MacAddr([0; 6]));
    }
}
