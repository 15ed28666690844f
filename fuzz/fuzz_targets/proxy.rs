//! The PROXY header parser on arbitrary octets: it never panics, a header
//! it accepts lies within the input and the bounds, and the input cut
//! anywhere before that header's end is never taken for a header (the
//! same answer whole or in pieces, as a connection reads it).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mxgate::shield::proxy::{parse, sniff, Parse, Sniff, V1_MAX, V2_MAX_BODY};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Parse::Done { consumed, source } => {
            assert!(consumed <= data.len());
            assert!(consumed <= V1_MAX.max(16 + V2_MAX_BODY));
            assert_eq!(sniff(data), Sniff::Header);
            assert_eq!(parse(&data[..consumed]), Parse::Done { consumed, source });
            for cut in [0, consumed / 2, consumed - 1] {
                assert_eq!(parse(&data[..cut]), Parse::Partial, "cut at {cut}");
            }
        }
        // Waiting for more is bounded: a header never grows past its cap.
        Parse::Partial => assert!(data.len() < 16 + V2_MAX_BODY),
        Parse::Invalid(_) => {}
    }
});
