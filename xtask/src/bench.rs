//! `cargo xtask bench`: how close knet comes to the machine's physical
//! limit, and how it compares with what users run instead, measured side by
//! side in one run and reported as ratios (../shared/bench.md).
//!
//! Every data plane of a case is built up front in its own namespaces; the
//! repetitions interleave the planes so that the machine's noise falls on
//! all of them alike.

mod report;
mod topologies;

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::{build, root, setup, step, test::require_root};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Repetitions of every measurement (interleaved across data planes).
    #[arg(long, default_value_t = 3)]
    reps: u32,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// iperf3 parallel stream counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    streams: Vec<u32>,
}

/// One measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub case: String,
    pub plane: String,
    pub streams: u32,
    pub rep: u32,
    pub gbit_per_s: f64,
}

/// A speed target: `plane` >= `ratio` x `baseline` in `case`.
pub struct Target {
    pub case: &'static str,
    pub plane: &'static str,
    pub baseline: &'static str,
    pub ratio: f64,
}

const TARGETS: &[Target] = &[
    Target { case: "same-node", plane: "knet", baseline: "veth-direct", ratio: 0.97 },
    Target { case: "same-node", plane: "knet", baseline: "kernel-routed", ratio: 1.10 },
];

pub fn run(args: BenchArgs) -> Result<()> {
    require_root("cargo xtask bench")?;
    let tc = setup::ensure_ready()?;
    build::all(&tc, false)?;

    step("building the same-node topologies: veth-direct, kernel-routed, knet");
    let planes = topologies::same_node()?;

    let total = args.reps as usize * args.streams.len() * planes.len();
    let mut samples = Vec::with_capacity(total);
    for rep in 1..=args.reps {
        for &streams in &args.streams {
            for plane in &planes {
                let gbit = plane
                    .measure(args.seconds, streams)
                    .with_context(|| format!("{} ({streams} streams)", plane.name))?;
                eprintln!(
                    "  [{:>3}/{total}] same-node {:<14} {streams} stream(s) rep {rep}: {gbit:6.2} Gbit/s",
                    samples.len() + 1,
                    plane.name
                );
                samples.push(Sample {
                    case: "same-node".into(),
                    plane: plane.name.clone(),
                    streams,
                    rep,
                    gbit_per_s: gbit,
                });
            }
        }
    }
    drop(planes);

    let table = report::table(&samples, TARGETS);
    println!("{table}");
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let json = dir.join(format!("bench-{stamp}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(&report::json(&samples, &args.streams, args.seconds))?)?;
    let svg = dir.join(format!("bench-{stamp}.svg"));
    std::fs::write(&svg, report::svg(&samples, TARGETS))?;
    step(format!("samples in {}, chart in {}", json.display(), svg.display()));
    Ok(())
}
