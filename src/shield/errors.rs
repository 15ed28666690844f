//! The error score of a client: how many of its errors (4xx/5xx replies
//! to its commands) are not yet forgiven, across all its sessions, and
//! what that count means (`--error-limits SOFT,HARD`).
//!
//! The rule, a leaky bucket: each error adds one to the client's count,
//! and one error is forgiven every 60/SOFT seconds (SOFT a minute: one
//! every 6 s with the defaults 10,20), down to none. At SOFT errors or
//! more each command waits 1 s before it is read (the tarpit); at HARD
//! the client is refused with 421, at its next command or, arriving in a
//! new session, at connect. A client that errs less than SOFT times a
//! minute is never slowed; one that keeps erring gets one error answered
//! per 60/SOFT seconds once it reached HARD.
//!
//! The count is kept as one time per client, as GCRA keeps a rate: the
//! moment its last error will be forgiven, so the count is that moment's
//! distance from now in forgiveness intervals, rounded up; an error pushes
//! the moment one interval further (from now, if it lay in the past).
//! One atomic per client, changed with compare-and-swap. Owns the rule
//! and the arithmetic only: where the atomics live is
//! [`super::limits`]'s table, the pauses are the runtime's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// `--error-limits SOFT,HARD`: errors before commands slow down by 1 s,
/// and before the client is refused; 1 ≤ SOFT ≤ HARD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorLimits {
    pub soft: u32,
    pub hard: u32,
}

impl Default for ErrorLimits {
    /// Postfix's smtpd_soft_error_limit and smtpd_hard_error_limit.
    fn default() -> ErrorLimits {
        ErrorLimits { soft: 10, hard: 20 }
    }
}

/// Where a client stands with its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Under SOFT: its commands are read at once.
    Clear,
    /// SOFT or more: each command waits 1 s.
    Slowed,
    /// HARD or more: refused with 421.
    Refused,
}

impl ErrorLimits {
    /// Parses `SOFT,HARD`.
    pub fn parse(text: &str) -> Result<ErrorLimits, String> {
        let bad = || format!("{text:?} is not SOFT,HARD (two numbers, 1 <= SOFT <= HARD)");
        let (soft, hard) = text.split_once(',').ok_or_else(bad)?;
        let number = |n: &str| n.trim().parse::<u32>().map_err(|_| bad());
        let limits = ErrorLimits {
            soft: number(soft)?,
            hard: number(hard)?,
        };
        if limits.soft == 0 || limits.soft > limits.hard {
            return Err(bad());
        }
        Ok(limits)
    }

    /// How long one error takes to be forgiven: 60 s / SOFT.
    pub fn forgiveness(&self) -> Duration {
        Duration::from_secs(60) / self.soft.max(1)
    }

    fn interval_ns(&self) -> u64 {
        self.forgiveness().as_nanos() as u64
    }

    /// The errors not yet forgiven at `now_ns`, of a client whose last
    /// error is forgiven at `until_ns` (both nanoseconds after the same
    /// epoch).
    pub fn count(&self, until_ns: u64, now_ns: u64) -> u64 {
        until_ns.saturating_sub(now_ns).div_ceil(self.interval_ns())
    }

    /// Where `count` errors leave a client.
    pub fn standing(&self, count: u64) -> Standing {
        if count >= u64::from(self.hard) {
            Standing::Refused
        } else if count >= u64::from(self.soft) {
            Standing::Slowed
        } else {
            Standing::Clear
        }
    }

    /// Where the client whose score is `score` stands at `now_ns`.
    pub fn standing_of(&self, score: &AtomicU64, now_ns: u64) -> Standing {
        let until = score.load(Ordering::Acquire);
        self.standing(self.count(until, now_ns))
    }

    /// Adds `errors` to the score at `now_ns`; returns where the client
    /// stands after them.
    pub fn charge(&self, score: &AtomicU64, errors: u32, now_ns: u64) -> Standing {
        let push = self.interval_ns() * u64::from(errors);
        let mut until = score.load(Ordering::Acquire);
        loop {
            let next = until.max(now_ns).saturating_add(push);
            match score.compare_exchange_weak(until, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return self.standing(self.count(next, now_ns)),
                Err(seen) => until = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn errors(limits: &ErrorLimits, score: &AtomicU64, n: u32, at: u64) -> Standing {
        limits.charge(score, n, at * SEC)
    }

    #[test]
    fn parses_soft_comma_hard() {
        assert_eq!(
            ErrorLimits::parse("10,20"),
            Ok(ErrorLimits { soft: 10, hard: 20 })
        );
        assert_eq!(
            ErrorLimits::parse("3, 3"),
            Ok(ErrorLimits { soft: 3, hard: 3 })
        );
        for bad in ["", "10", "0,20", "21,20", "a,b", "10,20,30", "-1,5"] {
            assert!(ErrorLimits::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_forgive_one_error_every_six_seconds() {
        let limits = ErrorLimits::default();
        assert_eq!(limits.forgiveness(), Duration::from_secs(6));
        assert_eq!(limits.count(0, 0), 0);
        assert_eq!(limits.count(6 * SEC, 0), 1);
        assert_eq!(limits.count(6 * SEC + 1, 0), 2);
        assert_eq!(limits.count(5 * SEC, 7 * SEC), 0, "in the past: none");
    }

    #[test]
    fn soft_slows_and_hard_refuses_as_errors_pile_up_at_once() {
        let limits = ErrorLimits::default();
        let score = AtomicU64::new(0);
        for _ in 0..9 {
            assert_eq!(errors(&limits, &score, 1, 100), Standing::Clear);
        }
        assert_eq!(errors(&limits, &score, 1, 100), Standing::Slowed, "10th");
        for _ in 0..9 {
            assert_eq!(errors(&limits, &score, 1, 100), Standing::Slowed);
        }
        assert_eq!(errors(&limits, &score, 1, 100), Standing::Refused, "20th");
    }

    #[test]
    fn the_count_decays_one_error_per_interval() {
        let limits = ErrorLimits::default();
        let score = AtomicU64::new(0);
        assert_eq!(errors(&limits, &score, 20, 1000), Standing::Refused);
        let at = |secs: u64| limits.standing_of(&score, secs * SEC);
        assert_eq!(at(1000), Standing::Refused);
        assert_eq!(at(1005), Standing::Refused, "19.2 rounds up to 20");
        assert_eq!(at(1006), Standing::Slowed, "19 after one interval");
        assert_eq!(at(1000 + 6 * 10), Standing::Slowed, "10 left");
        assert_eq!(at(1000 + 6 * 11), Standing::Clear, "9 left");
        assert_eq!(at(1000 + 6 * 20), Standing::Clear);
        // All forgiven: a new error starts from one, not from the past.
        assert_eq!(errors(&limits, &score, 1, 5000), Standing::Clear);
        assert_eq!(limits.count(score.load(Ordering::Relaxed), 5000 * SEC), 1);
    }

    #[test]
    fn the_odd_typo_never_slows_anyone() {
        // Nine errors a minute, forever: under SOFT a minute, never slowed.
        let limits = ErrorLimits::default();
        let score = AtomicU64::new(0);
        for minute in 0..60 {
            for i in 0..9 {
                let at = (minute * 60 + i * 6) * SEC;
                assert_eq!(limits.charge(&score, 1, at), Standing::Clear);
            }
        }
    }

    /// A harvester that tries once a second, forever, is answered only
    /// while not refused: after its first HARD, one error per interval.
    #[test]
    fn a_steady_harvester_gets_soft_errors_a_minute() {
        let limits = ErrorLimits::default();
        let score = AtomicU64::new(0);
        let answered_in = |from: u64, to: u64| {
            let mut answered = 0;
            for now in (from..to).map(|t| t * SEC) {
                if limits.standing_of(&score, now) != Standing::Refused {
                    limits.charge(&score, 1, now);
                    answered += 1;
                }
            }
            answered
        };
        let first = answered_in(0, 60);
        assert!((20..=30).contains(&first), "{first} in the first minute");
        for minute in 1..10 {
            let n = answered_in(minute * 60, minute * 60 + 60);
            assert!((9..=11).contains(&n), "{n} in minute {minute}");
        }
    }

    #[test]
    fn charges_from_many_threads_all_count() {
        let limits = ErrorLimits {
            soft: 1000,
            hard: 100_000,
        };
        let score = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        limits.charge(&score, 1, SEC);
                    }
                });
            }
        });
        assert_eq!(limits.count(score.load(Ordering::Relaxed), SEC), 4000);
    }
}
