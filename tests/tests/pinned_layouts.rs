//! An agent started on maps pinned by another build (made here with
//! Debian's bpftool, as an older agent would have left them): counters of
//! another layout are replaced and counting restarts; a map the data path
//! needs is never replaced: the agent refuses to start, names the map and
//! what to do, and leaves it as it is. Needs root; run with
//! `cargo xtask test`.

use std::path::Path;

use aya::maps::MapData;
use knet_agent::config::Mode;
use knet_common::{map_names, Counter, Endpoint, STAT_SLOTS};
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
