//! The agent's metrics listener: `/metrics` as traffic flows, checked
//! against `/v1/stats` and by Debian's `promtool`; `/healthz` and
//! `/readyz` as the node source comes and goes. Needs root; run with
//! `cargo xtask test`.

use std::{collections::BTreeMap, io::Write, net::SocketAddr, process::Stdio, time::Duration};

use knet_agent::config::{Mode, DEFAULT_METRICS_ADDRESS};
use knet_common::Stat;
use knet_tests::{
    cluster::{self, Cluster},
    cni::PluginNode,
    traffic, wait, Agent, AgentOptions, Node,
};

const WAIT: Duration = Duration::from_secs(30);

fn address() -> SocketAddr {
    DEFAULT_METRICS_ADDRESS.parse().unwrap()
}

/// The agent's `/metrics` text (200 required).
fn scrape(agent: &Agent) -> String {
    let (status, body) = agent.get_tcp(address(), "/metrics").unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// Every sample of a text exposition: the series as written
/// (`name{labels}`) and its value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {l:?}"));
            (series.to_string(), value.parse().unwrap_or_else(|_| panic!("not a value: {l:?}")))
        })
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

/// The series a `Stat`'s packets are under, written out here rather than
/// taken from the agent, so a wrong mapping there fails.
fn packets_series(stat: Stat) -> String {
    match stat.name().strip_prefix("drop_") {
        Some(reason) => format!("knet_drop_packets_total{{reason=\"{reason}\"}}"),
        None => format!("knet_packets_total{{verdict=\"{}\"}}", stat.name()),
    }
}

fn bytes_series(stat: Stat) -> String {
    packets_series(stat).replace("packets_total", "bytes_total")
}

fn tunnel(what: &str, direction: &str, node: usize) -> String {
    format!(
        "knet_tunnel_{what}_total{{direction=\"{direction}\",node=\"{}\",peer=\"{}\"}}",
        cluster::node_name(node),
        cluster::node_address(node)
    )
}

/// `promtool check metrics` on `text`: it must be installed (Debian's
/// `prometheus` package; `cargo xtask setup` installs it), and must find
/// nothing to say.
fn promtool_check(text: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed: cargo xtask setup installs it");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\non:\n{text}");
}

/// The counters as `knet-agent inspect stats --json` reads them from the
/// pins, in `Stat::ALL`'s order.
fn inspect_stats(agent: &Agent) -> Vec<knet_agent::api::StatEntry> {
    let out = agent.cli(&["inspect", "stats", "--json"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "inspect stats: {text} {}", String::from_utf8_lossy(&out.stderr));
    let report: knet_agent::operator::InspectReport =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("inspect stats --json: {e}: {text}"));
    report.pinned.stats
}

#[test]
fn counters_move_with_cross_node_traffic_match_inspect_and_the_stats_api_and_pass_promtool() {
    let c = Cluster::new(2, 1, Mode::Vxlan).unwrap();
    let (a, b) = (&c.pods[0][0], &c.pods[1][0]);
    let before: Vec<_> = c.agents.iter().map(|agent| samples(&scrape(agent))).collect();

    const PINGS: u32 = 20;
    traffic::ping(&a.ns, b.ip, PINGS).unwrap();
    traffic::tcp_transfer(&a.ns, &b.ns, b.ip, 1 << 20).unwrap();

    let after: Vec<_> = c.agents.iter().map(|agent| samples(&scrape(agent))).collect();
    let rose =
        |node: usize, series: &str| value(&after[node], series) - before[node].get(series).copied().unwrap_or(0.0);
    let at_least = f64::from(PINGS);
    // Node 0 sends the requests into the tunnel and takes the replies out.
    for (node, peer) in [(0, 1), (1, 0)] {
        for series in [tunnel("packets", "tx", peer), tunnel("packets", "rx", peer)] {
            assert!(rose(node, &series) >= at_least, "node {node}: {series} rose by {}", rose(node, &series));
        }
        // Bytes as on the underlay: at least the outer headers of each packet.
        assert!(rose(node, &tunnel("bytes", "tx", peer)) >= at_least * 64.0);
        for stat in [Stat::RedirectTunnel, Stat::DeliverFromNode] {
            let series = packets_series(stat);
            assert!(rose(node, &series) >= at_least, "node {node}: {series} rose by {}", rose(node, &series));
        }
    }

    // The counters are the kernel's, read at the scrape: between what
    // `knet-agent inspect stats` reads from the pins just before and what
    // /v1/stats (the agent's own handles) says just after, on a quiet
    // cluster.
    for agent in &c.agents {
        let first = inspect_stats(agent);
        let text = scrape(agent);
        let last = agent.stats().unwrap();
        let m = samples(&text);
        assert_eq!(first.len(), last.len(), "inspect and the API list other counters");
        for (lo, (stat, hi)) in first.iter().zip(&last) {
            assert_eq!(lo.name, stat.name());
            let (packets, bytes) = (value(&m, &packets_series(*stat)), value(&m, &bytes_series(*stat)));
            assert!(
                lo.packets as f64 <= packets && packets <= hi.packets as f64,
                "{}: inspect {} packets, /metrics {packets}, /v1/stats {}",
                stat.name(),
                lo.packets,
                hi.packets
            );
            assert!(lo.bytes as f64 <= bytes && bytes <= hi.bytes as f64, "{}: bytes", stat.name());
        }
        promtool_check(&text);
    }

    // What the agent itself knows, for node 0.
    let m = &after[0];
    assert_eq!(value(m, "knet_build_info{version=\"0.1.0\"}"), 1.0);
    assert_eq!(value(m, "knet_endpoints"), 1.0);
    assert_eq!(value(m, "knet_nodes"), 2.0);
    assert_eq!(value(m, "knet_bpf_map_entries{map=\"endpoints\"}"), 1.0);
    assert_eq!(value(m, "knet_bpf_map_entries{map=\"node_subnets\"}"), 2.0);
    assert_eq!(value(m, "knet_bpf_map_entries{map=\"nodes\"}"), 1.0);
    assert_eq!(value(m, "knet_bpf_map_entries{map=\"peer_stats\"}"), 1.0);
    assert_eq!(value(m, "knet_bpf_map_max_entries{map=\"endpoints\"}"), 16384.0);
    assert_eq!(value(m, "knet_node_source_in_sync{source=\"file\"}"), 1.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let synced = value(m, "knet_node_source_last_sync_timestamp_seconds{source=\"file\"}");
    assert!(synced > now - 600.0 && synced <= now + 1.0, "last sync {synced}, now {now}");
    assert!(value(m, "knet_reconcile_duration_seconds_count{result=\"success\"}") >= 1.0);
    // The harness adds its pods through the API without the plugin's header.
    assert!(!m.keys().any(|k| k.starts_with("knet_cni_requests_total")), "{m:#?}");

    // A peer that leaves takes its counters with it.
    let before_file = c.agents[0].nodes().unwrap().source.generation;
    c.write_nodes_file(&cluster::node_line(0)).unwrap();
    c.wait_for_source(0, before_file).unwrap();
    let m = samples(&scrape(&c.agents[0]));
    assert!(!m.keys().any(|k| k.starts_with("knet_tunnel_")), "tunnel series of a departed peer: {m:#?}");
    assert_eq!(value(&m, "knet_bpf_map_entries{map=\"peer_stats\"}"), 0.0);
}

#[test]
fn cni_requests_are_counted_by_command_and_status() {
    let n = PluginNode::start(cluster::node_address(0), &cluster::pod_cidr(0)).unwrap();
    let pod = n.net.add_pod("pod").unwrap();
    n.net.check(&pod.attachment.container_id, &pod.pod.ns, &pod.attachment.result).unwrap().expect_ok("CHECK");
    let m = samples(&scrape(&n.agent));
    // ADD: GET /v1/node, then POST /v1/endpoints; CHECK: /v1/node and
    // /v1/endpoints.
    assert_eq!(value(&m, "knet_cni_requests_total{command=\"add\",status=\"2xx\"}"), 2.0);
    assert_eq!(value(&m, "knet_cni_requests_total{command=\"check\",status=\"2xx\"}"), 2.0);
    // A second ADD of the same container is refused before it asks the
    // agent for anything but the veth check; a DEL of an endpoint the agent
    // no longer has is a 404 the plugin accepts.
    n.agent.delete_pod(&pod.pod).unwrap();
    n.net.del(&pod.attachment.container_id, Some(&pod.pod.ns), Some(&pod.attachment.result)).unwrap().expect_ok("DEL");
    let m = samples(&scrape(&n.agent));
    assert_eq!(value(&m, "knet_cni_requests_total{command=\"del\",status=\"2xx\"}"), 1.0, "{m:#?}");
    promtool_check(&scrape(&n.agent));
}

/// `/readyz` on the metrics listener (its status and body).
fn readyz(agent: &Agent) -> (u16, String) {
    agent.get_tcp(address(), "/readyz").unwrap()
}

fn wait_readyz(agent: &Agent, what: &str, want: u16, needle: &str) {
    wait::until(what, WAIT, || {
        let (status, body) = readyz(agent);
        (status == want && body.contains(needle)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}: {:?}, status {:?}\n{}", readyz(agent), agent.status(), agent.log_text()));
}

#[test]
fn ready_only_after_the_first_reconcile_and_while_the_kubernetes_source_is_in_sync() {
    let c = Cluster::kubernetes(1, 0, Mode::Vxlan).unwrap();
    let api = c.kube.as_ref().unwrap();
    let ready = &c.agents[0];
    wait_readyz(ready, "node 0 to be ready", 200, "ok");
    // Its one write to the API done, so no event of its own is pending.
    wait::until("node 0 to clear NetworkUnavailable", WAIT, || {
        api.patches().iter().any(|p| p.node == cluster::node_name(0)).then_some(())
    })
    .unwrap();

    // The API server is gone: the agent that was ready no longer is.
    api.set_reachable(false);
    wait_readyz(ready, "node 0 to lose readiness", 503, "");
    assert_eq!(ready.get_tcp(address(), "/healthz").unwrap().0, 200, "still live");
    let m = samples(&scrape(ready));
    assert_eq!(value(&m, "knet_node_source_in_sync{source=\"kubernetes\"}"), 0.0);

    // A new agent that has never reconciled: live, not ready.
    let late = Node::on_fabric("node-late", cluster::node_address(5), &c.fabric, "n5").unwrap();
    let extra = format!("node_source = \"kubernetes\"\nkubeconfig = {:?}\n", api.kubeconfig().display().to_string());
    let fresh =
        Agent::start_with(&late.ns, &AgentOptions { node_name: "node-5".into(), pod_cidr: None }, &extra).unwrap();
    assert_eq!(fresh.get_tcp(address(), "/healthz").unwrap(), (200, "ok".to_string()));
    wait_readyz(&fresh, "the new agent to say why it is not ready", 503, "failed");
    assert_eq!(fresh.nodes().unwrap().source.generation, 0);
    assert_eq!(readyz(&fresh).0, 503);

    // The server comes back with nothing changed: node 0 is ready again
    // (nothing but the watch itself says the source is back in step).
    api.set_reachable(true);
    wait_readyz(ready, "node 0's readiness to come back", 200, "ok");
    ready.ready().expect("the API socket's answer too");
    let m = samples(&scrape(ready));
    assert_eq!(value(&m, "knet_node_source_in_sync{source=\"kubernetes\"}"), 1.0);
    // The new agent has its first full set now, but its node is not in it.
    wait_readyz(&fresh, "the new agent to miss its node", 503, "no Node object");
    api.set_node("node-5", cluster::node_address(5), Some("10.244.5.0/24"));
    wait_readyz(&fresh, "the new agent to be ready", 200, "ok");
    fresh.ready().unwrap();
}
