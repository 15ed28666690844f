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
use std::time::Instant;

use mio::net::TcpStream;

use crate::proto::{Event, Session};
use crate::recipients::Table;
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
    pub messages: u32,
    pub spool_failures: u32,
    /// Queue IDs of the first few messages, space-separated.
    pub queue_ids: String,
}

/// Queue IDs listed in one log line; later ones are only counted.
const LOGGED_IDS: u32 = 8;

pub struct Conn {
    pub stream: TcpStream,
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
}

impl Conn {
    pub fn new(stream: TcpStream, session: Session, peer: IpAddr, generation: u32) -> Conn {
        Conn {
            stream,
            session,
            peer,
            generation,
            timer_tick: u64::MAX,
            in_ready: false,
            awaiting_spool: false,
            eof: false,
            hang_up: false,
            pending: Vec::new(),
            pending_unseen: false,
            out: Vec::new(),
            body: Vec::new(),
            log: SessionLog::default(),
        }
    }

    /// epoll reported that the peer hung up or the socket failed.
    pub fn hang_up_seen(&mut self) {
        self.hang_up = true;
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
        let mut blocked = false;
        let mut read = 0;
        if !self.eof && room_end > held {
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
        if read == 0 && !self.pending_unseen {
            return if self.eof {
                Step::End(Outcome::Disconnected)
            } else {
                Step::Blocked
            };
        }
        self.pending_unseen = false;
        let input = &scratch[..held + read];
        let (consumed, fed) = self.feed(input, cx);
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
    fn feed(&mut self, input: &[u8], cx: &mut Cx) -> (usize, Fed) {
        let mut pos = 0;
        loop {
            let (n, event) = self.session.feed(&input[pos..], cx.now, cx.table, cx.out);
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
        cx.link.submit(cx.ticket, message);
        self.awaiting_spool = true;
    }

    /// The spool answered for the message this connection submitted: the
    /// session writes the 250 (or 451) and input held back is fed again.
    pub fn spool_done(&mut self, result: Result<String, SpoolError>, out: &mut Vec<u8>) {
        self.awaiting_spool = false;
        self.pending_unseen = true;
        match result {
            Ok(id) => {
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
                self.session.spool_done(None, out);
            }
        }
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
    }

    /// Last words: flush what we can before the socket is dropped (closing
    /// it sends the FIN). Replies the socket cannot take now are lost; the
    /// session is over.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let _ = self.flush(out);
        out.clear();
    }

    /// The one log line of a finished session.
    pub fn log_end(&self, outcome: Outcome) {
        tracing::info!(
            client = %self.peer,
            helo = %String::from_utf8_lossy(self.session.helo()),
            accepted_rcpts = self.log.accepted_rcpts,
            messages = self.log.messages,
            spool_failures = self.log.spool_failures,
            outcome = outcome.as_str(),
            queue_ids = %self.log.queue_ids,
            "session end"
        );
    }
}

/// What one read-and-feed step came to.
enum Step {
    /// Fed this many fresh octets; more may be waiting.
    Fed(usize),
    /// Nothing more to do until readiness or the spool.
    Blocked,
    End(Outcome),
}

fn read_retrying(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Writes as much of `buf` as the socket takes; `WouldBlock` is not an error.
fn write_some(stream: &mut TcpStream, buf: &[u8]) -> io::Result<usize> {
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
