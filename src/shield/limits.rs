//! Per-client limits shared by every worker: concurrent sessions
//! (`--client-sessions`) and new sessions per minute (`--client-rate`),
//! with the clients in `--client-limit-exceptions` let through.
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

/// Slots of the table (a power of two): 16 octets each, 1 MiB in all.
pub const SLOTS: usize = 1 << 16;

/// What the limits are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitSettings {
    /// Concurrent sessions per client; 0 = no limit.
    pub sessions: u32,
    /// New sessions per client per minute; 0 = no limit.
    pub rate: u32,
    /// Clients neither limit applies to.
    pub exceptions: Vec<Cidr>,
}

/// The limit a client went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Sessions,
    Rate,
}

impl Limit {
    pub const ALL: [Limit; 2] = [Limit::Sessions, Limit::Rate];

    /// Its name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Sessions => "sessions",
            Limit::Rate => "rate",
        }
    }
}

/// A session let in, holding its place in its client's session count
/// until given back to [`ClientLimits::release`]. Not `Clone`, so a place
/// is given back once; the default holds none.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Admission {
    slot: Option<u32>,
}

#[derive(Default)]
struct Slot {
    sessions: AtomicU32,
    /// GCRA's theoretical arrival time: nanoseconds after the table's epoch.
    arrival: AtomicU64,
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
    /// An empty table counting time from `epoch` (no allocation when both
    /// limits are off).
    pub fn new(settings: LimitSettings, epoch: Instant) -> ClientLimits {
        let interval_ns = match settings.rate {
            0 => 0,
            rate => (Duration::from_secs(60) / rate).as_nanos() as u64,
        };
        let tolerance_ns = interval_ns * u64::from(settings.rate.saturating_sub(1));
        let on = settings.sessions > 0 || settings.rate > 0;
        let slots = (0..if on { SLOTS } else { 0 }).map(|_| Slot::default());
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
    /// is over. A refused session leaves the counts as they were.
    pub fn try_admit(&self, client: IpAddr, now: Instant) -> Result<Admission, Limit> {
        if self.slots.is_empty() || self.is_exempt(client) {
            return Ok(Admission::default());
        }
        let index = self.slot_of(client);
        let slot = &self.slots[index];
        let admission = self.take_session(slot, index)?;
        if !self.take_rate(slot, now) {
            self.release(admission);
            return Err(Limit::Rate);
        }
        Ok(admission)
    }

    /// Gives a session's place back (when its connection closes).
    pub fn release(&self, admission: Admission) {
        if let Some(index) = admission.slot {
            self.slots[index as usize]
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
        let limit = self.settings.sessions;
        if limit == 0 {
            return Ok(Admission::default());
        }
        let before = slot.sessions.fetch_add(1, Ordering::AcqRel);
        let admission = Admission {
            slot: Some(index as u32),
        };
        if before >= limit {
            self.release(admission);
            return Err(Limit::Sessions);
        }
        Ok(admission)
    }

    /// GCRA: a session conforms unless the slot's arrival time is more
    /// than the tolerance ahead of `now`; one that conforms pushes it one
    /// interval further.
    fn take_rate(&self, slot: &Slot, now: Instant) -> bool {
        if self.settings.rate == 0 {
            return true;
        }
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
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
    fn no_limits_take_no_memory_and_refuse_nobody() {
        let (limits, now) = limits(0, 0, "");
        assert!(limits.slots.is_empty());
        for _ in 0..1000 {
            assert_eq!(
                limits.try_admit(ip("192.0.2.1"), now),
                Ok(Admission::default())
            );
        }
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
