//! Transcripts of the relay client against scripted next hops: what it
//! writes, and what it decides for each recipient, fed whole, split at
//! every byte, and one byte at a time.

use super::*;

const MAIL: &[u8] = b"MAIL FROM:<a@example.net>";
const RCPTS: [&[u8]; 3] = [b"RCPT TO:<b@x>", b"RCPT TO:<c@x>", b"RCPT TO:<d@x>"];
const BODY: &[u8] = b"Subject: t\r\n\r\nhi\r\n.\r\n";

/// What a run produced: everything written, the outcome of the message
/// (each recipient's reply code), or the error that ended it.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    written: String,
    codes: Option<Vec<u16>>,
    error: Option<String>,
}

/// Drives a client through one message over `server` output delivered in
/// `pieces`; QUIT after the message.
fn run(protocol: Protocol, pieces: &[&[u8]]) -> Run {
    let mut client = Client::new(protocol, "mx.test");
    let mut written = Vec::new();
    let (mut codes, mut error) = (None, None);
    let mut pending: Vec<u8> = Vec::new();
    'feed: for piece in pieces {
        pending.extend_from_slice(piece);
        loop {
            match client.receive(&pending) {
                Ok((used, event)) => {
                    pending.drain(..used);
                    match event {
                        Some(Event::Ready) => client.send(MAIL, &RCPTS),
                        Some(Event::SendBody) => {
                            written.extend_from_slice(&client.output());
                            written.extend_from_slice(BODY);
                            client.body_sent();
                        }
                        Some(Event::Done(replies)) => {
                            codes = Some(replies.iter().map(|r| r.code).collect());
                            client.quit();
                        }
                        None => break,
                    }
                }
                Err(err) => {
                    error = Some(err.to_string());
                    break 'feed;
                }
            }
            written.extend_from_slice(&client.output());
        }
        written.extend_from_slice(&client.output());
    }
    Run {
        written: String::from_utf8(written).unwrap(),
        codes,
        error,
    }
}

fn check_every_split(protocol: Protocol, server: &[u8], want: &Run) {
    assert_eq!(&run(protocol, &[server]), want, "whole");
    for cut in 0..=server.len() {
        let got = run(protocol, &[&server[..cut], &server[cut..]]);
        assert_eq!(&got, want, "cut at {cut}");
    }
    let bytes: Vec<&[u8]> = server.chunks(1).collect();
    assert_eq!(&run(protocol, &bytes), want, "byte by byte");
}

const PIPELINED: &str = "MAIL FROM:<a@example.net>\r\nRCPT TO:<b@x>\r\nRCPT TO:<c@x>\r\n\
    RCPT TO:<d@x>\r\nDATA\r\n";

fn body() -> &'static str {
    std::str::from_utf8(BODY).unwrap()
}

#[test]
fn smtp_with_pipelining_sends_the_envelope_in_one_write() {
    let server = b"220 hop ESMTP\r\n250-hop\r\n250-PIPELINING\r\n250 8BITMIME\r\n\
        250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <c@x>: unknown\r\n250 2.1.5 Ok\r\n\
        354 go\r\n250 2.0.0 Ok: queued as X\r\n";
    let want = Run {
        written: format!("EHLO mx.test\r\n{PIPELINED}{}QUIT\r\n", body()),
        codes: Some(vec![250, 550, 250]),
        error: None,
    };
    check_every_split(Protocol::Smtp, server, &want);
}

#[test]
fn smtp_without_pipelining_waits_for_each_reply() {
    let server = b"220 hop\r\n250 hop\r\n250 ok\r\n452 4.5.3 full\r\n250 ok\r\n250 ok\r\n\
        354 go\r\n250 queued\r\n";
    let want = Run {
        written: format!("EHLO mx.test\r\n{PIPELINED}{}QUIT\r\n", body()),
        codes: Some(vec![452, 250, 250]),
        error: None,
    };
    check_every_split(Protocol::Smtp, server, &want);
}

#[test]
fn lmtp_decides_each_accepted_recipient_by_its_own_reply() {
    let server = b"220 lmtp\r\n250-lmtp\r\n250 PIPELINING\r\n250 ok\r\n250 ok\r\n\
        550 5.1.1 no\r\n250 ok\r\n354 go\r\n250 2.0.0 <b@x> saved\r\n452 4.2.2 <d@x> quota\r\n";
    let want = Run {
        written: format!("LHLO mx.test\r\n{PIPELINED}{}QUIT\r\n", body()),
        codes: Some(vec![250, 550, 452]),
        error: None,
    };
    check_every_split(Protocol::Lmtp, server, &want);
}

#[test]
fn a_refused_mail_decides_every_recipient_and_resets() {
    let server = b"220 hop\r\n250 PIPELINING\r\n451 4.3.0 try later\r\n503 no mail\r\n\
        503 no mail\r\n503 no mail\r\n503 no rcpt\r\n250 reset\r\n";
    let want = Run {
        written: format!("EHLO mx.test\r\n{PIPELINED}RSET\r\nQUIT\r\n"),
        codes: Some(vec![451, 451, 451]),
        error: None,
    };
    check_every_split(Protocol::Smtp, server, &want);
}

#[test]
fn no_recipient_accepted_without_pipelining_sends_no_data() {
    let server = b"220 hop\r\n250 hop\r\n250 ok\r\n550 a\r\n550 b\r\n451 c\r\n250 reset\r\n";
    let want = Run {
        written: "EHLO mx.test\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@x>\r\n\
            RCPT TO:<c@x>\r\nRCPT TO:<d@x>\r\nRSET\r\nQUIT\r\n"
            .into(),
        codes: Some(vec![550, 550, 451]),
        error: None,
    };
    check_every_split(Protocol::Smtp, server, &want);
}

#[test]
fn a_refused_data_decides_the_accepted_recipients() {
    let server = b"220 hop\r\n250 PIPELINING\r\n250 ok\r\n250 ok\r\n550 no\r\n250 ok\r\n\
        554 5.7.1 not today\r\n250 reset\r\n";
    let want = Run {
        written: format!("EHLO mx.test\r\n{PIPELINED}RSET\r\nQUIT\r\n"),
        codes: Some(vec![554, 550, 554]),
        error: None,
    };
    check_every_split(Protocol::Smtp, server, &want);
}

#[test]
fn helo_when_ehlo_is_refused() {
    let server = b"220 old\r\n502 what\r\n250 old\r\n250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n\
        354 go\r\n250 ok\r\n";
    let want = Run {
        written: format!(
            "EHLO mx.test\r\nHELO mx.test\r\n{PIPELINED}{}QUIT\r\n",
            body()
        ),
        codes: Some(vec![250, 250, 250]),
        error: None,
    };
    check_every_split(Protocol::Smtp, server, &want);
}

#[test]
fn failures_end_the_connection_with_a_clear_error() {
    let cases: &[(&[u8], &str)] = &[
        (b"421 4.3.2 busy\r\n", "421 4.3.2 busy"),
        (b"554 go away\r\n", "554 go away"),
        (b"220 hop\r\n421 4.4.2 bye\r\n", "421 4.4.2 bye"),
        (b"hello there\r\n", "malformed reply"),
        (
            b"220 hop\r\n250 hop\r\n250 ok\r\n250-a\r\n251 b\r\n",
            "code changed",
        ),
        (
            b"220 hop\r\n250 hop\r\n354 what\r\n",
            "unexpected reply: 354 what",
        ),
        (
            b"220 hop\r\n250 hop\r\n250 ok\r\n550 a\r\n550 b\r\n550 c\r\n250 r\r\n250 x\r\n",
            "unexpected reply: 250 x",
        ),
    ];
    for (server, want) in cases {
        let got = run(Protocol::Smtp, &[server]);
        let error = got.error.unwrap_or_default();
        assert!(error.contains(want), "{error:?} for {server:?}");
    }
}

#[test]
fn a_421_mid_message_decides_the_open_recipients() {
    let mut client = Client::new(Protocol::Smtp, "mx.test");
    let server = b"220 hop\r\n250 PIPELINING\r\n250 ok\r\n550 no\r\n421 4.3.0 closing\r\n";
    let (used, event) = client.receive(server).unwrap();
    assert_eq!(event, Some(Event::Ready));
    client.send(MAIL, &RCPTS[..]);
    let err = client.receive(&server[used..]).unwrap_err();
    assert!(matches!(err, ClientError::Refused(ref r) if r.code == 421));
    let codes: Vec<_> = client
        .undecided()
        .iter()
        .map(|r| r.as_ref().map(|r| r.code))
        .collect();
    assert_eq!(codes, [Some(550), Some(421), Some(421)]);
}

#[test]
fn a_lost_connection_leaves_accepted_recipients_undecided() {
    let mut client = Client::new(Protocol::Smtp, "mx.test");
    let server = b"220 hop\r\n250 PIPELINING\r\n250 ok\r\n250 ok\r\n550 no\r\n250 ok\r\n354 go\r\n";
    let (used, _) = client.receive(server).unwrap();
    client.send(MAIL, &RCPTS[..]);
    let (_, event) = client.receive(&server[used..]).unwrap();
    assert_eq!(event, Some(Event::SendBody));
    client.body_sent();
    let codes: Vec<_> = client
        .undecided()
        .iter()
        .map(|r| r.as_ref().map(|r| r.code))
        .collect();
    assert_eq!(codes, [None, Some(550), None]);
}

#[test]
fn connection_reuse_needs_no_rset_after_a_delivered_message() {
    let mut client = Client::new(Protocol::Smtp, "mx.test");
    let mut server: &[u8] =
        b"220 hop\r\n250 PIPELINING\r\n250 ok\r\n250 ok\r\n354 go\r\n250 one\r\n\
        250 ok\r\n250 ok\r\n354 go\r\n250 two\r\n";
    let mut done = Vec::new();
    while !server.is_empty() {
        let (used, event) = client.receive(server).unwrap();
        server = &server[used..];
        match event {
            Some(Event::Ready) => client.send(MAIL, &RCPTS[..1]),
            Some(Event::SendBody) => client.body_sent(),
            Some(Event::Done(replies)) => {
                done.push(replies[0].text.clone());
                if done.len() == 1 {
                    client.send(MAIL, &RCPTS[..1]);
                }
            }
            None => {}
        }
    }
    assert_eq!(done, ["one", "two"]);
    let written = String::from_utf8(client.output()).unwrap();
    assert_eq!(written.matches("MAIL FROM").count(), 2);
    assert!(!written.contains("RSET"));
}

#[test]
fn control_characters_in_reply_text_are_made_printable() {
    let mut client = Client::new(Protocol::Smtp, "mx.test");
    let err = client.receive(b"554 bad\x1b[31m red\r\n").unwrap_err();
    assert_eq!(err.to_string(), "554 bad?[31m red");
}
