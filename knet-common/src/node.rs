//! `NODE_SUBNETS`, `NODES` and `CONFIG`: where every node's pods live, which
//! tunnel sources are accepted, and how this node carries traffic across.

/// Capacity of `NODE_SUBNETS` and `NODES`: nodes in a cluster.
pub const MAX_NODES: u32 = 16_384;

/// `BPF_F_NO_PREALLOC`, which the kernel requires of LPM tries.
pub const LPM_FLAGS: u32 = 1;

/// The subnet belongs to this node.
pub const SUBNET_LOCAL: u32 = 1;

/// Value of `NODE_SUBNETS`, keyed by the pod subnet (an LPM-trie key whose
/// data is the network address, wire order, see `ipv4_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSubnet {
    /// The owning node's underlay address, wire order.
    pub node_ip: u32,
    /// `SUBNET_LOCAL` or 0.
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<NodeSubnet>() == 8);

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
    // SAFETY (all three): `repr(C)`, `Copy`, only `u32` fields, no padding
    // (sizes asserted above).
    unsafe impl aya::Pod for super::NodeSubnet {}
    unsafe impl aya::Pod for super::NodeInfo {}
    unsafe impl aya::Pod for super::DataplaneConfig {}
}
