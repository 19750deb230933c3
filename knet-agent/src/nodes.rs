//! The cluster's nodes as plain values, and the static node file that
//! lists them: one node per line, `name underlay-ip pod-cidr`, `#` starts a
//! comment. Every error names its line.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::config::{parse_pod_cidr, validate_node_name};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeSpec {
    pub name: String,
    pub underlay_ip: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
}

/// A rejected node file: what is wrong and on which line (0: the file as a
/// whole).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{msg}", if *.line > 0 { format!("line {}: ", .line) } else { String::new() })]
pub struct NodeFileError {
    pub line: usize,
    pub msg: String,
}

fn err(line: usize, msg: impl Into<String>) -> NodeFileError {
    NodeFileError { line, msg: msg.into() }
}

/// Parses and validates a node file for the node `me` whose pod CIDR is
/// `my_cidr`. Nodes are keyed by name.
pub fn parse(text: &str, me: &str, my_cidr: Ipv4Net) -> Result<BTreeMap<String, NodeSpec>, NodeFileError> {
    let mut nodes: Vec<(usize, NodeSpec)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let fields: Vec<&str> = content.split_whitespace().collect();
        let [name, ip, cidr] = fields[..] else {
            return Err(err(line, format!("expected `name underlay-ip pod-cidr`, found {content:?}")));
        };
        validate_node_name(name).map_err(|e| err(line, e.to_string()))?;
        let underlay_ip: Ipv4Addr =
            ip.parse().map_err(|_| err(line, format!("underlay IP {ip:?} is not an IPv4 address")))?;
        let pod_cidr = parse_pod_cidr(cidr).map_err(|e| err(line, e.to_string()))?;
        let spec = NodeSpec { name: name.to_string(), underlay_ip, pod_cidr };
        check_against(&nodes, line, &spec)?;
        nodes.push((line, spec));
    }
    let Some((line, mine)) = nodes.iter().find(|(_, n)| n.name == me) else {
        return Err(err(0, format!("this node ({me}) has no line in the node file")));
    };
    if mine.pod_cidr != my_cidr {
        return Err(err(
            *line,
            format!("this node's pod CIDR {} differs from the agent's pod_cidr {my_cidr}", mine.pod_cidr),
        ));
    }
    Ok(nodes.into_iter().map(|(_, n)| (n.name.clone(), n)).collect())
}

fn check_against(earlier: &[(usize, NodeSpec)], line: usize, new: &NodeSpec) -> Result<(), NodeFileError> {
    for (other_line, other) in earlier {
        let at = format!("{} (line {other_line})", other.name);
        if other.name == new.name {
            return Err(err(line, format!("duplicate node name {}, first on line {other_line}", new.name)));
        }
        if other.underlay_ip == new.underlay_ip {
            return Err(err(line, format!("underlay IP {} is already node {at}'s", new.underlay_ip)));
        }
        if other.pod_cidr == new.pod_cidr {
            return Err(err(line, format!("pod CIDR {} overlaps node {at}'s", new.pod_cidr)));
        }
        if new.pod_cidr.contains(&other.pod_cidr) {
            return Err(err(line, format!("pod CIDR {} contains node {at}'s {}", new.pod_cidr, other.pod_cidr)));
        }
        if other.pod_cidr.contains(&new.pod_cidr) {
            return Err(err(line, format!("pod CIDR {} overlaps node {at}'s {}", new.pod_cidr, other.pod_cidr)));
        }
        if other.pod_cidr.contains(&new.underlay_ip) || new.pod_cidr.contains(&other.underlay_ip) {
            return Err(err(line, format!("an underlay IP lies inside a pod CIDR (with node {at})")));
        }
    }
    if new.pod_cidr.contains(&new.underlay_ip) {
        return Err(err(line, format!("underlay IP {} lies inside its own pod CIDR", new.underlay_ip)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# name underlay pod-cidr\nnode-0 192.168.77.10 10.244.0.0/24\n\nnode-1 192.168.77.11 10.244.1.0/24  # second\n";

    fn cidr(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parses_nodes_with_comments_and_blank_lines() {
        let nodes = parse(GOOD, "node-0", cidr("10.244.0.0/24")).unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes["node-1"].underlay_ip, Ipv4Addr::new(192, 168, 77, 11));
    }

    #[test]
    fn errors_name_the_line() {
        let me = ("node-0", cidr("10.244.0.0/24"));
        for (extra, needle) in [
            ("node-2 192.168.77.12 10.244.1.0/24", "line 5: pod CIDR 10.244.1.0/24 overlaps node node-1 (line 4)"),
            ("node-2 192.168.77.12 10.244.0.0/16", "line 5: pod CIDR 10.244.0.0/16 contains node node-0 (line 2)"),
            ("node-2 192.168.77.12 10.244.1.128/25", "line 5: pod CIDR 10.244.1.128/25 overlaps node node-1"),
            ("node-2 192.168.77.300 10.244.2.0/24", "line 5: underlay IP \"192.168.77.300\" is not an IPv4"),
            ("node-1 192.168.77.12 10.244.2.0/24", "line 5: duplicate node name node-1, first on line 4"),
            ("node-2 192.168.77.11 10.244.2.0/24", "line 5: underlay IP 192.168.77.11 is already node node-1"),
            ("node-2 192.168.77.12", "line 5: expected"),
            ("node-2 192.168.77.12 10.244.2.5/24", "line 5: pod_cidr"),
            ("Node_2 192.168.77.12 10.244.2.0/24", "line 5: node_name"),
            ("node-2 10.244.1.7 10.244.2.0/24", "line 5: an underlay IP lies inside a pod CIDR"),
        ] {
            let text = format!("{GOOD}{extra}\n");
            let e = parse(&text, me.0, me.1).unwrap_err().to_string();
            assert!(e.contains(needle), "{extra}: {e}");
        }
    }

    #[test]
    fn our_own_node_must_be_there_and_agree() {
        let e = parse(GOOD, "node-9", cidr("10.244.9.0/24")).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e.to_string().contains("node-9"));
        let e = parse(GOOD, "node-1", cidr("10.244.9.0/24")).unwrap_err();
        assert_eq!(e.line, 4);
        assert!(parse("", "node-0", cidr("10.244.0.0/24")).is_err());
    }
}
