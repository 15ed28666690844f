//! Local parts, stored inline in cache-line buckets so that a lookup costs
//! one memory round trip: each key may live in either of two 64-octet
//! buckets chosen by its hash (two-choice hashing), both read at once, so
//! their cache misses overlap instead of following one another.
//!
//! A bucket is `[header][records…]`: the header holds the octets used (low
//! 6 bits) and an overflow flag; a record is `[key length][domain id:
//! LEB128][key octets]`. A key that fits in neither bucket goes to an
//! overflow `KeyIndex` (a few percent of keys at the fill used) and flags
//! its first bucket, so only lookups that land on a flagged bucket pay for
//! a second probe. The table is sized once from the total record size; it
//! never grows, which is what lets records move nowhere after insertion.

use super::index::{KeyIndex, Record, TooLarge};
use super::varint;

const BUCKET: usize = 64;
/// Record octets per bucket (after the header).
const ROOM: usize = BUCKET - 1;
const USED: u8 = 0x3f;
const OVERFLOW: u8 = 0x80;
/// Average share of `ROOM` filled; lower means fewer overflows, more memory.
const FILL_PERCENT: usize = 70;

#[derive(Clone, Copy)]
#[repr(align(64))]
struct Bucket([u8; BUCKET]);

impl Bucket {
    fn used(&self) -> usize {
        usize::from(self.0[0] & USED)
    }

    /// True if a record of `local` in `domain` is here.
    fn holds(&self, domain: u32, local: &[u8], same: &impl Fn(&[u8]) -> bool) -> bool {
        let records = &self.0[1..1 + self.used()];
        let mut pos = 0;
        while let Some(&len) = records.get(pos) {
            let (id, id_len) = varint::decode(&records[pos + 1..]);
            let start = pos + 1 + id_len;
            let end = start + usize::from(len);
            if usize::from(len) == local.len() && id == domain && same(&records[start..end]) {
                return true;
            }
            pos = end;
        }
        false
    }

    fn push(&mut self, domain: u32, local: &[u8]) {
        let (id, id_len) = varint::encode(domain);
        let start = 1 + self.used();
        let record = &mut self.0[start..start + record_len(domain, local)];
        record[0] = local.len() as u8;
        record[1..1 + id_len].copy_from_slice(&id[..id_len]);
        record[1 + id_len..].copy_from_slice(local);
        self.0[0] += (record.len()) as u8;
    }
}

/// Octets a record of `local` in `domain` takes in a bucket.
pub(crate) fn record_len(domain: u32, local: &[u8]) -> usize {
    1 + varint::encode(domain).1 + local.len()
}

pub(crate) struct Buckets {
    buckets: Vec<Bucket>,
    overflow: KeyIndex,
}

impl Buckets {
    /// Buckets for records totalling `record_bytes` octets.
    pub fn with_room(record_bytes: usize) -> Buckets {
        let count = (record_bytes * 100 / (ROOM * FILL_PERCENT)).max(1);
        Buckets {
            buckets: vec![Bucket([0; BUCKET]); count],
            overflow: KeyIndex::with_capacity(0),
        }
    }

    /// Releases the overflow's spare capacity once loading is done.
    pub fn shrink_to_fit(&mut self) {
        self.overflow.shrink_to_fit();
    }

    /// Heap bytes held (buckets and overflow).
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * BUCKET + self.overflow.heap_bytes()
    }

    /// True if `local` in `domain` (hashed to `hash`) is stored; `same`
    /// compares a stored key with `local`.
    pub fn contains(
        &self,
        hash: u64,
        domain: u32,
        local: &[u8],
        same: impl Fn(&[u8]) -> bool,
    ) -> bool {
        let (first, second) = self.homes(hash);
        let (first, second) = (&self.buckets[first], &self.buckets[second]);
        // Both scans run (no short circuit) so both cache lines are
        // requested before either answer is known.
        if first.holds(domain, local, &same) | second.holds(domain, local, &same) {
            return true;
        }
        first.0[0] & OVERFLOW != 0
            && self
                .overflow
                .find(hash, |r| r.value == domain && same(r.key))
                .is_some()
    }

    /// Stores `local` in `domain`; the caller has checked it is absent.
    /// `rehash` recomputes an overflow record's hash if that index grows.
    pub fn insert(
        &mut self,
        hash: u64,
        domain: u32,
        local: &[u8],
        rehash: impl Fn(Record) -> u64,
    ) -> Result<(), TooLarge> {
        let need = record_len(domain, local);
        let (first, second) = self.homes(hash);
        let roomier = if self.buckets[second].used() < self.buckets[first].used() {
            second
        } else {
            first
        };
        if self.buckets[roomier].used() + need <= ROOM {
            self.buckets[roomier].push(domain, local);
            return Ok(());
        }
        self.overflow.insert(hash, local, domain, rehash)?;
        self.buckets[first].0[0] |= OVERFLOW;
        Ok(())
    }

    /// The two candidate buckets: the hash's high and low halves scaled
    /// onto the bucket count.
    fn homes(&self, hash: u64) -> (usize, usize) {
        let scale = |half: u64| ((half * self.buckets.len() as u64) >> 32) as usize;
        (scale(hash >> 32), scale(hash & 0xffff_ffff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipients::hash::hash_folded;

    fn same(local: &[u8]) -> impl Fn(&[u8]) -> bool + '_ {
        move |key: &[u8]| key == local
    }

    #[test]
    fn stores_and_finds_with_overflow() {
        let keys: Vec<(u32, String)> = (0..20_000u32)
            .map(|i| (i % 700 * 40, format!("u{}", i * 31)))
            .collect();
        let bytes = keys
            .iter()
            .map(|(d, l)| record_len(*d, l.as_bytes()))
            .sum::<usize>();
        // Deliberately too small, so many keys overflow.
        let mut buckets = Buckets::with_room(bytes / 2);
        let hash = |d: u32, l: &[u8]| hash_folded(u64::from(d), l);
        for (d, l) in &keys {
            let rehash = |r: Record| hash(r.value, r.key);
            buckets
                .insert(hash(*d, l.as_bytes()), *d, l.as_bytes(), rehash)
                .unwrap();
        }
        assert!(buckets.overflow.len() > 5_000);
        for (d, l) in &keys {
            let l = l.as_bytes();
            assert!(buckets.contains(hash(*d, l), *d, l, same(l)));
            assert!(!buckets.contains(hash(d + 1, l), d + 1, l, same(l)));
            let other = [l, b"x"].concat();
            assert!(!buckets.contains(hash(*d, &other), *d, &other, same(&other)));
        }
    }

    #[test]
    fn a_record_larger_than_a_bucket_overflows() {
        let mut buckets = Buckets::with_room(1_000);
        let local = [b'a'; 64];
        let hash = hash_folded(0, &local);
        buckets.insert(hash, 3_000_000, &local, |_| 0).unwrap();
        assert_eq!(buckets.overflow.len(), 1);
        assert!(buckets.contains(hash, 3_000_000, &local, same(&local)));
    }
}
