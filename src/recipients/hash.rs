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

/// Hashes `bytes` with ASCII case folded, under `seed`.
pub(crate) fn hash_folded(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ fold_mul(bytes.len() as u64 ^ K2, K0);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = fold_mul(h ^ fold_case(u64::from_le_bytes(word)), K1);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = fold_mul(h ^ fold_case(u64::from_le_bytes(word)), K1);
    }
    fold_mul(h ^ K2, K0)
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
    fn high_bits_spread() {
        // Home slots come from the high 32 bits: similar keys must differ there.
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            seen.insert(hash_folded(0, format!("user{i}").as_bytes()) >> 48);
        }
        assert!(seen.len() > 8_000, "{}", seen.len());
    }
}
