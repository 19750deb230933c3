//! Prometheus metrics: a read-only view of the data path and of the agent.
//! Counters of the data path are read from the maps at every scrape (never
//! a copy kept in the agent); what only the agent sees (reconcile
//! durations, the CNI plugin's requests) is kept here as it happens.
//! Encoded by the `prometheus` crate in the text format 0.0.4, which
//! Debian's `promtool check metrics` accepts without a lint complaint
//! (`prometheus-client`'s OpenMetrics output is refused by it: the `info`
//! type, counters whose `# TYPE` name lacks `_total`).

mod server;

pub use server::{bind, serve, Sources};

use std::{net::Ipv4Addr, sync::Arc, time::Duration};

use anyhow::Result;
use hyper::StatusCode;
use knet_common::{peer::PeerCounters, Counter, Stat};
use prometheus::{Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::{pinned_maps, reconciler::ClusterView};

/// The metrics the agent moves as things happen; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Events>);

struct Events {
    reconcile: HistogramVec,
    cni_requests: IntCounterVec,
}

/// What one scrape reads from the kernel and the agent.
pub struct Scrape {
    pub stats: Vec<(Stat, Counter)>,
    pub peers: Vec<(Ipv4Addr, PeerCounters)>,
    /// Entries per map, by map name.
    pub map_entries: Vec<(&'static str, u32)>,
    pub endpoints: usize,
    pub view: ClusterView,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        // From 1 ms (a node file's edit) to a minute (tens of thousands of
        // nodes on a busy machine), a factor of 4 apart.
        let buckets = prometheus::exponential_buckets(0.001, 4.0, 9).expect("valid buckets");
        let reconcile = HistogramVec::new(
            HistogramOpts::new(
                "knet_reconcile_duration_seconds",
                "Time one reconcile of the node set took (resolve, plan, apply), by result.",
            )
            .buckets(buckets),
            &["result"],
        )
        .expect("valid histogram");
        let cni_requests = IntCounterVec::new(
            Opts::new(
                "knet_cni_requests_total",
                "Requests the CNI plugin made to the agent's API, by the CNI command that made them and the answer's status class.",
            ),
            &["command", "status"],
        )
        .expect("valid counter");
        Metrics(Arc::new(Events { reconcile, cni_requests }))
    }

    pub fn reconcile_took(&self, elapsed: Duration, ok: bool) {
        self.0.reconcile.with_label_values(&[if ok { "success" } else { "failure" }]).observe(elapsed.as_secs_f64());
    }

    pub fn cni_request(&self, command: &'static str, status: StatusCode) {
        self.0.cni_requests.with_label_values(&[command, status_class(status)]).inc();
    }

    /// The text exposition of everything: `scrape`'s values and the events'.
    pub fn render(&self, scrape: &Scrape) -> Result<String> {
        let registry = Registry::new();
        registry.register(Box::new(self.0.reconcile.clone()))?;
        registry.register(Box::new(self.0.cni_requests.clone()))?;
        register_build_info(&registry)?;
        register_stats(&registry, &scrape.stats)?;
        register_peers(&registry, &scrape.peers, &scrape.view)?;
        register_maps(&registry, &scrape.map_entries)?;
        register_agent(&registry, scrape)?;
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&registry.gather(), &mut out)?;
        Ok(String::from_utf8(out)?)
    }
}

fn register_build_info(registry: &Registry) -> Result<()> {
    let info = IntGaugeVec::new(Opts::new("knet_build_info", "The running agent's version; always 1."), &["version"])?;
    info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    registry.register(Box::new(info))?;
    Ok(())
}

/// Where a `Stat` goes: verdicts by `verdict`, drops by `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatSeries {
    Verdict(&'static str),
    Drop(&'static str),
}

/// A drop reason's label is its name without the `drop_` its family
/// already says; a verdict's is its name.
pub fn stat_series(stat: Stat) -> StatSeries {
    let name = stat.name();
    match name.strip_prefix("drop_") {
        Some(reason) if stat.is_drop() => StatSeries::Drop(reason),
        _ => StatSeries::Verdict(name),
    }
}

fn register_stats(registry: &Registry, stats: &[(Stat, Counter)]) -> Result<()> {
    let vec = |name: &str, help: &str, label: &str| IntCounterVec::new(Opts::new(name, help), &[label]);
    let packets =
        vec("knet_packets_total", "Packets the programs passed, forwarded or answered, by verdict.", "verdict")?;
    let bytes = vec("knet_bytes_total", "Bytes of the packets in knet_packets_total, by verdict.", "verdict")?;
    let drop_packets = vec("knet_drop_packets_total", "Packets the programs dropped, by reason.", "reason")?;
    let drop_bytes =
        vec("knet_drop_bytes_total", "Bytes of the packets in knet_drop_packets_total, by reason.", "reason")?;
    for (stat, c) in stats {
        let (p, b, label) = match stat_series(*stat) {
            StatSeries::Verdict(v) => (&packets, &bytes, v),
            StatSeries::Drop(r) => (&drop_packets, &drop_bytes, r),
        };
        p.with_label_values(&[label]).inc_by(c.packets);
        b.with_label_values(&[label]).inc_by(c.bytes);
    }
    for m in [packets, bytes, drop_packets, drop_bytes] {
        registry.register(Box::new(m))?;
    }
    Ok(())
}

fn register_peers(registry: &Registry, peers: &[(Ipv4Addr, PeerCounters)], view: &ClusterView) -> Result<()> {
    let labels = ["direction", "peer", "node"];
    let packets = IntCounterVec::new(
        Opts::new(
            "knet_tunnel_packets_total",
            "VXLAN packets encapsulated toward (tx) or accepted and decapsulated from (rx) each peer node, by its underlay address.",
        ),
        &labels,
    )?;
    let bytes = IntCounterVec::new(
        Opts::new(
            "knet_tunnel_bytes_total",
            "Bytes of knet_tunnel_packets_total as on the underlay (VXLAN headers included).",
        ),
        &labels,
    )?;
    for (ip, c) in peers {
        let peer = ip.to_string();
        // The name of the node programmed with that address; empty for a
        // peer that just left (its entry goes with the next reconcile).
        let node = view.nodes.iter().find(|n| n.underlay_ip == *ip).map_or("", |n| n.name.as_str());
        for (direction, counter) in [("tx", c.tx), ("rx", c.rx)] {
            packets.with_label_values(&[direction, &peer, node]).inc_by(counter.packets);
            bytes.with_label_values(&[direction, &peer, node]).inc_by(counter.bytes);
        }
    }
    registry.register(Box::new(packets))?;
    registry.register(Box::new(bytes))?;
    Ok(())
}

/// Map names are upper case in the object (`ENDPOINTS`); labels are lower.
pub fn map_label(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn register_maps(registry: &Registry, entries: &[(&'static str, u32)]) -> Result<()> {
    let now = IntGaugeVec::new(Opts::new("knet_bpf_map_entries", "Entries a pinned BPF map holds now."), &["map"])?;
    let capacity =
        IntGaugeVec::new(Opts::new("knet_bpf_map_max_entries", "Entries a pinned BPF map can hold."), &["map"])?;
    for (name, layout) in pinned_maps::EXPECTED {
        capacity.with_label_values(&[&map_label(name)]).set(i64::from(layout.max_entries));
    }
    for (name, n) in entries {
        now.with_label_values(&[&map_label(name)]).set(i64::from(*n));
    }
    registry.register(Box::new(now))?;
    registry.register(Box::new(capacity))?;
    Ok(())
}

fn register_agent(registry: &Registry, scrape: &Scrape) -> Result<()> {
    let endpoints = IntGauge::new("knet_endpoints", "Pods this agent serves on its node.")?;
    endpoints.set(i64::try_from(scrape.endpoints).unwrap_or(i64::MAX));
    let nodes = IntGauge::new("knet_nodes", "Nodes programmed from the node source, this one included.")?;
    nodes.set(i64::try_from(scrape.view.nodes.len()).unwrap_or(i64::MAX));
    let source = &scrape.view.source;
    let kind = source_label(source.kind);
    let in_sync = IntGaugeVec::new(
        Opts::new("knet_node_source_in_sync", "1 while the node source is in step with its world, else 0."),
        &["source"],
    )?;
    in_sync.with_label_values(&[kind]).set(i64::from(source.in_sync));
    registry.register(Box::new(endpoints))?;
    registry.register(Box::new(nodes))?;
    registry.register(Box::new(in_sync))?;
    if let Some(t) = source.last_sync {
        let last = Gauge::with_opts(
            Opts::new(
                "knet_node_source_last_sync_timestamp_seconds",
                "When the node source last confirmed its full set, in seconds since the epoch.",
            )
            .const_label("source", kind),
        )?;
        last.set(t as f64);
        registry.register(Box::new(last))?;
    }
    Ok(())
}

fn source_label(kind: crate::sources::SourceKind) -> &'static str {
    match kind {
        crate::sources::SourceKind::None => "none",
        crate::sources::SourceKind::File => "file",
        crate::sources::SourceKind::Kubernetes => "kubernetes",
        crate::sources::SourceKind::Etcd => "etcd",
    }
}

/// The label of a CNI command as the plugin names it in its header; a
/// value that is none of the spec's is `other`, so no client can grow the
/// series without bound.
pub fn cni_command_label(header: &[u8]) -> &'static str {
    match header {
        b"ADD" => "add",
        b"DEL" => "del",
        b"CHECK" => "check",
        b"VERSION" => "version",
        b"GC" => "gc",
        b"STATUS" => "status",
        _ => "other",
    }
}

pub fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests;
