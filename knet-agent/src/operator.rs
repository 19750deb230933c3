//! `knet-agent status` and `knet-agent inspect`: the node as an operator
//! looks at it. `status` asks the running agent and falls back to the
//! pins when it does not answer; `inspect` reads the pins and compares
//! them with what the agent reports, when it answers. Both print text for
//! people or JSON (`--json`) for machines.

use std::{fmt::Write as _, path::Path};

use anyhow::Result;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{
    api::{client::Client, NodeView, ProgramId, StatEntry},
    cluster::NodeSpec,
    config::Mode,
    dataplane::{Dataplane, PinnedMaps},
    endpoints::Endpoint,
    host::Netlink,
    inspect::{self, AgentReport, PeerTraffic, PinnedState},
    reconciler::{ClusterView, SourceStatus},
};

/// Whether the agent answered, and if not, why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentReach {
    pub reachable: bool,
    pub error: Option<String>,
}

/// A device's tcx ingress programs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachPoint {
    pub ifname: String,
    pub programs: Vec<AttachedProgram>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachedProgram {
    pub name: String,
    #[serde(flatten)]
    pub id: ProgramId,
}

/// `knet-agent status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub agent: AgentReach,
    /// From the agent only (the pins do not know it).
    pub node_name: Option<String>,
    /// `None`: this node's pods only (no cross-node path programmed).
    pub mode: Option<Mode>,
    pub pod_cidr: Option<Ipv4Net>,
    pub underlay: Option<String>,
    pub route_mtu: Option<u32>,
    /// From the agent only.
    pub source: Option<SourceStatus>,
    /// The other nodes: name (`?` from the pins), address, pod subnet,
    /// and the tunnel traffic counted to and from each.
    pub peers: Vec<Peer>,
    pub endpoints: Vec<Endpoint>,
    pub attach_points: Vec<AttachPoint>,
    /// Counters that are not zero.
    pub counters: Vec<StatEntry>,
}

/// A peer node and its traffic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Peer {
    #[serde(flatten)]
    pub node: NodeSpec,
    /// `None`: no packet has crossed the tunnel to or from it (or native
    /// mode, which counts no tunnel).
    pub traffic: Option<PeerTraffic>,
}

fn with_traffic(nodes: impl Iterator<Item = NodeSpec>, traffic: &[PeerTraffic]) -> Vec<Peer> {
    nodes
        .map(|node| {
            let traffic = traffic.iter().find(|t| t.node_ip == node.underlay_ip).cloned();
            Peer { node, traffic }
        })
        .collect()
}

/// What a running agent says, or why it said nothing.
async fn ask_agent(socket: &Path) -> Result<(AgentReport, Option<NodeView>), String> {
    let client = Client::new(socket);
    let fail = |e: crate::api::client::CallError| e.to_string();
    let stats: Vec<StatEntry> = client.get("/v1/stats").await.map_err(fail)?;
    let endpoints: Vec<Endpoint> = client.get("/v1/endpoints").await.map_err(fail)?;
    let cluster: ClusterView = client.get("/v1/nodes").await.map_err(fail)?;
    // 503 until the node's pod CIDR is known: not an error here.
    let node: Option<NodeView> = client.get("/v1/node").await.ok();
    let pod_cidr = node.as_ref().map(|n| n.pod_cidr);
    Ok((AgentReport { endpoints, cluster, pod_cidr, stats }, node))
}

fn reach(agent: &Result<impl Sized, String>) -> AgentReach {
    match agent {
        Ok(_) => AgentReach { reachable: true, error: None },
        Err(e) => AgentReach { reachable: false, error: Some(e.clone()) },
    }
}

fn attach_points(ifnames: impl IntoIterator<Item = String>) -> Vec<AttachPoint> {
    ifnames
        .into_iter()
        .filter_map(|ifname| {
            let programs = Dataplane::tcx_ingress_programs(&ifname).ok()?;
            let programs = programs
                .into_iter()
                .map(|(name, id, tag)| AttachedProgram { name, id: ProgramId::new(id, tag) })
                .collect();
            Some(AttachPoint { ifname, programs })
        })
        .collect()
}

fn nonzero(stats: Vec<StatEntry>) -> Vec<StatEntry> {
    stats.into_iter().filter(|s| s.packets > 0).collect()
}

/// The node's status from the agent, or from the pins when it is down.
pub async fn status(socket: &Path, pin_dir: &Path) -> Result<StatusReport> {
    let agent = ask_agent(socket).await;
    let agent_reach = reach(&agent);
    let netlink = Netlink::connect()?;
    match agent {
        Ok((report, node)) => {
            let cluster = report.cluster;
            let local = cluster.local.as_ref().map(|l| l.name.clone());
            // The counters are the kernel's, read from their pin alone; a
            // pin this command cannot read costs only the counters.
            let traffic = PinnedMaps::open(pin_dir).and_then(|m| inspect::peer_traffic(&m)).unwrap_or_default();
            let others = cluster.nodes.iter().filter(|n| Some(&n.name) != local.as_ref()).cloned();
            let peers = with_traffic(others, &traffic);
            let devices = cluster.underlay.iter().cloned().chain(report.endpoints.iter().map(|e| e.host_veth.clone()));
            Ok(StatusReport {
                agent: agent_reach,
                node_name: node.as_ref().map(|n| n.node_name.clone()),
                mode: node.as_ref().and_then(|n| n.mode),
                pod_cidr: report.pod_cidr,
                underlay: cluster.underlay.clone(),
                route_mtu: cluster.route_mtu,
                source: Some(cluster.source.clone()),
                peers,
                attach_points: attach_points(devices),
                endpoints: report.endpoints,
                counters: nonzero(report.stats),
            })
        }
        Err(_) => {
            let pinned = PinnedState::read(pin_dir, &netlink).await?;
            let own = pinned.subnets.iter().find(|s| s.local).map(|s| s.subnet);
            let others = pinned.subnets.iter().filter(|s| !s.local).map(|s| NodeSpec {
                name: "?".into(),
                underlay_ip: s.node_ip,
                pod_cidr: s.subnet,
                vtep_mac: None,
            });
            let peers = with_traffic(others, &pinned.peers);
            let underlay =
                pinned.links.iter().find(|l| l.ifindex == pinned.underlay_ifindex).and_then(|l| l.ifname.clone());
            let endpoints = pinned
                .endpoints
                .iter()
                .map(|e| Endpoint {
                    ip: e.ip,
                    host_veth: e.host_veth.clone().unwrap_or_else(|| "?".into()),
                    host_ifindex: e.host_ifindex,
                    pod_mac: e.pod_mac,
                    host_mac: e.host_mac,
                })
                .collect();
            let mut devices: Vec<String> = pinned.links.iter().filter_map(|l| l.ifname.clone()).collect();
            devices.dedup();
            Ok(StatusReport {
                agent: agent_reach,
                node_name: None,
                mode: pinned.mode,
                pod_cidr: own,
                underlay,
                route_mtu: None,
                source: None,
                peers,
                endpoints,
                attach_points: attach_points(devices),
                counters: nonzero(pinned.stats),
            })
        }
    }
}

/// What `inspect` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    Endpoints,
    Nodes,
    Stats,
    Drops,
    Links,
}

/// `knet-agent inspect`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InspectReport {
    pub section: Section,
    pub agent: AgentReach,
    pub pinned: PinnedState,
    /// Where the pins and the agent's report differ, for this section;
    /// empty when the agent does not answer.
    pub disagreements: Vec<String>,
}

/// Reads the pins (after asking the agent, so that pinned counters are the
/// later reading) and compares.
pub async fn inspect(section: Section, socket: &Path, pin_dir: &Path) -> Result<InspectReport> {
    let agent = ask_agent(socket).await;
    let pinned = PinnedState::read(pin_dir, &Netlink::connect()?).await?;
    let disagreements = match &agent {
        Ok((a, _)) => match section {
            Section::Endpoints => inspect::endpoints_disagree(&pinned.endpoints, &a.endpoints),
            Section::Nodes => inspect::nodes_disagree(&pinned.subnets, &a.cluster, a.pod_cidr),
            Section::Stats | Section::Drops => inspect::stats_disagree(&pinned.stats, &a.stats),
            Section::Links => inspect::links_disagree(&pinned.links, &a.endpoints, a.cluster.underlay.as_deref()),
        },
        Err(_) => Vec::new(),
    };
    Ok(InspectReport { section, agent: reach(&agent), pinned, disagreements })
}

fn agent_line(out: &mut String, agent: &AgentReach, fallback: &str) {
    match &agent.error {
        None => writeln!(out, "agent:      running").unwrap(),
        Some(e) => writeln!(out, "agent:      NOT REACHABLE ({e}); {fallback}").unwrap(),
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>, none: &str) -> String {
    v.as_ref().map(|v| v.to_string()).unwrap_or_else(|| none.to_string())
}

fn mode_name(mode: Option<Mode>) -> String {
    mode.map_or_else(|| "local only (no cross-node path)".into(), |m| m.to_string())
}

impl StatusReport {
    pub fn text(&self) -> String {
        let mut o = String::new();
        agent_line(&mut o, &self.agent, "showing what the pins hold");
        writeln!(o, "node:       {}", opt(&self.node_name, "? (the agent knows)")).unwrap();
        writeln!(o, "mode:       {}", mode_name(self.mode)).unwrap();
        writeln!(o, "pod CIDR:   {}", opt(&self.pod_cidr, "not known yet")).unwrap();
        writeln!(o, "underlay:   {}", opt(&self.underlay, "none")).unwrap();
        if let Some(mtu) = self.route_mtu {
            writeln!(o, "route MTU:  {mtu}").unwrap();
        }
        match &self.source {
            Some(s) => writeln!(
                o,
                "source:     {:?}, {}, generation {}{}",
                s.kind,
                if s.in_sync { "in sync" } else { "NOT in sync" },
                s.generation,
                s.error.as_ref().map(|e| format!(", error: {e}")).unwrap_or_default()
            )
            .unwrap(),
            None => writeln!(o, "source:     ? (the agent knows)").unwrap(),
        }
        writeln!(o, "peers:      {}", self.peers.len()).unwrap();
        for p in &self.peers {
            let traffic = p.traffic.as_ref().map_or_else(
                || "no tunnel traffic".to_string(),
                |t| {
                    format!(
                        "tx {} packets {} bytes, rx {} packets {} bytes",
                        t.tx_packets, t.tx_bytes, t.rx_packets, t.rx_bytes
                    )
                },
            );
            writeln!(o, "  {:<24} {:<16} {:<20} {traffic}", p.node.name, p.node.underlay_ip, p.node.pod_cidr).unwrap();
        }
        writeln!(o, "endpoints:  {}", self.endpoints.len()).unwrap();
        for e in &self.endpoints {
            writeln!(o, "  {:<16} {:<16} ifindex {:<6} pod {}", e.ip, e.host_veth, e.host_ifindex, e.pod_mac).unwrap();
        }
        writeln!(o, "attached:   {}", self.attach_points.len()).unwrap();
        for a in &self.attach_points {
            let programs: Vec<String> = a.programs.iter().map(|p| format!("{} (id {})", p.name, p.id.id)).collect();
            writeln!(o, "  {:<16} {}", a.ifname, programs.join(", ")).unwrap();
        }
        writeln!(o, "counters:").unwrap();
        for s in &self.counters {
            writeln!(o, "  {:<32} {:>14} packets {:>18} bytes", s.name, s.packets, s.bytes).unwrap();
        }
        o
    }
}

impl InspectReport {
    pub fn text(&self) -> String {
        let mut o = String::new();
        agent_line(&mut o, &self.agent, "pins only, nothing to compare with");
        let p = &self.pinned;
        match self.section {
            Section::Endpoints => {
                writeln!(o, "ENDPOINTS: {} entries", p.endpoints.len()).unwrap();
                for e in &p.endpoints {
                    writeln!(
                        o,
                        "  {:<16} ifindex {:<6} {:<16} pod {} host {}",
                        e.ip,
                        e.host_ifindex,
                        opt(&e.host_veth, "(device gone)"),
                        e.pod_mac,
                        e.host_mac
                    )
                    .unwrap();
                }
            }
            Section::Nodes => {
                writeln!(o, "mode: {}, VNI {}, node {}", mode_name(p.mode), p.vni, p.node_ip).unwrap();
                writeln!(o, "NODE_SUBNETS: {} entries", p.subnets.len()).unwrap();
                for s in &p.subnets {
                    writeln!(o, "  {:<20} via {:<16}{}", s.subnet, s.node_ip, if s.local { " (local)" } else { "" })
                        .unwrap();
                }
                writeln!(o, "NODES (tunnel sources): {}", p.tunnel_sources.len()).unwrap();
                for t in &p.tunnel_sources {
                    writeln!(o, "  {t}").unwrap();
                }
            }
            Section::Stats | Section::Drops => {
                let drops = self.section == Section::Drops;
                writeln!(o, "STATS{}:", if drops { " (drops)" } else { "" }).unwrap();
                for s in p.stats.iter().filter(|s| !drops || (s.drop && s.packets > 0)) {
                    write!(o, "  {:<32} {:>14} packets {:>18} bytes", s.name, s.packets, s.bytes).unwrap();
                    match knet_common::Stat::from_name(&s.name).filter(|_| drops) {
                        Some(stat) => writeln!(o, "  {}", stat.explain()).unwrap(),
                        None => writeln!(o).unwrap(),
                    }
                }
            }
            Section::Links => {
                writeln!(o, "pinned links: {}", p.links.len()).unwrap();
                for l in &p.links {
                    writeln!(o, "  {:<12} ifindex {:<6} {}", l.program, l.ifindex, opt(&l.ifname, "(device gone)"))
                        .unwrap();
                }
            }
        }
        if self.agent.reachable {
            if self.disagreements.is_empty() {
                writeln!(o, "the agent agrees").unwrap();
            } else {
                writeln!(o, "DISAGREEMENTS with the agent: {}", self.disagreements.len()).unwrap();
                for d in &self.disagreements {
                    writeln!(o, "  {d}").unwrap();
                }
            }
        }
        o
    }
}
