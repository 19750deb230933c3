//! A row of the packet table and how it is checked: the TC return code,
//! the redirect target left in `cb`, the one `STATS` slot that moved (by
//! one packet of the final length), the frame that came out, and the drop
//! event of a dropped one (none of any other).

use std::net::Ipv4Addr;

use knet_common::{
    drop_event::{DropEvent, Hook},
    ipv4_key, Stat,
};
use knet_tests::{
    frames,
    test_run::{Maps, Program, Skb, TestDataplane, CB_UNTOUCHED},
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

/// One crafted frame through one program.
pub struct Row {
    pub name: String,
    pub program: Program,
    pub maps: Maps,
    pub skb: Skb,
    pub frame: Vec<u8>,
    pub expect: Expect,
}

pub enum Expect {
    /// `TC_ACT_OK`: on to the stack.
    Pass(Stat, Out),
    /// `TC_ACT_SHOT`.
    Drop(Stat, Out),
    /// `TC_ACT_REDIRECT` to `Target`.
    Redirect(Stat, Target, Out),
    /// The kernel refuses to run a program on this input, with this errno;
    /// nothing is counted.
    Refused(i32),
}

/// Where a redirect goes, as the programs note it in `cb[0]` and `cb[1]`.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub ifindex: u32,
    /// The native next hop; `None` for a pod or the host's route.
    pub next_hop: Option<Ipv4Addr>,
}

/// The frame that comes out.
pub enum Out {
    /// The frame that went in, byte for byte.
    Same,
    Is(Expected),
}

/// Exact bytes but for fields the programs fill with random values.
#[derive(Clone, Debug)]
pub struct Expected {
    pub bytes: Vec<u8>,
    pub random: Vec<Random>,
}

#[derive(Clone, Copy, Debug)]
pub enum Random {
    /// The ID of the IPv4 header at this offset (and so its checksum):
    /// masked, and the header checksum must verify instead.
    IpId { header_at: usize },
    /// The UDP source port of VXLAN (a flow hash): masked, and it must be
    /// in 49152..=65535.
    VxlanSourcePort { udp_at: usize },
}

impl Random {
    pub fn shifted(self, by: usize) -> Random {
        match self {
            Random::IpId { header_at } => Random::IpId { header_at: header_at + by },
            Random::VxlanSourcePort { udp_at } => Random::VxlanSourcePort { udp_at: udp_at + by },
        }
    }
}

/// Runs `row`: the `Stat` whose slot alone moved by one packet (if one
/// did), and every way the run differs from the row.
pub fn check(dataplane: &TestDataplane, row: &Row) -> anyhow::Result<(Option<Stat>, Vec<String>)> {
    let run = dataplane.run(row.program, &row.frame, row.skb)?;
    let mut problems = Vec::new();
    let produced = match run.moved.as_slice() {
        [(slot, counter)] if counter.packets == 1 => Stat::ALL.iter().copied().find(|s| s.slot() == *slot),
        _ => None,
    };

    let (stat, code, target, out) = match &row.expect {
        Expect::Refused(errno) => {
            match &run.result {
                Err(e) if e.raw_os_error() == Some(*errno) => {}
                Err(e) => problems.push(format!("refused with {e}, expected errno {errno}")),
                Ok(out) => problems.push(format!("the kernel ran it (code {}), expected errno {errno}", out.code)),
            }
            if !run.moved.is_empty() {
                problems.push(format!("counters moved: {:?}", run.moved));
            }
            return Ok((produced, problems));
        }
        Expect::Pass(stat, out) => (stat, TC_ACT_OK, None, out),
        Expect::Drop(stat, out) => (stat, TC_ACT_SHOT, None, out),
        Expect::Redirect(stat, target, out) => (stat, TC_ACT_REDIRECT, Some(target), out),
    };
    let events = run.events;
    let output = match run.result {
        Ok(output) => output,
        Err(e) => {
            problems.push(format!("the kernel refused the test run: {e}"));
            return Ok((produced, problems));
        }
    };

    if output.code != code {
        problems.push(format!("return code {}, expected {code}", output.code));
    }
    let cb = match target {
        Some(t) => [t.ifindex, t.next_hop.map_or(0, |ip| ipv4_key(ip.octets()))],
        None => [CB_UNTOUCHED; 2],
    };
    if output.cb != cb {
        problems.push(format!("redirect target (cb[0], cb[1]) {:x?}, expected {cb:x?}", output.cb));
    }
    match run.moved.as_slice() {
        [(slot, counter)] if *slot == stat.slot() => {
            if counter.packets != 1 || counter.bytes != output.frame.len() as u64 {
                problems
                    .push(format!("{stat:?} moved by {counter:?}, expected 1 packet of {} bytes", output.frame.len()));
            }
        }
        moved => {
            let names: Vec<String> = moved
                .iter()
                .map(|(slot, c)| match Stat::ALL.iter().find(|s| s.slot() == *slot) {
                    Some(s) => format!("{s:?} +{}", c.packets),
                    None => format!("slot {slot} +{}", c.packets),
                })
                .collect();
            problems.push(format!("counters moved: [{}], expected {stat:?} +1", names.join(", ")));
        }
    }
    match (&row.expect, events.as_slice()) {
        (Expect::Drop(..), [event]) => problems.extend(event_problems(event, *stat, row, &output.frame)),
        (Expect::Drop(..), events) => problems.push(format!("{} drop events, expected one: {events:?}", events.len())),
        (_, []) => {}
        (_, events) => problems.push(format!("drop events for a packet not dropped: {events:?}")),
    }
    let expected = match out {
        Out::Same => Expected { bytes: row.frame.clone(), random: Vec::new() },
        Out::Is(e) => e.clone(),
    };
    problems.extend(compare_frames(&expected, &output.frame));
    Ok((produced, problems))
}

/// How the drop event of `row` differs from the dropped `frame`, read
/// here from its bytes (RFC 791 offsets), not from the programs' structs.
fn event_problems(event: &DropEvent, stat: Stat, row: &Row, frame: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut differs = |what: &str, got: String, want: String| {
        if got != want {
            problems.push(format!("drop event {what} {got}, expected {want}"));
        }
    };
    differs("reason", format!("{:?}", event.stat()), format!("{:?}", Some(stat)));
    differs(
        "hook",
        format!("{:?}", Hook::from_u8(event.hook).map(Hook::name)),
        format!("{:?}", Some(row.program.name())),
    );
    differs("ifindex", event.ifindex.to_string(), row.skb.ifindex.max(1).to_string());
    differs("length", event.len.to_string(), frame.len().to_string());
    let ethertype = frame.get(12..14).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    differs("ethertype", format!("{:#06x}", event.ethertype), format!("{ethertype:#06x}"));
    let ip =
        frame.get(frames::ETH_LEN..frames::ETH_LEN + 20).filter(|h| ethertype == frames::ETH_IPV4 && h[0] >> 4 == 4);
    let Some(ip) = ip else {
        differs("IPv4 flag", event.has_ipv4().to_string(), false.to_string());
        return problems;
    };
    let addr = |a: u32| Ipv4Addr::from(a.to_ne_bytes());
    differs("source", addr(event.src).to_string(), Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]).to_string());
    differs("destination", addr(event.dst).to_string(), Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]).to_string());
    differs("protocol", event.protocol.to_string(), ip[9].to_string());
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let later_fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0;
    let ports = [6, 17]
        .contains(&ip[9])
        .then_some(())
        .filter(|()| !later_fragment && header_len >= 20)
        .and_then(|()| frame.get(frames::ETH_LEN + header_len..frames::ETH_LEN + header_len + 4));
    match ports {
        Some(p) => differs(
            "ports",
            format!("{:?}", event.has_ports().then_some((event.src_port, event.dst_port))),
            format!("{:?}", Some((u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]])))),
        ),
        None => differs("ports flag", event.has_ports().to_string(), false.to_string()),
    }
    problems
}

/// Every difference of `got` from `expected`, random fields masked and
/// checked for what they must satisfy instead.
fn compare_frames(expected: &Expected, got: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut want = expected.bytes.clone();
    let mut got_masked = got.to_vec();
    for random in &expected.random {
        let masked = match *random {
            Random::IpId { header_at } => {
                match frames::ipv4_at(got, header_at) {
                    Some(ip) if ip.checksum_ok => {}
                    _ => problems.push(format!("IPv4 header at {header_at} missing or its checksum wrong")),
                }
                vec![header_at + 4, header_at + 5, header_at + 10, header_at + 11]
            }
            Random::VxlanSourcePort { udp_at } => {
                match got.get(udp_at..udp_at + 2) {
                    Some(&[hi, lo]) if u16::from_be_bytes([hi, lo]) >= 49152 => {}
                    port => problems.push(format!("VXLAN source port {port:x?} not in 49152..=65535")),
                }
                vec![udp_at, udp_at + 1]
            }
        };
        for at in masked {
            for bytes in [&mut want, &mut got_masked] {
                if let Some(b) = bytes.get_mut(at) {
                    *b = 0;
                }
            }
        }
    }
    if want != got_masked {
        let first = want.iter().zip(&got_masked).position(|(a, b)| a != b).unwrap_or(want.len().min(got.len()));
        problems.push(format!(
            "frame differs from byte {first} (lengths: expected {}, got {})\n  expected {}\n  got      {}",
            want.len(),
            got.len(),
            hex_around(&want, first),
            hex_around(got, first),
        ));
    }
    problems
}

/// The bytes from 16 before `at` to 32 after it, in hex.
fn hex_around(bytes: &[u8], at: usize) -> String {
    let start = at.saturating_sub(16) & !1;
    let end = (at + 32).min(bytes.len());
    let hex: Vec<String> = bytes.get(start..end).unwrap_or(&[]).iter().map(|b| format!("{b:02x}")).collect();
    format!("[{start}..{end}] {}", hex.join(" "))
}
