//! A node under load, through the real CNI plugin: 250 pods added in
//! parallel batches beside 5,000 other nodes' subnets, every pod reaching
//! a sample of the others and the node; and 1,000 ADD/DEL cycles that leave
//! nothing behind. The figures (CNI ADD p50/p99, the agent's memory, CPU
//! time and descriptors) are printed; run with `--nocapture` to see them.
//! Needs root; run with `cargo xtask test`.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use knet_agent::config::Mode;
use knet_common::Stat;
use knet_tests::{
    cluster::{self, node_line, Cluster},
    cni::{files_under, links, CniPod, PluginNode},
    kube_api,
    measure::{percentile, Usage},
    netns::unique_name,
    traffic, Netns,
};

const PODS: usize = 250;
/// ADDs running at once, as a runtime starting a node's pods does.
const BATCH: usize = 25;
const REMOTE_NODES: usize = 5_000;
const CYCLES: usize = 1_000;
/// Pods cycling at once, each in a namespace of its own.
const CYCLE_WORKERS: usize = 4;
/// The agent's resident memory may not pass this under the load below:
/// what a leak per pod or per node subnet would break.
const RSS_BOUND_MIB: f64 = 256.0;

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(what: &str, ms: &[f64]) {
    println!(
        "load: {what}: {} samples, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms.len(),
        percentile(ms, 50.0),
        percentile(ms, 99.0),
        percentile(ms, 100.0)
    );
}

fn report_usage(when: &str, u: Usage) {
    println!(
        "load: agent {when}: RSS {:.1} MiB (peak {:.1}), CPU {:.2} s, {} descriptors",
        u.rss_mib, u.peak_rss_mib, u.cpu_seconds, u.fds
    );
}

#[test]
fn two_hundred_fifty_pods_beside_five_thousand_node_subnets() {
    let c = Cluster::with_cni(1, 0, Mode::Vxlan).unwrap();
    let agent = &c.agents[0];
    let pid = agent.pid().unwrap();
    report_usage("at start", Usage::of(pid).unwrap());

    // Bulk nodes' underlay addresses lie behind a router, the outside host.
    c.nodes[0].ns.ip(&["route", "add", kube_api::BULK_UNDERLAY, "via", &cluster::OUTSIDE.to_string()]).unwrap();
    let remote = kube_api::bulk_nodes(REMOTE_NODES as u32)
        .into_iter()
        .map(|(name, ip, cidr)| format!("{name} {ip} {}\n", cidr.expect("bulk nodes have a pod CIDR")));
    let file: String = std::iter::once(node_line(0)).chain(remote).collect();
    c.write_nodes_file(&file).unwrap();
    let started = Instant::now();
    let nodes = REMOTE_NODES + 1;
    agent.wait_programmed(nodes, Duration::from_secs(120)).unwrap();
    println!("load: {nodes} nodes programmed in {:.0} ms", millis(started.elapsed()));
    assert_eq!(agent.datapath().unwrap().node_subnets.len(), REMOTE_NODES + 1, "the kernel's node map");
    report_usage("with 5,001 nodes", Usage::of(pid).unwrap());

    let net = &c.networks[0];
    let mut pods: Vec<CniPod> = Vec::new();
    for batch in 0..PODS / BATCH {
        let added: Vec<_> = std::thread::scope(|s| {
            let adds: Vec<_> = (0..BATCH).map(|j| s.spawn(move || net.add_pod(&format!("b{batch}p{j}")))).collect();
            adds.into_iter().map(|a| a.join().expect("ADD thread")).collect()
        });
        for (j, pod) in added.into_iter().enumerate() {
            pods.push(pod.unwrap_or_else(|e| panic!("pod {j} of batch {batch}: {e:#}")));
        }
    }
    let add_ms: Vec<f64> = pods.iter().map(|p| millis(p.add_elapsed)).collect();
    report(&format!("CNI ADD, {BATCH} at once"), &add_ms);
    let after_adds = Usage::of(pid).unwrap();
    report_usage(&format!("with {PODS} pods"), after_adds);

    let mut want: Vec<String> = pods.iter().map(|p| p.pod.ip.to_string()).collect();
    want.sort();
    want.dedup();
    assert_eq!(want.len(), PODS, "two pods got one address");
    assert_eq!(agent.endpoint_ips().unwrap().len(), PODS, "the agent's endpoints");
    assert_eq!(agent.map_ips().unwrap().len(), PODS, "the kernel's endpoint map");

    for p in &pods {
        assert_eq!(agent.tcx_ingress(&p.pod.host_veth).unwrap(), vec!["from_pod"], "{}", p.pod.host_veth);
    }

    // Every pod reaches the node and two others: its neighbour and the pod
    // half the node away (so every batch talks to another). Between pods,
    // knet's programs redirect both the request and the reply (the stack
    // would carry them too, uncounted, were a pod's program missing).
    let (redirected, _) = agent.stat(Stat::RedirectLocal).unwrap();
    let node_ip = c.nodes[0].address;
    let failures: Vec<String> = std::thread::scope(|s| {
        let pods = &pods;
        let workers: Vec<_> = (0..10)
            .map(|w| {
                s.spawn(move || {
                    let mut failed = Vec::new();
                    for i in (w..PODS).step_by(10) {
                        let from = &pods[i].pod;
                        for to in [node_ip, pods[(i + 1) % PODS].pod.ip, pods[(i + PODS / 2) % PODS].pod.ip] {
                            if let Err(e) = traffic::ping(&from.ns, to, 1) {
                                failed.push(format!("{} -> {to}: {e:#}", from.ip));
                            }
                        }
                    }
                    failed
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("ping thread")).collect()
    });
    assert!(failures.is_empty(), "{} of {} pings failed: {failures:#?}", failures.len(), PODS * 3);
    let (now, _) = agent.stat(Stat::RedirectLocal).unwrap();
    assert!(
        now - redirected >= 4 * PODS as u64,
        "{} pod-to-pod packets redirected, want {}",
        now - redirected,
        4 * PODS
    );

    let loaded = Usage::of(pid).unwrap();
    report_usage("after the pings", loaded);
    assert!(loaded.rss_mib < RSS_BOUND_MIB, "the agent holds {:.1} MiB", loaded.rss_mib);
}

#[test]
fn a_thousand_add_del_cycles_leave_nothing_behind() {
    let t = PluginNode::start(Ipv4Addr::new(192, 168, 77, 10), "10.244.0.0/24").unwrap();
    let empty = t.state();
    let pins = files_under(t.agent.pin_dir());
    let nft = t.node.ns.exec("nft", &["list", "ruleset"]).unwrap();
    let pid = t.agent.pid().unwrap();
    let before = Usage::of(pid).unwrap();
    report_usage("before the cycles", before);

    let pods: Vec<Netns> = (0..CYCLE_WORKERS).map(|w| Netns::new(&format!("cycle{w}")).unwrap()).collect();
    let net = &t.net;
    let timings: Vec<(f64, f64)> = std::thread::scope(|s| {
        let workers: Vec<_> = pods
            .iter()
            .map(|pod| {
                s.spawn(move || {
                    (0..CYCLES / CYCLE_WORKERS)
                        .map(|_| {
                            let id = unique_name("ctr");
                            let add = net.add(&id, pod).unwrap().expect_ok("ADD");
                            let del = net.del(&id, Some(pod), Some(&add.json)).unwrap().expect_ok("DEL");
                            (millis(add.elapsed), millis(del.elapsed))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("cycle thread")).collect()
    });
    assert_eq!(timings.len(), CYCLES);
    report(
        &format!("CNI ADD while cycling, {CYCLE_WORKERS} at once"),
        &timings.iter().map(|t| t.0).collect::<Vec<_>>(),
    );
    report(
        &format!("CNI DEL while cycling, {CYCLE_WORKERS} at once"),
        &timings.iter().map(|t| t.1).collect::<Vec<_>>(),
    );
    let after = Usage::of(pid).unwrap();
    report_usage(&format!("after {CYCLES} cycles"), after);

    assert_eq!(t.state(), empty, "the cycles left a veth, route, address, lease or endpoint");
    assert_eq!(files_under(t.agent.pin_dir()), pins, "the cycles left a pin");
    assert_eq!(t.node.ns.exec("nft", &["list", "ruleset"]).unwrap(), nft, "the cycles left an nftables rule");
    for pod in &pods {
        assert_eq!(links(pod).unwrap(), vec!["lo"], "a pod namespace kept an interface");
    }
    // host-local keeps its lock and last-reserved marker; nothing else.
    let kept: Vec<String> =
        t.net.files().into_iter().filter(|f| !f.ends_with("/lock") && !f.ends_with("/last_reserved_ip.0")).collect();
    assert!(kept.is_empty(), "IPAM files left: {kept:?}");
    // A descriptor per cycle would be 1,000; the API's own may come and go.
    assert!(after.fds <= before.fds + 16, "the agent went from {} to {} descriptors", before.fds, after.fds);
}
