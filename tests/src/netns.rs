//! A network namespace that lives exactly as long as its guard.

use std::{
    net::Ipv6Addr,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};

use crate::{cmd, wait};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A name no other run uses: `knet-<pid>-<n>-<role>`.
pub fn unique_name(role: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("knet-{}-{}-{}", std::process::id(), n, role)
}

#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with loopback up and IPv6 off (so the only
    /// traffic in it is what a test sends).
    pub fn new(role: &str) -> Result<Self> {
        let name = unique_name(role);
        cmd::ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> args...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        cmd::ip(&full)
    }

    /// Runs a program inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        cmd::run("ip", &self.exec_args(program, args))
    }

    /// The `ip netns exec` argument list for running `program` inside.
    pub fn exec_args<'a>(&'a self, program: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        full
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")]).map(drop)
    }

    /// A file as a process inside the namespace sees it (`/proc/net/...`,
    /// `/sys/class/net/...`).
    pub fn read(&self, path: &str) -> Result<String> {
        self.exec("cat", &[path])
    }

    /// Runs `work` on a thread of its own that has entered the namespace,
    /// and returns what it returns. Sockets it opens stay in the namespace
    /// after the thread ends; files it opens under /sys do not follow (sysfs
    /// is the caller's mount), so read those with `read`.
    pub fn run_in<T: Send>(&self, work: impl FnOnce() -> T + Send) -> Result<T> {
        run_in(&self.name, work)
    }

    /// Runs `work` with the agent's netlink code (`knet_agent::host`) in
    /// the namespace, on a runtime of its own: for what iproute2 6.1 does
    /// not show or set (GSO limits, some link counters).
    pub fn with_netlink<T: Send, F: std::future::Future<Output = Result<T>>>(
        &self,
        work: impl FnOnce(knet_agent::host::Netlink) -> F + Send,
    ) -> Result<T> {
        self.run_in(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async { work(knet_agent::host::Netlink::connect()?).await })
        })?
    }

    /// The IPv4 GSO and GRO limits of `link` in the namespace (BIG TCP).
    pub fn gso_limits(&self, link: &str) -> Result<knet_agent::host::GsoLimits> {
        self.with_netlink(|netlink| async move {
            netlink.gso_limits(link).await?.with_context(|| format!("no link {link} in {}", self.name))
        })
    }

    /// Raises `link`'s IPv4 GSO and GRO limits toward `size`, as the agent
    /// raises an underlay's (`Netlink::raise_gso_limits`).
    pub fn raise_gso_limits(&self, link: &str, size: u32) -> Result<()> {
        self.with_netlink(|netlink| async move {
            let (l, _) = netlink.link_with_traits(link).await?.with_context(|| format!("no link {link}"))?;
            netlink.raise_gso_limits(l.index, size).await.map(drop)
        })
    }

    /// Turns IPv6 back on (`new` turns it off) for the namespace and `link`,
    /// without duplicate address detection, so the link-local address is
    /// usable as soon as the link has it.
    pub fn enable_ipv6(&self, link: &str) -> Result<()> {
        for conf in ["all", "default", link] {
            self.sysctl(&format!("net.ipv6.conf.{conf}.accept_dad"), "0")?;
            self.sysctl(&format!("net.ipv6.conf.{conf}.disable_ipv6"), "0")?;
        }
        Ok(())
    }

    /// The IPv6 link-local address of `link`, once it has one that is not
    /// tentative (bounded wait).
    pub fn link_local(&self, link: &str) -> Result<Ipv6Addr> {
        wait::until(&format!("a link-local address on {link} in {}", self.name), Duration::from_secs(10), || {
            let json = self.ip(&["-j", "-6", "addr", "show", "dev", link, "scope", "link"]).ok()?;
            let v: serde_json::Value = serde_json::from_str(&json).ok()?;
            let addr = v[0]["addr_info"].as_array()?.iter().find(|a| a["tentative"].is_null())?;
            addr["local"].as_str()?.parse().ok()
        })
    }

    /// The `Ip: ForwDatagrams` counter of `/proc/net/snmp`.
    pub fn forwarded_datagrams(&self) -> Result<u64> {
        snmp_field(&self.read("/proc/net/snmp")?, "Ip", "ForwDatagrams")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes left inside would keep running in a namespace nobody can
        // name; end them first.
        if let Ok(pids) = cmd::ip(&["netns", "pids", &self.name]) {
            for pid in pids.split_whitespace() {
                let _ = cmd::run("kill", &["-9", pid]);
            }
        }
        if let Err(e) = cmd::ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// A field of `/proc/net/snmp`, which pairs a header line with a value line.
pub fn snmp_field(snmp: &str, proto: &str, field: &str) -> Result<u64> {
    let prefix = format!("{proto}:");
    let mut lines = snmp.lines().filter(|l| l.starts_with(&prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        anyhow::bail!("no {proto} lines in /proc/net/snmp");
    };
    let idx = names
        .split_whitespace()
        .position(|n| n == field)
        .ok_or_else(|| anyhow::anyhow!("no {proto} {field} in /proc/net/snmp"))?;
    let value = values.split_whitespace().nth(idx).ok_or_else(|| anyhow::anyhow!("short {proto} line"))?;
    Ok(value.parse()?)
}

/// `Netns::run_in` for a namespace known by name (one a test did not make,
/// or whose `Netns` another value owns).
pub fn run_in<T: Send>(name: &str, work: impl FnOnce() -> T + Send) -> Result<T> {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(&path).with_context(|| format!("cannot open {path}"))?;
            setns(&ns, CloneFlags::CLONE_NEWNET).with_context(|| format!("cannot enter {path}"))?;
            Ok(work())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_forw_datagrams() {
        let snmp = "Ip: Forwarding DefaultTTL InReceives ForwDatagrams\nIp: 2 64 10 7\nIcmp: InMsgs\nIcmp: 3\n";
        assert_eq!(snmp_field(snmp, "Ip", "ForwDatagrams").unwrap(), 7);
        assert!(snmp_field(snmp, "Ip", "Nope").is_err());
        assert!(snmp_field(snmp, "Tcp", "X").is_err());
    }

    #[test]
    fn names_are_unique() {
        assert_ne!(unique_name("a"), unique_name("a"));
    }
}
