//! The table's hash: a seeded, non-cryptographic multiply-fold hash (in the
//! style of wyhash) over 8-octet words with ASCII case folded, so
//! `Bob@Example.COM` and `bob@example.com` hash alike. Loading hashes and
//! compares keys as they are ([`hash_folded`], [`eq_folded`]), folding as
//! it reads; a lookup folds the address's parts once each into zero-padded
//! [`Folded`] copies and hashes, searches and compares those. Which keys
//! are equal is the caller's to decide; the comparisons it uses
//! ([`eq_folded`], [`eq_octets`]) are here.

const K0: u64 = 0xa076_1d64_78bd_642f;
const K1: u64 = 0xe703_7ed1_a0b4_28db;
const K2: u64 = 0x8ebc_6af0_9c88_c6e3;

/// Multiplies into 128 bits and folds the halves: the wyhash mixing step.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// Lowercases the ASCII letters among 8 packed octets; other octets
/// (including UTF-8) are unchanged.
#[inline]
fn fold_case(word: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const fn splat(b: u8) -> u64 {
        0x0101_0101_0101_0101 * b as u64
    }
    let low = word & LOW7;
    // No carries cross octets: each low7 octet plus the addend stays < 0x100.
    let at_least_a = low + splat(0x80 - b'A');
    let above_z = low + splat(0x80 - b'Z' - 1);
    let upper = at_least_a & !above_z & !word & HIGH;
    word | (upper >> 2)
}

/// Word `i` of `bytes`: octets `8i..8i+8` little-endian, zero-padded past
/// the end. Fixed-size loads only, no variable-length copy.
#[inline]
fn word(bytes: &[u8], i: usize) -> u64 {
    let rest = &bytes[i * 8..];
    let load4 = |at: usize| {
        u64::from(u32::from_le_bytes([
            rest[at],
            rest[at + 1],
            rest[at + 2],
            rest[at + 3],
        ]))
    };
    match rest.len() {
        8.. => u64::from_le_bytes([
            rest[0], rest[1], rest[2], rest[3], rest[4], rest[5], rest[6], rest[7],
        ]),
        // Two overlapping 4-octet loads; the overlap ORs equal octets.
        n @ 4..=7 => load4(0) | (load4(n - 4) << ((n - 4) * 8)),
        n @ 1..=3 => {
            let at = |k: usize| u64::from(rest[k]) << (k * 8);
            at(0) | at(n / 2) | at(n - 1)
        }
        _ => 0,
    }
}

#[inline]
fn word_count(bytes: &[u8]) -> usize {
    bytes.len().div_ceil(8)
}

/// The 8 octets of `bytes` at `at`, little-endian (they must be there).
#[inline]
fn load8(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 octets"))
}

/// The hash's state before the first word: the seed and the length.
#[inline]
fn start(seed: u64, len: usize) -> u64 {
    seed ^ fold_mul(len as u64 ^ K2, K0)
}

#[inline]
fn mix(state: u64, word: u64) -> u64 {
    fold_mul(state ^ word, K1)
}

#[inline]
fn finish(state: u64) -> u64 {
    fold_mul(state ^ K2, K0)
}

/// Hashes `bytes` with ASCII case folded, under `seed`: what
/// [`Folded::hash_prefix`] gives over a whole key, for keys of any length.
/// Loading uses it; lookups fold once and hash the folded words.
pub(crate) fn hash_folded(seed: u64, bytes: &[u8]) -> u64 {
    let words = (0..word_count(bytes)).map(|i| fold_case(word(bytes, i)));
    finish(words.fold(start(seed, bytes.len()), mix))
}

/// True if `lower` (already lowercase) equals `bytes` with ASCII case
/// folded, compared 8 octets at a time.
#[inline]
pub(crate) fn eq_folded(lower: &[u8], bytes: &[u8]) -> bool {
    lower.len() == bytes.len()
        && (0..word_count(bytes)).all(|i| word(lower, i) == fold_case(word(bytes, i)))
}

/// `a == b` for keys, without the library call slice equality makes: whole
/// words, then the last 8 octets again (overlapping); keys under 8 octets
/// by two overlapping halves, or octet by octet under 4.
#[inline]
pub(crate) fn eq_octets(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    let load4 = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("4"));
    n == b.len()
        && match n {
            8.. => {
                (0..n / 8).all(|i| load8(a, i * 8) == load8(b, i * 8))
                    && load8(a, n - 8) == load8(b, n - 8)
            }
            4..=7 => load4(a, 0) == load4(b, 0) && load4(a, n - 4) == load4(b, n - 4),
            _ => a.iter().zip(b).all(|(x, y)| x == y),
        }
}

/// Up to `N` octets (a multiple of 8) of a key, folded to lowercase and
/// zero-padded to whole words: hashing it, or a prefix of it, reads whole
/// words with nothing left to fold, and comparing it with a stored
/// (lowercase) key is a plain comparison of octets. A lookup folds each
/// part of the address once, instead of once per hash and comparison.
pub(crate) struct Folded<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Folded<N> {
    /// An empty key, to [`fold`](Self::fold) one into (built in place:
    /// returning a filled one would copy all `N` octets).
    #[inline]
    pub fn new() -> Folded<N> {
        Folded {
            bytes: [0; N],
            len: 0,
        }
    }

    /// Folds `key` into this empty one; false if it is longer than `N`.
    #[inline]
    pub fn fold(&mut self, key: &[u8]) -> bool {
        if key.len() > N {
            return false;
        }
        self.len = key.len();
        // Word by word, not a copy and then a fold: reading back whole words
        // that `memcpy` stored in other pieces waits on the stores (hits
        // measured 1.3x slower).
        let mut words = key.chunks_exact(8);
        let mut slots = self.bytes.chunks_exact_mut(8);
        for (word, slot) in (&mut words).zip(&mut slots) {
            slot.copy_from_slice(&fold_case(load8(word, 0)).to_le_bytes());
        }
        let tail = words.remainder();
        if let (false, Some(slot)) = (tail.is_empty(), slots.next()) {
            slot.copy_from_slice(&fold_case(self::word(tail, 0)).to_le_bytes());
        }
        true
    }

    /// The folded octets.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Word `i` of the folded key (zero past its end).
    #[inline]
    fn word(&self, i: usize) -> u64 {
        load8(&self.bytes, i * 8)
    }

    /// The hash under `seed` of the key's first `len` octets (at most its
    /// length): the same as hashing that prefix alone.
    #[inline]
    pub fn hash_prefix(&self, seed: u64, len: usize) -> u64 {
        let mut state = start(seed, len);
        for i in 0..len / 8 {
            state = mix(state, self.word(i));
        }
        let tail = len % 8;
        if tail > 0 {
            state = mix(state, self.word(len / 8) & (u64::MAX >> (64 - 8 * tail)));
        }
        finish(state)
    }

    /// The position of the first `octet` in the (folded) key.
    #[inline]
    pub fn find(&self, octet: u8) -> Option<usize> {
        let pattern = u64::from_le_bytes([octet; 8]);
        let found = (0..self.len.div_ceil(8)).find_map(|i| {
            let zeros = zero_octets(self.word(i) ^ pattern);
            (zeros != 0).then(|| i * 8 + zeros.trailing_zeros() as usize / 8)
        });
        // Padding matches only a zero octet, and only past the end.
        found.filter(|&at| at < self.len)
    }
}

/// The position of the last `octet` in `bytes`, read 8 octets at a time
/// from the end (an address's last `@` is usually a short domain away).
#[inline]
pub(crate) fn rfind_octet(bytes: &[u8], octet: u8) -> Option<usize> {
    let pattern = u64::from_le_bytes([octet; 8]);
    let mut end = bytes.len();
    while end >= 8 {
        // Sliced up to `end`, not through `load8`: the bounds check then
        // folds away (measured: 5 % more instructions per lookup otherwise).
        let word = u64::from_le_bytes(bytes[end - 8..end].try_into().expect("8 octets"));
        let found = zero_octets(word ^ pattern);
        if found != 0 {
            return Some(end - 8 + (63 - found.leading_zeros() as usize) / 8);
        }
        end -= 8;
    }
    bytes[..end].iter().rposition(|&b| b == octet)
}

/// The high bit of each zero octet of `word`, and no other bit (no carry
/// crosses octets, unlike the shorter `(w - 0x01…) & !w` test).
#[inline]
fn zero_octets(word: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((word & LOW7) + LOW7) | word) & !LOW7
}

/// Mixes two hashes into one (order matters).
#[inline]
pub(crate) fn combine(a: u64, b: u64) -> u64 {
    fold_mul(a ^ K1, b ^ K2)
}

/// Derives a sub-seed, e.g. one per domain for its local parts.
#[inline]
pub(crate) fn derive(seed: u64, n: u32) -> u64 {
    fold_mul(seed ^ u64::from(n), K2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_case_matches_std_for_every_octet() {
        for b in 0..=255u8 {
            for pos in 0..8 {
                let mut word = [b'x'; 8];
                word[pos] = b;
                let want = word.map(|b| b.to_ascii_lowercase());
                assert_eq!(
                    fold_case(u64::from_le_bytes(word)),
                    u64::from_le_bytes(want)
                );
            }
        }
    }

    #[test]
    fn case_insensitive_and_length_sensitive() {
        let h = |b: &[u8]| hash_folded(7, b);
        assert_eq!(h(b"Alice.Smith@Example.COM"), h(b"alice.smith@example.com"));
        assert_ne!(h(b"a"), h(b"a\0"));
        assert_ne!(h(b""), h(b"\0"));
        assert_ne!(h(b"alice"), h(b"alicf"));
        assert_ne!(hash_folded(1, b"alice"), hash_folded(2, b"alice"));
        assert_ne!(derive(1, 1), derive(1, 2));
    }

    #[test]
    fn folded_agrees_with_hash_folded_on_every_prefix() {
        let key: Vec<u8> = b"A.Long-Local+Part_With.MIXED.case\xc3\x96"
            .iter()
            .copied()
            .cycle()
            .take(70)
            .collect();
        for len in 0..=64 {
            let mut folded = Folded::<64>::new();
            assert!(folded.fold(&key[..len]));
            assert_eq!(folded.as_bytes(), key[..len].to_ascii_lowercase());
            for prefix in 0..=len {
                let want = hash_folded(3, &key[..prefix]);
                assert_eq!(folded.hash_prefix(3, prefix), want, "{len} {prefix}");
            }
        }
        assert!(!Folded::<64>::new().fold(&key[..65]));
    }

    #[test]
    fn eq_folded_matches_std() {
        let cases: [(&[u8], &[u8]); 6] = [
            (b"alice", b"ALICE"),
            (b"a.long-local+part", b"A.Long-Local+Part"),
            (b"alice", b"alicf"),
            (b"alice", b"alic"),
            (b"\xc3\xb6", b"\xc3\x96"),
            (b"", b""),
        ];
        for (lower, bytes) in cases {
            assert_eq!(
                eq_folded(lower, bytes),
                lower.eq_ignore_ascii_case(bytes),
                "{lower:?}"
            );
        }
        assert!(
            !eq_folded(b"Alice", b"alice"),
            "the stored side must be lowercase"
        );
    }

    #[test]
    fn eq_octets_matches_std_for_every_length_and_position() {
        let a: Vec<u8> = (1..=40).collect();
        for len in 0..=40 {
            assert!(eq_octets(&a[..len], &a[..len]));
            assert!(len == 0 || !eq_octets(&a[..len], &a[..len - 1]));
            for at in 0..len {
                let mut b = a[..len].to_vec();
                b[at] ^= 0x20;
                assert!(!eq_octets(&a[..len], &b), "{len} {at}");
            }
        }
    }

    #[test]
    fn rfind_octet_matches_std() {
        for len in 0..=30 {
            let mut bytes = vec![b'a'; len];
            assert_eq!(rfind_octet(&bytes, b'@'), None);
            for at in 0..len {
                bytes[at] = b'@';
                let want = bytes.iter().rposition(|&b| b == b'@');
                assert_eq!(rfind_octet(&bytes, b'@'), want, "{len} {at}");
            }
        }
    }

    #[test]
    fn find_matches_std_at_every_position() {
        for len in 0..=20 {
            for at in 0..len {
                let mut key = vec![b'a'; len];
                key[at] = b'+';
                key[len - 1] = if at == len - 1 { b'+' } else { b'A' };
                let mut folded = Folded::<24>::new();
                assert!(folded.fold(&key));
                assert_eq!(folded.find(b'+'), Some(at), "{len} {at}");
                assert_eq!(folded.find(b'A'), None, "only lowercase is left");
                assert_eq!(folded.find(0), None, "padding is not the key");
            }
        }
    }

    #[test]
    fn words_are_zero_padded() {
        let bytes: Vec<u8> = (1..=20).collect();
        for len in 0..=20 {
            let slice = &bytes[..len];
            for i in 0..word_count(slice) {
                let mut want = [0u8; 8];
                let end = slice.len().min(i * 8 + 8);
                want[..end - i * 8].copy_from_slice(&slice[i * 8..end]);
                assert_eq!(
                    word(slice, i),
                    u64::from_le_bytes(want),
                    "len {len} word {i}"
                );
            }
        }
    }

    #[test]
    fn high_bits_spread() {
        // Home slots come from the high 32 bits: similar keys must differ there.
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            seen.insert(hash_folded(0, format!("user{i}").as_bytes()) >> 48);
        }
        assert!(seen.len() > 8_000, "{}", seen.len());
    }
}
