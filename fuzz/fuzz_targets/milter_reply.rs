//! The milter reply decoder on arbitrary octets, as a milter would send
//! them to a client that pipelined zero to three RCPTs and end of message:
//! it never panics, the answer is the same whole or cut in two anywhere
//! (as a socket reads it), and the octets it holds back stay under one
//! packet.

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mxgate::check::milter::{reply, Client, Decoder, Stage, MAX_PACKET};

/// A client past negotiation (all actions, every stage) waiting for `rcpts`
/// RCPTs and end of message; the answer to `parts` fed in turn, and the
/// edits it kept.
fn run(rcpts: u8, parts: &[&[u8]]) -> String {
    let now = Instant::now();
    let mut client = Client::new(Duration::from_secs(30), now);
    let negotiate = [0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 0, 0x31, 0, 0, 0, 0];
    client.handle_input(&negotiate, now).expect("a valid negotiation");
    for _ in 0..rcpts {
        client.stage(Stage::Rcpt("<a@b>", &[]), &[], now);
    }
    client.stage(Stage::EndOfMessage, &[], now);
    let mut result = Ok(None);
    for part in parts {
        result = client.handle_input(part, now);
        if !matches!(result, Ok(None)) {
            break;
        }
    }
    format!("{result:?} {:?}", client.take_edits())
}

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::default();
    decoder.extend(data);
    while let Ok(Some((code, body))) = decoder.next_packet() {
        let _ = reply::decode(code, body);
    }
    assert!(decoder.pending() < 4 + MAX_PACKET || decoder.next_packet().is_err());
    let first = data.first().copied().unwrap_or(0);
    let rcpts = first >> 6;
    let whole = run(rcpts, &[data]);
    let cut = usize::from(first) % (data.len() + 1);
    assert_eq!(whole, run(rcpts, &[&data[..cut], &data[cut..]]), "cut at {cut}");
});
