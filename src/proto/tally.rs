//! Per-session counts of what the session decided, for the driver's metrics
//! and log lines: commands by verb, RCPT outcomes by reason, messages
//! refused at the end of their body, the refusals themselves for the
//! mail log ([`Rejections`], bounded), and the error replies the error
//! tarpit scores ([`Tally::take_errors`]).
//!
//! Owns counting only: no clock, and no allocation unless something is
//! refused. The driver owns the tally and lends it to
//! `Session::feed_tallied` (the runtime uses a fresh one per feed), so it
//! never has to parse replies and an idle session carries no counters.
//! Counts wrap instead of panicking.

use super::command::Verb;
use super::reply::Reply;
use super::verdict::Rejections;

/// How one RCPT command was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcptOutcome {
    /// `250 2.1.5`: the recipient is in the envelope.
    Accepted,
    /// `550 5.1.1`: a local domain without that user.
    UnknownUser,
    /// `554 5.7.1`: not one of our domains.
    RelayDenied,
    /// `501`/`555`/`553`: a malformed command, path or parameter, the null
    /// path, or a non-ASCII address without SMTPUTF8.
    Syntax,
    /// `452 4.5.3`: the transaction's recipient limit.
    TooMany,
    /// `503`: no MAIL yet, or inside a BDAT transfer.
    OutOfSequence,
    /// `550 5.7.1`/`451 4.7.1` (or its own reply): a milter refused it.
    Milter,
}

impl RcptOutcome {
    /// Every outcome, in declaration order (`outcome as usize` indexes it).
    pub const ALL: [RcptOutcome; 7] = [
        RcptOutcome::Accepted,
        RcptOutcome::UnknownUser,
        RcptOutcome::RelayDenied,
        RcptOutcome::Syntax,
        RcptOutcome::TooMany,
        RcptOutcome::OutOfSequence,
        RcptOutcome::Milter,
    ];

    /// Lower-case name, e.g. for a metrics label.
    pub fn name(self) -> &'static str {
        match self {
            RcptOutcome::Accepted => "accepted",
            RcptOutcome::UnknownUser => "unknown_user",
            RcptOutcome::RelayDenied => "relay_denied",
            RcptOutcome::Syntax => "syntax",
            RcptOutcome::TooMany => "too_many",
            RcptOutcome::OutOfSequence => "out_of_sequence",
            RcptOutcome::Milter => "milter",
        }
    }
}

/// Why a complete message body was refused (nothing is spooled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the size limit: `552 5.3.4`.
    Size,
    /// A bare CR or LF in the content: `550 5.5.2`.
    BareCrLf,
}

impl Refusal {
    /// Every refusal, in declaration order (`refusal as usize` indexes it).
    pub const ALL: [Refusal; 2] = [Refusal::Size, Refusal::BareCrLf];

    /// Lower-case name, e.g. for a metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Size => "size",
            Refusal::BareCrLf => "bare_cr_lf",
        }
    }

    /// The reply that refuses the message.
    pub fn reply(self) -> Reply {
        match self {
            Refusal::Size => Reply::MessageTooBig,
            Refusal::BareCrLf => Reply::BareCrLf,
        }
    }
}

/// Counts since the driver last took them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    commands: [u32; Verb::ALL.len()],
    rcpts: [u32; RcptOutcome::ALL.len()],
    refused: [u32; Refusal::ALL.len()],
    rejections: Rejections,
    /// 4xx/5xx replies to the client (not 421) not taken yet.
    errors: u32,
}

impl Tally {
    pub(super) fn command(&mut self, verb: Verb) {
        bump(&mut self.commands[verb as usize]);
    }

    pub(super) fn rcpt(&mut self, outcome: RcptOutcome) {
        bump(&mut self.rcpts[outcome as usize]);
    }

    pub(super) fn refused(&mut self, refusal: Refusal) {
        bump(&mut self.refused[refusal as usize]);
    }

    /// Counts the reply the session just wrote, if it is an error.
    pub(super) fn replied(&mut self, reply: &[u8]) {
        if super::reply::is_error(reply) {
            bump(&mut self.errors);
        }
    }

    /// The error replies (4xx/5xx, not 421) since they were last taken.
    pub fn take_errors(&mut self) -> u32 {
        std::mem::take(&mut self.errors)
    }

    /// Where the session records its refusals.
    pub(super) fn rejections_mut(&mut self) -> &mut Rejections {
        &mut self.rejections
    }

    /// Command lines with this verb (whatever their reply).
    pub fn commands(&self, verb: Verb) -> u32 {
        self.commands[verb as usize]
    }

    /// RCPT commands answered this way.
    pub fn rcpts(&self, outcome: RcptOutcome) -> u32 {
        self.rcpts[outcome as usize]
    }

    /// RCPT commands answered with anything but 250.
    pub fn rejected_rcpts(&self) -> u32 {
        let all = self.rcpts.iter().fold(0u32, |sum, &n| sum.wrapping_add(n));
        all.wrapping_sub(self.rcpts(RcptOutcome::Accepted))
    }

    /// Message bodies refused for this reason.
    pub fn refusals(&self, refusal: Refusal) -> u32 {
        self.refused[refusal as usize]
    }

    /// The refusals of MAIL, RCPT, DATA/BDAT and messages, for the log.
    pub fn rejections(&self) -> &Rejections {
        &self.rejections
    }

    /// Nothing was counted.
    pub fn is_empty(&self) -> bool {
        let zero = |counts: &[u32]| counts.iter().all(|&n| n == 0);
        zero(&self.commands)
            && zero(&self.rcpts)
            && zero(&self.refused)
            && self.rejections.is_empty()
            && self.errors == 0
    }
}

fn bump(count: &mut u32) {
    *count = count.wrapping_add(1);
}

/// Feeds `input` to a fresh session (table: `a@example.com`, 16-octet
/// messages), answering every spool hand-off with a queue id.
#[cfg(test)]
pub(crate) fn tally_of(input: &[u8]) -> Tally {
    run_session(input, Some("ID"), |_| {})
}

/// [`tally_of`], answering every spool hand-off with `queue_id` (`None`:
/// the spool failed) after showing the waiting session to `ready`.
#[cfg(test)]
pub(crate) fn run_session(
    input: &[u8],
    queue_id: Option<&str>,
    mut ready: impl FnMut(&super::Session),
) -> Tally {
    use super::{Event, Session, SessionConfig};
    use crate::recipients::{Table, TableOptions};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let table = Table::parse(b"a@example.com\n", TableOptions::default()).unwrap();
    let config = Arc::new(SessionConfig {
        max_message_size: 16,
        command_timeout: Duration::from_secs(60),
        data_timeout: Duration::from_secs(60),
        ..SessionConfig::new("mx.test")
    });
    let now = Instant::now();
    let mut session = Session::new(config, now);
    let (mut tally, mut out, mut pos) = (Tally::default(), Vec::new(), 0);
    loop {
        let rest = &input[pos..];
        let (n, event) = session.feed_tallied(rest, now, &table, &mut out, &mut tally);
        pos += n;
        match event {
            Event::MessageReady => {
                ready(&session);
                session.spool_done_tallied(queue_id, &mut out, &mut tally);
            }
            Event::NeedInput | Event::Close => return tally,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_are_in_declaration_order() {
        for (i, verb) in Verb::ALL.iter().enumerate() {
            assert_eq!(*verb as usize, i);
        }
        for (i, outcome) in RcptOutcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, i);
        }
        for (i, refusal) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*refusal as usize, i);
        }
    }

    #[test]
    fn a_session_counts_what_it_decides() {
        let tally = tally_of(
            b"RCPT TO:<a@example.com>\r\nEHLO c\r\nMAIL FROM:<>\r\n\
              RCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n\
              DATA\r\nthis line is over sixteen octets\r\n.\r\n\
              MAIL FROM:<>\r\nRCPT TO:<a@example.com>\r\nBDAT 3 LAST\r\na\nb\
              MAIL FROM:<>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nok\r\n.\r\nQUIT\r\n",
        );
        assert_eq!(tally.commands(Verb::Rcpt), 5);
        assert_eq!(tally.commands(Verb::Mail), 3);
        assert_eq!(tally.commands(Verb::Bdat), 1);
        assert_eq!(tally.commands(Verb::Data), 2);
        assert_eq!(tally.commands(Verb::Quit), 1);
        assert_eq!(tally.rcpts(RcptOutcome::OutOfSequence), 1);
        assert_eq!(tally.rcpts(RcptOutcome::Accepted), 3);
        assert_eq!(tally.rcpts(RcptOutcome::UnknownUser), 1);
        assert_eq!(tally.rejected_rcpts(), 2);
        assert_eq!(tally.refusals(Refusal::Size), 1);
        assert_eq!(tally.refusals(Refusal::BareCrLf), 1);
    }

    #[test]
    fn errors_are_the_4xx_and_5xx_replies_but_421() {
        let mut tally = tally_of(
            b"MAIL FROM:<>\r\nEHLO c\r\nXYZZY\r\nVRFY a\r\nEXPN a\r\n\
              MAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<x@elsewhere>\r\n\
              RCPT TO:<a@example.com>\r\nDATA\r\nthis line is over sixteen octets\r\n.\r\n\
              NOOP\r\nQUIT\r\n",
        );
        // 503, 500, 502, 550, 554, 552: not 250, 252, 354 or 221.
        assert_eq!(tally.take_errors(), 6);
        assert_eq!(tally.take_errors(), 0, "taken");
        let long = [&[b'x'; 600][..], b"\r\n"].concat();
        assert_eq!(tally_of(&long).take_errors(), 1, "500 line too long");
    }

    #[test]
    fn rejected_is_every_outcome_but_accepted() {
        let mut tally = Tally::default();
        assert!(tally.is_empty());
        tally.rcpt(RcptOutcome::Accepted);
        tally.rcpt(RcptOutcome::UnknownUser);
        tally.rcpt(RcptOutcome::TooMany);
        tally.command(Verb::Rcpt);
        assert_eq!(tally.rejected_rcpts(), 2);
        assert_eq!(tally.commands(Verb::Rcpt), 1);
        assert!(!tally.is_empty());
    }
}
