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
    /// Encapsulated in VXLAN toward the node owning the destination.
    RedirectTunnel = 4,
    /// Sent unencapsulated to the owning node (`bpf_redirect_neigh`).
    RedirectNative = 5,
    /// Arrived from another node (decapsulated if it was VXLAN) and
    /// delivered to a local pod.
    DeliverFromNode = 6,
    /// Host-originated traffic to a remote pod, encapsulated on the way out.
    EncapFromHost = 7,
    /// Dropped: the source address is not the address of the pod behind
    /// this veth.
    DropSpoofedSource = 16,
    /// Dropped: a VXLAN packet whose outer source is not a known node.
    DropUnknownTunnelSource = 17,
    /// Dropped: a VXLAN packet for a pod address that is not on this node.
    DropTunnelNoEndpoint = 18,
    /// Dropped: a non-GSO packet that would not fit the underlay once
    /// encapsulated (the pod's route MTU is wrong).
    DropTooBigForTunnel = 19,
    /// Dropped: the kernel refused to grow or shrink the packet.
    DropAdjustRoomFailed = 20,
}

impl Stat {
    /// Every code, in slot order.
    pub const ALL: [Stat; 13] = [
        Stat::RedirectLocal,
        Stat::PassToStack,
        Stat::PassNotIpv4,
        Stat::PassUnparsed,
        Stat::RedirectTunnel,
        Stat::RedirectNative,
        Stat::DeliverFromNode,
        Stat::EncapFromHost,
        Stat::DropSpoofedSource,
        Stat::DropUnknownTunnelSource,
        Stat::DropTunnelNoEndpoint,
        Stat::DropTooBigForTunnel,
        Stat::DropAdjustRoomFailed,
    ];

    /// Stable name for operators, metrics and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::RedirectLocal => "redirect_local",
            Stat::PassToStack => "pass_to_stack",
            Stat::PassNotIpv4 => "pass_not_ipv4",
            Stat::PassUnparsed => "pass_unparsed",
            Stat::RedirectTunnel => "redirect_tunnel",
            Stat::RedirectNative => "redirect_native",
            Stat::DeliverFromNode => "deliver_from_node",
            Stat::EncapFromHost => "encap_from_host",
            Stat::DropSpoofedSource => "drop_spoofed_source",
            Stat::DropUnknownTunnelSource => "drop_unknown_tunnel_source",
            Stat::DropTunnelNoEndpoint => "drop_tunnel_no_endpoint",
            Stat::DropTooBigForTunnel => "drop_too_big_for_tunnel",
            Stat::DropAdjustRoomFailed => "drop_adjust_room_failed",
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
