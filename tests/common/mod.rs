//! A sans-IO test driver for `proto::Session`: feeds client bytes in chosen
//! pieces the way a runtime would (keeping the unconsumed tail), collects the
//! replies, body slices and message outcomes, and answers `MessageReady` with
//! a fixed queue id (or a spool failure).
//!
//! Owns nothing but test plumbing; the transcripts live in the test files.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Instant;

use mxgate::proto::{Envelope, Event, Session, SessionConfig};
use mxgate::recipients::{Table, TableOptions};

pub const HOST: &str = "mx.test";
pub const QUEUE_ID: &str = "QID42";
/// The most unconsumed input a driver may ever have to keep.
pub const MAX_TAIL: usize = 1024;
/// The message size limit the transcripts and property tests run with.
pub const MAX: usize = 10_000;
/// The EHLO every scripted session opens with.
pub const EHLO: &[u8] = b"EHLO client.example\r\n";

/// [`EHLO`], then `commands`.
pub fn session(commands: &[u8]) -> Vec<u8> {
    [EHLO, commands].concat()
}

/// The recipient table every transcript runs against.
pub fn table() -> Table {
    let text = b"# test table\nalice@example.com\nbob@example.com OK\n@catchall.example\n";
    let options = TableOptions {
        fold_local_case: true,
        delimiter: Some(b'+'),
    };
    Table::parse(text, options).expect("test table parses")
}

pub fn config(max_message_size: usize) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        max_message_size,
        ..SessionConfig::new(HOST)
    })
}

/// How a message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ready,
    Discarded,
}

/// One message as the driver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub envelope: Envelope,
    pub body: Vec<u8>,
    pub outcome: Outcome,
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct Run {
    pub replies: Vec<u8>,
    pub messages: Vec<Message>,
    pub closed: bool,
    /// Largest unconsumed tail the driver had to keep after `NeedInput`.
    pub max_tail: usize,
    /// Stops of a paced session before a command line.
    pub stops: usize,
}

impl Run {
    /// The reply lines, without CRLF.
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.replies)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// A driver around one session.
pub struct Driver {
    pub session: Session,
    pub table: Table,
    pub spool_ok: bool,
    max_message_size: usize,
    pending: Vec<u8>,
    current: Option<Message>,
    pub run: Run,
}

impl Driver {
    pub fn new(max_message_size: usize, spool_ok: bool) -> Driver {
        let now = Instant::now();
        let mut session = Session::new(config(max_message_size), now);
        let mut replies = Vec::new();
        session.greet(now, &mut replies);
        Driver {
            session,
            table: table(),
            spool_ok,
            max_message_size,
            pending: Vec::new(),
            current: None,
            run: Run {
                replies,
                messages: Vec::new(),
                closed: false,
                max_tail: 0,
                stops: 0,
            },
        }
    }

    /// Delivers one read of client bytes and runs the session until it
    /// needs more input (or closes).
    pub fn read(&mut self, bytes: &[u8]) {
        if self.run.closed {
            return;
        }
        self.pending.extend_from_slice(bytes);
        loop {
            let (n, event) = self.session.feed(
                &self.pending,
                Instant::now(),
                &self.table,
                &mut self.run.replies,
            );
            assert!(n <= self.pending.len());
            let finished = match event {
                Event::NeedInput => {
                    self.pending.drain(..n);
                    self.run.max_tail = self.run.max_tail.max(self.pending.len());
                    return;
                }
                Event::Envelope => {
                    let envelope = self.session.envelope().clone();
                    self.current = Some(Message {
                        envelope,
                        body: Vec::new(),
                        outcome: Outcome::Ready,
                    });
                    None
                }
                Event::Body(slice) => {
                    let message = self.current.as_mut().expect("Body after Envelope");
                    message.body.extend_from_slice(slice);
                    None
                }
                Event::MessageReady => Some(Outcome::Ready),
                Event::MessageDiscarded => Some(Outcome::Discarded),
                Event::Paused => panic!("Paused although spool_done was called"),
                // A paced session: let the line through.
                Event::CommandReady => {
                    self.run.stops += 1;
                    None
                }
                Event::RcptReady => panic!("recipients are not checked here"),
                Event::StartTls => {
                    // As a runtime would: the rest of the read is dropped
                    // and the handshake (here, none) starts the session over.
                    self.pending.clear();
                    self.session.start_tls(Instant::now());
                    return;
                }
                Event::Close => {
                    self.run.closed = true;
                    self.pending.drain(..n);
                    return;
                }
            };
            self.pending.drain(..n);
            if let Some(outcome) = finished {
                let mut message = self.current.take().expect("end after Envelope");
                if outcome == Outcome::Discarded {
                    // What was collected is dropped, as a runtime would; it
                    // depends on the read sizes, but must stay in bounds.
                    assert!(message.body.len() <= self.max_message_size);
                    message.body.clear();
                }
                message.outcome = outcome.clone();
                self.run.messages.push(message);
                if outcome == Outcome::Ready {
                    self.spool();
                }
            }
        }
    }

    /// Sends `octets` octets of `A` (no line end) in 64 KiB reads, checking
    /// that the driver never has to keep more than `max_tail` of them.
    pub fn flood(&mut self, octets: usize, max_tail: usize) {
        let piece = vec![b'A'; 64 * 1024];
        for _ in 0..octets / piece.len() {
            self.read(&piece);
            assert!(
                self.run.max_tail <= max_tail,
                "tail grew to {}",
                self.run.max_tail
            );
        }
    }

    fn spool(&mut self) {
        let (n, event) =
            self.session
                .feed(&self.pending, Instant::now(), &self.table, &mut Vec::new());
        assert_eq!(
            (n, event),
            (0, Event::Paused),
            "session must pause until spool_done"
        );
        let id = self.spool_ok.then_some(QUEUE_ID);
        self.session.spool_done(id, &mut self.run.replies);
    }
}

/// Runs `input` delivered in the pieces that `cuts` (sorted offsets) make.
pub fn run_cut(input: &[u8], cuts: &[usize], max_message_size: usize, spool_ok: bool) -> Run {
    let mut driver = Driver::new(max_message_size, spool_ok);
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        driver.read(&input[start..cut]);
        start = cut;
    }
    assert!(
        driver.run.max_tail <= MAX_TAIL,
        "tail grew to {}",
        driver.run.max_tail
    );
    driver.run
}

/// Runs `input` as one write, split in two at every offset, and one byte at
/// a time; asserts all runs agree and returns the single-write run.
pub fn run_every_split(input: &[u8], max_message_size: usize, spool_ok: bool) -> Run {
    let whole = run_cut(input, &[], max_message_size, spool_ok);
    for cut in 0..=input.len() {
        let split = run_cut(input, &[cut], max_message_size, spool_ok);
        assert_same(&whole, &split, &format!("split at {cut}"));
    }
    let bytes: Vec<usize> = (1..input.len()).collect();
    let trickle = run_cut(input, &bytes, max_message_size, spool_ok);
    assert_same(&whole, &trickle, "one byte at a time");
    let mut paced = Driver::new(max_message_size, spool_ok);
    paced.session.pace();
    paced.read(input);
    assert_same(&whole, &paced.run, "paced, as for the error tarpit");
    whole
}

pub fn assert_same(whole: &Run, other: &Run, how: &str) {
    assert_eq!(
        String::from_utf8_lossy(&whole.replies),
        String::from_utf8_lossy(&other.replies),
        "replies differ ({how})"
    );
    assert_eq!(whole.messages, other.messages, "messages differ ({how})");
    assert_eq!(whole.closed, other.closed, "close differs ({how})");
}

/// Asserts the reply lines start with `expected`, one for one.
pub fn assert_replies(run: &Run, expected: &[&str]) {
    let lines = run.lines();
    let ok = lines.len() == expected.len()
        && lines
            .iter()
            .zip(expected)
            .all(|(line, want)| line.starts_with(want));
    assert!(
        ok,
        "replies:\n{}\nexpected prefixes:\n{}",
        lines.join("\n"),
        expected.join("\n")
    );
}
