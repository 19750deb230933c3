//! Running the real tools (iproute2, iperf3, ping) and reporting their
//! failures with their own words.

use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// Runs `program args...`; its stdout if it exits 0, an error naming the
/// command and quoting its stderr otherwise.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = output(program, args)?;
    if !out.status.success() {
        bail!(
            "`{} {}` failed ({}): {}",
            program,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn output(program: &str, args: &[&str]) -> Result<Output> {
    Command::new(program).args(args).output().with_context(|| format!("cannot run {program} (is it installed?)"))
}

/// `ip` with the given arguments.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// A binary of the workspace: the path in `env_var`, or the debug build.
pub fn workspace_binary(env_var: &str, name: &str) -> Result<std::path::PathBuf> {
    let path = match std::env::var_os(env_var) {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug").join(name),
    };
    if !path.exists() {
        bail!("no {name} binary at {} (run the tests with `cargo xtask test`)", path.display());
    }
    Ok(path)
}
