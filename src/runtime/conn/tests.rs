//! Table tests of [`Conn`]: held input, the end of input, the spool
//! pause, input split anywhere, idle buffers; and the [`Rig`] that lends
//! a connection what a worker would (used by the backends' tests too).

use std::time::Instant;

use super::*;
use crate::recipients::Table;
use crate::spool::SpoolLink;

impl Conn {
    /// A connection to 127.0.0.1 whose session (host `mx.test`) has
    /// written its greeting.
    pub fn greeted_for_tests() -> Conn {
        Conn::greeted_offering_tls(false)
    }

    /// [`Conn::greeted_for_tests`], offering STARTTLS if `starttls`.
    pub fn greeted_offering_tls(starttls: bool) -> Conn {
        Conn::new(
            session_for_tests(starttls),
            IpAddr::from([127, 0, 0, 1]),
            0,
            false,
        )
    }

    /// A connection from a balancer at 127.0.0.1, waiting for its PROXY
    /// header: not greeted yet.
    pub fn proxied_for_tests() -> Conn {
        Conn::new(
            session_for_tests(false),
            IpAddr::from([127, 0, 0, 1]),
            0,
            true,
        )
    }
}

/// A session of host `mx.test`, offering STARTTLS if `starttls`.
fn session_for_tests(starttls: bool) -> Session {
    let config = std::sync::Arc::new(crate::proto::SessionConfig {
        max_message_size: 1 << 20,
        starttls,
        ..crate::proto::SessionConfig::new("mx.test")
    });
    Session::new(config, Instant::now())
}

/// What a backend lends a connection, for tests: a spool that answers at
/// once and a table that knows alice@example.com.
pub struct Rig {
    pub spool: crate::spool::Spool,
    pub table: Table,
    pub metrics: Recorder,
    /// For TLS tests: the configuration STARTTLS uses.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// No per-client limit, unless a test sets one.
    pub clients: crate::shield::ClientLimits,
}

impl Rig {
    pub fn new() -> Rig {
        let table = Table::parse(b"alice@example.com\n", Default::default());
        Rig {
            spool: crate::spool::Spool::discard_for_tests(),
            table: table.unwrap(),
            metrics: Recorder::detached(),
            tls: None,
            clients: crate::shield::ClientLimits::new(Default::default(), Instant::now()),
        }
    }

    /// Runs `turn` with the context a worker would lend.
    pub fn with_cx(&mut self, link: &SpoolLink, turn: impl FnOnce(&mut Cx)) {
        let mut cx = Cx {
            now: Instant::now(),
            table: &self.table,
            link,
            ticket: 0,
            metrics: &mut self.metrics,
            tls: self.tls.as_ref(),
            clients: &self.clients,
            checks: None,
        };
        turn(&mut cx);
    }

    /// The spool answers `conn`'s message and `conn` takes its next turn.
    pub fn spool_answers(&mut self, link: &SpoolLink, conn: &mut Conn) {
        let done = link.try_complete().expect("discard answers at once");
        conn.spool_done(done.result, &mut self.metrics);
        self.with_cx(link, |cx| conn.resume(cx));
    }
}

/// A greeting, a message, then `rest`.
fn message_then(rest: &[u8]) -> Vec<u8> {
    let mut input = b"EHLO c\r\nMAIL FROM:<s@example.net>\r\n\
        RCPT TO:<alice@example.com>\r\nDATA\r\nbody\r\n.\r\n"
        .to_vec();
    input.extend_from_slice(rest);
    input
}

/// A rig, its spool link and a greeted connection.
fn start() -> (Rig, SpoolLink, Conn) {
    let rig = Rig::new();
    let link = rig.spool.link(Box::new(|| {}));
    (rig, link, Conn::greeted_for_tests())
}

fn sent(conn: &mut Conn) -> String {
    let text = String::from_utf8_lossy(conn.poll_output()).into_owned();
    let n = conn.poll_output().len();
    conn.advance_output(n);
    text
}

/// Input behind a message at the spool is held, not fed, and answered
/// once the spool has answered; meanwhile the session wants no input.
#[test]
fn input_behind_a_message_waits_for_the_spool() {
    let (mut rig, link, mut conn) = start();
    let input = message_then(b"NOOP\r\nQUIT\r\n");
    rig.with_cx(&link, |cx| conn.handle_input(&input, cx));
    assert!(!conn.wants_input() && conn.feed_due());
    assert!(!sent(&mut conn).contains("queued"));

    rig.spool_answers(&link, &mut conn);
    let replies = sent(&mut conn);
    assert!(replies.starts_with("250 2.0.0 Ok: queued as "), "{replies}");
    assert!(
        replies.ends_with("250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n"),
        "{replies}"
    );
    assert_eq!(conn.ended(), Some(Outcome::Closed));
}

/// A shutdown lets the message in flight finish; once the spool has
/// answered, the 421 follows with no further input.
#[test]
fn a_shutdown_closes_after_the_message_in_flight() {
    let (mut rig, link, mut conn) = start();
    rig.with_cx(&link, |cx| conn.handle_input(&message_then(b""), cx));
    assert!(!conn.shut_down(), "inside a transaction");
    rig.spool_answers(&link, &mut conn);
    let replies = sent(&mut conn);
    assert!(replies.contains("250 2.0.0 Ok: queued as "), "{replies}");
    assert!(replies.contains("\r\n421 4.3.2 mx.test "), "{replies}");
    assert_eq!(conn.ended(), Some(Outcome::Closed));
}

/// The end of the client's input ends the session only once what was
/// held back has been answered.
#[test]
fn end_of_input_waits_for_held_input() {
    let (mut rig, link, mut conn) = start();
    let input = message_then(b"NOOP\r\n");
    rig.with_cx(&link, |cx| conn.handle_input(&input, cx));
    conn.handle_eof();
    assert_eq!(conn.ended(), None, "the message is at the spool");

    rig.spool_answers(&link, &mut conn);
    assert!(sent(&mut conn).ends_with("250 2.0.0 Ok\r\n"));
    assert_eq!(conn.ended(), Some(Outcome::Disconnected));
}

/// A partial line is held across inputs; what arrives while the
/// session waits is held too, up to a bound past which the backend is
/// told to stop receiving.
#[test]
fn held_input_is_bounded() {
    let (mut rig, link, mut conn) = start();
    rig.with_cx(&link, |cx| conn.handle_input(b"EHLO c\r\nNO", cx));
    assert!(conn.wants_input() && !conn.feed_due());
    rig.with_cx(&link, |cx| conn.handle_input(b"OP\r\n", cx));
    assert!(sent(&mut conn).ends_with("250 2.0.0 Ok\r\n"));

    rig.with_cx(&link, |cx| conn.handle_input(&message_then(b""), cx));
    let noops = b"NOOP\r\n".repeat(1000);
    while !conn.holds_too_much() {
        rig.with_cx(&link, |cx| conn.handle_input(&noops, cx));
    }
    assert!(conn.held.len() < HELD_CAP + noops.len());
    assert!(!sent(&mut conn).contains("queued"));
}

/// Input split anywhere gets the replies it gets whole, and only the
/// unfinished line stays held.
#[test]
fn input_split_anywhere_is_answered_alike() {
    let mut input = b"EHLO c\r\nNOOP\r\n".to_vec();
    input.extend_from_slice(&[b'x'; 600]);
    input.extend_from_slice(b"\r\nRSET\r\nMAIL FROM:<s@example.net>\r\nNOOP\r\nQUIT\r\n");
    let (mut rig, link, mut whole) = start();
    rig.with_cx(&link, |cx| whole.handle_input(&input, cx));
    let expected = sent(&mut whole);
    for at in 0..input.len() {
        let (_, _, mut conn) = start();
        rig.with_cx(&link, |cx| {
            conn.handle_input(&input[..at], cx);
            let line_start = input[..at].iter().rposition(|&b| b == b'\n');
            let partial = at - line_start.map_or(0, |i| i + 1);
            assert!(conn.held.len() <= partial.min(512), "{at}");
            conn.handle_input(&input[at..], cx);
        });
        assert_eq!(sent(&mut conn), expected, "split at {at}");
        assert_eq!(conn.ended(), Some(Outcome::Closed));
    }
    let (_, _, mut conn) = start();
    rig.with_cx(&link, |cx| {
        for octet in input.chunks(1) {
            conn.handle_input(octet, cx);
        }
    });
    assert_eq!(sent(&mut conn), expected, "octet by octet");
}

/// Once its replies are sent and nothing is held, a connection gives
/// its buffers back.
#[test]
fn an_idle_connection_holds_no_buffer() {
    let (mut rig, link, mut conn) = start();
    rig.with_cx(&link, |cx| conn.handle_input(b"EHLO c\r\nNOOP\r\n", cx));
    let mut sending = Vec::new();
    conn.take_output(&mut sending);
    assert!(sending.ends_with(b"250 2.0.0 Ok\r\n"), "swapped out whole");
    conn.trim();
    assert_eq!((conn.held.capacity(), conn.out.capacity()), (0, 0));
    assert_eq!(conn.body.capacity(), 0);
}
