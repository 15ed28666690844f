//! SKELETON — interface contract shared by the proto, spool and runtime work.
//! Replace every `todo!()`; keep the public signatures (or change them in all
//! users at once).

use std::time::{Duration, Instant};

use crate::recipients::Table;

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
    /// The body was refused (size, bare CR/LF); the reply is already
    /// written. Drop what was collected.
    MessageDiscarded,
    /// Waiting for [`Session::spool_done`]; nothing was consumed.
    Paused,
    /// Flush the output, then close the connection.
    Close,
}

/// One SMTP server session.
pub struct Session {}

impl Session {
    /// A new session; call [`Session::greet`] first.
    pub fn new(_config: std::sync::Arc<SessionConfig>, _now: Instant) -> Session {
        todo!()
    }

    /// Writes the 220 greeting.
    pub fn greet(&mut self, _out: &mut Vec<u8>) {
        todo!()
    }

    /// Processes input up to the next event; replies go to `out`.
    pub fn feed<'a>(
        &mut self,
        _input: &'a [u8],
        _now: Instant,
        _table: &Table,
        _out: &mut Vec<u8>,
    ) -> (usize, Event<'a>) {
        todo!()
    }

    /// The envelope of the current message.
    pub fn envelope(&self) -> &Envelope {
        todo!()
    }

    /// The HELO/EHLO argument, as given (empty before one).
    pub fn helo(&self) -> &[u8] {
        todo!()
    }

    /// Reports the spool outcome of the message after [`Event::MessageReady`]:
    /// `Some(id)` → `250 2.0.0 Ok: queued as <id>`, `None` → `451 4.3.0`.
    pub fn spool_done(&mut self, _queue_id: Option<&str>, _out: &mut Vec<u8>) {
        todo!()
    }

    /// When the session times out if no further input arrives.
    pub fn deadline(&self) -> Instant {
        todo!()
    }

    /// The deadline passed: writes `421 4.4.2 … timeout`; the driver closes.
    pub fn time_out(&mut self, _out: &mut Vec<u8>) {
        todo!()
    }

    /// Server shutdown. An idle session gets `421 4.3.2` and `true` (close
    /// now); one inside a transaction finishes it, then gets the 421.
    pub fn shut_down(&mut self, _out: &mut Vec<u8>) -> bool {
        todo!()
    }
}
