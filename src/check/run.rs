//! One message's way through the milters, in order: for the milter at
//! hand, the stages of the session replayed at end of data (connect, HELO,
//! MAIL, each RCPT, DATA, the headers, end of headers, the body in chunks,
//! end of message) with their macros; each milter's final answer; the
//! verdict once one refuses the message or all are done. A milter whose
//! conversation from the session's recipient checks goes on ([`Run::resume`])
//! is told only what it has not heard. Sans-IO like the
//! client it drives: the pool owns the sockets and says when a milter
//! answered or failed.

use std::net::SocketAddr;
use std::time::Instant;

use super::message::Plain;
use super::milter::{Answer, Client, HeaderEdit, Stage, Step, BODY_CHUNK};
use super::MilterDefault;
use crate::proto::BodyKind;
use crate::spool::Message;
use crate::tls::Negotiated;

/// Octets of stages sent ahead while replies are due: a large body goes
/// in windows, not copied whole into the client's output.
const WINDOW: usize = BODY_CHUNK;

/// Where a conversation kept for a session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Told {
    /// Within a transaction: the HELO, sender and recipients it was told,
    /// in order.
    Transaction(Vec<u8>, Vec<u8>, Vec<Vec<u8>>),
    /// Between messages: the session's HELO and TLS state; the milter
    /// awaits the next MAIL.
    Session(Vec<u8>, Option<Negotiated>),
}

impl Told {
    /// The same, less its last recipient: one the milter refused, which
    /// the session's envelope will not hold.
    fn refused_last(self) -> Told {
        match self {
            Told::Transaction(helo, from, mut rcpts) => {
                rcpts.pop();
                Told::Transaction(helo, from, rcpts)
            }
            session => session,
        }
    }
}

/// How a check goes on from a kept conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoOn {
    /// From where the conversation stands.
    Here,
    /// From MAIL, once the milter forgot the transaction it was told
    /// (SMFIC_ABORT).
    AfterAbort,
}

/// What a finished run means for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every milter let it through: spool it (with their header edits
    /// applied, in quarantine if one asked).
    Pass { quarantine: Option<String> },
    /// Refuse it: `550 5.7.1`, or the milter's own reply.
    Reject(Option<String>),
    /// Refuse it for now: `451 4.7.1`, or the milter's own reply.
    Tempfail(Option<String>),
    /// Say 250 and drop it.
    Discard,
}

impl Verdict {
    /// The action's name in logs and metrics.
    pub fn action(&self) -> &'static str {
        match self {
            Verdict::Pass { quarantine: None } => "accept",
            Verdict::Pass {
                quarantine: Some(_),
            } => "quarantine",
            Verdict::Reject(_) => "reject",
            Verdict::Tempfail(_) => "tempfail",
            Verdict::Discard => "discard",
        }
    }
}

/// The next stage to tell the milter at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    Connect,
    Helo,
    Mail,
    Rcpt(usize),
    Data,
    Header(usize),
    EndOfHeaders,
    /// The body from this offset.
    Body(usize),
    EndOfMessage,
    /// End of message was sent.
    Done,
}

/// Where the milter at hand is after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A stage awaits its reply.
    Waiting,
    /// The milter at hand gave its final answer.
    Answered(Answer),
}

/// One message on its way through the milters.
pub struct Run {
    pub message: Message,
    plain: Plain,
    headers: Vec<(String, Vec<u8>)>,
    /// The milter at hand (an index into the configured ones).
    pub milter: usize,
    cursor: Cursor,
    edits: Vec<HeaderEdit>,
    quarantine: Option<String>,
    hostname: String,
    /// Only the session's stages up to its last RCPT are told (a check of
    /// that recipient); the milters then forget the message.
    pub rcpt_only: bool,
    /// The milter at hand went on from an earlier check ([`Run::resume`]).
    resumed: bool,
}

impl Run {
    pub fn new(message: Message, hostname: &str) -> Run {
        let stuffed = message.envelope.body_kind != Some(BodyKind::Bdat);
        let plain = Plain::new(&message.body, stuffed);
        let headers = plain.headers().map(|(n, v)| (n.to_string(), v)).collect();
        Run {
            message,
            plain,
            headers,
            milter: 0,
            cursor: Cursor::Connect,
            edits: Vec::new(),
            quarantine: None,
            hostname: hostname.to_string(),
            rcpt_only: false,
            resumed: false,
        }
    }

    /// A check of the envelope's last recipient: connect, HELO, MAIL and
    /// that RCPT, for each milter in turn.
    pub fn for_rcpt(message: Message, hostname: &str) -> Run {
        Run {
            rcpt_only: true,
            ..Run::new(message, hostname)
        }
    }

    /// Tells `client` (negotiated, in step) the stages from the cursor on,
    /// given the `answer` to all it was told so far: every stage up to the
    /// run's end at once, or while replies are due up to [`WINDOW`] octets
    /// of them; then waits for the replies, until the milter has answered
    /// for good.
    pub fn advance(&mut self, client: &mut Client, answer: Answer, now: Instant) -> Progress {
        if answer == Answer::Continue {
            while self.cursor != Cursor::Done
                && (!client.is_waiting() || client.poll_output().len() < WINDOW)
            {
                let at = self.cursor;
                self.cursor = self.after(at);
                // A stage skipped or left unanswered is a continue.
                let _ = self.send(at, client, now);
            }
            if client.is_waiting() {
                return Progress::Waiting;
            }
        }
        if self.cursor == Cursor::Done {
            let edits = client.take_edits();
            self.edits.extend(edits.headers);
            self.quarantine = edits.quarantine.or(self.quarantine.take());
        }
        Progress::Answered(answer)
    }

    /// The milter at hand answered for good: the verdict, or `None` when
    /// the next milter is due (the cursor starts over for it).
    pub fn answered(&mut self, answer: Answer, milters: usize) -> Option<Verdict> {
        match answer {
            Answer::Continue | Answer::Accept => self.next_milter(milters),
            Answer::Reject(reply) => Some(Verdict::Reject(reply)),
            Answer::Tempfail(reply) => Some(Verdict::Tempfail(reply)),
            Answer::Discard => Some(Verdict::Discard),
        }
    }

    /// The milter at hand is down, timed out or broke the protocol.
    pub fn failed(&mut self, default: MilterDefault, milters: usize) -> Option<Verdict> {
        match default {
            MilterDefault::Tempfail => Some(Verdict::Tempfail(None)),
            MilterDefault::Accept => self.next_milter(milters),
        }
    }

    /// What a conversation still in step after this check's final `answer`
    /// was told, if the session's next check may go on with it: after a
    /// recipient the milter let through or refused (the transaction goes
    /// on without it, as libmilter takes it), or after a whole message.
    pub fn kept(&self, answer: &Answer) -> Option<Told> {
        let refused = matches!(answer, Answer::Reject(_) | Answer::Tempfail(_));
        match self.rcpt_only {
            true if *answer == Answer::Continue => Some(self.told()),
            true if refused => Some(self.told().refused_last()),
            true => None,
            false => self.complete().then(|| self.told()),
        }
    }

    /// What a milter that went along with this check was told: the HELO,
    /// the sender and the recipients, in order; or, once it heard the whole
    /// message, only the session.
    pub fn told(&self) -> Told {
        if self.complete() {
            return Told::Session(self.message.helo.clone(), self.message.tls);
        }
        let envelope = &self.message.envelope;
        let helo = self.message.helo.clone();
        // A recipient check of its own tells only its recipient.
        let first = match self.rcpt_only && !self.resumed {
            true => envelope.rcpts.len().saturating_sub(1),
            false => 0,
        };
        let rcpts = envelope.rcpts[first..].to_vec();
        Told::Transaction(helo, envelope.mail_from.clone(), rcpts)
    }

    /// Whether and how this check goes on from a conversation of the same
    /// session that was `told` so much: from where it stands if it was told
    /// this check's transaction so far (all recipients but the last for a
    /// recipient check, all for the message) or is between messages; else
    /// after an abort, if the session is the same (a transaction it was
    /// told was reset).
    pub fn continues(&self, told: &Told) -> Option<GoOn> {
        let message = &self.message;
        let same_session = |helo: &Vec<u8>| *helo == message.helo;
        match told {
            Told::Session(helo, tls) => {
                (same_session(helo) && *tls == message.tls).then_some(GoOn::Here)
            }
            Told::Transaction(helo, from, rcpts) => {
                let envelope = &message.envelope;
                let before = envelope
                    .rcpts
                    .len()
                    .saturating_sub(usize::from(self.rcpt_only));
                let here =
                    *from == envelope.mail_from && envelope.rcpts.get(..before) == Some(&rcpts[..]);
                match (same_session(helo), here) {
                    (false, _) => None,
                    (true, true) => Some(GoOn::Here),
                    (true, false) => Some(GoOn::AfterAbort),
                }
            }
        }
    }

    /// The milter at hand goes on from a conversation that was `told` so
    /// much, as [`Run::continues`] said: the last recipient, or the message
    /// from DATA on, within the transaction; else from MAIL.
    pub fn resume(&mut self, told: &Told, go_on: GoOn) {
        let within = matches!(told, Told::Transaction(..)) && go_on == GoOn::Here;
        // A check of its own from MAIL tells (and so keeps) only its recipient.
        self.resumed = within;
        let rcpts = self.message.envelope.rcpts.len();
        self.cursor = match (within, self.rcpt_only) {
            (true, true) => Cursor::Rcpt(rcpts.saturating_sub(1)),
            (true, false) => Cursor::Data,
            (false, _) => Cursor::Mail,
        };
    }

    /// Whether the milter at hand has been told anything of this message.
    pub fn started(&self) -> bool {
        self.cursor != Cursor::Connect
    }

    /// Whether the milter at hand was told the whole message.
    pub fn complete(&self) -> bool {
        self.cursor == Cursor::Done && !self.rcpt_only
    }

    fn next_milter(&mut self, milters: usize) -> Option<Verdict> {
        self.milter += 1;
        self.cursor = Cursor::Connect;
        self.resumed = false;
        (self.milter >= milters).then(|| self.pass())
    }

    /// All milters let the message through: their header edits go into it.
    fn pass(&mut self) -> Verdict {
        if !self.edits.is_empty() {
            self.message.body = self.plain.edited(&self.edits);
            // The edited copy is plain text: the spool stuffs it.
            self.message.envelope.body_kind = Some(BodyKind::Bdat);
        }
        Verdict::Pass {
            quarantine: self.quarantine.take(),
        }
    }

    fn after(&self, at: Cursor) -> Cursor {
        let rcpts = self.message.envelope.rcpts.len();
        let body = self.plain.body().len();
        match at {
            Cursor::Connect => Cursor::Helo,
            Cursor::Helo => Cursor::Mail,
            Cursor::Mail if self.rcpt_only => Cursor::Rcpt(rcpts.saturating_sub(1)),
            Cursor::Rcpt(_) if self.rcpt_only => Cursor::Done,
            Cursor::Mail if rcpts == 0 => Cursor::Data,
            Cursor::Mail => Cursor::Rcpt(0),
            Cursor::Rcpt(i) if i + 1 < rcpts => Cursor::Rcpt(i + 1),
            Cursor::Rcpt(_) => Cursor::Data,
            Cursor::Data if self.headers.is_empty() => Cursor::EndOfHeaders,
            Cursor::Data => Cursor::Header(0),
            Cursor::Header(i) if i + 1 < self.headers.len() => Cursor::Header(i + 1),
            Cursor::Header(_) => Cursor::EndOfHeaders,
            Cursor::EndOfHeaders if body == 0 => Cursor::EndOfMessage,
            Cursor::EndOfHeaders => Cursor::Body(0),
            Cursor::Body(from) if from + BODY_CHUNK < body => Cursor::Body(from + BODY_CHUNK),
            Cursor::Body(_) => Cursor::EndOfMessage,
            Cursor::EndOfMessage | Cursor::Done => Cursor::Done,
        }
    }

    /// The `i` macro (the queue id), at DATA and end of message as Postfix
    /// sends it, once the message has an id.
    fn queue_id(&self) -> Vec<(&'static str, &str)> {
        let id = self.message.id.as_ref();
        id.map(|id| ("i", id.as_str())).into_iter().collect()
    }

    /// Tells `client` the stage at `at`, with its macros.
    fn send(&self, at: Cursor, client: &mut Client, now: Instant) -> Step {
        let message = &self.message;
        let envelope = &message.envelope;
        match at {
            Cursor::Connect => {
                let addr = message.peer.to_string();
                let name = format!("[{addr}]");
                let macros = [
                    ("j", self.hostname.as_str()),
                    ("{client_addr}", addr.as_str()),
                    ("{client_name}", name.as_str()),
                ];
                let addr = Some(SocketAddr::new(message.peer, 0));
                let stage = Stage::Connect {
                    hostname: &name,
                    addr,
                };
                client.stage(stage, &macros, now)
            }
            Cursor::Helo => {
                let helo = String::from_utf8_lossy(&message.helo);
                let tls = message
                    .tls
                    .map(|tls| [("{tls_version}", tls.version), ("{cipher}", tls.cipher)]);
                client.stage(
                    Stage::Helo(&helo),
                    tls.as_ref().map_or(&[], |m| &m[..]),
                    now,
                )
            }
            Cursor::Mail => {
                let from = String::from_utf8_lossy(&envelope.mail_from);
                let mut args = Vec::new();
                if envelope.body_8bitmime {
                    args.push("BODY=8BITMIME");
                }
                if envelope.smtputf8 {
                    args.push("SMTPUTF8");
                }
                let path = format!("<{from}>");
                client.stage(Stage::Mail(&path, &args), &[("{mail_addr}", &from)], now)
            }
            Cursor::Rcpt(i) => {
                let to = String::from_utf8_lossy(&envelope.rcpts[i]);
                let path = format!("<{to}>");
                client.stage(Stage::Rcpt(&path, &[]), &[("{rcpt_addr}", &to)], now)
            }
            Cursor::Data => client.stage(Stage::Data, &self.queue_id(), now),
            Cursor::Header(i) => {
                let (name, value) = &self.headers[i];
                client.stage(Stage::Header(name, value), &[], now)
            }
            Cursor::EndOfHeaders => client.stage(Stage::EndOfHeaders, &[], now),
            Cursor::Body(from) => {
                let body = self.plain.body();
                let chunk = &body[from..body.len().min(from + BODY_CHUNK)];
                client.stage(Stage::Body(chunk), &[], now)
            }
            Cursor::EndOfMessage | Cursor::Done => {
                client.stage(Stage::EndOfMessage, &self.queue_id(), now)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use super::*;
    use crate::proto::Envelope;

    fn message(rcpts: &[&str]) -> Message {
        Message {
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            helo: b"client.example".to_vec(),
            tls: None,
            envelope: Envelope {
                mail_from: b"s@remote.example".to_vec(),
                rcpts: rcpts.iter().map(|r| r.as_bytes().to_vec()).collect(),
                body_kind: Some(BodyKind::Data),
                ..Envelope::default()
            },
            body: b"Subject: hi\r\n\r\n..body\r\n".to_vec(),
            quarantine: None,
            id: None,
        }
    }

    /// A negotiated client (all actions, every stage).
    fn client(now: Instant) -> Client {
        let mut client = Client::new(Duration::from_secs(30), now);
        let reply = [0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 0, 0x31, 0, 0, 0, 0];
        assert_eq!(client.handle_input(&reply, now), Ok(Some(Answer::Continue)));
        client.advance_output(usize::MAX);
        client
    }

    /// Answers every stage with continue, a batch at a time; returns the
    /// commands of each batch sent before its replies (macros left out)
    /// and the final answer.
    fn drive(run: &mut Run, client: &mut Client, now: Instant) -> (Vec<Vec<u8>>, Answer) {
        let mut batches = Vec::new();
        let mut progress = run.advance(client, Answer::Continue, now);
        loop {
            let sent = client.poll_output().to_vec();
            client.advance_output(usize::MAX);
            let mut commands = Vec::new();
            let mut rest = &sent[..];
            while rest.len() >= 5 {
                let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if rest[4] != b'D' {
                    commands.push(rest[4]);
                }
                rest = &rest[4 + len..];
            }
            // Macros and abort are not answered.
            let answered = commands.iter().filter(|&&c| c != b'A').count();
            let replies = [0, 0, 0, 1, b'c'].repeat(answered);
            batches.push(commands);
            match progress {
                Progress::Answered(answer) => return (batches, answer),
                Progress::Waiting => {
                    let answer = client.handle_input(&replies, now).unwrap();
                    progress = run.advance(client, answer.unwrap(), now);
                }
            }
        }
    }

    /// The commands of all batches, in order.
    fn commands(batches: &[Vec<u8>]) -> Vec<u8> {
        batches.concat()
    }

    #[test]
    fn a_message_is_told_stage_by_stage() {
        let now = Instant::now();
        let mut run = Run::new(message(&["a@x", "b@x"]), "mx.test");
        let (batches, answer) = drive(&mut run, &mut client(now), now);
        assert_eq!(
            batches[0], b"CHMRRTLNBE",
            "told in one go, before any reply"
        );
        assert_eq!(answer, Answer::Continue);
        assert!(run.complete());
        assert_eq!(
            run.answered(answer, 1),
            Some(Verdict::Pass { quarantine: None })
        );
        assert_eq!(
            run.message.body, b"Subject: hi\r\n\r\n..body\r\n",
            "no edits: as received"
        );
    }

    #[test]
    fn a_large_body_goes_in_windows() {
        let now = Instant::now();
        let mut big = message(&["a@x"]);
        big.body = [
            &b"Subject: big\r\n\r\n"[..],
            &b"0123456789abcde\n".repeat(40_000),
        ]
        .concat();
        let mut run = Run::new(big, "mx.test");
        let (batches, answer) = drive(&mut run, &mut client(now), now);
        assert_eq!(answer, Answer::Continue);
        let all = commands(&batches);
        assert_eq!(
            all.iter().filter(|&&c| c == b'B').count(),
            10,
            "640,000 octets in 64 KiB chunks"
        );
        assert!(batches.len() > 5, "sent as replies came, not all at once");
        assert!(batches
            .iter()
            .all(|b| b.iter().filter(|&&c| c == b'B').count() <= 2));
    }

    #[test]
    fn a_recipient_check_stops_at_the_last_rcpt() {
        let now = Instant::now();
        let mut run = Run::for_rcpt(message(&["a@x", "b@x"]), "mx.test");
        let (batches, _) = drive(&mut run, &mut client(now), now);
        assert_eq!(commands(&batches), b"CHMR");
        assert!(!run.complete(), "the milter must be told to forget it");
    }

    #[test]
    fn a_conversation_goes_on_from_the_recipient_checks() {
        let now = Instant::now();
        let mut client = client(now);
        let mut first = Run::for_rcpt(message(&["a@x"]), "mx.test");
        assert_eq!(commands(&drive(&mut first, &mut client, now).0), b"CHMR");
        let told = first.told();
        let mut second = Run::for_rcpt(message(&["a@x", "b@x"]), "mx.test");
        assert_eq!(second.continues(&told), Some(GoOn::Here));
        second.resume(&told, GoOn::Here);
        assert_eq!(commands(&drive(&mut second, &mut client, now).0), b"R");
        let told = second.told();
        let (helo, from) = (b"client.example".to_vec(), b"s@remote.example".to_vec());
        let both = vec![b"a@x".to_vec(), b"b@x".to_vec()];
        assert_eq!(told, Told::Transaction(helo.clone(), from.clone(), both));
        let mut message_run = Run::new(message(&["a@x", "b@x"]), "mx.test");
        assert_eq!(message_run.continues(&told), Some(GoOn::Here));
        message_run.resume(&told, GoOn::Here);
        assert_eq!(
            commands(&drive(&mut message_run, &mut client, now).0),
            b"TLNBE"
        );
        assert!(message_run.complete());
        // A check of its own tells (and so remembers) only its recipient.
        let fresh = Run::for_rcpt(message(&["a@x", "b@x"]), "mx.test");
        assert_eq!(
            fresh.told(),
            Told::Transaction(helo, from, vec![b"b@x".to_vec()])
        );
    }

    #[test]
    fn the_next_transaction_goes_on_from_mail() {
        let now = Instant::now();
        let mut client = client(now);
        let mut first = Run::new(message(&["a@x"]), "mx.test");
        drive(&mut first, &mut client, now);
        let told = first.told();
        assert_eq!(told, Told::Session(b"client.example".to_vec(), None));
        // The next message of the session: MAIL on, no connect or HELO.
        let mut next = Run::new(message(&["b@x"]), "mx.test");
        assert_eq!(next.continues(&told), Some(GoOn::Here));
        next.resume(&told, GoOn::Here);
        assert_eq!(commands(&drive(&mut next, &mut client, now).0), b"MRTLNBE");
        // A recipient check of the next one: MAIL and its recipient.
        let mut check = Run::for_rcpt(message(&["c@x"]), "mx.test");
        check.resume(&told, GoOn::Here);
        assert_eq!(commands(&drive(&mut check, &mut client, now).0), b"MR");
        // After STARTTLS the session is another one.
        let mut tls = message(&["c@x"]);
        tls.tls = Some(Negotiated {
            version: "TLSv1.3",
            cipher: "TLS_AES_128_GCM_SHA256",
        });
        assert_eq!(Run::new(tls, "mx.test").continues(&told), None);
    }

    #[test]
    fn a_reset_transaction_is_aborted_and_the_next_goes_on_from_mail() {
        let now = Instant::now();
        let mut client = client(now);
        let mut check = Run::for_rcpt(message(&["a@x"]), "mx.test");
        drive(&mut check, &mut client, now);
        let told = check.told();
        // RSET, then a transaction to b@x only.
        let mut other = Run::for_rcpt(message(&["b@x"]), "mx.test");
        assert_eq!(other.continues(&told), Some(GoOn::AfterAbort));
        let mut helo_changed = message(&["b@x"]);
        helo_changed.helo = b"other.example".to_vec();
        assert_eq!(Run::new(helo_changed, "mx.test").continues(&told), None);
        client.abort();
        other.resume(&told, GoOn::AfterAbort);
        let (batches, _) = drive(&mut other, &mut client, now);
        assert_eq!(batches[0], b"AMR", "abort, then MAIL and the recipient");
    }

    #[test]
    fn milters_go_in_order_and_the_default_applies_to_failures() {
        let mut run = Run::new(message(&["a@x"]), "mx.test");
        assert_eq!(run.answered(Answer::Accept, 3), None);
        assert_eq!((run.milter, run.started()), (1, false));
        assert_eq!(run.failed(MilterDefault::Accept, 3), None);
        assert_eq!(run.milter, 2);
        let tempfail = run.failed(MilterDefault::Tempfail, 3);
        assert_eq!(tempfail, Some(Verdict::Tempfail(None)));
        let reject = Some("550 5.7.1 no".to_string());
        let verdict = run.answered(Answer::Reject(reject.clone()), 3);
        assert_eq!(verdict, Some(Verdict::Reject(reject)));
    }
}
