//! Real traffic between namespaces: ping and iperf3, each bounded in time.

use std::{
    net::Ipv4Addr,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU16, Ordering},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{measure::CpuTimes, netns::Netns, wait};

/// Sends `count` echo requests from `from` to `to`; all must be answered.
pub fn ping(from: &Netns, to: Ipv4Addr, count: u32) -> Result<()> {
    let out = crate::cmd::output(
        "ip",
        &from.exec_args("ping", &["-c", &count.to_string(), "-i", "0.05", "-W", "2", "-q", &to.to_string()]),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!("{count} received");
    if !out.status.success() || !text.contains(&want) {
        bail!("ping {} -> {to} failed: {}", from.name(), text.trim());
    }
    Ok(())
}

/// Whether a single ping gets an answer (for checking that something is
/// *not* reachable).
pub fn ping_once(from: &Netns, to: Ipv4Addr) -> bool {
    ping(from, to, 1).is_ok()
}

/// A ping running in the background (`count` pings 20 ms apart, bounded by
/// ping's own deadline), counted when it is finished; killed if dropped.
pub struct BackgroundPing {
    child: Option<Child>,
}

impl BackgroundPing {
    pub fn start(from: &Netns, to: Ipv4Addr, count: u32) -> Result<Self> {
        Self::start_every(from, to, count, 20)
    }

    /// `count` pings, one every `interval_ms` milliseconds.
    pub fn start_every(from: &Netns, to: Ipv4Addr, count: u32, interval_ms: u32) -> Result<Self> {
        let args = Self::args(to, count, interval_ms);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::spawn(Command::new("ip").args(from.exec_args("ping", &args)))
    }

    /// ping's arguments for `count` pings every `interval_ms`, bounded.
    pub fn args(to: Ipv4Addr, count: u32, interval_ms: u32) -> Vec<String> {
        let deadline = (count * interval_ms / 1000 + 4).to_string();
        let interval = format!("{:.3}", f64::from(interval_ms) / 1000.0);
        ["-q", "-c", &count.to_string(), "-i", &interval, "-w", &deadline, &to.to_string()].map(String::from).into()
    }

    /// Runs a ping command (`args`'s arguments) in the background.
    pub fn spawn(command: &mut Command) -> Result<Self> {
        let child = command.stdout(Stdio::piped()).spawn().context("cannot start ping")?;
        Ok(BackgroundPing { child: Some(child) })
    }

    /// Waits for ping to end; (sent, received).
    pub fn finish(mut self) -> Result<(u32, u32)> {
        let out = self.child.take().context("already finished")?.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line =
            text.lines().find(|l| l.contains("packets transmitted")).with_context(|| format!("ping said: {text}"))?;
        let nums: Vec<u32> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
        match nums[..] {
            [sent, received, ..] => Ok((sent, received)),
            _ => bail!("cannot read ping's summary: {line}"),
        }
    }
}

impl Drop for BackgroundPing {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A port for an iperf3 server; each namespace has its own port space, the
/// counter only keeps back-to-back runs from meeting a closing socket.
fn next_port() -> u16 {
    5201 + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % 1000
}

/// A server process inside a namespace, for one measurement.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `program args` in `ns` and waits (bounded) until something
/// listens on TCP `bind:port` there.
fn start_server(ns: &Netns, program: &str, args: &[&str], bind: Ipv4Addr, port: u16) -> Result<Server> {
    let child = Command::new("ip")
        .args(ns.exec_args(program, args))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {program} (is it installed?)"))?;
    let server = Server { child };
    let needle = format!("{bind}:{port}");
    wait::until(&format!("{program} to listen on {needle}"), Duration::from_secs(10), || {
        let listening = ns.exec("ss", &["-Htln"]).ok()?;
        listening.contains(&needle).then_some(())
    })?;
    Ok(server)
}

fn start_iperf3(ns: &Netns, bind: Ipv4Addr, port: u16) -> Result<Server> {
    start_server(ns, "iperf3", &["-s", "-1", "-B", &bind.to_string(), "-p", &port.to_string()], bind, port)
}

/// Request/response latency, sockperf's half round trip, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

/// A sockperf TCP ping-pong from `client` to a server in `server_ns`.
pub fn sockperf(client: &Netns, server_ns: &Netns, server_ip: Ipv4Addr, seconds: u32) -> Result<Latency> {
    let port = next_port();
    let (ip_s, port_s) = (server_ip.to_string(), port.to_string());
    let _server =
        start_server(server_ns, "sockperf", &["server", "--tcp", "-i", &ip_s, "-p", &port_s], server_ip, port)?;
    let limit = (seconds + 20).to_string();
    let secs = seconds.to_string();
    let out = crate::cmd::output(
        "ip",
        &client
            .exec_args("timeout", &[&limit, "sockperf", "ping-pong", "--tcp", "-i", &ip_s, "-p", &port_s, "-t", &secs]),
    )?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    parse_sockperf(&text)
        .with_context(|| format!("sockperf {} -> {server_ip} printed no percentiles:\n{text}", client.name()))
}

/// The 50th, 99th and 99.9th percentiles of a sockperf ping-pong report.
pub fn parse_sockperf(text: &str) -> Option<Latency> {
    let percentile = |p: &str| {
        text.lines()
            .find(|l| l.contains(&format!("percentile {p} =")))
            .and_then(|l| l.rsplit('=').next()?.trim().parse::<f64>().ok())
    };
    Some(Latency { p50_us: percentile("50.000")?, p99_us: percentile("99.000")?, p999_us: percentile("99.900")? })
}

/// What one iperf3 run measured.
#[derive(Debug, Clone)]
pub struct Transfer {
    pub bytes_received: u64,
    pub bits_per_second: f64,
    /// Bits per second of each one-second interval, in order.
    pub intervals: Vec<f64>,
    /// With `IperfOptions::cpus`: the busy time of the two CPUs while the
    /// client ran.
    pub cpu: Option<CpuUse>,
}

/// Busy seconds of the client's and the server's CPU during a run: all the
/// work the kernel accounted there (the programs, the stack, softirqs,
/// iperf3 itself, and anything else the machine ran on that CPU).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUse {
    pub client_s: f64,
    pub server_s: f64,
}

impl CpuUse {
    fn between(before: &CpuTimes, after: &CpuTimes, (client, server): (u32, u32)) -> Self {
        CpuUse {
            client_s: before.busy_seconds_until(after, client as usize),
            server_s: before.busy_seconds_until(after, server as usize),
        }
    }
}

/// An iperf3 TCP run from `client` to a server in `server_ns` on `server_ip`.
/// `reverse` makes the server send. `streams` parallel streams, `seconds`
/// long.
pub fn iperf3(client: &Netns, server_ns: &Netns, server_ip: Ipv4Addr, opts: IperfOptions) -> Result<Transfer> {
    run_iperf3(client, server_ns, server_ip, &["-t", &opts.seconds.to_string()], opts)
}

/// A short TCP exchange: `bytes` sent from `client` to the server, for
/// reachability checks where the rate does not matter. The bytes the server
/// had counted when the client finished (iperf3's count stops there, so it
/// can be less than was sent; none at all is a failure).
pub fn tcp_transfer(client: &Netns, server_ns: &Netns, server_ip: Ipv4Addr, bytes: u64) -> Result<u64> {
    let opts = IperfOptions { seconds: 10, ..Default::default() };
    let t = run_iperf3(client, server_ns, server_ip, &["-n", &bytes.to_string()], opts)?;
    if t.bytes_received == 0 {
        bail!("no bytes arrived at {server_ip}");
    }
    Ok(t.bytes_received)
}

/// `length` is `-t SECONDS` or `-n BYTES`; `opts.seconds` bounds the run.
fn run_iperf3(
    client: &Netns,
    server_ns: &Netns,
    server_ip: Ipv4Addr,
    length: &[&str],
    opts: IperfOptions,
) -> Result<Transfer> {
    let port = next_port();
    let _server = start_iperf3(server_ns, server_ip, port)?;
    let (ip_s, port_s) = (server_ip.to_string(), port.to_string());
    let streams = opts.streams.to_string();
    let mut args = vec!["-c", &ip_s, "-p", &port_s, "-P", &streams, "-J", "--connect-timeout", "3000"];
    args.extend_from_slice(length);
    if opts.reverse {
        args.push("-R");
    }
    let affinity = opts.cpus.map(|(c, s)| format!("{c},{s}"));
    if let Some(a) = &affinity {
        args.extend(["-A", a.as_str()]);
    }
    let udp_len = opts.udp_len.map(|l| l.to_string());
    if let Some(len) = &udp_len {
        // As fast as the sender can: the rate is what the path delivers.
        args.extend(["-u", "-l", len.as_str(), "-b", "0"]);
    }
    let before = CpuTimes::now()?;
    let out = crate::cmd::output(
        "ip",
        &client
            .exec_args("timeout", &[&(opts.seconds + 20).to_string(), "iperf3"])
            .into_iter()
            .chain(args)
            .collect::<Vec<_>>(),
    )?;
    let after = CpuTimes::now()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 printed no JSON: {}", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(err) = json["error"].as_str() {
        bail!("iperf3 {} -> {server_ip}: {err}", client.name());
    }
    // UDP has no receiver's sum of bytes; its `sum` is the sender's.
    let recv = if opts.udp_len.is_some() { &json["end"]["sum"] } else { &json["end"]["sum_received"] };
    let transfer = Transfer {
        bytes_received: recv["bytes"].as_u64().context("iperf3 JSON has no end.sum(_received).bytes")?,
        bits_per_second: recv["bits_per_second"].as_f64().context("no bits_per_second")?,
        intervals: json["intervals"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["sum"]["bits_per_second"].as_f64())
            .collect(),
        cpu: opts.cpus.map(|cpus| CpuUse::between(&before, &after, cpus)),
    };
    Ok(transfer)
}

/// What a UDP flood delivered.
#[derive(Debug, Clone, Copy)]
pub struct PacketRate {
    /// Packets that reached the server's `eth0` per second of the run.
    pub delivered_pps: f64,
    /// Datagrams the client sent per second.
    pub sent_pps: f64,
    pub cpu: Option<CpuUse>,
}

/// iperf3 UDP with `len`-byte datagrams, sent as fast as the client can for
/// `opts.seconds`: the packets the server's `eth0` received, as its counter
/// says (the data path's rate; a socket buffer that overflows behind it
/// does not lower it). Per-packet cost shows here where TCP's segmentation
/// offloads hide it.
pub fn udp_packet_rate(
    client: &Netns,
    server_ns: &Netns,
    server_ip: Ipv4Addr,
    len: u32,
    opts: IperfOptions,
) -> Result<PacketRate> {
    let rx = || -> Result<u64> {
        let v = server_ns.read("/sys/class/net/eth0/statistics/rx_packets")?;
        v.trim().parse().with_context(|| format!("rx_packets {v:?}"))
    };
    let start = rx()?;
    let opts = IperfOptions { udp_len: Some(len), ..opts };
    let t = run_iperf3(client, server_ns, server_ip, &["-t", &opts.seconds.to_string()], opts)?;
    let delivered = rx()?.saturating_sub(start);
    let seconds = f64::from(opts.seconds);
    Ok(PacketRate {
        delivered_pps: delivered as f64 / seconds,
        sent_pps: t.bytes_received as f64 / f64::from(len) / seconds,
        cpu: t.cpu,
    })
}

#[derive(Debug, Clone, Copy)]
pub struct IperfOptions {
    pub seconds: u32,
    pub streams: u32,
    pub reverse: bool,
    /// Pin the client and the server to these CPUs (`iperf3 -A`), so that
    /// runs compared with each other share one placement; the run's CPU
    /// use is then measured on them.
    pub cpus: Option<(u32, u32)>,
    /// UDP with datagrams of this many bytes instead of TCP.
    pub udp_len: Option<u32>,
}

impl Default for IperfOptions {
    fn default() -> Self {
        IperfOptions { seconds: 1, streams: 1, reverse: false, cpus: None, udp_len: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sockperf_percentiles() {
        let report = "sockperf: ---> percentile 99.900 =  111.041\nsockperf: ---> percentile 99.000 =   78.806\n\
                      sockperf: ---> percentile 50.000 =   50.012\n";
        let l = parse_sockperf(report).unwrap();
        assert_eq!((l.p50_us, l.p99_us, l.p999_us), (50.012, 78.806, 111.041));
        assert!(parse_sockperf("sockperf: error").is_none());
    }
}
