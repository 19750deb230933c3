//! The difference between the nodes the source wants and the nodes
//! programmed, so that only the difference is applied.

use std::collections::BTreeMap;

use crate::nodes::NodeSpec;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct NodeChanges {
    /// New nodes, and nodes whose address or subnet changed (new value).
    pub upsert: Vec<NodeSpec>,
    /// Nodes gone, and the old value of changed ones.
    pub remove: Vec<NodeSpec>,
}

impl NodeChanges {
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }
}

pub fn diff(programmed: &BTreeMap<String, NodeSpec>, desired: &BTreeMap<String, NodeSpec>) -> NodeChanges {
    let mut changes = NodeChanges::default();
    for (name, old) in programmed {
        match desired.get(name) {
            Some(new) if new == old => {}
            Some(new) => {
                changes.remove.push(old.clone());
                changes.upsert.push(new.clone());
            }
            None => changes.remove.push(old.clone()),
        }
    }
    for (name, new) in desired {
        if !programmed.contains_key(name) {
            changes.upsert.push(new.clone());
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: &str, cidr: &str) -> (String, NodeSpec) {
        (name.into(), NodeSpec { name: name.into(), underlay_ip: ip.parse().unwrap(), pod_cidr: cidr.parse().unwrap() })
    }

    #[test]
    fn only_the_difference() {
        let programmed: BTreeMap<_, _> = [
            node("a", "192.168.0.1", "10.0.1.0/24"),
            node("b", "192.168.0.2", "10.0.2.0/24"),
            node("c", "192.168.0.3", "10.0.3.0/24"),
        ]
        .into();
        let desired: BTreeMap<_, _> = [
            node("a", "192.168.0.1", "10.0.1.0/24"),
            node("b", "192.168.0.9", "10.0.2.0/24"),
            node("d", "192.168.0.4", "10.0.4.0/24"),
        ]
        .into();
        let c = diff(&programmed, &desired);
        let names = |v: &[NodeSpec]| v.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&c.upsert), ["b", "d"]);
        assert_eq!(names(&c.remove), ["b", "c"]);
        assert_eq!(c.remove[0].underlay_ip.to_string(), "192.168.0.2");
        assert!(diff(&desired, &desired).is_empty());
    }
}
