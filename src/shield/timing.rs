//! The shield's time rules, as arithmetic on times passed in: a greeting
//! withheld for `--greet-delay` (a client that talks first is an early
//! talker), a command line due within `--command-timeout` of its first
//! octet, and a DATA/BDAT body due within `--data-timeout` + size ÷
//! `--min-data-rate` of its start (Postfix's per-request deadline).
//!
//! Owns the [`Rule`] each refusal is counted and logged under, and how a
//! body's deadline moves as its octets arrive. Does not own the clock, the
//! replies or the timer: the session keeps its deadline with these rules
//! (`proto::session::clock`), the connection's timer enforces it.

use std::time::{Duration, Instant};

/// Why the shield refused a client on time grounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// It talked before the (delayed) greeting: `554 5.5.1`.
    EarlyTalker,
    /// No command line within the command timeout of the wait's start or
    /// of the line's first octet (the STARTTLS handshake too): `421 4.4.2`.
    CommandTimeout,
    /// Its DATA/BDAT body arrived below the minimum rate, or paused longer
    /// than the data timeout: `421 4.4.2`, nothing spooled.
    DataRate,
}

impl Rule {
    /// Every rule, in declaration order (`rule as usize` indexes it).
    pub const ALL: [Rule; 3] = [Rule::EarlyTalker, Rule::CommandTimeout, Rule::DataRate];

    /// The name in metrics labels and log lines.
    pub fn name(self) -> &'static str {
        match self {
            Rule::EarlyTalker => "early-talker",
            Rule::CommandTimeout => "command-timeout",
            Rule::DataRate => "data-rate",
        }
    }
}

/// `at + wait`, saturating far in the future instead of overflowing
/// (timeouts are the operator's to choose, and may be huge).
pub fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait)
        .unwrap_or_else(|| at + Duration::from_secs(u64::from(u32::MAX)))
}

/// A body's deadline once `octets` more of it arrived at `now`: each octet
/// earns 1/`rate` s, but the deadline never lies more than `data_timeout`
/// ahead of `now`, so credit saved by a fast start cannot buy a long
/// silence. Without a rate (0) every octet restarts the data timeout.
pub fn body_deadline(
    deadline: Instant,
    now: Instant,
    octets: usize,
    rate: u32,
    data_timeout: Duration,
) -> Instant {
    let cap = later(now, data_timeout);
    if rate == 0 {
        return cap;
    }
    let nanos = octets as u128 * 1_000_000_000 / u128::from(rate);
    let credit = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    later(deadline, credit).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn each_octet_earns_one_over_the_rate() {
        let t0 = Instant::now();
        let start = t0 + 10 * SECOND;
        // 1,000 octets at 500/s: 2 s of credit, well under the cap.
        let d = body_deadline(start, t0, 1_000, 500, 180 * SECOND);
        assert_eq!(d, start + 2 * SECOND);
    }

    #[test]
    fn credit_never_reaches_beyond_the_data_timeout() {
        let t0 = Instant::now();
        let d = body_deadline(t0 + 5 * SECOND, t0, 10 << 20, 500, 10 * SECOND);
        assert_eq!(d, t0 + 10 * SECOND);
    }

    #[test]
    fn a_trickle_runs_out_within_the_data_timeout() {
        // One octet a second against 500/s: the deadline creeps 2 ms a
        // second, so it passes a little after the data timeout.
        let t0 = Instant::now();
        let timeout = 10 * SECOND;
        let mut deadline = t0 + timeout;
        let mut now = t0;
        while now < deadline {
            now += SECOND;
            deadline = body_deadline(deadline, now, 1, 500, timeout);
        }
        assert!(now - t0 <= 11 * SECOND, "{:?}", now - t0);
    }

    #[test]
    fn without_a_rate_every_octet_restarts_the_timeout() {
        let t0 = Instant::now();
        let now = t0 + 100 * SECOND;
        assert_eq!(body_deadline(t0, now, 1, 0, 3 * SECOND), now + 3 * SECOND);
    }

    #[test]
    fn huge_timeouts_saturate() {
        let t0 = Instant::now();
        let d = body_deadline(t0, t0, usize::MAX, 1, Duration::MAX);
        assert!(d > t0 + 1000 * SECOND);
        assert!(later(t0, Duration::MAX) > t0);
    }

    #[test]
    fn names_are_distinct() {
        let names = Rule::ALL.map(Rule::name);
        assert_eq!(names, ["early-talker", "command-timeout", "data-rate"]);
    }
}
