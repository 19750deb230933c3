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
pub const STAT_SLOTS: u32 = 64;

/// Slots from here on are drop reasons.
const FIRST_DROP: u32 = 32;

/// Index into `STATS`: what a program did with a packet. Verdicts in
/// 0..32, drop reasons in 32..64. Each packet a program sees moves exactly
/// one slot.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stat {
    /// From a pod, delivered to a pod on this node with `bpf_redirect_peer`.
    RedirectLocal = 0,
    /// From a pod, encapsulated in VXLAN toward the node owning the
    /// destination and sent with `bpf_redirect_neigh`.
    RedirectTunnel = 1,
    /// From a pod, sent unencapsulated to the owning node
    /// (`bpf_redirect_neigh`).
    RedirectNative = 2,
    /// Arrived from another node (decapsulated if it was VXLAN) and
    /// delivered to a local pod.
    DeliverFromNode = 3,
    /// Host traffic to a remote pod, encapsulated on its way out.
    EncapFromHost = 4,
    /// From a pod to an address that is no pod's (the node, the outside
    /// world): handed to the host stack.
    PassToStack = 5,
    /// ARP from a pod: handed to the host stack, which answers for the
    /// gateway.
    PassArp = 6,
    /// IPv6 router or neighbour solicitation or neighbour advertisement
    /// from a pod (ICMPv6 133, 135, 136 with hop limit 255): handed to the
    /// host stack. Router advertisements are `DropIpv6`.
    PassNeighbourDiscovery = 7,
    /// IPv4 with options from a pod: handed to the host stack, which
    /// processes (or refuses) the options as a router must.
    PassIpOptions = 8,
    /// Too big for the path and may be fragmented (DF clear): handed to the
    /// host stack, which fragments it and routes the fragments.
    PassToFragment = 9,
    /// Underlay ingress that is not for a pod (the node's own traffic).
    PassUnderlay = 10,
    /// Underlay egress left untouched (not for a remote pod, or already
    /// encapsulated by `from_pod`).
    PassUnderlayEgress = 11,
    /// VXLAN on knet's port with another VNI: not knet's, handed to the
    /// host stack.
    PassOtherVni = 12,
    /// TTL expired on a path that bypasses the stack: answered with ICMP
    /// "time exceeded" in place of the packet.
    ReplyTimeExceeded = 13,
    /// DF set and too big for the path: answered with ICMP "fragmentation
    /// needed" carrying the path MTU, in place of the packet.
    ReplyFragNeeded = 14,

    /// The source address is not the address of the pod behind this veth.
    DropSpoofedSource = 32,
    /// A header is cut short or invalid (IPv4 version, IHL below 5, total
    /// length outside the frame).
    DropMalformed = 33,
    /// IPv6 from a pod other than neighbour discovery: no dual stack yet,
    /// so nothing else may reach the node or beyond.
    DropIpv6 = 34,
    /// A pod sent a frame of another protocol (VLAN-tagged, LLDP, ...).
    DropUnsupportedEthertype = 35,
    /// A pod sent IPv4 to a broadcast or multicast address.
    DropBroadcastOrMulticast = 36,
    /// An address of this node's pod subnet that no pod has.
    DropNoEndpoint = 37,
    /// TTL expired where no ICMP error may be sent (the packet is an ICMP
    /// error or a later fragment, or its source is not unicast).
    DropTtlExceeded = 38,
    /// An ICMP error was due but the rate limit refused it.
    DropIcmpRateLimited = 39,
    /// VXLAN whose outer source is not a known node.
    DropUnknownTunnelSource = 40,
    /// VXLAN whose outer destination is not this node's address.
    DropTunnelWrongDestination = 41,
    /// VXLAN in an outer fragment: it cannot be checked whole.
    DropTunnelFragment = 42,
    /// VXLAN whose inner source belongs neither to the sending node's pod
    /// subnet nor to the sending node itself.
    DropTunnelForgedSource = 43,
    /// VXLAN for a pod address that is not on this node.
    DropTunnelNoEndpoint = 44,
    /// VXLAN whose inner frame is not a well-formed IPv4 packet.
    DropTunnelMalformedInner = 45,
    /// VXLAN mode: an unencapsulated packet from the underlay to a pod
    /// subnet (only the tunnel, with its checks, leads to pods).
    DropPlainToPod = 46,
    /// Too big for the path and no ICMP error may be sent for it.
    DropTooBig = 47,
    /// The kernel refused to grow or shrink the packet.
    DropResizeFailed = 48,
    /// The redirect helper refused the redirect.
    DropRedirectFailed = 49,
}

impl Stat {
    /// Every code, in slot order.
    pub const ALL: [Stat; 33] = [
        Stat::RedirectLocal,
        Stat::RedirectTunnel,
        Stat::RedirectNative,
        Stat::DeliverFromNode,
        Stat::EncapFromHost,
        Stat::PassToStack,
        Stat::PassArp,
        Stat::PassNeighbourDiscovery,
        Stat::PassIpOptions,
        Stat::PassToFragment,
        Stat::PassUnderlay,
        Stat::PassUnderlayEgress,
        Stat::PassOtherVni,
        Stat::ReplyTimeExceeded,
        Stat::ReplyFragNeeded,
        Stat::DropSpoofedSource,
        Stat::DropMalformed,
        Stat::DropIpv6,
        Stat::DropUnsupportedEthertype,
        Stat::DropBroadcastOrMulticast,
        Stat::DropNoEndpoint,
        Stat::DropTtlExceeded,
        Stat::DropIcmpRateLimited,
        Stat::DropUnknownTunnelSource,
        Stat::DropTunnelWrongDestination,
        Stat::DropTunnelFragment,
        Stat::DropTunnelForgedSource,
        Stat::DropTunnelNoEndpoint,
        Stat::DropTunnelMalformedInner,
        Stat::DropPlainToPod,
        Stat::DropTooBig,
        Stat::DropResizeFailed,
        Stat::DropRedirectFailed,
    ];

    /// Stable name for operators, metrics and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::RedirectLocal => "redirect_local",
            Stat::RedirectTunnel => "redirect_tunnel",
            Stat::RedirectNative => "redirect_native",
            Stat::DeliverFromNode => "deliver_from_node",
            Stat::EncapFromHost => "encap_from_host",
            Stat::PassToStack => "pass_to_stack",
            Stat::PassArp => "pass_arp",
            Stat::PassNeighbourDiscovery => "pass_neighbour_discovery",
            Stat::PassIpOptions => "pass_ip_options",
            Stat::PassToFragment => "pass_to_fragment",
            Stat::PassUnderlay => "pass_underlay",
            Stat::PassUnderlayEgress => "pass_underlay_egress",
            Stat::PassOtherVni => "pass_other_vni",
            Stat::ReplyTimeExceeded => "reply_time_exceeded",
            Stat::ReplyFragNeeded => "reply_frag_needed",
            Stat::DropSpoofedSource => "drop_spoofed_source",
            Stat::DropMalformed => "drop_malformed",
            Stat::DropIpv6 => "drop_ipv6",
            Stat::DropUnsupportedEthertype => "drop_unsupported_ethertype",
            Stat::DropBroadcastOrMulticast => "drop_broadcast_or_multicast",
            Stat::DropNoEndpoint => "drop_no_endpoint",
            Stat::DropTtlExceeded => "drop_ttl_exceeded",
            Stat::DropIcmpRateLimited => "drop_icmp_rate_limited",
            Stat::DropUnknownTunnelSource => "drop_unknown_tunnel_source",
            Stat::DropTunnelWrongDestination => "drop_tunnel_wrong_destination",
            Stat::DropTunnelFragment => "drop_tunnel_fragment",
            Stat::DropTunnelForgedSource => "drop_tunnel_forged_source",
            Stat::DropTunnelNoEndpoint => "drop_tunnel_no_endpoint",
            Stat::DropTunnelMalformedInner => "drop_tunnel_malformed_inner",
            Stat::DropPlainToPod => "drop_plain_to_pod",
            Stat::DropTooBig => "drop_too_big",
            Stat::DropResizeFailed => "drop_resize_failed",
            Stat::DropRedirectFailed => "drop_redirect_failed",
        }
    }

    /// One line for operators on what the code means (`monitor`,
    /// `inspect drops`).
    pub const fn explain(self) -> &'static str {
        match self {
            Stat::RedirectLocal => "delivered to a pod on this node, straight into its interface",
            Stat::RedirectTunnel => "encapsulated in VXLAN and sent to the node that owns the destination",
            Stat::RedirectNative => "sent unencapsulated to the node that owns the destination",
            Stat::DeliverFromNode => "arrived from another node and delivered to a pod on this node",
            Stat::EncapFromHost => "sent by this node to a remote pod, encapsulated on its way out",
            Stat::PassToStack => "from a pod to an address that is no pod's: handed to the node's stack",
            Stat::PassArp => "ARP from a pod: the node's stack answers for the gateway",
            Stat::PassNeighbourDiscovery => {
                "IPv6 neighbour or router solicitation from a pod: answered by the node's stack"
            }
            Stat::PassIpOptions => "IPv4 with options: the node's stack handles them as a router must",
            Stat::PassToFragment => "too big for the path without DF: the node's stack fragments it",
            Stat::PassUnderlay => "underlay traffic that is not for a pod: the node's own",
            Stat::PassUnderlayEgress => "underlay egress that needs no encapsulation",
            Stat::PassOtherVni => "VXLAN of another VNI: not knet's, handed to the node's stack",
            Stat::ReplyTimeExceeded => "TTL expired: answered with ICMP time exceeded",
            Stat::ReplyFragNeeded => "too big for the path with DF set: answered with ICMP fragmentation needed",
            Stat::DropSpoofedSource => "the source address is not the pod's own (spoofed)",
            Stat::DropMalformed => "a header is cut short or invalid",
            Stat::DropIpv6 => "IPv6 from a pod: knet is IPv4-only until it is dual-stack",
            Stat::DropUnsupportedEthertype => "a frame of a protocol pods may not send (VLAN, LLDP, ...)",
            Stat::DropBroadcastOrMulticast => "IPv4 to a broadcast or multicast address",
            Stat::DropNoEndpoint => "to an address of this node's pod subnet that no pod has",
            Stat::DropTtlExceeded => "TTL expired where no ICMP error may be sent about it",
            Stat::DropIcmpRateLimited => "an ICMP error was due but the rate limit refused it",
            Stat::DropUnknownTunnelSource => "VXLAN from an address that is no known node",
            Stat::DropTunnelWrongDestination => "VXLAN to an address that is not this node's",
            Stat::DropTunnelFragment => "VXLAN in an outer fragment, which cannot be checked whole",
            Stat::DropTunnelForgedSource => "VXLAN whose inner source is neither the sending node nor its pods",
            Stat::DropTunnelNoEndpoint => "VXLAN for a pod address that is not on this node",
            Stat::DropTunnelMalformedInner => "VXLAN whose inner frame is not well-formed IPv4",
            Stat::DropPlainToPod => {
                "unencapsulated underlay traffic to a pod subnet (VXLAN mode: only the tunnel leads to pods)"
            }
            Stat::DropTooBig => "too big for the path and no ICMP error may be sent about it",
            Stat::DropResizeFailed => "the kernel refused to grow or shrink the packet",
            Stat::DropRedirectFailed => "the kernel refused the redirect (the target interface is gone or down)",
        }
    }

    /// The code in slot `slot`, if one is defined there.
    pub fn from_slot(slot: u32) -> Option<Stat> {
        Stat::ALL.iter().copied().find(|s| s.slot() == slot)
    }

    /// The code with this stable name.
    pub fn from_name(name: &str) -> Option<Stat> {
        Stat::ALL.iter().copied().find(|s| s.name() == name)
    }

    pub const fn is_drop(self) -> bool {
        (self as u32) >= FIRST_DROP
    }

    pub const fn slot(self) -> u32 {
        self as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_unique_ordered_and_in_range() {
        for (i, a) in Stat::ALL.iter().enumerate() {
            assert!(a.slot() < STAT_SLOTS, "{} out of range", a.name());
            if let Some(b) = Stat::ALL.get(i + 1) {
                assert!(a.slot() < b.slot(), "{} and {} out of order", a.name(), b.name());
            }
            for b in &Stat::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
            assert_eq!(Stat::from_name(a.name()), Some(*a));
        }
    }

    #[test]
    fn drop_reasons_are_named_drop_and_only_they_count_as_drops() {
        for s in Stat::ALL {
            assert_eq!(s.is_drop(), s.name().starts_with("drop_"), "{}", s.name());
        }
    }

    #[test]
    fn every_code_is_explained_once() {
        for (i, a) in Stat::ALL.iter().enumerate() {
            assert!(!a.explain().trim().is_empty(), "{} has no explanation", a.name());
            assert!(!a.explain().contains('\n'), "{}: one line", a.name());
            for b in &Stat::ALL[i + 1..] {
                assert_ne!(a.explain(), b.explain(), "{} and {} explained alike", a.name(), b.name());
            }
            assert_eq!(Stat::from_slot(a.slot()), Some(*a));
        }
        assert_eq!(Stat::from_slot(STAT_SLOTS - 1), None);
    }
}
