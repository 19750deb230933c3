//! iptables rules real nodes carry: kube-proxy-style rules, to load nodes
//! the way real cluster nodes are loaded (the kernel's paths walk them and
//! conntrack, knet's redirects skip them), and the rules flanneld itself
//! writes on its nodes.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use knet_tests::Netns;

/// An `iptables-restore` script with `rules` rules in the shape kube-proxy
/// writes: per service a match in `KUBE-SERVICES` (nat) jumping to a
/// `KUBE-SVC-*` chain that DNATs, the portal chains hooked from
/// PREROUTING/OUTPUT/FORWARD, and `KUBE-FORWARD` in the filter table.
pub fn ruleset(rules: u32) -> String {
    let services = rules.div_ceil(2);
    let mut nat = String::from("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n");
    let mut body = String::new();
    for s in 0..services {
        let (a, b) = (s / 250, s % 250 + 1);
        nat.push_str(&format!(":KUBE-SVC-{s:06} - [0:0]\n"));
        body.push_str(&format!(
            "-A KUBE-SERVICES -d 10.96.{a}.{b}/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-{s:06}\n-A KUBE-SVC-{s:06} -p tcp -j DNAT --to-destination 10.250.{a}.{b}:8080\n"
        ));
    }
    nat.push_str("-A PREROUTING -j KUBE-SERVICES\n-A OUTPUT -j KUBE-SERVICES\n-A POSTROUTING -j KUBE-POSTROUTING\n");
    nat.push_str("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n");
    nat.push_str("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n");
    nat.push_str(&body);
    nat.push_str("COMMIT\n");
    let filter = "*filter\n:KUBE-FORWARD - [0:0]\n\
        -A FORWARD -j KUBE-FORWARD\n\
        -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
        -A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT\n\
        -A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
        COMMIT\n";
    format!("{filter}{nat}")
}

/// The rules flanneld writes with `--ip-masq` (as kube-flannel.yml runs
/// it), for `network` (net-conf.json's `Network`) and the node's
/// `subnet`: pkg/trafficmngr/iptables, `masqRules` (nat POSTROUTING to
/// FLANNEL-POSTRTG: no masquerade within the network, masquerade out of it)
/// and `forwardRules` (filter FORWARD to FLANNEL-FWD: accept the network
/// both ways). They put conntrack on every path through a flannel node.
pub fn flannel_ruleset(network: &str, subnet: &str) -> String {
    let c = r#"-m comment --comment "flanneld masq""#;
    let f = r#"-m comment --comment "flanneld forward""#;
    format!(
        "*nat\n:FLANNEL-POSTRTG - [0:0]\n\
         -A POSTROUTING {c} -j FLANNEL-POSTRTG\n\
         -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {c} -j RETURN\n\
         -A FLANNEL-POSTRTG -s {subnet} -d {network} {c} -j RETURN\n\
         -A FLANNEL-POSTRTG -s {network} -d {subnet} {c} -j RETURN\n\
         -A FLANNEL-POSTRTG ! -s {network} -d {subnet} {c} -j RETURN\n\
         -A FLANNEL-POSTRTG -s {network} ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully\n\
         -A FLANNEL-POSTRTG ! -s {network} -d {network} {c} -j MASQUERADE --random-fully\n\
         COMMIT\n\
         *filter\n:FLANNEL-FWD - [0:0]\n\
         -A FORWARD {f} -j FLANNEL-FWD\n\
         -A FLANNEL-FWD -s {network} {f} -j ACCEPT\n\
         -A FLANNEL-FWD -d {network} {f} -j ACCEPT\n\
         COMMIT\n"
    )
}

/// Loads the rules into a node's namespace (they go with the namespace).
pub fn load(ns: &Netns, script: &str) -> Result<()> {
    let mut child = Command::new("ip")
        .args(ns.exec_args("iptables-restore", &["--noflush"]))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run iptables-restore (Debian package iptables)")?;
    child.stdin.take().context("iptables-restore stdin")?.write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("iptables-restore in {}: {}", ns.name(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_the_asked_number_of_service_rules() {
        let script = ruleset(5000);
        let service_rules =
            script.lines().filter(|l| l.starts_with("-A KUBE-SERVICES") || l.starts_with("-A KUBE-SVC-")).count();
        assert_eq!(service_rules, 5000);
        assert!(script.contains("-A KUBE-SERVICES -d 10.96.9.250/32"));
        assert_eq!(script.matches("COMMIT").count(), 2);
    }

    #[test]
    fn flannel_rules_keep_the_network_unmasqueraded() {
        let script = flannel_ruleset("10.244.0.0/16", "10.244.1.0/24");
        assert!(script.contains("-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment"));
        let masq = script.lines().filter(|l| l.contains("MASQUERADE")).count();
        let accepts = script.lines().filter(|l| l.starts_with("-A FLANNEL-FWD") && l.ends_with("ACCEPT")).count();
        assert_eq!((masq, accepts), (2, 2));
        assert_eq!(script.matches("COMMIT").count(), 2);
    }
}
