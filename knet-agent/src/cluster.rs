//! The desired state of the cluster as plain values: every node with its
//! underlay address and pod subnet, validated as a whole. Sources produce
//! these; `reconcile` programs them. No I/O here.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub name: String,
    pub underlay_ip: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
    /// The node's VXLAN MAC as it publishes it (flannel's `VtepMAC`): the
    /// inner destination of frames sent to it. `None` when its source does
    /// not say (a knet peer, whose decapsulation ignores the inner MAC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<MacAddr>,
}

/// A set of nodes no two of which clash, keyed by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSet {
    nodes: BTreeMap<String, NodeSpec>,
}

/// Why a set of nodes is not a cluster: the node at `index` (in the order
/// the source gave them) clashes with the one at `other`, if any.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct NodeSetError {
    pub index: usize,
    pub other: Option<usize>,
    pub msg: String,
}

impl NodeSet {
    /// Checks that names and underlay addresses are unique, that no pod
    /// subnet overlaps another, and that no underlay address lies in a pod
    /// subnet. O(n log n): sorting makes every clash a clash of neighbours.
    pub fn validate(nodes: Vec<NodeSpec>) -> Result<NodeSet, NodeSetError> {
        let clash = |index: usize, other: usize, msg: String| NodeSetError { index, other: Some(other), msg };
        let mut order: Vec<usize> = (0..nodes.len()).collect();

        // Later duplicates are reported against the first occurrence.
        order.sort_by(|&a, &b| nodes[a].name.cmp(&nodes[b].name).then(a.cmp(&b)));
        for w in order.windows(2) {
            let (first, dup) = (w[0], w[1]);
            if nodes[first].name == nodes[dup].name {
                return Err(clash(dup, first, format!("duplicate node name {}", nodes[dup].name)));
            }
        }
        order.sort_by(|&a, &b| nodes[a].underlay_ip.cmp(&nodes[b].underlay_ip).then(a.cmp(&b)));
        for w in order.windows(2) {
            let (first, dup) = (w[0], w[1]);
            if nodes[first].underlay_ip == nodes[dup].underlay_ip {
                let msg = format!("underlay IP {} is already node {}'s", nodes[dup].underlay_ip, nodes[first].name);
                return Err(clash(dup, first, msg));
            }
        }
        // CIDRs either nest or are disjoint; sorted by first address (the
        // larger first on a tie), an overlap always shows between neighbours.
        order.sort_by(|&a, &b| {
            let (x, y) = (&nodes[a].pod_cidr, &nodes[b].pod_cidr);
            x.network().cmp(&y.network()).then(x.prefix_len().cmp(&y.prefix_len())).then(a.cmp(&b))
        });
        for w in order.windows(2) {
            let (outer, inner) = (w[0], w[1]);
            let (o, i) = (&nodes[outer], &nodes[inner]);
            if o.pod_cidr.contains(&i.pod_cidr.network()) {
                // Report the later of the two, against the earlier.
                let (late, early) = if inner > outer { (inner, outer) } else { (outer, inner) };
                let (l, e) = (&nodes[late], &nodes[early]);
                let verb = if l.pod_cidr.contains(&e.pod_cidr) && l.pod_cidr != e.pod_cidr {
                    format!("contains node {}'s {}", e.name, e.pod_cidr)
                } else if l.pod_cidr == e.pod_cidr {
                    format!("overlaps node {}'s", e.name)
                } else {
                    format!("overlaps node {}'s {}", e.name, e.pod_cidr)
                };
                return Err(clash(late, early, format!("pod CIDR {} {verb}", l.pod_cidr)));
            }
        }
        // `order` is now sorted by subnet: find each underlay address's
        // candidate subnet by binary search.
        for (i, node) in nodes.iter().enumerate() {
            let pos = order.partition_point(|&j| nodes[j].pod_cidr.network() <= node.underlay_ip);
            if let Some(&j) = pos.checked_sub(1).map(|p| &order[p]) {
                if nodes[j].pod_cidr.contains(&node.underlay_ip) {
                    let msg = if i == j {
                        format!("underlay IP {} lies inside its own pod CIDR", node.underlay_ip)
                    } else {
                        format!("an underlay IP lies inside a pod CIDR (node {} and node {})", node.name, nodes[j].name)
                    };
                    return Err(NodeSetError { index: i.max(j), other: (i != j).then_some(i.min(j)), msg });
                }
            }
        }
        Ok(NodeSet { nodes: nodes.into_iter().map(|n| (n.name.clone(), n)).collect() })
    }

    pub fn get(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.get(name)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Nodes in name order.
    pub fn iter(&self) -> impl Iterator<Item = &NodeSpec> {
        self.nodes.values()
    }
}

/// One node's change between two sets, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeChange<'a> {
    Added(&'a NodeSpec),
    Removed(&'a NodeSpec),
    Changed { old: &'a NodeSpec, new: &'a NodeSpec },
}

/// What turned `old` into `new`, node by node, in name order.
pub fn changes<'a>(old: &'a [NodeSpec], new: &'a NodeSet) -> Vec<NodeChange<'a>> {
    let before: BTreeMap<&str, &NodeSpec> = old.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut out = Vec::new();
    for n in new.iter() {
        match before.get(n.name.as_str()) {
            None => out.push(NodeChange::Added(n)),
            Some(o) if *o != n => out.push(NodeChange::Changed { old: o, new: n }),
            Some(_) => {}
        }
    }
    for o in old {
        if new.get(&o.name).is_none() {
            out.push(NodeChange::Removed(o));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_each_added_removed_and_changed_node() {
        let old = good();
        let new =
            NodeSet::validate(vec![n("a", "192.168.0.9", "10.244.0.0/24"), n("c", "192.168.0.3", "10.244.2.0/24")])
                .unwrap();
        let found = changes(&old, &new);
        assert_eq!(
            found,
            vec![
                NodeChange::Changed { old: &old[0], new: new.get("a").unwrap() },
                NodeChange::Added(new.get("c").unwrap()),
                NodeChange::Removed(&old[1]),
            ]
        );
        assert!(changes(&old, &NodeSet::validate(good()).unwrap()).is_empty());
    }

    fn n(name: &str, ip: &str, cidr: &str) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            underlay_ip: ip.parse().unwrap(),
            pod_cidr: cidr.parse().unwrap(),
            vtep_mac: None,
        }
    }

    fn good() -> Vec<NodeSpec> {
        vec![n("a", "192.168.0.1", "10.244.0.0/24"), n("b", "192.168.0.2", "10.244.1.0/24")]
    }

    #[test]
    fn a_good_set_is_keyed_by_name() {
        let set = NodeSet::validate(good()).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.get("b").unwrap().underlay_ip, Ipv4Addr::new(192, 168, 0, 2));
        assert!(NodeSet::validate(vec![]).unwrap().is_empty());
    }

    #[test]
    fn every_clash_names_both_nodes() {
        for (extra, msg, other) in [
            (n("c", "192.168.0.3", "10.244.1.0/24"), "pod CIDR 10.244.1.0/24 overlaps node b's", 1),
            (n("c", "192.168.0.3", "10.244.0.0/16"), "pod CIDR 10.244.0.0/16 contains node a's 10.244.0.0/24", 0),
            (n("c", "192.168.0.3", "10.244.1.128/25"), "pod CIDR 10.244.1.128/25 overlaps node b's 10.244.1.0/24", 1),
            (n("b", "192.168.0.3", "10.244.2.0/24"), "duplicate node name b", 1),
            (n("c", "192.168.0.2", "10.244.2.0/24"), "underlay IP 192.168.0.2 is already node b's", 1),
            (n("c", "10.244.1.7", "10.244.2.0/24"), "an underlay IP lies inside a pod CIDR (node c and node b)", 1),
        ] {
            let mut nodes = good();
            nodes.push(extra);
            let e = NodeSet::validate(nodes).unwrap_err();
            assert_eq!((e.msg.as_str(), e.index, e.other), (msg, 2, Some(other)));
        }
        let e = NodeSet::validate(vec![n("a", "10.0.0.5", "10.0.0.0/24")]).unwrap_err();
        assert_eq!(e.msg, "underlay IP 10.0.0.5 lies inside its own pod CIDR");
    }

    #[test]
    fn an_overlap_far_apart_in_the_input_is_found() {
        // 10.0.0.0/8 contains the last of many disjoint subnets.
        let mut nodes: Vec<NodeSpec> = (0..200)
            .map(|i| {
                n(&format!("n{i}"), &format!("192.168.{}.{}", i / 250, 1 + i % 250), &format!("10.{}.0.0/16", i + 1))
            })
            .collect();
        nodes.insert(0, n("big", "172.16.0.1", "10.0.0.0/8"));
        let e = NodeSet::validate(nodes).unwrap_err();
        assert!(e.msg.contains("overlaps node big's 10.0.0.0/8") || e.msg.contains("contains"), "{e}");
        assert_eq!(e.other, Some(0));
    }

    #[test]
    fn ten_thousand_nodes_validate() {
        let nodes: Vec<NodeSpec> = (0..10_000u32)
            .map(|i| {
                let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 1)) + i);
                let net = Ipv4Net::new(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + (i << 8)), 24).unwrap();
                NodeSpec { name: format!("node-{i}"), underlay_ip: ip, pod_cidr: net, vtep_mac: None }
            })
            .collect();
        assert_eq!(NodeSet::validate(nodes).unwrap().len(), 10_000);
    }
}
