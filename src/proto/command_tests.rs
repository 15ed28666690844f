//! Table tests for the command parser.

use super::*;

fn mailbox<'a>(address: &'a [u8], local: &'a [u8], domain: &'a [u8]) -> Path<'a> {
    Path::Mailbox {
        address,
        local,
        domain,
    }
}

#[test]
fn simple_verbs() {
    let cases: &[(&[u8], Result<Command, Error>)] = &[
        (b"NOOP", Ok(Command::Noop)),
        (b"noop", Ok(Command::Noop)),
        (b"NOOP anything", Ok(Command::Noop)),
        (b"RSET", Ok(Command::Rset)),
        (b"rSeT", Ok(Command::Rset)),
        (b"RSET x", Err(Error::Syntax(Reply::NoArguments))),
        (b"QUIT", Ok(Command::Quit)),
        (b"DATA", Ok(Command::Data)),
        (b"DATA now", Err(Error::Syntax(Reply::NoArguments))),
        (b"VRFY alice", Ok(Command::Vrfy)),
        (b"EXPN list", Ok(Command::Expn)),
        (b"HELP", Ok(Command::Help)),
        (b"EHLO client.example", Ok(Command::Ehlo(b"client.example"))),
        (
            b"ehlo  client.example",
            Ok(Command::Ehlo(b"client.example")),
        ),
        (b"HELO [192.0.2.1]", Ok(Command::Helo(b"[192.0.2.1]"))),
        (b"EHLO", Err(Error::Syntax(Reply::HeloSyntax))),
        (b"HELO ", Err(Error::Syntax(Reply::HeloSyntax))),
        (b"EHLO a\rb", Err(Error::Syntax(Reply::HeloSyntax))),
        (b"EHLO a\x00b", Err(Error::Syntax(Reply::HeloSyntax))),
        (b"", Err(Error::UnknownCommand)),
        (b"FOO", Err(Error::UnknownCommand)),
        (b"STARTTLS", Ok(Command::StartTls)),
        (b"starttls", Ok(Command::StartTls)),
        (b"STARTTLS now", Err(Error::Syntax(Reply::NoArguments))),
        (b"STARTTLSX", Err(Error::UnknownCommand)),
        (b"NOOPX", Err(Error::UnknownCommand)),
        (b"MAILFROM:<a@b>", Err(Error::UnknownCommand)),
    ];
    for (line, want) in cases {
        assert_eq!(parse(line), *want, "{}", line.escape_ascii());
    }
}

#[test]
fn bdat() {
    let syntax = Err(Error::Syntax(Reply::BdatSyntax));
    let cases: &[(&[u8], Result<Command, Error>)] = &[
        (
            b"BDAT 100",
            Ok(Command::Bdat {
                size: 100,
                last: false,
            }),
        ),
        (
            b"BDAT 0 LAST",
            Ok(Command::Bdat {
                size: 0,
                last: true,
            }),
        ),
        (
            b"bdat 12 last",
            Ok(Command::Bdat {
                size: 12,
                last: true,
            }),
        ),
        (b"BDAT", syntax),
        (b"BDAT x", syntax),
        (b"BDAT -1", syntax),
        (b"BDAT 1 FIRST", syntax),
        (b"BDAT 1 LAST x", syntax),
        (b"BDAT 99999999999999999999", syntax),
    ];
    for (line, want) in cases {
        assert_eq!(parse(line), *want, "{}", line.escape_ascii());
    }
}

#[test]
fn mail_and_rcpt() {
    let plain = MailParams::default();
    let cases: &[(&[u8], Result<Command, Error>)] = &[
        (
            b"MAIL FROM:<a@b.example>",
            Ok(Command::Mail {
                path: mailbox(b"a@b.example", b"a", b"b.example"),
                params: plain,
            }),
        ),
        (
            b"mail from: <a@b.example>",
            Ok(Command::Mail {
                path: mailbox(b"a@b.example", b"a", b"b.example"),
                params: plain,
            }),
        ),
        (
            b"MAIL FROM:<>",
            Ok(Command::Mail {
                path: Path::Null,
                params: plain,
            }),
        ),
        (
            b"MAIL  FROM:<>",
            Ok(Command::Mail {
                path: Path::Null,
                params: plain,
            }),
        ),
        (
            b"MAIL FROM:<> SIZE=1000 BODY=8BITMIME SMTPUTF8",
            Ok(Command::Mail {
                path: Path::Null,
                params: MailParams {
                    size: Some(1000),
                    body_8bitmime: true,
                    smtputf8: true,
                },
            }),
        ),
        (
            b"MAIL FROM:<> body=7bit",
            Ok(Command::Mail {
                path: Path::Null,
                params: plain,
            }),
        ),
        (
            b"MAIL FROM:<> SIZE=99999999999999999999",
            Ok(Command::Mail {
                path: Path::Null,
                params: MailParams {
                    size: Some(u64::MAX),
                    ..plain
                },
            }),
        ),
        (b"MAIL FROM:<> SIZE=", Err(Error::ParamSyntax)),
        (b"MAIL FROM:<> SIZE=12k", Err(Error::ParamSyntax)),
        (b"MAIL FROM:<> BODY", Err(Error::ParamSyntax)),
        (b"MAIL FROM:<> BODY=BINARYMIME", Err(Error::UnknownParam)),
        (b"MAIL FROM:<> AUTH=<>", Err(Error::UnknownParam)),
        (b"MAIL FROM:<> SMTPUTF8=yes", Err(Error::UnknownParam)),
        (b"MAIL FROM:<>SIZE=1", Err(Error::ParamSyntax)),
        (b"MAIL TO:<>", Err(Error::Syntax(Reply::MailSyntax))),
        (b"MAIL", Err(Error::Syntax(Reply::MailSyntax))),
        (
            b"MAIL FROM:a@b.example",
            Err(Error::Sender(AddressError::Syntax)),
        ),
        (b"MAIL FROM:<a@b", Err(Error::Sender(AddressError::Syntax))),
        (
            b"RCPT TO:<c@d.example>",
            Ok(Command::Rcpt(mailbox(b"c@d.example", b"c", b"d.example"))),
        ),
        (
            b"rcpt to: <c@d.example>",
            Ok(Command::Rcpt(mailbox(b"c@d.example", b"c", b"d.example"))),
        ),
        (b"RCPT TO:<Postmaster>", Ok(Command::Rcpt(Path::Postmaster))),
        (
            b"RCPT TO:<c@d.example> NOTIFY=NEVER",
            Err(Error::UnknownParam),
        ),
        (
            b"RCPT TO:c@d.example",
            Err(Error::Recipient(AddressError::Syntax)),
        ),
        (
            b"RCPT FROM:<c@d.example>",
            Err(Error::Syntax(Reply::RcptSyntax)),
        ),
    ];
    for (line, want) in cases {
        assert_eq!(parse(line), *want, "{}", line.escape_ascii());
    }
}

#[test]
fn errors_map_to_the_sender_recipient_split() {
    for e in [
        AddressError::Syntax,
        AddressError::LocalPartTooLong,
        AddressError::DomainTooLong,
        AddressError::PathTooLong,
    ] {
        assert!(Error::Sender(e).reply().text().starts_with(b"501 5.1.7 "));
        assert!(Error::Recipient(e)
            .reply()
            .text()
            .starts_with(b"501 5.1.3 "));
    }
    assert!(Error::UnknownParam
        .reply()
        .text()
        .starts_with(b"555 5.5.4 "));
    assert!(Error::UnknownCommand
        .reply()
        .text()
        .starts_with(b"500 5.5.2 "));
}
