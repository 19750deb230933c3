//! A namespace cluster: an underlay bridge, nodes on it each with a real
//! agent and the static node file, pods on every node, and a host outside
//! the cluster on the same underlay.

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{netns::unique_name, wait, Agent, AgentOptions, Netns, Node, Pod};

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

pub fn node_name(i: usize) -> String {
    format!("node-{i}")
}

/// The node file line of node `i`.
pub fn node_line(i: usize) -> String {
    format!("{} {} {}\n", node_name(i), node_address(i), pod_cidr(i))
}

pub struct Cluster {
    // Drop order: agents stop, then pods, nodes, the outside host, the
    // fabric, and last the directory with the node file.
    pub agents: Vec<Agent>,
    pub pods: Vec<Vec<Pod>>,
    pub nodes: Vec<Node>,
    pub outside: Netns,
    pub fabric: Netns,
    dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Cluster {
    /// `nodes` nodes with `pods` pods each, in `mode` ("vxlan" or "native").
    pub fn new(nodes: usize, pods: usize, mode: &str) -> Result<Self> {
        let dir = TempDir(std::env::temp_dir().join(unique_name("cluster")));
        std::fs::create_dir_all(&dir.0)?;
        let fabric = Netns::new("fabric")?;
        fabric.ip(&["link", "add", "br0", "type", "bridge"])?;
        fabric.ip(&["link", "set", "br0", "up"])?;
        let outside = Netns::new("outside")?;
        fabric.ip(&["link", "add", "out0", "type", "veth", "peer", "name", "eth0", "netns", outside.name()])?;
        fabric.ip(&["link", "set", "out0", "master", "br0", "up"])?;
        outside.ip(&["addr", "add", &format!("{OUTSIDE}/24"), "dev", "eth0"])?;
        outside.ip(&["link", "set", "eth0", "up"])?;

        let mut cluster = Cluster { agents: vec![], pods: vec![], nodes: vec![], outside, fabric, dir };
        let file: String = (0..nodes).map(node_line).collect();
        cluster.write_nodes_file(&file)?;
        for i in 0..nodes {
            let node = Node::on_fabric(&format!("node{i}"), node_address(i), &cluster.fabric, &format!("n{i}"))?;
            cluster.nodes.push(node);
        }
        let extra = format!("nodes_file = {:?}\nmode = {mode:?}\n", cluster.nodes_file().display().to_string());
        for i in 0..nodes {
            let opts = AgentOptions { node_name: node_name(i), pod_cidr: pod_cidr(i) };
            let agent = Agent::start_with(&cluster.nodes[i].ns, &opts, &extra)?;
            let route_mtu = agent.nodes()?["route_mtu"].as_u64().context("agent reports no route_mtu")? as u32;
            cluster.nodes[i].set_pod_routes(&pod_cidr(i), route_mtu);
            let mut node_pods = Vec::new();
            for j in 0..pods {
                let pod = cluster.nodes[i].add_pod(&format!("n{i}p{j}"), pod_address(i, j))?;
                agent.add_pod(&pod)?;
                node_pods.push(pod);
            }
            cluster.agents.push(agent);
            cluster.pods.push(node_pods);
        }
        Ok(cluster)
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
    pub fn wait_for_source(&self, i: usize, after: u64) -> Result<Value> {
        wait::until(&format!("agent {i} to take in the node file"), Duration::from_secs(10), || {
            let v = self.agents[i].nodes().ok()?;
            let generation = v["source"]["generation"].as_u64()?;
            (generation > after || !v["source"]["error"].is_null()).then_some(v)
        })
    }

    /// Every pod with its node index.
    pub fn all_pods(&self) -> impl Iterator<Item = (usize, &Pod)> {
        self.pods.iter().enumerate().flat_map(|(i, ps)| ps.iter().map(move |p| (i, p)))
    }
}

impl Agent {
    /// `GET /v1/nodes`.
    pub fn nodes(&self) -> Result<Value> {
        let (status, v) = self.request("GET", "/v1/nodes", None)?;
        if status != 200 {
            bail!("nodes: {status} {v}");
        }
        Ok(v)
    }
}
