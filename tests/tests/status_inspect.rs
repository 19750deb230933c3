//! `knet-agent status` and `knet-agent inspect` as an operator runs them
//! on a node of a namespace cluster: correct with the agent running, still
//! correct (from the pins) with it stopped, and `inspect` names a map entry
//! that disagrees with the agent. Needs root; run with `cargo xtask test`.

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use knet_agent::{
    config::Mode,
    operator::{InspectReport, StatusReport},
};
use knet_common::Stat;
use knet_tests::{
    cluster::{node_address, node_name, pod_cidr, Cluster},
    traffic, Agent,
};

fn run(agent: &Agent, args: &[&str]) -> (i32, String) {
    let out = agent.cli(args).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().unwrap_or(-1);
    assert!(code == 0 || code == 1, "{args:?} exited {code}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    (code, stdout)
}

fn status(agent: &Agent) -> (i32, StatusReport) {
    let (code, out) = run(agent, &["status", "--json"]);
    (code, serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}: {out}")))
}

fn inspect(agent: &Agent, section: &str) -> (i32, InspectReport) {
    let (code, out) = run(agent, &["inspect", section, "--json"]);
    (code, serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect {section} --json: {e}: {out}")))
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn status_and_inspect_are_right_with_the_agent_running_and_stopped() {
    let mut c = Cluster::new(2, 2, Mode::Vxlan).unwrap();
    traffic::ping(&c.pods[0][0].ns, c.pods[1][0].ip, 3).unwrap();
    let pod_ips = sorted(c.pods[0].iter().map(|p| p.ip).collect());
    let veths = sorted(c.pods[0].iter().map(|p| p.host_veth.clone()).collect());
    let agent = &c.agents[0];

    // Running: the agent's own view.
    let (code, s) = status(agent);
    assert_eq!(code, 0);
    assert!(s.agent.reachable, "{:?}", s.agent);
    assert_eq!(s.node_name.as_deref(), Some(node_name(0).as_str()));
    assert_eq!(s.mode, Some(Mode::Vxlan));
    assert_eq!(s.pod_cidr.map(|p| p.to_string()), Some(pod_cidr(0)));
    assert_eq!(s.underlay.as_deref(), Some("eth0"));
    assert!(s.source.as_ref().is_some_and(|src| src.in_sync && src.error.is_none()), "{:?}", s.source);
    let peers: Vec<(String, String)> = s
        .peers
        .iter()
        .map(|p| (format!("{} {}", p.node.name, p.node.underlay_ip), p.node.pod_cidr.to_string()))
        .collect();
    assert_eq!(peers, vec![(format!("{} {}", node_name(1), node_address(1)), pod_cidr(1))]);
    // The tunnel's traffic with the peer: 3 pings out and 3 replies in.
    let traffic = s.peers[0].traffic.as_ref().expect("no traffic counted with node 1");
    assert!(traffic.tx_packets >= 3 && traffic.rx_packets >= 3, "{traffic:?}");
    assert_eq!(sorted(s.endpoints.iter().map(|e| e.ip).collect()), pod_ips);
    for veth in veths.iter().chain(std::iter::once(&"eth0".to_string())) {
        let point = s.attach_points.iter().find(|a| &a.ifname == veth).unwrap_or_else(|| panic!("no {veth}: {s:?}"));
        let want = if veth == "eth0" { "from_netdev" } else { "from_pod" };
        assert!(point.programs.iter().any(|p| p.name == want && p.id.id > 0), "{veth}: {:?}", point.programs);
    }
    let tunnelled = s.counters.iter().find(|c| c.name == "redirect_tunnel").map_or(0, |c| c.packets);
    assert!(tunnelled >= 3, "redirect_tunnel {tunnelled}");
    let text = run(agent, &["status"]).1;
    assert!(text.contains(&format!("node:       {}", node_name(0))) && text.contains("mode:       vxlan"), "{text}");

    // Running: the pins, and the agent agreeing with them.
    let (code, e) = inspect(agent, "endpoints");
    assert_eq!((code, e.disagreements.len()), (0, 0), "{:?}", e.disagreements);
    assert_eq!(sorted(e.pinned.endpoints.iter().map(|p| p.ip).collect()), pod_ips);
    assert_eq!(sorted(e.pinned.endpoints.iter().filter_map(|p| p.host_veth.clone()).collect()), veths);
    let (code, n) = inspect(agent, "nodes");
    assert_eq!((code, n.disagreements.len()), (0, 0), "{:?}", n.disagreements);
    let subnets: Vec<String> =
        n.pinned.subnets.iter().map(|s| format!("{} {} {}", s.subnet, s.node_ip, s.local)).collect();
    assert_eq!(
        subnets,
        vec![format!("{} {} true", pod_cidr(0), node_address(0)), format!("{} {} false", pod_cidr(1), node_address(1))]
    );
    assert_eq!(n.pinned.tunnel_sources, vec![node_address(1)]);
    let (code, l) = inspect(agent, "links");
    assert_eq!((code, l.disagreements.len()), (0, 0), "{:?}", l.disagreements);
    let from_pod: Vec<String> =
        l.pinned.links.iter().filter(|l| l.program == "from_pod").filter_map(|l| l.ifname.clone()).collect();
    assert_eq!(sorted(from_pod), veths);
    let (code, st) = inspect(agent, "stats");
    assert_eq!((code, st.disagreements.len()), (0, 0), "{:?}", st.disagreements);
    let pinned_tunnelled = st.pinned.stats.iter().find(|c| c.name == "redirect_tunnel").map_or(0, |c| c.packets);
    assert!(pinned_tunnelled >= tunnelled, "{pinned_tunnelled} < {tunnelled}");

    // A drop, as `inspect drops` explains it: an address of the node's own
    // pod subnet that no pod has.
    let nobody = std::net::Ipv4Addr::new(10, 244, 0, 250);
    assert!(!traffic::ping_once(&c.pods[0][0].ns, nobody));
    let (code, drops) = run(agent, &["inspect", "drops"]);
    assert_eq!(code, 0, "{drops}");
    let line = drops.lines().find(|l| l.contains("drop_no_endpoint")).unwrap_or_else(|| panic!("{drops}"));
    assert!(line.contains(Stat::DropNoEndpoint.explain()), "{line}");
    assert!(!drops.contains("redirect_tunnel"), "inspect drops shows more than drops: {drops}");

    // An entry taken out of the map behind the agent's back is named.
    let gone = c.pods[0][0].ip;
    let data = MapData::from_pin(agent.pin_dir().join(knet_common::map_names::ENDPOINTS)).unwrap();
    let mut map: BpfHashMap<MapData, u32, knet_common::Endpoint> = BpfHashMap::try_from(Map::HashMap(data)).unwrap();
    let key = knet_common::ipv4_key(gone.octets());
    let value = map.get(&key, 0).unwrap();
    map.remove(&key).unwrap();
    let (code, e) = inspect(agent, "endpoints");
    map.insert(key, value, 0).unwrap();
    assert_eq!(code, 1, "inspect exits 1 on a disagreement");
    assert_eq!(e.disagreements, vec![format!("endpoint {gone}: the agent has it, the map does not")]);

    // Stopped: the same facts, from the pins.
    c.agents[0].stop().unwrap();
    let agent = &c.agents[0];
    let (code, s) = status(agent);
    assert_eq!(code, 1, "status exits 1 when the agent does not answer");
    assert!(!s.agent.reachable && s.agent.error.is_some(), "{:?}", s.agent);
    assert_eq!(s.mode, Some(Mode::Vxlan));
    assert_eq!(s.pod_cidr.map(|p| p.to_string()), Some(pod_cidr(0)));
    assert_eq!(s.underlay.as_deref(), Some("eth0"));
    assert_eq!(sorted(s.endpoints.iter().map(|e| e.ip).collect()), pod_ips);
    assert_eq!(sorted(s.endpoints.iter().map(|e| e.host_veth.clone()).collect()), veths);
    let peers: Vec<String> = s.peers.iter().map(|p| format!("{} {}", p.node.underlay_ip, p.node.pod_cidr)).collect();
    assert_eq!(peers, vec![format!("{} {}", node_address(1), pod_cidr(1))]);
    assert!(s.peers[0].traffic.as_ref().is_some_and(|t| t.tx_packets >= traffic.tx_packets), "{:?}", s.peers);
    assert!(s.attach_points.iter().any(|a| a.ifname == veths[0] && a.programs.iter().any(|p| p.name == "from_pod")));
    assert!(s.counters.iter().any(|c| c.name == "redirect_tunnel" && c.packets >= tunnelled));
    assert!(run(agent, &["status"]).1.contains("NOT REACHABLE"));
    let (code, e) = inspect(agent, "endpoints");
    assert_eq!(code, 0);
    assert!(!e.agent.reachable);
    assert_eq!(sorted(e.pinned.endpoints.iter().map(|p| p.ip).collect()), pod_ips);
    // The data path forwards on without its agent, and inspect sees it count.
    traffic::ping(&c.pods[0][0].ns, c.pods[1][0].ip, 2).unwrap();
    let (_, st) = inspect(agent, "stats");
    let now = st.pinned.stats.iter().find(|c| c.name == "redirect_tunnel").map_or(0, |c| c.packets);
    assert!(now >= pinned_tunnelled + 2, "{now} after {pinned_tunnelled}");
}
