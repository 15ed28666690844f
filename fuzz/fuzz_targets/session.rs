//! The SMTP session fed arbitrary octets, whole and cut at arbitrary
//! points, through the transcripts' driver (tests/common): the same
//! replies, messages and close either way; a bounded unconsumed tail
//! (checked by the driver); every reply line a code and a separator; no
//! bare CR or LF in a body that would be spooled.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{assert_same, run_cut, Outcome, MAX};

fuzz_target!(|input: (Vec<u8>, Vec<u16>)| {
    let (octets, cuts) = input;
    let mut cuts: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c).min(octets.len()))
        .collect();
    cuts.sort_unstable();
    let whole = run_cut(&octets, &[], MAX, true);
    assert_same(&whole, &run_cut(&octets, &cuts, MAX, true), "cut");
    for line in whole.lines() {
        let code = line.as_bytes().get(..4).expect("a code and a separator");
        assert!(code[..3].iter().all(u8::is_ascii_digit), "{line:?}");
        assert!(code[3] == b' ' || code[3] == b'-', "{line:?}");
    }
    for message in whole
        .messages
        .iter()
        .filter(|m| m.outcome == Outcome::Ready)
    {
        let lines = String::from_utf8_lossy(&message.body).replace("\r\n", "");
        assert!(!lines.contains(['\r', '\n']), "{:?}", message.body);
    }
});
