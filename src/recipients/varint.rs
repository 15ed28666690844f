//! LEB128 encoding of `u32` values (1–5 octets), for the small numbers
//! (domain ids) stored beside every key.

/// Encodes `value`; returns the octets and how many of them are used.
pub(crate) fn encode(mut value: u32) -> ([u8; 5], usize) {
    let mut out = [0u8; 5];
    let mut len = 0;
    while value >= 0x80 {
        out[len] = value as u8 | 0x80;
        value >>= 7;
        len += 1;
    }
    out[len] = value as u8;
    (out, len + 1)
}

/// Decodes the value at the start of `bytes`; returns it and its length.
/// Truncated or over-long input decodes to whatever it holds, never panics.
pub(crate) fn decode(bytes: &[u8]) -> (u32, usize) {
    let mut value = 0u32;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return (value, i + 1);
        }
    }
    (value, bytes.len().min(5))
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips() {
        for value in [0, 1, 127, 128, 300, 16_383, 16_384, 2_097_152, u32::MAX] {
            let (bytes, len) = super::encode(value);
            assert_eq!(super::decode(&bytes[..len]), (value, len), "{value}");
            assert_eq!(super::decode(&bytes), (value, len), "{value}");
        }
        assert_eq!(super::decode(&[]), (0, 0));
        assert_eq!(super::decode(&[0x80, 0x80]), (0, 2));
    }
}
