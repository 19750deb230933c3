//! The one masquerade rule: pod traffic leaving the cluster (anything but
//! pod subnets and node addresses) takes the node's address. Traffic between
//! pods, and between pods and nodes, keeps its source. Applied with the
//! `nft` CLI as one atomic transaction that replaces the agent's table.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;

use crate::nodes::NodeSpec;

pub const TABLE: &str = "knet";

/// The nft script for a node whose pods are `local` in a cluster of `nodes`.
pub fn ruleset(local: Ipv4Net, nodes: &[&NodeSpec]) -> String {
    let mut keep: Vec<String> = nodes.iter().map(|n| n.pod_cidr.to_string()).collect();
    keep.extend(nodes.iter().map(|n| n.underlay_ip.to_string()));
    format!(
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n  set cluster {{\n    type ipv4_addr\n    flags interval\n    elements = {{ {} }}\n  }}\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {local} ip daddr != @cluster counter masquerade\n  }}\n}}\n",
        keep.join(", ")
    )
}

pub fn apply(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft (Debian package nftables)")?;
    child.stdin.take().context("nft stdin")?.write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft refused the masquerade rule: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Removes the agent's table (nothing to do if there is none).
pub fn remove() {
    // "No such table" and "no nft" both mean there is nothing to remove.
    let _ = Command::new("nft").args(["delete", "table", "ip", TABLE]).stderr(Stdio::null()).status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_cluster_traffic_unmasqueraded() {
        let a = NodeSpec {
            name: "a".into(),
            underlay_ip: "192.168.77.10".parse().unwrap(),
            pod_cidr: "10.244.0.0/24".parse().unwrap(),
        };
        let b = NodeSpec {
            name: "b".into(),
            underlay_ip: "192.168.77.11".parse().unwrap(),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
        };
        let script = ruleset(a.pod_cidr, &[&a, &b]);
        assert!(
            script.contains("elements = { 10.244.0.0/24, 10.244.1.0/24, 192.168.77.10, 192.168.77.11 }"),
            "{script}"
        );
        assert!(script.contains("ip saddr 10.244.0.0/24 ip daddr != @cluster counter masquerade"));
        // Replaces the table atomically: create-if-missing, delete, recreate.
        assert!(script.starts_with("table ip knet\ndelete table ip knet\n"));
    }
}
