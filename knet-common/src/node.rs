//! `NODE_SUBNETS`, `NODES` and `CONFIG`: where every node's pods live, which
//! tunnel sources are accepted, and how this node carries traffic across.

/// Capacity of `NODE_SUBNETS` and `NODES`: nodes in a cluster.
pub const MAX_NODES: u32 = 16_384;

/// `BPF_F_NO_PREALLOC`, which the kernel requires of LPM tries.
pub const LPM_FLAGS: u32 = 1;

/// The subnet belongs to this node.
pub const SUBNET_LOCAL: u32 = 1;

/// The owning node is a neighbour on the underlay (the host's route to it
/// has no gateway and leaves by the underlay): encapsulated packets go to
/// its address's neighbour entry directly, without a route lookup per
/// packet. Without it (a node behind a router) the kernel's route to the
/// node picks the next hop for each packet.
pub const SUBNET_NEIGHBOUR: u32 = 2;

/// Value of `NODE_SUBNETS`, keyed by the pod subnet (an LPM-trie key whose
/// data is the network address, wire order, see `ipv4_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSubnet {
    /// The owning node's underlay address, wire order.
    pub node_ip: u32,
    /// `SUBNET_LOCAL`, `SUBNET_NEIGHBOUR`, or 0.
    pub flags: u32,
    /// The owning node's VTEP MAC: the inner destination of what is
    /// encapsulated toward it. A kernel VXLAN device (flannel's
    /// `flannel.1`) drops a frame addressed to any other MAC; knet's own
    /// decapsulation ignores it. Here, not in a map of its own, so the
    /// encapsulation needs no second lookup.
    pub vtep_mac: [u8; 6],
    /// Explicit, so the value has no implicit padding.
    pub _pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<NodeSubnet>() == 16);

/// The `NODE_SUBNETS` value of builds before the VTEP MAC, still found
/// pinned on nodes being upgraded (the agent carries its entries over).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSubnetV1 {
    pub node_ip: u32,
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<NodeSubnetV1>() == 8);

/// The VTEP MAC knet gives the node at `node_ip` (underlay, wire order):
/// locally administered `02:6b` ('k') then the address, so it is stable
/// across restarts and reinstalls, unique wherever underlay addresses are,
/// and known to the programs without a map (the inner source of their
/// encapsulation).
#[inline(always)]
pub const fn vtep_mac(node_ip: u32) -> [u8; 6] {
    let [a, b, c, d] = node_ip.to_ne_bytes();
    [0x02, 0x6b, a, b, c, d]
}

/// Value of `NODES`, keyed by a node's underlay address (wire order): the
/// nodes whose VXLAN packets are accepted.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Reserved for per-node flags; 0 today. Explicit so there is no padding.
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<NodeInfo>() == 4);

/// How traffic to other nodes is carried.
pub const MODE_LOCAL_ONLY: u32 = 0;
pub const MODE_VXLAN: u32 = 1;
pub const MODE_NATIVE: u32 = 2;

/// VXLAN's IANA port is 4789; 8472 is the Linux default and flannel's.
pub const VXLAN_PORT: u16 = 8472;
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// The link-local gateway every pod routes through. It is never on the
/// wire: the pod's neighbour entry for it is static and names the host
/// veth. ICMP errors the programs send carry it as their source when the
/// node has no underlay address.
pub const POD_GATEWAY: [u8; 4] = [169, 254, 1, 1];

/// `CONFIG[0]`: this node's data path settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// `MODE_*`.
    pub mode: u32,
    /// VXLAN network identifier.
    pub vni: u32,
    /// ifindex of the underlay device (where tunnel and native traffic leave).
    pub underlay_ifindex: u32,
    /// MTU of the underlay device.
    pub underlay_mtu: u32,
    /// This node's underlay address, wire order: the outer source.
    pub node_ip: u32,
}

const _: () = assert!(core::mem::size_of::<DataplaneConfig>() == 20);

#[cfg(feature = "user")]
mod user {
    // SAFETY (all four): `repr(C)`, `Copy`, only `u32` fields and byte
    // arrays, no implicit padding (sizes asserted above).
    unsafe impl aya::Pod for super::NodeSubnet {}
    unsafe impl aya::Pod for super::NodeSubnetV1 {}
    unsafe impl aya::Pod for super::NodeInfo {}
    unsafe impl aya::Pod for super::DataplaneConfig {}
}
