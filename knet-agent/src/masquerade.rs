//! The one masquerade rule: pod traffic leaving the cluster (anything but
//! pod subnets and node addresses) takes the node's address. Traffic between
//! pods, and between pods and nodes, keeps its source. Applied with the
//! `nft` CLI, each change one atomic transaction: the whole table at first,
//! then only the elements of the `cluster` set that changed, so a node
//! joining a cluster of thousands costs two set elements, not a new table.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    net::Ipv4Addr,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;

pub const TABLE: &str = "knet";

/// What the rule says: masquerade `local`'s pods unless they talk to a
/// node or to a pod subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    pub local: Ipv4Net,
    /// Every node's underlay address.
    pub nodes: BTreeSet<Ipv4Addr>,
    /// Every node's pod subnet.
    pub subnets: BTreeSet<Ipv4Net>,
}

/// Pod subnets go into one hash set per prefix length, matched as
/// `ip daddr & mask == @subnets_<len>`: a hash set takes an element in a
/// few milliseconds, where an interval set makes nft read all of it back
/// first (hundreds of milliseconds at 10,000 nodes).
fn by_prefix(subnets: &BTreeSet<Ipv4Net>) -> BTreeMap<u8, Vec<Ipv4Addr>> {
    let mut out: BTreeMap<u8, Vec<Ipv4Addr>> = BTreeMap::new();
    for n in subnets {
        out.entry(n.prefix_len()).or_default().push(n.network());
    }
    out
}

fn elements<T: std::fmt::Display>(set: &[T]) -> String {
    set.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")
}

fn set_decl(name: &str, items: &[impl std::fmt::Display]) -> String {
    let elements = if items.is_empty() { String::new() } else { format!("; elements = {{ {} }}", elements(items)) };
    format!("  set {name} {{ type ipv4_addr{elements}; }}\n")
}

/// The script that replaces the agent's table with `m`.
pub fn full_script(m: &Masquerade) -> String {
    let nodes: Vec<Ipv4Addr> = m.nodes.iter().copied().collect();
    let mut sets = set_decl("nodes", &nodes);
    let mut rules = String::new();
    for (len, nets) in by_prefix(&m.subnets) {
        sets += &set_decl(&format!("subnets_{len}"), &nets);
        let mask = Ipv4Net::new(Ipv4Addr::UNSPECIFIED, len).expect("a prefix length of a subnet").netmask();
        rules += &format!("    ip daddr & {mask} == @subnets_{len} return\n");
    }
    format!(
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n{sets}  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr != {} return\n    ip daddr @nodes return\n{rules}    counter masquerade\n  }}\n}}\n",
        m.local
    )
}

/// The script that turns `old` into `new`: only the changed set elements
/// when the local subnet and the subnets' prefix lengths stay, else the
/// whole table. `None` if nothing changes.
pub fn update_script(old: &Masquerade, new: &Masquerade) -> Option<String> {
    if old == new {
        return None;
    }
    let (old_sets, new_sets) = (by_prefix(&old.subnets), by_prefix(&new.subnets));
    if old.local != new.local || !old_sets.keys().eq(new_sets.keys()) {
        return Some(full_script(new));
    }
    let mut script = String::new();
    let mut change = |verb: &str, set: &str, items: Vec<String>| {
        if !items.is_empty() {
            script += &format!("{verb} element ip {TABLE} {set} {{ {} }}\n", items.join(", "));
        }
    };
    change("delete", "nodes", old.nodes.difference(&new.nodes).map(|a| a.to_string()).collect());
    change("add", "nodes", new.nodes.difference(&old.nodes).map(|a| a.to_string()).collect());
    let gone: BTreeSet<_> = old.subnets.difference(&new.subnets).collect();
    let added: BTreeSet<_> = new.subnets.difference(&old.subnets).collect();
    for len in new_sets.keys() {
        let set = format!("subnets_{len}");
        let pick = |s: &BTreeSet<&Ipv4Net>| {
            s.iter().filter(|n| n.prefix_len() == *len).map(|n| n.network().to_string()).collect()
        };
        change("delete", &set, pick(&gone));
        change("add", &set, pick(&added));
    }
    Some(script)
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

    fn m(local: &str, nodes: &[&str], subnets: &[&str]) -> Masquerade {
        Masquerade {
            local: local.parse().unwrap(),
            nodes: nodes.iter().map(|c| c.parse().unwrap()).collect(),
            subnets: subnets.iter().map(|c| c.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn keeps_cluster_traffic_unmasqueraded() {
        let script = full_script(&m(
            "10.244.0.0/24",
            &["192.168.77.10", "192.168.77.11"],
            &["10.244.0.0/24", "10.244.1.0/24", "10.250.0.0/16"],
        ));
        assert!(
            script.contains("set nodes { type ipv4_addr; elements = { 192.168.77.10, 192.168.77.11 }; }"),
            "{script}"
        );
        assert!(
            script.contains("set subnets_24 { type ipv4_addr; elements = { 10.244.0.0, 10.244.1.0 }; }"),
            "{script}"
        );
        assert!(script.contains("set subnets_16 { type ipv4_addr; elements = { 10.250.0.0 }; }"), "{script}");
        assert!(script.contains("ip saddr != 10.244.0.0/24 return\n    ip daddr @nodes return\n"), "{script}");
        assert!(script.contains("ip daddr & 255.255.255.0 == @subnets_24 return"), "{script}");
        assert!(script.contains("ip daddr & 255.255.0.0 == @subnets_16 return"), "{script}");
        assert!(script.ends_with("    counter masquerade\n  }\n}\n"), "{script}");
        // Replaces the table atomically: create-if-missing, delete, recreate.
        assert!(script.starts_with("table ip knet\ndelete table ip knet\n"));
    }

    #[test]
    fn updates_touch_only_the_changed_elements() {
        let old = m("10.244.0.0/24", &["192.168.77.10", "192.168.77.11"], &["10.244.0.0/24", "10.244.1.0/24"]);
        let new = m("10.244.0.0/24", &["192.168.77.10", "192.168.77.12"], &["10.244.0.0/24", "10.244.2.0/24"]);
        assert_eq!(
            update_script(&old, &new).unwrap(),
            "delete element ip knet nodes { 192.168.77.11 }\nadd element ip knet nodes { 192.168.77.12 }\ndelete element ip knet subnets_24 { 10.244.1.0 }\nadd element ip knet subnets_24 { 10.244.2.0 }\n"
        );
        assert_eq!(update_script(&old, &old), None);
        // A new local subnet, or a prefix length with no set yet: the whole table.
        let moved = m("10.244.9.0/24", &["192.168.77.10"], &["10.244.9.0/24"]);
        assert!(update_script(&old, &moved).unwrap().starts_with("table ip knet\ndelete table ip knet\n"));
        let wider = m("10.244.0.0/24", &["192.168.77.10"], &["10.244.0.0/24", "10.250.0.0/16"]);
        assert!(update_script(&old, &wider).unwrap().starts_with("table ip knet\n"));
    }
}
