//! Queue ids: unique across threads, processes and restarts, and sorting by
//! creation time.
//!
//! An id is 19 characters of Crockford base32 (digits and upper-case letters
//! only, so it survives case-folding file systems and ASCII order is numeric
//! order): 11 characters of a microsecond stamp, then 8 characters of a
//! per-process tag. The stamp is the wall clock, forced strictly increasing
//! within the process, so ids never repeat even when the clock steps back or
//! many threads ask in the same microsecond. The tag (the pid plus random
//! bits) keeps two processes apart when their stamps collide: two instances
//! started in the same microsecond, or a restart after the clock stepped
//! back. This module does not know about files or messages.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Digits then letters without I, L, O, U: ascending in ASCII.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const STAMP_DIGITS: usize = 11;
const TAG_DIGITS: usize = 8;
/// Length of every queue id.
pub const ID_LEN: usize = STAMP_DIGITS + TAG_DIGITS;
/// Pids fit in 22 bits (Linux's `pid_max` limit); the other 18 are random.
const PID_BITS: u32 = 22;
const RANDOM_BITS: u32 = 5 * TAG_DIGITS as u32 - PID_BITS;

/// One queue id: [`ID_LEN`] octets of text such as `1NZ5XGQ7A3K00G2T8HM`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId([u8; ID_LEN]);

impl QueueId {
    fn encode(stamp: u64, tag: u64) -> QueueId {
        let mut text = [0u8; ID_LEN];
        put_base32(&mut text[..STAMP_DIGITS], stamp);
        put_base32(&mut text[STAMP_DIGITS..], tag);
        QueueId(text)
    }

    /// When the id was made (its stamp), if `text` is a queue id; the
    /// relay counts a message's age from it.
    pub fn arrival(text: &str) -> Option<SystemTime> {
        let text = text.as_bytes();
        if text.len() != ID_LEN || !text.iter().all(|b| ALPHABET.contains(b)) {
            return None;
        }
        let mut stamp = 0u64;
        for &digit in &text[..STAMP_DIGITS] {
            let value = ALPHABET.iter().position(|&a| a == digit)?;
            stamp = (stamp << 5) | value as u64;
        }
        UNIX_EPOCH.checked_add(std::time::Duration::from_micros(stamp))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("the alphabet is ASCII")
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Writes the low `5 * out.len()` bits of `value`, most significant first.
fn put_base32(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
}

/// The id source of one process; share it (it is `Sync`).
pub struct QueueIds {
    last_stamp: AtomicU64,
    tag: u64,
}

impl QueueIds {
    /// A generator tagged with this process's pid and fresh random bits.
    pub fn new() -> QueueIds {
        QueueIds::with_tag(process_tag())
    }

    fn with_tag(tag: u64) -> QueueIds {
        QueueIds {
            last_stamp: AtomicU64::new(0),
            tag,
        }
    }

    /// The next id: later than every id this generator gave before.
    pub fn next_id(&self) -> QueueId {
        QueueId::encode(self.next_stamp(now_micros()), self.tag)
    }

    /// `now`, or one past the last stamp if the clock has not moved on (or
    /// went back): strictly increasing, so unique within the process.
    fn next_stamp(&self, now: u64) -> u64 {
        let bump = |last: u64| Some(now.max(last + 1));
        let last = self
            .last_stamp
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, bump)
            .expect("bump always gives a value");
        now.max(last + 1)
    }
}

impl Default for QueueIds {
    fn default() -> Self {
        QueueIds::new()
    }
}

fn now_micros() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    since_epoch.as_micros() as u64
}

/// Pid in the high bits (unique among live processes), random low bits
/// (apart across restarts that reuse a pid).
fn process_tag() -> u64 {
    let pid = u64::from(std::process::id()) & ((1 << PID_BITS) - 1);
    (pid << RANDOM_BITS) | (random_u64() & ((1 << RANDOM_BITS) - 1))
}

/// OS-seeded randomness without `unsafe` or a crate: std's hash keys.
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(now_micros());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    #[test]
    fn ids_are_fixed_width_and_case_safe() {
        let id = QueueIds::new().next_id();
        assert_eq!(id.as_str().len(), ID_LEN);
        assert!(id.as_str().bytes().all(|b| ALPHABET.contains(&b)));
        assert_eq!(id.as_str(), id.as_str().to_ascii_uppercase());
    }

    #[test]
    fn encoding_keeps_numeric_order() {
        let stamps = [
            0u64,
            1,
            31,
            32,
            1_000_000,
            1_795_750_329_000_000,
            (1 << 55) - 1,
        ];
        for pair in stamps.windows(2) {
            let (a, b) = (QueueId::encode(pair[0], 7), QueueId::encode(pair[1], 0));
            assert!(a < b, "{a} !< {b}");
        }
    }

    #[test]
    fn arrival_is_read_back_from_the_id() {
        let id = QueueId::encode(1_795_750_329_123_456, 99);
        let arrival = QueueId::arrival(id.as_str()).unwrap();
        let micros = arrival.duration_since(UNIX_EPOCH).unwrap().as_micros();
        assert_eq!(micros, 1_795_750_329_123_456);
        for bad in ["", "short", "1NZ5XGQ7A3K00G2T8H!", "1NZ5XGQ7A3K00G2T8HMX"] {
            assert_eq!(QueueId::arrival(bad), None, "{bad}");
        }
    }

    #[test]
    fn clock_going_back_still_increases() {
        let ids = QueueIds::with_tag(1);
        let first = ids.next_stamp(5_000);
        assert_eq!(first, 5_000);
        assert_eq!(ids.next_stamp(4_000), 5_001);
        assert_eq!(ids.next_stamp(5_001), 5_002);
        assert_eq!(ids.next_stamp(9_000), 9_000);
    }

    #[test]
    fn same_stamp_in_two_processes_differs_by_tag() {
        let (a, b) = (QueueIds::with_tag(1), QueueIds::with_tag(2));
        let (x, y) = (a.next_stamp(42), b.next_stamp(42));
        assert_eq!(x, y);
        assert_ne!(QueueId::encode(x, a.tag), QueueId::encode(y, b.tag));
    }

    #[test]
    fn random_bits_differ_between_calls() {
        assert_ne!(random_u64(), random_u64());
    }

    #[test]
    fn many_threads_get_unique_ids_each_in_order() {
        let ids = Arc::new(QueueIds::new());
        let per_thread: Vec<Vec<QueueId>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| (0..5_000).map(|_| ids.next_id()).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for list in &per_thread {
            assert!(list.windows(2).all(|w| w[0] < w[1]));
        }
        let all: HashSet<QueueId> = per_thread.iter().flatten().copied().collect();
        assert_eq!(all.len(), 8 * 5_000);
    }

    #[test]
    fn ids_follow_the_wall_clock() {
        let before = now_micros();
        let id = QueueIds::new().next_id();
        let after = QueueId::encode(now_micros() + 1, 0);
        assert!(QueueId::encode(before, 0) <= id && id < after);
    }
}
