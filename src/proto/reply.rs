//! The reply catalogue: every SMTP reply mxgate sends, with its RFC 3463
//! enhanced status code, as DESIGN.md's reply table lists them.
//!
//! Owns the exact wording and codes. Fixed replies are a small `Copy` enum
//! ([`Reply`]) whose text is static; replies that carry a host, address,
//! size or queue id are written by the `write_*` functions. Does not decide
//! *when* a reply is sent: that is the session's job.

use std::io::Write;
use std::net::IpAddr;

/// A reply whose text never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Ok,
    SenderOk,
    RecipientOk,
    Bye,
    StartData,
    NeedHelo,
    NeedMail,
    NestedMail,
    NeedRecipient,
    NoValidRecipients,
    InsideBdat,
    SenderSyntax,
    SenderLocalTooLong,
    SenderDomainTooLong,
    SenderPathTooLong,
    RecipientSyntax,
    RecipientLocalTooLong,
    RecipientDomainTooLong,
    RecipientPathTooLong,
    HeloSyntax,
    MailSyntax,
    RcptSyntax,
    BdatSyntax,
    NoArguments,
    ParamSyntax,
    UnknownParam,
    Utf8Undeclared,
    DeclaredTooBig,
    MessageTooBig,
    TooManyRecipients,
    BareCrLf,
    SpoolFailed,
    LineTooLong,
    UnknownCommand,
    Vrfy,
    Expn,
    Help,
    ReadyForTls,
    TlsNotOffered,
    TlsActive,
    TlsInTransaction,
    /// A milter rejected the message (and sent no reply of its own).
    ContentRejected,
    /// A milter failed temporarily, is down or timed out.
    ContentTempfail,
    /// A milter rejected a recipient (with no reply of its own).
    RecipientRejectedByCheck,
    /// A milter failed temporarily on a recipient, is down or timed out.
    RecipientTempfail,
}

impl Reply {
    /// The reply line, CRLF included.
    pub fn text(self) -> &'static [u8] {
        match self {
            Reply::Ok => b"250 2.0.0 Ok\r\n",
            Reply::SenderOk => b"250 2.1.0 Ok\r\n",
            Reply::RecipientOk => b"250 2.1.5 Ok\r\n",
            Reply::Bye => b"221 2.0.0 Bye\r\n",
            Reply::StartData => b"354 End data with <CR><LF>.<CR><LF>\r\n",
            Reply::NeedHelo => b"503 5.5.1 Error: send HELO/EHLO first\r\n",
            Reply::NeedMail => b"503 5.5.1 Error: need MAIL command\r\n",
            Reply::NestedMail => b"503 5.5.1 Error: nested MAIL command\r\n",
            Reply::NeedRecipient => b"503 5.5.1 Error: need RCPT command\r\n",
            Reply::NoValidRecipients => b"554 5.5.1 Error: no valid recipients\r\n",
            Reply::InsideBdat => b"503 5.5.1 Error: BDAT transfer in progress\r\n",
            Reply::SenderSyntax => b"501 5.1.7 Bad sender address syntax\r\n",
            Reply::SenderLocalTooLong => b"501 5.1.7 Sender address local part too long\r\n",
            Reply::SenderDomainTooLong => b"501 5.1.7 Sender address domain too long\r\n",
            Reply::SenderPathTooLong => b"501 5.1.7 Sender address too long\r\n",
            Reply::RecipientSyntax => b"501 5.1.3 Bad recipient address syntax\r\n",
            Reply::RecipientLocalTooLong => b"501 5.1.3 Recipient address local part too long\r\n",
            Reply::RecipientDomainTooLong => b"501 5.1.3 Recipient address domain too long\r\n",
            Reply::RecipientPathTooLong => b"501 5.1.3 Recipient address too long\r\n",
            Reply::HeloSyntax => b"501 5.5.4 Syntax: EHLO hostname\r\n",
            Reply::MailSyntax => b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n",
            Reply::RcptSyntax => b"501 5.5.4 Syntax: RCPT TO:<address>\r\n",
            Reply::BdatSyntax => b"501 5.5.4 Syntax: BDAT size [LAST]\r\n",
            Reply::NoArguments => b"501 5.5.4 Syntax error: no arguments allowed\r\n",
            Reply::ParamSyntax => b"501 5.5.4 Syntax error in parameters\r\n",
            Reply::UnknownParam => b"555 5.5.4 Unsupported parameter\r\n",
            Reply::Utf8Undeclared => {
                b"553 5.6.7 Error: non-ASCII address requires MAIL FROM with SMTPUTF8\r\n"
            }
            Reply::DeclaredTooBig => b"552 5.3.4 Message size exceeds fixed limit\r\n",
            Reply::MessageTooBig => {
                b"552 5.3.4 Message size exceeds fixed limit; message refused\r\n"
            }
            Reply::TooManyRecipients => b"452 4.5.3 Error: too many recipients\r\n",
            Reply::BareCrLf => {
                b"550 5.5.2 Error: bare <CR> or <LF> in message content; message refused\r\n"
            }
            Reply::SpoolFailed => b"451 4.3.0 Error: queue file write error\r\n",
            Reply::LineTooLong => b"500 5.5.2 Error: line too long\r\n",
            Reply::UnknownCommand => b"500 5.5.2 Error: command not recognized\r\n",
            Reply::Vrfy => {
                b"252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery\r\n"
            }
            Reply::Expn => b"502 5.5.1 Error: EXPN not available\r\n",
            Reply::Help => b"214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT\r\n",
            Reply::ReadyForTls => b"220 2.0.0 Ready to start TLS\r\n",
            Reply::TlsNotOffered => b"502 5.5.1 Error: command not implemented\r\n",
            Reply::TlsActive => b"503 5.5.1 Error: TLS already active\r\n",
            Reply::TlsInTransaction => b"503 5.5.1 Error: MAIL transaction in progress\r\n",
            Reply::ContentRejected => b"550 5.7.1 Error: message content rejected\r\n",
            Reply::RecipientRejectedByCheck => b"550 5.7.1 Error: recipient rejected\r\n",
            Reply::RecipientTempfail => {
                b"451 4.7.1 Error: recipient check failed; try again later\r\n"
            }
            Reply::ContentTempfail => {
                b"451 4.7.1 Error: message content check failed; try again later\r\n"
            }
        }
    }

    /// Appends the reply to `out`.
    pub fn write(self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.text());
    }
}

/// `220 <host> ESMTP mxgate`
pub fn write_greeting(host: &str, out: &mut Vec<u8>) {
    join(out, &[b"220 ", host.as_bytes(), b" ESMTP mxgate\r\n"]);
}

/// `500 5.5.2 …`: a PROXY header from a peer not trusted to send one.
pub fn write_untrusted_proxy(host: &str, out: &mut Vec<u8>) {
    join(
        out,
        &[
            b"500 5.5.2 ",
            host.as_bytes(),
            b" Error: PROXY header from an untrusted peer\r\n",
        ],
    );
}

/// `421 4.3.2 …`: refused at connect because the server is full.
pub fn write_over_capacity(host: &str, out: &mut Vec<u8>) {
    join(
        out,
        &[
            b"421 4.3.2 ",
            host.as_bytes(),
            b" Error: too many connections\r\n",
        ],
    );
}

/// `421 4.7.0 …`: refused at connect because `client` is over a
/// per-client limit.
pub fn write_too_many_from(host: &str, client: IpAddr, out: &mut Vec<u8>) {
    let client = client.to_string();
    join(
        out,
        &[
            b"421 4.7.0 ",
            host.as_bytes(),
            b" Error: too many connections from ",
            client.as_bytes(),
            b"\r\n",
        ],
    );
}

/// `421 4.3.2 …`: the server is shutting down.
pub fn write_shutting_down(host: &str, out: &mut Vec<u8>) {
    join(
        out,
        &[
            b"421 4.3.2 ",
            host.as_bytes(),
            b" Service shutting down\r\n",
        ],
    );
}

/// `421 4.4.2 … timeout`
pub fn write_timeout(host: &str, out: &mut Vec<u8>) {
    join(
        out,
        &[
            b"421 4.4.2 ",
            host.as_bytes(),
            b" Error: timeout exceeded\r\n",
        ],
    );
}

/// `250 <host>` for HELO.
pub fn write_helo(host: &str, out: &mut Vec<u8>) {
    join(out, &[b"250 ", host.as_bytes(), b"\r\n"]);
}

/// The multi-line EHLO reply with our extensions, STARTTLS among them
/// when `starttls`.
pub fn write_ehlo(host: &str, max_size: usize, starttls: bool, out: &mut Vec<u8>) {
    join(
        out,
        &[b"250-", host.as_bytes(), b"\r\n250-PIPELINING\r\n250-SIZE "],
    );
    let _ = write!(out, "{max_size}");
    out.extend_from_slice(b"\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250");
    if starttls {
        out.extend_from_slice(b"-CHUNKING\r\n250 STARTTLS\r\n");
    } else {
        out.extend_from_slice(b" CHUNKING\r\n");
    }
}

/// `550 5.1.1 <addr>: Recipient address rejected: User unknown`
pub fn write_unknown_user(address: &[u8], out: &mut Vec<u8>) {
    join(
        out,
        &[
            b"550 5.1.1 <",
            address,
            b">: Recipient address rejected: User unknown\r\n",
        ],
    );
}

/// `554 5.7.1 <addr>: Relay access denied`
pub fn write_relay_denied(address: &[u8], out: &mut Vec<u8>) {
    join(
        out,
        &[b"554 5.7.1 <", address, b">: Relay access denied\r\n"],
    );
}

/// `250 2.0.0 Ok: queued as <id>`
pub fn write_queued(queue_id: &str, out: &mut Vec<u8>) {
    join(
        out,
        &[b"250 2.0.0 Ok: queued as ", queue_id.as_bytes(), b"\r\n"],
    );
}

/// `250 2.0.0 Ok: <n> octets received` for a BDAT chunk that is not LAST.
pub fn write_chunk_received(octets: u64, out: &mut Vec<u8>) {
    let _ = write!(out, "250 2.0.0 Ok: {octets} octets received\r\n");
}

fn join(out: &mut Vec<u8>, parts: &[&[u8]]) {
    for part in parts {
        out.extend_from_slice(part);
    }
}
