//! `cargo xtask` starts here. xtask depends on crates whose build scripts
//! run `protoc` (k8s-cri, etcd-client), so on a fresh machine it cannot be
//! compiled before the packages `setup` would install exist. This binary
//! installs those first, then runs xtask with the same arguments.

use std::{os::unix::process::CommandExt, path::Path, process::Command};

use anyhow::{Context, Result};
use xtask_boot::packages;

fn main() -> Result<()> {
    packages::ensure(packages::BUILD_TOOLS)?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    // The cargo that ran this one (rustup's toolchain choice included).
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let err = Command::new(cargo)
        .args(["run", "--quiet", "--package", "xtask", "--manifest-path"])
        .arg(workspace)
        .arg("--")
        .args(std::env::args_os().skip(1))
        .exec();
    Err(err).context("cannot run cargo for xtask")
}
