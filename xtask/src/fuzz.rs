//! `cargo xtask fuzz [--seconds N] [--release] [TARGET]`: the targets of
//! `fuzz/` (every parser of outside input) under libFuzzer, through cargo
//! fuzz on the workspace's own toolchain. Each target starts from its
//! committed seeds (`fuzz/corpus/T`); what it learns is kept apart from them
//! in `target/fuzz/corpus/T`, its output in `target/fuzz/T.log`, a failing
//! input in `fuzz/artifacts/T/` (both ignored by git).

use std::{
    fs::File,
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{root, setup, step};

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// How long each target runs, in seconds.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Build optimized, as cargo fuzz does by default: a build of about ten
    /// minutes instead of two, then some twenty times the inputs a second.
    /// For long runs.
    #[arg(long)]
    pub release: bool,
    /// Only this target [default: every target in fuzz/].
    pub target: Option<String>,
}

/// The longest one input may take before libFuzzer calls it a hang.
const INPUT_TIMEOUT_SECS: u64 = 10;

pub fn run(args: FuzzArgs) -> Result<()> {
    fuzz(args.seconds, args.release, args.target.as_deref())
}

/// Builds every target, then runs each (or only `only`) for `seconds`;
/// fails on the first target that crashes or hangs.
pub fn fuzz(seconds: u64, release: bool, only: Option<&str>) -> Result<()> {
    let cargo_fuzz = CargoFuzz { bin: setup::ensure_cargo_fuzz()?, release, triple: host_triple()? };
    let targets = cargo_fuzz.targets()?;
    let chosen: Vec<&String> = match only {
        Some(name) => match targets.iter().find(|t| *t == name) {
            Some(t) => vec![t],
            None => bail!("no fuzz target {name:?}; the targets are {}", targets.join(", ")),
        },
        None => targets.iter().collect(),
    };
    let started = Instant::now();
    step(format!("building the fuzz targets ({})", if release { "optimized" } else { "with debug assertions" }));
    let status = cargo_fuzz.command("build").status().context("cannot run cargo fuzz")?;
    if !status.success() {
        bail!("building the fuzz targets failed ({status})");
    }
    let work = root().join("target/fuzz");
    let count = chosen.len();
    for target in chosen {
        let corpus = work.join("corpus").join(target);
        let artifacts = root().join("fuzz/artifacts").join(target);
        for dir in [&corpus, &artifacts] {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let log_path = work.join(format!("{target}.log"));
        let log = File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
        step(format!("fuzzing {target} for {seconds} s"));
        let ran = Instant::now();
        // The binary itself, not `cargo fuzz run`, which would ask cargo
        // twice per target whether the build is fresh. libFuzzer adds what
        // it finds to the first corpus directory only: the seeds stay as
        // committed.
        let binary = cargo_fuzz.binary(target);
        let status = Command::new(&binary)
            .arg(&corpus)
            .arg(root().join("fuzz/corpus").join(target))
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if !status.success() {
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            for line in tail.iter().rev() {
                eprintln!("    {line}");
            }
            bail!(
                "fuzz target {target} failed ({status}); its output is in {}, the input in {} \
                 (run `{} FILE` to replay one)",
                log_path.display(),
                artifacts.display(),
                binary.display()
            );
        }
        eprintln!("    {target}: {} in {:.0?}, no crash", summary(&text), ran.elapsed());
    }
    step(format!("fuzz targets: {count} without a crash, {:.0?} with the build", started.elapsed()));
    Ok(())
}

fn host_triple() -> Result<String> {
    let out = Command::new("rustc").arg("-vV").output().context("cannot run rustc")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .context("rustc -vV names no host")
}

/// libFuzzer's last word: how many inputs, how much coverage.
fn summary(log: &str) -> String {
    let runs = log.lines().rev().find_map(|l| l.strip_prefix("Done ")).and_then(|l| l.split(" in ").next());
    let cov = log.lines().rev().find(|l| l.contains("DONE ")).and_then(|l| {
        let field = |name: &str| l.split_whitespace().skip_while(|w| *w != name).nth(1).map(str::to_string);
        Some(format!("cov {}, corpus {}", field("cov:")?, field("corp:")?))
    });
    match (runs, cov) {
        (Some(runs), Some(cov)) => format!("{runs}, {cov}"),
        (Some(runs), None) => runs.to_string(),
        _ => "ran".to_string(),
    }
}

struct CargoFuzz {
    bin: PathBuf,
    release: bool,
    /// The host's triple, named to cargo fuzz so the binaries' place is known.
    triple: String,
}

impl CargoFuzz {
    /// `cargo fuzz SUBCOMMAND` with the build options every call shares
    /// (one build serves them all): no sanitizer (the parsers are safe
    /// Rust; a sanitizer would need nightly), debug assertions and
    /// overflow checks on.
    fn command(&self, subcommand: &str) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(root()).args(["fuzz", subcommand]);
        if subcommand != "list" {
            cmd.args(["--target", &self.triple, "--sanitizer", "none"]);
            if self.release {
                cmd.args(["--release", "--debug-assertions"]);
            } else {
                // Line tables are enough for a panic's backtrace and keep
                // eight binaries of the whole agent quick to link.
                cmd.arg("--dev").env("CARGO_PROFILE_DEV_DEBUG", "line-tables-only");
            }
        }
        cmd
    }

    fn binary(&self, target: &str) -> PathBuf {
        let profile = if self.release { "release" } else { "debug" };
        root().join("target").join(&self.triple).join(profile).join(target)
    }

    /// The targets fuzz/Cargo.toml declares.
    fn targets(&self) -> Result<Vec<String>> {
        let out = self.command("list").stderr(Stdio::inherit()).output().context("cannot run cargo fuzz list")?;
        if !out.status.success() {
            bail!("cargo fuzz list failed ({})", out.status);
        }
        let targets: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        if targets.is_empty() {
            bail!("cargo fuzz lists no target in fuzz/");
        }
        Ok(targets)
    }
}
