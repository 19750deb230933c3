//! The control plane's costs, measured against a real agent watching the
//! Kubernetes test API server (`knet_tests::kube_api`, the real wire
//! format): how long 10,000 nodes take to be programmed, how long one
//! watch event takes to reach `NODE_SUBNETS`, the agent's resident memory
//! at 10,000 nodes, and how long a CNI ADD takes on an idle node and on a
//! node busy applying 10,000 nodes.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;
use knet_agent::config::Mode;
use knet_agent::dataplane::NodeMaps;
use knet_tests::{
    cluster::{self, Cluster},
    cni::KnetNetwork,
    kube_api::{self, KubeApi},
    measure::{percentile, Usage},
    netns::unique_name,
    wait, Netns,
};

use super::report::Summary;

pub const NODES: u32 = 10_000;
/// Single-node watch events timed per repetition.
const EVENTS: u32 = 100;
const LIMIT: Duration = Duration::from_secs(300);

/// One control-plane measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ControlSample {
    pub metric: &'static str,
    pub unit: &'static str,
    pub rep: u32,
    pub value: f64,
}

pub const PROGRAM: &str = "program 10,000 nodes from the API";
/// The agent's own timing of that reconcile (resolve, plan, apply).
pub const RECONCILE: &str = "of which the reconcile";
pub const EVENT_P50: &str = "watch event to map entry, p50";
pub const EVENT_P99: &str = "watch event to map entry, p99";
pub const RSS: &str = "agent resident memory at 10,000 nodes";
pub const ADD_IDLE: &str = "CNI ADD, idle node";
pub const ADD_BUSY: &str = "CNI ADD during a 10,000-node apply";
pub const SANDBOX_KNET: &str = "CRI RunPodSandbox, knet";
pub const SANDBOX_BRIDGE: &str = "CRI RunPodSandbox, bridge plugin";
/// knet's pod creation against the reference bridge plugin's, at most.
const SANDBOX_RATIO: f64 = 1.0;

/// A bound on a metric's median.
pub struct Limit {
    pub metric: &'static str,
    pub below: f64,
}

pub const LIMITS: &[Limit] = &[Limit { metric: EVENT_P99, below: 100.0 }, Limit { metric: RSS, below: 40.0 }];

/// Waits until `count` nodes are programmed and the source is in step;
/// the reconcile's own duration.
fn wait_programmed(c: &Cluster, count: usize, what: &str) -> Result<f64> {
    let v = c.agents[0].wait_programmed(count, LIMIT).context(what.to_string())?;
    v.source.last_apply_ms.context("no last_apply_ms")
}

fn rss_mib(pid: u32) -> Result<f64> {
    Ok(Usage::of(pid)?.rss_mib)
}

/// One CNI ADD of a new pod, timed as the runtime sees it; then its DEL.
fn add_ms(net: &KnetNetwork, role: &str) -> Result<f64> {
    let ns = Netns::new(role)?;
    let id = unique_name(role);
    let added = net.add(&id, &ns)?;
    let deleted = net.del(&id, Some(&ns), Some(&added.json))?;
    if !added.success() {
        bail!("CNI ADD failed: {} {}", added.stdout, added.stderr);
    }
    if !deleted.success() {
        bail!("CNI DEL failed: {} {}", deleted.stdout, deleted.stderr);
    }
    Ok(added.elapsed.as_secs_f64() * 1e3)
}

pub fn run(reps: u32, progress: impl Fn(&str)) -> Result<Vec<ControlSample>> {
    let c = Cluster::kubernetes(1, 0, Mode::Vxlan)?;
    let api: &KubeApi = c.kube.as_ref().context("no API server")?;
    c.nodes[0].ns.ip(&["route", "add", kube_api::BULK_UNDERLAY, "via", &cluster::OUTSIDE.to_string()])?;
    let net = KnetNetwork::new(&c.nodes[0].ns, &cluster::pod_cidr(0), c.agents[0].socket())?;
    let maps = NodeMaps::open_pinned(c.agents[0].pin_dir())?;
    let pid = c.agents[0].pid().context("the agent is not running")?;
    let mut out = Vec::new();
    let mut push = |metric, unit, rep, value: f64| {
        progress(&format!("{metric} rep {rep}: {value:.2} {unit}"));
        out.push(ControlSample { metric, unit, rep, value });
    };
    for rep in 1..=reps {
        push(ADD_IDLE, "ms", rep, add_ms(&net, &format!("idle{rep}"))?);

        let started = Instant::now();
        api.bulk_load(&kube_api::bulk_nodes(NODES));
        // The ADD goes in while the reconcile writes to the kernel.
        wait::until("the 10,000-node apply to write", LIMIT, || {
            c.agents[0].status().ok()?.source.writing.then_some(())
        })?;
        push(ADD_BUSY, "ms", rep, add_ms(&net, &format!("busy{rep}"))?);
        let reconcile_ms = wait_programmed(&c, NODES as usize + 1, "the 10,000 nodes to be programmed")?;
        push(PROGRAM, "s", rep, started.elapsed().as_secs_f64());
        push(RECONCILE, "s", rep, reconcile_ms / 1e3);
        push(RSS, "MiB", rep, rss_mib(pid)?);

        let mut latencies = Vec::new();
        for k in 0..EVENTS {
            let ip = Ipv4Addr::new(172, 31, rep as u8, 1 + k as u8);
            let subnet = Ipv4Net::new(Ipv4Addr::new(10, 64 + rep as u8, k as u8, 0), 24)?;
            let t0 = Instant::now();
            api.set_node(&format!("event-{rep}-{k}"), ip, Some(&subnet.to_string()));
            wait::until("a watched node to reach the map", Duration::from_secs(30), || {
                maps.subnet(subnet).ok().flatten().map(drop)
            })?;
            latencies.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        push(EVENT_P50, "ms", rep, percentile(&latencies, 50.0));
        push(EVENT_P99, "ms", rep, percentile(&latencies, 99.0));

        // Back to the cluster's own node for the next repetition.
        api.bulk_delete(|name| name == cluster::node_name(0));
        wait_programmed(&c, 1, "the nodes to be removed")?;
    }
    Ok(out)
}

/// The terminal table: median, min and max per metric, and its bound.
pub fn table(samples: &[ControlSample]) -> String {
    let mut text = String::from("\n| control plane | median | min | max | target |\n|---|---|---|---|---|\n");
    let mut metrics: Vec<(&str, &str)> = Vec::new();
    for s in samples {
        if !metrics.iter().any(|(m, _)| *m == s.metric) {
            metrics.push((s.metric, s.unit));
        }
    }
    for (metric, unit) in metrics {
        let v: Vec<f64> = samples.iter().filter(|s| s.metric == metric).map(|s| s.value).collect();
        let Some(Summary { median, min, max }) = super::report::summarize(&v) else { continue };
        let target = match LIMITS.iter().find(|l| l.metric == metric) {
            Some(l) => format!("< {} {unit} {}", l.below, if median < l.below { "met" } else { "MISSED" }),
            None => String::new(),
        };
        text += &format!("| {metric} ({unit}) | {median:.2} | {min:.2} | {max:.2} | {target} |\n");
    }
    let median = |metric| {
        let v: Vec<f64> = samples.iter().filter(|s| s.metric == metric).map(|s| s.value).collect();
        super::report::summarize(&v).map(|s| s.median)
    };
    if let (Some(knet), Some(bridge)) = (median(SANDBOX_KNET), median(SANDBOX_BRIDGE)) {
        let r = knet / bridge;
        let verdict = if r <= SANDBOX_RATIO { "met" } else { "MISSED" };
        text += &format!(
            "| RunPodSandbox knet / bridge (ratio of medians) | {r:.2} | | | <= {SANDBOX_RATIO} {verdict} |\n"
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_marks_a_missed_bound() {
        let s = |metric, value| ControlSample { metric, unit: "ms", rep: 1, value };
        let t = table(&[s(EVENT_P99, 150.0), s(ADD_IDLE, 80.0)]);
        assert!(
            t.contains("| watch event to map entry, p99 (ms) | 150.00 | 150.00 | 150.00 | < 100 ms MISSED |"),
            "{t}"
        );
        assert!(t.contains("| CNI ADD, idle node (ms) | 80.00"), "{t}");
        let t = table(&[s(SANDBOX_KNET, 120.0), s(SANDBOX_BRIDGE, 100.0)]);
        assert!(t.contains("| RunPodSandbox knet / bridge (ratio of medians) | 1.20 | | | <= 1 MISSED |"), "{t}");
    }
}
