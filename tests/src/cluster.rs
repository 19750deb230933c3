//! A namespace cluster: an underlay bridge, nodes on it each with a real
//! agent and the static node file, pods on every node, and a host outside
//! the cluster on the same underlay. Pods are wired by the harness
//! (`Cluster::new`) or through the knet CNI plugin as a container runtime
//! runs it (`Cluster::with_cni`).

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use knet_agent::config::Mode;
use knet_agent::reconciler::ClusterView;

use crate::{
    cni::{Attachment, KnetNetwork},
    etcd::Etcd,
    kube_api::KubeApi,
    netns::unique_name,
    wait, Agent, AgentOptions, Netns, Node, Pod,
};

/// The underlay subnet; node `i` is `.10 + i`, the outside host `.250`.
pub const UNDERLAY_PREFIX: [u8; 3] = [192, 168, 77];
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 250);

pub fn node_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(UNDERLAY_PREFIX[0], UNDERLAY_PREFIX[1], UNDERLAY_PREFIX[2], 10 + i as u8)
}

pub fn pod_cidr(i: usize) -> String {
    format!("10.244.{i}.0/24")
}

pub fn pod_address(node: usize, pod: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, node as u8, 2 + pod as u8)
}

/// Pod `pod`'s address in a node's subnet `cidr` (as `pod_address` does
/// for `pod_cidr(i)`).
pub fn pod_address_in(cidr: Ipv4Net, pod: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()) + 2 + pod as u32)
}

/// Node `i`'s port on the fabric's bridge: what it sends arrives there.
pub fn fabric_port(i: usize) -> String {
    format!("n{i}")
}

pub fn node_name(i: usize) -> String {
    format!("node-{i}")
}

/// The node file line of node `i`.
pub fn node_line(i: usize) -> String {
    format!("{} {} {}\n", node_name(i), node_address(i), pod_cidr(i))
}

/// Where the agents learn the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The static node file.
    File,
    /// `Node` objects of a `KubeApi` server on the outside host.
    Kubernetes,
    /// Subnet leases in a real etcd on the outside host.
    Etcd(EtcdOptions),
}

/// An etcd cluster's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdOptions {
    /// The agents' `etcd_lease_ttl_seconds`.
    pub lease_ttl_seconds: u64,
    /// flannel's network config, written at `<prefix>/config` first.
    pub network_config: &'static str,
    /// etcd serves TLS only, to holders of a client certificate, and the
    /// agents are given the CA, their certificate and its key.
    pub tls: bool,
}

/// The etcd cluster's prefix (flannel's default).
pub const ETCD_PREFIX: &str = knet_agent::config::DEFAULT_ETCD_PREFIX;
/// The network config an etcd cluster gets by default. Agents lease from
/// 10.244.1.0 to 10.244.63.0 only (flannel's SubnetMax), so the leases a
/// test writes by hand (10.244.64.0/18 and up: flannel nodes, hostile
/// values) never land on a key an agent leased, which a random pick over
/// the whole /16 did now and then (an agent's own lease overwritten).
pub const ETCD_NETWORK: &str = r#"{"Network": "10.244.0.0/16", "SubnetLen": 24, "SubnetMax": "10.244.63.0", "Backend": {"Type": "vxlan", "VNI": 1}}"#;

/// How a cluster's pods are wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wiring {
    /// `Node::add_pod` and the agent's API, by the harness.
    Harness,
    /// CNI ADD through the knet plugin with host-local IPAM.
    Cni,
}

pub struct Cluster {
    // Drop order: CNI DEL of every pod the plugin added (agents still up),
    // agents stop, then pods, nodes, the outside host, the fabric, the CNI
    // networks' IPAM directories, and last the directory with the node file.
    /// With `with_cni`: one per pod, in the order of `all_pods`.
    pub attachments: Vec<Attachment>,
    pub agents: Vec<Agent>,
    /// With `kubernetes`: the API server the agents watch.
    pub kube: Option<KubeApi>,
    /// With `etcd`: the etcd the agents lease from, on the outside host.
    pub etcd: Option<Etcd>,
    pub pods: Vec<Vec<Pod>>,
    pub nodes: Vec<Node>,
    pub outside: Netns,
    pub fabric: Netns,
    /// With `with_cni`: each node's knet network (config, IPAM directory).
    pub networks: Vec<KnetNetwork>,
    /// Each node's pod subnet: `pod_cidr(i)`, or with `etcd` what node
    /// `i`'s agent leased.
    pub pod_cidrs: Vec<Ipv4Net>,
    dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Cluster {
    /// `nodes` nodes with `pods` pods each, in `mode`;
    /// pod `j` of node `i` is `pod_address(i, j)`, wired by the harness.
    pub fn new(nodes: usize, pods: usize, mode: Mode) -> Result<Self> {
        Self::build(nodes, pods, mode, Wiring::Harness, Source::File)
    }

    /// Like `new`, but the agents watch `Node` objects of a Kubernetes API
    /// server (`kube`, on the outside host) and are configured with no pod
    /// CIDR; each is ready before the next starts.
    pub fn kubernetes(nodes: usize, pods: usize, mode: Mode) -> Result<Self> {
        Self::build(nodes, pods, mode, Wiring::Harness, Source::Kubernetes)
    }

    /// Like `new`, but every pod is ADDed through the knet CNI plugin as a
    /// runtime does it (host-local IPAM from the node's pod CIDR, `mtu` the
    /// node's underlay MTU, the node's agent socket); their addresses are
    /// host-local's. On drop every pod is DELed before its agent stops.
    pub fn with_cni(nodes: usize, pods: usize, mode: Mode) -> Result<Self> {
        Self::build(nodes, pods, mode, Wiring::Cni, Source::File)
    }

    /// Like `new`, but the agents lease their subnets from a real etcd
    /// (`etcd`, on the outside host) holding `options.network_config`, and
    /// are configured with no pod CIDR; each is ready before the next
    /// starts, and its pods are in the subnet it leased (`pod_cidrs`).
    /// Namespaces are named `et-...`.
    pub fn etcd(nodes: usize, pods: usize, mode: Mode, options: EtcdOptions) -> Result<Self> {
        Self::build(nodes, pods, mode, Wiring::Harness, Source::Etcd(options))
    }

    /// Agent `i`'s config lines for an etcd cluster.
    pub fn etcd_config(&self, i: usize, mode: Mode, lease_ttl_seconds: u64) -> String {
        let endpoint = self.etcd.as_ref().map(Etcd::endpoint).unwrap_or_default();
        let tls = match self.etcd.as_ref().and_then(Etcd::tls) {
            Some(t) => format!(
                "etcd_ca_file = {:?}\netcd_cert_file = {:?}\netcd_key_file = {:?}\n",
                t.ca.display().to_string(),
                t.client_cert.display().to_string(),
                t.client_key.display().to_string()
            ),
            None => String::new(),
        };
        format!(
            "node_source = \"etcd\"\netcd_endpoints = [{endpoint:?}]\npublic_ip = \"{}\"\n\
             etcd_lease_ttl_seconds = {lease_ttl_seconds}\nmode = \"{mode}\"\n{tls}",
            node_address(i)
        )
    }

    fn build(nodes: usize, pods: usize, mode: Mode, wiring: Wiring, source: Source) -> Result<Self> {
        let dir = TempDir(std::env::temp_dir().join(unique_name("cluster")));
        std::fs::create_dir_all(&dir.0)?;
        let role = |r: &str| if matches!(source, Source::Etcd(_)) { format!("et-{r}") } else { r.to_string() };
        let fabric = Netns::new(&role("fabric"))?;
        fabric.ip(&["link", "add", "br0", "type", "bridge"])?;
        fabric.ip(&["link", "set", "br0", "up"])?;
        let outside = Netns::new(&role("outside"))?;
        fabric.ip(&["link", "add", "out0", "type", "veth", "peer", "name", "eth0", "netns", outside.name()])?;
        fabric.ip(&["link", "set", "out0", "master", "br0", "up"])?;
        outside.ip(&["addr", "add", &format!("{OUTSIDE}/24"), "dev", "eth0"])?;
        outside.ip(&["link", "set", "eth0", "up"])?;

        let mut cluster = Cluster {
            attachments: vec![],
            agents: vec![],
            kube: None,
            etcd: None,
            pods: vec![],
            nodes: vec![],
            outside,
            fabric,
            networks: vec![],
            pod_cidrs: vec![],
            dir,
        };
        let file: String = (0..nodes).map(node_line).collect();
        cluster.write_nodes_file(&file)?;
        for i in 0..nodes {
            let node = Node::on_fabric(&role(&format!("node{i}")), node_address(i), &cluster.fabric, &fabric_port(i))?;
            cluster.nodes.push(node);
        }
        let extra = match source {
            Source::File => {
                format!("nodes_file = {:?}\nmode = \"{mode}\"\n", cluster.nodes_file().display().to_string())
            }
            Source::Kubernetes => {
                let api = KubeApi::start(&cluster.outside, OUTSIDE)?;
                for i in 0..nodes {
                    api.set_node(&node_name(i), node_address(i), Some(&pod_cidr(i)));
                }
                let extra = format!(
                    "node_source = \"kubernetes\"\nkubeconfig = {:?}\nmode = \"{mode}\"\n",
                    api.kubeconfig().display().to_string()
                );
                cluster.kube = Some(api);
                extra
            }
            Source::Etcd(options) => {
                let etcd = if options.tls {
                    Etcd::start_tls(&cluster.outside, OUTSIDE)?
                } else {
                    Etcd::start(&cluster.outside, OUTSIDE)?
                };
                etcd.put(&format!("{ETCD_PREFIX}/config"), options.network_config, None)?;
                cluster.etcd = Some(etcd);
                String::new()
            }
        };
        for i in 0..nodes {
            let cidr = (source == Source::File).then(|| pod_cidr(i));
            let opts = AgentOptions { node_name: node_name(i), pod_cidr: cidr };
            let extra = match source {
                Source::Etcd(options) => cluster.etcd_config(i, mode, options.lease_ttl_seconds),
                _ => extra.clone(),
            };
            let agent = Agent::start_with(&cluster.nodes[i].ns, &opts, &extra)?;
            if source != Source::File {
                agent.wait_ready(Duration::from_secs(30))?;
            }
            let leased = match source {
                Source::File | Source::Kubernetes => pod_cidr(i).parse().expect("a CIDR"),
                Source::Etcd(_) => agent.node()?.pod_cidr,
            };
            cluster.pod_cidrs.push(leased);
            cluster.agents.push(agent);
            cluster.pods.push(Vec::new());
            match wiring {
                Wiring::Harness => cluster.harness_pods(i, pods)?,
                Wiring::Cni => cluster.cni_pods(i, pods)?,
            }
        }
        Ok(cluster)
    }

    fn harness_pods(&mut self, i: usize, pods: usize) -> Result<()> {
        let route_mtu = self.agents[i].nodes()?.route_mtu.context("agent reports no route_mtu")?;
        let cidr = self.pod_cidrs[i];
        self.nodes[i].set_pod_routes(&cidr.to_string(), route_mtu);
        for j in 0..pods {
            let pod = self.nodes[i].add_pod(&format!("n{i}p{j}"), pod_address_in(cidr, j))?;
            // Kept first, so a refusal below still removes the pod.
            self.pods[i].push(pod);
            self.agents[i].add_pod(self.pods[i].last().expect("pushed"))?;
        }
        Ok(())
    }

    fn cni_pods(&mut self, i: usize, pods: usize) -> Result<()> {
        let node = &self.nodes[i];
        let underlay_mtu = node.ns.read("/sys/class/net/eth0/mtu")?;
        let mut net = KnetNetwork::new(&node.ns, &pod_cidr(i), self.agents[i].socket())?;
        net.mtu = underlay_mtu.trim().parse().with_context(|| format!("underlay mtu {underlay_mtu:?}"))?;
        self.networks.push(net);
        let net = self.networks.last().expect("pushed");
        for j in 0..pods {
            let added = net.add_pod(&format!("n{i}p{j}")).with_context(|| format!("pod {j} of node {i}"))?;
            self.attachments.push(added.attachment);
            self.pods[i].push(added.pod);
        }
        Ok(())
    }

    pub fn nodes_file(&self) -> PathBuf {
        self.dir.0.join("nodes")
    }

    /// Replaces the node file the way an editor would (write aside, rename).
    pub fn write_nodes_file(&self, text: &str) -> Result<()> {
        let tmp = self.dir.0.join("nodes.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.nodes_file())?;
        Ok(())
    }

    /// Waits (bounded) until agent `i` has taken in the current file: its
    /// generation moved past `after`, or it reported an error.
    pub fn wait_for_source(&self, i: usize, after: u64) -> Result<ClusterView> {
        wait::until(&format!("agent {i} to take in the node file"), Duration::from_secs(10), || {
            let v = self.agents[i].nodes().ok()?;
            (v.source.generation > after || v.source.error.is_some()).then_some(v)
        })
    }

    /// Every pod with its node index.
    pub fn all_pods(&self) -> impl Iterator<Item = (usize, &Pod)> {
        self.pods.iter().enumerate().flat_map(|(i, ps)| ps.iter().map(move |p| (i, p)))
    }
}
