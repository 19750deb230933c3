//! Makes a new machine ready to build knet's eBPF, by itself:
//! - the Debian tools the workflows run;
//! - `rust-src` for the toolchain that builds the eBPF crate (nightly, or
//!   stable with `RUSTC_BOOTSTRAP=1` where no nightly is installed), needed
//!   by `-Z build-std=core`;
//! - bpf-linker built against that toolchain's own libLLVM (Debian's LLVM
//!   is older than rustc's), installed under the project's `.cache/`;
//! - for `cargo xtask fuzz` only, cargo-fuzz, also under `.cache/`.
//!
//! Each piece is checked before it is made, so a second run takes seconds.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{packages, root, step};

/// bpf-linker release known to link with LLVM 21 to 23.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// cargo-fuzz release whose flags (`-s none`) build on stable.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// How to invoke the toolchain that builds the eBPF crate.
pub struct EbpfToolchain {
    /// `+nightly` or `+stable`, for cargo and rustc.
    pub toolchain: String,
    /// Stable needs `RUSTC_BOOTSTRAP=1` for `-Z build-std`.
    pub bootstrap: bool,
    /// PATH with bpf-linker in front.
    pub path: OsString,
}

impl EbpfToolchain {
    /// A `cargo +toolchain` command with the environment the eBPF build needs.
    pub fn cargo(&self) -> Command {
        let mut cmd = Command::new("cargo");
        cmd.arg(format!("+{}", self.toolchain)).env("PATH", &self.path);
        // rustup's proxies pick the toolchain from `+x`; a RUSTUP_TOOLCHAIN
        // inherited from the outer cargo would override it.
        cmd.env_remove("RUSTUP_TOOLCHAIN").env_remove("RUSTC").env_remove("CARGO");
        if self.bootstrap {
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        cmd
    }
}

pub fn cache_dir() -> PathBuf {
    root().join(".cache")
}

pub fn ensure_ready() -> Result<EbpfToolchain> {
    packages::ensure_tools()?;
    let (toolchain, bootstrap) = choose_toolchain()?;
    ensure_rust_src(&toolchain)?;
    let linker_bin = ensure_bpf_linker(&toolchain)?;
    let mut path = OsString::from(linker_bin.as_os_str());
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    Ok(EbpfToolchain { toolchain, bootstrap, path })
}

fn rustup(args: &[&str]) -> Result<std::process::Output> {
    Command::new("rustup")
        .args(args)
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .context("cannot run rustup (is it installed?)")
}

fn choose_toolchain() -> Result<(String, bool)> {
    let list = rustup(&["toolchain", "list"])?;
    let list = String::from_utf8_lossy(&list.stdout);
    if list.lines().any(|l| l.starts_with("nightly")) {
        return Ok(("nightly".into(), false));
    }
    if list.lines().any(|l| l.starts_with("stable")) {
        step("no nightly toolchain: building eBPF with stable and RUSTC_BOOTSTRAP=1");
        return Ok(("stable".into(), true));
    }
    bail!("neither a nightly nor a stable Rust toolchain is installed (rustup toolchain list)");
}

fn ensure_rust_src(toolchain: &str) -> Result<()> {
    let installed = rustup(&["component", "list", "--installed", "--toolchain", toolchain])?;
    if String::from_utf8_lossy(&installed.stdout).lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    step(format!("adding rust-src to the {toolchain} toolchain (needed by -Z build-std=core)"));
    let out = rustup(&["component", "add", "rust-src", "--toolchain", toolchain])?;
    if !out.status.success() {
        bail!("cannot add rust-src to the {toolchain} toolchain: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn rustc_output(toolchain: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("rustc")
        .arg(format!("+{toolchain}"))
        .args(args)
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .context("cannot run rustc")?;
    if !out.status.success() {
        bail!("rustc +{toolchain} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The toolchain's own libLLVM: its file and its major version.
fn toolchain_llvm(toolchain: &str) -> Result<(PathBuf, u32)> {
    let sysroot = PathBuf::from(rustc_output(toolchain, &["--print", "sysroot"])?);
    let verbose = rustc_output(toolchain, &["-vV"])?;
    let major = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .context("rustc -vV names no LLVM version")?;
    let lib_dir = sysroot.join("lib");
    let lib = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM.so.")))
        .with_context(|| format!("the {toolchain} toolchain ships no libLLVM.so.* in {}", lib_dir.display()))?;
    Ok((lib, major))
}

/// bpf-linker for this toolchain's LLVM, built once into `.cache/`; the
/// directory holding the binary.
fn ensure_bpf_linker(toolchain: &str) -> Result<PathBuf> {
    let (lib, major) = toolchain_llvm(toolchain)?;
    let lib_name = lib.file_name().and_then(|n| n.to_str()).context("libLLVM name")?.to_string();
    // Keyed by the library's own name: a new nightly gets its own linker.
    let base = cache_dir().join(format!("bpf-linker-{BPF_LINKER_VERSION}-{lib_name}"));
    let bin_dir = base.join("bin");
    let linker = bin_dir.join("bpf-linker");
    if linker_runs(&linker) {
        return Ok(bin_dir);
    }

    // bpf-linker's build looks for LLVM under LLVM_PREFIX/lib; the binary
    // then finds it through its rpath, so this directory must stay put.
    let prefix = base.join("llvm");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for name in ["libLLVM.so", lib_name.as_str()] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link).with_context(|| format!("cannot link {}", link.display()))?;
    }
    if !matches!(major, 21..=23) {
        bail!("the {toolchain} toolchain uses LLVM {major}; bpf-linker {BPF_LINKER_VERSION} supports LLVM 21 to 23");
    }
    step(format!(
        "building bpf-linker {BPF_LINKER_VERSION} against the {toolchain} toolchain's LLVM {major} (about a minute, once)"
    ));
    let status = Command::new("cargo")
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--no-default-features", "--force"])
        .args(["--features", &format!("llvm-{major}")])
        .arg("--root")
        .arg(&base)
        .env("LLVM_PREFIX", &prefix)
        .env_remove("RUSTUP_TOOLCHAIN")
        .status()
        .context("cannot run cargo install")?;
    if !status.success() || !linker_runs(&linker) {
        bail!("building bpf-linker failed (see above); it needs crates.io and a C compiler (gcc)");
    }
    Ok(bin_dir)
}

fn linker_runs(linker: &Path) -> bool {
    Command::new(linker).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// cargo-fuzz, installed once into `.cache/` from its own lockfile; the
/// binary. It runs the workspace's toolchain (stable): with no sanitizer
/// its libFuzzer instrumentation needs no nightly flag.
pub fn ensure_cargo_fuzz() -> Result<PathBuf> {
    // libfuzzer-sys builds libFuzzer's C++ into every target.
    packages::ensure(packages::FUZZ_TOOLS)?;
    let base = cache_dir().join(format!("cargo-fuzz-{CARGO_FUZZ_VERSION}"));
    let bin = base.join("bin/cargo-fuzz");
    let runs = |bin: &Path| {
        Command::new(bin).arg("--version").output().is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).trim() == format!("cargo-fuzz {CARGO_FUZZ_VERSION}")
        })
    };
    if runs(&bin) {
        return Ok(bin);
    }
    step(format!("installing cargo-fuzz {CARGO_FUZZ_VERSION} into {} (about two minutes, once)", base.display()));
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--version", CARGO_FUZZ_VERSION, "--locked", "--force", "--root"])
        .arg(&base)
        .env_remove("RUSTUP_TOOLCHAIN")
        .status()
        .context("cannot run cargo install")?;
    if !status.success() || !runs(&bin) {
        bail!("installing cargo-fuzz failed (see above); it needs crates.io");
    }
    Ok(bin)
}
