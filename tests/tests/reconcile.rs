//! Node changes are transactions: a set that cannot be applied whole is
//! not applied at all. Needs root; run with `cargo xtask test`.

use std::time::Duration;

use knet_agent::{api::DatapathView, config::Mode};
use knet_tests::{
    cluster::{self, Cluster},
    traffic, wait,
};

fn generation(c: &Cluster) -> u64 {
    c.agents[0].nodes().unwrap().source.generation
}

/// Node 0's maps, agent routes and masquerade table (without counters).
fn programmed(c: &Cluster) -> (DatapathView, String, String) {
    let dp = c.agents[0].datapath().unwrap();
    let routes = c.nodes[0].ns.ip(&["route", "show", "proto", "75"]).unwrap();
    let nft = c.nodes[0].ns.exec("nft", &["-s", "list", "table", "ip", "knet"]).unwrap();
    (dp, routes, nft)
}

#[test]
fn a_node_without_a_route_in_the_middle_of_good_ones_changes_nothing() {
    let c = Cluster::new(2, 1, Mode::Vxlan).unwrap();
    let good: String = (0..2).map(cluster::node_line).collect();
    let before = programmed(&c);
    let g = generation(&c);
    // node-2 and node-4 are fine; node 0 has no route to node-3's address.
    let extra =
        "node-2 192.168.77.12 10.244.2.0/24\nnode-3 203.0.113.9 10.244.3.0/24\nnode-4 192.168.77.14 10.244.4.0/24\n";
    c.write_nodes_file(&format!("{good}{extra}")).unwrap();
    let v = wait::until("the agent to refuse the set", Duration::from_secs(10), || {
        let v = c.agents[0].nodes().ok()?;
        v.source.error.as_ref().is_some_and(|e| e.contains("node node-3 (203.0.113.9)")).then_some(v)
    })
    .unwrap_or_else(|e| panic!("{e:#}: {:?}", c.agents[0].nodes()));
    let error = v.source.error.as_deref().unwrap_or_default();
    assert!(error.contains("no route to 203.0.113.9"), "{:?}", v.source);
    assert_eq!(v.source.generation, g);
    assert_eq!(v.nodes.len(), 2, "{v:?}");
    let after = programmed(&c);
    assert_eq!(after.0, before.0, "maps changed");
    assert_eq!(after.1, before.1, "routes changed");
    assert_eq!(after.2, before.2, "the masquerade table changed");
    traffic::ping(&c.pods[0][0].ns, c.pods[1][0].ip, 1).unwrap();

    // The same set without the bad node goes in whole.
    c.write_nodes_file(&format!("{good}node-2 192.168.77.12 10.244.2.0/24\nnode-4 192.168.77.14 10.244.4.0/24\n"))
        .unwrap();
    wait::until("the good set to be applied", Duration::from_secs(10), || {
        let v = c.agents[0].nodes().ok()?;
        (v.source.generation > g && v.source.error.is_none()).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}: {:?}", c.agents[0].nodes()));
    let (dp, routes, nft) = programmed(&c);
    for net in ["10.244.2.0/24", "10.244.4.0/24"] {
        assert!(dp.node_subnets.iter().any(|s| s.starts_with(net)) && routes.contains(net), "{net}");
        // The masquerade table's subnet set holds network addresses.
        assert!(nft.contains(net.trim_end_matches("/24")), "{net} not in\n{nft}");
    }
    assert!(!nft.contains("10.244.3.0") && !dp.node_subnets.iter().any(|s| s.starts_with("10.244.3.0/24")));
}
