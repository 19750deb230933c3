//! The Debian tools knet's workflows run, installed when missing.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::step;

/// (command on PATH or absolute path, Debian package that provides it)
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("ping", "iputils-ping"),
    ("iperf3", "iperf3"),
    // The bench's and the latency tests' ping-pong.
    ("sockperf", "sockperf"),
    ("nsenter", "util-linux"),
    ("sysctl", "procps"),
    // The reference CNI plugins (host-local, portmap) the CNI tests chain
    // knet with; portmap drives iptables.
    ("/usr/lib/cni/host-local", "containernetworking-plugins"),
    ("/usr/lib/cni/portmap", "containernetworking-plugins"),
    ("iptables", "iptables"),
    ("nft", "nftables"),
    ("tcpdump", "tcpdump"),
    ("ethtool", "ethtool"),
    // The drop events test checks what bpftool lists of the programs.
    ("bpftool", "bpftool"),
    ("bridge", "iproute2"),
    // The libcni driver of the tests (tests/libcni), built offline in
    // GOPATH mode against Debian's libcni source.
    ("go", "golang-go"),
    ("/usr/share/gocode/src/github.com/containernetworking/cni/libcni", "golang-github-appc-cni-dev"),
    // The CRI tests: a real containerd and runc, the reference plugins they
    // chain (loopback for every pod's lo, bridge for the bench's reference
    // node), and a static libc for the pause binary of the offline sandbox
    // image.
    ("containerd", "containerd"),
    ("ctr", "containerd"),
    ("runc", "runc"),
    ("/usr/lib/cni/loopback", "containernetworking-plugins"),
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    // The bench's kernel-routed plane is the reference ptp plugin's.
    ("/usr/lib/cni/ptp", "containernetworking-plugins"),
    ("gcc", "gcc"),
    ("/usr/include/stdio.h", "libc6-dev"),
    // `promtool check metrics` judges the agent's real /metrics output
    // (tests/tests/metrics.rs); installing the package starts no server.
    ("promtool", "prometheus"),
    // The etcd source's tests run Debian's real etcd (3.4) in a namespace.
    ("etcd", "etcd-server"),
];

/// What building xtask itself needs, installed before it is compiled (by
/// the `cargo xtask` entry point): protoc for the build scripts of the CRI
/// client (k8s-cri) and the agent's etcd client (etcd-client), whose protos
/// import protobuf's own well-known types (descriptor.proto, struct.proto),
/// which only libprotobuf-dev ships.
pub const BUILD_TOOLS: &[(&str, &str)] =
    &[("protoc", "protobuf-compiler"), ("/usr/include/google/protobuf/descriptor.proto", "libprotobuf-dev")];

/// What the fuzz targets' build needs beyond Rust: libfuzzer-sys compiles
/// libFuzzer (C++).
pub const FUZZ_TOOLS: &[(&str, &str)] = &[("c++", "g++")];

fn on_path(cmd: &str) -> bool {
    if cmd.starts_with('/') {
        return std::path::Path::new(cmd).exists();
    }
    Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success())
}

/// Installs the packages of every missing tool with apt-get (as root).
pub fn ensure_tools() -> Result<()> {
    ensure(BUILD_TOOLS)?;
    ensure(TOOLS)
}

/// Installs the packages of the missing ones of `tools`.
pub fn ensure(tools: &[(&str, &str)]) -> Result<()> {
    let mut missing: Vec<&str> = tools.iter().filter(|(cmd, _)| !on_path(cmd)).map(|(_, pkg)| *pkg).collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !on_path("apt-get") {
        bail!("missing tools from Debian packages {missing:?} and no apt-get to install them");
    }
    step(format!("installing Debian packages {}", missing.join(" ")));
    let update = Command::new("apt-get").args(["update", "-qq"]).status().context("apt-get update")?;
    if !update.success() {
        bail!("apt-get update failed; install {} by hand", missing.join(" "));
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("apt-get install")?;
    if !status.success() {
        bail!("apt-get install {} failed", missing.join(" "));
    }
    Ok(())
}
