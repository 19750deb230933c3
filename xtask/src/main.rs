//! Developer and CI workflows for knet: `setup`, `build-ebpf`, `build`,
//! `run`, `test`, `fuzz`, `bench`, `image`. Every command that builds eBPF makes
//! the machine ready first (see `setup`).

mod bench;
mod build;
mod fuzz;
mod image;
mod libcni;
mod run;
mod setup;
mod test;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};
use xtask_boot::packages;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "knet's developer workflows")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make this machine ready: Debian tools, rust-src, bpf-linker.
    Setup,
    /// Build the eBPF object (bpfel-unknown-none).
    BuildEbpf,
    /// Build the eBPF object and the workspace with it embedded.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// A sandbox cluster in network namespaces (nodes with real agents,
    /// pods added through the CNI plugin), its connectivity matrix, until
    /// Ctrl-C.
    Run(run::RunArgs),
    /// Unit tests, a short run of every fuzz target, then the namespace
    /// integration tests one at a time.
    Test {
        /// Only integration tests whose name contains this.
        filter: Option<String>,
    },
    /// Every parser of outside input under libFuzzer (fuzz/), each target
    /// for a set time.
    Fuzz(fuzz::FuzzArgs),
    /// Throughput of knet against the kernel's own paths, side by side.
    Bench(bench::BenchArgs),
    /// The container image, built offline from the release binaries, as an
    /// OCI archive in target/image/ for `ctr -n k8s.io images import`.
    Image,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup => setup::ensure_ready().map(drop),
        Command::BuildEbpf => build::ebpf(&setup::ensure_ready()?).map(drop),
        Command::Build { release } => build::all(&setup::ensure_ready()?, release).map(drop),
        Command::Run(args) => run::run(args),
        Command::Test { filter } => test::run(filter.as_deref()),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Image => image::run(),
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

pub use xtask_boot::step;
