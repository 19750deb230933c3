//! The Kubernetes node source against an API server that speaks the real
//! wire format (`knet_tests::kube_api`: lists, watch streams, bookmarks,
//! 410 Gone, bearer tokens, status patches). Needs root; run with
//! `cargo xtask test`.

use std::{
    io::Read,
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::Duration,
};

use knet_agent::{api::DatapathView, config::Mode};
use knet_tests::{
    agent::CallError,
    cluster::{self, Cluster},
    kube_api::{self, KubeApi},
    traffic, wait, Agent, AgentOptions, Netns, Node,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn api(c: &Cluster) -> &KubeApi {
    c.kube.as_ref().expect("a kubernetes cluster")
}

fn datapath(agent: &Agent) -> DatapathView {
    agent.datapath().unwrap()
}

fn routes(node: &Node) -> String {
    node.ns.ip(&["route", "show", "proto", "75"]).unwrap()
}

/// Waits until node `i`'s maps and routes satisfy `check`.
fn until_programmed(c: &Cluster, i: usize, what: &str, check: impl Fn(&DatapathView, &str) -> bool) {
    wait::until(what, WAIT, || {
        let (dp, r) = (datapath(&c.agents[i]), routes(&c.nodes[i]));
        check(&dp, &r).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\nmaps: {:?}\nroutes: {}", datapath(&c.agents[i]), routes(&c.nodes[i])));
}

fn subnets(dp: &DatapathView) -> String {
    dp.node_subnets.join("\n")
}

fn tunnel_sources(dp: &DatapathView) -> Vec<String> {
    dp.tunnel_sources.iter().map(|ip| ip.to_string()).collect()
}

/// The agent's reason for not being ready (its 503), once it contains
/// `needle` (compared lower-case).
fn until_not_ready(agent: &Agent, needle: &str) {
    let needle = needle.to_lowercase();
    wait::until(&needle, WAIT, || match agent.ready() {
        Err(CallError::Refused { status, message }) if status == 503 && message.to_lowercase().contains(&needle) => {
            Some(())
        }
        _ => None,
    })
    .unwrap_or_else(|e| panic!("{e:#}: {:?}", agent.ready()));
}

#[test]
fn nodes_added_changed_and_deleted_in_the_api_reach_the_maps_and_routes() {
    let c = Cluster::kubernetes(2, 1, Mode::Vxlan).unwrap();
    // Configured with no pod CIDR, each agent took its own from its Node.
    let view = c.agents[1].node().unwrap();
    assert_eq!(view.pod_cidr.to_string(), cluster::pod_cidr(1), "{view:?}");
    traffic::ping(&c.pods[0][0].ns, c.pods[1][0].ip, 1).unwrap();
    let steady = traffic::BackgroundPing::start(&c.pods[0][0].ns, c.pods[1][0].ip, 150).unwrap();

    let (a, b) = (Ipv4Addr::new(192, 168, 77, 15), Ipv4Addr::new(192, 168, 77, 16));
    api(&c).set_node("node-5", a, Some("10.244.5.0/24"));
    until_programmed(&c, 0, "node-5 added", |dp, r| {
        subnets(dp).contains("10.244.5.0/24 via 192.168.77.15")
            && tunnel_sources(dp).contains(&"192.168.77.15".to_string())
            && r.contains("10.244.5.0/24 via 192.168.77.15")
    });

    // A new InternalIP: subnet, tunnel source and route follow it.
    api(&c).set_node("node-5", b, Some("10.244.5.0/24"));
    until_programmed(&c, 0, "node-5's new InternalIP", |dp, r| {
        subnets(dp).contains("10.244.5.0/24 via 192.168.77.16")
            && !tunnel_sources(dp).contains(&"192.168.77.15".to_string())
            && tunnel_sources(dp).contains(&"192.168.77.16".to_string())
            && r.contains("10.244.5.0/24 via 192.168.77.16")
    });

    // A new pod CIDR: the old subnet and its route go, the new ones come.
    api(&c).set_node("node-5", b, Some("10.244.6.0/24"));
    until_programmed(&c, 0, "node-5's new podCIDR", |dp, r| {
        !subnets(dp).contains("10.244.5.0/24")
            && !r.contains("10.244.5.0/24")
            && subnets(dp).contains("10.244.6.0/24 via 192.168.77.16")
            && r.contains("10.244.6.0/24 via 192.168.77.16")
    });

    api(&c).delete_node("node-5");
    until_programmed(&c, 0, "node-5 deleted", |dp, r| {
        !subnets(dp).contains("10.244.6.0/24")
            && !tunnel_sources(dp).contains(&"192.168.77.16".to_string())
            && !r.contains("10.244.6.0/24")
    });
    // Node 1 saw it all too, and the nodes that stayed never stopped talking.
    assert!(!subnets(&datapath(&c.agents[1])).contains("10.244.6.0/24"));
    let (sent, received) = steady.finish().unwrap();
    assert_eq!(sent, received, "pings between untouched nodes were lost");
    assert!(subnets(&datapath(&c.agents[0])).contains(&format!(
        "{} via {}",
        cluster::pod_cidr(1),
        cluster::node_address(1)
    )));
}

/// `ip monitor route` in a namespace, until dropped.
struct RouteMonitor {
    child: std::process::Child,
}

impl RouteMonitor {
    fn start(ns: &Netns) -> Self {
        let child = Command::new("ip")
            .args(["-n", ns.name(), "-o", "monitor", "route"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        RouteMonitor { child }
    }

    fn finish(mut self) -> String {
        let _ = self.child.kill();
        let mut out = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let _ = self.child.wait();
        out
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_410_gone_relists_without_withdrawing_a_route_that_still_exists() {
    let c = Cluster::kubernetes(3, 1, Mode::Vxlan).unwrap();
    // Enough nodes that the relist takes several pages (500 each), named so
    // that node-0 comes in the first and node-1 and node-2 in the last: a
    // source that published a relist before its end would drop them.
    let extra: Vec<_> = kube_api::bulk_nodes(1200)
        .into_iter()
        .enumerate()
        .map(|(i, (_, ip, cidr))| (format!("node-0-x{i:04}"), ip, cidr))
        .collect();
    for node in &c.nodes {
        node.ns.ip(&["route", "add", kube_api::BULK_UNDERLAY, "via", &cluster::OUTSIDE.to_string()]).unwrap();
    }
    api(&c).set_nodes(&extra);
    wait::until("the extra nodes to be programmed", WAIT, || (c.agents[0].status().ok()?.nodes == 1203).then_some(()))
        .unwrap();
    let monitor = RouteMonitor::start(&c.nodes[0].ns);
    let steady = traffic::BackgroundPing::start(&c.pods[0][0].ns, c.pods[1][0].ip, 150).unwrap();
    let (lists, _, _) = api(&c).counts();

    // The history is compacted under the open watch, and a node joins that
    // only the new list shows.
    api(&c).expire();
    api(&c).set_node("node-7", Ipv4Addr::new(192, 168, 77, 17), Some("10.244.7.0/24"));
    until_programmed(&c, 0, "the relisted node-7", |dp, r| {
        subnets(dp).contains("10.244.7.0/24") && r.contains("10.244.7.0/24")
    });
    assert!(api(&c).counts().0 > lists, "the agent did not list again after 410 Gone");
    wait::until("the source back in sync", WAIT, || {
        let v = c.agents[0].nodes().ok()?;
        (v.source.in_sync && v.source.error.is_none()).then_some(())
    })
    .unwrap();

    let (sent, received) = steady.finish().unwrap();
    let events = monitor.finish();
    assert_eq!(sent, received, "pings across nodes were lost during the relist");
    let deleted: Vec<&str> = events.lines().filter(|l| l.starts_with("Deleted")).collect();
    assert!(deleted.is_empty(), "routes were withdrawn during the relist: {deleted:?}");
    for i in 1..3 {
        assert!(routes(&c.nodes[0]).contains(&cluster::pod_cidr(i)));
    }
}

#[test]
fn this_node_missing_or_without_a_pod_cidr_is_a_clear_error_and_not_ready() {
    let c = Cluster::kubernetes(1, 0, Mode::Vxlan).unwrap();
    let late = Node::on_fabric("node-late", cluster::node_address(5), &c.fabric, "n5").unwrap();
    let dir = knet_tests::cni::TempDir::new("net.d").unwrap();
    let conflist = dir.0.join("10-knet.conflist");
    let extra = format!(
        "node_source = \"kubernetes\"\nkubeconfig = {:?}\ncni_conf_file = {:?}\n",
        api(&c).kubeconfig().display().to_string(),
        conflist.display().to_string()
    );
    let agent =
        Agent::start_with(&late.ns, &AgentOptions { node_name: "node-5".into(), pod_cidr: None }, &extra).unwrap();
    let not_ready = |needle: &str| until_not_ready(&agent, needle);
    not_ready("this node (node-5) has no Node object in the Kubernetes API");
    // Without its pod CIDR the agent serves no pod.
    assert!(matches!(agent.node(), Err(CallError::Refused { status, .. }) if status == 503), "{:?}", agent.node());

    api(&c).set_node("node-5", cluster::node_address(5), None);
    not_ready("this node (node-5) cannot be programmed: it has no IPv4 pod CIDR (spec.podCIDRs) yet");
    // No network configuration for the runtime while the node serves no pods.
    assert!(!conflist.exists(), "the conflist was written before the node was ready");
    assert!(api(&c).patches().iter().all(|p| p.node != "node-5"), "NetworkUnavailable cleared on an unprogrammed node");

    api(&c).set_node("node-5", cluster::node_address(5), Some("10.244.5.0/24"));
    agent.wait_ready(WAIT).unwrap();
    assert_eq!(agent.node().unwrap().pod_cidr.to_string(), "10.244.5.0/24");
    // Then the agent writes its conflist: host-local over the Node's pod
    // CIDR, at the underlay's MTU, pointing at the agent's socket.
    let written: Value =
        wait::until("the conflist", WAIT, || serde_json::from_str(&std::fs::read_to_string(&conflist).ok()?).ok())
            .unwrap();
    let knet = &written["plugins"][0];
    assert_eq!(knet["ipam"]["ranges"], serde_json::json!([[{"subnet": "10.244.5.0/24"}]]), "{written}");
    assert_eq!(knet["mtu"], 1500);
    assert_eq!(knet["agentSocket"], agent.socket().display().to_string());
}

#[test]
fn network_unavailable_is_cleared_on_our_own_node_only() {
    let c = Cluster::kubernetes(2, 0, Mode::Vxlan).unwrap();
    // A node no agent of this cluster runs on.
    api(&c).set_node("node-9", Ipv4Addr::new(192, 168, 77, 19), Some("10.244.9.0/24"));
    for name in ["node-0", "node-1"] {
        wait::until(&format!("{name}'s NetworkUnavailable cleared"), WAIT, || {
            let node = api(&c).node(name)?;
            let conditions = node["status"]["conditions"].as_array()?.clone();
            conditions.iter().any(|c| c["type"] == "NetworkUnavailable" && c["status"] == "False").then_some(())
        })
        .unwrap();
    }
    // The other conditions are the kubelet's and stay as they were.
    let node0 = api(&c).node("node-0").unwrap();
    let ready = node0["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").cloned();
    assert_eq!(ready.unwrap()["reason"], "KubeletNotReady");
    let patches = api(&c).patches();
    let mut patched: Vec<&str> = patches.iter().map(|p| p.node.as_str()).collect();
    patched.sort();
    patched.dedup();
    assert_eq!(patched, ["node-0", "node-1"], "{patches:?}");
    for p in &patches {
        assert_eq!(p.content_type, "application/strategic-merge-patch+json");
        let conds = p.body["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 1, "{}", p.body);
        assert_eq!(
            (&conds[0]["type"], &conds[0]["status"]),
            (&Value::from("NetworkUnavailable"), &Value::from("False"))
        );
    }
    let node9 = api(&c).node("node-9").unwrap();
    assert!(node9["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "NetworkUnavailable" && c["status"] == "True"));
}

#[test]
fn an_agent_without_the_right_token_is_refused_and_not_ready() {
    let c = Cluster::kubernetes(1, 0, Mode::Vxlan).unwrap();
    let late = Node::on_fabric("node-late", cluster::node_address(6), &c.fabric, "n6").unwrap();
    api(&c).set_node("node-6", cluster::node_address(6), Some("10.244.6.0/24"));
    let dir = knet_tests::cni::TempDir::new("badtoken").unwrap();
    let text = std::fs::read_to_string(api(&c).kubeconfig()).unwrap();
    let token = text.lines().find_map(|l| l.trim().strip_prefix("token: ")).unwrap().to_string();
    let bad = dir.0.join("kubeconfig");
    std::fs::write(&bad, text.replace(&token, "not-the-token")).unwrap();
    let (_, _, refused_before) = api(&c).counts();
    let extra = format!("node_source = \"kubernetes\"\nkubeconfig = {:?}\n", bad.display().to_string());
    let agent =
        Agent::start_with(&late.ns, &AgentOptions { node_name: "node-6".into(), pod_cidr: None }, &extra).unwrap();
    until_not_ready(&agent, "unauthorized");
    assert!(api(&c).counts().2 > refused_before);
    assert!(api(&c).patches().iter().all(|p| p.node != "node-6"));
}

#[test]
fn ten_thousand_nodes_are_applied_while_a_cni_add_on_the_node_completes() {
    let c = Cluster::kubernetes(1, 0, Mode::Vxlan).unwrap();
    // The bulk nodes sit behind the outside host, which routes for them.
    c.nodes[0].ns.ip(&["route", "add", kube_api::BULK_UNDERLAY, "via", &cluster::OUTSIDE.to_string()]).unwrap();
    let net = knet_tests::cni::KnetNetwork::new(&c.nodes[0].ns, &cluster::pod_cidr(0), c.agents[0].socket()).unwrap();
    api(&c).bulk_load(&kube_api::bulk_nodes(10_000));
    // The ADD starts while the reconcile writes to the kernel (after its
    // lookups), which is when a reconciler holding the API's lock would
    // hold up the ADD.
    wait::until("the 10,000 nodes to be written", WAIT, || {
        let v = c.agents[0].status().ok()?;
        v.source.writing.then_some(())
    })
    .unwrap();
    let pod = net.add_pod("pod").unwrap();
    // The ADD was answered before the reconcile finished: the API does not
    // wait for it. (Counted in nodes, not generations: a no-op reconcile,
    // e.g. after the agent's own status patch, also bumps the generation.)
    let v = c.agents[0].status().unwrap();
    assert_eq!(v.nodes, 1, "the apply finished before the ADD: {v:?}");
    assert!(v.source.writing, "the apply finished before the ADD: {:?}", v.source);

    wait::until("the 10,000 nodes to be programmed", Duration::from_secs(300), || {
        let v = c.agents[0].status().ok()?;
        (v.nodes == 10_001 && !v.source.applying).then_some(v)
    })
    .map(|v| assert!(v.source.error.is_none(), "{:?}", v.source))
    .unwrap();
    let dp = datapath(&c.agents[0]);
    assert_eq!(dp.node_subnets.len(), 10_001);
    assert_eq!(dp.tunnel_sources.len(), 10_000);
    // One route per other node, and this node's own subnet unreachable.
    assert_eq!(routes(&c.nodes[0]).lines().count(), 10_001);
    assert!(routes(&c.nodes[0]).contains("10.39.15.0/24 via 192.168.77.250"));
    traffic::ping(&pod.pod.ns, c.nodes[0].address, 1).unwrap();
}

#[test]
fn an_agent_run_as_a_pod_reaches_the_api_over_https_with_its_service_account() {
    // Node 0 runs on the node file; the API server here speaks HTTPS only.
    let c = Cluster::new(1, 0, Mode::Vxlan).unwrap();
    let api = KubeApi::start_tls(&c.outside, cluster::OUTSIDE).unwrap();
    api.set_node("node-0", cluster::node_address(0), Some(&cluster::pod_cidr(0)));
    for (i, name) in [(5, "node-5"), (6, "node-6")] {
        api.set_node(name, cluster::node_address(i), Some(&format!("10.244.{i}.0/24")));
    }
    let opts = |name: &str| AgentOptions { node_name: name.into(), pod_cidr: None };

    // In-cluster: no kubeconfig, only what the kubelet gives a pod.
    let in_pod = Node::on_fabric("node-pod", cluster::node_address(5), &c.fabric, "n5").unwrap();
    let pod = knet_tests::InCluster {
        service_account: api.service_account(),
        host: *api.address().ip(),
        port: api.address().port(),
    };
    let a = Agent::start_in_cluster(&in_pod.ns, &opts("node-5"), "node_source = \"kubernetes\"\n", pod).unwrap();
    a.wait_ready(WAIT).unwrap();
    // A kubeconfig naming the server's CA works as well.
    let with_file = Node::on_fabric("node-file", cluster::node_address(6), &c.fabric, "n6").unwrap();
    let extra = format!("node_source = \"kubernetes\"\nkubeconfig = {:?}\n", api.kubeconfig().display().to_string());
    let b = Agent::start_with(&with_file.ns, &opts("node-6"), &extra).unwrap();
    b.wait_ready(WAIT).unwrap();

    for agent in [&a, &b] {
        let dp = datapath(agent);
        assert!(subnets(&dp).contains(&format!("{} via {}", cluster::pod_cidr(0), cluster::node_address(0))), "{dp:?}");
    }
    wait::until("both agents to clear NetworkUnavailable", WAIT, || {
        let patched: Vec<String> = api.patches().into_iter().map(|p| p.node).collect();
        (patched.contains(&"node-5".to_string()) && patched.contains(&"node-6".to_string())).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}: {:?}", api.patches()));
    // Nothing was accepted without the token, and the plain-HTTP path was
    // never there to fall back to.
    assert_eq!(api.counts().2, 0);
    assert!(api.url().starts_with("https://"));
}
