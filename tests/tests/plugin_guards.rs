//! A CNI plugin that a broken runtime cannot talk into harm: the node's
//! own namespace as a pod's, a node out of endpoint room, a damaged cache
//! on DEL. Needs root; run with `cargo xtask test`.

use std::net::Ipv4Addr;

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use knet_tests::{
    cni::{links, PluginNode},
    netns::unique_name,
    Agent, Netns,
};
use serde_json::json;

const POD_CIDR: &str = "10.244.0.0/24";

type Fixture = PluginNode;

fn fixture() -> Fixture {
    PluginNode::start(Ipv4Addr::new(192, 168, 77, 10), POD_CIDR).unwrap()
}

#[test]
fn add_into_the_nodes_own_namespace_fails_with_code_4_and_changes_nothing() {
    let t = fixture();
    let before = t.state();
    let conf = t.net.conf();
    // The plugin runs in the node's namespace: as CNI_NETNS that is its own.
    let mut own = t.net.env("ADD", &unique_name("ctr"), Some(&t.node.ns));
    let out = t.net.run(&own, &conf).unwrap().expect_error(4, "ADD into the node's own namespace");
    assert!(out.stdout.contains("own network namespace"), "{}", out.stdout);
    assert_eq!(t.state(), before, "the refused ADD changed the node");
    // The same namespace by another path: compared by identity, not name.
    own.netns = Some("/proc/self/ns/net".into());
    let out = t.net.run(&own, &conf).unwrap().expect_error(4, "ADD into /proc/self/ns/net");
    assert!(out.stdout.contains("own network namespace"), "{}", out.stdout);
    assert_eq!(t.state(), before);
    // A pod's namespace still works.
    let pod = t.net.add_pod("pod").unwrap();
    knet_tests::traffic::ping(&pod.pod.ns, t.node.address, 1).unwrap();
}

/// Fills the agent's endpoint map with entries no pod has, through its
/// pin, and empties it again on drop.
struct FullMap {
    map: BpfHashMap<MapData, u32, knet_common::Endpoint>,
    keys: Vec<u32>,
}

impl FullMap {
    fn fill(agent: &Agent) -> Self {
        let data = MapData::from_pin(agent.pin_dir().join(knet_common::map_names::ENDPOINTS)).unwrap();
        let mut map: BpfHashMap<MapData, u32, knet_common::Endpoint> =
            BpfHashMap::try_from(Map::HashMap(data)).unwrap();
        let filler =
            knet_common::Endpoint { host_ifindex: 0, pod_mac: [2, 0, 0, 0, 0, 1], host_mac: [2, 0, 0, 0, 0, 2] };
        let mut keys = Vec::new();
        // Keys in 0.0.0.0/8: no pod's address, never looked up.
        for n in 1..=knet_common::endpoint::MAX_ENDPOINTS + 1 {
            let key = knet_common::ipv4_key([0, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
            match map.insert(key, filler, 0) {
                Ok(()) => keys.push(key),
                Err(_) => break,
            }
        }
        FullMap { map, keys }
    }
}

impl Drop for FullMap {
    fn drop(&mut self) {
        for key in &self.keys {
            let _ = self.map.remove(key);
        }
    }
}

#[test]
fn a_full_endpoint_map_is_a_clear_error_and_nothing_is_half_applied() {
    let t = fixture();
    let full = FullMap::fill(&t.agent);
    assert_eq!(full.keys.len(), knet_common::endpoint::MAX_ENDPOINTS as usize, "the map took more than its capacity");
    let before = t.state();
    let pod = Netns::new("pod").unwrap();
    let out = t.net.add(&unique_name("ctr"), &pod).unwrap().expect_error(105, "ADD on a node with a full map");
    assert!(out.stdout.contains("no room for another pod"), "{}", out.stdout);
    assert_eq!(t.state(), before, "the failed ADD left something behind");
    assert_eq!(links(&pod).unwrap(), vec!["lo"], "the pod kept an interface");
    // Room again: the same ADD works.
    drop(full);
    let added = t.net.add_pod("pod-ok").unwrap();
    knet_tests::traffic::ping(&added.pod.ns, t.node.address, 1).unwrap();
}

#[test]
fn del_with_a_damaged_prev_result_releases_everything() {
    let t = fixture();
    let empty = t.state();
    let pod = Netns::new("pod").unwrap();
    let id = unique_name("ctr");
    let result = t.net.add(&id, &pod).unwrap().expect_ok("ADD").json;
    assert_ne!(t.state(), empty);
    // A runtime whose cache was damaged hands DEL a prevResult that is no
    // CNI result at all; DEL does not need one.
    let damaged = json!({"cniVersion": "1.0.0", "ips": "garbage", "interfaces": 7});
    assert_ne!(damaged, result);
    t.net.del(&id, Some(&pod), Some(&damaged)).unwrap().expect_ok("DEL with a damaged prevResult");
    assert_eq!(t.state(), empty, "DEL left the pod's veth, lease or endpoint");
    assert_eq!(links(&pod).unwrap(), vec!["lo"]);
}
