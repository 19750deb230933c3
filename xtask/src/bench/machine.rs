//! What a bench run ran on, for its JSON: the kernel, the CPU, the tools
//! and their versions, and the commit measured. Numbers are only
//! comparable with numbers from the same machine and run.

use std::process::Command;

use serde_json::{json, Value};

pub fn describe() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let root = crate::root().display().to_string();
    json!({
        "kernel": read("/proc/sys/kernel/osrelease"),
        "cpu_model": field(&cpuinfo, "model name"),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_kib": field(&meminfo, "MemTotal").and_then(|m| m.trim_end_matches(" kB").trim().parse::<u64>().ok()),
        "tools": {
            "iperf3": first_line("iperf3", &["--version"]),
            "sockperf": first_line("sockperf", &["--version"]),
            "iproute2": first_line("ip", &["-V"]),
            "iptables": first_line("iptables", &["--version"]),
            "cni_plugins": first_line("/usr/lib/cni/bridge", &["--version"]),
        },
        "knet_commit": first_line("git", &["-C", &root, "rev-parse", "HEAD"]),
        // Uncommitted changes in the measured tree, if any (`git status`).
        "knet_tree_changes": Command::new("git")
            .args(["-C", &root, "status", "--porcelain", "--untracked-files=no"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().count()),
    })
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// The value of the first `key : value` line of a /proc file.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_fields() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu\n";
        assert_eq!(field(cpuinfo, "model name").as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(field(cpuinfo, "cache size"), None);
    }
}
