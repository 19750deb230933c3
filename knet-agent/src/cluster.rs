//! This node's place in the cluster: the nodes the source lists, carried
//! into `NODE_SUBNETS`, `NODES`, host routes and the masquerade rule.
//! Changes are validated whole, then only the difference is applied.

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf};

use anyhow::{bail, Context, Result};
use knet_common::node::{DataplaneConfig, MODE_NATIVE, MODE_VXLAN, VXLAN_OVERHEAD};
use serde::Serialize;

use crate::{
    config::{Config, Mode},
    dataplane::Dataplane,
    host::{self, Link, Netlink},
    masquerade,
    nodes::{self, NodeSpec},
    reconcile::{self, NodeChanges},
};

/// What the node source last did, for `GET /v1/nodes`.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub file: PathBuf,
    /// Successful applies so far (1 after start).
    pub generation: u64,
    /// Why the latest version of the file was rejected, if it was.
    pub error: Option<String>,
}

pub struct Cluster {
    me: String,
    my_cidr: ipnet::Ipv4Net,
    mode: Mode,
    underlay: Link,
    programmed: BTreeMap<String, NodeSpec>,
    pub status: SourceStatus,
}

#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub mode: Mode,
    pub underlay: String,
    pub underlay_mtu: u32,
    /// MTU for pod routes that leave the node (tunnel overhead taken off).
    pub route_mtu: u32,
    pub nodes: Vec<NodeSpec>,
    pub source: SourceStatus,
}

impl Cluster {
    /// Reads the node file, finds the underlay, programs every node and the
    /// underlay programs. A bad file stops the start with its line named.
    pub async fn start(config: &Config, file: PathBuf, dp: &mut Dataplane, nl: &Netlink) -> Result<Self> {
        let text =
            std::fs::read_to_string(&file).with_context(|| format!("cannot read node file {}", file.display()))?;
        let desired = nodes::parse(&text, &config.node_name, config.pod_cidr)
            .with_context(|| format!("invalid node file {}", file.display()))?;
        let me = &desired[&config.node_name];
        let underlay = nl
            .link_with_address(me.underlay_ip)
            .await?
            .with_context(|| format!("no interface on this node has its underlay address {}", me.underlay_ip))?;
        let mut cluster = Cluster {
            me: config.node_name.clone(),
            my_cidr: config.pod_cidr,
            mode: config.mode,
            underlay,
            programmed: BTreeMap::new(),
            status: SourceStatus { file, generation: 0, error: None },
        };
        cluster.check_reachable(&desired, nl).await?;
        dp.set_config(DataplaneConfig {
            mode: match config.mode {
                Mode::Vxlan => MODE_VXLAN,
                Mode::Native => MODE_NATIVE,
            },
            vni: config.vni,
            underlay_ifindex: cluster.underlay.index,
            underlay_mtu: cluster.underlay.mtu,
            node_ip: knet_common::ipv4_key(me.underlay_ip.octets()),
        })?;
        host::enable_ip_forwarding()?;

        // Start from a clean slate that keeps what is still right: pinned
        // entries and routes of nodes no longer listed go, the rest is
        // rewritten in place (idempotent), so traffic never stops.
        let wanted: Vec<_> = desired.values().map(|n| n.pod_cidr).collect();
        for (subnet, ip, _) in dp.map_subnets()? {
            if !wanted.contains(&subnet) {
                dp.remove_node(subnet, ip)?;
            }
        }
        let wanted_ips: Vec<Ipv4Addr> = desired.values().map(|n| n.underlay_ip).collect();
        for ip in dp.map_nodes()? {
            if !wanted_ips.contains(&ip) {
                dp.remove_tunnel_source(ip)?;
            }
        }
        for route in nl.agent_routes().await? {
            if !desired.values().any(|n| n.pod_cidr == route && n.name != cluster.me) {
                nl.delete_route(route).await?;
            }
        }
        let all = NodeChanges { upsert: desired.values().cloned().collect(), remove: vec![] };
        cluster.apply(&all, &desired, dp, nl).await?;
        dp.attach_underlay(&cluster.underlay.name, cluster.underlay.index, config.mode == Mode::Vxlan)?;
        tracing::info!(nodes = desired.len(), underlay = %cluster.underlay.name, mode = ?config.mode, "cluster programmed");
        Ok(cluster)
    }

    /// A new version of the node file: validated whole, then only the
    /// difference applied. A rejected version changes nothing.
    pub async fn update(&mut self, text: &str, dp: &mut Dataplane, nl: &Netlink) -> Result<()> {
        let result = self.try_update(text, dp, nl).await;
        match &result {
            Ok(()) => self.status.error = None,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), file = %self.status.file.display(), "node file rejected; keeping the running state");
                self.status.error = Some(format!("{e:#}"));
            }
        }
        result
    }

    async fn try_update(&mut self, text: &str, dp: &mut Dataplane, nl: &Netlink) -> Result<()> {
        let desired = nodes::parse(text, &self.me, self.my_cidr)?;
        if desired[&self.me].underlay_ip != self.programmed[&self.me].underlay_ip {
            bail!("this node's underlay IP changed; restart the agent to move it");
        }
        self.check_reachable(&desired, nl).await?;
        let changes = reconcile::diff(&self.programmed, &desired);
        if changes.is_empty() {
            return Ok(());
        }
        tracing::info!(
            upsert = ?changes.upsert.iter().map(|n| &n.name).collect::<Vec<_>>(),
            remove = ?changes.remove.iter().map(|n| &n.name).collect::<Vec<_>>(),
            "applying node changes"
        );
        self.apply(&changes, &desired, dp, nl).await
    }

    /// Native mode needs every peer on the underlay's own segment: the
    /// kernel's route to it has no gateway and leaves by the underlay.
    async fn check_reachable(&self, desired: &BTreeMap<String, NodeSpec>, nl: &Netlink) -> Result<()> {
        if self.mode != Mode::Native {
            return Ok(());
        }
        for node in desired.values().filter(|n| n.name != self.me) {
            let route = nl.route_to(node.underlay_ip).await?;
            if route.gateway.is_some() || route.oif != Some(self.underlay.index) {
                bail!(
                    "native mode needs every node on the underlay's L2 segment, but node {} ({}) is reached {}; use mode = \"vxlan\"",
                    node.name,
                    node.underlay_ip,
                    match route.gateway {
                        Some(gw) => format!("through the router {gw}"),
                        None => "through another interface".to_string(),
                    }
                );
            }
        }
        Ok(())
    }

    async fn apply(
        &mut self,
        changes: &NodeChanges,
        desired: &BTreeMap<String, NodeSpec>,
        dp: &mut Dataplane,
        nl: &Netlink,
    ) -> Result<()> {
        for node in &changes.remove {
            if node.name != self.me {
                nl.delete_route(node.pod_cidr).await?;
            }
            dp.remove_node(node.pod_cidr, node.underlay_ip)?;
            self.programmed.remove(&node.name);
        }
        for node in &changes.upsert {
            let local = node.name == self.me;
            dp.set_node(node.pod_cidr, node.underlay_ip, local)?;
            if !local {
                // The host's own traffic to the subnet leaves by the same
                // next hop as traffic to the node (VXLAN: `to_netdev`
                // encapsulates it on the way out).
                let via = nl.route_to(node.underlay_ip).await?.gateway.unwrap_or(node.underlay_ip);
                let mtu = (self.mode == Mode::Vxlan).then(|| self.route_mtu());
                nl.replace_route(node.pod_cidr, via, self.underlay.index, mtu).await?;
            }
            self.programmed.insert(node.name.clone(), node.clone());
        }
        let all: Vec<&NodeSpec> = desired.values().collect();
        masquerade::apply(&masquerade::ruleset(self.my_cidr, &all))?;
        self.status.generation += 1;
        Ok(())
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// MTU of routes that leave the node.
    pub fn route_mtu(&self) -> u32 {
        match self.mode {
            Mode::Vxlan => self.underlay.mtu - VXLAN_OVERHEAD,
            Mode::Native => self.underlay.mtu,
        }
    }

    pub fn view(&self) -> ClusterView {
        ClusterView {
            mode: self.mode,
            underlay: self.underlay.name.clone(),
            underlay_mtu: self.underlay.mtu,
            route_mtu: self.route_mtu(),
            nodes: self.programmed.values().cloned().collect(),
            source: self.status.clone(),
        }
    }
}
