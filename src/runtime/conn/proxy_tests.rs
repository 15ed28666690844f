//! The connection's gate: a balancer's PROXY header before the greeting,
//! and a header from anyone else refused.

use std::time::{Duration, Instant};

use super::tests::Rig;
use super::*;
use crate::runtime::timer::TimerWheel;

fn sent(conn: &mut Conn) -> String {
    let text = String::from_utf8_lossy(conn.poll_output()).into_owned();
    conn.advance_output(text.len());
    text
}

/// A v2 PROXY header from 192.0.2.7:40000 to 10.0.0.1:25.
fn v2_header() -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    header.extend_from_slice(&[192, 0, 2, 7, 10, 0, 0, 1, 0x9c, 0x40, 0, 25]);
    header
}

/// Runs `inputs` through a fresh connection (`proxied` or not); returns
/// what it sent and the connection.
fn run(proxied_conn: bool, inputs: &[&[u8]]) -> (String, Conn) {
    let mut rig = Rig::new();
    let link = rig.spool.link(Box::new(|| {}));
    let mut conn = if proxied_conn {
        Conn::proxied_for_tests()
    } else {
        Conn::greeted_for_tests()
    };
    rig.with_cx(&link, |cx| {
        for input in inputs {
            conn.handle_input(input, cx);
        }
    });
    (sent(&mut conn), conn)
}

/// The greeting waits for the header; the header's address is the
/// client's; a command pipelined behind the header is answered, whatever
/// the cut of the input.
#[test]
fn a_balancer_is_greeted_after_its_header_split_anywhere() {
    for header in [
        b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 25\r\n".to_vec(),
        v2_header(),
    ] {
        let mut input = header.clone();
        input.extend_from_slice(b"EHLO c\r\nQUIT\r\n");
        let (whole, conn) = run(true, &[&input]);
        assert!(whole.starts_with("220 mx.test ESMTP"), "{whole}");
        assert!(whole.contains("250-mx.test") && whole.ends_with("221 2.0.0 Bye\r\n"));
        assert_eq!(conn.peer, IpAddr::from([192, 0, 2, 7]));
        for at in 0..input.len() {
            let (first, _) = run(true, &[&input[..at]]);
            if at < header.len() {
                assert_eq!(first, "", "greeted before the header, cut at {at}");
            }
            let (replies, conn) = run(true, &[&input[..at], &input[at..]]);
            assert_eq!(replies, whole, "cut at {at}");
            assert_eq!(conn.ended(), Some(Outcome::Closed));
        }
    }
}

/// LOCAL (a health check) is served as the balancer itself.
#[test]
fn a_local_header_is_the_balancer_itself() {
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00NOOP\r\n";
    let (replies, conn) = run(true, &[local]);
    assert!(
        replies.starts_with("220 ") && replies.ends_with("250 2.0.0 Ok\r\n"),
        "{replies}"
    );
    assert_eq!(conn.peer, IpAddr::from([127, 0, 0, 1]));
}

/// A bad header, or SMTP where the header should be, closes at once with
/// no reply.
#[test]
fn a_bad_header_closes_without_a_reply() {
    for input in [
        &b"EHLO c\r\n"[..],
        b"PROXY TCP4 nowhere\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x23",
    ] {
        let (replies, conn) = run(true, &[input]);
        assert_eq!(replies, "");
        assert_eq!(conn.ended(), Some(Outcome::ProxyInvalid), "{input:?}");
    }
}

/// No header before the command timeout: closed with no reply.
#[test]
fn a_missing_header_times_out_without_a_reply() {
    let mut conn = Conn::proxied_for_tests();
    let now = Instant::now();
    let mut wheel = TimerWheel::new(now);
    let mut metrics = Recorder::detached();
    conn.timer_fired(0, now + Duration::from_secs(301), &mut wheel, &mut metrics);
    assert_eq!(conn.ended(), Some(Outcome::ProxyMissing));
    assert_eq!(sent(&mut conn), "");
}

/// A peer not in `--proxy-protocol-from` that opens with a header, v1 or
/// v2, gets 500 and the connection ends; SMTP that merely starts alike
/// is served.
#[test]
fn a_header_from_anyone_else_is_refused() {
    let v2 = v2_header();
    for inputs in [
        vec![&b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 25\r\n"[..]],
        vec![&b"PRO"[..], b"XY "],
        vec![&v2[..5], &v2[5..]],
    ] {
        let (replies, conn) = run(false, &inputs);
        let refusal = "500 5.5.2 mx.test Error: PROXY header from an untrusted peer\r\n";
        assert!(replies.ends_with(refusal), "{replies}");
        assert_eq!(conn.ended(), Some(Outcome::ProxyUntrusted));
    }
    let (replies, conn) = run(false, &[b"PRO", b"XYZ\r\nNOOP\r\n"]);
    let answered = replies.split("\r\n").map(|line| line.get(..3));
    let codes: Vec<_> = answered.flatten().collect();
    assert_eq!(codes, ["220", "500", "250"], "{replies}");
    assert_eq!(conn.ended(), None);
}

/// Each way a header fails is counted in the metrics under its outcome.
#[test]
fn header_failures_are_counted_by_outcome() {
    let (_, invalid) = run(true, &[b"EHLO c\r\n"]);
    let (_, untrusted) = run(false, &[b"PROXY "]);
    let mut metrics = Recorder::detached();
    for conn in [&invalid, &untrusted] {
        conn.log_end(conn.ended().expect("ended"), &mut metrics);
    }
    let outcomes = &metrics.metrics().outcomes;
    assert!(outcomes.contains(&("proxy-invalid", 1)), "{outcomes:?}");
    assert!(outcomes.contains(&("proxy-untrusted", 1)), "{outcomes:?}");
}
