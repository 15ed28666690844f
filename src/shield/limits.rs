//! Per-client limits shared by every worker: concurrent sessions
//! (`--client-sessions`), new sessions per minute (`--client-rate`) and
//! the error score of the tarpit (`--error-limits`, its rule in
//! [`super::errors`]), with the clients in `--client-limit-exceptions`
//! let through: they are neither limited nor scored.
//!
//! A client is its IPv4 address, or its IPv6 /64 (what one host or
//! customer usually holds). Clients are counted in a fixed table of
//! [`SLOTS`] slots of atomics, picked by a keyed hash of the client:
//! memory is the same whatever the number of addresses, each admission
//! and release is O(1) and lock-free, and clients cannot aim at another's
//! slot (the key is random per process). Two clients may still share a
//! slot, and then share its limits: with 10,000 clients in view at once a
//! given client shares with another about one time in seven, and its
//! limits then count both; hence limits meant for abusers, far above what
//! an honest client needs.
//!
//! The rate is a GCRA (generic cell rate algorithm): each slot keeps one
//! theoretical arrival time; `--client-rate N` lets N sessions in at once,
//! then one more every 60/N seconds. It takes the time as an argument and
//! reads no clock. Owns the counting only: replies, logs and metrics are
//! the runtime's ([`crate::runtime`]).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::cidr::Cidr;
use super::errors::{ErrorLimits, Standing};

/// Slots of the table (a power of two): 24 octets each, 1.5 MiB in all.
pub const SLOTS: usize = 1 << 16;

/// What the limits are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitSettings {
    /// Concurrent sessions per client; 0 = no limit.
    pub sessions: u32,
    /// New sessions per client per minute; 0 = no limit.
    pub rate: u32,
    /// Clients no limit applies to, nor the error score.
    pub exceptions: Vec<Cidr>,
    /// Errors before the tarpit slows a client, and before it refuses it.
    pub errors: ErrorLimits,
}

/// The limit a client went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Sessions,
    Rate,
    /// The hard error limit (the error tarpit's 421).
    Errors,
}

impl Limit {
    pub const ALL: [Limit; 3] = [Limit::Sessions, Limit::Rate, Limit::Errors];

    /// Its name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Sessions => "sessions",
            Limit::Rate => "rate",
            Limit::Errors => "too-many-errors",
        }
    }
}

/// A session let in, holding its place in its client's session count
/// until given back to [`ClientLimits::release`], and naming where its
/// client's errors are scored. Not `Clone`, so a place is given back once;
/// the default holds none and scores nothing (an exempt client, or a
/// balancer).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Admission {
    /// The client's slot (8 octets in all: every connection holds one).
    index: u32,
    holds_place: bool,
    scored: bool,
}

impl Admission {
    /// Where the session's errors are scored; `None`: they are not.
    pub fn account(&self) -> Option<Account> {
        self.scored.then_some(Account(self.index))
    }
}

/// A client's error score: its slot in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account(u32);

#[derive(Default)]
struct Slot {
    sessions: AtomicU32,
    /// GCRA's theoretical arrival time: nanoseconds after the table's epoch.
    arrival: AtomicU64,
    /// When the client's last error is forgiven ([`super::errors`]), on
    /// the same clock.
    errors: AtomicU64,
}

/// The table every worker shares (behind the runtime's `Control`).
pub struct ClientLimits {
    settings: LimitSettings,
    /// 60 s / rate, and the burst GCRA tolerates: (rate - 1) intervals.
    interval_ns: u64,
    tolerance_ns: u64,
    epoch: Instant,
    hasher: RandomState,
    slots: Box<[Slot]>,
}

impl ClientLimits {
    /// An empty table counting time from `epoch`.
    pub fn new(settings: LimitSettings, epoch: Instant) -> ClientLimits {
        let interval_ns = match settings.rate {
            0 => 0,
            rate => (Duration::from_secs(60) / rate).as_nanos() as u64,
        };
        let tolerance_ns = interval_ns * u64::from(settings.rate.saturating_sub(1));
        let slots = (0..SLOTS).map(|_| Slot::default());
        ClientLimits {
            settings,
            interval_ns,
            tolerance_ns,
            epoch,
            hasher: RandomState::new(),
            slots: slots.collect(),
        }
    }

    /// Lets a new session from `client` in at `now`, or names the limit it
    /// is over (a client that arrives at the hard error limit is refused
    /// too). A refused session leaves the counts as they were.
    pub fn try_admit(&self, client: IpAddr, now: Instant) -> Result<Admission, Limit> {
        if self.is_exempt(client) {
            return Ok(Admission::default());
        }
        let index = self.slot_of(client);
        let slot = &self.slots[index];
        let account = Account(index as u32);
        if self.errors_standing(account, now) == Standing::Refused {
            return Err(Limit::Errors);
        }
        let admission = Admission {
            scored: true,
            ..self.take_session(slot, index)?
        };
        if !self.take_rate(slot, now) {
            self.release(admission);
            return Err(Limit::Rate);
        }
        Ok(admission)
    }

    /// Where the client scored in `account` stands with its errors at `now`.
    pub fn errors_standing(&self, account: Account, now: Instant) -> Standing {
        let score = &self.slots[account.0 as usize].errors;
        self.settings
            .errors
            .standing_of(score, self.since_epoch(now))
    }

    /// Scores `errors` more for the client of `account` at `now`; returns
    /// where it stands after them.
    pub fn charge_errors(&self, account: Account, errors: u32, now: Instant) -> Standing {
        let score = &self.slots[account.0 as usize].errors;
        let now_ns = self.since_epoch(now);
        self.settings.errors.charge(score, errors, now_ns)
    }

    /// Gives a session's place back (when its connection closes).
    pub fn release(&self, admission: Admission) {
        if admission.holds_place {
            self.slots[admission.index as usize]
                .sessions
                .fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn is_exempt(&self, client: IpAddr) -> bool {
        let exceptions = &self.settings.exceptions;
        exceptions.iter().any(|cidr| cidr.contains(client))
    }

    /// The slot of `client`'s /32 (IPv4) or /64 (IPv6).
    fn slot_of(&self, client: IpAddr) -> usize {
        let key: u128 = match client.to_canonical() {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            // The family bit keeps a /64 apart from any IPv4 address.
            IpAddr::V6(v6) => (u128::from(v6) >> 64) | 1 << 64,
        };
        self.hasher.hash_one(key) as usize & (SLOTS - 1)
    }

    fn take_session(&self, slot: &Slot, index: usize) -> Result<Admission, Limit> {
        let index = index as u32;
        let limit = self.settings.sessions;
        if limit == 0 {
            return Ok(Admission {
                index,
                ..Admission::default()
            });
        }
        let before = slot.sessions.fetch_add(1, Ordering::AcqRel);
        let admission = Admission {
            index,
            holds_place: true,
            scored: false,
        };
        if before >= limit {
            self.release(admission);
            return Err(Limit::Sessions);
        }
        Ok(admission)
    }

    /// Nanoseconds from the table's epoch to `now`.
    fn since_epoch(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// GCRA: a session conforms unless the slot's arrival time is more
    /// than the tolerance ahead of `now`; one that conforms pushes it one
    /// interval further.
    fn take_rate(&self, slot: &Slot, now: Instant) -> bool {
        if self.settings.rate == 0 {
            return true;
        }
        let now_ns = self.since_epoch(now);
        let mut arrival = slot.arrival.load(Ordering::Acquire);
        loop {
            let start = arrival.max(now_ns);
            if start - now_ns > self.tolerance_ns {
                return false;
            }
            let next = start + self.interval_ns;
            match slot.arrival.compare_exchange_weak(
                arrival,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(seen) => arrival = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn limits(sessions: u32, rate: u32, exceptions: &str) -> (ClientLimits, Instant) {
        let epoch = Instant::now();
        let settings = LimitSettings {
            sessions,
            rate,
            exceptions: Cidr::parse_list(exceptions).unwrap(),
            errors: ErrorLimits::default(),
        };
        (ClientLimits::new(settings, epoch), epoch)
    }

    /// Sessions held in the whole table.
    fn sessions_counted(limits: &ClientLimits) -> u32 {
        let count = |slot: &Slot| slot.sessions.load(Ordering::Relaxed);
        limits.slots.iter().map(count).sum()
    }

    #[test]
    fn sessions_over_the_limit_are_refused_until_one_is_released() {
        let (limits, now) = limits(3, 0, "");
        let client = ip("192.0.2.1");
        let mut held: Vec<Admission> = (0..3)
            .map(|_| limits.try_admit(client, now).unwrap())
            .collect();
        assert_eq!(limits.try_admit(client, now), Err(Limit::Sessions));
        assert_eq!(limits.try_admit(client, now), Err(Limit::Sessions));
        limits.release(held.pop().unwrap());
        held.push(limits.try_admit(client, now).unwrap());
        assert_eq!(limits.try_admit(client, now), Err(Limit::Sessions));
    }

    #[test]
    fn releasing_every_session_leaves_no_count_behind() {
        let (limits, now) = limits(2, 0, "");
        let client = ip("198.51.100.7");
        for _ in 0..10_000 {
            let admission = limits.try_admit(client, now).unwrap();
            limits.release(admission);
        }
        let both = [(); 2].map(|_| limits.try_admit(client, now).unwrap());
        assert_eq!(limits.try_admit(client, now), Err(Limit::Sessions));
        both.into_iter().for_each(|a| limits.release(a));
        assert_eq!(sessions_counted(&limits), 0);
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let (limits, now) = limits(2, 0, "");
        let _a = limits.try_admit(ip("2001:db8:1:2::1"), now).unwrap();
        let _b = limits.try_admit(ip("2001:db8:1:2:ffff::9"), now).unwrap();
        let over = limits.try_admit(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), now);
        assert_eq!(over, Err(Limit::Sessions), "the same /64");
        // The next /64 is another client, unless the random hash key put
        // both in one slot (one chance in 65,536).
        let other = ip("2001:db8:1:3::1");
        if limits.slot_of(other) != limits.slot_of(ip("2001:db8:1:2::1")) {
            assert!(limits.try_admit(other, now).is_ok());
        }
    }

    #[test]
    fn ipv4_mapped_clients_count_as_ipv4() {
        let (limits, now) = limits(1, 0, "");
        let _a = limits.try_admit(ip("203.0.113.5"), now).unwrap();
        let mapped = limits.try_admit(ip("::ffff:203.0.113.5"), now);
        assert_eq!(mapped, Err(Limit::Sessions));
    }

    #[test]
    fn exceptions_skip_both_limits() {
        let (limits, now) = limits(1, 1, "127.0.0.0/8,::1,2001:db8::/32");
        for client in ["127.0.0.1", "127.9.9.9", "::1", "2001:db8:5::1"] {
            for _ in 0..5 {
                let admission = limits.try_admit(ip(client), now).unwrap();
                assert_eq!(admission, Admission::default(), "{client} uncounted");
            }
        }
        let _a = limits.try_admit(ip("192.0.2.1"), now).unwrap();
        assert!(limits.try_admit(ip("192.0.2.1"), now).is_err());
    }

    #[test]
    fn no_limits_refuse_nobody_without_errors() {
        let (limits, now) = limits(0, 0, "");
        for _ in 0..1000 {
            let admission = limits.try_admit(ip("192.0.2.1"), now).unwrap();
            assert!(admission.account().is_some(), "scored all the same");
            limits.release(admission);
        }
    }

    #[test]
    fn a_client_at_the_hard_error_limit_is_refused_at_connect_until_forgiven() {
        let (limits, now) = limits(0, 0, "");
        let client = ip("2001:db8:7:7::1");
        let account = limits.try_admit(client, now).unwrap().account().unwrap();
        assert_eq!(limits.charge_errors(account, 19, now), Standing::Slowed);
        assert!(limits.try_admit(client, now).is_ok(), "19: still let in");
        assert_eq!(limits.charge_errors(account, 1, now), Standing::Refused);
        // The whole /64 is the one client.
        let neighbour = ip("2001:db8:7:7:ffff::2");
        assert_eq!(limits.try_admit(neighbour, now), Err(Limit::Errors));
        let forgiven = now + ErrorLimits::default().forgiveness();
        let admission = limits.try_admit(client, forgiven).unwrap();
        assert_eq!(admission.account(), Some(account));
    }

    #[test]
    fn exempt_clients_are_not_scored() {
        let (limits, now) = limits(0, 0, "127.0.0.0/8");
        let admission = limits.try_admit(ip("127.0.0.1"), now).unwrap();
        assert_eq!(admission.account(), None);
    }

    #[test]
    fn the_rate_lets_a_minutes_worth_in_then_refills_one_interval_at_a_time() {
        let (limits, start) = limits(0, 6, "");
        let client = ip("192.0.2.44");
        for _ in 0..6 {
            limits.try_admit(client, start).unwrap();
        }
        assert_eq!(limits.try_admit(client, start), Err(Limit::Rate));
        // One session every 10 s after that, not before.
        let later = |secs: f64| start + Duration::from_secs_f64(secs);
        assert_eq!(limits.try_admit(client, later(9.9)), Err(Limit::Rate));
        assert!(limits.try_admit(client, later(10.0)).is_ok());
        assert_eq!(limits.try_admit(client, later(10.0)), Err(Limit::Rate));
        assert!(limits.try_admit(client, later(20.0)).is_ok());
        // A quiet minute refills the whole burst, and no more.
        let quiet = later(90.0);
        for _ in 0..6 {
            limits.try_admit(client, quiet).unwrap();
        }
        assert_eq!(limits.try_admit(client, quiet), Err(Limit::Rate));
        // Another client is not touched.
        assert!(limits.try_admit(ip("192.0.2.45"), quiet).is_ok());
    }

    #[test]
    fn a_session_refused_by_rate_does_not_hold_a_session_place() {
        let (limits, now) = limits(2, 1, "");
        let client = ip("192.0.2.9");
        let first = limits.try_admit(client, now).unwrap();
        assert_eq!(limits.try_admit(client, now), Err(Limit::Rate));
        assert_eq!(limits.try_admit(client, now), Err(Limit::Rate));
        let next_minute = now + Duration::from_secs(60);
        let second = limits.try_admit(client, next_minute).unwrap();
        limits.release(first);
        limits.release(second);
        assert_eq!(sessions_counted(&limits), 0);
    }

    #[test]
    fn workers_on_many_threads_never_let_more_in_than_the_limit() {
        let (limits, now) = limits(10, 0, "");
        let client = ip("192.0.2.200");
        let admitted = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let mine: Vec<Admission> = (0..100)
                        .filter_map(|_| limits.try_admit(client, now).ok())
                        .collect();
                    admitted.fetch_add(mine.len(), Ordering::Relaxed);
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 10);
    }
}
