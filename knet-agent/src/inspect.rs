//! What the kernel holds, read straight from the pins in the agent's pin
//! directory: it works while the agent is stopped or wedged. When the
//! agent answers too, what it reports is compared with what the pins hold,
//! and every difference is named (`knet-agent inspect`, and `status` when
//! the agent is down). The comparisons are plain functions.

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path};

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use knet_common::map_names;
use serde::{Deserialize, Serialize};

use crate::{
    api::StatEntry,
    config::Mode,
    dataplane::{self, PinnedMaps},
    endpoints::Endpoint,
    host::Netlink,
    mac::MacAddr,
    reconciler::ClusterView,
};

/// One `ENDPOINTS` entry, with its device's name when it still exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedEndpoint {
    pub ip: Ipv4Addr,
    pub host_ifindex: u32,
    pub host_veth: Option<String>,
    pub pod_mac: MacAddr,
    pub host_mac: MacAddr,
}

/// One `NODE_SUBNETS` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedSubnet {
    pub subnet: Ipv4Net,
    pub node_ip: Ipv4Addr,
    pub local: bool,
}

/// One pinned tcx link (`links/<program>-<ifindex>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedLinkView {
    pub program: String,
    pub ifindex: u32,
    /// The device's name in this network namespace; `None` when it is gone.
    pub ifname: Option<String>,
}

/// Everything the pins hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinnedState {
    /// `None`: only this node's pods are served (no cross-node path).
    pub mode: Option<Mode>,
    pub vni: u32,
    pub underlay_ifindex: u32,
    pub node_ip: Ipv4Addr,
    pub endpoints: Vec<PinnedEndpoint>,
    pub subnets: Vec<PinnedSubnet>,
    pub tunnel_sources: Vec<Ipv4Addr>,
    pub stats: Vec<StatEntry>,
    /// Tunnel traffic per peer node (`PEER_STATS`).
    pub peers: Vec<PeerTraffic>,
    pub links: Vec<PinnedLinkView>,
}

/// The tunnel's packets and bytes to and from one peer node, summed over
/// CPUs: what has crossed to it since its entry appeared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTraffic {
    pub node_ip: Ipv4Addr,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

/// `PEER_STATS`, summed over CPUs, by peer address.
pub fn peer_traffic(maps: &PinnedMaps) -> Result<Vec<PeerTraffic>> {
    let mut peers: Vec<PeerTraffic> = maps
        .peer_counters()?
        .into_iter()
        .map(|(node_ip, c)| PeerTraffic {
            node_ip,
            tx_packets: c.tx.packets,
            tx_bytes: c.tx.bytes,
            rx_packets: c.rx.packets,
            rx_bytes: c.rx.bytes,
        })
        .collect();
    peers.sort_by_key(|p| p.node_ip);
    Ok(peers)
}

impl PinnedState {
    /// Reads every pinned map and link under `pin_dir`; names devices
    /// through `netlink` (this network namespace's).
    pub async fn read(pin_dir: &Path, netlink: &Netlink) -> Result<Self> {
        anyhow::ensure!(
            pin_dir.join(map_names::ENDPOINTS).exists(),
            "no knet maps are pinned in {} (has an agent ever run with this bpf_pin_dir?)",
            pin_dir.display()
        );
        let maps = PinnedMaps::open(pin_dir)?;
        let mut endpoints = Vec::new();
        for (ip, e) in maps.endpoints()? {
            endpoints.push(PinnedEndpoint {
                ip,
                host_ifindex: e.host_ifindex,
                host_veth: netlink.link_by_index(e.host_ifindex).await?.map(|l| l.name),
                pod_mac: MacAddr(e.pod_mac),
                host_mac: MacAddr(e.host_mac),
            });
        }
        endpoints.sort_by_key(|e| e.ip);
        let stats = maps.stats()?.into_iter().map(StatEntry::from).collect();
        let peers = peer_traffic(&maps)?;
        let node_maps = maps.node_maps();
        let config = node_maps.config()?;
        let mut subnets: Vec<PinnedSubnet> = node_maps
            .subnets()?
            .into_iter()
            .map(|(subnet, e)| PinnedSubnet { subnet, node_ip: e.node_ip, local: e.local })
            .collect();
        subnets.sort_by_key(|s| s.subnet);
        let mut tunnel_sources = node_maps.tunnel_sources()?;
        tunnel_sources.sort();
        let mut links = Vec::new();
        let links_dir = pin_dir.join("links");
        if links_dir.exists() {
            for entry in
                std::fs::read_dir(&links_dir).with_context(|| format!("cannot list {}", links_dir.display()))?
            {
                let name = entry?.file_name().to_string_lossy().into_owned();
                let Some((program, ifindex)) = dataplane::parse_link_pin_name(&name) else { continue };
                let ifname = netlink.link_by_index(ifindex).await?.map(|l| l.name);
                links.push(PinnedLinkView { program: program.into(), ifindex, ifname });
            }
        }
        links.sort_by(|a, b| (a.ifindex, &a.program).cmp(&(b.ifindex, &b.program)));
        Ok(PinnedState {
            mode: Mode::from_code(config.mode),
            vni: config.vni,
            underlay_ifindex: config.underlay_ifindex,
            node_ip: Ipv4Addr::from(config.node_ip.to_ne_bytes()),
            endpoints,
            subnets,
            tunnel_sources,
            stats,
            peers,
            links,
        })
    }
}

/// What a running agent reported, for comparison with the pins.
pub struct AgentReport {
    pub endpoints: Vec<Endpoint>,
    pub cluster: ClusterView,
    /// This node's pod CIDR, when the agent serves one.
    pub pod_cidr: Option<Ipv4Net>,
    /// Read before the pins: no pinned counter may be lower.
    pub stats: Vec<StatEntry>,
}

/// Endpoints the agent and the map do not agree on.
pub fn endpoints_disagree(pinned: &[PinnedEndpoint], agent: &[Endpoint]) -> Vec<String> {
    let mut out = Vec::new();
    let held: BTreeMap<Ipv4Addr, &PinnedEndpoint> = pinned.iter().map(|e| (e.ip, e)).collect();
    for a in agent {
        match held.get(&a.ip) {
            None => out.push(format!("endpoint {}: the agent has it, the map does not", a.ip)),
            Some(p) if p.host_ifindex != a.host_ifindex || p.pod_mac != a.pod_mac || p.host_mac != a.host_mac => out
                .push(format!(
                    "endpoint {}: the agent has ifindex {} pod {} host {}, the map ifindex {} pod {} host {}",
                    a.ip, a.host_ifindex, a.pod_mac, a.host_mac, p.host_ifindex, p.pod_mac, p.host_mac
                )),
            Some(_) => {}
        }
    }
    for p in pinned {
        if !agent.iter().any(|a| a.ip == p.ip) {
            out.push(format!("endpoint {}: in the map, unknown to the agent", p.ip));
        }
    }
    out
}

/// Node subnets the agent and `NODE_SUBNETS` do not agree on. The agent's
/// own pod CIDR is in the map (local) even without a node source.
pub fn nodes_disagree(pinned: &[PinnedSubnet], cluster: &ClusterView, pod_cidr: Option<Ipv4Net>) -> Vec<String> {
    let mut want: BTreeMap<Ipv4Net, (Ipv4Addr, bool, &str)> = BTreeMap::new();
    for n in cluster.nodes.iter() {
        let local = cluster.local.as_ref().is_some_and(|l| l.name == n.name);
        want.insert(n.pod_cidr, (n.underlay_ip, local, &n.name));
    }
    let mut out = Vec::new();
    for p in pinned {
        match want.remove(&p.subnet) {
            Some((ip, local, name)) if ip != p.node_ip || local != p.local => out.push(format!(
                "node {name} ({}): the agent has it via {ip}{}, the map via {}{}",
                p.subnet,
                if local { " (local)" } else { "" },
                p.node_ip,
                if p.local { " (local)" } else { "" }
            )),
            Some(_) => {}
            None if p.local && Some(p.subnet) == pod_cidr => {}
            None => out.push(format!("subnet {} via {}: in the map, unknown to the agent", p.subnet, p.node_ip)),
        }
    }
    for (subnet, (ip, _, name)) in want {
        if Some(subnet) != pod_cidr || !pinned.iter().any(|p| p.subnet == subnet) {
            out.push(format!("node {name} ({subnet} via {ip}): the agent has it, the map does not"));
        }
    }
    out
}

/// Counters read from the pin after the agent's: each may only have
/// grown. One that shrank means the agent counts in another map than the
/// one pinned (the pin was replaced under it).
pub fn stats_disagree(pinned_after: &[StatEntry], agent_before: &[StatEntry]) -> Vec<String> {
    agent_before
        .iter()
        .filter_map(|a| {
            let p = pinned_after.iter().find(|p| p.name == a.name)?;
            (p.packets < a.packets || p.bytes < a.bytes).then(|| {
                format!(
                    "counter {}: the agent reports {} packets, the pinned map {} (another map than the agent's?)",
                    a.name, a.packets, p.packets
                )
            })
        })
        .collect()
}

/// Pinned links the agent's endpoints and underlay do not account for, and
/// endpoints without their `from_pod` link.
pub fn links_disagree(pinned: &[PinnedLinkView], agent: &[Endpoint], underlay: Option<&str>) -> Vec<String> {
    let from_pod = knet_common::program_names::FROM_POD;
    let mut out = Vec::new();
    for e in agent {
        if !pinned.iter().any(|l| l.program == from_pod && l.ifindex == e.host_ifindex) {
            out.push(format!("endpoint {} on {}: no pinned {from_pod} link", e.ip, e.host_veth));
        }
    }
    for l in pinned {
        let accounted = if l.program == from_pod {
            agent.iter().any(|e| e.host_ifindex == l.ifindex)
        } else {
            l.ifname.is_some() && l.ifname.as_deref() == underlay
        };
        if !accounted {
            let device = l.ifname.as_deref().unwrap_or("a device that is gone");
            out.push(format!("link {} on {device} (ifindex {}): pinned, unknown to the agent", l.program, l.ifindex));
        }
    }
    out
}

/// Every difference between the pins and the agent's report.
pub fn disagreements(pinned: &PinnedState, agent: &AgentReport) -> Vec<String> {
    let mut out = endpoints_disagree(&pinned.endpoints, &agent.endpoints);
    out.extend(nodes_disagree(&pinned.subnets, &agent.cluster, agent.pod_cidr));
    out.extend(stats_disagree(&pinned.stats, &agent.stats));
    out.extend(links_disagree(&pinned.links, &agent.endpoints, agent.cluster.underlay.as_deref()));
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{cluster::NodeSpec, reconciler::SourceStatus, sources::SourceKind};

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    fn agent_ep(ip: &str, ifindex: u32) -> Endpoint {
        Endpoint {
            ip: ip.parse().unwrap(),
            host_veth: format!("kv{ifindex}"),
            host_ifindex: ifindex,
            pod_mac: mac(1),
            host_mac: mac(2),
        }
    }

    fn pinned_ep(ip: &str, ifindex: u32) -> PinnedEndpoint {
        PinnedEndpoint {
            ip: ip.parse().unwrap(),
            host_ifindex: ifindex,
            host_veth: None,
            pod_mac: mac(1),
            host_mac: mac(2),
        }
    }

    #[test]
    fn endpoints_agree_or_each_difference_is_named() {
        let agent = [agent_ep("10.244.0.2", 5), agent_ep("10.244.0.3", 6)];
        assert!(endpoints_disagree(&[pinned_ep("10.244.0.2", 5), pinned_ep("10.244.0.3", 6)], &agent).is_empty());
        let found = endpoints_disagree(&[pinned_ep("10.244.0.2", 9), pinned_ep("10.244.0.4", 7)], &agent);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].contains("10.244.0.2") && found[0].contains("ifindex 9"), "{found:?}");
        assert!(found[1].contains("10.244.0.3: the agent has it, the map does not"), "{found:?}");
        assert!(found[2].contains("10.244.0.4: in the map, unknown to the agent"), "{found:?}");
    }

    fn view(nodes: &[(&str, &str, &str)], local: &str) -> ClusterView {
        let specs: Vec<NodeSpec> = nodes
            .iter()
            .map(|(n, ip, c)| NodeSpec {
                name: n.to_string(),
                underlay_ip: ip.parse().unwrap(),
                pod_cidr: c.parse().unwrap(),
                vtep_mac: None,
            })
            .collect();
        ClusterView {
            mode: Mode::Vxlan,
            underlay: Some("eth0".into()),
            underlay_mtu: Some(1500),
            route_mtu: Some(1450),
            local: specs.iter().find(|s| s.name == local).cloned(),
            nodes: Arc::new(specs),
            source: SourceStatus::new(SourceKind::File),
        }
    }

    fn subnet(c: &str, ip: &str, local: bool) -> PinnedSubnet {
        PinnedSubnet { subnet: c.parse().unwrap(), node_ip: ip.parse().unwrap(), local }
    }

    #[test]
    fn node_subnets_agree_or_each_difference_is_named() {
        let v = view(&[("a", "192.168.1.1", "10.244.0.0/24"), ("b", "192.168.1.2", "10.244.1.0/24")], "a");
        let own = Some("10.244.0.0/24".parse().unwrap());
        let good = [subnet("10.244.0.0/24", "192.168.1.1", true), subnet("10.244.1.0/24", "192.168.1.2", false)];
        assert!(nodes_disagree(&good, &v, own).is_empty());
        let bad = [
            subnet("10.244.0.0/24", "192.168.1.1", true),
            subnet("10.244.1.0/24", "192.168.1.9", false),
            subnet("10.9.0.0/24", "192.168.1.7", false),
        ];
        let found = nodes_disagree(&bad, &v, own);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("node b") && found[0].contains("192.168.1.9"), "{found:?}");
        assert!(found[1].contains("10.9.0.0/24 via 192.168.1.7: in the map"), "{found:?}");
        let missing = nodes_disagree(&good[..1], &v, own);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(missing[0].contains("node b (10.244.1.0/24 via 192.168.1.2): the agent has it, the map does not"));
        // Without a node source only the own subnet is in the map.
        let alone = view(&[], "a");
        assert!(nodes_disagree(&good[..1], &alone, own).is_empty());
    }

    fn stat(name: &str, packets: u64) -> StatEntry {
        StatEntry { name: name.into(), drop: false, packets, bytes: packets * 100 }
    }

    #[test]
    fn a_pinned_counter_below_the_agents_is_named() {
        let agent = [stat("redirect_local", 10), stat("pass_host", 4)];
        assert!(stats_disagree(&[stat("redirect_local", 12), stat("pass_host", 4)], &agent).is_empty());
        let found = stats_disagree(&[stat("redirect_local", 3), stat("pass_host", 4)], &agent);
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("redirect_local"), "{found:?}");
    }

    fn link(program: &str, ifindex: u32, ifname: Option<&str>) -> PinnedLinkView {
        PinnedLinkView { program: program.into(), ifindex, ifname: ifname.map(str::to_string) }
    }

    #[test]
    fn links_agree_or_each_difference_is_named() {
        let agent = [agent_ep("10.244.0.2", 5)];
        let good = [link("from_pod", 5, Some("kv5")), link("from_netdev", 2, Some("eth0"))];
        assert!(links_disagree(&good, &agent, Some("eth0")).is_empty());
        let found =
            links_disagree(&[link("from_pod", 8, None), link("from_netdev", 2, Some("eth0"))], &agent, Some("eth0"));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("no pinned from_pod link"), "{found:?}");
        assert!(found[1].contains("a device that is gone"), "{found:?}");
        // No underlay programmed: an underlay link is not accounted for.
        assert_eq!(links_disagree(&good, &agent, None).len(), 1);
    }
}
