//! `STATS`: a per-CPU array of packet and byte counters, one slot per
//! verdict and per drop reason, so every decision the programs take can be
//! counted and explained.

/// One counter slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<Counter>() == 16);

#[cfg(feature = "user")]
// SAFETY: `Counter` is `repr(C)`, `Copy`, two `u64`s, no padding.
unsafe impl aya::Pod for Counter {}

/// Size of the `STATS` array. Larger than the number of codes in use so
/// that new codes do not change the map's layout.
pub const STAT_SLOTS: u32 = 32;

/// Index into `STATS`. Verdicts first, then drop reasons.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Delivered to a pod on this node with `bpf_redirect_peer`.
    RedirectLocal = 0,
    /// IPv4 for an address that is not a local pod: handed to the host stack.
    PassToStack = 1,
    /// Not IPv4 (ARP, IPv6, ...): handed to the host stack untouched.
    PassNotIpv4 = 2,
    /// Claims to be IPv4 but the header cannot be read: handed to the host
    /// stack, which drops and counts it by its own rules.
    PassUnparsed = 3,
    /// Dropped: the source address is not the address of the pod behind
    /// this veth.
    DropSpoofedSource = 16,
}

impl Stat {
    /// Every code, in slot order.
    pub const ALL: [Stat; 5] = [
        Stat::RedirectLocal,
        Stat::PassToStack,
        Stat::PassNotIpv4,
        Stat::PassUnparsed,
        Stat::DropSpoofedSource,
    ];

    /// Stable name for operators, metrics and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::RedirectLocal => "redirect_local",
            Stat::PassToStack => "pass_to_stack",
            Stat::PassNotIpv4 => "pass_not_ipv4",
            Stat::PassUnparsed => "pass_unparsed",
            Stat::DropSpoofedSource => "drop_spoofed_source",
        }
    }

    pub const fn is_drop(self) -> bool {
        (self as u32) >= 16
    }

    pub const fn slot(self) -> u32 {
        self as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_unique_and_in_range() {
        for (i, a) in Stat::ALL.iter().enumerate() {
            assert!(a.slot() < STAT_SLOTS, "{} out of range", a.name());
            for b in &Stat::ALL[i + 1..] {
                assert_ne!(a.slot(), b.slot(), "{} and {}", a.name(), b.name());
                assert_ne!(a.name(), b.name());
            }
        }
    }

    #[test]
    fn only_drop_reasons_count_as_drops() {
        assert!(Stat::DropSpoofedSource.is_drop());
        assert!(!Stat::RedirectLocal.is_drop());
        assert!(!Stat::PassUnparsed.is_drop());
    }
}
