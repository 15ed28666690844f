//! What the session decided about mail, in the words of the mail log (as
//! Postfix's `NOQUEUE: reject:` and queue-id lines): each refusal of a MAIL,
//! RCPT, DATA or BDAT command or of a finished message, with the reply it
//! got and the envelope it concerned ([`Rejection`]), and each message
//! queued ([`Queued`]).
//!
//! Owns the records and their log lines. The session copies each refusal
//! into the driver's [`Rejections`] (part of the feed's `Tally`): a few
//! short byte strings into one buffer, only when something is refused, and
//! at most [`LISTED`] per feed, so a client pipelining a thousand bad
//! commands costs bounded memory (the rest are only counted). Does not log,
//! and knows neither the client's address nor the clock: the driver names
//! the client when it writes the lines.

use std::fmt::{self, Display, Write as _};
use std::io::Write as _;

/// Refusals itemised per feed; later ones are only counted.
pub const LISTED: usize = 32;
/// Recipients named in one refusal; the rest are counted.
const NAMED_RCPTS: usize = 4;

/// The command a refusal answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Mail,
    Rcpt,
    /// The DATA or BDAT command itself (no valid recipient, out of order).
    Data,
    /// The finished message (size, bare CR/LF, spool failure).
    EndOfMessage,
}

impl Stage {
    /// The name in the log line, as Postfix writes it.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Data => "DATA",
            Stage::EndOfMessage => "END-OF-MESSAGE",
        }
    }
}

/// One refusal, borrowed from [`Rejections`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection<'a> {
    pub stage: Stage,
    /// The reply line as sent, without its CRLF.
    pub reply: &'a [u8],
    /// The HELO/EHLO name at the time.
    pub helo: &'a [u8],
    /// The sender as the log shows it (`<a@b>`, `<>`); empty without one
    /// (RCPT before MAIL, a MAIL whose path did not parse).
    pub from: &'a [u8],
    /// The recipients concerned as the log shows them (`<a@b>,<c@d>`, then
    /// ` (+n more)`); empty if none.
    pub to: &'a [u8],
}

impl<'a> Rejection<'a> {
    /// The reply code, e.g. 550.
    pub fn code(&self) -> u16 {
        self.reply
            .get(..3)
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| digits.parse().ok())
            .unwrap_or(0)
    }

    /// The log line, naming the client as `client`: `reject: RCPT from
    /// [client] helo=<…>: 550 5.1.1 …; from=<…> to=<…>`.
    pub fn line<C: Display>(self, client: C) -> Line<Self, C> {
        Line {
            record: self,
            client,
        }
    }
}

/// A record's log line, naming the client; see [`Rejection::line`] and
/// [`Queued::line`].
pub struct Line<T, C> {
    record: T,
    client: C,
}

impl<C: Display> Display for Line<Rejection<'_>, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.record;
        write!(
            f,
            "reject: {} from [{}] helo=<{}>: {}",
            r.stage.name(),
            self.client,
            Printable(r.helo),
            Printable(r.reply)
        )?;
        let mut separator = "; ";
        for (key, value) in [("from", r.from), ("to", r.to)] {
            if !value.is_empty() {
                write!(f, "{separator}{key}={}", Printable(value))?;
                separator = " ";
            }
        }
        Ok(())
    }
}

/// Where one listed refusal's texts lie in [`Rejections::text`]: `reply`,
/// `from` and `to` one after the other from `start`, `helo` apart (shared
/// with the refusal before it when the name did not change).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    stage: Stage,
    helo: (u32, u32),
    start: u32,
    /// Ends of `reply`, `from` and `to`.
    ends: [u32; 3],
}

/// The refusals of one feed: the first [`LISTED`] itemised, the rest
/// counted. Costs nothing until something is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejections {
    text: Vec<u8>,
    listed: Vec<Listed>,
    unlisted: u32,
}

impl Rejections {
    /// Records a refusal: `reply` as written (CRLF included or not), the
    /// sender (`None`: none known) and the recipients concerned.
    pub(super) fn push<R: AsRef<[u8]>>(
        &mut self,
        stage: Stage,
        reply: &[u8],
        helo: &[u8],
        from: Option<&[u8]>,
        to: &[R],
    ) {
        if self.listed.len() >= LISTED {
            self.unlisted = self.unlisted.wrapping_add(1);
            return;
        }
        let helo = self.place_helo(helo);
        let start = self.end();
        let reply = reply.strip_suffix(b"\r\n").unwrap_or(reply);
        self.text.extend_from_slice(reply);
        let reply_end = self.end();
        if let Some(from) = from {
            self.bracketed(from);
        }
        let from_end = self.end();
        self.recipients(to);
        let ends = [reply_end, from_end, self.end()];
        self.listed.push(Listed {
            stage,
            helo,
            start,
            ends,
        });
    }

    /// The itemised refusals, in the order they were made.
    pub fn iter(&self) -> impl Iterator<Item = Rejection<'_>> + '_ {
        self.listed.iter().map(|listed| {
            let span = |(from, to): (u32, u32)| &self.text[from as usize..to as usize];
            let [reply, from, to] = listed.ends;
            Rejection {
                stage: listed.stage,
                reply: span((listed.start, reply)),
                helo: span(listed.helo),
                from: span((reply, from)),
                to: span((from, to)),
            }
        })
    }

    /// Refusals beyond the first [`LISTED`], not itemised.
    pub fn unlisted(&self) -> u32 {
        self.unlisted
    }

    pub fn is_empty(&self) -> bool {
        self.listed.is_empty() && self.unlisted == 0
    }

    /// The span of `helo` in the text: the last refusal's if it is the same
    /// name (it rarely changes within a feed), else a new copy.
    fn place_helo(&mut self, helo: &[u8]) -> (u32, u32) {
        if let Some(last) = self.listed.last() {
            let (from, to) = last.helo;
            if &self.text[from as usize..to as usize] == helo {
                return last.helo;
            }
        }
        let start = self.end();
        self.text.extend_from_slice(helo);
        (start, self.end())
    }

    /// `<a>,<b>` for the first [`NAMED_RCPTS`], then ` (+n more)`.
    fn recipients<R: AsRef<[u8]>>(&mut self, to: &[R]) {
        for (i, rcpt) in to.iter().take(NAMED_RCPTS).enumerate() {
            if i > 0 {
                self.text.push(b',');
            }
            self.bracketed(rcpt.as_ref());
        }
        if to.len() > NAMED_RCPTS {
            let more = to.len() - NAMED_RCPTS;
            let _ = write!(self.text, " (+{more} more)");
        }
    }

    fn bracketed(&mut self, address: &[u8]) {
        self.text.push(b'<');
        self.text.extend_from_slice(address);
        self.text.push(b'>');
    }

    /// The text's length as a span bound: bounded by [`LISTED`] refusals of
    /// a few hundred octets each.
    fn end(&self) -> u32 {
        u32::try_from(self.text.len()).expect("bounded by LISTED")
    }
}

/// A message durably queued: its log line names the queue id, the
/// envelope's sender, how many recipients and how large it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued<'a> {
    pub queue_id: &'a str,
    pub helo: &'a [u8],
    /// The sender, without angle brackets (empty for `<>`).
    pub from: &'a [u8],
    pub rcpts: usize,
    /// Octets of content as received (dot-stuffed for DATA).
    pub size: u64,
}

impl<'a> Queued<'a> {
    /// The log line, naming the client as `client`: `queued as ID: from
    /// [client] helo=<…>; from=<…> nrcpt=N size=S`.
    pub fn line<C: Display>(self, client: C) -> Line<Self, C> {
        Line {
            record: self,
            client,
        }
    }
}

impl<C: Display> Display for Line<Queued<'_>, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = &self.record;
        write!(
            f,
            "queued as {}: from [{}] helo=<{}>; from=<{}> nrcpt={} size={}",
            q.queue_id,
            self.client,
            Printable(q.helo),
            Printable(q.from),
            q.rcpts,
            q.size
        )
    }
}

/// Client-sent octets made safe for a log line: UTF-8 as is (invalid
/// sequences replaced), control characters escaped so a client cannot
/// forge lines or drive a terminal. Every client-sent text that reaches the
/// log goes through this: the log's own sanitizer is off (see
/// [`crate::logging`]).
pub struct Printable<'a>(pub &'a [u8]);

impl Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            // Runs of plain characters go out whole: a log line is mostly
            // plain, and one write per character costs more than the rest.
            let mut rest = chunk.valid();
            while let Some(at) = rest.find(char::is_control) {
                f.write_str(&rest[..at])?;
                let c = rest[at..].chars().next().expect("found at `at`");
                write!(f, "{}", c.escape_default())?;
                rest = &rest[at + c.len_utf8()..];
            }
            f.write_str(rest)?;
            if !chunk.invalid().is_empty() {
                f.write_char(char::REPLACEMENT_CHARACTER)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "verdict_tests.rs"]
mod tests;
