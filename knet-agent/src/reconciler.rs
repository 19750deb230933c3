//! The task that keeps the kernel in step with the node source: on every
//! new desired set it runs `reconcile` (resolve, plan, apply), retries a
//! failed one with bounded backoff, and publishes what is programmed on a
//! `watch` channel. It owns the node maps and its own netlink socket, so the
//! local API (CNI ADD and DEL) never waits for it.

use std::{
    sync::Arc,
    time::{Duration, Instant, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};

use crate::{
    agent::Agent,
    cluster::{NodeChange, NodeSet, NodeSpec},
    config::Mode,
    dataplane::NodeMaps,
    host::{self, Link, Netlink},
    masquerade,
    metrics::Metrics,
    reconcile::{self, Entries, KernelState, Local, Lookups, NextHops, Op},
    sources::{Published, SourceKind},
};

/// Retries of a failed reconcile wait this long at first, doubling to the cap.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(30);

/// What is programmed, and how the source and the last reconcile went.
/// Served as `GET /v1/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterView {
    pub mode: Mode,
    /// The underlay device, once a cluster is programmed.
    pub underlay: Option<String>,
    pub underlay_mtu: Option<u32>,
    /// MTU for pod routes that leave the node (tunnel overhead taken off).
    pub route_mtu: Option<u32>,
    /// The nodes programmed, by name (shared: the view is cloned on every
    /// publication, and a cluster has thousands).
    pub nodes: Arc<Vec<NodeSpec>>,
    /// This node, as programmed.
    pub local: Option<NodeSpec>,
    pub source: SourceStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceStatus {
    pub kind: SourceKind,
    /// Successful reconciles so far.
    pub generation: u64,
    /// The source's or the last reconcile's error; the programmed state is
    /// the last good one meanwhile.
    pub error: Option<String>,
    /// The source is in step with its world.
    pub in_sync: bool,
    /// A reconcile is in progress (resolving or writing).
    pub applying: bool,
    /// Its changes are being written to the kernel right now.
    pub writing: bool,
    /// When the source last confirmed its set, seconds since the epoch.
    pub last_sync: Option<u64>,
    /// How long the last successful reconcile took.
    pub last_apply_ms: Option<f64>,
}

impl SourceStatus {
    /// A source that has delivered nothing yet.
    pub fn new(kind: SourceKind) -> Self {
        SourceStatus {
            kind,
            generation: 0,
            error: None,
            in_sync: false,
            applying: false,
            writing: false,
            last_sync: None,
            last_apply_ms: None,
        }
    }
}

/// The view without the node list: cheap to ask for at any rate.
/// Served as `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub mode: Mode,
    pub underlay: Option<String>,
    pub route_mtu: Option<u32>,
    /// How many nodes are programmed.
    pub nodes: usize,
    pub local: Option<NodeSpec>,
    pub source: SourceStatus,
}

impl ClusterView {
    pub fn status(&self) -> StatusView {
        StatusView {
            mode: self.mode,
            underlay: self.underlay.clone(),
            route_mtu: self.route_mtu,
            nodes: self.nodes.len(),
            local: self.local.clone(),
            source: self.source.clone(),
        }
    }

    /// Ready: the first full reconcile done, the source in step, no error.
    pub fn ready(&self) -> Result<(), String> {
        let s = &self.source;
        if let Some(e) = &s.error {
            return Err(e.clone());
        }
        if s.generation == 0 {
            return Err(format!("waiting for the first full set of nodes from the {:?} source", s.kind));
        }
        if !s.in_sync {
            return Err("the node source is not in sync".into());
        }
        Ok(())
    }
}

/// The kernel as `reconcile::apply` drives it.
struct Kernel<'a> {
    maps: &'a mut NodeMaps,
    netlink: &'a Netlink,
    agent: &'a Mutex<Agent>,
}

impl reconcile::Kernel for Kernel<'_> {
    async fn run(&mut self, op: &Op) -> Result<()> {
        match op {
            Op::SetConfig { new, .. } => self.maps.set_config(*new),
            Op::SetSubnet { net, new, .. } => self.maps.set_subnet(*net, *new),
            Op::RemoveSubnet { net, .. } => self.maps.remove_subnet(*net),
            Op::AddTunnelSource(ip) => self.maps.add_tunnel_source(*ip),
            Op::RemoveTunnelSource(ip) => self.maps.remove_tunnel_source(*ip),
            Op::SetRoute { dst, new, .. } => self.netlink.replace_route(*dst, *new).await,
            Op::RemoveRoute { dst, old } => self.netlink.delete_route(*dst, *old).await,
            Op::Masquerade { new, old } => {
                let (new, old) = (new.clone(), old.clone());
                tokio::task::spawn_blocking(move || match (new, old) {
                    (None, _) => masquerade::remove(),
                    (Some(new), Some(Some(old))) => match masquerade::update_script(&old, &new) {
                        None => Ok(()),
                        // The table may have been changed behind our back:
                        // then write it whole.
                        Some(script) => {
                            masquerade::apply(&script).or_else(|_| masquerade::apply(&masquerade::full_script(&new)))
                        }
                    },
                    (Some(new), _) => masquerade::apply(&masquerade::full_script(&new)),
                })
                .await
                .context("the nft task failed")?
            }
            Op::AttachUnderlay(u) => {
                let mut agent = self.agent.lock().await;
                agent.attach_underlay(&u.link, u.egress)?;
                agent.set_big_tcp(&u.link, u.big_tcp).await;
                Ok(())
            }
            Op::DetachUnderlay(u) => self.agent.lock().await.detach_underlay(u.link.index),
        }
    }
}

impl Lookups for Netlink {
    async fn link_with_address(&self, ip: std::net::Ipv4Addr) -> Result<Option<Link>> {
        Netlink::link_with_address(self, ip).await
    }

    async fn route_to(&self, ip: std::net::Ipv4Addr) -> Result<(Option<std::net::Ipv4Addr>, Option<u32>)> {
        let r = Netlink::route_to(self, ip).await?;
        Ok((r.gateway, r.oif))
    }
}

pub struct Reconciler {
    maps: NodeMaps,
    netlink: Netlink,
    agent: Arc<Mutex<Agent>>,
    local: Local,
    kernel: KernelState,
    next_hops: NextHops,
    view: ClusterView,
    tx: watch::Sender<ClusterView>,
    metrics: Metrics,
}

impl Reconciler {
    /// Reads what the kernel holds now (maps pinned by an earlier agent,
    /// its routes), so the first reconcile changes only the difference.
    pub async fn new(
        maps: NodeMaps,
        agent: Arc<Mutex<Agent>>,
        local: Local,
        kind: SourceKind,
        metrics: Metrics,
    ) -> Result<(Self, watch::Receiver<ClusterView>)> {
        let netlink = Netlink::connect()?;
        let entries = Entries {
            subnets: maps.subnets()?.into_iter().collect(),
            tunnel_sources: maps.tunnel_sources()?.into_iter().collect(),
            routes: netlink.agent_routes().await?.into_iter().collect(),
        };
        let kernel = KernelState { config: Some(maps.config()?), entries, masquerade: None, underlay: None };
        let view = ClusterView {
            mode: local.mode,
            underlay: None,
            underlay_mtu: None,
            route_mtu: None,
            nodes: Arc::default(),
            local: None,
            source: SourceStatus::new(kind),
        };
        let (tx, rx) = watch::channel(view.clone());
        let next_hops = NextHops::default();
        Ok((Reconciler { maps, netlink, agent, local, kernel, next_hops, view, tx, metrics }, rx))
    }

    /// Runs until the source's channel closes and no retry is pending.
    pub async fn run(mut self, mut source: watch::Receiver<Published>) {
        let mut applied_version = None;
        let mut retry = RETRY_FIRST;
        let mut failed = false;
        let mut closed = false;
        loop {
            let published = source.borrow_and_update().clone();
            let s = &mut self.view.source;
            s.in_sync = published.in_sync;
            s.last_sync = published.last_sync.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs());
            let source_error = published.error.clone();
            if let Some(nodes) =
                published.nodes.as_ref().filter(|_| failed || applied_version != Some(published.version))
            {
                match self.reconcile(nodes, &published.cause).await {
                    Ok(()) => {
                        applied_version = Some(published.version);
                        failed = false;
                        retry = RETRY_FIRST;
                        self.view.source.error = None;
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        tracing::error!(error = %msg, "reconcile failed; the programmed state is unchanged");
                        failed = true;
                        self.view.source.error = Some(msg);
                    }
                }
            }
            if let Some(e) = source_error {
                self.view.source.error = Some(e);
            } else if !failed {
                self.view.source.error = None;
            }
            self.tx.send_replace(self.view.clone());

            let wait_retry = async {
                if failed {
                    tokio::time::sleep(retry).await
                } else {
                    std::future::pending().await
                }
            };
            let source_changed = async {
                if closed {
                    std::future::pending().await
                } else {
                    source.changed().await
                }
            };
            tokio::select! {
                changed = source_changed => if changed.is_err() {
                    // The source said its last word (the empty set, once).
                    closed = true;
                    if !failed {
                        return;
                    }
                },
                () = wait_retry => retry = (retry * 2).min(RETRY_CAP),
            }
        }
    }

    /// One reconcile, with `applying` (and `writing`) published while it
    /// runs and cleared however it ends.
    async fn reconcile(&mut self, nodes: &NodeSet, cause: &str) -> Result<()> {
        self.view.source.applying = true;
        self.tx.send_replace(self.view.clone());
        let before = self.view.nodes.clone();
        let started = Instant::now();
        let result = self.resolve_and_apply(nodes).await;
        self.metrics.reconcile_took(started.elapsed(), result.is_ok());
        if result.is_ok() {
            log_changes(&before, nodes, cause);
        }
        self.view.source.applying = false;
        self.view.source.writing = false;
        result
    }

    async fn resolve_and_apply(&mut self, nodes: &NodeSet) -> Result<()> {
        let started = Instant::now();
        let resolved =
            reconcile::resolve(nodes, &self.local, &self.netlink, &self.next_hops, self.kernel.underlay.as_ref())
                .await?;
        let ops = reconcile::plan(&self.kernel, &resolved.target);
        if !ops.is_empty() {
            tracing::info!(nodes = nodes.len(), changes = ops.len(), "applying node changes");
            for op in ops.iter().filter(|op| !matches!(op, Op::Masquerade { .. })) {
                tracing::debug!(?op, "change");
            }
        }
        if resolved.local.is_some() {
            host::enable_ip_forwarding()?;
        }
        if !ops.is_empty() {
            self.view.source.writing = true;
            self.tx.send_replace(self.view.clone());
        }
        let mut kernel = Kernel { maps: &mut self.maps, netlink: &self.netlink, agent: &self.agent };
        reconcile::apply(&mut kernel, &mut self.kernel, &ops).await?;
        // Peers that left take their tunnel counters with them; the first
        // reconcile also sweeps what an earlier agent left behind.
        if self.view.source.generation == 0 || ops.iter().any(|op| matches!(op, Op::RemoveTunnelSource(_))) {
            if let Err(e) = self.maps.retain_peer_counters(&self.kernel.entries.tunnel_sources) {
                tracing::warn!(error = format!("{e:#}"), "cannot remove the counters of departed peers");
            }
        }

        self.next_hops = resolved.next_hops;
        if let Some(me) = &resolved.local {
            self.local.pod_cidr = Some(me.pod_cidr);
        }
        let underlay = resolved.target.underlay.as_ref().map(|u| &u.link);
        self.view.underlay = underlay.map(|l| l.name.clone());
        self.view.underlay_mtu = underlay.map(|l| l.mtu);
        self.view.route_mtu = underlay.map(|l| reconcile::route_mtu(self.local.mode, l.mtu));
        self.view.nodes = Arc::new(nodes.iter().cloned().collect());
        self.view.local = resolved.local;
        self.view.source.generation += 1;
        self.view.source.last_apply_ms = Some(started.elapsed().as_secs_f64() * 1e3);
        if !ops.is_empty() {
            tracing::info!(nodes = nodes.len(), ms = self.view.source.last_apply_ms, "node changes applied");
        }
        Ok(())
    }
}

/// `tracing::event!` at a level chosen at run time (each call site's level
/// is fixed, so one per level).
macro_rules! log_at {
    ($level:expr, $($rest:tt)+) => {
        if $level == tracing::Level::INFO {
            tracing::info!($($rest)+)
        } else {
            tracing::debug!($($rest)+)
        }
    };
}

/// Node changes logged one line each at info; beyond them (a cluster's
/// first list of thousands), at debug, after one summary line.
const CHANGE_LINES: usize = 100;

/// One line per node that an applied reconcile added, removed or changed,
/// with what caused it.
fn log_changes(before: &[NodeSpec], after: &NodeSet, cause: &str) {
    let changes = crate::cluster::changes(before, after);
    if changes.len() > CHANGE_LINES {
        tracing::info!(
            changes = changes.len(),
            cause,
            "{} node changes; the first {CHANGE_LINES} follow, the rest at debug level",
            changes.len()
        );
    }
    for (i, change) in changes.into_iter().enumerate() {
        let level = if i < CHANGE_LINES { tracing::Level::INFO } else { tracing::Level::DEBUG };
        match change {
            NodeChange::Added(n) => {
                log_at!(level, node = %n.name, ip = %n.underlay_ip, pod_cidr = %n.pod_cidr, cause, "node added")
            }
            NodeChange::Removed(n) => {
                log_at!(level, node = %n.name, ip = %n.underlay_ip, pod_cidr = %n.pod_cidr, cause, "node removed")
            }
            NodeChange::Changed { old, new } => log_at!(
                level,
                node = %new.name,
                ip = %new.underlay_ip,
                pod_cidr = %new.pod_cidr,
                old_ip = %old.underlay_ip,
                old_pod_cidr = %old.pod_cidr,
                vtep_mac = ?new.vtep_mac.map(|m| m.to_string()),
                old_vtep_mac = ?old.vtep_mac.map(|m| m.to_string()),
                cause,
                "node changed"
            ),
        }
    }
}

/// This node's pod subnet once the reconciler has programmed it.
pub fn local_pod_cidr(view: &ClusterView) -> Option<Ipv4Net> {
    view.local.as_ref().map(|n| n.pod_cidr)
}
