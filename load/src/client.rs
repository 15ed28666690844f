//! One SMTP client session as a sans-IO state machine.
//!
//! Owns: what to send next and what each reply means — banner, EHLO, then
//! `messages` transactions (MAIL, K×RCPT, DATA, body; RSET instead when
//! nothing was accepted), then QUIT — and timing every command from the
//! moment it was handed out to the moment its reply arrived. With
//! PIPELINING (RFC 2920) MAIL, the RCPTs and DATA go out as one group, and
//! once DATA is answered with 354 the message is followed, in the same
//! write, by the next transaction's group (or QUIT): RFC 2920 §3.1 lets the
//! message content open a group. Every reply is still checked in order.
//! With `starttls` (RFC 3207) the first EHLO must offer STARTTLS; its 220
//! ends the plain-text part ([`Status::StartTls`]: nothing may follow it),
//! the driver runs the handshake and calls [`Client::handshake_done`], and
//! the session starts over inside TLS with a second EHLO.
//! Does not touch sockets, clocks or TLS: the driver feeds server bytes
//! (plaintext) and the current time in microseconds, and writes what
//! [`Client::output`] gives.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;

use super::reply::{Reply, ReplyError, ReplyParser};
use super::stats::Phase::{self, Banner, Data, Ehlo, EndOfData, Mail, Rcpt, Session, Starttls};
use super::stats::{Failure, Stats};

/// The recipe every session follows; shared read-only by all sessions.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Transactions per session.
    pub messages: u32,
    /// Recipients per transaction.
    pub rcpts: u32,
    /// Fraction of recipients that are unknown users.
    pub invalid_ratio: f64,
    /// Group MAIL, RCPTs and DATA when the server offers PIPELINING.
    pub pipelining: bool,
    /// STARTTLS after the first EHLO; the transactions run inside TLS.
    pub starttls: bool,
    /// Name sent in EHLO.
    pub helo: String,
    /// Envelope sender.
    pub from: String,
    /// Domain of valid recipients.
    pub rcpt_domain: String,
    /// Domain of unknown recipients.
    pub invalid_domain: String,
    /// Valid recipients cycle through `user0` … `user<users-1>`.
    pub users: u32,
    /// Message content, dot-stuffed, ending with `.\r\n`.
    pub body: Arc<[u8]>,
}

impl Plan {
    /// Whether the `seq`-th recipient of a session is an unknown user.
    /// Spreads invalid recipients evenly, so a session with `n` recipients
    /// has exactly `floor(n × ratio)` invalid ones.
    pub fn is_invalid(&self, seq: u64) -> bool {
        let step = |k: u64| (k as f64 * self.invalid_ratio).floor();
        step(seq + 1) > step(seq)
    }
}

/// Builds a message of exactly `size` octets (plus the `.\r\n` end): a
/// header block then lines of filler, none starting with a dot.
pub fn make_body(size: usize) -> Arc<[u8]> {
    let mut body = Vec::with_capacity(size + 3);
    let header = b"Subject: mxgate-load\r\n\r\n";
    if size >= header.len() {
        body.extend_from_slice(header);
    }
    while body.len() + 2 <= size {
        let line = (size - body.len() - 2).min(76);
        body.extend((0..line).map(|i| b'a' + (i % 26) as u8));
        body.extend_from_slice(b"\r\n");
    }
    if body.len() < size {
        body.push(b' '); // one octet short of a line: pad, still no bare LF
    }
    body.extend_from_slice(b".\r\n");
    body.into()
}

/// A command awaiting its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaited {
    /// A command whose reply time is a [`Phase`] sample.
    Timed(Phase),
    /// STARTTLS: its 220 starts the handshake, timed as [`Phase::Starttls`].
    Starttls,
    Rset,
    Quit,
}

/// Why a session cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientError {
    /// The server's output was not a well-formed reply.
    Reply(ReplyError),
    /// A reply arrived when no command was waiting for one.
    Unsolicited,
    /// `starttls`, and the server's EHLO reply did not offer STARTTLS.
    NoStarttls,
    /// Plaintext followed the 220 to STARTTLS (it would be taken for
    /// TLS-protected: the injection of CVE-2011-0411, server side).
    AfterStarttls,
}

impl ClientError {
    /// How the session's end is counted.
    pub fn failure(self) -> Failure {
        match self {
            ClientError::NoStarttls => Failure::NoStarttls,
            _ => Failure::Protocol,
        }
    }
}

/// Whether the session is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// More to send or to read.
    Running,
    /// STARTTLS was answered 220: run the TLS handshake, then call
    /// [`Client::handshake_done`].
    StartTls,
    /// QUIT was answered; close the connection.
    Finished,
}

/// Where the session stands with TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    /// Plain text (and, with `starttls`, STARTTLS not yet answered).
    Plain,
    /// STARTTLS was answered 220 when the session clock read `since` (the
    /// STARTTLS send time); the handshake runs.
    Handshake { since: u64 },
    /// The handshake is done.
    On,
}

/// One session's state.
#[derive(Debug)]
pub struct Client {
    plan: Arc<Plan>,
    parser: ReplyParser,
    /// When the session started (intended start, in open loop), µs.
    start: u64,
    pending: VecDeque<(Awaited, u64)>,
    out: Vec<u8>,
    out_pos: usize,
    /// Next body octet to send; `body.len()` when no body is due.
    body_pos: usize,
    pipelining: bool,
    messages_begun: u32,
    rcpt_seq: u64,
    rcpts_unsent: u32,
    accepted: u32,
    tls: Tls,
    finished: bool,
}

impl Client {
    /// A session that starts (awaits the greeting) at `start` µs.
    pub fn new(plan: Arc<Plan>, start: u64) -> Client {
        let body_pos = plan.body.len();
        Client {
            plan,
            parser: ReplyParser::default(),
            start,
            pending: VecDeque::from([(Awaited::Timed(Banner), start)]),
            out: Vec::with_capacity(256),
            out_pos: 0,
            body_pos,
            pipelining: false,
            messages_begun: 0,
            rcpt_seq: 0,
            rcpts_unsent: 0,
            accepted: 0,
            tls: Tls::Plain,
            finished: false,
        }
    }

    /// Bytes to write now, in order: the rest of the message, then queued
    /// commands (either or both may be empty). One vectored write sends both.
    pub fn output(&self) -> [&[u8]; 2] {
        [&self.plan.body[self.body_pos..], &self.out[self.out_pos..]]
    }

    /// `n` bytes of [`Client::output`] were written at `now`.
    pub fn wrote(&mut self, mut n: usize, now: u64) {
        let body_left = self.plan.body.len() - self.body_pos;
        if body_left > 0 {
            let taken = n.min(body_left);
            self.body_pos += taken;
            n -= taken;
            if taken == body_left {
                // End-of-data latency runs from the final dot leaving us.
                let end = self
                    .pending
                    .iter_mut()
                    .rfind(|p| p.0 == Awaited::Timed(EndOfData));
                if let Some(end) = end {
                    end.1 = now;
                }
            }
        }
        self.out_pos += n;
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
    }

    /// Whether the server has not greeted this session yet.
    pub fn awaiting_greeting(&self) -> bool {
        self.pending
            .front()
            .is_some_and(|p| p.0 == Awaited::Timed(Banner))
    }

    /// Whether QUIT has been answered.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Feeds server output received at `now`; records into `stats`.
    pub fn input(
        &mut self,
        mut bytes: &[u8],
        now: u64,
        stats: &mut Stats,
    ) -> Result<Status, ClientError> {
        while !bytes.is_empty() && !self.finished {
            if self.handshaking() {
                return Err(ClientError::AfterStarttls);
            }
            let (used, reply) = self.parser.parse(bytes).map_err(ClientError::Reply)?;
            bytes = &bytes[used..];
            if let Some(reply) = reply {
                self.on_reply(reply, now, stats)?;
            }
        }
        Ok(if self.finished {
            Status::Finished
        } else if self.handshaking() {
            Status::StartTls
        } else {
            Status::Running
        })
    }

    fn handshaking(&self) -> bool {
        matches!(self.tls, Tls::Handshake { .. })
    }

    /// The TLS handshake finished at `now`: the session starts over (RFC
    /// 3207 §4.2) with EHLO. Does nothing unless [`Status::StartTls`] was due.
    pub fn handshake_done(&mut self, now: u64, stats: &mut Stats) {
        if let Tls::Handshake { since } = self.tls {
            stats.record(Phase::Starttls, now.saturating_sub(since));
            self.tls = Tls::On;
            self.send(Awaited::Timed(Ehlo), now);
        }
    }

    fn on_reply(&mut self, reply: Reply, now: u64, stats: &mut Stats) -> Result<(), ClientError> {
        let (awaited, sent) = self.pending.pop_front().ok_or(ClientError::Unsolicited)?;
        let ok = reply.is_positive();
        if let Awaited::Timed(phase) = awaited {
            stats.record(phase, now.saturating_sub(sent));
            if !ok {
                stats.refused(phase, reply.code);
            }
        }
        match awaited {
            Awaited::Timed(Banner) if ok => self.send(Awaited::Timed(Ehlo), now),
            Awaited::Timed(Ehlo) if ok => self.after_ehlo(reply, now, stats)?,
            Awaited::Timed(Banner | Ehlo) => self.send(Awaited::Quit, now),
            Awaited::Starttls if reply.code == 220 => self.tls = Tls::Handshake { since: sent },
            Awaited::Starttls => {
                stats.refused(Phase::Starttls, reply.code);
                self.send(Awaited::Quit, now);
            }
            Awaited::Timed(Mail) => self.after_mail(ok, now, stats),
            Awaited::Timed(Rcpt) => self.after_rcpt(ok, now, stats),
            Awaited::Timed(Data) => self.after_data(reply.code, now, stats),
            Awaited::Timed(EndOfData) => {
                let counter = if ok {
                    &mut stats.counts.messages_accepted
                } else {
                    &mut stats.counts.messages_refused
                };
                *counter += 1;
                if !self.pipelining {
                    self.next_message(now, stats);
                } // else the next group followed the message.
            }
            Awaited::Rset => self.next_message(now, stats),
            // QUIT ends the session phase; nothing else waits on `Session`
            // (nor on `Starttls`: STARTTLS is `Awaited::Starttls`).
            Awaited::Quit | Awaited::Timed(Session | Starttls) => self.on_quit(reply, now, stats),
        }
        Ok(())
    }

    fn after_ehlo(&mut self, reply: Reply, now: u64, stats: &mut Stats) -> Result<(), ClientError> {
        if self.plan.starttls && self.tls == Tls::Plain {
            if !reply.starttls {
                return Err(ClientError::NoStarttls);
            }
            self.send(Awaited::Starttls, now);
        } else {
            self.pipelining = self.plan.pipelining && reply.pipelining;
            self.next_message(now, stats);
        }
        Ok(())
    }

    fn after_mail(&mut self, ok: bool, now: u64, stats: &mut Stats) {
        if self.pipelining {
            return; // RCPTs and DATA are already on their way.
        }
        if ok && self.rcpts_unsent > 0 {
            self.send(Awaited::Timed(Rcpt), now);
        } else {
            self.abort(now, stats);
        }
    }

    fn after_rcpt(&mut self, ok: bool, now: u64, stats: &mut Stats) {
        if ok {
            self.accepted += 1;
            stats.counts.rcpt_accepted += 1;
        } else {
            stats.counts.rcpt_rejected += 1;
        }
        if self.pipelining {
            return;
        }
        if self.rcpts_unsent > 0 {
            self.send(Awaited::Timed(Rcpt), now);
        } else if self.accepted > 0 {
            self.send(Awaited::Timed(Data), now);
        } else {
            self.abort(now, stats);
        }
    }

    fn after_data(&mut self, code: u16, now: u64, stats: &mut Stats) {
        if code == 354 {
            self.body_pos = 0;
            self.pending.push_back((Awaited::Timed(EndOfData), now));
            if self.pipelining {
                // Queued behind the message: they leave with its end.
                self.next_message(now, stats);
            }
        } else {
            self.abort(now, stats);
        }
    }

    fn on_quit(&mut self, reply: Reply, now: u64, stats: &mut Stats) {
        stats.record(Phase::Session, now.saturating_sub(self.start));
        if reply.is_positive() {
            stats.counts.sessions_completed += 1;
        } else {
            stats.refused(Phase::Session, reply.code);
        }
        self.finished = true;
    }

    /// The transaction ends without a message: reset it.
    fn abort(&mut self, now: u64, stats: &mut Stats) {
        stats.counts.transactions_aborted += 1;
        self.send(Awaited::Rset, now);
    }

    /// Starts the next transaction, or QUIT when all are done.
    fn next_message(&mut self, now: u64, stats: &mut Stats) {
        if self.messages_begun == self.plan.messages {
            self.send(Awaited::Quit, now);
            return;
        }
        self.messages_begun += 1;
        self.accepted = 0;
        self.rcpts_unsent = self.plan.rcpts;
        stats.counts.transactions += 1;
        self.send(Awaited::Timed(Mail), now);
        if self.pipelining {
            while self.rcpts_unsent > 0 {
                self.send(Awaited::Timed(Rcpt), now);
            }
            self.send(Awaited::Timed(Data), now);
        }
        stats.counts.rcpt_sent += u64::from(self.plan.rcpts);
    }

    /// Queues one command and remembers it awaits a reply.
    fn send(&mut self, awaited: Awaited, now: u64) {
        let plan = &*self.plan;
        let out = &mut self.out;
        // Writing into a Vec cannot fail.
        let _ = match awaited {
            Awaited::Timed(Ehlo) => write!(out, "EHLO {}\r\n", plan.helo),
            Awaited::Timed(Mail) => write!(out, "MAIL FROM:<{}>\r\n", plan.from),
            Awaited::Timed(Rcpt) => {
                let seq = self.rcpt_seq;
                self.rcpt_seq += 1;
                self.rcpts_unsent -= 1;
                if plan.is_invalid(seq) {
                    write!(out, "RCPT TO:<nouser-{seq}@{}>\r\n", plan.invalid_domain)
                } else {
                    let user = seq % u64::from(plan.users.max(1));
                    write!(out, "RCPT TO:<user{user}@{}>\r\n", plan.rcpt_domain)
                }
            }
            Awaited::Timed(Data) => write!(out, "DATA\r\n"),
            Awaited::Starttls => write!(out, "STARTTLS\r\n"),
            Awaited::Rset => write!(out, "RSET\r\n"),
            Awaited::Quit => write!(out, "QUIT\r\n"),
            Awaited::Timed(Banner | Starttls | EndOfData | Session) => Ok(()),
        };
        self.pending.push_back((awaited, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(messages: u32, rcpts: u32, invalid_ratio: f64, pipelining: bool) -> Arc<Plan> {
        Arc::new(Plan {
            messages,
            rcpts,
            invalid_ratio,
            pipelining,
            starttls: false,
            helo: "load.test".into(),
            from: "load@test".into(),
            rcpt_domain: "example.com".into(),
            invalid_domain: "example.com".into(),
            users: 10,
            body: make_body(40),
        })
    }

    fn tls_plan() -> Arc<Plan> {
        let mut p = Arc::unwrap_or_clone(plan(1, 1, 0.0, true));
        p.starttls = true;
        Arc::new(p)
    }

    /// Takes everything the client wants to write, as a string.
    fn drain(client: &mut Client, now: u64) -> String {
        let mut sent = Vec::new();
        loop {
            let chunk = client.output().concat();
            if chunk.is_empty() {
                return String::from_utf8(sent).unwrap();
            }
            client.wrote(chunk.len(), now);
            sent.extend(chunk);
        }
    }

    fn feed(client: &mut Client, reply: &str, now: u64, stats: &mut Stats) -> String {
        client.input(reply.as_bytes(), now, stats).unwrap();
        drain(client, now)
    }

    #[test]
    fn body_has_the_asked_size_and_no_leading_dot() {
        for size in [0, 1, 2, 3, 25, 26, 27, 100, 1024, 4096] {
            let body = make_body(size);
            assert_eq!(body.len(), size + 3, "size {size}");
            assert!(body.ends_with(b".\r\n"));
            let content = &body[..size];
            assert!(!content.windows(3).any(|w| w == b"\n.\r" || w == b"\n.\n"));
            assert_eq!(content.iter().filter(|&&b| b == b'\n').count(), {
                content.windows(2).filter(|w| w == b"\r\n").count()
            });
        }
    }

    #[test]
    fn invalid_ratio_is_exact_per_session() {
        let p = plan(1, 1, 0.25, false);
        assert_eq!((0..100).filter(|&s| p.is_invalid(s)).count(), 25);
        let p = plan(1, 1, 1.0 / 3.0, false);
        assert_eq!((0..30).filter(|&s| p.is_invalid(s)).count(), 10);
        let p = plan(1, 1, 0.0, false);
        assert!(!(0..100).any(|s| p.is_invalid(s)));
    }

    #[test]
    fn one_message_lock_step_transcript() {
        let mut stats = Stats::default();
        let mut c = Client::new(plan(1, 2, 0.5, false), 0);
        assert_eq!(drain(&mut c, 0), "");
        assert_eq!(
            feed(&mut c, "220 hi\r\n", 10, &mut stats),
            "EHLO load.test\r\n"
        );
        let ehlo = "250-mx\r\n250 PIPELINING\r\n";
        assert_eq!(
            feed(&mut c, ehlo, 20, &mut stats),
            "MAIL FROM:<load@test>\r\n"
        );
        assert_eq!(
            feed(&mut c, "250 ok\r\n", 30, &mut stats),
            "RCPT TO:<user0@example.com>\r\n"
        );
        assert_eq!(
            feed(&mut c, "250 ok\r\n", 40, &mut stats),
            "RCPT TO:<nouser-1@example.com>\r\n"
        );
        assert_eq!(feed(&mut c, "550 no\r\n", 50, &mut stats), "DATA\r\n");
        let body = feed(&mut c, "354 go\r\n", 60, &mut stats);
        assert_eq!(body.len(), 43);
        assert!(body.ends_with("\r\n.\r\n"));
        assert_eq!(feed(&mut c, "250 queued\r\n", 75, &mut stats), "QUIT\r\n");
        assert_eq!(
            c.input(b"221 bye\r\n", 90, &mut stats),
            Ok(Status::Finished)
        );
        assert_eq!(stats.counts.messages_accepted, 1);
        assert_eq!(stats.counts.rcpt_accepted, 1);
        assert_eq!(stats.counts.rcpt_rejected, 1);
        assert_eq!(stats.perm_fail[Phase::Rcpt as usize], 1);
        assert_eq!(stats.histogram(Phase::Banner).max(), 10);
        assert_eq!(stats.histogram(Phase::EndOfData).max(), 15);
        assert_eq!(stats.histogram(Phase::Session).max(), 90);
        assert_eq!(stats.counts.sessions_completed, 1);
    }

    #[test]
    fn all_rejected_sends_rset_instead_of_data() {
        let mut stats = Stats::default();
        let mut c = Client::new(plan(2, 1, 1.0, false), 0);
        feed(&mut c, "220 hi\r\n", 1, &mut stats);
        feed(&mut c, "250 mx\r\n", 2, &mut stats);
        feed(&mut c, "250 ok\r\n", 3, &mut stats);
        assert_eq!(feed(&mut c, "550 no\r\n", 4, &mut stats), "RSET\r\n");
        assert_eq!(
            feed(&mut c, "250 ok\r\n", 5, &mut stats),
            "MAIL FROM:<load@test>\r\n"
        );
        assert_eq!(stats.counts.transactions_aborted, 1);
    }

    #[test]
    fn pipelining_groups_mail_rcpts_and_data() {
        let mut stats = Stats::default();
        let mut c = Client::new(plan(1, 2, 0.0, true), 0);
        feed(&mut c, "220 hi\r\n", 1, &mut stats);
        let group = feed(&mut c, "250-mx\r\n250 PIPELINING\r\n", 2, &mut stats);
        assert_eq!(
            group,
            "MAIL FROM:<load@test>\r\nRCPT TO:<user0@example.com>\r\n\
             RCPT TO:<user1@example.com>\r\nDATA\r\n"
        );
        let replies = "250 a\r\n250 b\r\n250 c\r\n354 d\r\n";
        let body = feed(&mut c, replies, 3, &mut stats);
        assert!(
            body.ends_with("\r\n.\r\nQUIT\r\n"),
            "QUIT ends the last group"
        );
        assert_eq!(stats.histogram(Phase::Rcpt).len(), 2);
    }

    #[test]
    fn pipelining_sends_the_next_group_behind_the_message() {
        let mut stats = Stats::default();
        let mut c = Client::new(plan(3, 1, 0.0, true), 0);
        feed(&mut c, "220 hi\r\n", 1, &mut stats);
        let group = feed(&mut c, "250 PIPELINING\r\n", 2, &mut stats);
        assert_eq!(
            group,
            "MAIL FROM:<load@test>\r\nRCPT TO:<user0@example.com>\r\nDATA\r\n"
        );
        let sent = feed(&mut c, "250 a\r\n250 b\r\n354 c\r\n", 3, &mut stats);
        let (body, next) = sent.split_at(43);
        assert!(body.ends_with("\r\n.\r\n"));
        assert_eq!(
            next,
            "MAIL FROM:<load@test>\r\nRCPT TO:<user1@example.com>\r\nDATA\r\n"
        );
        // The first message is refused, the second transaction goes on.
        let replies = "554 5.6.0 no\r\n250 a\r\n250 b\r\n354 c\r\n";
        let sent = feed(&mut c, replies, 10, &mut stats);
        assert!(
            sent.ends_with(".\r\nMAIL FROM:<load@test>\r\nRCPT TO:<user2@example.com>\r\nDATA\r\n")
        );
        let sent = feed(
            &mut c,
            "250 q\r\n250 a\r\n250 b\r\n354 c\r\n",
            20,
            &mut stats,
        );
        assert!(sent.ends_with(".\r\nQUIT\r\n"));
        assert_eq!(
            c.input(b"250 q\r\n221 bye\r\n", 30, &mut stats),
            Ok(Status::Finished)
        );
        assert_eq!(stats.counts.transactions, 3);
        assert_eq!(stats.counts.messages_accepted, 2);
        assert_eq!(stats.counts.messages_refused, 1);
        assert_eq!(stats.perm_fail[Phase::EndOfData as usize], 1);
        assert_eq!(stats.histogram(Phase::EndOfData).len(), 3);
        // End of data is timed from the final dot: 3 → 10, 10 → 20, 20 → 30.
        assert_eq!(stats.histogram(Phase::EndOfData).max(), 10);
        assert_eq!(stats.histogram(Phase::Mail).len(), 3);
    }

    #[test]
    fn a_partial_write_resumes_in_the_message_then_the_commands() {
        let mut stats = Stats::default();
        let mut c = Client::new(plan(2, 1, 0.0, true), 0);
        feed(&mut c, "220 hi\r\n", 1, &mut stats);
        feed(&mut c, "250 PIPELINING\r\n", 2, &mut stats);
        c.input(b"250 a\r\n250 b\r\n354 c\r\n", 3, &mut stats)
            .unwrap();
        let whole = c.output().concat();
        for n in [10, 33, 1, 20] {
            c.wrote(n, 4);
        }
        assert_eq!(c.output().concat(), whole[64..]);
        assert_eq!(
            drain(&mut c, 5),
            String::from_utf8(whole[64..].to_vec()).unwrap()
        );
    }

    #[test]
    fn pipelining_is_not_used_unless_offered() {
        let mut stats = Stats::default();
        let mut c = Client::new(plan(1, 2, 0.0, true), 0);
        feed(&mut c, "220 hi\r\n", 1, &mut stats);
        let first = feed(&mut c, "250 mx\r\n", 2, &mut stats);
        assert_eq!(first, "MAIL FROM:<load@test>\r\n");
    }

    #[test]
    fn pipelined_all_rejected_gets_rset_after_data_refusal() {
        let mut stats = Stats::default();
        let mut c = Client::new(plan(1, 1, 1.0, true), 0);
        feed(&mut c, "220 hi\r\n", 1, &mut stats);
        feed(&mut c, "250 PIPELINING\r\n", 2, &mut stats);
        let replies = "250 a\r\n550 no\r\n554 no valid recipients\r\n";
        assert_eq!(feed(&mut c, replies, 3, &mut stats), "RSET\r\n");
        assert_eq!(feed(&mut c, "250 ok\r\n", 4, &mut stats), "QUIT\r\n");
        assert_eq!(stats.counts.transactions_aborted, 1);
        assert_eq!(stats.perm_fail[Phase::Data as usize], 1);
    }

    #[test]
    fn refused_banner_quits_and_garbage_is_an_error() {
        let mut stats = Stats::default();
        let mut c = Client::new(plan(1, 1, 0.0, false), 0);
        assert_eq!(feed(&mut c, "554 go away\r\n", 1, &mut stats), "QUIT\r\n");
        assert_eq!(stats.perm_fail[Phase::Banner as usize], 1);
        let mut c = Client::new(plan(1, 1, 0.0, false), 0);
        let err = c.input(b"HTTP/1.1 400\r\n", 1, &mut stats);
        assert_eq!(err, Err(ClientError::Reply(ReplyError::Malformed)));
    }

    #[test]
    fn whole_transcript_split_anywhere_gives_the_same_counts() {
        let server = "220 hi\r\n250-mx\r\n250 PIPELINING\r\n250 a\r\n250 b\r\n550 c\r\n\
                      354 d\r\n250 e\r\n221 f\r\n";
        for cut in 0..=server.len() {
            let mut stats = Stats::default();
            let mut c = Client::new(plan(1, 2, 0.5, true), 0);
            c.input(&server.as_bytes()[..cut], 1, &mut stats).unwrap();
            drain(&mut c, 1);
            c.input(&server.as_bytes()[cut..], 2, &mut stats).unwrap();
            assert!(c.is_finished(), "cut {cut}");
            assert_eq!(stats.counts.messages_accepted, 1, "cut {cut}");
            assert_eq!(stats.counts.rcpt_rejected, 1, "cut {cut}");
        }
    }

    #[test]
    fn starttls_then_the_session_starts_over_inside_tls() {
        let mut stats = Stats::default();
        let mut c = Client::new(tls_plan(), 0);
        feed(&mut c, "220 hi\r\n", 1, &mut stats);
        let ehlo = "250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n";
        assert_eq!(feed(&mut c, ehlo, 2, &mut stats), "STARTTLS\r\n");
        let ready = c.input(b"220 2.0.0 Ready to start TLS\r\n", 5, &mut stats);
        assert_eq!(ready, Ok(Status::StartTls));
        assert_eq!(drain(&mut c, 5), "", "nothing may follow STARTTLS");
        c.handshake_done(40, &mut stats);
        assert_eq!(drain(&mut c, 40), "EHLO load.test\r\n");
        // Inside TLS STARTTLS is not asked for again, even if offered.
        let group = feed(&mut c, ehlo, 50, &mut stats);
        assert!(group.starts_with("MAIL FROM:<load@test>\r\n"), "{group}");
        assert_eq!(stats.histogram(Phase::Starttls).len(), 1);
        assert_eq!(stats.histogram(Phase::Starttls).max(), 38);
        assert_eq!(stats.histogram(Phase::Ehlo).len(), 2);
        c.handshake_done(60, &mut stats);
        assert_eq!(stats.histogram(Phase::Starttls).len(), 1, "once only");
    }

    #[test]
    fn starttls_not_offered_is_an_error() {
        let mut stats = Stats::default();
        let mut c = Client::new(tls_plan(), 0);
        feed(&mut c, "220 hi\r\n", 1, &mut stats);
        let got = c.input(b"250-mx\r\n250 PIPELINING\r\n", 2, &mut stats);
        assert_eq!(got, Err(ClientError::NoStarttls));
        assert_eq!(ClientError::NoStarttls.failure(), Failure::NoStarttls);
    }

    #[test]
    fn plaintext_after_the_220_to_starttls_is_an_error() {
        for tail in ["250 injected\r\n", "x", "\r\n"] {
            let mut stats = Stats::default();
            let mut c = Client::new(tls_plan(), 0);
            feed(&mut c, "220 hi\r\n250 STARTTLS\r\n", 1, &mut stats);
            let ready = format!("220 go\r\n{tail}");
            let got = c.input(ready.as_bytes(), 2, &mut stats);
            assert_eq!(got, Err(ClientError::AfterStarttls), "{tail:?}");
        }
    }

    #[test]
    fn starttls_refused_quits() {
        let mut stats = Stats::default();
        let mut c = Client::new(tls_plan(), 0);
        feed(&mut c, "220 hi\r\n250 STARTTLS\r\n", 1, &mut stats);
        let reply = "454 4.7.0 TLS not available\r\n";
        assert_eq!(feed(&mut c, reply, 2, &mut stats), "QUIT\r\n");
        assert_eq!(stats.temp_fail[Phase::Starttls as usize], 1);
        assert_eq!(c.input(b"221 bye\r\n", 3, &mut stats), Ok(Status::Finished));
    }
}
