//! How the programs answer as a router: which ICMP errors they send and
//! how often.

use crate::rate::RateLimit;

/// ICMP types and codes the programs send (RFC 792).
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_TTL_EXCEEDED_IN_TRANSIT: u8 = 0;

/// ICMP types that are errors: no error is ever sent about one of these
/// (RFC 1122 3.2.2).
pub const fn is_icmp_error(kind: u8) -> bool {
    matches!(kind, 3 | 4 | 5 | 11 | 12)
}

/// ICMP errors: at most 1000 a second per CPU, after a burst of 50:
/// the kernel's own defaults (`icmp_msgs_per_sec`, `icmp_msgs_burst`).
pub const ICMP_LIMIT: RateLimit = RateLimit { per_sec: 1000, burst: 50 };

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_recognised() {
        assert!(is_icmp_error(ICMP_TIME_EXCEEDED) && is_icmp_error(ICMP_DEST_UNREACHABLE));
        assert!(!is_icmp_error(8) && !is_icmp_error(0));
    }
}
