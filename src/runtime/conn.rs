//! One client connection as bytes in and bytes out: its [`Session`], the
//! input it holds back, the replies not yet taken, and the message being
//! received.
//!
//! Owns turning octets into session input (in one place, [`Conn::feed`]:
//! a layer between bytes and session, such as TLS or a PROXY header
//! reader, goes there), collecting body slices, handing finished messages
//! to the spool, and the session's log line.
//!
//! After STARTTLS (the session's [`Event::StartTls`]) every octet that
//! came after the STARTTLS line is discarded, held or not (CVE-2011-0411),
//! and the connection runs in TLS mode: input goes through a boxed
//! [`TlsLayer`] (a plain connection pays one pointer for it) to the
//! session, and replies are encrypted into the layer, whose ciphertext is
//! then the connection's output; `held` then holds ciphertext the layer
//! could not take yet. A failed handshake ends the connection after the
//! layer's alert; [`Conn::log_end`] logs and counts it. Owns no socket and knows no
//! backend: a backend gives it what the kernel received
//! ([`Conn::handle_input`], [`Conn::handle_eof`]) and sends what
//! [`Conn::poll_output`] shows. Makes no protocol decision: every reply
//! comes from the session. An idle connection holds no buffer: `held`,
//! `out` and `body` hold heap memory only while they hold bytes.
//!
//! Before the session reads, the connection's [`Gate`]: a trusted
//! balancer's connection holds its input, without a greeting, until a
//! PROXY header is complete ([`crate::shield::proxy`]); the header's
//! address then becomes the client's ([`Conn::client_known`]) and the 220
//! goes out. A bad header, or none before the command timeout, closes
//! with no reply (the peer is a balancer, not a client). Any other
//! connection's first octets are looked at once: a PROXY header there gets
//! the session's 500 and the connection closes. With a greet delay the
//! session withholds its 220 ([`Session::awaits_greeting`]; behind a
//! balancer, from the header on): any input before it is refused as
//! early talking, and the timer sends the 220 when due.
//!
//! A client the shield scores has its session paced: before each command
//! line its errors are charged and its [`Tarpit`] says whether the line is
//! read now, held (the session reads nothing until the timer wheel lets
//! it go on), or refused with 421.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use rustls::ServerConfig;

use super::mail_log;
use super::spare;
use super::timer::{Expiry, TimerWheel};
use crate::check::Pool;
use crate::metrics::Recorder;
use crate::proto::reply::Reply;
use crate::proto::{Event, Printable, Session, Tally};
use crate::recipients::Table;
use crate::shield::proxy::{self, Flaw, Parse, Sniff};
use crate::shield::tarpit::{Leave, Tarpit};
use crate::shield::timing::Rule;
use crate::shield::{Admission, ClientLimits, Limit};
use crate::spool::{Message, SpoolError, SpoolLink};
use crate::tls::{Negotiated, State, TlsLayer};

/// Unsent reply octets beyond which the session takes no more input (the
/// client is not reading its replies).
const OUT_CAP: usize = 64 << 10;
/// Held-back input beyond which a backend stops receiving for the
/// connection (its message is at the spool, or its client does not read
/// replies). A backend that reads only when [`Conn::wants_input`] holds at
/// most one read and a line.
const HELD_CAP: usize = 256 << 10;
/// Octets of new input copied behind held-back input to complete it: more
/// than a command line (512) and its line end, far more than a data
/// terminator. The rest of the input is read in place.
const STITCH: usize = 1024;
/// Queue IDs listed in one log line; later ones are only counted.
const LOGGED_IDS: u32 = 8;

/// The `session end` line of `conn`, with `extra` fields at its end.
macro_rules! session_end {
    ($conn:expr, $outcome:expr $(, $key:ident = $($value:tt)+)?) => {
        tracing::info!(
            client = %$conn.peer,
            helo = %Printable($conn.session.helo()),
            accepted_rcpts = $conn.log.accepted_rcpts,
            rejected_rcpts = $conn.log.rejected_rcpts,
            messages = $conn.log.messages,
            spool_failures = $conn.log.spool_failures,
            milter_verdict = $conn.log.milter_verdict().map(tracing::field::display),
            outcome = $outcome.as_str(),
            queue_ids = %$conn.log.queue_ids(),
            $($key = $($value)+,)?
            "session end"
        )
    };
}

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
    /// The TLS handshake failed, or a TLS record after it.
    TlsFailed,
    /// The drain timeout ran out during shutdown.
    Aborted,
    /// A bug: driving the session panicked.
    Failed,
    /// A balancer sent a bad PROXY header (its reason is logged).
    ProxyInvalid,
    /// A balancer sent no PROXY header before the command timeout.
    ProxyMissing,
    /// A peer not trusted to send a PROXY header sent one.
    ProxyUntrusted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Closed => "closed",
            Outcome::Disconnected => "disconnected",
            Outcome::Reset => "reset",
            Outcome::TimedOut => "timed-out",
            Outcome::Shutdown => "shutdown",
            Outcome::TlsFailed => "tls-failed",
            Outcome::Aborted => "aborted",
            Outcome::Failed => "internal-error",
            Outcome::ProxyInvalid => "proxy-invalid",
            Outcome::ProxyMissing => "proxy-missing",
            Outcome::ProxyUntrusted => "proxy-untrusted",
        }
    }
}

/// What the worker lends a connection for one turn.
pub struct Cx<'w> {
    pub now: Instant,
    pub table: &'w Table,
    pub link: &'w SpoolLink,
    /// Identifies this connection in spool completions.
    pub ticket: u64,
    pub metrics: &'w mut Recorder,
    /// The TLS configuration, when STARTTLS is offered.
    pub tls: Option<&'w Arc<ServerConfig>>,
    /// The per-client limits, for a client known only from its PROXY header.
    pub clients: &'w ClientLimits,
    /// The worker's milter connections: a finished message goes there
    /// before the spool.
    pub checks: Option<&'w mut Pool>,
}

/// Counters for the session's log line.
#[derive(Debug, Default)]
pub struct SessionLog {
    pub accepted_rcpts: u32,
    /// RCPT commands answered with anything but 250.
    pub rejected_rcpts: u32,
    pub messages: u32,
    pub spool_failures: u32,
    /// What the line names beyond counts, boxed once there is any: an idle
    /// connection stays small.
    notes: Option<Box<LogNotes>>,
}

/// The names a session's log line carries.
#[derive(Debug, Default)]
struct LogNotes {
    /// Queue IDs of the first few messages, space-separated.
    queue_ids: String,
    /// The milters' last verdict.
    milter_verdict: Option<MilterVerdict>,
    /// The milter that discarded the transaction at RCPT.
    discarded_by: Option<String>,
}

impl SessionLog {
    /// A message was queued as `id`.
    fn queued(&mut self, id: &str) {
        self.messages += 1;
        if self.messages <= LOGGED_IDS {
            let ids = &mut self.notes.get_or_insert_with(Box::default).queue_ids;
            if !ids.is_empty() {
                ids.push(' ');
            }
            ids.push_str(id);
        }
    }

    fn queue_ids(&self) -> &str {
        self.notes.as_ref().map_or("", |notes| &notes.queue_ids)
    }

    fn milter_verdict(&self) -> Option<&MilterVerdict> {
        self.notes.as_ref()?.milter_verdict.as_ref()
    }
}

/// The milters' verdict on a message or recipient, for the log line:
/// `ACTION by MILTER`.
#[derive(Debug)]
pub struct MilterVerdict {
    pub action: &'static str,
    pub milter: String,
}

impl std::fmt::Display for MilterVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} by {}", self.action, self.milter)
    }
}

/// Who decided a check, for the log and the error score.
#[derive(Debug, Clone, Copy)]
pub struct Decided<'a> {
    pub milter: &'a str,
    pub action: &'static str,
    /// A milter's own verdict: its refusal counts toward the client's
    /// error score. Not for `--milter-default` after a milter failed (our
    /// fault, not the client's).
    pub clients_doing: bool,
}

/// Where a refusal's error is charged: the per-client limits, at `now`.
#[derive(Clone, Copy)]
pub struct Charge<'a> {
    pub clients: &'a ClientLimits,
    pub now: Instant,
}

/// What the milters decided, when the session answers it.
#[derive(Debug, Clone, Copy)]
pub enum Checked<'a> {
    /// On the recipient: refused with this reply, or accepted.
    Rcpt(Option<&'a [u8]>),
    /// On the recipient: accepted, and the transaction's message is to be
    /// thrown away at its end of data (a discard at RCPT).
    RcptDiscard,
    /// On the message (queued as this id, had it been): this reply (a
    /// refusal, or a discard's 250).
    Message(&'a [u8], Option<&'a str>),
}

/// What stands between a connection's input and its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// A trusted balancer's connection: a PROXY header comes first, and
    /// the greeting after it.
    Proxy,
    /// Any other connection, until its first octets show they are not a
    /// PROXY header.
    Sniff,
    /// The session reads.
    Open,
    /// A balancer's header was refused, for this reason.
    Refused(Flaw),
}

pub struct Conn {
    pub session: Session,
    pub peer: IpAddr,
    /// Its place in its client's session count, given back when closed.
    pub admission: Admission,
    pub generation: u32,
    /// Tick of this connection's live timer-wheel entry.
    pub timer_tick: u64,
    /// The connection is on the worker's ready list.
    pub in_ready: bool,
    /// A message is at the spool; the session is paused until it answers.
    awaiting_spool: bool,
    /// The client closed its sending side.
    eof: bool,
    /// Set once the session is over; the backend then closes.
    ended: Option<Outcome>,
    /// The session is due a feed of `held` (which may be empty) that it
    /// has not had: input arrived while it could not read, or the spool
    /// answered (the session may have more to say, like the 421 after a
    /// shutdown).
    feed_due: bool,
    /// Input the session has not consumed: a partial line, or what arrived
    /// behind a message that went to the spool.
    held: Vec<u8>,
    /// Replies the backend has not taken yet.
    out: Vec<u8>,
    /// The message being received.
    body: Vec<u8>,
    /// TLS mode, from the STARTTLS reply on.
    tls: Option<Box<Tls>>,
    gate: Gate,
    /// The error tarpit's hold on the next command.
    tarpit: Tarpit,
    pub log: SessionLog,
    /// For the metrics: when the session started, when its last message's
    /// data ended (its input arrived; nanoseconds after `opened`, which
    /// keeps the struct small), and how long after that it went to the
    /// spool (nanoseconds, saturating).
    opened: Instant,
    data_ended_ns: u64,
    submit_lag_ns: u32,
}

impl Conn {
    /// A connection whose session has written its greeting, or, from a
    /// balancer (`proxied`), one that waits for the PROXY header first.
    pub fn new(mut session: Session, peer: IpAddr, generation: u32, proxied: bool) -> Conn {
        let opened = Instant::now();
        let mut out = Vec::new();
        let gate = if proxied {
            Gate::Proxy
        } else {
            session.greet(opened, lend(&mut out));
            Gate::Sniff
        };
        Conn {
            session,
            peer,
            admission: Admission::default(),
            generation,
            timer_tick: u64::MAX,
            in_ready: false,
            awaiting_spool: false,
            eof: false,
            ended: None,
            feed_due: false,
            held: Vec::new(),
            out,
            body: Vec::new(),
            tls: None,
            gate,
            tarpit: Tarpit::default(),
            log: SessionLog::default(),
            opened,
            data_ended_ns: 0,
            submit_lag_ns: 0,
        }
    }

    /// The session would take input now: a backend that reads on demand
    /// reads only then.
    pub fn wants_input(&self) -> bool {
        self.can_feed() && !self.eof && self.held.len() < HELD_CAP
    }

    /// The connection holds so much input that its backend should stop
    /// receiving (what arrives anyway is still taken).
    pub fn holds_too_much(&self) -> bool {
        self.held.len() >= HELD_CAP
    }

    /// The client closed its sending side (or the backend saw it hang up).
    pub fn input_ended(&self) -> bool {
        self.eof
    }

    /// The session is due a feed of what is held back: a turn would give
    /// it.
    pub fn feed_due(&self) -> bool {
        self.feed_due
    }

    /// Why the session ended, once it has: the backend closes then.
    pub fn ended(&self) -> Option<Outcome> {
        self.ended
    }

    fn can_feed(&self) -> bool {
        self.ended.is_none()
            && !self.awaiting_spool
            && self.output_len() < OUT_CAP
            && !self.tarpit.holds()
    }

    /// Octets waiting to be sent, in plaintext and, in TLS mode, encrypted.
    fn output_len(&self) -> usize {
        let sealed = self
            .tls
            .as_ref()
            .map_or(0, |tls| tls.layer.poll_output().len());
        self.out.len() + sealed
    }

    /// Takes octets the client sent, all of them: the session gets them
    /// now if it can, and what it cannot use yet is held back.
    pub fn handle_input(&mut self, input: &[u8], cx: &mut Cx) {
        cx.metrics.received(input.len());
        if self.session.awaits_greeting() && !input.is_empty() {
            return self.talked_early(cx);
        }
        if self.gate != Gate::Open {
            return self.gate_input(input, cx);
        }
        if self.tls.is_some() {
            return self.tls_input(input, cx);
        }
        let input = self.stitch(input, cx);
        if self.tls.is_some() {
            // STARTTLS was among the held octets: the rest is discarded.
            return;
        }
        if !self.can_feed() {
            self.hold(input);
            self.feed_due |= !input.is_empty();
            return;
        }
        if !input.is_empty() {
            let consumed = self.feed(input, None, cx);
            self.hold(&input[consumed..]);
            self.feed_due = self.awaiting_spool;
        }
        self.note_eof();
    }

    /// Before the session reads: `input` is held until the gate opens (then
    /// the session is fed what is held) or the connection ends.
    fn gate_input(&mut self, input: &[u8], cx: &mut Cx) {
        self.hold(input);
        match self.gate {
            Gate::Proxy => self.read_header(cx),
            Gate::Sniff => self.sniff(),
            Gate::Open | Gate::Refused(_) => {}
        }
        if self.gate == Gate::Open {
            self.feed_due = true;
            self.resume(cx);
        }
    }

    /// A balancer's connection: once its PROXY header is complete, the
    /// client is known and greeted; what follows the header is the
    /// client's. A bad header ends the connection with no reply.
    fn read_header(&mut self, cx: &mut Cx) {
        match proxy::parse(&self.held) {
            Parse::Partial => {}
            Parse::Invalid(reason) => {
                self.gate = Gate::Refused(reason);
                self.ended = Some(Outcome::ProxyInvalid);
            }
            Parse::Done { consumed, source } => {
                self.held.drain(..consumed);
                // LOCAL and UNKNOWN: the balancer's own connection (its
                // health check), served as the balancer and, like every
                // balancer connection, never counted as a client.
                if let Some(source) = source {
                    self.client_known(source.ip().to_canonical(), cx);
                }
                if self.ended.is_none() {
                    self.gate = Gate::Open;
                    self.session.greet(cx.now, lend(&mut self.out));
                    if self.session.awaits_greeting() && !self.held.is_empty() {
                        self.talked_early(cx);
                    }
                }
            }
        }
    }

    /// The one place a proxied connection's client address becomes known
    /// (the socket's peer is the balancer): from here on it is the
    /// client's in the logs, the mail log and the Received line, and the
    /// per-client limits apply to it. Over a limit, the session says `421
    /// 4.7.0` and the connection ends, its gate still shut.
    pub fn client_known(&mut self, client: IpAddr, cx: &mut Cx) {
        self.peer = client;
        match cx.clients.try_admit(client, cx.now) {
            Ok(admission) => self.admit(admission),
            Err(limit) => {
                let out = lend(&mut self.out);
                let start = out.len();
                match limit {
                    Limit::Errors => self.session.refuse_errors(out),
                    _ => self.session.refuse_client(client, out),
                }
                cx.metrics.client_refused(limit);
                mail_log::client_refused(client, limit, &self.out[start..]);
                self.ended = Some(Outcome::Closed);
            }
        }
    }

    /// Holds `admission` until closed; a client whose errors are scored
    /// gets its session paced for the tarpit.
    pub fn admit(&mut self, admission: Admission) {
        if admission.account().is_some() {
            self.session.pace();
        }
        self.admission = admission;
    }

    /// Any other connection: its first octets must not begin a PROXY
    /// header (they would be taken for SMTP: the v2 signature holds a
    /// QUIT); if they do, the session refuses it and the connection ends.
    fn sniff(&mut self) {
        match proxy::sniff(&self.held) {
            Sniff::Unsure => {}
            Sniff::Other => self.gate = Gate::Open,
            Sniff::Header => {
                self.session.refuse_proxy_header(lend(&mut self.out));
                self.ended = Some(Outcome::ProxyUntrusted);
            }
        }
    }

    /// Completes what is held back (a partial line, the start of a
    /// terminator) with the first octets of `input` and feeds it; returns
    /// the rest of `input`, for the session to read in place. Only those
    /// first octets are copied, unless the held unit is still incomplete
    /// after them (then `input` joins it whole) or the session cannot read
    /// now (then the caller holds the rest).
    fn stitch<'i>(&mut self, input: &'i [u8], cx: &mut Cx) -> &'i [u8] {
        if self.held.is_empty() || !self.can_feed() {
            return input;
        }
        let (first, rest) = input.split_at(input.len().min(STITCH));
        self.hold(first);
        self.feed_due = true;
        self.resume(cx);
        let left = self.held.len();
        if left > first.len() {
            self.hold(rest);
            self.feed_due = true;
            self.resume(cx);
            return &[];
        }
        // What is left of the held octets is the end of `first`.
        self.held.clear();
        self.feed_due = self.awaiting_spool;
        &input[first.len() - left..]
    }

    /// The client closed its sending side: once the session has seen what
    /// was held back, the connection ends (at once during a handshake).
    pub fn handle_eof(&mut self) {
        self.eof = true;
        if let Some(tls) = &mut self.tls {
            tls.layer.peer_eof();
            if matches!(tls.layer.state(), State::Failed(_)) && self.ended.is_none() {
                self.ended = Some(Outcome::TlsFailed);
            }
        }
        self.note_eof();
    }

    /// Feeds held-back input when the session is due it (after a spool
    /// answer, or once replies stopped backing up).
    pub fn resume(&mut self, cx: &mut Cx) {
        if self.feed_due && self.can_feed() {
            let mut held = std::mem::take(&mut self.held);
            let consumed = match self.tls {
                Some(_) => self.tls_through(&held, cx),
                None => self.feed(&held, None, cx),
            };
            held.drain(..consumed);
            self.held = held;
            self.feed_due = self.awaiting_spool || self.tls_blocked();
        }
        self.note_eof();
    }

    /// TLS mode: ciphertext goes through the layer to the session; what
    /// the layer cannot take yet is held.
    fn tls_input(&mut self, input: &[u8], cx: &mut Cx) {
        let rest = if self.held.is_empty() && self.can_feed() {
            let taken = self.tls_through(input, cx);
            &input[taken..]
        } else {
            input
        };
        self.hold(rest);
        self.feed_due = self.awaiting_spool || self.tls_blocked() || !rest.is_empty();
        self.note_eof();
    }

    /// In TLS mode, decrypted input may wait in the layer while the
    /// session cannot take it: it is due a feed once it can.
    fn tls_blocked(&self) -> bool {
        self.tls.is_some() && !self.can_feed()
    }

    /// Moves `input` through the TLS layer and its plaintext into the
    /// session until neither takes more; returns the octets the layer
    /// took. A failed layer ends the connection (its alert still goes out)
    /// and the rest of `input` is dropped.
    fn tls_through(&mut self, input: &[u8], cx: &mut Cx) -> usize {
        let mut taken = 0;
        while let Some(tls) = self.tls.as_mut() {
            let Ok(n) = tls.layer.handle_input(&input[taken..]) else {
                self.ended.get_or_insert(Outcome::TlsFailed);
                return input.len();
            };
            taken += n;
            // close_notify: no more input comes, as at the end of TCP.
            self.eof |= tls.layer.is_peer_closed();
            if !self.session.in_tls() {
                if let Some(negotiated) = tls.layer.negotiated() {
                    let took = cx.now.saturating_duration_since(tls.started);
                    cx.metrics.tls_handshake(negotiated, took);
                    self.session.start_tls(cx.now);
                }
            }
            let fed = self.feed_plaintext(cx);
            if fed == 0 && (n == 0 || taken == input.len()) {
                break;
            }
        }
        taken
    }

    /// Feeds the layer's plaintext to the session, then encrypts its
    /// replies; returns the plaintext octets consumed.
    fn feed_plaintext(&mut self, cx: &mut Cx) -> usize {
        if !self.session.in_tls() || !self.can_feed() {
            return 0;
        }
        let Some(mut tls) = self.tls.take() else {
            return 0;
        };
        let start = lend(&mut self.out).len();
        let negotiated = tls.layer.negotiated();
        let consumed = self.feed(tls.layer.plaintext(), negotiated, cx);
        tls.layer.consume_plaintext(consumed);
        self.tls = Some(tls);
        self.seal(start);
        consumed
    }

    /// TLS mode: encrypts the replies the session wrote from `start` on
    /// (earlier octets are the plaintext 220 to STARTTLS, not sent yet);
    /// after the session's last reply, close_notify follows. Before the
    /// handshake has ended (a timeout, a shutdown) a reply cannot be sent
    /// and is dropped with the connection.
    fn seal(&mut self, start: usize) {
        let Some(tls) = &mut self.tls else {
            return;
        };
        if self.out.len() > start {
            let _ = tls.layer.write_plaintext(&self.out[start..]);
            self.out.truncate(start);
        }
        if self.ended.is_some() {
            tls.layer.close();
        }
    }

    /// The session answered STARTTLS with 220: the connection goes into
    /// TLS mode and the handshake's clock starts.
    fn start_handshake(&mut self, cx: &Cx) {
        let layer = cx.tls.map(|config| TlsLayer::new(Arc::clone(config)));
        match layer {
            Some(Ok(layer)) => {
                let started = cx.now;
                self.tls = Some(Box::new(Tls { layer, started }));
            }
            _ => {
                tracing::error!(client = %self.peer, "STARTTLS answered without a TLS configuration");
                self.ended = Some(Outcome::Failed);
            }
        }
    }

    fn note_eof(&mut self) {
        let idle = !self.awaiting_spool && !self.feed_due && !self.tarpit.holds();
        if self.eof && self.ended.is_none() && idle {
            self.ended = Some(Outcome::Disconnected);
        }
    }

    fn hold(&mut self, input: &[u8]) {
        if !input.is_empty() {
            lend(&mut self.held).extend_from_slice(input);
        }
    }

    /// The one place octets become session input: runs the session over
    /// `input` (which came under `tls`, if it did) until it needs more,
    /// pauses for the spool or closes; returns the octets consumed.
    fn feed(&mut self, input: &[u8], tls: Option<Negotiated>, cx: &mut Cx) -> usize {
        lend(&mut self.out);
        // A recipient waits for the milters only if one may answer RCPT.
        let check_rcpts = cx.checks.as_deref().is_some_and(Pool::checks_rcpt);
        self.session.check_rcpts(check_rcpts);
        let mut tally = Tally::default();
        let mut pos = 0;
        loop {
            let (n, event) = self.session.feed_tallied(
                &input[pos..],
                cx.now,
                cx.table,
                &mut self.out,
                &mut tally,
            );
            pos += n;
            match event {
                Event::NeedInput | Event::Paused => break,
                Event::Envelope => self.body.clear(),
                Event::Body(bytes) => self.body.extend_from_slice(bytes),
                Event::MessageReady if self.session.transaction_discarded() => {
                    self.drop_discarded(&mut tally, cx);
                }
                Event::MessageReady => {
                    self.submit(tls, cx);
                    break;
                }
                Event::RcptReady => {
                    self.check_rcpt(tls, cx);
                    break;
                }
                Event::MessageDiscarded => self.body = Vec::new(),
                Event::Close => {
                    self.ended = Some(Outcome::Closed);
                    break;
                }
                Event::StartTls => {
                    // Whatever followed the STARTTLS line is dropped.
                    self.start_handshake(cx);
                    pos = input.len();
                    break;
                }
                Event::CommandReady => {
                    if !self.command_ready(&mut tally, cx) {
                        break;
                    }
                }
            }
        }
        self.charge_errors(&mut tally, cx.clients, cx.now);
        self.count_decisions(&tally, cx);
        pos
    }

    /// The paced session has a command line to read: its client's errors
    /// so far are charged, then the tarpit lets it read the line (true),
    /// holds it, or refuses the client with 421.
    fn command_ready(&mut self, tally: &mut Tally, cx: &mut Cx) -> bool {
        let Some(account) = self.admission.account() else {
            return true;
        };
        let errors = tally.take_errors();
        let leave = self
            .tarpit
            .command_ready(cx.clients, account, errors, self.opened, cx.now);
        match leave {
            Leave::Read => true,
            Leave::Wait => {
                // Asked again once the wait is over.
                self.session.pace();
                cx.metrics.tarpit_delay();
                false
            }
            Leave::Refuse => {
                let start = self.out.len();
                self.session.refuse_errors(&mut self.out);
                cx.metrics.client_refused(Limit::Errors);
                mail_log::command_refused(self.peer, Limit::Errors, &self.out[start..]);
                self.ended = Some(Outcome::Closed);
                false
            }
        }
    }

    /// Charges the errors a feed answered after its last command line.
    fn charge_errors(&mut self, tally: &mut Tally, clients: &ClientLimits, now: Instant) {
        let errors = tally.take_errors();
        if let Some(account) = self.admission.account().filter(|_| errors > 0) {
            clients.charge_errors(account, errors, now);
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

    /// The session's transaction so far as a message with `body`, received
    /// under `tls` if it was, for the spool or the milters.
    fn message(&self, tls: Option<Negotiated>, body: Vec<u8>) -> Message {
        Message {
            peer: self.peer,
            helo: self.session.helo().to_vec(),
            tls,
            envelope: self.session.envelope().clone(),
            body,
            quarantine: None,
            id: None,
        }
    }

    /// Hands the finished message (received under `tls`, if it was) to
    /// the spool; the session stays paused until [`Conn::spool_done`].
    fn submit(&mut self, tls: Option<Negotiated>, cx: &mut Cx) {
        let body = std::mem::take(&mut self.body);
        let mut message = self.message(tls, body);
        let rcpts = message.envelope.rcpts.len();
        self.log.accepted_rcpts += u32::try_from(rcpts).unwrap_or(u32::MAX);
        let data_ended = cx.now.saturating_duration_since(self.opened);
        self.data_ended_ns = u64::try_from(data_ended.as_nanos()).unwrap_or(u64::MAX);
        let lag = cx.now.elapsed().as_nanos();
        self.submit_lag_ns = u32::try_from(lag).unwrap_or(u32::MAX);
        // Parked the same way whether milters or the spool look at it.
        match cx.checks.as_deref_mut() {
            Some(checks) => {
                // The milters are told the id it will be queued as.
                message.id = Some(cx.link.next_id());
                checks.start(cx.ticket, message, cx.now);
            }
            None => cx.link.submit(cx.ticket, message),
        }
        self.awaiting_spool = true;
    }

    /// The message of a transaction a milter discarded at RCPT: 250,
    /// nothing spooled, no milter asked again (their conversations about
    /// it close).
    fn drop_discarded(&mut self, tally: &mut Tally, cx: &mut Cx) {
        self.body = Vec::new();
        let rcpts = self.session.envelope().rcpts.len();
        self.log.accepted_rcpts += u32::try_from(rcpts).unwrap_or(u32::MAX);
        if let Some(checks) = cx.checks.as_deref_mut() {
            checks.forget(cx.ticket);
        }
        let notes = self.log.notes.get_or_insert_with(Box::default);
        let milter = notes.discarded_by.take().unwrap_or_default();
        let reply = Reply::Ok.text();
        self.session.check_done(reply, &mut self.out, tally);
        let id = cx.link.next_id();
        self.note_verdict(&milter, "discard", reply, Some(id.as_str()));
    }

    /// The recipient the table just accepted goes to the milters; the
    /// session stays paused until [`Conn::checked`].
    fn check_rcpt(&mut self, tls: Option<Negotiated>, cx: &mut Cx) {
        let message = self.message(tls, Vec::new());
        if let Some(checks) = cx.checks.as_deref_mut() {
            checks.start_rcpt(cx.ticket, message, cx.now);
            self.awaiting_spool = true;
        } else {
            let by = Decided {
                milter: "",
                action: "accept",
                clients_doing: false,
            };
            let at = Charge {
                clients: cx.clients,
                now: cx.now,
            };
            self.checked(Checked::Rcpt(None), by, cx.metrics, at);
        }
    }

    /// The spool answered for the message this connection submitted: the
    /// session writes the 250 (or 451); input held back is fed on the
    /// connection's next turn.
    pub fn spool_done(&mut self, result: Result<String, SpoolError>, metrics: &mut Recorder) {
        self.awaiting_spool = false;
        self.feed_due = true;
        let data_ended = Duration::from_nanos(self.data_ended_ns);
        let end_of_data = self.opened.elapsed().saturating_sub(data_ended);
        let lag = Duration::from_nanos(u64::from(self.submit_lag_ns));
        metrics.message(result.is_ok(), end_of_data, end_of_data.saturating_sub(lag));
        let mut tally = Tally::default();
        let out = lend(&mut self.out);
        let start = out.len();
        match result {
            Ok(id) => {
                mail_log::queued(self.peer, self.session.queued(&id));
                self.session.spool_done(Some(&id), out);
                self.log.queued(&id);
            }
            Err(err) => {
                tracing::warn!(client = %self.peer, error = %err, "spool failed; replying 451");
                self.log.spool_failures += 1;
                self.session.spool_done_tallied(None, out, &mut tally);
            }
        }
        self.seal(start);
        mail_log::rejections(self.peer, tally.rejections());
    }

    /// The milters' verdict on what this connection submitted, when the
    /// session (not the spool) answers it: the session writes its reply
    /// and goes on with what it held back.
    pub fn checked(&mut self, verdict: Checked, by: Decided, metrics: &mut Recorder, at: Charge) {
        let Decided { milter, action, .. } = by;
        self.awaiting_spool = false;
        self.feed_due = true;
        let mut tally = Tally::default();
        let out = lend(&mut self.out);
        let start = out.len();
        let (reply, id) = match verdict {
            Checked::Rcpt(refusal) => {
                self.session.rcpt_checked(refusal, out, &mut tally);
                (refusal, None)
            }
            Checked::RcptDiscard => {
                self.session.discard_transaction();
                self.session.rcpt_checked(None, out, &mut tally);
                let notes = self.log.notes.get_or_insert_with(Box::default);
                notes.discarded_by = Some(milter.to_string());
                (Some(Reply::RecipientOk.text()), None)
            }
            Checked::Message(reply, id) => {
                self.session.check_done(reply, out, &mut tally);
                (Some(reply), id)
            }
        };
        if let Some(reply) = reply {
            self.note_verdict(milter, action, reply, id);
        }
        self.seal(start);
        if by.clients_doing {
            self.charge_errors(&mut tally, at.clients, at.now);
        }
        self.log.rejected_rcpts += tally.rejected_rcpts();
        metrics.tally(&tally, Duration::ZERO);
        mail_log::rejections(self.peer, tally.rejections());
    }

    /// Logs a verdict the session answered with `reply` (on a message
    /// with queue id `id`), and notes it for the session's log line.
    fn note_verdict(&mut self, milter: &str, action: &'static str, reply: &[u8], id: Option<&str>) {
        self.milter_verdict(milter, action);
        let reply = Printable(reply.trim_ascii_end());
        let client = self.peer;
        tracing::info!(%client, milter, action, reply = %reply, queue_id = id, "milter verdict");
    }

    /// Notes the milters' verdict on this connection's message for its
    /// log line.
    pub fn milter_verdict(&mut self, milter: &str, action: &'static str) {
        let milter = milter.to_string();
        let notes = self.log.notes.get_or_insert_with(Box::default);
        notes.milter_verdict = Some(MilterVerdict { action, milter });
    }

    /// Whether a spool completion for `generation` answers the message
    /// this connection waits for (and not one of an earlier occupant of
    /// its slot).
    pub fn awaits_spool(&self, generation: u32) -> bool {
        self.generation == generation && self.awaiting_spool && self.ended.is_none()
    }

    /// Octets waiting to be sent, oldest first: plaintext replies, then,
    /// in TLS mode, the layer's ciphertext.
    pub fn poll_output(&self) -> &[u8] {
        match &self.tls {
            Some(tls) if self.out.is_empty() => tls.layer.poll_output(),
            _ => &self.out,
        }
    }

    /// The backend sent the first `n` octets of [`Conn::poll_output`].
    pub fn advance_output(&mut self, n: usize) {
        if let Some(tls) = self.tls.as_mut().filter(|_| self.out.is_empty()) {
            tls.layer.advance_output(n);
        } else if n >= self.out.len() {
            self.out.clear();
        } else {
            self.out.drain(..n);
        }
    }

    /// Swaps the waiting replies into `buf` (which must be empty), without
    /// copying them: for a backend whose send needs the bytes to stay put
    /// until it completes.
    pub fn take_output(&mut self, buf: &mut Vec<u8>) {
        debug_assert!(buf.is_empty());
        match self.tls.as_mut().filter(|_| self.out.is_empty()) {
            Some(tls) => tls.layer.take_output(buf),
            None => std::mem::swap(&mut self.out, buf),
        }
    }

    /// Gives back buffers that hold nothing, so an idle session costs only
    /// the struct.
    pub fn trim(&mut self) {
        spare::release_if_empty(&mut self.held);
        spare::release_if_empty(&mut self.out);
    }

    /// Server shutdown: an idle session writes its 421 and ends (true); one
    /// inside a transaction goes on until it ends.
    pub fn shut_down(&mut self) -> bool {
        if self.gate == Gate::Proxy {
            // No client to say 421 to yet.
            self.ended = Some(Outcome::Shutdown);
            return true;
        }
        let out = lend(&mut self.out);
        let start = out.len();
        let now = self.session.shut_down(out);
        if now {
            self.ended = Some(Outcome::Shutdown);
        }
        self.seal(start);
        now
    }

    /// The backend could not move this connection's bytes, or it closes the
    /// connection for its own reason (`Reset`, `Aborted`, `Failed`):
    /// the session is over.
    pub fn end(&mut self, outcome: Outcome) {
        if outcome == Outcome::Failed {
            // The replies of a drive that panicked may be half written.
            self.out.clear();
        }
        self.ended = Some(outcome);
    }

    /// Whether a fired timer entry is this connection's live one.
    pub fn owns_timer(&self, expiry: &Expiry) -> bool {
        self.generation == expiry.generation && self.timer_tick == expiry.tick
    }

    /// Handles this connection's live timer firing: a command the tarpit
    /// held may go on (the connection is then due a feed); a withheld
    /// greeting that is due is queued; when the session timed out, its 421
    /// is queued, counted under the rule it broke, and it ends; otherwise
    /// the timer is set again for the deadline.
    pub fn timer_fired(
        &mut self,
        key: usize,
        now: Instant,
        wheel: &mut TimerWheel,
        metrics: &mut Recorder,
    ) {
        if self.tarpit.release(self.opened, now) {
            self.feed_due = true;
        }
        let deadline = self.session.deadline();
        if deadline <= now && self.gate == Gate::Proxy {
            // A balancer gets no reply: it is not the client.
            self.ended = Some(Outcome::ProxyMissing);
            return;
        }
        if deadline <= now && self.session.awaits_greeting() {
            self.session.greeting_due(now, lend(&mut self.out));
            self.timer_tick = wheel.schedule(key, self.generation, self.session.deadline());
            return;
        }
        if deadline <= now && !self.awaiting_spool {
            if let Some(tls) = &mut self.tls {
                // The handshake timeout is the command timeout.
                tls.layer.handshake_timed_out();
            }
            let out = lend(&mut self.out);
            let start = out.len();
            let rule = self.session.time_out(out);
            self.ended = Some(Outcome::TimedOut);
            self.refused(rule, start, metrics);
            self.seal(start);
            return;
        }
        // Our own spool is never the client's timeout.
        let at = deadline.max(now + Duration::from_secs(1));
        self.timer_tick = wheel.schedule(key, self.generation, at);
    }

    /// Sets the timer for the session's deadline, or the end of the
    /// tarpit's hold if sooner, if it is earlier than the live one.
    pub fn follow_deadline(&mut self, key: usize, wheel: &mut TimerWheel) {
        let deadline = self.session.deadline();
        let held = self.tarpit.until(self.opened);
        let deadline = held.map_or(deadline, |until| until.min(deadline));
        if wheel.tick_of(deadline) < self.timer_tick {
            self.timer_tick = wheel.schedule(key, self.generation, deadline);
        }
    }

    /// The one log line of a finished session (with the TLS version and
    /// cipher if it ran inside TLS); also counts it in the metrics.
    pub fn log_end(&self, outcome: Outcome, metrics: &mut Recorder) {
        metrics.session_closed(outcome.as_str(), self.opened.elapsed());
        self.log_tls_failure(metrics);
        if let Gate::Refused(reason) = self.gate {
            return session_end!(self, outcome, reason = %reason);
        }
        match self.negotiated() {
            Some(tls) => session_end!(self, outcome, tls = %tls.version, cipher = %tls.cipher),
            None => session_end!(self, outcome),
        }
    }
}

impl Conn {
    /// The client talked before its withheld greeting: the session refuses
    /// it, what it sent is dropped, and the connection ends.
    fn talked_early(&mut self, cx: &mut Cx) {
        self.held.clear();
        let out = lend(&mut self.out);
        let start = out.len();
        self.session.refuse_early_talker(out);
        self.refused(Rule::EarlyTalker, start, cx.metrics);
        self.ended = Some(Outcome::Closed);
    }

    /// Counts and logs a refusal under a time `rule`, whose reply the
    /// session wrote from `start` on.
    fn refused(&self, rule: Rule, start: usize, metrics: &mut Recorder) {
        metrics.time_refused(rule);
        mail_log::time_refused(self.peer, rule, &self.out[start..]);
    }

    /// The TLS version and cipher the session runs under, if it does.
    fn negotiated(&self) -> Option<Negotiated> {
        self.tls.as_ref().and_then(|tls| tls.layer.negotiated())
    }

    /// A handshake that failed (or timed out) is logged and counted once,
    /// when its connection ends.
    fn log_tls_failure(&self, metrics: &mut Recorder) {
        let Some(tls) = &self.tls else { return };
        let State::Failed(failure) = tls.layer.state() else {
            return;
        };
        let detail = tls.layer.detail().map(ToString::to_string);
        let detail = detail.as_deref().unwrap_or("-");
        if self.session.in_tls() {
            tracing::info!(client = %self.peer, reason = %failure, detail = %detail, "TLS failed");
            return;
        }
        metrics.tls_failure(failure);
        tracing::info!(
            client = %self.peer,
            reason = %failure,
            detail = %detail,
            "TLS handshake failed"
        );
    }
}

/// A connection's TLS mode: its layer, and when its handshake began.
struct Tls {
    layer: TlsLayer,
    started: Instant,
}

/// `buf`, with a buffer from the spare list if it has none: bytes go in
/// without an allocation.
fn lend(buf: &mut Vec<u8>) -> &mut Vec<u8> {
    if buf.capacity() == 0 {
        *buf = spare::take();
    }
    buf
}

#[cfg(test)]
mod proxy_tests;
#[cfg(test)]
pub mod tests;
#[cfg(test)]
mod tls_tests;
