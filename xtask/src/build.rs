//! Building the eBPF object and the workspace that embeds it.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::{root, setup::EbpfToolchain, step};

/// Builds `knet-ebpf` for bpfel-unknown-none; the object's path.
pub fn ebpf(tc: &EbpfToolchain) -> Result<PathBuf> {
    step(format!("building the eBPF programs (cargo +{} ... --target bpfel-unknown-none)", tc.toolchain));
    let status = tc
        .cargo()
        .current_dir(root())
        .args([
            "build",
            "--package",
            "knet-ebpf",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building knet-ebpf failed");
    }
    let object = root().join("target/bpfel-unknown-none/release/knet");
    if !object.exists() {
        bail!("the eBPF build left no object at {}", object.display());
    }
    Ok(object)
}

/// Builds the eBPF object, then the workspace with it embedded; the
/// directory holding the binaries.
pub fn all(tc: &EbpfToolchain, release: bool) -> Result<PathBuf> {
    let object = ebpf(tc)?;
    step(format!("building the workspace ({})", if release { "release" } else { "debug" }));
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.current_dir(root()).args(["build", "--bins"]).env("KNET_EBPF_OBJECT", &object);
    if release {
        cmd.arg("--release");
    }
    if !cmd.status().context("cannot run cargo")?.success() {
        bail!("building the workspace failed");
    }
    Ok(root().join("target").join(if release { "release" } else { "debug" }))
}
