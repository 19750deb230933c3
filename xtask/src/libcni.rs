//! The libcni driver of the integration tests (`tests/libcni`, Go): built
//! offline in GOPATH mode against Debian's libcni source
//! (golang-github-appc-cni-dev), so the tests call plugins through the same
//! library containerd 1.6 and CRI-O do.

use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::{root, step};

/// Where golang-github-appc-cni-dev puts its source (a GOPATH).
const GOPATH: &str = "/usr/share/gocode";

/// Builds the driver into `bin_dir` (next to the workspace's binaries, where
/// the harness looks for it); the binary's path. Go's build cache lives in
/// `target/`, so a second build takes a moment.
pub fn build(bin_dir: &Path) -> Result<std::path::PathBuf> {
    step("building the libcni driver (tests/libcni, Go)");
    let out = bin_dir.join("knet-libcni");
    let status = Command::new("go")
        .current_dir(root())
        .args(["build", "-o"])
        .arg(&out)
        .arg("./tests/libcni")
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOCACHE", root().join("target/go-cache"))
        .env("GOFLAGS", "")
        .status()
        .context("cannot run go (Debian's golang-go)")?;
    if !status.success() {
        bail!("building tests/libcni failed (it needs golang-go and golang-github-appc-cni-dev)");
    }
    Ok(out)
}
