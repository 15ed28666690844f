//! The per-connection SMTP state machine (RFC 5321 server side, with
//! PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8 and CHUNKING).
//!
//! Owns: the order of commands, the envelope, body bookkeeping (size limit,
//! bare CR/LF verdict), which reply goes out when, the timeout deadline, and
//! the record of each refusal for the mail log (in the driver's `Tally`).
//! Does not own: sockets, clocks, files or the spool. The driver feeds bytes
//! and the current time, writes out what lands in `out`, and reacts to the
//! [`Event`]s (collect `Body` slices, spool on `MessageReady` and report with
//! [`Session::spool_done`], close on `Close`). A driver may pace it
//! ([`Session::pace`]): it then stops before each command line until fed
//! again (the error tarpit's hold).
//!
//! Invariants: replies are appended to `out` in command order (a message's
//! queued/451 reply holds back everything after it: `feed` returns `Paused`
//! until `spool_done`); the unconsumed tail a driver must keep after
//! `NeedInput` is under [`scan::MAX_LINE`] octets in every state, whatever
//! the client sends (input that arrives while `Paused` is the driver's to
//! hold or stop reading); nothing is allocated per byte.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::recipients::address::Path;
use crate::recipients::Table;
use crate::shield;
use crate::spool::SpoolSpace;

use super::command::{self, Command, MailParams, Verb};
use super::reply::{self, Reply};
use super::scan::{self, DataScanner, DataStep, Line};
use super::tally::{RcptOutcome, Tally};
use super::transaction::{path_bytes, Transaction};
use super::verdict::{Queued, Stage};

/// Per-listener settings a session needs. Shared by all sessions of a worker.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Name used in the greeting, EHLO reply and Received line.
    pub hostname: String,
    /// Largest message accepted, in octets (advertised as SIZE).
    pub max_message_size: usize,
    /// Recipients per transaction before 452 4.5.3 (never below 100).
    pub max_recipients: usize,
    /// Waiting for a command (RFC 5321 §4.5.3.2: 5 minutes).
    pub command_timeout: Duration,
    /// Waiting for the next DATA/BDAT block (RFC 5321 §4.5.3.2: 3 minutes).
    pub data_timeout: Duration,
    /// How long the 220 is withheld (zero: greet at once).
    pub greet_delay: Duration,
    /// Octets per second a DATA/BDAT body must average (0: no rate).
    pub min_data_rate: u32,
    /// STARTTLS is offered (a certificate is configured).
    pub starttls: bool,
    /// The spool file system's space, read at MAIL FROM: 452 4.3.1 while
    /// it is short (`--spool-min-free`). Kept up to date by the spool.
    pub spool_space: SpoolSpace,
}

impl SessionConfig {
    /// A configuration with the command line's defaults: 25 MiB messages,
    /// 100 recipients, RFC 5321's timeouts, no greeting delay, a 500
    /// octets/s data rate, no STARTTLS, no spool space monitor. Tests and
    /// benches change what they need with `..SessionConfig::new(name)`.
    pub fn new(hostname: impl Into<String>) -> SessionConfig {
        SessionConfig {
            hostname: hostname.into(),
            max_message_size: 25 << 20,
            max_recipients: 100,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            greet_delay: Duration::ZERO,
            min_data_rate: 500,
            starttls: false,
            spool_space: SpoolSpace::default(),
        }
    }
}

/// How the body bytes of a message are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// DATA: still dot-stuffed, every line ends in CRLF.
    Data,
    /// BDAT chunks: raw, unstuffed; may lack a final CRLF.
    Bdat,
}

/// The envelope of the message being received, final once
/// [`Event::Envelope`] has been returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Reverse path without angle brackets; empty for the null sender `<>`.
    pub mail_from: Vec<u8>,
    /// Accepted forward paths, without angle brackets, in order.
    pub rcpts: Vec<Vec<u8>>,
    /// `BODY=8BITMIME` was given.
    pub body_8bitmime: bool,
    /// `SMTPUTF8` was given.
    pub smtputf8: bool,
    /// DATA or BDAT; `None` until the body starts.
    pub body_kind: Option<BodyKind>,
}

/// What the driver must do next. Returned by [`Session::feed`] together with
/// the number of input octets consumed.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Everything usable was consumed: keep the unconsumed tail (bounded, at
    /// most ~1 KiB) and feed it again, followed by new bytes.
    NeedInput,
    /// A body starts; [`Session::envelope`] is final for this message.
    Envelope,
    /// Body octets, borrowed from the input, to append to the message.
    Body(&'a [u8]),
    /// The body is complete and valid: spool it, then report with
    /// [`Session::spool_done`]. Until then `feed` returns [`Event::Paused`].
    MessageReady,
    /// The body was refused (size, bare CR/LF) or abandoned (RSET, HELO or
    /// EHLO between BDAT chunks); the reply is already written. Drop what
    /// was collected.
    MessageDiscarded,
    /// Waiting for [`Session::spool_done`] or [`Session::rcpt_checked`];
    /// nothing was consumed.
    Paused,
    /// The table accepted the recipient of the RCPT just consumed (the last
    /// of [`Session::envelope`]'s), and recipients are checked (see
    /// [`Session::check_rcpts`]): its 250 waits for
    /// [`Session::rcpt_checked`]; until then `feed` returns `Paused`.
    RcptReady,
    /// STARTTLS was answered with 220 and its line consumed: write out the
    /// replies, discard every octet after that line (held or not yet
    /// read), do the TLS handshake (within [`Session::deadline`]), then
    /// call [`Session::start_tls`]. Until then the session takes no input.
    StartTls,
    /// Flush the output, then close the connection.
    Close,
    /// A paced session ([`Session::pace`]) has a command line to read and
    /// waits for the driver's leave: feeding it again reads that line.
    CommandReady,
}

/// Where the session is in the conversation.
#[derive(Debug, Clone, Copy)]
enum State {
    /// The 220 is withheld for the greet delay ([`clock`]).
    Greeting,
    /// Waiting for a command line.
    Command,
    /// Discarding an over-long command line up to its LF.
    LongLine,
    /// Inside a DATA body.
    Data(DataScanner),
    /// Inside an accepted BDAT chunk of `size` octets.
    Chunk {
        size: u64,
        remaining: u64,
        last: bool,
    },
    /// Discarding the octets of a refused BDAT chunk, then `reply`.
    SkipChunk {
        remaining: u64,
        reply: Reply,
    },
    /// `MessageReady` was returned; waiting for `spool_done`.
    Spooling,
    /// `StartTls` was returned; waiting for `start_tls`.
    Handshake,
    /// `RcptReady` was returned; waiting for `rcpt_checked`.
    RcptCheck,
    Closed,
}

/// Whether the session stops before its command lines ([`Session::pace`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    Off,
    /// Stop before the next complete command line.
    Ask,
    /// The driver let the next line through.
    Go,
}

/// How far one step of [`Session::feed`] got: the input octets it consumed,
/// and the event that ends the call, if any (else the next step follows).
type Progress<'a> = (usize, Option<Event<'a>>);

/// No recipients, for refusals that concern none.
const NOBODY: &[&[u8]] = &[];

/// One SMTP server session.
pub struct Session {
    config: Arc<SessionConfig>,
    state: State,
    helo: Vec<u8>,
    transaction: Transaction,
    /// When the session gives up on the client; see [`clock`].
    deadline: Instant,
    since: clock::Since,
    shutting_down: bool,
    /// The session runs inside TLS (after [`Session::start_tls`]).
    in_tls: bool,
    pace: Pace,
    /// Recipients the table accepts are checked before their 250.
    check_rcpts: bool,
}

impl Session {
    /// A new session; call [`Session::greet`] first.
    pub fn new(config: Arc<SessionConfig>, now: Instant) -> Session {
        let deadline = shield::timing::later(now, config.command_timeout);
        Session {
            config,
            state: State::Command,
            helo: Vec::new(),
            transaction: Transaction::default(),
            deadline,
            since: clock::Since::Wait,
            shutting_down: false,
            in_tls: false,
            pace: Pace::Off,
            check_rcpts: false,
        }
    }

    /// Writes the 220 greeting, or, with a greet delay, withholds it until
    /// [`Session::greeting_due`] at [`Session::deadline`].
    pub fn greet(&mut self, now: Instant, out: &mut Vec<u8>) {
        if !self.withhold_greeting(now) {
            reply::write_greeting(&self.config.hostname, out);
        }
    }

    /// Processes input up to the next event; replies go to `out`.
    ///
    /// Returns the octets consumed; the driver presents the rest again,
    /// followed by new bytes (also after `Paused` and `spool_done`, even if
    /// no new bytes arrived).
    pub fn feed<'a>(
        &mut self,
        input: &'a [u8],
        now: Instant,
        table: &Table,
        out: &mut Vec<u8>,
    ) -> (usize, Event<'a>) {
        self.feed_tallied(input, now, table, out, &mut Tally::default())
    }

    /// [`Session::feed`], also counting what it decides (commands by verb,
    /// RCPT outcomes, refused bodies) into the driver's `tally`. The tally
    /// lives with the driver, not in the session, so an idle session does
    /// not pay for it.
    pub fn feed_tallied<'a>(
        &mut self,
        input: &'a [u8],
        now: Instant,
        table: &Table,
        out: &mut Vec<u8>,
        tally: &mut Tally,
    ) -> (usize, Event<'a>) {
        self.restart_clock(now);
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            let replied = out.len();
            let before = self.step_start();
            let (consumed, event) = match self.state {
                State::Closed => (0, Some(Event::Close)),
                // Nothing before the greeting is session input: the driver
                // refuses it (`refuse_early_talker`).
                State::Greeting => (0, Some(Event::NeedInput)),
                State::Spooling | State::RcptCheck => (0, Some(Event::Paused)),
                // Nothing before the handshake ends is session input.
                State::Handshake => (0, Some(Event::NeedInput)),
                State::Command => self.command_step(rest, table, out, tally),
                State::LongLine => self.long_line_step(rest, out),
                State::Data(scanner) => self.data_step(scanner, rest, out, tally),
                State::Chunk {
                    size,
                    remaining,
                    last,
                } => self.chunk_step(size, remaining, last, rest, out, tally),
                State::SkipChunk { remaining, reply } => {
                    self.skip_chunk_step(remaining, reply, rest, out, tally)
                }
            };
            self.track(before, consumed, rest.len() - consumed, now);
            pos += consumed;
            tally.replied(&out[replied..]);
            if let Some(event) = event {
                return (pos, event);
            }
        }
    }

    /// From now on the session stops before each command line it could
    /// read, with [`Event::CommandReady`], and reads it when fed again: the
    /// driver decides when each command is answered (the error tarpit).
    /// Called again while stopped, the session asks again.
    pub fn pace(&mut self) {
        self.pace = Pace::Ask;
    }

    /// A paced session's stop before a complete command line, or its leave
    /// to read it (and stop before the next one).
    fn pace_step(&mut self) -> Option<Event<'static>> {
        match self.pace {
            Pace::Off => None,
            Pace::Ask => {
                self.pace = Pace::Go;
                Some(Event::CommandReady)
            }
            Pace::Go => {
                self.pace = Pace::Ask;
                None
            }
        }
    }

    /// Answers the next command line of `rest`, if complete.
    #[inline]
    fn command_step(
        &mut self,
        rest: &[u8],
        table: &Table,
        out: &mut Vec<u8>,
        tally: &mut Tally,
    ) -> Progress<'static> {
        if self.shutting_down && !self.transaction.is_open() {
            reply::write_shutting_down(&self.config.hostname, out);
            self.state = State::Closed;
            return (0, None);
        }
        let line = scan::command_line(rest);
        if line != Line::Partial {
            if let Some(stop) = self.pace_step() {
                return (0, Some(stop));
            }
        }
        match line {
            Line::Partial => (0, Some(Event::NeedInput)),
            Line::TooLong => {
                self.state = State::LongLine;
                (scan::MAX_LINE, None)
            }
            Line::Complete(n) => {
                let line = scan::trim_line(&rest[..n]);
                (n, self.command(line, table, out, tally))
            }
        }
    }

    /// Skips the rest of an over-long line, then answers it with 500.
    #[inline]
    fn long_line_step(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Progress<'static> {
        match memchr::memchr(b'\n', rest) {
            None => (rest.len(), Some(Event::NeedInput)),
            Some(i) => {
                Reply::LineTooLong.write(out);
                self.state = State::Command;
                (i + 1, None)
            }
        }
    }

    /// Passes on the DATA body in `rest` up to its end, then ends it.
    #[inline]
    fn data_step<'a>(
        &mut self,
        mut scanner: DataScanner,
        rest: &'a [u8],
        out: &mut Vec<u8>,
        tally: &mut Tally,
    ) -> Progress<'a> {
        let step = scanner.step(rest);
        self.state = State::Data(scanner);
        let (body, end) = match step {
            DataStep::NeedMore => return (0, Some(Event::NeedInput)),
            DataStep::Body(n) => (n, None),
            DataStep::End { body, consumed } => (body, Some(consumed)),
        };
        if body > 0 {
            // The terminator, if any, is seen again next round.
            let taken = self.transaction.take_body(&rest[..body], &self.config);
            (body, taken.then_some(Event::Body(&rest[..body])))
        } else if let Some(consumed) = end {
            (consumed, Some(self.end_of_body(out, tally)))
        } else {
            (0, None)
        }
    }

    /// Passes on the part of an accepted BDAT chunk in `rest`; after the
    /// chunk, ends the message (LAST) or acknowledges the chunk.
    #[inline]
    fn chunk_step<'a>(
        &mut self,
        size: u64,
        remaining: u64,
        last: bool,
        rest: &'a [u8],
        out: &mut Vec<u8>,
        tally: &mut Tally,
    ) -> Progress<'a> {
        if remaining == 0 {
            if last {
                return (0, Some(self.end_of_body(out, tally)));
            }
            reply::write_chunk_received(size, out);
            self.state = State::Command;
            return (0, None);
        }
        let Some(n) = chunk_part(rest, remaining) else {
            return (0, Some(Event::NeedInput));
        };
        self.state = State::Chunk {
            size,
            remaining: remaining - n as u64,
            last,
        };
        let taken = self.transaction.take_body(&rest[..n], &self.config);
        (n, taken.then_some(Event::Body(&rest[..n])))
    }

    /// Discards the part of a refused BDAT chunk in `rest`; after the
    /// chunk, answers it with `reply`.
    #[inline]
    fn skip_chunk_step(
        &mut self,
        remaining: u64,
        reply: Reply,
        rest: &[u8],
        out: &mut Vec<u8>,
        tally: &mut Tally,
    ) -> Progress<'static> {
        if remaining == 0 {
            reply.write(out);
            self.reject_message(Stage::Data, reply, tally);
            self.state = State::Command;
            return (0, None);
        }
        let Some(n) = chunk_part(rest, remaining) else {
            return (0, Some(Event::NeedInput));
        };
        self.state = State::SkipChunk {
            remaining: remaining - n as u64,
            reply,
        };
        (n, None)
    }

    /// The envelope of the current message.
    pub fn envelope(&self) -> &Envelope {
        &self.transaction.envelope
    }

    /// The HELO/EHLO argument, as given (empty before one).
    pub fn helo(&self) -> &[u8] {
        &self.helo
    }

    /// Reports the spool outcome of the message after [`Event::MessageReady`]:
    /// `Some(id)` → `250 2.0.0 Ok: queued as <id>`, `None` → `451 4.3.0`.
    /// Ignored at any other time.
    pub fn spool_done(&mut self, queue_id: Option<&str>, out: &mut Vec<u8>) {
        self.spool_done_tallied(queue_id, out, &mut Tally::default());
    }

    /// [`Session::spool_done`], also recording a 451 in the driver's
    /// `tally` for the mail log.
    pub fn spool_done_tallied(
        &mut self,
        queue_id: Option<&str>,
        out: &mut Vec<u8>,
        tally: &mut Tally,
    ) {
        if !matches!(self.state, State::Spooling) {
            return;
        }
        match queue_id {
            Some(id) => reply::write_queued(id, out),
            None => {
                Reply::SpoolFailed.write(out);
                self.reject_message(Stage::EndOfMessage, Reply::SpoolFailed, tally);
            }
        }
        self.reset_transaction();
    }

    /// The milters' verdict on the message after [`Event::MessageReady`]
    /// when it is not to be spooled: `reply` (whole, CRLF included) goes
    /// out, recorded in `tally` as a refusal and an error if it is one
    /// (not for a discard's 250). Ignored at any other time.
    pub fn check_done(&mut self, reply: &[u8], out: &mut Vec<u8>, tally: &mut Tally) {
        if !matches!(self.state, State::Spooling) {
            return;
        }
        out.extend_from_slice(reply);
        tally.replied(reply);
        if !reply.starts_with(b"2") {
            let rcpts = &self.transaction.envelope.rcpts;
            let rejections = tally.rejections_mut();
            rejections.push(Stage::EndOfMessage, reply, &self.helo, self.sender(), rcpts);
        }
        self.reset_transaction();
    }

    /// The message waiting for the spool (after [`Event::MessageReady`],
    /// before [`Session::spool_done`]) as the mail log shows it once queued
    /// as `queue_id`.
    pub fn queued<'a>(&'a self, queue_id: &'a str) -> Queued<'a> {
        let envelope = &self.transaction.envelope;
        Queued {
            queue_id,
            helo: &self.helo,
            from: &envelope.mail_from,
            rcpts: envelope.rcpts.len(),
            size: self.transaction.received(),
        }
    }

    /// The client opened with a PROXY header it may not send: writes
    /// `500 5.5.2 …`; the driver closes.
    pub fn refuse_proxy_header(&mut self, out: &mut Vec<u8>) {
        reply::write_untrusted_proxy(&self.config.hostname, out);
        self.state = State::Closed;
    }

    /// A client over a per-client limit, known only once a balancer's PROXY
    /// header named it: `421 4.7.0 … too many connections` and close.
    pub fn refuse_client(&mut self, client: IpAddr, out: &mut Vec<u8>) {
        reply::write_too_many_from(&self.config.hostname, client, out);
        self.state = State::Closed;
    }

    /// The client reached the hard error limit: `421 4.7.0 … too many
    /// errors`; the driver closes.
    pub fn refuse_errors(&mut self, out: &mut Vec<u8>) {
        reply::write_too_many_errors(&self.config.hostname, out);
        self.state = State::Closed;
    }

    /// Server shutdown. An idle session gets `421 4.3.2` and `true` (close
    /// now); one inside a transaction finishes it, then gets the 421.
    pub fn shut_down(&mut self, out: &mut Vec<u8>) -> bool {
        self.shutting_down = true;
        match self.state {
            State::Closed => true,
            State::Greeting | State::Command | State::LongLine | State::Handshake
                if !self.transaction.is_open() =>
            {
                reply::write_shutting_down(&self.config.hostname, out);
                self.state = State::Closed;
                true
            }
            _ => false,
        }
    }

    /// Answers one command line; returns the event it raises, if any.
    fn command(
        &mut self,
        line: &[u8],
        table: &Table,
        out: &mut Vec<u8>,
        tally: &mut Tally,
    ) -> Option<Event<'static>> {
        let (verb, args) = command::split(line);
        tally.command(verb);
        if verb == Verb::Starttls {
            return self.starttls(args, out);
        }
        let command = match command::parse_args(verb, args) {
            Ok(command) => command,
            Err(e) => {
                if verb == Verb::Rcpt {
                    tally.rcpt(RcptOutcome::Syntax);
                }
                e.reply().write(out);
                self.reject_unparsed(verb, e.reply(), tally);
                return None;
            }
        };
        match command {
            Command::Ehlo(name) => return self.hello(name, true, out),
            Command::Helo(name) => return self.hello(name, false, out),
            Command::Mail { path, params } => self.mail(path, params, out, tally),
            Command::Rcpt(path) => return self.rcpt(path, table, out, tally),
            Command::Data => return self.data(out, tally),
            Command::Bdat { size, last } => return self.bdat(size, last),
            Command::Rset => {
                let aborted = self.abort_transaction();
                Reply::Ok.write(out);
                return aborted;
            }
            Command::Noop => Reply::Ok.write(out),
            Command::Vrfy => Reply::Vrfy.write(out),
            Command::Expn => Reply::Expn.write(out),
            Command::Help => Reply::Help.write(out),
            // Answered above, before its arguments are parsed.
            Command::StartTls => return self.starttls(args, out),
            Command::Quit => {
                Reply::Bye.write(out);
                self.state = State::Closed;
                return Some(Event::Close);
            }
        }
        None
    }

    /// MAIL FROM: opens the transaction, or says why not.
    fn mail(&mut self, path: Path<'_>, params: MailParams, out: &mut Vec<u8>, tally: &mut Tally) {
        let reply = if self.helo.is_empty() {
            Reply::NeedHelo
        } else {
            self.transaction.mail(path, params, &self.config)
        };
        reply.write(out);
        if reply != Reply::SenderOk {
            let from = Some(path_bytes(&path));
            tally
                .rejections_mut()
                .push(Stage::Mail, reply.text(), &self.helo, from, NOBODY);
        }
    }

    /// RCPT TO: answers from the table, counting how; a recipient it
    /// accepts waits for the checks, if recipients are checked.
    fn rcpt(
        &mut self,
        path: Path<'_>,
        table: &Table,
        out: &mut Vec<u8>,
        tally: &mut Tally,
    ) -> Option<Event<'static>> {
        let start = out.len();
        let outcome = self.transaction.rcpt(path, table, &self.config, out);
        // A transaction already discarded asks the checks nothing more.
        let check = self.check_rcpts && !self.transaction.discarded;
        if outcome == RcptOutcome::Accepted && check {
            out.truncate(start);
            self.state = State::RcptCheck;
            return Some(Event::RcptReady);
        }
        tally.rcpt(outcome);
        if outcome != RcptOutcome::Accepted {
            let (reply, to) = (&out[start..], [path_bytes(&path)]);
            let from = self.sender();
            let rejections = tally.rejections_mut();
            rejections.push(Stage::Rcpt, reply, &self.helo, from, &to);
        }
        None
    }

    /// Whether, from now on, a recipient the table accepts waits for
    /// [`Session::rcpt_checked`] before its 250 ([`Event::RcptReady`]).
    pub fn check_rcpts(&mut self, on: bool) {
        self.check_rcpts = on;
    }

    /// The checks' verdict on the recipient after [`Event::RcptReady`]:
    /// `None` accepts it (250); `Some(reply)` (whole, CRLF included)
    /// refuses it (an error in `tally`), and it leaves the envelope.
    /// Ignored at any other time.
    pub fn rcpt_checked(&mut self, refusal: Option<&[u8]>, out: &mut Vec<u8>, tally: &mut Tally) {
        if !matches!(self.state, State::RcptCheck) {
            return;
        }
        self.state = State::Command;
        let Some(reply) = refusal else {
            Reply::RecipientOk.write(out);
            tally.rcpt(RcptOutcome::Accepted);
            return;
        };
        out.extend_from_slice(reply);
        tally.replied(reply);
        tally.rcpt(RcptOutcome::Milter);
        let to = self.transaction.envelope.rcpts.pop().unwrap_or_default();
        let from = self.sender();
        let rejections = tally.rejections_mut();
        rejections.push(Stage::Rcpt, reply, &self.helo, from, &[&to[..]]);
    }

    /// A check asked for the transaction's message to be thrown away (a
    /// milter's discard at RCPT, as Postfix takes it): later recipients
    /// are not checked, and its end of data reports
    /// [`Session::transaction_discarded`] for the driver to answer 250
    /// without spooling. Lasts until the transaction ends.
    pub fn discard_transaction(&mut self) {
        if self.transaction.is_open() {
            self.transaction.discarded = true;
        }
    }

    /// Whether the transaction's message is to be thrown away
    /// ([`Session::discard_transaction`]).
    pub fn transaction_discarded(&self) -> bool {
        self.transaction.discarded
    }

    /// Records the refusal of a MAIL, RCPT, DATA or BDAT line whose
    /// arguments did not parse (other verbs are not mail refusals).
    fn reject_unparsed(&self, verb: Verb, reply: Reply, tally: &mut Tally) {
        let (stage, from) = match verb {
            Verb::Mail => (Stage::Mail, None),
            Verb::Rcpt => (Stage::Rcpt, self.sender()),
            Verb::Data | Verb::Bdat => (Stage::Data, self.sender()),
            _ => return,
        };
        tally
            .rejections_mut()
            .push(stage, reply.text(), &self.helo, from, NOBODY);
    }

    /// Records the refusal of the transaction's message, or of its DATA or
    /// BDAT command, with the whole envelope.
    fn reject_message(&self, stage: Stage, reply: Reply, tally: &mut Tally) {
        let rcpts = &self.transaction.envelope.rcpts;
        tally
            .rejections_mut()
            .push(stage, reply.text(), &self.helo, self.sender(), rcpts);
    }

    /// The transaction's sender, if MAIL was accepted.
    fn sender(&self) -> Option<&[u8]> {
        let open = self.transaction.is_open();
        open.then_some(&self.transaction.envelope.mail_from[..])
    }

    /// EHLO (`extended`) or HELO: ends any transaction, keeps the name.
    fn hello(&mut self, name: &[u8], extended: bool, out: &mut Vec<u8>) -> Option<Event<'static>> {
        let aborted = self.abort_transaction();
        self.helo.clear();
        self.helo.extend_from_slice(name);
        if extended {
            let max = self.config.max_message_size;
            let starttls = self.config.starttls && !self.in_tls;
            reply::write_ehlo(&self.config.hostname, max, starttls, out);
        } else {
            reply::write_helo(&self.config.hostname, out);
        }
        aborted
    }

    /// STARTTLS (RFC 3207): 220 and [`Event::StartTls`], or why not, in
    /// DESIGN.md's precedence: not offered, already in TLS (whatever
    /// follows), an argument, a transaction in progress.
    fn starttls(&mut self, args: &[u8], out: &mut Vec<u8>) -> Option<Event<'static>> {
        let refusal = if !self.config.starttls {
            Some(Reply::TlsNotOffered)
        } else if self.in_tls {
            Some(Reply::TlsActive)
        } else if let Err(e) = command::parse_args(Verb::Starttls, args) {
            Some(e.reply())
        } else if self.transaction.is_open() {
            Some(Reply::TlsInTransaction)
        } else {
            None
        };
        if let Some(reply) = refusal {
            reply.write(out);
            return None;
        }
        Reply::ReadyForTls.write(out);
        self.state = State::Handshake;
        Some(Event::StartTls)
    }

    /// The TLS handshake after [`Event::StartTls`] succeeded: the session
    /// starts over inside TLS (RFC 3207 §4.2: no HELO, no transaction), and
    /// EHLO no longer offers STARTTLS. Ignored at any other time.
    pub fn start_tls(&mut self, now: Instant) {
        if !matches!(self.state, State::Handshake) {
            return;
        }
        self.helo.clear();
        self.reset_transaction();
        self.in_tls = true;
        self.wait_for_command(now);
    }

    /// Whether the session runs inside TLS.
    pub fn in_tls(&self) -> bool {
        self.in_tls
    }

    /// DATA: 354 and into the body, or the reason why not.
    fn data(&mut self, out: &mut Vec<u8>, tally: &mut Tally) -> Option<Event<'static>> {
        if let Some(reply) = self.transaction.body_refusal(BodyKind::Data) {
            reply.write(out);
            self.reject_message(Stage::Data, reply, tally);
            return None;
        }
        Reply::StartData.write(out);
        self.state = State::Data(DataScanner::new());
        self.transaction.start_body(BodyKind::Data);
        Some(Event::Envelope)
    }

    /// BDAT: into the chunk (the first one starts the body), or skip the
    /// chunk and then answer why not.
    fn bdat(&mut self, size: u64, last: bool) -> Option<Event<'static>> {
        if let Some(reply) = self.transaction.body_refusal(BodyKind::Bdat) {
            self.state = State::SkipChunk {
                remaining: size,
                reply,
            };
            return None;
        }
        let first = !self.transaction.in_body();
        self.state = State::Chunk {
            size,
            remaining: size,
            last,
        };
        if first {
            self.transaction.start_body(BodyKind::Bdat);
            return Some(Event::Envelope);
        }
        None
    }

    /// The body ended: refuse it, or hand it to the spool.
    fn end_of_body(&mut self, out: &mut Vec<u8>, tally: &mut Tally) -> Event<'static> {
        match self.transaction.finish_body(&self.config) {
            Ok(()) => {
                self.state = State::Spooling;
                Event::MessageReady
            }
            Err(refusal) => {
                refusal.reply().write(out);
                tally.refused(refusal);
                self.reject_message(Stage::EndOfMessage, refusal.reply(), tally);
                self.reset_transaction();
                Event::MessageDiscarded
            }
        }
    }

    /// RSET, HELO or EHLO: ends the transaction. Between BDAT chunks the
    /// driver already holds part of a body, so it is told to drop it.
    fn abort_transaction(&mut self) -> Option<Event<'static>> {
        let in_body = self.transaction.in_body();
        self.reset_transaction();
        in_body.then_some(Event::MessageDiscarded)
    }

    fn reset_transaction(&mut self) {
        self.transaction.reset();
        self.state = State::Command;
    }
}

mod clock;

/// How many octets of `rest` belong to a chunk with `remaining` octets left;
/// `None` if there are none yet.
fn chunk_part(rest: &[u8], remaining: u64) -> Option<usize> {
    let n = rest
        .len()
        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
    (n > 0).then_some(n)
}
