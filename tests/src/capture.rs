//! Packet captures with tcpdump, started before the traffic they watch and
//! bounded in time.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::Netns;

/// A running `tcpdump -l -nn` inside a namespace.
pub struct Capture {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Capture {
    /// Starts capturing on `iface` with `filter`, extra tcpdump `args`
    /// (e.g. `-T vxlan`), and waits (bounded) until tcpdump is listening.
    pub fn start(ns: &Netns, iface: &str, args: &[&str], filter: &str) -> Result<Self> {
        let mut full = vec!["-l", "-nn", "-i", iface];
        full.extend_from_slice(args);
        full.push(filter);
        let mut child = Command::new("ip")
            .args(ns.exec_args("tcpdump", &full))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start tcpdump (is it installed?)")?;
        let stderr = child.stderr.take().context("tcpdump stderr")?;
        let stdout = child.stdout.take().context("tcpdump stdout")?;
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut capture = Capture { child, lines };
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = capture.child.kill();
            bail!("tcpdump on {iface} in {} did not start listening", ns.name());
        }
        Ok(capture)
    }

    /// Waits (at most `limit`) for a captured line containing all of
    /// `needles`; every line seen on the way is returned on failure.
    pub fn expect(&self, needles: &[&str], limit: Duration) -> Result<String> {
        let deadline = std::time::Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if needles.iter().all(|n| line.contains(n)) => return Ok(line),
                Ok(line) => seen.push(line),
                Err(_) => bail!("no captured line with {needles:?} within {limit:?}; saw:\n{}", seen.join("\n")),
            }
        }
    }

    /// For showing that something did *not* happen: waits (at most `limit`)
    /// for a marker, a line containing all of `needles` from traffic sent
    /// after the traffic under test, and returns every line captured before
    /// it. A capture keeps the order of one path, so once the marker is in,
    /// anything sent before it on that path would be too.
    pub fn lines_before(&self, needles: &[&str], limit: Duration) -> Result<Vec<String>> {
        let deadline = std::time::Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if needles.iter().all(|n| line.contains(n)) => return Ok(seen),
                Ok(line) => seen.push(line),
                Err(_) => bail!("no marker line with {needles:?} within {limit:?}; saw:\n{}", seen.join("\n")),
            }
        }
    }

    /// Every line captured so far, without waiting.
    pub fn drain(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
