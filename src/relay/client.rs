//! The sans-IO SMTP/LMTP client of the relay: bytes in (the next hop's
//! replies, split anywhere), bytes out (commands), no sockets, no clock.
//!
//! Owns: the dialogue with one next hop over one connection — greeting,
//! EHLO (HELO if EHLO is refused) or LHLO, then transactions: MAIL, RCPT…,
//! DATA in one write when the next hop offers PIPELINING (one command per
//! reply otherwise), the body (written by the caller when told, as the spool
//! file holds it: dot-stuffed, ending in `.`), and the reply that decides
//! each recipient (LMTP: one reply per accepted recipient after the data).
//! A transaction that ends without data is closed with RSET, so the
//! connection can carry the next message. Does not read files, decide what
//! a reply means for the spool, or time anything.

use std::collections::VecDeque;
use std::fmt;

use mxgate_reply::{ReplyError, ReplyParser};

/// Which dialect the next hop speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    Lmtp,
}

/// One reply of the next hop (or of the relay itself, code 0 never used):
/// the code and its text, made printable for logs and `.reason` files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    /// 2xx: done.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 5xx: never going to work.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {}", self.code, self.text)
        }
    }
}

/// What the caller must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The connection is ready for a message ([`Client::send`]) or QUIT.
    Ready,
    /// The next hop said 354: write the body now, then [`Client::body_sent`].
    SendBody,
    /// The message is finished: the deciding reply of each recipient, in
    /// the order given to `send`. The connection is ready for the next.
    Done(Vec<Reply>),
}

/// Why the connection cannot go on. Recipients not decided yet are in
/// [`Client::undecided`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The next hop's output is not SMTP.
    Garbage(ReplyError),
    /// A reply arrived that no command asked for.
    Unexpected(Reply),
    /// The greeting or EHLO/LHLO was refused, or the next hop said 421.
    Refused(Reply),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Garbage(ReplyError::Malformed) => f.write_str("malformed reply"),
            ClientError::Garbage(ReplyError::CodeChanged) => {
                f.write_str("malformed reply: the code changed within a multi-line reply")
            }
            ClientError::Garbage(ReplyError::TooLong) => f.write_str("reply too long"),
            ClientError::Unexpected(reply) => write!(f, "unexpected reply: {reply}"),
            ClientError::Refused(reply) => write!(f, "{reply}"),
        }
    }
}

/// The reply of which command the client waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Greeting,
    Ehlo,
    Helo,
    Mail,
    Rcpt(usize),
    Data,
    /// After the body: SMTP's one reply (`None`), or LMTP's reply for the
    /// recipient at this index.
    Dot(Option<usize>),
    Rset,
}

/// The message in progress.
#[derive(Debug, Default)]
struct Transaction {
    /// The deciding reply of each recipient, once there is one.
    decided: Vec<Option<Reply>>,
    /// Recipients the next hop accepted at RCPT, in order.
    accepted: Vec<usize>,
    /// A refused MAIL decides every recipient.
    mail_refused: Option<Reply>,
}

/// One connection's client. Feed it with [`Client::receive`], send what
/// [`Client::output`] gives.
pub struct Client {
    protocol: Protocol,
    hostname: String,
    parser: ReplyParser,
    out: Vec<u8>,
    awaiting: VecDeque<Awaiting>,
    /// Commands not sent yet, when the next hop does not pipeline.
    held: VecDeque<(Awaiting, Vec<u8>)>,
    pipelining: bool,
    transaction: Option<Transaction>,
}

impl Client {
    /// A client that waits for the greeting; `hostname` goes in EHLO/LHLO.
    pub fn new(protocol: Protocol, hostname: &str) -> Client {
        Client {
            protocol,
            hostname: hostname.to_string(),
            parser: ReplyParser::default(),
            out: Vec::new(),
            awaiting: VecDeque::from([Awaiting::Greeting]),
            held: VecDeque::new(),
            pipelining: false,
            transaction: None,
        }
    }

    /// The commands to write now (empties the client's buffer).
    pub fn output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Whether the next hop offered PIPELINING.
    pub fn pipelining(&self) -> bool {
        self.pipelining
    }

    /// Consumes the next hop's output up to the next event. Returns the
    /// octets consumed and the event, if one happened; feed the rest again.
    pub fn receive(&mut self, input: &[u8]) -> Result<(usize, Option<Event>), ClientError> {
        let mut used = 0;
        while used < input.len() {
            let (n, raw) = self
                .parser
                .parse(&input[used..])
                .map_err(ClientError::Garbage)?;
            used += n;
            let Some(raw) = raw else { continue };
            let reply = Reply {
                code: raw.code,
                text: printable(self.parser.text()),
            };
            let pipelining = raw.pipelining;
            if let Some(event) = self.on_reply(reply, pipelining)? {
                return Ok((used, Some(event)));
            }
        }
        Ok((used, None))
    }

    /// Starts a message: `mail` is the MAIL command line and `rcpts` the
    /// RCPT command lines, as the spool file holds them (without CRLF).
    /// Call only after [`Event::Ready`] or [`Event::Done`].
    pub fn send(&mut self, mail: &[u8], rcpts: &[&[u8]]) {
        self.transaction = Some(Transaction {
            decided: vec![None; rcpts.len()],
            ..Transaction::default()
        });
        let mut commands = vec![(Awaiting::Mail, line(mail))];
        for (index, rcpt) in rcpts.iter().enumerate() {
            commands.push((Awaiting::Rcpt(index), line(rcpt)));
        }
        commands.push((Awaiting::Data, b"DATA\r\n".to_vec()));
        if self.pipelining {
            for (awaiting, command) in commands {
                self.command(awaiting, &command);
            }
        } else {
            self.held = commands.into();
            self.send_held();
        }
    }

    /// The caller wrote the whole body (ending in `.`): wait for the
    /// replies that decide the accepted recipients.
    pub fn body_sent(&mut self) {
        let accepted = self.transaction.as_ref().map(|t| t.accepted.clone());
        match (self.protocol, accepted) {
            (Protocol::Smtp, _) => self.awaiting.push_back(Awaiting::Dot(None)),
            (Protocol::Lmtp, Some(accepted)) => {
                let each = accepted.into_iter().map(|i| Awaiting::Dot(Some(i)));
                self.awaiting.extend(each);
            }
            (Protocol::Lmtp, None) => {}
        }
    }

    /// Ends the session politely; close after writing [`Client::output`].
    pub fn quit(&mut self) {
        self.out.extend_from_slice(b"QUIT\r\n");
    }

    /// After an error or a lost connection: the recipients of the message
    /// in progress that a reply already decided (the others are `None`).
    pub fn undecided(&mut self) -> Vec<Option<Reply>> {
        let Some(transaction) = self.transaction.take() else {
            return Vec::new();
        };
        match transaction.mail_refused {
            Some(reply) => vec![Some(reply); transaction.decided.len()],
            None => transaction.decided,
        }
    }

    fn command(&mut self, awaiting: Awaiting, command: &[u8]) {
        self.out.extend_from_slice(command);
        self.awaiting.push_back(awaiting);
    }

    fn send_held(&mut self) {
        if let Some((awaiting, command)) = self.held.pop_front() {
            self.command(awaiting, &command);
        }
    }

    fn on_reply(&mut self, reply: Reply, pipelining: bool) -> Result<Option<Event>, ClientError> {
        let Some(awaiting) = self.awaiting.pop_front() else {
            return Err(ClientError::Unexpected(reply));
        };
        if reply.code == 421 {
            // The next hop is closing: nothing more will be answered.
            self.decide_open(&reply, awaiting);
            return Err(ClientError::Refused(reply));
        }
        if (300..400).contains(&reply.code) && awaiting != Awaiting::Data {
            return Err(ClientError::Unexpected(reply));
        }
        match awaiting {
            Awaiting::Greeting => self.on_greeting(reply),
            Awaiting::Ehlo => self.on_ehlo(reply, pipelining),
            Awaiting::Helo => self.on_hello(reply, false),
            Awaiting::Mail => Ok(self.on_mail(reply)),
            Awaiting::Rcpt(index) => Ok(self.on_rcpt(index, reply)),
            Awaiting::Data => self.on_data(reply),
            Awaiting::Dot(index) => Ok(self.on_dot(index, reply)),
            Awaiting::Rset => Ok(self.finish()),
        }
    }

    fn on_greeting(&mut self, reply: Reply) -> Result<Option<Event>, ClientError> {
        if !reply.is_success() {
            return Err(ClientError::Refused(reply));
        }
        let (awaiting, verb) = match self.protocol {
            Protocol::Smtp => (Awaiting::Ehlo, "EHLO"),
            Protocol::Lmtp => (Awaiting::Ehlo, "LHLO"),
        };
        let command = format!("{verb} {}\r\n", self.hostname);
        self.command(awaiting, command.as_bytes());
        Ok(None)
    }

    fn on_ehlo(&mut self, reply: Reply, pipelining: bool) -> Result<Option<Event>, ClientError> {
        if reply.is_permanent() && self.protocol == Protocol::Smtp {
            // An old server without ESMTP: plain HELO, no pipelining.
            let command = format!("HELO {}\r\n", self.hostname);
            self.command(Awaiting::Helo, command.as_bytes());
            return Ok(None);
        }
        self.on_hello(reply, pipelining)
    }

    fn on_hello(&mut self, reply: Reply, pipelining: bool) -> Result<Option<Event>, ClientError> {
        if !reply.is_success() {
            return Err(ClientError::Refused(reply));
        }
        self.pipelining = pipelining;
        Ok(Some(Event::Ready))
    }

    fn on_mail(&mut self, reply: Reply) -> Option<Event> {
        let transaction = self.transaction.get_or_insert_with(Transaction::default);
        if reply.is_success() {
            self.send_held();
            return None;
        }
        transaction.mail_refused = Some(reply);
        self.abandon()
    }

    fn on_rcpt(&mut self, index: usize, reply: Reply) -> Option<Event> {
        let transaction = self.transaction.get_or_insert_with(Transaction::default);
        if reply.is_success() {
            transaction.accepted.push(index);
        } else if let Some(slot) = transaction.decided.get_mut(index) {
            *slot = Some(reply);
        }
        let data_next = matches!(self.held.front(), Some((Awaiting::Data, _)));
        if data_next && transaction.accepted.is_empty() {
            return self.abandon();
        }
        self.send_held();
        None
    }

    fn on_data(&mut self, reply: Reply) -> Result<Option<Event>, ClientError> {
        let transaction = self.transaction.get_or_insert_with(Transaction::default);
        if reply.code == 354 {
            if transaction.accepted.is_empty() {
                // RFC 2920 §3.1 forbids it; sending a body to no one would
                // be a message without recipients.
                return Err(ClientError::Unexpected(reply));
            }
            return Ok(Some(Event::SendBody));
        }
        for &index in &transaction.accepted.clone() {
            transaction.decided[index] = Some(reply.clone());
        }
        Ok(self.abandon())
    }

    fn on_dot(&mut self, index: Option<usize>, reply: Reply) -> Option<Event> {
        let transaction = self.transaction.get_or_insert_with(Transaction::default);
        let indices = match index {
            Some(index) => vec![index],
            None => transaction.accepted.clone(),
        };
        for index in indices {
            if let Some(slot) = transaction.decided.get_mut(index) {
                *slot = Some(reply.clone());
            }
        }
        if self.awaiting.is_empty() {
            return self.finish();
        }
        None
    }

    /// The transaction ends without data: drop what is held and reset the
    /// session with RSET (pipelined replies still due are read first).
    fn abandon(&mut self) -> Option<Event> {
        self.held.clear();
        let still_due = self
            .awaiting
            .iter()
            .any(|a| matches!(a, Awaiting::Rcpt(_) | Awaiting::Data));
        if !still_due {
            self.command(Awaiting::Rset, b"RSET\r\n");
        }
        None
    }

    /// Every recipient decided: the message is done.
    fn finish(&mut self) -> Option<Event> {
        let decided = self.undecided();
        let missing = Reply {
            code: 451,
            text: "4.3.0 mxgate: no reply for this recipient".into(),
        };
        let replies = decided
            .into_iter()
            .map(|reply| reply.unwrap_or_else(|| missing.clone()))
            .collect();
        Some(Event::Done(replies))
    }

    /// A 421 in the middle of a message decides what it has not decided.
    fn decide_open(&mut self, reply: &Reply, awaiting: Awaiting) {
        if awaiting == Awaiting::Greeting {
            return;
        }
        if let Some(transaction) = &mut self.transaction {
            for slot in transaction.decided.iter_mut().filter(|s| s.is_none()) {
                *slot = Some(reply.clone());
            }
        }
    }
}

/// A command line with its CRLF.
fn line(command: &[u8]) -> Vec<u8> {
    [command, b"\r\n"].concat()
}

/// Reply text as one printable line (it goes into logs and `.reason`).
fn printable(text: &[u8]) -> String {
    String::from_utf8_lossy(text)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
