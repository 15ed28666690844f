//! The table's hash: a seeded, non-cryptographic multiply-fold hash (in the
//! style of wyhash) that folds ASCII case while it reads, 8 octets at a
//! time, so `Bob@Example.COM` and `bob@example.com` hash alike without a
//! lowercased copy. Equality is decided by the caller, not here.

const K0: u64 = 0xa076_1d64_78bd_642f;
const K1: u64 = 0xe703_7ed1_a0b4_28db;
const K2: u64 = 0x8ebc_6af0_9c88_c6e3;

/// Multiplies into 128 bits and folds the halves: the wyhash mixing step.
fn fold_mul(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// Lowercases the ASCII letters among 8 packed octets; other octets
/// (including UTF-8) are unchanged.
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

fn word_count(bytes: &[u8]) -> usize {
    bytes.len().div_ceil(8)
}

/// Hashes `bytes` with ASCII case folded, under `seed`.
pub(crate) fn hash_folded(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ fold_mul(bytes.len() as u64 ^ K2, K0);
    for i in 0..word_count(bytes) {
        h = fold_mul(h ^ fold_case(word(bytes, i)), K1);
    }
    fold_mul(h ^ K2, K0)
}

/// True if `lower` (already lowercase) equals `bytes` with ASCII case
/// folded, compared 8 octets at a time.
pub(crate) fn eq_folded(lower: &[u8], bytes: &[u8]) -> bool {
    lower.len() == bytes.len()
        && (0..word_count(bytes)).all(|i| word(lower, i) == fold_case(word(bytes, i)))
}

/// Derives a sub-seed, e.g. one per domain for its local parts.
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
