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
