//! ping and a TCP transfer between network namespaces named by path (a
//! sandbox's, which only containerd's mount namespace holds, or a test
//! namespace's `/run/netns/NAME`), entered with `nsenter --net`.
//! `traffic.rs` does the same for the harness's named namespaces.

use std::{
    net::Ipv4Addr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU16, Ordering},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{cmd, traffic::BackgroundPing, wait};

/// The `nsenter` argument list that runs `program args` in the namespace
/// at `netns`.
pub fn exec_args<'a>(netns: &'a Path, program: &'a str, args: &[&'a str]) -> Result<Vec<String>> {
    let path = netns.to_str().with_context(|| format!("{} is not UTF-8", netns.display()))?;
    let mut full = vec![format!("--net={path}"), "--".into(), program.into()];
    full.extend(args.iter().map(|a| a.to_string()));
    Ok(full)
}

/// Runs `program args` in the namespace at `netns`; its stdout.
pub fn exec(netns: &Path, program: &str, args: &[&str]) -> Result<String> {
    let full = exec_args(netns, program, args)?;
    cmd::run("nsenter", &full.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Sends `count` echo requests from `from` to `to`; all must be answered.
pub fn ping(from: &Path, to: Ipv4Addr, count: u32) -> Result<()> {
    let to_s = to.to_string();
    let out = exec(from, "ping", &["-c", &count.to_string(), "-i", "0.05", "-W", "2", "-q", &to_s])
        .with_context(|| format!("ping {} -> {to}", from.display()))?;
    if !out.contains(&format!("{count} received")) {
        bail!("ping {} -> {to}: {}", from.display(), out.trim());
    }
    Ok(())
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `count` pings from `from` to `to`, one every `interval_ms`, in the
/// background.
pub fn background_ping(from: &Path, to: Ipv4Addr, count: u32, interval_ms: u32) -> Result<BackgroundPing> {
    let args = BackgroundPing::args(to, count, interval_ms);
    let full = exec_args(from, "ping", &args.iter().map(String::as_str).collect::<Vec<_>>())?;
    BackgroundPing::spawn(Command::new("nsenter").args(full))
}

/// An iperf3 TCP stream of `seconds` from `client` to `server` on
/// `server_ip`: bits per second of each one-second interval.
pub fn iperf3_seconds(client: &Path, server: &Path, server_ip: Ipv4Addr, seconds: u32) -> Result<Vec<f64>> {
    let json = iperf3(client, server, server_ip, &["-t", &seconds.to_string()])?;
    Ok(json["intervals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["sum"]["bits_per_second"].as_f64())
        .collect())
}

/// `bytes` over TCP from `client` to an iperf3 server in `server` on
/// `server_ip`; the bytes the server counted (none is a failure).
pub fn tcp_transfer(client: &Path, server: &Path, server_ip: Ipv4Addr, bytes: u64) -> Result<u64> {
    let json = iperf3(client, server, server_ip, &["-n", &bytes.to_string()])?;
    let received =
        json["end"]["sum_received"]["bytes"].as_u64().context("iperf3 JSON has no end.sum_received.bytes")?;
    if received == 0 {
        bail!("no bytes arrived at {server_ip}");
    }
    Ok(received)
}

/// One iperf3 client run (`length`: `-n BYTES` or `-t SECONDS`) against a
/// one-off server; its JSON report.
fn iperf3(client: &Path, server: &Path, server_ip: Ipv4Addr, length: &[&str]) -> Result<serde_json::Value> {
    let port = (6201 + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % 1000).to_string();
    let ip = server_ip.to_string();
    let child = Command::new("nsenter")
        .args(exec_args(server, "iperf3", &["-s", "-1", "-B", &ip, "-p", &port])?)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start iperf3 (is it installed?)")?;
    let _server = Server(child);
    let needle = format!("{ip}:{port}");
    wait::until(&format!("iperf3 to listen on {needle}"), Duration::from_secs(10), || {
        exec(server, "ss", &["-Htln"]).ok()?.contains(&needle).then_some(())
    })?;
    let mut args = vec!["40", "iperf3", "-c", &ip, "-p", &port, "-J", "--connect-timeout", "3000"];
    args.extend_from_slice(length);
    let full = exec_args(client, "timeout", &args)?;
    let out = cmd::output("nsenter", &full.iter().map(String::as_str).collect::<Vec<_>>())?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 printed no JSON: {}", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(err) = json["error"].as_str() {
        bail!("iperf3 {} -> {server_ip}: {err}", client.display());
    }
    Ok(json)
}
