//! `knet-agent monitor`: the drop events of the data path, one line each,
//! like `cilium monitor --type drop`.
//!
//! It reads the pinned `DROP_EVENTS` ring buffer itself rather than asking
//! the agent: it works while the agent is stopped, restarting or wedged,
//! which is when an operator needs it most, and the events never cross the
//! agent's API. The price is the ring buffer's single consumer position,
//! shared by everyone who maps it: two readers would split the events
//! between them (each sees some, neither all). So a monitor takes an
//! exclusive lock first (on `<pin_dir>/monitor`, a directory of its own)
//! and a second one is refused with a message; the agent itself never
//! reads the ring.

use std::{
    collections::HashMap,
    fs::File,
    net::Ipv4Addr,
    os::fd::AsFd,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use knet_common::{
    drop_event::{DropEvent, DropEventCounts, Hook},
    map_names, Stat,
};
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
    poll::{poll, PollFd, PollFlags, PollTimeout},
    time::{clock_gettime, ClockId},
};
use serde::Serialize;

/// Which events to show.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Any of these reasons; all when empty.
    pub reasons: Vec<Stat>,
    /// Source or destination.
    pub ip: Option<Ipv4Addr>,
    pub interface: Option<String>,
}

impl Filter {
    /// Reads a reason as `knet-agent stats` names it, with or without its
    /// `drop_` prefix.
    pub fn reason(name: &str) -> Result<Stat> {
        let stat = Stat::from_name(name).or_else(|| Stat::from_name(&format!("drop_{name}")));
        match stat {
            Some(s) if s.is_drop() => Ok(s),
            _ => {
                let names: Vec<_> = Stat::ALL.iter().filter(|s| s.is_drop()).map(|s| s.name()).collect();
                bail!("--reason {name:?} is no drop reason; one of: {}", names.join(", "))
            }
        }
    }

    fn matches(&self, e: &Shown) -> bool {
        (self.reasons.is_empty() || e.stat.is_some_and(|s| self.reasons.contains(&s)))
            && self.ip.is_none_or(|ip| e.src == Some(ip) || e.dst == Some(ip))
            && self.interface.as_ref().is_none_or(|name| e.interface.as_deref() == Some(name.as_str()))
    }
}

/// How long to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bounds {
    /// Stop after this many shown events.
    pub count: Option<u64>,
    /// Stop after this long.
    pub timeout: Option<Duration>,
}

/// One event as the monitor shows it (the `--json` line).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Shown {
    /// RFC 3339, UTC.
    pub time: String,
    /// The reason's stable name (`knet-agent stats`), or `unknown_<code>`.
    pub reason: String,
    pub explanation: String,
    /// The program that dropped it.
    pub hook: String,
    pub direction: String,
    pub ifindex: u32,
    pub interface: Option<String>,
    pub src: Option<Ipv4Addr>,
    pub dst: Option<Ipv4Addr>,
    /// IPv4 protocol name or number.
    pub protocol: Option<String>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// EtherType, e.g. `0x86dd`.
    pub ethertype: String,
    pub len: u32,
    #[serde(skip)]
    stat: Option<Stat>,
}

impl Shown {
    fn new(e: &DropEvent, clock: &Clock, names: &mut InterfaceNames) -> Shown {
        let stat = e.stat();
        let hook = Hook::from_u8(e.hook);
        let (src, dst, protocol) = if e.has_ipv4() {
            let addr = |a: u32| Some(Ipv4Addr::from(a.to_ne_bytes()));
            (addr(e.src), addr(e.dst), Some(protocol_name(e.protocol)))
        } else {
            (None, None, None)
        };
        let ports = e.has_ports();
        Shown {
            time: clock.wall_time(e.time_ns),
            reason: stat.map_or_else(|| format!("unknown_{}", e.reason), |s| s.name().to_string()),
            explanation: stat.map_or("a reason this build does not know", |s| s.explain()).to_string(),
            hook: hook.map_or("unknown", |h| h.name()).to_string(),
            direction: hook.map_or("unknown", |h| h.direction()).to_string(),
            ifindex: e.ifindex,
            interface: names.name(e.ifindex),
            src,
            dst,
            protocol,
            src_port: ports.then_some(e.src_port),
            dst_port: ports.then_some(e.dst_port),
            ethertype: format!("{:#06x}", e.ethertype),
            len: e.len,
            stat,
        }
    }

    /// The one-line form: time, reason, explanation, addresses, protocol,
    /// interface.
    pub fn line(&self) -> String {
        let endpoint = |ip: Option<Ipv4Addr>, port: Option<u16>| match (ip, port) {
            (Some(ip), Some(port)) => format!("{ip}:{port}"),
            (Some(ip), None) => ip.to_string(),
            (None, _) => "-".to_string(),
        };
        let what = match &self.protocol {
            Some(p) => p.clone(),
            None => format!("ethertype {}", self.ethertype),
        };
        // `xx drop (reason)`: how `cilium monitor` starts a drop's line,
        // so its readers (and their greps) find it where they look.
        format!(
            "{} xx drop ({}: {}) {} -> {} {} {} bytes on {} ({} {})",
            self.time,
            self.reason,
            self.explanation,
            endpoint(self.src, self.src_port),
            endpoint(self.dst, self.dst_port),
            what,
            self.len,
            self.interface.as_deref().unwrap_or("?"),
            self.hook,
            self.direction,
        )
    }
}

fn protocol_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        other => format!("proto {other}"),
    }
}

/// Turns the programs' CLOCK_MONOTONIC stamps into wall-clock time.
struct Clock {
    /// Wall clock minus monotonic clock, ns.
    offset: i128,
    started_ns: u64,
}

impl Clock {
    fn now() -> Result<Clock> {
        let ns = |id| -> Result<i128> {
            let t = clock_gettime(id).context("cannot read the clock")?;
            Ok(i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
        };
        let mono = ns(ClockId::CLOCK_MONOTONIC)?;
        Ok(Clock { offset: ns(ClockId::CLOCK_REALTIME)? - mono, started_ns: mono as u64 })
    }

    fn wall_time(&self, mono_ns: u64) -> String {
        match jiff::Timestamp::from_nanosecond(self.offset + i128::from(mono_ns)) {
            Ok(t) => format!("{t:.6}"),
            Err(_) => format!("+{mono_ns}ns"),
        }
    }
}

/// Interface names, looked up once per ifindex in this network namespace.
#[derive(Default)]
struct InterfaceNames(HashMap<u32, Option<String>>);

impl InterfaceNames {
    fn name(&mut self, ifindex: u32) -> Option<String> {
        self.0
            .entry(ifindex)
            .or_insert_with(|| nix::net::if_::if_indextoname(ifindex).ok().map(|n| n.to_string_lossy().into_owned()))
            .clone()
    }
}

/// The lock that makes this the ring's only reader.
pub struct ReaderLock {
    _dir: Flock<File>,
}

pub fn lock_reader(pin_dir: &Path) -> Result<ReaderLock> {
    let dir = pin_dir.join("monitor");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = File::open(&dir).with_context(|| format!("cannot open {}", dir.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(ReaderLock { _dir: lock }),
        Err((_, Errno::EWOULDBLOCK)) => bail!(
            "another knet-agent monitor is reading the drop events of {} (a ring buffer has one reader position: two would split the events); stop it first",
            pin_dir.display()
        ),
        Err((_, e)) => Err(e).with_context(|| format!("cannot lock {}", dir.display())),
    }
}

/// What a monitor run saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Events read from the ring.
    pub read: u64,
    /// Of which made before the monitor started (not shown).
    pub stale: u64,
    /// Of which shown.
    pub shown: u64,
}

/// Streams the drop events pinned under `pin_dir` to `out` until `bounds`
/// end it (or forever). `ready` is called once the ring is open and the
/// events older than the monitor skipped.
pub fn run(
    pin_dir: &Path,
    filter: &Filter,
    bounds: Bounds,
    json: bool,
    mut out: impl std::io::Write,
    ready: impl FnOnce(),
) -> Result<Summary> {
    let _lock = lock_reader(pin_dir)?;
    let pin = pin_dir.join(map_names::DROP_EVENTS);
    let data = MapData::from_pin(&pin)
        .with_context(|| format!("cannot open the drop events at {} (has an agent run here?)", pin.display()))?;
    let mut ring = RingBuf::try_from(Map::RingBuf(data)).context("DROP_EVENTS is not a ring buffer")?;
    let clock = Clock::now()?;
    let mut names = InterfaceNames::default();
    let mut summary = Summary::default();
    let deadline = bounds.timeout.map(|t| std::time::Instant::now() + t);
    let mut ready = Some(ready);
    loop {
        // Drain what is there, then wait for more.
        while let Some(item) = ring.next() {
            summary.read += 1;
            let Some(event) = DropEvent::decode(&item) else {
                continue;
            };
            if event.time_ns < clock.started_ns {
                summary.stale += 1;
                continue;
            }
            let shown = Shown::new(&event, &clock, &mut names);
            if !filter.matches(&shown) {
                continue;
            }
            let line = if json { serde_json::to_string(&shown)? } else { shown.line() };
            writeln!(out, "{line}")?;
            out.flush()?;
            summary.shown += 1;
            if bounds.count.is_some_and(|n| summary.shown >= n) {
                return Ok(summary);
            }
        }
        if let Some(ready) = ready.take() {
            ready();
        }
        let timeout = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Ok(summary);
                }
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        match poll(&mut [PollFd::new(ring.as_fd(), PollFlags::POLLIN)], timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("cannot wait on the drop events"),
        }
    }
}

/// `DROP_EVENT_STATS` pinned under `pin_dir`, summed over CPUs: per drop
/// reason, how many events were sent, rate limited, lost to a full ring.
pub fn event_counts(pin_dir: &Path) -> Result<Vec<(Stat, DropEventCounts)>> {
    let pin: PathBuf = pin_dir.join(map_names::DROP_EVENT_STATS);
    let data = MapData::from_pin(&pin).with_context(|| format!("cannot open {}", pin.display()))?;
    let map: PerCpuArray<MapData, DropEventCounts> = PerCpuArray::try_from(Map::PerCpuArray(data))?;
    Stat::ALL
        .iter()
        .filter(|s| s.is_drop())
        .map(|&stat| {
            let per_cpu = map.get(&stat.slot(), 0).with_context(|| format!("cannot read {}", pin.display()))?;
            Ok((stat, per_cpu.iter().fold(DropEventCounts::default(), |acc, c| acc.add(*c))))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use knet_common::drop_event::{EVENT_IPV4, EVENT_PORTS};

    fn spoofed() -> DropEvent {
        DropEvent {
            time_ns: 5_000_000_000,
            reason: Stat::DropSpoofedSource.slot(),
            ifindex: 1,
            len: 98,
            src: u32::from_ne_bytes([10, 244, 0, 99]),
            dst: u32::from_ne_bytes([10, 244, 0, 3]),
            src_port: 40000,
            dst_port: 5201,
            ethertype: 0x0800,
            protocol: 17,
            hook: Hook::FromPod as u8,
            flags: EVENT_IPV4 | EVENT_PORTS,
            _pad: [0; 3],
        }
    }

    fn shown(e: &DropEvent) -> Shown {
        let clock = Clock { offset: 1_700_000_000_000_000_000, started_ns: 0 };
        Shown::new(e, &clock, &mut InterfaceNames::default())
    }

    #[test]
    fn a_line_names_reason_explanation_addresses_protocol_and_hook() {
        let line = shown(&spoofed()).line();
        assert!(line.starts_with("2023-11-14T22:13:25.000000Z "), "{line}");
        for part in [
            "drop_spoofed_source",
            Stat::DropSpoofedSource.explain(),
            "10.244.0.99:40000 -> 10.244.0.3:5201 udp 98 bytes",
            "from_pod ingress",
        ] {
            assert!(line.contains(part), "{part:?} missing in {line}");
        }
    }

    #[test]
    fn what_an_event_lacks_is_not_made_up() {
        let mut e = spoofed();
        e.flags = 0;
        e.ethertype = 0x86dd;
        e.reason = 63;
        let s = shown(&e);
        assert_eq!((s.src, s.src_port, s.protocol.as_deref()), (None, None, None));
        assert_eq!(s.reason, "unknown_63");
        assert!(s.line().contains("- -> - ethertype 0x86dd"), "{}", s.line());
        e.flags = EVENT_IPV4;
        e.protocol = 1;
        let s = shown(&e);
        assert!(s.line().contains("10.244.0.99 -> 10.244.0.3 icmp"), "{}", s.line());
    }

    #[test]
    fn filters_by_reason_address_and_interface() {
        let s = shown(&spoofed());
        let f = |reasons: Vec<Stat>, ip: Option<[u8; 4]>, interface: Option<&str>| Filter {
            reasons,
            ip: ip.map(Ipv4Addr::from),
            interface: interface.map(str::to_string),
        };
        assert!(f(vec![], None, None).matches(&s));
        assert!(f(vec![Stat::DropNoEndpoint, Stat::DropSpoofedSource], None, None).matches(&s));
        assert!(!f(vec![Stat::DropNoEndpoint], None, None).matches(&s));
        assert!(f(vec![], Some([10, 244, 0, 99]), None).matches(&s), "the source matches");
        assert!(f(vec![], Some([10, 244, 0, 3]), None).matches(&s), "the destination matches");
        assert!(!f(vec![], Some([10, 244, 0, 4]), None).matches(&s));
        let named = Shown { interface: Some("knet0".into()), ..s.clone() };
        assert!(f(vec![], None, Some("knet0")).matches(&named));
        assert!(!f(vec![], None, Some("knet1")).matches(&named));
        assert!(!f(vec![], None, Some("knet0")).matches(&s), "an unnamed interface matches no name");
    }

    #[test]
    fn reasons_are_drop_reasons_by_name_with_or_without_prefix() {
        assert_eq!(Filter::reason("drop_spoofed_source").unwrap(), Stat::DropSpoofedSource);
        assert_eq!(Filter::reason("spoofed_source").unwrap(), Stat::DropSpoofedSource);
        let e = Filter::reason("redirect_local").unwrap_err().to_string();
        assert!(e.contains("no drop reason") && e.contains("drop_no_endpoint"), "{e}");
        assert!(Filter::reason("bogus").is_err());
    }

    #[test]
    fn json_lines_read_back() {
        let s = shown(&spoofed());
        let back: Shown = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(Shown { stat: s.stat, ..back }, s);
    }
}
