//! A coarse timer wheel for session deadlines: one-second ticks, one slot
//! per tick, entries that lie beyond one turn of the wheel stay in their slot
//! until their turn comes.
//!
//! Entries are never removed early. The owner remembers the tick of the one
//! entry it considers live and ignores fired entries with another tick or a
//! stale generation, so rescheduling costs nothing but a push.

use std::time::{Duration, Instant};

/// Slots in the wheel: more than the default 300 s command timeout, so most
/// entries fire on the first pass.
const SLOTS: u64 = 512;

/// A scheduled wake-up for connection `key`, generation `generation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    pub key: usize,
    pub generation: u32,
    pub tick: u64,
}

/// The wheel. Ticks count whole seconds since `epoch`.
pub struct TimerWheel {
    epoch: Instant,
    slots: Vec<Vec<Expiry>>,
    /// Every tick up to and including this one has been fired.
    done: u64,
}

impl TimerWheel {
    pub fn new(epoch: Instant) -> TimerWheel {
        TimerWheel {
            epoch,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            done: 0,
        }
    }

    /// The tick at or after `at` (rounded up, so an entry never fires early).
    pub fn tick_of(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.epoch);
        since.as_secs() + u64::from(since.subsec_nanos() > 0)
    }

    /// Schedules a wake-up at `at`; returns its tick.
    pub fn schedule(&mut self, key: usize, generation: u32, at: Instant) -> u64 {
        let tick = self.tick_of(at).max(self.done + 1);
        self.slots[(tick % SLOTS) as usize].push(Expiry {
            key,
            generation,
            tick,
        });
        tick
    }

    /// Fires every entry due at `now`, in no particular order.
    pub fn expire(&mut self, now: Instant, mut fire: impl FnMut(Expiry)) {
        let now_tick = now.saturating_duration_since(self.epoch).as_secs();
        if now_tick <= self.done {
            return;
        }
        let first = self.done + 1;
        let last = now_tick.min(self.done + SLOTS);
        for tick in first..=last {
            let slot = &mut self.slots[(tick % SLOTS) as usize];
            let mut i = 0;
            while i < slot.len() {
                if slot[i].tick <= now_tick {
                    fire(slot.swap_remove(i));
                } else {
                    i += 1;
                }
            }
        }
        self.done = now_tick;
    }

    /// How long until the next tick boundary: the longest a poll may sleep.
    pub fn until_next_tick(&self, now: Instant) -> Duration {
        let next = self.epoch + Duration::from_secs(self.done + 1);
        next.saturating_duration_since(now)
            .max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fired(wheel: &mut TimerWheel, now: Instant) -> Vec<usize> {
        let mut keys = Vec::new();
        wheel.expire(now, |e| keys.push(e.key));
        keys.sort();
        keys
    }

    #[test]
    fn fires_at_or_after_the_deadline_never_before() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.schedule(1, 0, t0 + Duration::from_millis(1500));
        w.schedule(2, 0, t0 + Duration::from_secs(3));
        assert!(fired(&mut w, t0 + Duration::from_millis(1900)).is_empty());
        assert_eq!(fired(&mut w, t0 + Duration::from_secs(2)), vec![1]);
        assert_eq!(fired(&mut w, t0 + Duration::from_secs(10)), vec![2]);
        assert!(fired(&mut w, t0 + Duration::from_secs(11)).is_empty());
    }

    #[test]
    fn entries_beyond_one_turn_wait_for_their_turn() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let far = SLOTS + 5;
        w.schedule(7, 3, t0 + Duration::from_secs(far));
        assert!(fired(&mut w, t0 + Duration::from_secs(far - 1)).is_empty());
        let mut got = Vec::new();
        w.expire(t0 + Duration::from_secs(far), |e| got.push(e));
        assert_eq!(
            got,
            vec![Expiry {
                key: 7,
                generation: 3,
                tick: far
            }]
        );
    }

    #[test]
    fn a_past_deadline_fires_on_the_next_tick() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        fired(&mut w, t0 + Duration::from_secs(5));
        let tick = w.schedule(1, 0, t0);
        assert_eq!(tick, 6);
        assert_eq!(fired(&mut w, t0 + Duration::from_secs(6)), vec![1]);
    }

    #[test]
    fn sleep_is_bounded_by_the_next_tick() {
        let t0 = Instant::now();
        let w = TimerWheel::new(t0);
        assert!(w.until_next_tick(t0) <= Duration::from_secs(1));
        assert!(w.until_next_tick(t0 + Duration::from_secs(4)) >= Duration::from_millis(1));
    }
}
