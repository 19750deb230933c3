//! `knet-agent monitor` run as an operator runs it, inside a node's
//! namespace (so interface names resolve there) on the agent's pin
//! directory; killed on drop.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use knet_agent::monitor::Shown;

use knet_tests::{agent::agent_binary, wait, Agent, Netns};

/// A running monitor with `--json`; what it printed so far is collected
/// by threads of its own.
pub struct Monitor {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    /// Starts `knet-agent monitor --json ARGS` for `agent` in `node` and
    /// waits (bounded) until it reads the ring.
    pub fn start(node: &Netns, agent: &Agent, args: &[&str]) -> Result<Self> {
        let mut monitor = Self::spawn(node, agent, args)?;
        let ready = wait::until("the monitor to read the ring", Duration::from_secs(10), || {
            let started = monitor.stderr_text().contains("monitoring the drop events");
            let exited = monitor.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            (started || exited.is_some()).then_some(exited)
        })?;
        if let Some(status) = ready {
            bail!("the monitor exited ({status}):\n{}", monitor.stderr_text());
        }
        Ok(monitor)
    }

    /// Starts it without waiting (for one that is expected to refuse).
    pub fn spawn(node: &Netns, agent: &Agent, args: &[&str]) -> Result<Self> {
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", node.name()))
            .arg(agent_binary()?)
            .args(["monitor", "--json", "--bpf-pin-dir"])
            .arg(agent.pin_dir())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start knet-agent monitor")?;
        let lines = collect(child.stdout.take().context("no stdout")?);
        let stderr = collect(child.stderr.take().context("no stderr")?);
        Ok(Monitor { child: Some(child), lines, stderr })
    }

    /// The events printed so far.
    pub fn events(&self) -> Result<Vec<Shown>> {
        let lines = self.lines.lock().expect("not poisoned").clone();
        lines.iter().map(|l| serde_json::from_str(l).with_context(|| format!("monitor printed {l:?}"))).collect()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("not poisoned").join("\n")
    }

    /// Waits (bounded) for the monitor to end by itself (`--count`,
    /// `--timeout`, or a refusal); its success and its events.
    pub fn finish(mut self, limit: Duration) -> Result<(bool, Vec<Shown>)> {
        let ok = self.exit(limit)?;
        Ok((ok, self.events()?))
    }

    /// Waits (bounded) for a monitor expected to refuse; its success and
    /// what it said.
    pub fn refusal(mut self, limit: Duration) -> Result<(bool, String)> {
        let ok = self.exit(limit)?;
        Ok((ok, self.stderr_text()))
    }

    fn exit(&mut self, limit: Duration) -> Result<bool> {
        let mut child = self.child.take().context("already finished")?;
        let status = match wait::until("the monitor to exit", limit, || child.try_wait().ok().flatten()) {
            Ok(s) => s,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        // The reader threads end with the pipes; wait for what they read.
        wait::until("the monitor's output to be read", Duration::from_secs(5), || {
            (Arc::strong_count(&self.lines) == 1 && Arc::strong_count(&self.stderr) == 1).then_some(())
        })?;
        Ok(status.success())
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Collects the lines of `pipe` from a thread, which ends (dropping its
/// handle on the lines) at end of file.
fn collect(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            sink.lock().expect("not poisoned").push(line);
        }
    });
    lines
}
