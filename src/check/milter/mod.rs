//! The sans-IO milter client (Sendmail milter protocol, version 6): one
//! [`Client`] per connection to one milter. Stages of a session go in
//! ([`Client::stage`]); the packets to send come out
//! ([`Client::poll_output`]); the milter's octets, split anywhere, go in
//! ([`Client::handle_input`]) and an [`Answer`] comes out, with the header
//! edits and quarantine a milter asks for at end of message collected in
//! [`Edits`]. The time is passed in; the client owns no socket and no
//! clock, and never decides what the SMTP client is told.
//!
//! Stages may be sent while earlier ones await their replies (pipelined):
//! a milter answers in order, so each final reply answers the oldest stage
//! due. A milter that refuses or accepts a stage for good answers none of
//! those sent after it (libmilter skips them), so such an answer with
//! stages still due ends the connection's use. Pipelining saves both sides
//! a wake-up per stage (clamav-milter alone, driven by a test client: 245
//! µs of CPU per message in lockstep, 175 µs pipelined).
//!
//! Invariants: a stage the milter declined in negotiation (`SMFIP_NO*`) is
//! never sent and one it asked not to answer (`SMFIP_NR_*`) is sent but not
//! waited for; modifications are taken only as replies to end of message;
//! a modification it did not negotiate, a reply out of place, a malformed
//! or oversized packet is a [`MilterError`], after which the client is
//! broken and its connection must be dropped.

mod packet;
pub mod reply;

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use packet::{Decoder, FrameError, MAX_PACKET};
pub use reply::{Reply, ReplyError};

/// The protocol version this client speaks.
pub const VERSION: u32 = 6;
/// The largest body chunk sent in one packet.
pub const BODY_CHUNK: usize = 65535;
/// Header edits taken from one milter for one message, and their octets:
/// beyond either, the milter is broken (memory stays bounded).
const MAX_EDITS: usize = 256;
const MAX_EDIT_OCTETS: usize = 256 << 10;

/// Actions offered to milters: add and change headers, quarantine.
pub mod action {
    pub const ADD_HEADERS: u32 = 0x01;
    pub const CHANGE_HEADERS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    pub const OFFERED: u32 = ADD_HEADERS | CHANGE_HEADERS | QUARANTINE;
}

/// Protocol steps a milter may decline (`NO_*`) or ask to leave unanswered
/// (`NR_*`).
pub mod step {
    pub const NO_CONNECT: u32 = 0x1;
    pub const NO_HELO: u32 = 0x2;
    pub const NO_MAIL: u32 = 0x4;
    pub const NO_RCPT: u32 = 0x8;
    pub const NO_BODY: u32 = 0x10;
    pub const NO_HEADERS: u32 = 0x20;
    pub const NO_EOH: u32 = 0x40;
    pub const NR_HEADER: u32 = 0x80;
    pub const NO_UNKNOWN: u32 = 0x100;
    pub const NO_DATA: u32 = 0x200;
    pub const NR_CONNECT: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x1_0000;
    pub const NR_UNKNOWN: u32 = 0x2_0000;
    pub const NR_EOH: u32 = 0x4_0000;
    pub const NR_BODY: u32 = 0x8_0000;
    pub const OFFERED: u32 = NO_CONNECT
        | NO_HELO
        | NO_MAIL
        | NO_RCPT
        | NO_BODY
        | NO_HEADERS
        | NO_EOH
        | NR_HEADER
        | NO_UNKNOWN
        | NO_DATA
        | NR_CONNECT
        | NR_HELO
        | NR_MAIL
        | NR_RCPT
        | NR_DATA
        | NR_UNKNOWN
        | NR_EOH
        | NR_BODY;
}

/// One stage of a session, as the milter is told of it.
#[derive(Debug, Clone, Copy)]
pub enum Stage<'a> {
    /// The client's name (or `[address]`) and address, if known.
    Connect {
        hostname: &'a str,
        addr: Option<SocketAddr>,
    },
    Helo(&'a str),
    /// The sender as `<address>`, and its ESMTP parameters.
    Mail(&'a str, &'a [&'a str]),
    /// One recipient as `<address>`, and its ESMTP parameters.
    Rcpt(&'a str, &'a [&'a str]),
    Data,
    /// One header; the value without the space after the colon, folded
    /// lines joined by `\n`.
    Header(&'a str, &'a [u8]),
    EndOfHeaders,
    /// At most [`BODY_CHUNK`] octets of the body (not dot-stuffed).
    Body(&'a [u8]),
    EndOfMessage,
}

impl Stage<'_> {
    /// The command octet, the step that skips it, the step that leaves it
    /// unanswered.
    fn command(&self) -> (u8, u32, u32) {
        match self {
            Stage::Connect { .. } => (b'C', step::NO_CONNECT, step::NR_CONNECT),
            Stage::Helo(_) => (b'H', step::NO_HELO, step::NR_HELO),
            Stage::Mail(..) => (b'M', step::NO_MAIL, step::NR_MAIL),
            Stage::Rcpt(..) => (b'R', step::NO_RCPT, step::NR_RCPT),
            Stage::Data => (b'T', step::NO_DATA, step::NR_DATA),
            Stage::Header(..) => (b'L', step::NO_HEADERS, step::NR_HEADER),
            Stage::EndOfHeaders => (b'N', step::NO_EOH, step::NR_EOH),
            Stage::Body(_) => (b'B', step::NO_BODY, step::NR_BODY),
            Stage::EndOfMessage => (b'E', 0, 0),
        }
    }
}

/// What a milter decided at a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Go on to the next stage (also: negotiation done, or a stage that is
    /// skipped or left unanswered).
    Continue,
    /// Accept: this milter wants no more stages of the message (of the
    /// session, at connect or HELO).
    Accept,
    /// Reject, with the milter's own SMTP reply if it sent one.
    Reject(Option<String>),
    /// Fail temporarily, with the milter's own SMTP reply if it sent one.
    Tempfail(Option<String>),
    /// Accept and throw the message away.
    Discard,
}

/// Where a milter asks a header to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// After the existing headers.
    Add { name: String, value: String },
    /// At this position among the existing headers (0: the top).
    Insert {
        index: u32,
        name: String,
        value: String,
    },
    /// Replace the `index`-th (from 1) header of this name; an empty value
    /// deletes it.
    Change {
        index: u32,
        name: String,
        value: String,
    },
}

impl HeaderEdit {
    fn octets(&self) -> usize {
        match self {
            HeaderEdit::Add { name, value }
            | HeaderEdit::Insert { name, value, .. }
            | HeaderEdit::Change { name, value, .. } => name.len() + value.len(),
        }
    }
}

/// The modifications a milter asked for at end of message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    pub headers: Vec<HeaderEdit>,
    /// The quarantine reason, if the milter asked for it.
    pub quarantine: Option<String>,
}

/// Why a milter connection cannot go on; every one drops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MilterError {
    Frame(FrameError),
    Reply(ReplyError),
    /// A reply that does not belong where it came (or came unasked).
    Unexpected(u8),
    /// A modification the milter did not negotiate.
    NotNegotiated(u8),
    /// A protocol version this client does not speak.
    Version(u32),
    /// More header edits than a message may get.
    TooManyEdits,
    /// No reply before the deadline.
    Timeout,
    /// The milter closed the connection while a reply was due.
    Closed,
}

impl fmt::Display for MilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MilterError::Frame(FrameError::Empty) => f.write_str("empty packet"),
            MilterError::Frame(FrameError::Oversized(len)) => {
                write!(f, "packet of {len} octets (limit {MAX_PACKET})")
            }
            MilterError::Reply(err) => err.fmt(f),
            MilterError::Unexpected(code) => {
                write!(
                    f,
                    "unexpected '{}' reply",
                    char::from(code).escape_default()
                )
            }
            MilterError::NotNegotiated(code) => write!(
                f,
                "'{}' modification not negotiated",
                char::from(code).escape_default()
            ),
            MilterError::Version(v) => write!(f, "protocol version {v} not supported"),
            MilterError::TooManyEdits => f.write_str("too many header edits"),
            MilterError::Timeout => f.write_str("timed out"),
            MilterError::Closed => f.write_str("connection closed mid-stream"),
        }
    }
}

/// What the client waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The answer to option negotiation.
    Negotiating,
    /// Nothing is due.
    Ready,
    /// Replies to `due` stages, the last of them end of message if
    /// `end_of_message` (where modifications may come first).
    Waiting { due: u32, end_of_message: bool },
    /// An error happened, or the milter answered for good with stages
    /// still due; nothing more is sent or taken.
    Broken,
}

/// Whether a stage needs its reply awaited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A reply is due: feed the milter's octets.
    Waiting,
    /// The stage was skipped or needs no reply.
    Done(Answer),
}

/// One connection to one milter, as bytes.
#[derive(Debug)]
pub struct Client {
    phase: Phase,
    decoder: Decoder,
    out: Vec<u8>,
    actions: u32,
    protocol: u32,
    timeout: Duration,
    deadline: Option<Instant>,
    edits: Edits,
}

impl Client {
    /// A client that opens with option negotiation: send its output, then
    /// feed input until the [`Answer::Continue`] that ends negotiation.
    pub fn new(timeout: Duration, now: Instant) -> Client {
        let mut out = Vec::new();
        let words = [VERSION, action::OFFERED, step::OFFERED].map(u32::to_be_bytes);
        packet::encode(&mut out, b'O', &[&words[0], &words[1], &words[2]]);
        Client {
            phase: Phase::Negotiating,
            decoder: Decoder::default(),
            out,
            actions: 0,
            protocol: 0,
            timeout,
            deadline: Some(now + timeout),
            edits: Edits::default(),
        }
    }

    /// Sends `stage`, preceded by its `macros` (name, value), after any
    /// still awaiting replies. Only once negotiated and not broken.
    pub fn stage(&mut self, stage: Stage, macros: &[(&str, &str)], now: Instant) -> Step {
        let (due, eom_sent) = match self.phase {
            Phase::Ready => (0, false),
            Phase::Waiting {
                due,
                end_of_message,
            } => (due, end_of_message),
            Phase::Negotiating | Phase::Broken => {
                debug_assert!(false, "a stage sent before negotiation or after a failure");
                // Overdue at once: the connection fails, not the session.
                self.deadline = Some(now);
                return Step::Waiting;
            }
        };
        debug_assert!(!eom_sent, "a stage sent after end of message");
        let (command, skip, no_reply) = stage.command();
        if self.protocol & skip != 0 {
            return Step::Done(Answer::Continue);
        }
        self.macros(command, macros);
        self.encode_stage(command, &stage);
        if self.protocol & no_reply != 0 {
            return Step::Done(Answer::Continue);
        }
        if command == b'E' {
            self.edits = Edits::default();
        }
        self.phase = Phase::Waiting {
            due: due + 1,
            end_of_message: command == b'E',
        };
        if due == 0 {
            self.deadline = Some(now + self.timeout);
        }
        Step::Waiting
    }

    fn macros(&mut self, command: u8, macros: &[(&str, &str)]) {
        if macros.is_empty() {
            return;
        }
        let mut data = vec![command];
        for (name, value) in macros {
            push_c_string(&mut data, name.as_bytes());
            push_c_string(&mut data, value.as_bytes());
        }
        packet::encode(&mut self.out, b'D', &[&data]);
    }

    fn encode_stage(&mut self, command: u8, stage: &Stage) {
        let mut data = Vec::new();
        match *stage {
            Stage::Connect { hostname, addr } => {
                push_c_string(&mut data, hostname.as_bytes());
                match addr {
                    Some(addr) => {
                        data.push(if addr.is_ipv4() { b'4' } else { b'6' });
                        data.extend_from_slice(&addr.port().to_be_bytes());
                        push_c_string(&mut data, addr.ip().to_string().as_bytes());
                    }
                    None => data.push(b'U'),
                }
            }
            Stage::Helo(name) => push_c_string(&mut data, name.as_bytes()),
            Stage::Mail(address, args) | Stage::Rcpt(address, args) => {
                push_c_string(&mut data, address.as_bytes());
                for arg in args {
                    push_c_string(&mut data, arg.as_bytes());
                }
            }
            Stage::Header(name, value) => {
                push_c_string(&mut data, name.as_bytes());
                push_c_string(&mut data, value);
            }
            Stage::Body(chunk) => {
                debug_assert!(chunk.len() <= BODY_CHUNK);
                return packet::encode(&mut self.out, command, &[chunk]);
            }
            Stage::Data | Stage::EndOfHeaders | Stage::EndOfMessage => {}
        }
        packet::encode(&mut self.out, command, &[&data]);
    }

    /// Ends the current message without its end (no reply): the milter
    /// forgets it and the connection stays usable for the next one.
    pub fn abort(&mut self) {
        if self.phase == Phase::Ready {
            packet::encode(&mut self.out, b'A', &[]);
        }
    }

    /// Ends the session: with `reuse`, the milter is told a new session
    /// follows on this connection (`K`, negotiation kept); else `Q`.
    pub fn quit(&mut self, reuse: bool) {
        if self.phase == Phase::Ready {
            packet::encode(&mut self.out, if reuse { b'K' } else { b'Q' }, &[]);
        }
    }

    /// Nothing is awaited: the connection is in step with the milter.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Whether replies are due.
    pub fn is_waiting(&self) -> bool {
        matches!(self.phase, Phase::Waiting { .. })
    }

    /// Octets to send to the milter.
    pub fn poll_output(&self) -> &[u8] {
        &self.out
    }

    /// The first `n` octets of [`Client::poll_output`] were sent.
    pub fn advance_output(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
    }

    /// When the awaited reply is overdue, if one is awaited.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The modifications of the last end of message (taken once).
    pub fn take_edits(&mut self) -> Edits {
        std::mem::take(&mut self.edits)
    }

    /// The deadline passed (`now` is at or after it): the client is broken.
    pub fn check_timeout(&mut self, now: Instant) -> Result<(), MilterError> {
        match self.deadline {
            Some(at) if now >= at => Err(self.fail(MilterError::Timeout)),
            _ => Ok(()),
        }
    }

    /// The milter closed its end: an error unless nothing was awaited.
    pub fn handle_eof(&mut self) -> Result<(), MilterError> {
        if self.phase == Phase::Ready && self.decoder.pending() == 0 {
            self.phase = Phase::Broken;
            return Ok(());
        }
        Err(self.fail(MilterError::Closed))
    }

    /// Takes octets from the milter (all of them); returns the answer once
    /// every stage due was answered with continue, or at the first other
    /// final answer.
    pub fn handle_input(
        &mut self,
        input: &[u8],
        now: Instant,
    ) -> Result<Option<Answer>, MilterError> {
        if self.phase == Phase::Broken {
            return Err(MilterError::Unexpected(input.first().copied().unwrap_or(0)));
        }
        self.decoder.extend(input);
        // The decoder lends the packet; it is put back after each one.
        let mut decoder = std::mem::take(&mut self.decoder);
        let result = self.take_packets(&mut decoder, now);
        self.decoder = decoder;
        result.map_err(|err| self.fail(err))
    }

    /// Judges the complete packets in `decoder` until a final answer.
    fn take_packets(
        &mut self,
        decoder: &mut Decoder,
        now: Instant,
    ) -> Result<Option<Answer>, MilterError> {
        while let Some((code, data)) = decoder.next_packet().map_err(MilterError::Frame)? {
            let reply = reply::decode(code, data).map_err(MilterError::Reply)?;
            let Some(answer) = self.take_reply(code, reply, now)? else {
                continue;
            };
            let (due, end_of_message) = match self.phase {
                Phase::Waiting {
                    due,
                    end_of_message,
                } => (due - 1, end_of_message),
                _ => (0, false),
            };
            if due > 0 && answer == Answer::Continue {
                self.phase = Phase::Waiting {
                    due,
                    end_of_message,
                };
                self.deadline = Some(now + self.timeout);
                continue;
            }
            self.deadline = None;
            if due > 0 {
                // The stages after it go unanswered: out of step for good.
                self.phase = Phase::Broken;
                return Ok(Some(answer));
            }
            self.phase = Phase::Ready;
            if decoder.pending() != 0 {
                // A milter speaks only when asked.
                return Err(MilterError::Unexpected(code));
            }
            return Ok(Some(answer));
        }
        Ok(None)
    }

    fn fail(&mut self, err: MilterError) -> MilterError {
        self.phase = Phase::Broken;
        self.deadline = None;
        err
    }

    /// Judges one reply in the current phase: a final answer, or `None`
    /// for progress and modifications.
    fn take_reply(
        &mut self,
        code: u8,
        reply: Reply,
        now: Instant,
    ) -> Result<Option<Answer>, MilterError> {
        let end_of_message = match self.phase {
            Phase::Negotiating => return self.negotiated(code, reply).map(Some),
            // Modifications come only before the verdict on the message.
            Phase::Waiting {
                due,
                end_of_message,
            } => due == 1 && end_of_message,
            Phase::Ready | Phase::Broken => return Err(MilterError::Unexpected(code)),
        };
        let answer = match reply {
            Reply::Accept => Answer::Accept,
            Reply::Continue => Answer::Continue,
            Reply::Reject => Answer::Reject(None),
            Reply::Tempfail | Reply::ConnFail => Answer::Tempfail(None),
            Reply::ReplyCode(text) if text.starts_with('5') => Answer::Reject(Some(text.into())),
            Reply::ReplyCode(text) => Answer::Tempfail(Some(text.into())),
            Reply::Discard => Answer::Discard,
            Reply::Progress => {
                self.deadline = Some(now + self.timeout);
                return Ok(None);
            }
            Reply::Negotiate { .. } | Reply::Skip => return Err(MilterError::Unexpected(code)),
            _ if !end_of_message => return Err(MilterError::Unexpected(code)),
            modification => {
                self.modify(code, modification)?;
                return Ok(None);
            }
        };
        Ok(Some(answer))
    }

    /// Whether the milter, as negotiated, answers RCPT: it neither
    /// declined the step nor asked to leave it unanswered (before
    /// negotiation: yes).
    pub fn answers_rcpt(&self) -> bool {
        self.protocol & (step::NO_RCPT | step::NR_RCPT) == 0
    }

    /// The answer to negotiation: what the milter declines or leaves
    /// unanswered, and the actions it may take, within what was offered.
    fn negotiated(&mut self, code: u8, reply: Reply) -> Result<Answer, MilterError> {
        let Reply::Negotiate {
            version,
            actions,
            protocol,
        } = reply
        else {
            return Err(MilterError::Unexpected(code));
        };
        if !(2..=VERSION).contains(&version) {
            return Err(MilterError::Version(version));
        }
        self.actions = actions & action::OFFERED;
        self.protocol = protocol & step::OFFERED;
        if version < 4 {
            // DATA came with version 4.
            self.protocol |= step::NO_DATA;
        }
        Ok(Answer::Continue)
    }

    fn modify(&mut self, code: u8, reply: Reply) -> Result<(), MilterError> {
        let needs = match reply {
            Reply::AddHeader { .. } | Reply::InsertHeader { .. } => action::ADD_HEADERS,
            Reply::ChangeHeader { .. } => action::CHANGE_HEADERS,
            Reply::Quarantine(_) => action::QUARANTINE,
            _ => 0,
        };
        if needs == 0 || self.actions & needs == 0 {
            return Err(MilterError::NotNegotiated(code));
        }
        let edit = match reply {
            Reply::AddHeader { name, value } => HeaderEdit::Add {
                name: name.into(),
                value: value.into(),
            },
            Reply::InsertHeader { index, name, value } => HeaderEdit::Insert {
                index,
                name: name.into(),
                value: value.into(),
            },
            Reply::ChangeHeader { index, name, value } => HeaderEdit::Change {
                index,
                name: name.into(),
                value: value.into(),
            },
            Reply::Quarantine(reason) => {
                self.edits.quarantine = Some(reason.into());
                return Ok(());
            }
            _ => return Err(MilterError::NotNegotiated(code)),
        };
        let octets: usize = self.edits.headers.iter().map(HeaderEdit::octets).sum();
        if self.edits.headers.len() >= MAX_EDITS || octets + edit.octets() > MAX_EDIT_OCTETS {
            return Err(MilterError::TooManyEdits);
        }
        self.edits.headers.push(edit);
        Ok(())
    }
}

fn push_c_string(out: &mut Vec<u8>, text: &[u8]) {
    // A NUL inside would end the string early on the milter's side.
    out.extend(text.iter().map(|&b| if b == 0 { b' ' } else { b }));
    out.push(0);
}

#[cfg(test)]
mod tests;
