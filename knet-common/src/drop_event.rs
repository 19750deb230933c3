//! `DROP_EVENTS`: a BPF ring buffer with one `DropEvent` per dropped packet
//! (as many as the rate limit lets through), and `DROP_EVENT_STATS`, which
//! counts per drop reason what became of each event, so that for every
//! reason `STATS` drops = sent + rate limited + ring full.

use crate::rate::RateLimit;

/// Events per second per CPU after a burst: enough to watch a problem,
/// too few for a flood to cost the data path more than a comparison (and
/// to fill the ring before a reader catches up).
pub const DROP_EVENT_LIMIT: RateLimit = RateLimit { per_sec: 200, burst: 100 };

/// Bytes of the ring buffer (a power of two and a multiple of the page
/// size): about 5,000 events, some 10 s at the limit on two CPUs.
pub const DROP_EVENT_RING_BYTES: u32 = 256 * 1024;

/// Where the program that dropped the packet runs.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Ingress of a pod's host veth: what a pod sent.
    FromPod = 1,
    /// Ingress of the underlay device: what arrived from the network.
    FromNetdev = 2,
    /// Egress of the underlay device: what the node sends.
    ToNetdev = 3,
}

impl Hook {
    pub const fn from_u8(v: u8) -> Option<Hook> {
        match v {
            1 => Some(Hook::FromPod),
            2 => Some(Hook::FromNetdev),
            3 => Some(Hook::ToNetdev),
            _ => None,
        }
    }

    /// Name of the program, as `bpftool prog show` lists it.
    pub const fn name(self) -> &'static str {
        match self {
            Hook::FromPod => crate::program_names::FROM_POD,
            Hook::FromNetdev => crate::program_names::FROM_NETDEV,
            Hook::ToNetdev => crate::program_names::TO_NETDEV,
        }
    }

    /// Whether the packet was coming in or going out of the interface.
    pub const fn direction(self) -> &'static str {
        match self {
            Hook::FromPod | Hook::FromNetdev => "ingress",
            Hook::ToNetdev => "egress",
        }
    }
}

/// `DropEvent::flags`: the addresses are those of an IPv4 header.
pub const EVENT_IPV4: u8 = 1;
/// `DropEvent::flags`: the ports are those of a TCP or UDP header.
pub const EVENT_PORTS: u8 = 2;

/// One dropped packet, as the ring buffer carries it (native byte order
/// but for the addresses).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropEvent {
    /// `bpf_ktime_get_ns`: CLOCK_MONOTONIC.
    pub time_ns: u64,
    /// The `Stat` slot of the drop reason.
    pub reason: u32,
    /// The interface the program runs on.
    pub ifindex: u32,
    /// Bytes of the packet, Ethernet header included.
    pub len: u32,
    /// IPv4 source and destination in wire order (as `Ipv4Addr::from`
    /// of `to_ne_bytes` reads them), when `EVENT_IPV4`.
    pub src: u32,
    pub dst: u32,
    /// TCP or UDP ports, host order, when `EVENT_PORTS`.
    pub src_port: u16,
    pub dst_port: u16,
    /// The frame's EtherType, host order.
    pub ethertype: u16,
    /// IPv4 protocol number when `EVENT_IPV4`.
    pub protocol: u8,
    /// `Hook` as a number.
    pub hook: u8,
    pub flags: u8,
    pub _pad: [u8; 3],
}

pub const DROP_EVENT_LEN: usize = core::mem::size_of::<DropEvent>();
const _: () = assert!(DROP_EVENT_LEN == 40);

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, `Copy`, integers only, padding explicit.
unsafe impl aya::Pod for DropEvent {}

impl DropEvent {
    /// Reads an event from a ring buffer record; `None` if it has another
    /// size (a program of another build).
    pub fn decode(bytes: &[u8]) -> Option<DropEvent> {
        if bytes.len() != DROP_EVENT_LEN {
            return None;
        }
        let u16_at = |at: usize| u16::from_ne_bytes([bytes[at], bytes[at + 1]]);
        let u32_at = |at: usize| u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let mut time = [0; 8];
        time.copy_from_slice(&bytes[..8]);
        Some(DropEvent {
            time_ns: u64::from_ne_bytes(time),
            reason: u32_at(8),
            ifindex: u32_at(12),
            len: u32_at(16),
            src: u32_at(20),
            dst: u32_at(24),
            src_port: u16_at(28),
            dst_port: u16_at(30),
            ethertype: u16_at(32),
            protocol: bytes[34],
            hook: bytes[35],
            flags: bytes[36],
            _pad: [0; 3],
        })
    }

    /// The reason, if this build knows the code.
    pub fn stat(&self) -> Option<crate::Stat> {
        crate::Stat::from_slot(self.reason)
    }

    pub const fn has_ipv4(&self) -> bool {
        self.flags & EVENT_IPV4 != 0
    }

    pub const fn has_ports(&self) -> bool {
        self.flags & EVENT_PORTS != 0
    }
}

/// `DROP_EVENT_STATS`, per reason (a `Stat` slot) and per CPU: what became
/// of the event of each drop.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropEventCounts {
    /// Put into the ring.
    pub sent: u64,
    /// Suppressed by `DROP_EVENT_LIMIT`.
    pub rate_limited: u64,
    /// Lost: the ring was full (no reader, or one too slow).
    pub ring_full: u64,
}

const _: () = assert!(core::mem::size_of::<DropEventCounts>() == 24);

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, `Copy`, three `u64`s, no padding.
unsafe impl aya::Pod for DropEventCounts {}

impl DropEventCounts {
    pub const fn total(&self) -> u64 {
        self.sent + self.rate_limited + self.ring_full
    }

    pub const fn add(self, other: DropEventCounts) -> DropEventCounts {
        DropEventCounts {
            sent: self.sent + other.sent,
            rate_limited: self.rate_limited + other.rate_limited,
            ring_full: self.ring_full + other.ring_full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record as the kernel lays it out, written field by field at the
    /// offsets of the C layout, not through the struct.
    fn record() -> [u8; DROP_EVENT_LEN] {
        let mut b = [0u8; DROP_EVENT_LEN];
        b[..8].copy_from_slice(&123_456_789_000u64.to_ne_bytes());
        b[8..12].copy_from_slice(&32u32.to_ne_bytes());
        b[12..16].copy_from_slice(&7u32.to_ne_bytes());
        b[16..20].copy_from_slice(&98u32.to_ne_bytes());
        b[20..24].copy_from_slice(&[10, 244, 0, 99]);
        b[24..28].copy_from_slice(&[10, 244, 0, 3]);
        b[28..30].copy_from_slice(&40000u16.to_ne_bytes());
        b[30..32].copy_from_slice(&5201u16.to_ne_bytes());
        b[32..34].copy_from_slice(&0x0800u16.to_ne_bytes());
        b[34] = 17;
        b[35] = Hook::FromPod as u8;
        b[36] = EVENT_IPV4 | EVENT_PORTS;
        b
    }

    #[test]
    fn decodes_every_field_at_its_offset() {
        let e = DropEvent::decode(&record()).expect("decodes");
        assert_eq!(e.time_ns, 123_456_789_000);
        assert_eq!(e.stat(), Some(crate::Stat::DropSpoofedSource));
        assert_eq!((e.ifindex, e.len), (7, 98));
        assert_eq!(e.src.to_ne_bytes(), [10, 244, 0, 99]);
        assert_eq!(e.dst.to_ne_bytes(), [10, 244, 0, 3]);
        assert_eq!((e.src_port, e.dst_port, e.ethertype, e.protocol), (40000, 5201, 0x0800, 17));
        assert_eq!(Hook::from_u8(e.hook), Some(Hook::FromPod));
        assert!(e.has_ipv4() && e.has_ports());
    }

    #[test]
    fn decode_agrees_with_the_struct_layout() {
        let e = DropEvent::decode(&record()).unwrap();
        // SAFETY: a `repr(C)` struct of integers viewed as its bytes.
        let bytes: [u8; DROP_EVENT_LEN] = unsafe { core::mem::transmute(e) };
        assert_eq!(bytes, record());
    }

    #[test]
    fn refuses_a_record_of_another_size() {
        assert_eq!(DropEvent::decode(&record()[..DROP_EVENT_LEN - 1]), None);
        assert_eq!(DropEvent::decode(&[0; DROP_EVENT_LEN + 8]), None);
    }

    #[test]
    fn an_unknown_reason_or_hook_is_none() {
        let mut b = record();
        b[8..12].copy_from_slice(&63u32.to_ne_bytes());
        b[35] = 9;
        let e = DropEvent::decode(&b).unwrap();
        assert_eq!(e.stat(), None);
        assert_eq!(Hook::from_u8(e.hook), None);
    }
}
