//! Building the eBPF object and the workspace that embeds it.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::{root, setup::EbpfToolchain, step};

/// Builds `knet-ebpf` for bpfel-unknown-none; the object's path.
pub fn ebpf(tc: &EbpfToolchain) -> Result<PathBuf> {
    ebpf_into(tc, "target", &[])
}

/// Another build of the same programs, optimised for size (so its code
/// differs: opt-level 2 gives the same code as 3), for the tests of an
/// upgrade to a new data path.
pub fn ebpf_upgrade(tc: &EbpfToolchain) -> Result<PathBuf> {
    ebpf_into(tc, "target/ebpf-upgrade", &[("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")])
}

fn ebpf_into(tc: &EbpfToolchain, target_dir: &str, env: &[(&str, &str)]) -> Result<PathBuf> {
    step(format!("building the eBPF programs (cargo +{} ... --target bpfel-unknown-none)", tc.toolchain));
    let status = tc
        .cargo()
        .current_dir(root())
        .env("CARGO_TARGET_DIR", root().join(target_dir))
        .envs(env.iter().copied())
        // BTF from the debug info (bpf-linker's `--btf`), so the kernel
        // knows every program's functions and lines and `bpftool prog
        // show` lists each with its BTF. Debug info for every crate, core
        // and the dependencies included: a function in `.text` without it
        // gets no func_info, and the kernel refuses the program (aya issue
        // 1649). Only the BPF target gets the flags.
        .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf")
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
    let object = root().join(target_dir).join("bpfel-unknown-none/release/knet");
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
