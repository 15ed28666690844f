//! The sans-IO TLS layer of one connection, between the connection's bytes
//! and the SMTP session, once STARTTLS has been answered with 220.
//!
//! Owns: the rustls state of the connection ([`UnbufferedServerConnection`]),
//! the ciphertext not yet a whole record, the plaintext not yet taken by the
//! session, the ciphertext not yet written, the handshake's outcome (and its
//! reason when it fails), the negotiated version and cipher as IANA names,
//! and close_notify in both directions.
//!
//! Invariants: memory is bounded whatever the peer sends: at most
//! [`MAX_CIPHERTEXT_BUFFER`] octets of ciphertext are held, and decryption
//! pauses while [`PLAINTEXT_HIGH_WATER`] octets of plaintext wait for the
//! session (so at most one more record's worth sits beyond it). Each buffer
//! gives its allocation back when it empties, and the box holding the three
//! goes when all are empty, so an idle session holds only the layer and
//! rustls' state: about 3.3 KB of Rust heap, 3.6 KB resident in all
//! (`cargo bench --bench tls_idle` measures it). The unbuffered API is used
//! because rustls' buffered `ServerConnection` keeps a 4 KiB read buffer
//! while idle, and one grown to a full record after a large one arrived
//! (6.4 KB and 35 KB of heap in the same measurement).
//!
//! Does not own: sockets, clocks or threads. The handshake timeout is the
//! caller's (it knows the time; [`TlsLayer::is_handshaking`] tells it the
//! timer still matters), and so is discarding what the client pipelined
//! after STARTTLS: a new layer starts from nothing, and the caller must not
//! feed it octets that arrived before the 220 went out.

use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::{CipherSuite, ProtocolVersion, ServerConfig};

/// The largest TLS record on the wire (2^14 octets of payload, 2048 of
/// expansion, a 5-octet header): enough to always make progress, and the
/// bound on buffered ciphertext. A handshake message that needs more (rustls
/// would join one up to 64 KiB) is refused as [`Failure::Oversized`].
pub const MAX_CIPHERTEXT_BUFFER: usize = 16_384 + 2048 + 5;

/// Decryption pauses while this much plaintext waits for the session.
pub const PLAINTEXT_HIGH_WATER: usize = 16_384;

/// Why a TLS connection failed; each is a label for logs and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// Not TLS, or a malformed or undecryptable record or message.
    BadRecord,
    /// The client offered no version we speak (we speak 1.2 and 1.3).
    NoSharedVersion,
    /// No cipher suite, key-exchange group or signature scheme in common.
    NoSharedCipher,
    /// The client closed (TCP end or close_notify) before the handshake ended.
    PeerClosed,
    /// The client sent a fatal alert.
    PeerAlert,
    /// A record or handshake message larger than the layer holds.
    Oversized,
    /// The caller's handshake timer ran out ([`TlsLayer::handshake_timed_out`]).
    Timeout,
    /// Anything else rustls refused (its message is in [`TlsLayer::detail`]).
    Other,
}

impl Failure {
    /// The label logs and `/metrics` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::BadRecord => "bad_record",
            Failure::NoSharedVersion => "no_shared_version",
            Failure::NoSharedCipher => "no_shared_cipher",
            Failure::PeerClosed => "peer_closed",
            Failure::PeerAlert => "peer_alert",
            Failure::Oversized => "oversized",
            Failure::Timeout => "timeout",
            Failure::Other => "other",
        }
    }

    pub(super) fn classify(e: &rustls::Error) -> Failure {
        use rustls::Error as E;
        use rustls::PeerIncompatible as P;
        match e {
            E::InvalidMessage(
                rustls::InvalidMessage::MessageTooLarge
                | rustls::InvalidMessage::HandshakePayloadTooLarge,
            ) => Failure::Oversized,
            E::InvalidMessage(_)
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. }
            | E::DecryptError
            | E::PeerMisbehaved(_) => Failure::BadRecord,
            // A ClientHello without signature_algorithms is what TLS 1.0 and
            // 1.1 clients send (OpenSSL's -tls1_1 gets exactly this error).
            E::PeerIncompatible(
                P::ServerTlsVersionIsDisabledByOurConfig
                | P::SupportedVersionsExtensionRequired
                | P::SignatureAlgorithmsExtensionRequired
                | P::Tls12NotOffered
                | P::Tls12NotOfferedOrEnabled,
            ) => Failure::NoSharedVersion,
            E::PeerIncompatible(_) => Failure::NoSharedCipher,
            E::AlertReceived(rustls::AlertDescription::CloseNotify) => Failure::PeerClosed,
            E::AlertReceived(_) => Failure::PeerAlert,
            _ => Failure::Other,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why plaintext could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// The handshake has not finished (SMTP never needs to write then).
    NotEstablished,
    /// close_notify was already queued: nothing may follow it.
    Closed,
    /// The connection failed earlier.
    Failed(Failure),
}

/// What the handshake agreed on, as IANA names (RFC 8446 / RFC 5246 style),
/// for the Received line, the session log and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// "TLSv1.2" or "TLSv1.3".
    pub version: &'static str,
    /// e.g. "TLS_AES_256_GCM_SHA384" or "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".
    pub cipher: &'static str,
}

/// As the Received line's comment wants it, after "using ":
/// "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384".
impl std::fmt::Display for Negotiated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} with cipher {}", self.version, self.cipher)
    }
}

/// The handshake's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Still handshaking: the caller's handshake timer runs.
    Handshaking,
    /// Application data flows.
    Established(Negotiated),
    /// Failed; the connection should be closed once [`TlsLayer::poll_output`]
    /// (perhaps an alert) is written.
    Failed(Failure),
}

/// [`State`] as stored: the names are read from rustls when asked, which
/// keeps the struct small (it is per idle session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshaking,
    Established,
    Failed(Failure),
}

/// A layer's octets in flight. Each gives its allocation back as it empties.
#[derive(Default)]
struct Buffers {
    /// Ciphertext holding no whole record yet. rustls may rewrite it in
    /// place (it joins handshake fragments), so it is never re-read from
    /// the caller.
    incoming: Vec<u8>,
    /// Decrypted, not yet taken by the session.
    plaintext: Vec<u8>,
    /// Ciphertext to write.
    outgoing: Vec<u8>,
}

impl Buffers {
    fn is_empty(&self) -> bool {
        self.incoming.is_empty() && self.plaintext.is_empty() && self.outgoing.is_empty()
    }
}

/// What one pass over rustls' states is for.
#[derive(Clone, Copy)]
enum Goal<'a> {
    /// Decrypt what has arrived, while there is room for the plaintext.
    Read,
    /// Encrypt these octets as soon as rustls allows writing.
    Write(&'a [u8]),
    /// Queue close_notify as soon as rustls allows writing.
    CloseNotify,
}

/// One server-side TLS connection, driven with bytes only.
///
/// Driving it: feed what the socket gave to [`handle_input`](Self::handle_input)
/// (it returns how much it took; keep the rest for the next call), hand
/// [`plaintext`](Self::plaintext) to the session and
/// [`consume_plaintext`](Self::consume_plaintext) what it took, then call
/// `handle_input` again (an empty slice will do) so that records held back
/// while the plaintext was full get decrypted. Replies go in through
/// [`write_plaintext`](Self::write_plaintext); everything to send, the
/// handshake included, comes out of [`poll_output`](Self::poll_output) /
/// [`advance_output`](Self::advance_output).
pub struct TlsLayer {
    conn: UnbufferedServerConnection,
    phase: Phase,
    /// Boxed, and only while one of them holds octets: an idle layer (the
    /// many) pays one pointer for the three.
    bufs: Option<Box<Buffers>>,
    peer_closed: bool,
    close_queued: bool,
    /// Boxed: it is rare, and rustls' error is large.
    detail: Option<Box<rustls::Error>>,
}

impl TlsLayer {
    /// A layer waiting for the ClientHello.
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self {
            conn: UnbufferedServerConnection::new(config)?,
            phase: Phase::Handshaking,
            bufs: None,
            peer_closed: false,
            close_queued: false,
            detail: None,
        })
    }

    /// Takes ciphertext from the peer and returns how much of it was taken
    /// (less than all only when the layer's buffer is full: `Ok(0)` with
    /// input left means the session must take plaintext first). Running out
    /// of input is not an error. After `Err`, the layer stays failed: write out
    /// [`poll_output`](Self::poll_output) (an alert) and close.
    pub fn handle_input(&mut self, ciphertext: &[u8]) -> Result<usize, Failure> {
        if let Phase::Failed(f) = self.phase {
            return Err(f);
        }
        let incoming = &mut self.bufs().incoming;
        let take = ciphertext.len().min(MAX_CIPHERTEXT_BUFFER - incoming.len());
        incoming.extend_from_slice(&ciphertext[..take]);
        self.pump(Goal::Read);
        if self.bufs().incoming.len() == MAX_CIPHERTEXT_BUFFER && self.has_plaintext_room() {
            // A whole record always fits, so a full buffer that rustls
            // cannot consume is a handshake message too large to hold.
            self.fail(Failure::Oversized, None);
        }
        self.release_idle();
        match self.phase {
            Phase::Failed(f) => Err(f),
            _ => Ok(take),
        }
    }

    /// The TCP connection ended (read returned 0). During the handshake that
    /// is a failure ([`Failure::PeerClosed`]); afterwards it is just the end.
    pub fn peer_eof(&mut self) {
        self.peer_closed = true;
        if self.phase == Phase::Handshaking {
            self.fail(Failure::PeerClosed, None);
        }
    }

    /// The caller's handshake timer (the command timeout) ran out: if the
    /// handshake has not ended, it has failed with [`Failure::Timeout`], so
    /// that timeouts are logged and counted under the same labels.
    pub fn handshake_timed_out(&mut self) {
        if self.phase == Phase::Handshaking {
            self.fail(Failure::Timeout, None);
        }
    }

    /// Decrypted octets the session has not consumed yet.
    pub fn plaintext(&self) -> &[u8] {
        self.bufs.as_ref().map_or(&[], |bufs| &bufs.plaintext)
    }

    /// The session consumed the first `n` octets of [`plaintext`](Self::plaintext).
    pub fn consume_plaintext(&mut self, n: usize) {
        if let Some(bufs) = &mut self.bufs {
            drain_front(&mut bufs.plaintext, n);
            self.release_idle();
        }
    }

    /// Encrypts a reply. Octets are queued in [`poll_output`](Self::poll_output)
    /// in the order written.
    pub fn write_plaintext(&mut self, data: &[u8]) -> Result<(), WriteError> {
        self.writable()?;
        if !data.is_empty() {
            self.pump(Goal::Write(data));
            self.release_idle();
        }
        self.writable()
    }

    /// Queues close_notify (once), to be written before closing the socket
    /// after the last reply (e.g. the 221 to QUIT).
    pub fn close(&mut self) {
        if self.writable().is_ok() {
            self.pump(Goal::CloseNotify);
            self.close_queued = true;
            self.release_idle();
        }
    }

    /// Ciphertext to write to the socket: handshake, replies, alerts.
    pub fn poll_output(&self) -> &[u8] {
        self.bufs.as_ref().map_or(&[], |bufs| &bufs.outgoing)
    }

    /// The first `n` octets of [`poll_output`](Self::poll_output) were written.
    pub fn advance_output(&mut self, n: usize) {
        if let Some(bufs) = &mut self.bufs {
            drain_front(&mut bufs.outgoing, n);
            self.release_idle();
        }
    }

    /// Swaps [`poll_output`](Self::poll_output) into `buf` (which must be
    /// empty), without copying it: for a backend whose send needs the
    /// octets to stay put until it completes.
    pub fn take_output(&mut self, buf: &mut Vec<u8>) {
        debug_assert!(buf.is_empty());
        if let Some(bufs) = &mut self.bufs {
            std::mem::swap(&mut bufs.outgoing, buf);
            self.release_idle();
        }
    }

    /// Where the handshake stands.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Handshaking => State::Handshaking,
            Phase::Established => State::Established(negotiated(&self.conn)),
            Phase::Failed(f) => State::Failed(f),
        }
    }

    /// True until the handshake has succeeded or failed.
    pub fn is_handshaking(&self) -> bool {
        self.phase == Phase::Handshaking
    }

    /// Version and cipher, once established.
    pub fn negotiated(&self) -> Option<Negotiated> {
        match self.phase {
            Phase::Established => Some(negotiated(&self.conn)),
            _ => None,
        }
    }

    /// The client sent close_notify or closed TCP: no more plaintext comes.
    pub fn is_peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Heap octets held in the layer's own buffers (not rustls' state): zero
    /// when idle, for the connection's memory accounting.
    pub fn buffered_bytes(&self) -> usize {
        self.bufs.as_ref().map_or(0, |bufs| {
            std::mem::size_of::<Buffers>()
                + bufs.incoming.capacity()
                + bufs.plaintext.capacity()
                + bufs.outgoing.capacity()
        })
    }

    /// rustls' own error behind a failure, for the log line.
    pub fn detail(&self) -> Option<&rustls::Error> {
        self.detail.as_deref()
    }

    fn writable(&self) -> Result<(), WriteError> {
        match self.phase {
            Phase::Failed(f) => Err(WriteError::Failed(f)),
            Phase::Handshaking => Err(WriteError::NotEstablished),
            Phase::Established if self.close_queued => Err(WriteError::Closed),
            Phase::Established => Ok(()),
        }
    }

    fn has_plaintext_room(&self) -> bool {
        self.plaintext().len() < PLAINTEXT_HIGH_WATER
    }

    /// The buffers, boxed on first use.
    fn bufs(&mut self) -> &mut Buffers {
        self.bufs.get_or_insert_with(Box::default)
    }

    /// Gives the buffers' box back once all three are empty (each gives
    /// its own allocation back as it empties: [`drain_front`]).
    fn release_idle(&mut self) {
        if self.bufs.as_ref().is_some_and(|bufs| bufs.is_empty()) {
            self.bufs = None;
        }
    }

    /// Steps rustls until it needs input, or `goal` is met, or it fails;
    /// then drops the ciphertext rustls is done with.
    fn pump(&mut self, goal: Goal<'_>) {
        let mut goal = Some(goal);
        let mut used = 0;
        let bufs = self.bufs.get_or_insert_with(Box::default);
        let outcome = loop {
            if matches!(goal, Some(Goal::Read)) && bufs.plaintext.len() >= PLAINTEXT_HIGH_WATER {
                break Ok(());
            }
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut bufs.incoming[used..]);
            used += discard;
            let step = match state {
                Ok(state) => step(
                    state,
                    &mut goal,
                    &mut bufs.plaintext,
                    &mut bufs.outgoing,
                    &mut self.peer_closed,
                ),
                Err(e) => Err(e),
            };
            match step {
                Ok(Step::Again(extra)) => used += extra,
                Ok(Step::Stop) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        drain_front(&mut bufs.incoming, used);
        match outcome {
            Ok(()) => self.after_progress(),
            Err(e) => self.fail(Failure::classify(&e), Some(e)),
        }
    }

    /// Notices the end of the handshake, or a close in the middle of it.
    fn after_progress(&mut self) {
        if self.phase != Phase::Handshaking {
            return;
        }
        if !self.conn.is_handshaking() {
            self.phase = Phase::Established;
        } else if self.peer_closed {
            self.fail(Failure::PeerClosed, None);
        }
    }

    /// Marks the layer failed and frees its buffers. When rustls failed, it
    /// has queued an alert: that is let out, so the client learns why.
    fn fail(&mut self, reason: Failure, detail: Option<rustls::Error>) {
        self.phase = Phase::Failed(reason);
        if detail.is_some() {
            self.take_alert();
        }
        self.detail = detail.map(Box::new);
        if let Some(bufs) = &mut self.bufs {
            bufs.incoming = Vec::new();
            bufs.plaintext = Vec::new();
        }
        self.release_idle();
    }

    /// After an error rustls hands out its queued alert before anything
    /// else, so one more step, on the input it still refers to, yields it.
    /// Only one: a second step would parse the bad input again.
    fn take_alert(&mut self) {
        let bufs = self.bufs.get_or_insert_with(Box::default);
        let status = self.conn.process_tls_records(&mut bufs.incoming[..]);
        if let Ok(ConnectionState::EncodeTlsData(mut e)) = status.state {
            // Best effort: the connection closes either way.
            let _ = encode_into(&mut bufs.outgoing, &mut e);
        }
    }
}

/// What to do after one state was handled.
enum Step {
    /// Ask rustls again; this many more octets of input are done with.
    Again(usize),
    /// Nothing more to do until new input or a new request.
    Stop,
}

/// Handles one state rustls reported.
fn step(
    state: ConnectionState<'_, '_, rustls::server::ServerConnectionData>,
    goal: &mut Option<Goal<'_>>,
    plaintext: &mut Vec<u8>,
    outgoing: &mut Vec<u8>,
    peer_closed: &mut bool,
) -> Result<Step, rustls::Error> {
    match state {
        ConnectionState::ReadTraffic(mut records) => {
            let mut extra = 0;
            while let Some(record) = records.next_record() {
                let record = record?;
                plaintext.extend_from_slice(record.payload);
                extra += record.discard;
            }
            Ok(Step::Again(extra))
        }
        ConnectionState::EncodeTlsData(mut e) => {
            encode_into(outgoing, &mut e)?;
            Ok(Step::Again(0))
        }
        // Our output buffer keeps order, so queued is as good as sent.
        ConnectionState::TransmitTlsData(t) => {
            t.done();
            Ok(Step::Again(0))
        }
        ConnectionState::PeerClosed => {
            *peer_closed = true;
            Ok(Step::Again(0))
        }
        ConnectionState::WriteTraffic(mut w) => match goal.take() {
            Some(Goal::Write(data)) => {
                encrypt_into(outgoing, |buf| w.encrypt(data, buf))?;
                Ok(Step::Stop)
            }
            Some(Goal::CloseNotify) => {
                encrypt_into(outgoing, |buf| w.queue_close_notify(buf))?;
                Ok(Step::Stop)
            }
            Some(Goal::Read) | None => Ok(Step::Stop),
        },
        // Blocked on input, closed both ways, or early data (never enabled).
        _ => Ok(Step::Stop),
    }
}

/// Appends a handshake record to `out`, sized as rustls asks.
fn encode_into(
    out: &mut Vec<u8>,
    e: &mut rustls::unbuffered::EncodeTlsData<'_, rustls::server::ServerConnectionData>,
) -> Result<(), rustls::Error> {
    let required = match e.encode(&mut []) {
        Ok(_) => return Ok(()),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            required_size
        }
        Err(EncodeError::AlreadyEncoded) => return Ok(()),
    };
    let start = out.len();
    out.resize(start + required, 0);
    match e.encode(&mut out[start..]) {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(other) => {
            out.truncate(start);
            Err(rustls::Error::General(other.to_string()))
        }
    }
}

/// Appends encrypted records to `out`: first with a generous guess of the
/// size, then, if rustls says so, with the size it names.
fn encrypt_into(
    out: &mut Vec<u8>,
    mut encrypt: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), rustls::Error> {
    let start = out.len();
    let mut room = 64;
    for _ in 0..2 {
        out.resize(start + room, 0);
        match encrypt(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                room = required_size;
            }
            Err(EncryptError::EncryptExhausted) => break,
        }
    }
    out.truncate(start);
    Err(rustls::Error::EncryptError)
}

/// Removes the first `n` octets. An emptied buffer gives its memory back,
/// and so does one left holding a short remainder (a partial command line
/// or record, which may wait a long time): that keeps an idle session small.
fn drain_front(buf: &mut Vec<u8>, n: usize) {
    let n = n.min(buf.len());
    if n == buf.len() {
        *buf = Vec::new();
        return;
    }
    buf.drain(..n);
    if buf.capacity() > SHRINK_ABOVE && buf.capacity() / 4 > buf.len() {
        buf.shrink_to_fit();
    }
}

/// Buffers this small are not worth a reallocation to shrink.
const SHRINK_ABOVE: usize = 1024;

fn negotiated(conn: &UnbufferedServerConnection) -> Negotiated {
    Negotiated {
        version: conn.protocol_version().map_or("unknown", version_name),
        cipher: conn
            .negotiated_cipher_suite()
            .map_or("unknown", |s| cipher_name(s.suite())),
    }
}

/// rustls' names are Rust identifiers ("TLSv1_3"); RFCs write "TLSv1.3".
pub fn version_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::TLSv1_2 => "TLSv1.2",
        ProtocolVersion::TLSv1_3 => "TLSv1.3",
        _ => "unknown",
    }
}

/// The IANA name of a suite. rustls prefixes its TLS 1.3 suites with
/// "TLS13_" where IANA says "TLS_"; the TLS 1.2 names already agree.
pub fn cipher_name(s: CipherSuite) -> &'static str {
    match s {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        other => other.as_str().unwrap_or("unknown"),
    }
}
