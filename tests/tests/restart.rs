//! An agent restart drops no packet: links and maps are pinned, and a new
//! agent adopts them. Needs root; run with `cargo xtask test`.

use knet_agent::config::Mode;
use knet_common::Stat;
use knet_tests::{
    cluster::{pod_cidr, Cluster},
    traffic,
};

#[test]
fn restarting_an_agent_drops_no_cross_node_packet() {
    let mut c = Cluster::new(2, 1, Mode::Vxlan).unwrap();
    let (p0, p1) = (&c.pods[0][0], &c.pods[1][0]);
    traffic::ping(&p0.ns, p1.ip, 1).unwrap();
    let before = c.agents[0].datapath().unwrap();

    // 200 pings 20 ms apart across the restart of node 0's agent.
    let ping = traffic::BackgroundPing::start(&p0.ns, p1.ip, 200).unwrap();
    c.agents[0].restart().unwrap();
    let (sent, received) = ping.finish().unwrap();
    assert_eq!((sent, received), (200, 200), "packets were lost across the restart");

    // The new agent holds the same state, with one program per hook.
    assert_eq!(c.agents[0].datapath().unwrap(), before);
    assert_eq!(c.agents[0].tcx_ingress("eth0").unwrap(), vec!["from_netdev"]);
    assert_eq!(c.agents[0].tcx_ingress(&c.pods[0][0].host_veth).unwrap(), vec!["from_pod"]);
    traffic::ping(&c.pods[1][0].ns, c.pods[0][0].ip, 2).unwrap();
}

#[test]
fn an_agent_restarted_without_a_node_file_forgets_the_cluster() {
    let mut c = Cluster::new(2, 1, Mode::Vxlan).unwrap();
    traffic::ping(&c.pods[0][0].ns, c.pods[1][0].ip, 1).unwrap();
    let config = c.agents[0].config_path().to_path_buf();
    let text = std::fs::read_to_string(&config).unwrap();
    let local_only: String = text
        .lines()
        .filter(|l| !l.starts_with("nodes_file") && !l.starts_with("mode"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, local_only).unwrap();
    c.agents[0].restart().unwrap();

    // The pinned node maps from the earlier run are gone: pods are no longer
    // sent toward nodes that nobody maintains, and no tunnel source is trusted.
    // What stays is the node's own subnet (its unassigned addresses dropped)
    // and its unreachable route.
    let own = pod_cidr(0);
    let dp = c.agents[0].datapath().unwrap();
    assert_eq!(dp.node_subnets, vec![format!("{own} via 0.0.0.0 (local)")], "{dp:?}");
    assert!(dp.tunnel_sources.is_empty(), "{dp:?}");
    let routes = c.nodes[0].ns.ip(&["route", "show", "proto", "75"]).unwrap();
    assert_eq!(routes.trim(), format!("unreachable {own}"), "the agent's routes to other nodes stayed");
    let (tunneled, _) = c.agents[0].stat(Stat::RedirectTunnel).unwrap();
    assert!(!traffic::ping_once(&c.pods[0][0].ns, c.pods[1][0].ip));
    assert_eq!(c.agents[0].stat(Stat::RedirectTunnel).unwrap().0, tunneled);
    // Its own pods are still served.
    assert_eq!(c.agents[0].map_ips().unwrap(), vec![c.pods[0][0].ip.to_string()]);
}
