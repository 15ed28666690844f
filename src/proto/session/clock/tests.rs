//! The session's deadlines under the time rules, driven with made-up
//! times: the greeting's wait, trickled command lines, bodies above and
//! below the minimum rate, BDAT chunks, the spool's pause.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::{Event, Session, SessionConfig};
use crate::recipients::Table;
use crate::shield::timing::Rule;

const SECOND: Duration = Duration::from_secs(1);
const COMMAND: Duration = Duration::from_secs(30);
const DATA: Duration = Duration::from_secs(20);
const ENVELOPE: &[u8] = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\n";

/// A session and the input it has not consumed, as a driver holds it.
struct Client {
    s: Session,
    held: Vec<u8>,
}

fn config(greet_delay: Duration) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        max_message_size: 1 << 20,
        command_timeout: COMMAND,
        data_timeout: DATA,
        greet_delay,
        min_data_rate: 100,
        ..SessionConfig::new("mx.test")
    })
}

/// A session greeted (or waiting to greet) at `t0`.
fn client(greet_delay: Duration, t0: Instant) -> Client {
    let mut s = Session::new(config(greet_delay), t0);
    s.greet(t0, &mut Vec::new());
    Client {
        s,
        held: Vec::new(),
    }
}

fn table() -> Table {
    Table::parse(b"alice@example.com\n", Default::default()).unwrap()
}

impl Client {
    /// Feeds what is held and `input` at `now` (a message goes to a spool
    /// that answers at once); returns the replies.
    fn send(&mut self, input: &[u8], now: Instant) -> String {
        self.held.extend_from_slice(input);
        let (table, mut out, mut pos) = (table(), Vec::new(), 0);
        loop {
            let (n, event) = self.s.feed(&self.held[pos..], now, &table, &mut out);
            pos += n;
            match event {
                Event::MessageReady => self.s.spool_done(Some("QID"), &mut out),
                Event::NeedInput | Event::Close => break,
                _ => {}
            }
        }
        self.held.drain(..pos);
        String::from_utf8(out).unwrap()
    }

    fn deadline(&self) -> Instant {
        self.s.deadline()
    }

    fn time_out(&mut self) -> Rule {
        self.s.time_out(&mut Vec::new())
    }
}

#[test]
fn the_idle_wait_is_the_command_timeout_from_the_last_reply() {
    let t0 = Instant::now();
    let mut c = client(Duration::ZERO, t0);
    assert_eq!(c.deadline(), t0 + COMMAND);
    c.send(b"EHLO c\r\n", t0 + 5 * SECOND);
    assert_eq!(c.deadline(), t0 + 5 * SECOND + COMMAND);
}

#[test]
fn a_trickled_line_is_due_a_command_timeout_after_its_first_octet() {
    let t0 = Instant::now();
    let mut c = client(Duration::ZERO, t0);
    let start = t0 + 10 * SECOND;
    let line = b"EHLO trickle.example\r";
    for (i, octet) in line.iter().enumerate() {
        c.send(&[*octet], start + i as u32 * SECOND);
        assert_eq!(c.deadline(), start + COMMAND, "after {} octets", i + 1);
    }
    let done = start + 40 * SECOND;
    let replies = c.send(b"\n", done);
    assert!(replies.starts_with("250-mx.test"), "{replies}");
    assert_eq!(
        c.deadline(),
        done + COMMAND,
        "a complete line starts a new wait"
    );
    assert_eq!(c.time_out(), Rule::CommandTimeout);
}

#[test]
fn an_over_long_line_is_due_from_its_first_octet_too() {
    let t0 = Instant::now();
    let mut c = client(Duration::ZERO, t0);
    c.send(&[b'x'; 600], t0 + SECOND);
    c.send(&[b'x'; 10], t0 + 20 * SECOND);
    assert_eq!(c.deadline(), t0 + SECOND + COMMAND);
    let replies = c.send(b"x\r\n", t0 + 25 * SECOND);
    assert!(replies.starts_with("500 5.5.2"), "{replies}");
    assert_eq!(c.deadline(), t0 + 25 * SECOND + COMMAND);
}

#[test]
fn a_body_earns_one_second_per_rate_octets_capped_at_the_data_timeout() {
    let t0 = Instant::now();
    let mut c = client(Duration::ZERO, t0);
    c.send(ENVELOPE, t0);
    c.send(b"DATA\r\n", t0 + SECOND);
    let start = t0 + SECOND;
    assert_eq!(c.deadline(), start + DATA);
    // 500 octets at 100/s: 5 s more.
    c.send(&[b'a'; 500], t0 + 10 * SECOND);
    assert_eq!(c.deadline(), start + DATA + 5 * SECOND);
    // A burst earns at most the data timeout from now.
    let now = t0 + 12 * SECOND;
    c.send(&[b'a'; 100_000], now);
    assert_eq!(c.deadline(), now + DATA);
}

#[test]
fn a_trickled_body_is_cut_off_and_named_data_rate() {
    let t0 = Instant::now();
    let mut c = client(Duration::ZERO, t0);
    c.send(ENVELOPE, t0);
    c.send(b"DATA\r\n", t0);
    let mut now = t0;
    while now < c.deadline() {
        now += SECOND;
        c.send(b"a", now);
    }
    assert!(
        now <= t0 + DATA + SECOND,
        "cut off {:?} after DATA",
        now - t0
    );
    let mut out = Vec::new();
    assert_eq!(c.s.time_out(&mut out), Rule::DataRate);
    assert!(out.starts_with(b"421 4.4.2 mx.test"));
}

#[test]
fn a_body_above_the_rate_never_runs_out() {
    let t0 = Instant::now();
    let mut c = client(Duration::ZERO, t0);
    c.send(ENVELOPE, t0);
    c.send(b"DATA\r\n", t0);
    // 150 octets a second against 100/s, for three data timeouts.
    let mut line = [b'a'; 150];
    line[148..].copy_from_slice(b"\r\n");
    let mut now = t0;
    for _ in 0..60 {
        now += SECOND;
        c.send(&line, now);
        assert!(c.deadline() > now + 10 * SECOND);
    }
    let replies = c.send(b".\r\n", now);
    assert_eq!(replies, "250 2.0.0 Ok: queued as QID\r\n");
}

#[test]
fn bdat_chunks_share_one_body_deadline() {
    let t0 = Instant::now();
    let mut c = client(Duration::ZERO, t0);
    c.send(ENVELOPE, t0);
    let mut now = t0;
    // One octet per chunk, a chunk a second: the lines between the chunks
    // do not give the body fresh time.
    while now < c.deadline() {
        now += SECOND;
        c.send(b"BDAT 1\r\na", now);
    }
    assert!(now <= t0 + DATA + 2 * SECOND, "{:?}", now - t0);
    assert_eq!(c.time_out(), Rule::DataRate);
}

#[test]
fn the_wait_after_a_message_starts_at_the_spools_answer() {
    let t0 = Instant::now();
    let mut c = client(Duration::ZERO, t0);
    c.send(ENVELOPE, t0);
    let (table, mut out) = (table(), Vec::new());
    let input = b"DATA\r\nhi\r\n.\r\n";
    let (mut pos, mut event) = (0, Event::NeedInput);
    while event != Event::MessageReady {
        let (n, e) = c.s.feed(&input[pos..], t0, &table, &mut out);
        (pos, event) = (pos + n, e);
    }
    // The spool takes longer than the command timeout.
    let answered = t0 + COMMAND + 10 * SECOND;
    c.s.spool_done(Some("QID"), &mut out);
    c.send(b"", answered);
    assert_eq!(c.deadline(), answered + COMMAND);
}

#[test]
fn the_handshake_is_due_a_command_timeout_after_the_220() {
    let t0 = Instant::now();
    let config = SessionConfig {
        starttls: true,
        ..(*config(Duration::ZERO)).clone()
    };
    let mut s = Session::new(Arc::new(config), t0);
    s.greet(t0, &mut Vec::new());
    let (table, mut out) = (table(), Vec::new());
    let at = t0 + 7 * SECOND;
    let input = b"EHLO c\r\nSTARTTLS\r\n";
    let (mut pos, mut event) = (0, Event::NeedInput);
    while event != Event::StartTls {
        let (n, e) = s.feed(&input[pos..], at, &table, &mut out);
        (pos, event) = (pos + n, e);
    }
    assert_eq!(s.deadline(), at + COMMAND);
    s.feed(b"", at + 20 * SECOND, &table, &mut out);
    assert_eq!(
        s.deadline(),
        at + COMMAND,
        "handshake octets do not move it"
    );
    s.start_tls(at + 21 * SECOND);
    assert_eq!(s.deadline(), at + 21 * SECOND + COMMAND);
}

#[test]
fn the_greeting_waits_for_the_delay_and_talkers_are_refused() {
    let t0 = Instant::now();
    let delay = 1500 * Duration::from_millis(1);
    let mut c = client(delay, t0);
    assert!(c.s.awaits_greeting());
    assert_eq!(c.deadline(), t0 + delay);
    let (table, mut out) = (table(), Vec::new());
    assert_eq!(
        c.s.feed(b"EHLO c\r\n", t0, &table, &mut out),
        (0, Event::NeedInput),
        "input before the greeting is not the session's"
    );
    assert!(out.is_empty());
    c.s.refuse_early_talker(&mut out);
    assert_eq!(
        out,
        b"554 5.5.1 mx.test Error: talking before the greeting\r\n"
    );
    assert_eq!(c.s.feed(b"", t0, &table, &mut out).1, Event::Close);
}

#[test]
fn the_delayed_greeting_starts_the_first_wait() {
    let t0 = Instant::now();
    let mut c = client(2 * SECOND, t0);
    let mut out = Vec::new();
    c.s.greeting_due(t0 + 3 * SECOND, &mut out);
    assert_eq!(out, b"220 mx.test ESMTP mxgate\r\n");
    assert!(!c.s.awaits_greeting());
    assert_eq!(c.deadline(), t0 + 3 * SECOND + COMMAND);
    c.s.greeting_due(t0 + 4 * SECOND, &mut out);
    assert_eq!(out.len(), 26, "greets once");
    let replies = c.send(b"EHLO c\r\n", t0 + 4 * SECOND);
    assert!(replies.starts_with("250-mx.test"), "{replies}");
}

#[test]
fn without_a_delay_the_greeting_goes_out_at_once() {
    let t0 = Instant::now();
    let mut s = Session::new(config(Duration::ZERO), t0);
    let mut out = Vec::new();
    s.greet(t0, &mut out);
    assert_eq!(out, b"220 mx.test ESMTP mxgate\r\n");
    assert!(!s.awaits_greeting());
}

#[test]
fn shutdown_before_the_greeting_says_421() {
    let t0 = Instant::now();
    let mut c = client(SECOND, t0);
    let mut out = Vec::new();
    assert!(c.s.shut_down(&mut out));
    assert!(out.starts_with(b"421 4.3.2"));
}
