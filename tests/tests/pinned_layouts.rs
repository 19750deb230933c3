//! An agent started on maps pinned by another build (made here with
//! Debian's bpftool, as an older agent would have left them): counters of
//! another layout are replaced and counting restarts; `NODE_SUBNETS` of the
//! build before the VTEP MAC has its entries carried into the new layout;
//! any other map the data path needs is never replaced: the agent refuses
//! to start, names the map and what to do, and leaves it as it is. Needs root; run with
//! `cargo xtask test`.

use std::path::Path;

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Map, MapData,
};
use knet_agent::{config::Mode, pinned_maps::NODE_SUBNETS_PREVIOUS};
use knet_common::{
    map_names,
    node::{NodeSubnet, NodeSubnetV1, MAX_NODES},
    Counter, Endpoint, STAT_SLOTS,
};
use knet_tests::{cluster::Cluster, cmd, traffic};

/// (key size, value size, max entries) of a pinned map.
fn layout(pin: &Path) -> (u32, u32, u32) {
    let info = MapData::from_pin(pin).and_then(|m| m.info()).unwrap();
    (info.key_size(), info.value_size(), info.max_entries())
}

/// Replaces the map pinned at `pin` by a new, empty one of another layout.
fn pin_other_map(pin: &Path, kind: &str, value_size: usize, entries: u32, name: &str) {
    std::fs::remove_file(pin).unwrap();
    let path = pin.display().to_string();
    let (value, entries) = (value_size.to_string(), entries.to_string());
    cmd::run(
        "bpftool",
        &["map", "create", &path, "type", kind, "key", "4", "value", &value, "entries", &entries, "name", name],
    )
    .unwrap();
}

#[test]
fn counters_of_another_layout_are_replaced_and_the_pods_stay() {
    let mut c = Cluster::new(1, 1, Mode::Vxlan).unwrap();
    let pin = c.agents[0].pin_dir().join(map_names::STATS);
    let slots = STAT_SLOTS;
    let counter = std::mem::size_of::<Counter>();
    assert_eq!(layout(&pin), (4, counter as u32, slots));
    assert!(c.agents[0].stop().unwrap().success());
    // An older build's counters: half the slots.
    pin_other_map(&pin, "percpu_array", counter, slots / 2, map_names::STATS);
    c.agents[0].restart().unwrap();

    let log = c.agents[0].log_text();
    let warned = log.lines().find(|l| l.contains("the pinned map has another layout: its counts or events restart"));
    assert!(warned.is_some_and(|l| l.contains("STATS")), "no warning about STATS:\n{log}");
    assert_eq!(layout(&pin), (4, counter as u32, slots), "the old counters were kept");
    assert_eq!(c.agents[0].endpoint_ips().unwrap(), vec![c.pods[0][0].ip.to_string()], "the pod was not adopted");
    traffic::ping(&c.pods[0][0].ns, c.nodes[0].address, 2).unwrap();
    // The new map is the one the programs count in.
    let counted = c.agents[0].stats().unwrap().iter().map(|(_, n)| n.packets).sum::<u64>();
    assert!(counted >= 2, "no packet counted in the new map");
}

#[test]
fn an_endpoint_map_of_another_layout_stops_the_agent_and_stays() {
    let mut c = Cluster::new(1, 1, Mode::Vxlan).unwrap();
    let pin = c.agents[0].pin_dir().join(map_names::ENDPOINTS);
    assert!(c.agents[0].stop().unwrap().success());
    let value = std::mem::size_of::<Endpoint>();
    pin_other_map(&pin, "hash", value, 1024, map_names::ENDPOINTS);
    let before = layout(&pin);

    let err = match c.agents[0].restart() {
        Ok(()) => panic!("the agent started on an endpoint map of another layout"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(&format!("the pinned map {} has another layout", pin.display())), "{err}");
    assert!(err.contains("remove") && err.contains("or run a matching build"), "{err}");
    assert_eq!(layout(&pin), before, "the refused agent changed the pinned map");
    // Nothing else was unpinned either.
    for name in [map_names::NODE_SUBNETS, map_names::NODES, map_names::CONFIG, map_names::STATS] {
        assert!(c.agents[0].pin_dir().join(name).exists(), "{name} was unpinned");
    }
    assert!(c.agents[0].pid().is_none(), "the refused agent runs");
}

/// Entries of `NODE_SUBNETS` as the maps hold them.
type SubnetEntries = Vec<(Key<u32>, NodeSubnet)>;

/// The entries of the `NODE_SUBNETS` pinned at `pin`.
fn subnet_entries(pin: &Path) -> SubnetEntries {
    let map = Map::from_map_data(MapData::from_pin(pin).unwrap()).unwrap();
    let trie: LpmTrie<MapData, u32, NodeSubnet> = LpmTrie::try_from(map).unwrap();
    trie.iter().map(Result::unwrap).collect()
}

/// Pins at `pin` a `NODE_SUBNETS` as the build before the VTEP MAC made
/// it (8-byte values), holding `entries`.
fn pin_old_node_subnets(pin: &Path, entries: &[(Key<u32>, NodeSubnet)]) {
    let (path, max) = (pin.display().to_string(), MAX_NODES.to_string());
    let name = map_names::NODE_SUBNETS;
    cmd::run(
        "bpftool",
        &[
            "map", "create", &path, "type", "lpm_trie", "key", "8", "value", "8", "entries", &max, "name", name,
            "flags", "1",
        ],
    )
    .unwrap();
    let map = Map::from_map_data(MapData::from_pin(pin).unwrap()).unwrap();
    let mut old: LpmTrie<MapData, u32, NodeSubnetV1> = LpmTrie::try_from(map).unwrap();
    for (key, v) in entries {
        old.insert(key, NodeSubnetV1 { node_ip: v.node_ip, flags: v.flags }, 0).unwrap();
    }
}

/// A Kubernetes cluster of two nodes whose node 0 is stopped with its
/// pinned `NODE_SUBNETS` entries returned, and the node subnets its agent
/// showed.
fn stopped_node_0() -> (Cluster, SubnetEntries, Vec<String>) {
    let mut c = Cluster::kubernetes(2, 1, Mode::Vxlan).unwrap();
    traffic::ping(&c.pods[0][0].ns, c.pods[1][0].ip, 1).unwrap();
    let pin = c.agents[0].pin_dir().join(map_names::NODE_SUBNETS);
    assert_eq!(layout(&pin), (8, std::mem::size_of::<NodeSubnet>() as u32, MAX_NODES));
    let shown = c.agents[0].datapath().unwrap().node_subnets;
    assert!(c.agents[0].stop().unwrap().success());
    let entries = subnet_entries(&pin);
    assert_eq!(entries.len(), 2);
    (c, entries, shown)
}

/// Restarts node 0's agent with the API unreachable, so that it cannot
/// rebuild its map from its source: what it holds is what it carried.
/// Then checks that it holds `before` and forwards, with the API and
/// without.
fn restart_without_the_api_and_check(c: &mut Cluster, before: &[String]) {
    let api = c.kube.as_ref().unwrap();
    api.set_reachable(false);
    c.agents[0].restart().unwrap();
    let pin = c.agents[0].pin_dir().join(map_names::NODE_SUBNETS);
    assert_eq!(layout(&pin), (8, std::mem::size_of::<NodeSubnet>() as u32, MAX_NODES), "the old map was kept");
    assert_eq!(c.agents[0].datapath().unwrap().node_subnets, before, "the entries were not carried over");
    assert!(!c.agents[0].pin_dir().join(NODE_SUBNETS_PREVIOUS).exists(), "the old map is still pinned");
    traffic::ping(&c.pods[0][0].ns, c.pods[1][0].ip, 2).unwrap();
    api.set_reachable(true);
    c.agents[0].wait_ready(std::time::Duration::from_secs(30)).unwrap();
    assert_eq!(c.agents[0].datapath().unwrap().node_subnets, before);
    traffic::ping(&c.pods[1][0].ns, c.pods[0][0].ip, 2).unwrap();
}

#[test]
fn node_subnets_of_the_build_before_the_vtep_mac_are_carried_into_the_new_layout() {
    let (mut c, entries, before) = stopped_node_0();
    let pin = c.agents[0].pin_dir().join(map_names::NODE_SUBNETS);
    std::fs::remove_file(&pin).unwrap();
    pin_old_node_subnets(&pin, &entries);
    restart_without_the_api_and_check(&mut c, &before);
    let log = c.agents[0].log_text();
    assert!(log.contains("the pinned map has an earlier layout: its entries are carried into a new one"), "{log}");
}

#[test]
fn a_carry_over_interrupted_after_the_old_map_was_moved_aside_is_finished_by_the_next_start() {
    let (mut c, entries, before) = stopped_node_0();
    // As an agent stopped right after moving the old map aside leaves it:
    // no NODE_SUBNETS (or an empty one), the old map beside it.
    let pin_dir = c.agents[0].pin_dir().to_path_buf();
    std::fs::remove_file(pin_dir.join(map_names::NODE_SUBNETS)).unwrap();
    pin_old_node_subnets(&pin_dir.join(NODE_SUBNETS_PREVIOUS), &entries);
    restart_without_the_api_and_check(&mut c, &before);
    assert!(c.agents[0].log_text().contains("left by an interrupted start"));
}
