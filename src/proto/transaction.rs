//! One mail transaction (RFC 5321 §3.3): the envelope that MAIL and RCPT
//! build, and the bookkeeping of its body (size, bare CR/LF verdict).
//!
//! Owns the per-message rules: sender and recipient checks (limits,
//! SMTPUTF8, the table's verdict), whether DATA/BDAT may start, and whether
//! a finished body is acceptable. Does not own the conversation (which
//! command may come when outside a transaction, body scanning, pausing for
//! the spool): that is `session.rs`.

use crate::recipients::address::Path;
use crate::recipients::{Lookup, Table};

use super::command::MailParams;
use super::reply::{self, Reply};
use super::scan::CrLfCheck;
use super::session::{BodyKind, Envelope, SessionConfig};
use super::tally::{RcptOutcome, Refusal};

/// RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients.
const MIN_RECIPIENTS: usize = 100;

/// The transaction in progress, if any (`open` is false between them).
#[derive(Debug, Default)]
pub(super) struct Transaction {
    pub(super) envelope: Envelope,
    /// MAIL was accepted.
    open: bool,
    /// A RCPT was answered (554 rather than 503 when none was accepted).
    rcpt_tried: bool,
    /// A check asked for the message to be thrown away (a milter's
    /// discard at RCPT): it gets its 250 but is not spooled.
    pub(super) discarded: bool,
    /// Body octets received so far, in wire form.
    received: u64,
    crlf: CrLfCheck,
}

impl Transaction {
    pub(super) fn is_open(&self) -> bool {
        self.open
    }

    /// A body has started (between BDAT chunks, too).
    pub(super) fn in_body(&self) -> bool {
        self.envelope.body_kind.is_some()
    }

    /// MAIL FROM; the caller has checked HELO/EHLO.
    pub(super) fn mail(
        &mut self,
        path: Path<'_>,
        params: MailParams,
        limits: &SessionConfig,
    ) -> Reply {
        if self.in_body() {
            return Reply::InsideBdat;
        }
        if self.open {
            return Reply::NestedMail;
        }
        if params
            .size
            .is_some_and(|s| s > limits.max_message_size as u64)
        {
            return Reply::DeclaredTooBig;
        }
        if !params.smtputf8 && !path_bytes(&path).is_ascii() {
            return Reply::Utf8Undeclared;
        }
        if !limits.spool_space.admits_mail() {
            return Reply::InsufficientStorage;
        }
        self.envelope.mail_from.extend_from_slice(path_bytes(&path));
        self.envelope.body_8bitmime = params.body_8bitmime;
        self.envelope.smtputf8 = params.smtputf8;
        self.open = true;
        Reply::SenderOk
    }

    /// RCPT TO: answers from the table; says how.
    pub(super) fn rcpt(
        &mut self,
        path: Path<'_>,
        table: &Table,
        limits: &SessionConfig,
        out: &mut Vec<u8>,
    ) -> RcptOutcome {
        let refused = |reply: Reply, outcome, out: &mut Vec<u8>| {
            reply.write(out);
            outcome
        };
        if !self.open {
            return refused(Reply::NeedMail, RcptOutcome::OutOfSequence, out);
        }
        if self.in_body() {
            return refused(Reply::InsideBdat, RcptOutcome::OutOfSequence, out);
        }
        self.rcpt_tried = true;
        if self.envelope.rcpts.len() >= limits.max_recipients.max(MIN_RECIPIENTS) {
            return refused(Reply::TooManyRecipients, RcptOutcome::TooMany, out);
        }
        if !self.envelope.smtputf8 && !path_bytes(&path).is_ascii() {
            return refused(Reply::Utf8Undeclared, RcptOutcome::Syntax, out);
        }
        let verdict = match path {
            Path::Null => return refused(Reply::RecipientSyntax, RcptOutcome::Syntax, out),
            Path::Postmaster => Lookup::Accept,
            Path::Mailbox { address, .. } => table.lookup(address),
        };
        let address = path_bytes(&path);
        match verdict {
            Lookup::Accept => {
                self.envelope.rcpts.push(address.to_vec());
                Reply::RecipientOk.write(out);
                RcptOutcome::Accepted
            }
            Lookup::UnknownUser => {
                reply::write_unknown_user(address, out);
                RcptOutcome::UnknownUser
            }
            Lookup::RelayDenied => {
                reply::write_relay_denied(address, out);
                RcptOutcome::RelayDenied
            }
        }
    }

    /// Why DATA or BDAT cannot send body octets now, if it cannot.
    pub(super) fn body_refusal(&self, kind: BodyKind) -> Option<Reply> {
        if !self.open {
            Some(Reply::NeedMail)
        } else if kind == BodyKind::Data && self.in_body() {
            Some(Reply::InsideBdat)
        } else if self.envelope.rcpts.is_empty() && self.rcpt_tried {
            Some(Reply::NoValidRecipients)
        } else if self.envelope.rcpts.is_empty() {
            Some(Reply::NeedRecipient)
        } else {
            None
        }
    }

    /// Body octets received so far, in wire form.
    pub(super) fn received(&self) -> u64 {
        self.received
    }

    pub(super) fn start_body(&mut self, kind: BodyKind) {
        self.envelope.body_kind = Some(kind);
        self.received = 0;
        self.crlf = CrLfCheck::default();
    }

    /// Accounts for body octets; true if they should go to the driver (the
    /// message is still within its limit and free of bare CR/LF).
    pub(super) fn take_body(&mut self, body: &[u8], limits: &SessionConfig) -> bool {
        self.received += body.len() as u64;
        self.crlf.feed(body);
        self.received <= limits.max_message_size as u64 && !self.crlf.failed()
    }

    /// The body ended: `Err` with the refusal if it cannot be accepted.
    pub(super) fn finish_body(&mut self, limits: &SessionConfig) -> Result<(), Refusal> {
        let bare = self.crlf.finish();
        if self.received > limits.max_message_size as u64 {
            Err(Refusal::Size)
        } else if bare {
            Err(Refusal::BareCrLf)
        } else {
            Ok(())
        }
    }

    /// Forgets the transaction, keeping the envelope's allocations.
    pub(super) fn reset(&mut self) {
        self.envelope.mail_from.clear();
        self.envelope.rcpts.clear();
        self.envelope.body_8bitmime = false;
        self.envelope.smtputf8 = false;
        self.envelope.body_kind = None;
        self.open = false;
        self.rcpt_tried = false;
        self.discarded = false;
    }
}

/// A path as it goes into the envelope and replies.
pub(super) fn path_bytes<'a>(path: &Path<'a>) -> &'a [u8] {
    match *path {
        Path::Null => b"",
        Path::Postmaster => b"Postmaster",
        Path::Mailbox { address, .. } => address,
    }
}
