//! The static node file: one node per line, `name underlay-ip pod-cidr
//! [vtep-mac]` (the MAC a flannel node publishes as its `VtepMAC`; absent
//! for knet nodes), `#` starts a comment. Every error names its line. The file is watched by
//! polling its content: editors replace files rather than write them in
//! place, which content polling survives where an inotify watch on the old
//! inode would not.

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use super::Publisher;
use crate::{
    cluster::{NodeSet, NodeSpec},
    config::{parse_pod_cidr, validate_node_name},
    mac::MacAddr,
};

const POLL: Duration = Duration::from_millis(250);

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

/// Parses and validates a node file for the node named `me`.
pub fn parse(text: &str, me: &str) -> Result<NodeSet, NodeFileError> {
    let mut nodes = Vec::new();
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let fields: Vec<&str> = content.split_whitespace().collect();
        let (name, ip, cidr, mac) = match fields[..] {
            [name, ip, cidr] => (name, ip, cidr, None),
            [name, ip, cidr, mac] => (name, ip, cidr, Some(mac)),
            _ => return Err(err(line, format!("expected `name underlay-ip pod-cidr [vtep-mac]`, found {content:?}"))),
        };
        validate_node_name(name).map_err(|e| err(line, e.to_string()))?;
        let underlay_ip: Ipv4Addr =
            ip.parse().map_err(|_| err(line, format!("underlay IP {ip:?} is not an IPv4 address")))?;
        let pod_cidr = parse_pod_cidr(cidr).map_err(|e| err(line, e.to_string()))?;
        let vtep_mac = mac.map(|m| parse_vtep_mac(m).map_err(|e| err(line, e))).transpose()?;
        nodes.push(NodeSpec { name: name.to_string(), underlay_ip, pod_cidr, vtep_mac });
        lines.push(line);
    }
    let set = NodeSet::validate(nodes).map_err(|e| {
        let also = e.other.map(|o| format!(" (line {})", lines[o])).unwrap_or_default();
        err(lines[e.index], format!("{}{also}", e.msg))
    })?;
    if set.get(me).is_none() {
        return Err(err(0, format!("this node ({me}) has no line in the node file")));
    }
    Ok(set)
}

/// A node's VTEP MAC: the inner destination of frames sent to it, so a
/// unicast address (a multicast one would flood the peer's segment, and
/// all zeros is no device's).
pub fn parse_vtep_mac(text: &str) -> Result<MacAddr, String> {
    let mac: MacAddr = text.parse().map_err(|e: crate::mac::BadMac| format!("VTEP MAC: {e}"))?;
    if !mac.is_valid_unicast() {
        return Err(format!("VTEP MAC {mac} is not a unicast address"));
    }
    Ok(mac)
}

/// Publishes every new version of `file`, until no one listens. A version
/// that does not parse is published as an error; the last good set stays.
pub async fn watch(file: PathBuf, me: String, publisher: Publisher) {
    let mut last: Option<String> = None;
    let mut ticker = tokio::time::interval(POLL);
    while !publisher.is_closed() {
        ticker.tick().await;
        let text = match tokio::fs::read_to_string(&file).await {
            Ok(t) => t,
            Err(e) => {
                // A file being replaced can be missing for a moment; so can
                // one at start, which is an error worth showing.
                if last.is_none() {
                    publisher.failed(format!("cannot read node file {}: {e}", file.display()));
                }
                continue;
            }
        };
        if last.as_ref() == Some(&text) {
            continue;
        }
        match parse(&text, &me) {
            Ok(set) => {
                let how = if last.is_some() { "changed" } else { "read" };
                publisher.nodes(set, format!("node file {} {how}", file.display()))
            }
            Err(e) => {
                let msg = format!("invalid node file {}: {e}", file.display());
                tracing::error!(error = %msg, "node file rejected; keeping the running state");
                publisher.failed(msg);
            }
        }
        last = Some(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# name underlay pod-cidr\nnode-0 192.168.77.10 10.244.0.0/24\n\nnode-1 192.168.77.11 10.244.1.0/24  # second\n";

    #[test]
    fn parses_nodes_with_comments_and_blank_lines() {
        let nodes = parse(GOOD, "node-0").unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes.get("node-1").unwrap().underlay_ip, Ipv4Addr::new(192, 168, 77, 11));
    }

    #[test]
    fn errors_name_the_line() {
        for (extra, needle) in [
            ("node-2 192.168.77.12 10.244.1.0/24", "line 5: pod CIDR 10.244.1.0/24 overlaps node node-1's (line 4)"),
            (
                "node-2 192.168.77.12 10.244.0.0/16",
                "line 5: pod CIDR 10.244.0.0/16 contains node node-0's 10.244.0.0/24 (line 2)",
            ),
            ("node-2 192.168.77.12 10.244.1.128/25", "line 5: pod CIDR 10.244.1.128/25 overlaps node node-1"),
            ("node-2 192.168.77.300 10.244.2.0/24", "line 5: underlay IP \"192.168.77.300\" is not an IPv4"),
            ("node-1 192.168.77.12 10.244.2.0/24", "line 5: duplicate node name node-1 (line 4)"),
            (
                "node-2 192.168.77.11 10.244.2.0/24",
                "line 5: underlay IP 192.168.77.11 is already node node-1's (line 4)",
            ),
            ("node-2 192.168.77.12", "line 5: expected"),
            ("node-2 192.168.77.12 10.244.2.0/24 02:42:0a:f4:00:05 x", "line 5: expected"),
            (
                "node-2 192.168.77.12 10.244.2.0/24 02:42:0a:f4:00",
                "line 5: VTEP MAC: \"02:42:0a:f4:00\" is not a MAC address",
            ),
            (
                "node-2 192.168.77.12 10.244.2.0/24 01:00:5e:00:00:01",
                "line 5: VTEP MAC 01:00:5e:00:00:01 is not a unicast",
            ),
            (
                "node-2 192.168.77.12 10.244.2.0/24 00:00:00:00:00:00",
                "line 5: VTEP MAC 00:00:00:00:00:00 is not a unicast",
            ),
            ("node-2 192.168.77.12 10.244.2.5/24", "line 5: pod_cidr"),
            ("Node_2 192.168.77.12 10.244.2.0/24", "line 5: node_name"),
            ("node-2 10.244.1.7 10.244.2.0/24", "line 5: an underlay IP lies inside a pod CIDR"),
        ] {
            let text = format!("{GOOD}{extra}\n");
            let e = parse(&text, "node-0").unwrap_err().to_string();
            assert!(e.contains(needle), "{extra}: {e}");
        }
    }

    #[test]
    fn a_fourth_column_is_the_nodes_vtep_mac() {
        let text = format!("{GOOD}flannel-2 192.168.77.12 10.244.2.0/24 9A:3F:11:22:33:44 # a flannel node\n");
        let nodes = parse(&text, "node-0").unwrap();
        assert_eq!(nodes.get("flannel-2").unwrap().vtep_mac.unwrap().to_string(), "9a:3f:11:22:33:44");
        assert_eq!(nodes.get("node-1").unwrap().vtep_mac, None);
    }

    #[test]
    fn our_own_node_must_be_there() {
        let e = parse(GOOD, "node-9").unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e.to_string().contains("this node (node-9) has no line"));
        assert!(parse("", "node-0").is_err());
    }
}
