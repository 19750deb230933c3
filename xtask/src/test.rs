//! `cargo xtask test`: unit tests, a short run of every fuzz target, then
//! the namespace integration tests one at a time (they share the kernel:
//! namespaces, bpffs, tcx).

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{build, fuzz, libcni, root, setup, step};

/// Each fuzz target's time in a test run: its seeds and then some.
const FUZZ_SECONDS: u64 = 10;

pub fn require_root(what: &str) -> Result<()> {
    let out = Command::new("id").arg("-u").output().context("cannot run id")?;
    if String::from_utf8_lossy(&out.stdout).trim() != "0" {
        bail!("{what} needs root (network namespaces, eBPF, bpffs)");
    }
    Ok(())
}

pub fn run(filter: Option<&str>) -> Result<()> {
    require_root("cargo xtask test")?;
    let tc = setup::ensure_ready()?;
    let bin_dir = build::all(&tc, false)?;
    let object = root().join("target/bpfel-unknown-none/release/knet");
    let upgrade = build::ebpf_upgrade(&tc)?;
    // The DaemonSet's image, run by the tests' containerd.
    let image = crate::image::build()?;
    libcni::build(&bin_dir)?;

    step("unit tests");
    cargo_test(&["--lib", "--bins"], &[], &object, &upgrade, &image, &bin_dir)?;

    step("fuzz targets, a short run each");
    fuzz::fuzz(FUZZ_SECONDS, false, None)?;

    step("namespace integration tests, one at a time");
    let mut extra = vec!["--test-threads=1"];
    if let Some(f) = filter {
        extra.push(f);
    }
    cargo_test(&["--package", "knet-tests", "--test", "*"], &extra, &object, &upgrade, &image, &bin_dir)
}

fn cargo_test(
    targets: &[&str],
    test_args: &[&str],
    object: &std::path::Path,
    upgrade: &std::path::Path,
    image: &std::path::Path,
    bin_dir: &std::path::Path,
) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .current_dir(root())
        .arg("test")
        .args(targets)
        .arg("--")
        .args(test_args)
        .env("KNET_EBPF_OBJECT", object)
        .env("KNET_EBPF_UPGRADE_OBJECT", upgrade)
        .env("KNET_IMAGE_ARCHIVE", image)
        .env("KNET_AGENT_BIN", bin_dir.join("knet-agent"))
        .env("KNET_LIBCNI_BIN", bin_dir.join("knet-libcni"))
        .status()
        .context("cannot run cargo test")?;
    if !status.success() {
        bail!("tests failed");
    }
    Ok(())
}
