//! A per-CPU rate limit the programs share: ICMP errors and drop events
//! each keep one number per CPU and ask it before they spend work on a
//! packet, so a flood costs no more than a map lookup and a comparison.

/// A generic cell rate algorithm: at most `per_sec` a second after a burst
/// of `burst`. Its whole state is one number, the theoretical arrival time
/// `tat` (ns), which fits a per-CPU array slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_sec: u64,
    pub burst: u64,
}

impl RateLimit {
    pub const fn interval_ns(self) -> u64 {
        1_000_000_000 / self.per_sec
    }

    /// Whether one more may go at `now`: the new `tat` if so, `None` if it
    /// must be suppressed (the state is then left as it was).
    pub const fn allowed(self, tat: u64, now: u64) -> Option<u64> {
        let interval = self.interval_ns();
        let base = if tat > now { tat } else { now };
        if base - now > (self.burst - 1) * interval {
            return None;
        }
        Some(base + interval)
    }

    /// The most that can pass in `ns` nanoseconds on one CPU starting from
    /// a full burst: what a test may expect at most.
    pub const fn most_in(self, ns: u64) -> u64 {
        self.burst + ns / self.interval_ns() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit { per_sec: 1000, burst: 50 };

    #[test]
    fn a_burst_goes_out_then_the_rate_holds() {
        let now = 5_000_000_000;
        let mut tat = 0;
        for i in 0..LIMIT.burst {
            tat = LIMIT.allowed(tat, now).unwrap_or_else(|| panic!("{i} of the burst refused"));
        }
        assert_eq!(LIMIT.allowed(tat, now), None, "more than a burst at one instant");
        // One interval later exactly one more goes out.
        let later = now + LIMIT.interval_ns();
        tat = LIMIT.allowed(tat, later).expect("refused after an interval");
        assert_eq!(LIMIT.allowed(tat, later), None);
        // After a long quiet spell the whole burst is back.
        let quiet = later + 10 * 1_000_000_000;
        let mut t = tat;
        for _ in 0..LIMIT.burst {
            t = LIMIT.allowed(t, quiet).unwrap();
        }
        assert_eq!(LIMIT.allowed(t, quiet), None);
    }

    #[test]
    fn one_second_lets_through_the_rate_and_the_burst() {
        let start = 1_000_000_000;
        let (mut tat, mut sent) = (0, 0);
        let mut now = start;
        while now < start + 1_000_000_000 {
            if let Some(t) = LIMIT.allowed(tat, now) {
                tat = t;
                sent += 1;
            }
            now += 100_000;
        }
        assert!((LIMIT.per_sec..=LIMIT.per_sec + LIMIT.burst).contains(&sent), "{sent} in one second");
        assert!(sent <= LIMIT.most_in(1_000_000_000));
    }
}
