//! What knet's eBPF programs and its agent must agree on: map names, the
//! layout of every key and value, and the codes of every verdict and drop.
//!
//! Every type is `#[repr(C)]` with no implicit padding, checked by a size
//! assertion, because the kernel and userspace read the same bytes.
#![no_std]

pub mod csum;
pub mod drop_event;
pub mod endpoint;
pub mod icmp;
pub mod node;
pub mod peer;
pub mod rate;
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
    /// Ring buffer of drop events (`knet-agent monitor` reads it).
    pub const DROP_EVENTS: &str = "DROP_EVENTS";
    /// Per-reason fate of the drop events: sent, rate limited, ring full.
    pub const DROP_EVENT_STATS: &str = "DROP_EVT_STATS";
    /// Per-CPU state of the drop event rate limit; not pinned.
    pub const DROP_EVENT_RATE: &str = "DROP_EVENT_RATE";
    /// Per-CPU room to build a tunnelled ICMP error in; not pinned.
    pub const ICMP_SCRATCH: &str = "ICMP_SCRATCH";
    /// Every map of the programs. The kernel keeps 15 bytes of a name, so
    /// each fits in 15 to be listed whole by `bpftool map show`.
    pub const ALL: [&str; 10] = [
        ENDPOINTS,
        STATS,
        NODE_SUBNETS,
        NODES,
        CONFIG,
        ICMP_RATE,
        ICMP_SCRATCH,
        DROP_EVENTS,
        DROP_EVENT_STATS,
        DROP_EVENT_RATE,
    ];
}

/// Names of the programs in the eBPF object.
pub mod program_names {
    pub const FROM_POD: &str = "from_pod";
    pub const FROM_NETDEV: &str = "from_netdev";
    pub const TO_NETDEV: &str = "to_netdev";
    pub const ALL: [&str; 3] = [FROM_POD, FROM_NETDEV, TO_NETDEV];
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_map_name_fits_the_kernel() {
        for name in super::map_names::ALL.iter().chain(&super::program_names::ALL) {
            assert!(name.len() <= 15, "{name} is cut to 15 bytes by the kernel");
        }
    }
}
