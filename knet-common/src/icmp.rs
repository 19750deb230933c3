//! How the programs answer as a router: which ICMP errors they send and
//! how often.

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

/// At most this many ICMP errors per second per CPU, after a burst of
/// `ICMP_BURST`: the kernel's own defaults (`icmp_msgs_per_sec`,
/// `icmp_msgs_burst`).
pub const ICMP_PER_SEC: u64 = 1000;
pub const ICMP_BURST: u64 = 50;
const INTERVAL_NS: u64 = 1_000_000_000 / ICMP_PER_SEC;

/// The rate limit as a generic cell rate algorithm over one number per CPU,
/// the theoretical arrival time `tat` (ns): an error may go out at `now` if
/// that time is not more than a burst ahead. Returns the new `tat` if it
/// may, `None` if the error must be suppressed.
pub const fn icmp_allowed(tat: u64, now: u64) -> Option<u64> {
    let base = if tat > now { tat } else { now };
    if base - now > (ICMP_BURST - 1) * INTERVAL_NS {
        return None;
    }
    Some(base + INTERVAL_NS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_out_then_the_rate_holds() {
        let now = 5_000_000_000;
        let mut tat = 0;
        for i in 0..ICMP_BURST {
            tat = icmp_allowed(tat, now).unwrap_or_else(|| panic!("error {i} of the burst refused"));
        }
        assert_eq!(icmp_allowed(tat, now), None, "more than a burst at one instant");
        // One interval later exactly one more goes out.
        let later = now + INTERVAL_NS;
        tat = icmp_allowed(tat, later).expect("refused after an interval");
        assert_eq!(icmp_allowed(tat, later), None);
        // After a long quiet spell the whole burst is back.
        let quiet = later + 10 * 1_000_000_000;
        let mut t = tat;
        for _ in 0..ICMP_BURST {
            t = icmp_allowed(t, quiet).unwrap();
        }
        assert_eq!(icmp_allowed(t, quiet), None);
    }

    #[test]
    fn one_second_lets_through_the_rate_and_the_burst() {
        let start = 1_000_000_000;
        let (mut tat, mut sent) = (0, 0);
        let mut now = start;
        while now < start + 1_000_000_000 {
            if let Some(t) = icmp_allowed(tat, now) {
                tat = t;
                sent += 1;
            }
            now += 100_000;
        }
        assert!((ICMP_PER_SEC..=ICMP_PER_SEC + ICMP_BURST).contains(&sent), "{sent} in one second");
    }

    #[test]
    fn errors_are_recognised() {
        assert!(is_icmp_error(ICMP_TIME_EXCEEDED) && is_icmp_error(ICMP_DEST_UNREACHABLE));
        assert!(!is_icmp_error(8) && !is_icmp_error(0));
    }
}
