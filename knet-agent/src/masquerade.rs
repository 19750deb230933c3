//! The one masquerade rule: pod traffic leaving the cluster (anything but
//! pod subnets and node addresses) takes the node's address. Traffic between
//! pods, and between pods and nodes, keeps its source. Applied with the
//! `nft` CLI, each change one atomic transaction: the whole table at first,
//! then only the elements of the `cluster` set that changed, so a node
//! joining a cluster of thousands costs two set elements, not a new table.

use std::{
    collections::BTreeSet,
    io::Write,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;

pub const TABLE: &str = "knet";

/// What the rule says: masquerade `local`'s pods unless they talk to `cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    pub local: Ipv4Net,
    /// Every node's pod subnet and underlay address (as a /32).
    pub cluster: BTreeSet<Ipv4Net>,
}

fn elements(set: impl IntoIterator<Item = impl std::fmt::Display>) -> String {
    set.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")
}

/// The script that replaces the agent's table with `m`.
pub fn full_script(m: &Masquerade) -> String {
    let cluster = if m.cluster.is_empty() {
        String::new()
    } else {
        format!("    elements = {{ {} }}\n", elements(m.cluster.iter().map(|n| host_or_net(*n))))
    };
    format!(
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n  set cluster {{\n    type ipv4_addr\n    flags interval\n{cluster}  }}\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {} ip daddr != @cluster counter masquerade\n  }}\n}}\n",
        m.local
    )
}

/// The script that turns `old` into `new`: only the changed set elements
/// when the local subnet stays, else the whole table. `None` if nothing
/// changes.
pub fn update_script(old: &Masquerade, new: &Masquerade) -> Option<String> {
    if old == new {
        return None;
    }
    if old.local != new.local {
        return Some(full_script(new));
    }
    let mut script = String::new();
    // Deletions first: an interval set refuses an element overlapping one
    // that is still there.
    let gone: Vec<_> = old.cluster.difference(&new.cluster).map(|n| host_or_net(*n)).collect();
    if !gone.is_empty() {
        script += &format!("delete element ip {TABLE} cluster {{ {} }}\n", elements(gone));
    }
    let added: Vec<_> = new.cluster.difference(&old.cluster).map(|n| host_or_net(*n)).collect();
    if !added.is_empty() {
        script += &format!("add element ip {TABLE} cluster {{ {} }}\n", elements(added));
    }
    Some(script)
}

/// nft writes a /32 as the bare address.
fn host_or_net(n: Ipv4Net) -> String {
    if n.prefix_len() == 32 {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

/// Runs an nft script as one transaction.
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

/// Removes the agent's table; none there is fine.
pub fn remove() -> Result<()> {
    apply(&format!("table ip {TABLE}\ndelete table ip {TABLE}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(local: &str, cluster: &[&str]) -> Masquerade {
        Masquerade { local: local.parse().unwrap(), cluster: cluster.iter().map(|c| c.parse().unwrap()).collect() }
    }

    #[test]
    fn keeps_cluster_traffic_unmasqueraded() {
        let script = full_script(&m(
            "10.244.0.0/24",
            &["10.244.0.0/24", "10.244.1.0/24", "192.168.77.10/32", "192.168.77.11/32"],
        ));
        assert!(
            script.contains("elements = { 10.244.0.0/24, 10.244.1.0/24, 192.168.77.10, 192.168.77.11 }"),
            "{script}"
        );
        assert!(script.contains("ip saddr 10.244.0.0/24 ip daddr != @cluster counter masquerade"));
        // Replaces the table atomically: create-if-missing, delete, recreate.
        assert!(script.starts_with("table ip knet\ndelete table ip knet\n"));
    }

    #[test]
    fn updates_touch_only_the_changed_elements() {
        let old = m("10.244.0.0/24", &["10.244.0.0/24", "10.244.1.0/24", "192.168.77.11/32"]);
        let new = m("10.244.0.0/24", &["10.244.0.0/24", "10.244.2.0/24", "192.168.77.12/32"]);
        assert_eq!(
            update_script(&old, &new).unwrap(),
            "delete element ip knet cluster { 10.244.1.0/24, 192.168.77.11 }\nadd element ip knet cluster { 10.244.2.0/24, 192.168.77.12 }\n"
        );
        assert_eq!(update_script(&old, &old), None);
        let moved = m("10.244.9.0/24", &["10.244.9.0/24"]);
        assert!(update_script(&old, &moved).unwrap().starts_with("table ip knet\ndelete table ip knet\n"));
    }
}
