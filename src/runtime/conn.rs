//! One client connection: its socket, its [`Session`], and the few bytes in
//! flight between them.
//!
//! Owns moving bytes: reading (into the worker's scratch buffer), feeding
//! the session, collecting body slices, handing finished messages to the
//! spool, and writing replies. Makes no protocol decision: every reply comes
//! from the session. An idle connection holds no buffer: `pending`, `out`
//! and `body` are allocated only while they hold bytes.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::mail_log;
use super::timer::{Entry, TimerWheel};
use crate::metrics::Recorder;
use crate::proto::{Event, Session, Tally};
use crate::recipients::{SharedTable, Table};
use crate::spool::{Message, SpoolError, SpoolLink};

/// Octets read from one connection per wake-up before others get a turn.
const READ_BUDGET: usize = 256 << 10;
/// Unsent reply octets beyond which the connection stops reading (the
/// client is not reading its replies).
const OUT_CAP: usize = 64 << 10;

/// Why a session ended, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The session asked to close (QUIT, or 421 after a shutdown).
    Closed,
    /// The client closed its end.
    Disconnected,
    /// A read or write failed (reset by peer, …).
    Reset,
    /// No input before the session's deadline.
    TimedOut,
    /// Server shutdown: the session got its 421.
    Shutdown,
    /// The drain timeout ran out during shutdown.
    Aborted,
    /// A bug: driving the session panicked.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Closed => "closed",
            Outcome::Disconnected => "disconnected",
            Outcome::Reset => "reset",
            Outcome::TimedOut => "timed-out",
            Outcome::Shutdown => "shutdown",
            Outcome::Aborted => "aborted",
            Outcome::Failed => "internal-error",
        }
    }
}

/// What the worker does with a connection after driving it.
#[derive(Debug, PartialEq, Eq)]
pub enum Drive {
    /// Nothing to do until the next readiness event or spool completion.
    Wait,
    /// Input may be left in the socket: drive again on the next turn.
    Again,
    /// Remove the connection.
    Close(Outcome),
}

/// Per-drive context lent by the worker.
pub struct Cx<'w> {
    pub now: Instant,
    pub table: &'w Table,
    pub link: &'w SpoolLink,
    /// Replies written during this drive, not yet sent.
    pub out: &'w mut Vec<u8>,
    /// Identifies this connection in spool completions.
    pub ticket: u64,
    pub metrics: &'w mut Recorder,
}

/// What one feed of the session ended with.
enum Fed {
    NeedInput,
    Paused,
    Close,
}

/// Counters for the session's log line.
#[derive(Debug, Default)]
pub struct SessionLog {
    pub accepted_rcpts: u32,
    /// RCPT commands answered with anything but 250.
    pub rejected_rcpts: u32,
    pub messages: u32,
    pub spool_failures: u32,
    /// Queue IDs of the first few messages, space-separated.
    pub queue_ids: String,
}

/// Queue IDs listed in one log line; later ones are only counted.
const LOGGED_IDS: u32 = 8;

/// What a connection needs from its socket: reads and writes that say
/// `WouldBlock` when they cannot go on. The epoll backend uses a mio
/// `TcpStream`; the io_uring backend a socket whose octets move through the
/// ring.
pub trait Socket: Read + Write {
    /// True when a read that came back short or `WouldBlock` means nothing
    /// more can be read until the backend reports new input, as
    /// edge-triggered epoll does for every arrival: the connection then
    /// skips the read that could only say `WouldBlock` (one system call per
    /// message that waited for the spool). A ring socket's reads are memory
    /// copies, and its `WouldBlock` may also mean "replies backed up".
    const EMPTY_UNTIL_REPORTED: bool = false;

    /// Frees buffers that hold nothing (an idle connection holds none).
    fn trim(&mut self) {}
    /// The session ended but the backend still finishes the connection's
    /// I/O (its last replies may linger).
    fn closing(&self) -> bool {
        false
    }
}

impl Socket for TcpStream {
    const EMPTY_UNTIL_REPORTED: bool = true;
}

pub struct Conn<S = TcpStream> {
    pub stream: S,
    pub session: Session,
    pub peer: IpAddr,
    pub generation: u32,
    /// Tick of this connection's live timer-wheel entry.
    pub timer_tick: u64,
    /// The connection is on the worker's ready list.
    pub in_ready: bool,
    /// A message is at the spool; the session is paused until it answers.
    pub awaiting_spool: bool,
    /// The client closed its sending side (a read returned 0).
    eof: bool,
    /// The last read emptied the socket and no input was reported since
    /// (see [`Socket::EMPTY_UNTIL_REPORTED`]).
    drained: bool,
    /// epoll reported the peer's hang-up: read until 0, even after a short read.
    hang_up: bool,
    /// Input the session has not consumed: a partial line, or what arrived
    /// behind a message that went to the spool.
    pending: Vec<u8>,
    /// `pending` holds octets the session has not been shown yet.
    pending_unseen: bool,
    /// Replies the socket did not take yet.
    out: Vec<u8>,
    /// The message being received.
    body: Vec<u8>,
    pub log: SessionLog,
    /// For the metrics: when the session started, when its last message's
    /// data ended (its input arrived), and how long after that it went to
    /// the spool (nanoseconds, saturating).
    opened: Instant,
    end_of_data: Instant,
    submit_lag_ns: u32,
}

impl<S: Socket> Conn<S> {
    pub fn new(stream: S, session: Session, peer: IpAddr, generation: u32) -> Conn<S> {
        let opened = Instant::now();
        Conn {
            stream,
            session,
            peer,
            generation,
            timer_tick: u64::MAX,
            in_ready: false,
            awaiting_spool: false,
            eof: false,
            drained: false,
            hang_up: false,
            pending: Vec::new(),
            pending_unseen: false,
            out: Vec::new(),
            body: Vec::new(),
            log: SessionLog::default(),
            opened,
            end_of_data: opened,
            submit_lag_ns: 0,
        }
    }

    /// The backend reported input for this connection: read again.
    pub fn input_reported(&mut self) {
        self.drained = false;
    }

    /// epoll reported that the peer hung up or the socket failed.
    pub fn hang_up_seen(&mut self) {
        self.hang_up = true;
        self.drained = false;
    }

    /// Sends what is queued, then reads and feeds the session until the
    /// socket is drained, the budget is spent, or the session must wait.
    /// Replies are flushed once at the end, so pipelined commands are
    /// answered in one write.
    pub fn drive(&mut self, scratch: &mut [u8], cx: &mut Cx) -> Drive {
        let mut budget = READ_BUDGET;
        let verdict = loop {
            if self.awaiting_spool || self.out.len() >= OUT_CAP {
                break Drive::Wait;
            }
            match self.read_and_feed(scratch, cx) {
                Step::Fed(n) if n >= budget => break Drive::Again,
                Step::Fed(n) => budget -= n,
                Step::Blocked => break Drive::Wait,
                Step::End(outcome) => break Drive::Close(outcome),
            }
        };
        match self.flush(cx.out) {
            Ok(()) => verdict,
            Err(_) => Drive::Close(Outcome::Reset),
        }
    }

    /// One read (if the socket is open and there is room) and one feed of
    /// everything held back plus what was read.
    fn read_and_feed(&mut self, scratch: &mut [u8], cx: &mut Cx) -> Step {
        // The scratch buffer is two reads long: held-back input (at most one
        // read's worth plus a line) and a fresh read fit together.
        let held = self.pending.len();
        scratch[..held].copy_from_slice(&self.pending);
        let room_end = scratch.len().min(held + scratch.len() / 2);
        let mut blocked = S::EMPTY_UNTIL_REPORTED && self.drained;
        let mut read = 0;
        if !self.eof && !blocked && room_end > held {
            match read_retrying(&mut self.stream, &mut scratch[held..room_end]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    read = n;
                    // A short read emptied the socket: the next arrival is a
                    // new edge, so skip the read that would say WouldBlock.
                    blocked = held + n < room_end && !self.hang_up;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => blocked = true,
                Err(_) => return Step::End(Outcome::Reset),
            }
        }
        self.drained = blocked;
        if read == 0 && !self.pending_unseen {
            return if self.eof {
                Step::End(Outcome::Disconnected)
            } else {
                Step::Blocked
            };
        }
        self.pending_unseen = false;
        cx.metrics.received(read);
        let input = &scratch[..held + read];
        let mut tally = Tally::default();
        let (consumed, fed) = self.feed(input, cx, &mut tally);
        self.count_decisions(&tally, cx);
        self.pending.clear();
        self.pending.extend_from_slice(&input[consumed..]);
        match fed {
            Fed::Close => Step::End(Outcome::Closed),
            Fed::Paused => {
                self.pending_unseen = true;
                Step::Blocked
            }
            Fed::NeedInput if blocked => Step::Blocked,
            Fed::NeedInput => Step::Fed(read.max(1)),
        }
    }

    /// Runs the session over `input` until it needs more, pauses or closes.
    fn feed(&mut self, input: &[u8], cx: &mut Cx, tally: &mut Tally) -> (usize, Fed) {
        let mut pos = 0;
        loop {
            let (n, event) =
                self.session
                    .feed_tallied(&input[pos..], cx.now, cx.table, cx.out, tally);
            pos += n;
            match event {
                Event::NeedInput => return (pos, Fed::NeedInput),
                Event::Envelope => self.body.clear(),
                Event::Body(bytes) => self.body.extend_from_slice(bytes),
                Event::MessageReady => {
                    self.submit(cx);
                    return (pos, Fed::Paused);
                }
                Event::MessageDiscarded => self.body = Vec::new(),
                Event::Paused => return (pos, Fed::Paused),
                Event::Close => return (pos, Fed::Close),
            }
        }
    }

    /// Takes what the session decided during the feed into the log and the
    /// metrics; every reply of the feed was written by now.
    fn count_decisions(&mut self, tally: &Tally, cx: &mut Cx) {
        if tally.is_empty() {
            return;
        }
        self.log.rejected_rcpts = self.log.rejected_rcpts.wrapping_add(tally.rejected_rcpts());
        cx.metrics.tally(tally, cx.now.elapsed());
        mail_log::rejections(self.peer, tally.rejections());
    }

    /// Hands the finished message to the spool; the session stays paused
    /// until [`Conn::spool_done`].
    fn submit(&mut self, cx: &mut Cx) {
        let envelope = self.session.envelope().clone();
        self.log.accepted_rcpts += u32::try_from(envelope.rcpts.len()).unwrap_or(u32::MAX);
        let message = Message {
            peer: self.peer,
            helo: self.session.helo().to_vec(),
            envelope,
            body: std::mem::take(&mut self.body),
        };
        self.end_of_data = cx.now;
        let lag = cx.now.elapsed().as_nanos();
        self.submit_lag_ns = u32::try_from(lag).unwrap_or(u32::MAX);
        cx.link.submit(cx.ticket, message);
        self.awaiting_spool = true;
    }

    /// The spool answered for the message this connection submitted: the
    /// session writes the 250 (or 451) and input held back is fed again.
    pub fn spool_done(
        &mut self,
        result: Result<String, SpoolError>,
        out: &mut Vec<u8>,
        metrics: &mut Recorder,
    ) {
        self.awaiting_spool = false;
        self.pending_unseen = true;
        let end_of_data = self.end_of_data.elapsed();
        let lag = Duration::from_nanos(u64::from(self.submit_lag_ns));
        metrics.message(result.is_ok(), end_of_data, end_of_data.saturating_sub(lag));
        let mut tally = Tally::default();
        match result {
            Ok(id) => {
                mail_log::queued(self.peer, self.session.queued(&id));
                self.session.spool_done(Some(&id), out);
                self.log.messages += 1;
                if self.log.messages <= LOGGED_IDS {
                    if !self.log.queue_ids.is_empty() {
                        self.log.queue_ids.push(' ');
                    }
                    self.log.queue_ids.push_str(&id);
                }
            }
            Err(err) => {
                tracing::warn!(client = %self.peer, error = %err, "spool failed; replying 451");
                self.log.spool_failures += 1;
                self.session.spool_done_tallied(None, out, &mut tally);
            }
        }
        mail_log::rejections(self.peer, tally.rejections());
    }

    /// Sends `out` (replies of this drive) after anything still queued;
    /// keeps what the socket does not take. Frees the queue once empty.
    pub fn flush(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if self.out.is_empty() {
            let sent = write_some(&mut self.stream, out)?;
            self.out.extend_from_slice(&out[sent..]);
        } else {
            self.out.extend_from_slice(out);
            let sent = write_some(&mut self.stream, &self.out)?;
            self.out.drain(..sent);
            if self.out.is_empty() {
                self.out = Vec::new();
            }
        }
        out.clear();
        Ok(())
    }

    /// Frees buffers that hold nothing, so an idle session costs only the
    /// struct.
    pub fn trim(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = Vec::new();
        }
        self.stream.trim();
    }

    /// Whether a spool completion for `generation` answers the message
    /// this connection waits for (and not one of an earlier occupant of
    /// its slot).
    pub fn awaits_spool(&self, generation: u32) -> bool {
        self.generation == generation && self.awaiting_spool
    }

    /// Whether a fired timer entry is this connection's live one.
    pub fn owns_timer(&self, entry: &Entry) -> bool {
        self.generation == entry.generation && self.timer_tick == entry.tick
    }

    /// Handles this connection's live timer firing: returns true when the
    /// session timed out (its 421 is in `out`) and must close; otherwise
    /// the timer is set again for the deadline.
    pub fn timer_fired(
        &mut self,
        key: usize,
        now: Instant,
        wheel: &mut TimerWheel,
        out: &mut Vec<u8>,
    ) -> bool {
        let deadline = self.session.deadline();
        if deadline <= now && !self.awaiting_spool {
            self.session.time_out(out);
            return true;
        }
        // Our own spool is never the client's timeout.
        let at = deadline.max(now + Duration::from_secs(1));
        self.timer_tick = wheel.schedule(key, self.generation, at);
        false
    }

    /// Last words: flush what we can before the socket is dropped (closing
    /// it sends the FIN). Replies the socket cannot take now are lost; the
    /// session is over.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let _ = self.flush(out);
        out.clear();
    }

    /// The one log line of a finished session; also counts it in the
    /// metrics.
    pub fn log_end(&self, outcome: Outcome, metrics: &mut Recorder) {
        metrics.session_closed(outcome.as_str(), self.opened.elapsed());
        tracing::info!(
            client = %self.peer,
            helo = %String::from_utf8_lossy(self.session.helo()),
            accepted_rcpts = self.log.accepted_rcpts,
            rejected_rcpts = self.log.rejected_rcpts,
            messages = self.log.messages,
            spool_failures = self.log.spool_failures,
            outcome = outcome.as_str(),
            queue_ids = %self.log.queue_ids,
            "session end"
        );
    }
}

/// What a worker lends to drive one of its connections.
pub struct Lent<'w> {
    pub table: &'w SharedTable,
    pub link: &'w SpoolLink,
    pub out: &'w mut Vec<u8>,
    pub scratch: &'w mut [u8],
    pub wheel: &'w mut TimerWheel,
    /// Connections to drive again on the next turn.
    pub ready: &'w mut Vec<usize>,
    pub metrics: &'w mut Recorder,
}

/// Drives connection `key` once, the same way on every backend: the
/// session runs over the input (a panic closes only this connection, not
/// the worker's thousands of others), the connection is queued for another
/// turn if its read budget ran out, empty buffers are freed and the timer
/// follows the deadline. Returns the outcome when the connection must close.
pub fn drive_once<S: Socket>(
    conn: &mut Conn<S>,
    key: usize,
    now: Instant,
    lent: Lent,
) -> Option<Outcome> {
    let table = lent.table.load();
    let mut cx = Cx {
        now,
        table: &table,
        link: lent.link,
        out: lent.out,
        ticket: ticket(key, conn.generation),
        metrics: lent.metrics,
    };
    let scratch = lent.scratch;
    let verdict = panic::catch_unwind(AssertUnwindSafe(|| conn.drive(scratch, &mut cx)));
    let verdict = verdict.unwrap_or_else(|_| {
        tracing::error!(client = %conn.peer, "session panicked; connection dropped");
        cx.out.clear();
        Drive::Close(Outcome::Failed)
    });
    match verdict {
        Drive::Wait => {}
        Drive::Again if conn.in_ready => {}
        Drive::Again => {
            conn.in_ready = true;
            lent.ready.push(key);
        }
        Drive::Close(outcome) => return Some(outcome),
    }
    conn.trim();
    let deadline = conn.session.deadline();
    if lent.wheel.tick_of(deadline) < conn.timer_tick {
        conn.timer_tick = lent.wheel.schedule(key, conn.generation, deadline);
    }
    None
}

/// Names a connection (slot `key`, occupant `generation`) in spool
/// completions.
pub fn ticket(key: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | key as u64
}

pub fn unticket(ticket: u64) -> (usize, u32) {
    ((ticket & 0xffff_ffff) as usize, (ticket >> 32) as u32)
}

/// What one read-and-feed step came to.
enum Step {
    /// Fed this many fresh octets; more may be waiting.
    Fed(usize),
    /// Nothing more to do until readiness or the spool.
    Blocked,
    End(Outcome),
}

fn read_retrying(stream: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Writes as much of `buf` as the socket takes; `WouldBlock` is not an error.
fn write_some(stream: &mut impl Write, buf: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < buf.len() {
        match stream.write(&buf[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip() {
        for (key, generation) in [(0, 0), (5, 1), (123_456, u32::MAX)] {
            assert_eq!(unticket(ticket(key, generation)), (key, generation));
        }
    }

    /// A socket the test fills, counting reads; like a `TcpStream`, it
    /// says `WouldBlock` when empty and new input is reported separately.
    #[derive(Default)]
    struct Scripted {
        input: Vec<u8>,
        reads: usize,
        replies: Vec<u8>,
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            if self.input.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.input.len());
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input.drain(..n);
            Ok(n)
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.replies.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Socket for Scripted {
        const EMPTY_UNTIL_REPORTED: bool = true;
    }

    /// The read that follows a spool answer is skipped when the last read
    /// emptied the socket and nothing was reported since: held-back input
    /// is still answered, and reported input is read again.
    #[test]
    fn no_read_of_a_drained_socket_until_input_is_reported() {
        use crate::proto::SessionConfig;
        use crate::recipients::TableOptions;
        use crate::spool::Spool;
        use std::sync::Arc;

        let spool = Spool::discard_for_tests();
        let link = spool.link(Box::new(|| {}));
        let table = Table::parse(b"alice@example.com\n", TableOptions::default()).unwrap();
        let config = Arc::new(SessionConfig {
            hostname: "mx.test".into(),
            max_message_size: 1 << 20,
            max_recipients: 100,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
        });
        let now = Instant::now();
        let peer = IpAddr::from([127, 0, 0, 1]);
        let mut conn = Conn::new(Scripted::default(), Session::new(config, now), peer, 0);
        let (mut scratch, mut out) = (vec![0; 8192], Vec::new());
        let mut metrics = Recorder::detached();
        let mut drive = |conn: &mut Conn<Scripted>, out: &mut Vec<u8>, metrics: &mut Recorder| {
            let mut cx = Cx {
                now,
                table: &table,
                link: &link,
                out,
                ticket: 0,
                metrics,
            };
            conn.drive(&mut scratch, &mut cx)
        };

        conn.stream.input = b"EHLO c\r\nMAIL FROM:<s@example.net>\r\n\
            RCPT TO:<alice@example.com>\r\nDATA\r\nbody\r\n.\r\nQUIT\r\n"
            .to_vec();
        assert!(matches!(
            drive(&mut conn, &mut out, &mut metrics),
            Drive::Wait
        ));
        assert!(conn.awaiting_spool, "the message went to the spool");
        let reads = conn.stream.reads;

        let done = link.try_complete().expect("discard answers at once");
        conn.spool_done(done.result, &mut out, &mut metrics);
        let verdict = drive(&mut conn, &mut out, &mut metrics);
        assert!(matches!(verdict, Drive::Close(_)));
        assert_eq!(conn.stream.reads, reads, "read a socket known to be empty");
        let replies = String::from_utf8_lossy(&conn.stream.replies).into_owned();
        assert!(replies.contains("250 2.0.0 Ok: queued as "), "{replies}");
        assert!(replies.ends_with("221 2.0.0 Bye\r\n"), "{replies}");

        conn.input_reported();
        let _ = drive(&mut conn, &mut out, &mut metrics);
        assert!(conn.stream.reads > reads, "reported input was not read");
    }

    /// An idle session costs this struct (plus its slab slot) and nothing
    /// else: the buffers are empty `Vec`s. Target: ≤ 1 KiB per idle session.
    #[test]
    fn an_idle_connection_is_a_small_struct() {
        assert!(
            std::mem::size_of::<Conn>() <= 512,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }
}
