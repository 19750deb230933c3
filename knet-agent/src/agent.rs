//! This node's pods and the programs that serve them: the only path by
//! which endpoints change. Each operation validates fully first, then
//! programs, and undoes its own partial work if a later step fails. The
//! cluster's nodes are the reconciler's; it borrows the dataplane here only
//! to attach the underlay programs.

use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::Result;
use ipnet::Ipv4Net;
use knet_common::{endpoint::MAX_ENDPOINTS, Counter, Stat};

use crate::{
    api::DatapathView,
    dataplane::{Dataplane, NodeMaps, SetEndpointError},
    endpoints::{self, AddEndpoint, Endpoint, EndpointError, Endpoints},
    host::{self, Link, LinkTraits, Netlink},
    mac::MacAddr,
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("host_veth {0} does not exist on this node")]
    NoSuchLink(String),
    /// The link exists but is not a pod's host-side veth.
    #[error("{0}")]
    NotAPodLink(String),
    /// The endpoint map holds as many entries as it can.
    #[error("{0}")]
    Full(String),
    /// The agent does not know its pod subnet yet (it waits for the node
    /// source to list this node).
    #[error("{0}")]
    NotReady(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub struct Agent {
    node_name: String,
    pin_dir: PathBuf,
    dataplane: Dataplane,
    endpoints: Endpoints,
    netlink: Netlink,
    /// `None` until known: configured, or from this node's Node object.
    pod_cidr: Option<Ipv4Net>,
    /// The underlay device the reconciler attached to, never a pod's.
    underlay_ifindex: Option<u32>,
    /// The IPv4 GSO/GRO size new pods' veths get (BIG TCP), when the
    /// underlay carries packets that large; `None`: the kernel's 64 KiB.
    pod_gso_max_size: Option<u32>,
}

impl Agent {
    pub fn new(node_name: String, pin_dir: PathBuf, dataplane: Dataplane, netlink: Netlink) -> Self {
        Agent {
            node_name,
            pin_dir,
            dataplane,
            endpoints: Endpoints::default(),
            netlink,
            pod_cidr: None,
            underlay_ifindex: None,
            pod_gso_max_size: None,
        }
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    pub fn pod_gso_max_size(&self) -> Option<u32> {
        self.pod_gso_max_size
    }

    pub fn pod_cidr(&self) -> Option<Ipv4Net> {
        self.pod_cidr
    }

    /// Starts serving `pod_cidr`: adopts the endpoints a previous agent
    /// left pinned, so a restart does not forget the pods, and drops pinned
    /// entries that no longer match a veth or the subnet.
    pub async fn adopt(&mut self, pod_cidr: Ipv4Net) -> Result<()> {
        for (ip, value) in self.dataplane.map_endpoints()? {
            let link = self.netlink.link_by_index(value.host_ifindex).await?;
            let adoptable = pod_cidr.contains(&ip) && link.as_ref().is_some_and(|l| l.mac.0 == value.host_mac);
            match link {
                Some(link) if adoptable => {
                    self.dataplane.attach_from_pod(&link.name, link.index)?;
                    self.endpoints.insert(Endpoint {
                        ip,
                        host_veth: link.name,
                        host_ifindex: link.index,
                        pod_mac: MacAddr(value.pod_mac),
                        host_mac: link.mac,
                    });
                    tracing::info!(%ip, cause = "pinned by an earlier agent", "adopted pinned endpoint");
                }
                _ => {
                    self.dataplane.remove_endpoint(ip)?;
                    let cause = match link {
                        None => "its veth is gone",
                        Some(_) if !pod_cidr.contains(&ip) => "outside this node's pod CIDR",
                        Some(_) => "its veth is another device now",
                    };
                    tracing::info!(%ip, cause, "removed stale pinned endpoint");
                }
            }
        }
        self.pod_cidr = Some(pod_cidr);
        Ok(())
    }

    /// Removes pinned links that neither the endpoints nor the reconciler
    /// took over (their devices are gone, or the cluster is).
    pub fn prune_links(&mut self) -> Result<()> {
        self.dataplane.prune_links()
    }

    pub fn attach_underlay(&mut self, link: &Link, egress: bool) -> Result<()> {
        self.dataplane.attach_underlay(&link.name, link.index, egress)?;
        self.underlay_ifindex = Some(link.index);
        Ok(())
    }

    pub fn detach_underlay(&mut self, ifindex: u32) -> Result<()> {
        self.dataplane.detach_underlay(ifindex)?;
        if self.underlay_ifindex == Some(ifindex) {
            self.underlay_ifindex = None;
            self.pod_gso_max_size = None;
        }
        Ok(())
    }

    /// BIG TCP (`on`): raises the underlay's IPv4 GSO and GRO sizes and
    /// offers new pods what the underlay can then carry. A driver that
    /// cannot is no error: pods keep 64 KiB packets, which it segments.
    pub async fn set_big_tcp(&mut self, underlay: &Link, on: bool) {
        self.pod_gso_max_size = None;
        if !on {
            return;
        }
        match self.netlink.raise_gso_limits(underlay.index, host::BIG_TCP_SIZE).await {
            Ok(size) if size > host::LEGACY_GSO_SIZE => {
                tracing::info!(underlay = underlay.name, gso_ipv4_max_size = size, "BIG TCP on for new pods");
                self.pod_gso_max_size = Some(size);
            }
            Ok(size) => tracing::warn!(
                underlay = underlay.name,
                gso_ipv4_max_size = size,
                "the underlay's driver segments no more than 64 KiB: BIG TCP stays off"
            ),
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "cannot raise the underlay's GSO size: BIG TCP stays off")
            }
        }
    }

    fn serving(&self) -> Result<Ipv4Net, AgentError> {
        self.pod_cidr.ok_or_else(|| {
            AgentError::NotReady(format!(
                "this agent does not know node {}'s pod CIDR yet (waiting for the node source)",
                self.node_name
            ))
        })
    }

    pub async fn add_endpoint(&mut self, req: &AddEndpoint) -> Result<Endpoint, AgentError> {
        let started = std::time::Instant::now();
        let spec = endpoints::validate(req, self.serving()?)?;
        let programmed = self.endpoints.check_new(&spec)?.cloned();
        let (link, traits) = self
            .netlink
            .link_with_traits(&spec.host_veth)
            .await?
            .ok_or_else(|| AgentError::NoSuchLink(spec.host_veth.clone()))?;
        if let Some(existing) = programmed {
            // A retry whose first answer was lost: the same endpoint, if the
            // veth is still the device it was programmed on.
            if existing.host_ifindex == link.index {
                tracing::info!(ip = %existing.ip, veth = %existing.host_veth, "endpoint already programmed (a retry)");
                return Ok(existing);
            }
            return Err(EndpointError::Conflict(format!(
                "ip {} is already an endpoint on an earlier device named {}",
                existing.ip, existing.host_veth
            ))
            .into());
        }
        // Programs on any other link would judge the node's own traffic as
        // a pod's (anti-spoofing drops it), and the entry would be adopted
        // again after a restart.
        if let Some(why) = not_a_pod_link(&link, traits, self.underlay_ifindex) {
            return Err(AgentError::NotAPodLink(format!("host_veth {}: {why}", link.name)));
        }
        let endpoint = Endpoint {
            ip: spec.ip,
            host_veth: link.name.clone(),
            host_ifindex: link.index,
            pod_mac: spec.pod_mac,
            host_mac: link.mac,
        };
        // The map entry first: once from_pod runs on the veth, the pod's own
        // packets must already pass the anti-spoofing lookup.
        self.dataplane.set_endpoint(endpoint.ip, endpoint.map_value()).map_err(|e| match e {
            SetEndpointError::Full => AgentError::Full(format!(
                "the endpoint map of node {} is full ({MAX_ENDPOINTS} entries)",
                self.node_name
            )),
            SetEndpointError::Other(e) => AgentError::Internal(e),
        })?;
        let looked_up = started.elapsed();
        if let Err(e) = self.dataplane.attach_from_pod(&link.name, link.index) {
            self.dataplane.remove_endpoint(endpoint.ip)?;
            return Err(e.into());
        }
        self.endpoints.insert(endpoint.clone());
        tracing::info!(
            ip = %endpoint.ip,
            veth = %endpoint.host_veth,
            ms = started.elapsed().as_secs_f64() * 1e3,
            attach_ms = (started.elapsed() - looked_up).as_secs_f64() * 1e3,
            cause = "API request",
            "endpoint added"
        );
        Ok(endpoint)
    }

    pub fn delete_endpoint(&mut self, ip: Ipv4Addr) -> Result<Endpoint, AgentError> {
        let endpoint = self
            .endpoints
            .get(ip)
            .cloned()
            .ok_or_else(|| EndpointError::NotFound(format!("no endpoint with ip {ip}")))?;
        self.dataplane.detach_from_pod(endpoint.host_ifindex)?;
        self.dataplane.remove_endpoint(ip)?;
        self.endpoints.remove(ip);
        tracing::info!(%ip, veth = %endpoint.host_veth, cause = "API request", "endpoint deleted");
        Ok(endpoint)
    }

    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.endpoints.list()
    }

    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    pub fn stats(&self) -> Result<Vec<(Stat, Counter)>> {
        self.dataplane.stats()
    }

    /// What the kernel's maps hold right now (not what the agent believes).
    /// The node maps are read through their pins: the reconciler owns the
    /// agent's own handles.
    pub fn datapath_view(&mut self) -> Result<DatapathView> {
        let endpoint_map_ips = self.dataplane.map_endpoints()?.into_iter().map(|(ip, _)| ip).collect();
        let node_maps = NodeMaps::open_pinned(&self.pin_dir)?;
        let mut node_subnets: Vec<String> = node_maps
            .subnets()?
            .into_iter()
            .map(|(net, e)| match e.local {
                true => format!("{net} via {} (local)", e.node_ip),
                false => format!("{net} via {} vtep {}", e.node_ip, e.vtep_mac),
            })
            .collect();
        node_subnets.sort();
        let mut tunnel_sources = node_maps.tunnel_sources()?;
        tunnel_sources.sort();
        Ok(DatapathView { endpoint_map_ips, node_subnets, tunnel_sources })
    }
}

/// Why `link` cannot be a pod's host-side veth, if it cannot.
fn not_a_pod_link(link: &Link, traits: LinkTraits, underlay: Option<u32>) -> Option<&'static str> {
    if underlay == Some(link.index) {
        Some("is the underlay device")
    } else if !traits.veth {
        Some("is not a veth")
    } else if !traits.peer_elsewhere {
        Some("has its peer in the node's own namespace, not a pod's")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_veth_into_another_namespace_that_is_not_the_underlay_serves_a_pod() {
        let link = Link { name: "knet1234".into(), index: 7, mac: MacAddr([2, 0, 0, 0, 0, 7]), mtu: 1500 };
        let pod = LinkTraits { veth: true, peer_elsewhere: true };
        assert_eq!(not_a_pod_link(&link, pod, Some(2)), None);
        assert_eq!(not_a_pod_link(&link, pod, Some(7)), Some("is the underlay device"));
        let lo = LinkTraits { veth: false, peer_elsewhere: false };
        assert_eq!(not_a_pod_link(&link, lo, None), Some("is not a veth"));
        let local_pair = LinkTraits { veth: true, peer_elsewhere: false };
        assert!(not_a_pod_link(&link, local_pair, None).unwrap().contains("own namespace"));
    }
}
