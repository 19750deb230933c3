//! What knet's eBPF programs and its agent must agree on: map names, the
//! layout of every key and value, and the codes of every verdict and drop.
//!
//! Every type is `#[repr(C)]` with no implicit padding, checked by a size
//! assertion, because the kernel and userspace read the same bytes.
#![no_std]

pub mod csum;
pub mod endpoint;
pub mod icmp;
pub mod node;
pub mod peer;
pub mod stats;

pub use endpoint::{ipv4_key, Endpoint};
pub use stats::{Counter, Stat, STAT_SLOTS};

/// Names of the maps as the eBPF object declares them and as they are
/// pinned under the agent's bpffs directory.
pub mod map_names {
    pub const ENDPOINTS: &str = "ENDPOINTS";
    pub const STATS: &str = "STATS";
    pub const NODE_SUBNETS: &str = "NODE_SUBNETS";
    pub const NODES: &str = "NODES";
    pub const CONFIG: &str = "CONFIG";
    pub const PEER_STATS: &str = "PEER_STATS";
    /// Per-CPU ICMP error rate limit state; not pinned (a restart resets it).
    pub const ICMP_RATE: &str = "ICMP_RATE";
}

/// Names of the programs in the eBPF object.
pub mod program_names {
    pub const FROM_POD: &str = "from_pod";
    pub const FROM_NETDEV: &str = "from_netdev";
    pub const TO_NETDEV: &str = "to_netdev";
}
