//! Local parts, stored inline in cache-line buckets so that a lookup costs
//! one memory round trip: each key may live in either of two 64-octet
//! buckets chosen by its hash (two-choice hashing), both read at once, so
//! their cache misses overlap instead of following one another.
//!
//! A bucket is `[header][records…]`: the header holds the octets used (low
//! 6 bits) and an overflow flag; a record is a little-endian `u32` of key
//! length (low 8 bits) and domain id (high 24), then the key octets, so one
//! comparison rejects nearly every other record. A key that fits in
//! neither bucket goes to an overflow `KeyIndex` (a few percent of keys at
//! the fill used) and flags its first bucket, so only lookups that land on
//! a flagged bucket pay for a second probe. A Bloom filter (`filter`) over
//! all keys is asked first, so most absent keys touch no bucket at all.
//! The buckets are sized once from the total record size and never grow,
//! so records never move after insertion.

use std::hint::black_box;

use super::filter::Filter;
use super::hash::eq_octets;
use super::index::{KeyIndex, Record, TooLarge};

const BUCKET: usize = 64;
/// Record octets per bucket (after the header).
const ROOM: usize = BUCKET - 1;
const USED: u8 = 0x3f;
const OVERFLOW: u8 = 0x80;
/// Average share of `ROOM` filled; lower means fewer overflows, more memory.
const FILL_PERCENT: usize = 70;
/// Octets of a record's length-and-domain word.
const RECORD_HEADER: usize = 4;
/// Domain ids fit in 24 bits.
pub(crate) const MAX_DOMAIN_ID: u32 = (1 << 24) - 1;

#[derive(Clone, Copy)]
#[repr(align(64))]
struct Bucket([u8; BUCKET]);

impl Bucket {
    fn used(&self) -> usize {
        usize::from(self.0[0] & USED)
    }

    /// True if a record of `local` in `domain` is here; `header` is this
    /// bucket's first octet, already read.
    #[inline]
    fn holds(&self, header: u8, domain: u32, local: &[u8]) -> bool {
        let records = &self.0[1..1 + usize::from(header & USED)];
        let want = record_header(domain, local);
        let mut pos = 0;
        while let Some(word) = records.get(pos..pos + RECORD_HEADER) {
            let got = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            let start = pos + RECORD_HEADER;
            pos = start + (got & 0xff) as usize;
            if got == want && eq_octets(&records[start..pos], local) {
                return true;
            }
        }
        false
    }

    fn push(&mut self, domain: u32, local: &[u8]) {
        let start = 1 + self.used();
        let record = &mut self.0[start..start + record_len(local)];
        record[..RECORD_HEADER].copy_from_slice(&record_header(domain, local).to_le_bytes());
        record[RECORD_HEADER..].copy_from_slice(local);
        self.0[0] += record.len() as u8;
    }
}

/// A record's first word: key length and domain id.
fn record_header(domain: u32, local: &[u8]) -> u32 {
    (domain << 8) | (local.len() as u32 & 0xff)
}

/// Octets a record of `local` takes in a bucket.
pub(crate) fn record_len(local: &[u8]) -> usize {
    RECORD_HEADER + local.len()
}

pub(crate) struct Buckets {
    buckets: Vec<Bucket>,
    overflow: KeyIndex,
    /// Every stored key, wherever it lives.
    filter: Filter,
}

impl Buckets {
    /// Buckets for `keys` records totalling `record_bytes` octets.
    pub fn with_room(keys: usize, record_bytes: usize) -> Buckets {
        let count = (record_bytes * 100 / (ROOM * FILL_PERCENT)).max(1);
        Buckets {
            buckets: vec![Bucket([0; BUCKET]); count],
            overflow: KeyIndex::with_capacity(0),
            filter: Filter::new(keys),
        }
    }

    /// Releases the overflow's spare capacity once loading is done.
    pub fn shrink_to_fit(&mut self) {
        self.overflow.shrink_to_fit();
    }

    /// Heap bytes held (buckets and overflow).
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * BUCKET + self.overflow.heap_bytes() + self.filter.heap_bytes()
    }

    /// True if `local` in `domain` (hashed to `hash`) is stored, octet
    /// for octet (the caller folds case, if it does, on both sides).
    #[inline]
    pub fn contains(&self, hash: u64, domain: u32, local: &[u8]) -> bool {
        // The filter first, alone: touching the buckets too would make
        // every miss wait for them (a measured 3x slower unknown user).
        if !self.filter.may_contain(hash) {
            return false;
        }
        let (head1, head2) = self.touch(hash);
        let (first, second) = self.homes(hash);
        let (first, second) = (&self.buckets[first], &self.buckets[second]);
        if first.holds(head1, domain, local) || second.holds(head2, domain, local) {
            return true;
        }
        head1 & OVERFLOW != 0
            && self
                .overflow
                .find(hash, |r| r.value == domain && eq_octets(r.key, local))
                .is_some()
    }

    /// Reads the headers of both buckets of `hash` and returns them.
    /// black_box keeps the reads here, ahead of any scan, so that their
    /// cache misses (and those of other touches issued just after) overlap
    /// instead of following one another.
    #[inline]
    pub fn touch(&self, hash: u64) -> (u8, u8) {
        let (first, second) = self.homes(hash);
        black_box((self.buckets[first].0[0], self.buckets[second].0[0]))
    }

    /// Touches the buckets of `hash` if the filter says the key may be
    /// there: a lookup about to follow overlaps its cache misses with
    /// whatever runs in between.
    pub fn prefetch(&self, hash: u64) {
        if self.filter.may_contain(hash) {
            self.touch(hash);
        }
    }

    /// Stores `local` in `domain` (at most `MAX_DOMAIN_ID`); the caller has
    /// checked it is absent.
    /// `rehash` recomputes an overflow record's hash if that index grows.
    pub fn insert(
        &mut self,
        hash: u64,
        domain: u32,
        local: &[u8],
        rehash: impl Fn(Record) -> u64,
    ) -> Result<(), TooLarge> {
        self.filter.insert(hash);
        let need = record_len(local);
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
    #[inline]
    fn homes(&self, hash: u64) -> (usize, usize) {
        let scale = |half: u64| ((half * self.buckets.len() as u64) >> 32) as usize;
        (scale(hash >> 32), scale(hash & 0xffff_ffff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipients::hash::hash_folded;

    #[test]
    fn stores_and_finds_with_overflow() {
        let keys: Vec<(u32, String)> = (0..20_000u32)
            .map(|i| (i % 700 * 40, format!("u{}", i * 31)))
            .collect();
        let bytes = keys
            .iter()
            .map(|(_, l)| record_len(l.as_bytes()))
            .sum::<usize>();
        // Deliberately too small, so many keys overflow.
        let mut buckets = Buckets::with_room(keys.len(), bytes / 2);
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
            assert!(buckets.contains(hash(*d, l), *d, l));
            assert!(!buckets.contains(hash(d + 1, l), d + 1, l));
            let other = [l, b"x"].concat();
            assert!(!buckets.contains(hash(*d, &other), *d, &other));
        }
    }

    #[test]
    fn a_record_larger_than_a_bucket_overflows() {
        let mut buckets = Buckets::with_room(1, 1_000);
        let local = [b'a'; 64];
        let hash = hash_folded(0, &local);
        buckets.insert(hash, MAX_DOMAIN_ID, &local, |_| 0).unwrap();
        assert_eq!(buckets.overflow.len(), 1);
        assert!(buckets.contains(hash, MAX_DOMAIN_ID, &local));
    }
}
