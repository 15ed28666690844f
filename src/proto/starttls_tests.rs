//! Table and transcript tests of STARTTLS in the session: every reply of
//! DESIGN.md's TLS section, their precedence, the event and what it
//! consumes, and the session starting over after the handshake.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Event, Session, SessionConfig};
use crate::recipients::Table;

fn config(starttls: bool) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        max_message_size: 10_000,
        starttls,
        ..SessionConfig::new("mx.test")
    })
}

fn table() -> Table {
    Table::parse(b"alice@example.com\n", Default::default()).unwrap()
}

/// Feeds `input` until the session needs more or raises `StartTls`;
/// returns the replies, the octets consumed and whether it raised it.
fn run(session: &mut Session, input: &[u8]) -> (String, usize, bool) {
    let (table, mut out, mut pos) = (table(), Vec::new(), 0);
    loop {
        let (n, event) = session.feed(&input[pos..], Instant::now(), &table, &mut out);
        pos += n;
        let text = String::from_utf8(out.clone()).unwrap();
        match event {
            Event::NeedInput => return (text, pos, false),
            Event::StartTls => return (text, pos, true),
            Event::Envelope | Event::Body(_) | Event::MessageDiscarded => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn session(starttls: bool) -> Session {
    Session::new(config(starttls), Instant::now())
}

/// The last reply line of `run`'s replies.
fn last(replies: &str) -> &str {
    replies.trim_end().lines().last().unwrap_or("")
}

#[test]
fn ehlo_offers_starttls_only_when_configured_and_not_in_tls() {
    let (offered, _, _) = run(&mut session(true), b"EHLO c\r\n");
    assert!(
        offered.ends_with("250-CHUNKING\r\n250 STARTTLS\r\n"),
        "{offered}"
    );
    let (plain, _, _) = run(&mut session(false), b"EHLO c\r\n");
    assert!(plain.ends_with("250 CHUNKING\r\n"), "{plain}");
    assert!(!plain.contains("STARTTLS"));

    let mut s = session(true);
    run(&mut s, b"EHLO c\r\nSTARTTLS\r\n");
    s.start_tls(Instant::now());
    let (inside, _, _) = run(&mut s, b"EHLO c\r\n");
    assert!(inside.ends_with("250 CHUNKING\r\n"), "{inside}");
    assert!(!inside.contains("STARTTLS"));
}

/// Each refusal, and the precedence among them.
#[test]
fn starttls_replies() {
    let cases: &[(bool, bool, &[u8], &str)] = &[
        (false, false, b"STARTTLS\r\n", "502 5.5.1 "),
        (false, false, b"STARTTLS now\r\n", "502 5.5.1 "),
        (true, false, b"STARTTLS now\r\n", "501 5.5.4 "),
        (
            true,
            false,
            b"MAIL FROM:<a@b.example>\r\nSTARTTLS\r\n",
            "503 5.5.1 ",
        ),
        (
            true,
            false,
            b"MAIL FROM:<a@b.example>\r\nSTARTTLS x\r\n",
            "501 5.5.4 ",
        ),
        (true, true, b"STARTTLS\r\n", "503 5.5.1 "),
        // Inside TLS: 503 whatever follows, a transaction or an argument.
        (
            true,
            true,
            b"STARTTLS now\r\n",
            "503 5.5.1 Error: TLS already active",
        ),
        (
            true,
            true,
            b"MAIL FROM:<a@b.example>\r\nSTARTTLS x\r\n",
            "503 5.5.1 Error: TLS",
        ),
    ];
    for &(offered, in_tls, commands, expected) in cases {
        let mut s = session(offered);
        if in_tls {
            run(&mut s, b"STARTTLS\r\n");
            s.start_tls(Instant::now());
        }
        let input = [b"EHLO c\r\n", commands].concat();
        let (replies, consumed, started) = run(&mut s, &input);
        assert!(!started, "{commands:?}");
        assert_eq!(consumed, input.len());
        assert!(
            last(&replies).starts_with(expected),
            "{commands:?}: {replies}"
        );
    }
}

/// 220, then the event right after the STARTTLS line: what follows is not
/// consumed, not answered, and the session takes no input until the
/// handshake ends; it then starts over with no HELO.
#[test]
fn starttls_stops_at_its_line_and_starts_over() {
    let mut s = session(true);
    let input = b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<x@y.example>\r\n";
    let (replies, consumed, started) = run(&mut s, input);
    assert!(started);
    assert!(replies.ends_with("250 STARTTLS\r\n220 2.0.0 Ready to start TLS\r\n"));
    assert_eq!(&input[consumed..], b"MAIL FROM:<x@y.example>\r\n");
    let (more, taken, _) = run(&mut s, &input[consumed..]);
    assert_eq!(
        (more.as_str(), taken),
        ("", 0),
        "input before the handshake"
    );

    s.start_tls(Instant::now());
    assert!(s.in_tls() && s.helo().is_empty());
    let (replies, _, _) = run(&mut s, b"MAIL FROM:<x@y.example>\r\n");
    assert!(
        replies.starts_with("503 5.5.1 Error: send HELO/EHLO first"),
        "{replies}"
    );
}

/// Split at every offset, the replies and the event's place are the same.
#[test]
fn starttls_split_anywhere() {
    let input = b"EHLO c\r\nNOOP\r\nSTARTTLS\r\n";
    let (whole, _, _) = run(&mut session(true), input);
    for at in 0..input.len() {
        let mut s = session(true);
        let (first, used, started) = run(&mut s, &input[..at]);
        assert!(!started);
        let rest = [&input[used..at], &input[at..]].concat();
        let (second, consumed, started) = run(&mut s, &rest);
        assert!(started && consumed == rest.len(), "split at {at}");
        assert_eq!(first + &second, whole, "split at {at}");
    }
}

/// The handshake's deadline is the command timeout from the STARTTLS
/// line; a shutdown during the handshake closes at once.
#[test]
fn the_handshake_has_the_command_timeout_and_shutdown_closes_it() {
    let mut s = session(true);
    let now = Instant::now();
    run(&mut s, b"STARTTLS\r\n");
    assert!(s.deadline() <= Instant::now() + Duration::from_secs(300));
    assert!(s.deadline() >= now + Duration::from_secs(300));
    assert!(s.shut_down(&mut Vec::new()), "closes now");
}
