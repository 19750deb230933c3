//! The node's local state and the only path by which it changes: each
//! operation validates fully first, then programs, and undoes its own
//! partial work if a later step fails.

use std::net::Ipv4Addr;

use anyhow::Result;
use knet_common::{Counter, Stat};

use crate::{
    api::{DatapathView, NodeView},
    cluster::{Cluster, ClusterView},
    config::Config,
    dataplane::Dataplane,
    endpoints::{self, AddEndpoint, Endpoint, EndpointError, Endpoints},
    host::Netlink,
    mac::MacAddr,
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("host_veth {0} does not exist on this node")]
    NoSuchLink(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub struct Agent {
    config: Config,
    dataplane: Dataplane,
    endpoints: Endpoints,
    netlink: Netlink,
    /// Present when the agent has a node source.
    cluster: Option<Cluster>,
}

impl Agent {
    /// Loads the data path and adopts the endpoints a previous agent left
    /// pinned, so a restart does not forget the pods.
    pub async fn start(config: Config) -> Result<Self> {
        let dataplane = Dataplane::load(&config.bpf_pin_dir)?;
        let netlink = Netlink::connect()?;
        let mut dataplane = dataplane;
        let cluster = match &config.nodes_file {
            Some(file) => Some(Cluster::start(&config, file.clone(), &mut dataplane, &netlink).await?),
            None => {
                // Pins from an earlier run with a node source must not keep
                // sending pods' traffic toward nodes nobody maintains.
                dataplane.forget_cluster()?;
                for route in netlink.agent_routes().await? {
                    netlink.delete_route(route).await?;
                }
                crate::masquerade::remove();
                None
            }
        };
        let mut agent = Agent { config, dataplane, endpoints: Endpoints::default(), netlink, cluster };
        agent.adopt_pinned_endpoints().await?;
        agent.dataplane.prune_links()?;
        Ok(agent)
    }

    async fn adopt_pinned_endpoints(&mut self) -> Result<()> {
        for (ip, value) in self.dataplane.map_endpoints()? {
            let link = self.netlink.link_by_index(value.host_ifindex).await?;
            let adoptable =
                self.config.pod_cidr.contains(&ip) && link.as_ref().is_some_and(|l| l.mac.0 == value.host_mac);
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
                    tracing::info!(%ip, "adopted pinned endpoint");
                }
                _ => {
                    self.dataplane.remove_endpoint(ip)?;
                    tracing::info!(%ip, "removed stale pinned endpoint");
                }
            }
        }
        Ok(())
    }

    pub async fn add_endpoint(&mut self, req: &AddEndpoint) -> Result<Endpoint, AgentError> {
        let spec = endpoints::validate(req, self.config.pod_cidr)?;
        self.endpoints.check_new(&spec)?;
        let link = self
            .netlink
            .link_by_name(&spec.host_veth)
            .await?
            .ok_or_else(|| AgentError::NoSuchLink(spec.host_veth.clone()))?;
        let endpoint = Endpoint {
            ip: spec.ip,
            host_veth: link.name.clone(),
            host_ifindex: link.index,
            pod_mac: spec.pod_mac,
            host_mac: link.mac,
        };
        // The map entry first: once from_pod runs on the veth, the pod's own
        // packets must already pass the anti-spoofing lookup.
        self.dataplane.set_endpoint(endpoint.ip, endpoint.map_value())?;
        if let Err(e) = self.dataplane.attach_from_pod(&link.name, link.index) {
            self.dataplane.remove_endpoint(endpoint.ip)?;
            return Err(e.into());
        }
        self.endpoints.insert(endpoint.clone());
        tracing::info!(ip = %endpoint.ip, veth = %endpoint.host_veth, "endpoint added");
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
        tracing::info!(%ip, veth = %endpoint.host_veth, "endpoint deleted");
        Ok(endpoint)
    }

    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.endpoints.list()
    }

    /// A new version of the node file (see `Cluster::update`).
    pub async fn node_file_changed(&mut self, text: &str) -> Result<()> {
        let Some(cluster) = self.cluster.as_mut() else {
            return Ok(());
        };
        cluster.update(text, &mut self.dataplane, &self.netlink).await
    }

    /// What a CNI plugin needs to wire a pod on this node.
    pub fn node_view(&self) -> NodeView {
        NodeView {
            node_name: self.config.node_name.clone(),
            pod_cidr: self.config.pod_cidr,
            mode: self.cluster.as_ref().map(Cluster::mode),
            route_mtu: self.cluster.as_ref().map(Cluster::route_mtu),
        }
    }

    pub fn cluster_view(&self) -> Option<ClusterView> {
        self.cluster.as_ref().map(Cluster::view)
    }

    pub fn stats(&self) -> Result<Vec<(Stat, Counter)>> {
        self.dataplane.stats()
    }

    /// Endpoint IPs as the `ENDPOINTS` map holds them right now.
    /// What the kernel's maps hold right now (not what the agent believes).
    pub fn datapath_view(&mut self) -> Result<DatapathView> {
        let endpoint_map_ips = self.dataplane.map_endpoints()?.into_iter().map(|(ip, _)| ip).collect();
        let mut node_subnets: Vec<String> = self
            .dataplane
            .map_subnets()?
            .into_iter()
            .map(|(net, ip, local)| format!("{net} via {ip}{}", if local { " (local)" } else { "" }))
            .collect();
        node_subnets.sort();
        let mut tunnel_sources = self.dataplane.map_nodes()?;
        tunnel_sources.sort();
        Ok(DatapathView { endpoint_map_ips, node_subnets, tunnel_sources })
    }
}
