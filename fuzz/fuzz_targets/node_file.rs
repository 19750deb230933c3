//! The static node file, parsed for the node `node-0` by the function the
//! file source runs on every new version of the file.

#![no_main]

use std::collections::HashSet;

use knet_agent::{
    config::{parse_pod_cidr, validate_node_name},
    sources::file::parse,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let set = match parse(text, "node-0") {
        Ok(set) => set,
        Err(e) => {
            assert!(e.line <= text.lines().count(), "error names line {} of {}", e.line, text.lines().count());
            return;
        }
    };
    assert!(set.get("node-0").is_some());
    // One node per line that is not blank or a comment: none dropped as a
    // duplicate.
    let lines = text.lines().filter(|l| !l.split('#').next().unwrap_or("").trim().is_empty()).count();
    assert_eq!(set.len(), lines);
    let nodes: Vec<_> = set.iter().collect();
    let mut underlay = HashSet::new();
    for n in &nodes {
        validate_node_name(&n.name).expect("a taken node name is valid");
        assert_eq!(parse_pod_cidr(&n.pod_cidr.to_string()).expect("a taken pod CIDR is valid"), n.pod_cidr);
        assert!(underlay.insert(n.underlay_ip), "underlay IP {} twice", n.underlay_ip);
        assert!(n.vtep_mac.is_none_or(|m| m.is_valid_unicast()), "{}'s VTEP MAC {:?}", n.name, n.vtep_mac);
        for m in &nodes {
            assert!(!m.pod_cidr.contains(&n.underlay_ip), "{}'s underlay IP in {}'s pod CIDR", n.name, m.name);
            if m.name != n.name {
                assert!(!n.pod_cidr.contains(&m.pod_cidr.network()), "{} and {} overlap", n.name, m.name);
            }
        }
    }
    // format ∘ parse: the set written back as a node file is the same set.
    let back: String = nodes
        .iter()
        .map(|n| {
            let mac = n.vtep_mac.map(|m| format!(" {m}")).unwrap_or_default();
            format!("{} {} {}{mac}\n", n.name, n.underlay_ip, n.pod_cidr)
        })
        .collect();
    assert_eq!(parse(&back, "node-0").expect("a written set parses"), set);
});
