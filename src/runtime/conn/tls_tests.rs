//! Table tests of [`Conn`] in TLS mode, driven by an in-memory rustls
//! client: the discard of everything after the STARTTLS line wherever the
//! reads split, a session inside TLS split at every octet, the handshake's
//! failures and timeout as the log and metrics see them, and the reply
//! path the io_uring backend takes (`take_output`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ClientConnection};

use super::tests::Rig;
use super::*;
use crate::spool::SpoolLink;
use crate::tls::testkit::{self, KeyKind};

/// A rig whose STARTTLS works, a greeted connection offering it, and a
/// client configuration that trusts the rig's certificate.
fn start() -> (Rig, SpoolLink, Conn, Arc<ClientConfig>) {
    let cert = testkit::make_cert(KeyKind::EcdsaP256);
    let (_files, _store, config) = testkit::server(&cert);
    let mut rig = Rig::new();
    rig.tls = Some(config);
    let link = rig.spool.link(Box::new(|| {}));
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let client = testkit::client_config(&cert.der, &versions);
    (rig, link, Conn::greeted_offering_tls(true), client)
}

/// Everything the connection has to send, taken.
fn take(conn: &mut Conn) -> Vec<u8> {
    let out = conn.poll_output().to_vec();
    conn.advance_output(out.len());
    out
}

/// Runs the handshake between `client` and `conn`, the client's flights
/// fed through `cut`.
fn handshake(
    rig: &mut Rig,
    link: &SpoolLink,
    conn: &mut Conn,
    client: &mut ClientConnection,
    cut: usize,
) {
    for _ in 0..10 {
        let flight = testkit::client_output(client);
        for part in flight.chunks(cut) {
            rig.with_cx(link, |cx| conn.handle_input(part, cx));
        }
        to_client(conn, client);
        if !client.is_handshaking() && !client.wants_write() {
            return;
        }
    }
    panic!("no handshake in 10 round trips");
}

/// Gives the client what the connection sent; returns the plaintext.
fn to_client(conn: &mut Conn, client: &mut ClientConnection) -> String {
    decrypt(&take(conn), client)
}

/// The plaintext of `records` as `client` reads it.
fn decrypt(records: &[u8], client: &mut ClientConnection) -> String {
    let mut rd = records;
    while !rd.is_empty() {
        client.read_tls(&mut rd).unwrap();
        client.process_new_packets().unwrap();
    }
    let mut text = Vec::new();
    let _ = std::io::Read::read_to_end(&mut client.reader(), &mut text);
    String::from_utf8(text).unwrap()
}

/// The client sends `line` inside TLS, in pieces of `cut` octets.
fn send(
    rig: &mut Rig,
    link: &SpoolLink,
    conn: &mut Conn,
    client: &mut ClientConnection,
    line: &[u8],
    cut: usize,
) {
    std::io::Write::write_all(&mut client.writer(), line).unwrap();
    for part in testkit::client_output(client).chunks(cut) {
        rig.with_cx(link, |cx| conn.handle_input(part, cx));
    }
}

fn client(config: &Arc<ClientConfig>) -> ClientConnection {
    testkit::client(config)
}

/// However the reads split `STARTTLS` and the commands pipelined behind
/// it, those commands are never answered: the part in the read of the
/// STARTTLS line is dropped (then, inside TLS, the first reply is the
/// NOOP's, and MAIL needs EHLO again); a part arriving in a later read is
/// taken for the handshake, which fails on it (or waits for more).
#[test]
fn what_follows_starttls_is_never_answered_wherever_reads_split() {
    let input = b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<x@y.example>\r\nRSET\r\n";
    let line_end = b"EHLO c\r\nSTARTTLS\r\n".len();
    for at in 1..input.len() {
        let (mut rig, link, mut conn, config) = start();
        rig.with_cx(&link, |cx| {
            conn.handle_input(&input[..at], cx);
            conn.handle_input(&input[at..], cx);
        });
        let sent = take(&mut conn);
        let ready = b"250 STARTTLS\r\n220 2.0.0 Ready to start TLS\r\n";
        let end = memchr::memmem::find(&sent, ready).expect("the 220") + ready.len();
        if at >= line_end {
            let outcome = conn.ended();
            assert!(matches!(outcome, None | Some(Outcome::TlsFailed)), "{at}");
            let after = sent[end..].first();
            assert!(after.is_none_or(|&b| b == 0x15), "{at}: at most an alert");
            continue;
        }
        assert_eq!(end, sent.len(), "{at}");
        let mut c = client(&config);
        handshake(&mut rig, &link, &mut conn, &mut c, usize::MAX);
        let commands = b"NOOP\r\nMAIL FROM:<s@example.net>\r\n";
        send(&mut rig, &link, &mut conn, &mut c, commands, usize::MAX);
        let replies = to_client(&mut conn, &mut c);
        let expected = "250 2.0.0 Ok\r\n503 5.5.1 Error: send HELO/EHLO first\r\n";
        assert_eq!(replies, expected, "{at}");
    }
}

/// A whole session inside TLS with every record split into 1-octet
/// inputs, and the replies taken the way io_uring takes them.
#[test]
fn a_session_inside_tls_split_at_every_octet() {
    let (mut rig, link, mut conn, config) = start();
    rig.with_cx(&link, |cx| conn.handle_input(b"EHLO c\r\nSTARTTLS\r\n", cx));
    take(&mut conn);
    let mut c = client(&config);
    handshake(&mut rig, &link, &mut conn, &mut c, 1);
    let commands = b"EHLO c\r\nMAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.com>\r\n\
        DATA\r\nbody\r\n.\r\n";
    send(&mut rig, &link, &mut conn, &mut c, commands, 1);
    assert!(!conn.wants_input(), "the message is at the spool");
    rig.spool_answers(&link, &mut conn);
    send(&mut rig, &link, &mut conn, &mut c, b"QUIT\r\n", 1);
    assert_eq!(conn.ended(), Some(Outcome::Closed));

    let mut records = Vec::new();
    conn.take_output(&mut records);
    assert!(conn.poll_output().is_empty(), "swapped out, not copied");
    let text = decrypt(&records, &mut c);
    assert!(!text.contains("STARTTLS"), "{text}");
    assert!(text.contains("250 2.0.0 Ok: queued as "), "{text}");
    assert!(text.ends_with("221 2.0.0 Bye\r\n"), "{text}");
    assert_eq!(rig.metrics.metrics().tls_handshake.count(), 1);
}

/// [`start`], then STARTTLS answered (its 220 taken): the handshake is
/// next.
fn handshaking() -> (Rig, SpoolLink, Conn, Arc<ClientConfig>) {
    let (mut rig, link, mut conn, config) = start();
    rig.with_cx(&link, |cx| conn.handle_input(b"STARTTLS\r\n", cx));
    take(&mut conn);
    (rig, link, conn, config)
}

/// The connection ended as `outcome`; its end is logged, and the handshake
/// failures counted are returned.
fn failures_counted(rig: &mut Rig, conn: &Conn, outcome: Outcome) -> Vec<(&'static str, u64)> {
    assert_eq!(conn.ended(), Some(outcome));
    conn.log_end(outcome, &mut rig.metrics);
    rig.metrics.metrics().tls_failures.clone()
}

/// Garbage instead of a ClientHello ends the connection; the alert goes
/// out and the failure is counted under its reason.
#[test]
fn garbage_ends_the_connection_and_is_counted() {
    let (mut rig, link, mut conn, _) = handshaking();
    rig.with_cx(&link, |cx| conn.handle_input(b"GET / HTTP/1.0\r\n\r\n", cx));
    assert!(!take(&mut conn).is_empty(), "an alert");
    let counted = failures_counted(&mut rig, &conn, Outcome::TlsFailed);
    assert_eq!(counted, [("bad_record", 1)]);
}

/// A handshake not done within the command timeout ends as timed out,
/// counted as a `timeout` failure; nothing is sent in the clear.
#[test]
fn a_stalled_handshake_times_out() {
    let (mut rig, _link, mut conn, _) = handshaking();
    let late = Instant::now() + Duration::from_secs(301);
    let mut wheel = TimerWheel::new(Instant::now());
    conn.timer_fired(0, late, &mut wheel, &mut rig.metrics);
    assert!(take(&mut conn).is_empty(), "no 421 in the clear");
    let counted = failures_counted(&mut rig, &conn, Outcome::TimedOut);
    assert_eq!(counted, [("timeout", 1)]);
}

/// The client closing in the middle of the handshake ends it at once.
#[test]
fn a_close_mid_handshake_is_a_failure() {
    let (mut rig, link, mut conn, config) = handshaking();
    let hello = testkit::client_output(&mut client(&config));
    rig.with_cx(&link, |cx| conn.handle_input(&hello[..hello.len() / 2], cx));
    conn.handle_eof();
    let counted = failures_counted(&mut rig, &conn, Outcome::TlsFailed);
    assert_eq!(counted, [("peer_closed", 1)]);
}
