//! An open-addressing index (linear probing) of `u64` slots over one byte
//! arena of records: the table's domain names, and the few local parts that
//! overflow their buckets.
//!
//! A record is `[key length: u8][key octets][value: LEB128 u32]`; a slot is
//! `hash tag (low 32 bits) << 32 | record offset`, and 0 marks an empty slot
//! (offset 0 is a padding octet, so no record lives there). The tag lets a
//! probe skip non-matching slots without touching the arena, so a miss
//! costs about one cache miss and a hit about two. This module knows nothing
//! about addresses: callers hash the key and decide equality.

use super::varint;

/// Slots kept at most this full (in tenths), so probe runs stay short.
const MAX_LOAD_TENTHS: usize = 7;

/// One record of the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub key: &'a [u8],
    pub value: u32,
}

/// The arena outgrew 32-bit offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge;

pub(crate) struct KeyIndex {
    slots: Vec<u64>,
    arena: Vec<u8>,
    len: usize,
}

impl KeyIndex {
    /// An index sized for `keys` keys without growing.
    pub fn with_capacity(keys: usize) -> KeyIndex {
        KeyIndex {
            slots: vec![0; slot_count(keys)],
            arena: vec![0],
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Releases spare capacity once loading is done.
    pub fn shrink_to_fit(&mut self) {
        self.arena.shrink_to_fit();
    }

    /// Heap bytes held (slots and arena capacity).
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * 8 + self.arena.capacity()
    }

    /// The first record with this hash that `matches` accepts.
    pub fn find(&self, hash: u64, mut matches: impl FnMut(Record) -> bool) -> Option<Record<'_>> {
        let tag = hash as u32;
        let mut i = home(hash, self.slots.len());
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return None;
            }
            if (slot >> 32) as u32 == tag {
                let record = self.record(slot as u32);
                if matches(record) {
                    return Some(record);
                }
            }
            i = next(i, self.slots.len());
        }
    }

    /// Appends a record and indexes it; the caller has checked it is absent.
    /// `rehash` recomputes a stored record's hash when the slots must grow.
    pub fn insert(
        &mut self,
        hash: u64,
        key: &[u8],
        value: u32,
        rehash: impl Fn(Record) -> u64,
    ) -> Result<(), TooLarge> {
        if (self.len + 1) * 10 > self.slots.len() * MAX_LOAD_TENTHS {
            self.grow(rehash);
        }
        let offset = u32::try_from(self.arena.len()).map_err(|_| TooLarge)?;
        let key_len = u8::try_from(key.len()).map_err(|_| TooLarge)?;
        self.arena.push(key_len);
        self.arena.extend_from_slice(key);
        let (varint, len) = varint::encode(value);
        self.arena.extend_from_slice(&varint[..len]);
        self.place(hash, offset);
        self.len += 1;
        Ok(())
    }

    fn place(&mut self, hash: u64, offset: u32) {
        let mut i = home(hash, self.slots.len());
        while self.slots[i] != 0 {
            i = next(i, self.slots.len());
        }
        self.slots[i] = ((hash & 0xffff_ffff) << 32) | u64::from(offset);
    }

    fn grow(&mut self, rehash: impl Fn(Record) -> u64) {
        let old = std::mem::replace(&mut self.slots, vec![0; slot_count(self.len * 2 + 1)]);
        for slot in old.into_iter().filter(|&s| s != 0) {
            let offset = slot as u32;
            let hash = rehash(self.record(offset));
            self.place(hash, offset);
        }
    }

    fn record(&self, offset: u32) -> Record<'_> {
        let start = offset as usize + 1;
        let end = start + usize::from(self.arena[offset as usize]);
        Record {
            key: &self.arena[start..end],
            value: varint::decode(&self.arena[end..]).0,
        }
    }
}

/// Slots for `keys` keys at the maximum load (at least one always empty).
fn slot_count(keys: usize) -> usize {
    (keys * 10 / MAX_LOAD_TENTHS + 1).max(8)
}

/// The home slot: the high 32 hash bits scaled onto `0..slots` (the tag
/// uses the low 32, so the two stay independent).
fn home(hash: u64, slots: usize) -> usize {
    (((hash >> 32) * slots as u64) >> 32) as usize
}

fn next(i: usize, slots: usize) -> usize {
    if i + 1 == slots {
        0
    } else {
        i + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(key: &[u8]) -> u64 {
        crate::recipients::hash::hash_folded(0, key)
    }

    #[test]
    fn grows_and_finds_everything() {
        let mut index = KeyIndex::with_capacity(0);
        for n in 0..5_000u32 {
            let key = format!("key{n}");
            let rehash = |r: Record| hash(r.key);
            index
                .insert(hash(key.as_bytes()), key.as_bytes(), n * 1000, rehash)
                .unwrap();
        }
        assert_eq!(index.len(), 5_000);
        for n in 0..5_000u32 {
            let key = format!("key{n}");
            let found = index.find(hash(key.as_bytes()), |r| r.key == key.as_bytes());
            assert_eq!(
                found,
                Some(Record {
                    key: key.as_bytes(),
                    value: n * 1000
                })
            );
        }
        assert_eq!(index.find(hash(b"key5000"), |r| r.key == b"key5000"), None);
    }

    #[test]
    fn refuses_keys_over_255_octets() {
        let mut index = KeyIndex::with_capacity(1);
        let key = [b'x'; 256];
        assert_eq!(index.insert(0, &key, 0, |_| 0), Err(TooLarge));
    }
}
