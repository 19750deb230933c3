//! A Kubernetes `Node` as the watcher receives it (JSON into k8s-openapi's
//! `Node`), read by `node_spec` and taken into the node store beside a
//! peer, as the Kubernetes source does on every event.

#![no_main]

use k8s_openapi::api::core::v1::Node;
use knet_agent::{
    config::parse_pod_cidr,
    sources::kubernetes::{node_spec, own_node_spec, NodeStore, PUBLIC_IP},
};
use libfuzzer_sys::fuzz_target;

fn peer() -> Node {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "peer"},
        "spec": {"podCIDR": "10.244.9.0/24", "podCIDRs": ["10.244.9.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.77.99"}]}
    }))
    .expect("a Node")
}

fuzz_target!(|data: &[u8]| {
    let Ok(node) = serde_json::from_slice::<Node>(data) else { return };
    let spec = node_spec(&node);
    let name = node.metadata.name.clone();
    let store_of = |me: &str| {
        let mut store = NodeStore::new(me);
        store.apply(&peer());
        store.apply(&node);
        store
    };
    let store = store_of("peer");
    let _ = store.desired();
    if let Some(name) = &name {
        let own = store_of(name);
        if let Ok(set) = own.desired() {
            assert_eq!(set.get(name), own_node_spec(&node).ok().as_ref(), "this node is read as its own");
        }
    }
    // Written back, the Node reads the same.
    let text = serde_json::to_vec(&node).expect("a Node serializes");
    let again: Node = serde_json::from_slice(&text).expect("a written Node reads back");
    assert_eq!(node_spec(&again), spec);
    let Ok(spec) = spec else { return };
    assert_eq!(spec.name, name.clone().unwrap_or_default());
    assert_eq!(parse_pod_cidr(&spec.pod_cidr.to_string()).expect("a taken pod CIDR is valid"), spec.pod_cidr);
    let k8s = node.spec.as_ref().expect("a pod CIDR comes from the spec");
    let listed = k8s.pod_cidrs.iter().flatten().chain(&k8s.pod_cidr).any(|c| c.parse() == Ok(spec.pod_cidr));
    assert!(listed, "pod CIDR {} is not the Node's", spec.pod_cidr);
    if spec.vtep_mac.is_some() {
        // A node with flannel's annotations is reached at its public-ip.
        let public_ip = node.metadata.annotations.as_ref().and_then(|a| a.get(PUBLIC_IP)).expect("a public-ip");
        assert_eq!(public_ip.parse(), Ok(spec.underlay_ip));
    } else {
        let addresses =
            node.status.as_ref().and_then(|s| s.addresses.as_ref()).expect("an address comes from the status");
        assert!(addresses.iter().any(|a| a.type_ == "InternalIP" && a.address.parse() == Ok(spec.underlay_ip)));
    }
    // A peer the store takes is in the set exactly as read.
    if spec.name != "peer" {
        if let Ok(set) = store.desired() {
            assert_eq!(set.get(&spec.name), Some(&spec));
        }
    }
});
