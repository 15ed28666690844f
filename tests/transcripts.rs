//! Transcript tests: one per row of DESIGN.md's reply table (and the
//! protocol rules around them). Each transcript is replayed as one write,
//! split in two at every offset and one byte at a time, and paced (stopped
//! before each command line, as the error tarpit does); every replay must
//! give the same replies, body bytes and outcomes. The property tests of
//! whole sessions are in `random_sessions.rs`.

mod common;

use common::{assert_replies, run_every_split, session, Outcome, Run, EHLO, MAX};

const TEN_MIB: usize = 10 << 20;

fn check(input: &[u8], expected: &[&str]) -> Run {
    let run = run_every_split(input, MAX, true);
    assert_replies(&run, expected);
    run
}

const GREET: &str = "220 mx.test ESMTP mxgate";
const EHLO_REPLY: [&str; 7] = [
    "250-mx.test",
    "250-PIPELINING",
    "250-SIZE 10000",
    "250-8BITMIME",
    "250-ENHANCEDSTATUSCODES",
    "250-SMTPUTF8",
    "250 CHUNKING",
];

/// The greeting and EHLO reply, then `rest`.
fn after_ehlo<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![GREET];
    all.extend(EHLO_REPLY);
    all.extend(rest);
    all
}

#[test]
fn greeting_ehlo_and_quit() {
    let mut expected = after_ehlo(&["221 2.0.0 Bye"]);
    let run = check(&session(b"QUIT\r\n"), &expected);
    assert!(run.closed);
    expected.pop();
    let run = check(EHLO, &expected);
    assert!(!run.closed);
}

#[test]
fn helo_and_lone_lf_and_case() {
    let run = check(
        b"helo client.example\nmail from:<a@b.example>\nrcpt to:<Alice@Example.COM>\nquit\n",
        &[
            GREET,
            "250 mx.test",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "221 2.0.0 Bye",
        ],
    );
    assert!(run.closed);
}

#[test]
fn accepted_message_is_queued() {
    let input = session(
        b"MAIL FROM:<sender@remote.example> BODY=8BITMIME SMTPUTF8 SIZE=100\r\n\
          RCPT TO:<alice@example.com>\r\n\
          RCPT TO:<anyone@catchall.example>\r\n\
          DATA\r\n\
          Subject: hi\r\n\r\n..dot-stuffed\r\nbody\r\n.\r\n\
          QUIT\r\n",
    );
    let run = check(
        &input,
        &after_ehlo(&[
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Ok: queued as QID42",
            "221 2.0.0 Bye",
        ]),
    );
    let [message] = &run.messages[..] else {
        panic!("{:?}", run.messages)
    };
    assert_eq!(message.outcome, Outcome::Ready);
    assert_eq!(
        message.body,
        b"Subject: hi\r\n\r\n..dot-stuffed\r\nbody\r\n"
    );
    let envelope = &message.envelope;
    assert_eq!(envelope.mail_from, b"sender@remote.example");
    assert_eq!(
        envelope.rcpts,
        vec![
            b"alice@example.com".to_vec(),
            b"anyone@catchall.example".to_vec()
        ]
    );
    assert!(envelope.body_8bitmime && envelope.smtputf8);
    assert_eq!(envelope.body_kind, Some(mxgate::proto::BodyKind::Data));
}

#[test]
fn empty_body_and_null_sender() {
    let run = check(
        &session(b"MAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n.\r\nNOOP\r\n"),
        &after_ehlo(&[
            "250 2.1.0",
            "250 2.1.5",
            "354 ",
            "250 2.0.0 Ok: queued as QID42",
            "250 2.0.0 Ok",
        ]),
    );
    assert_eq!(run.messages.len(), 1);
    assert_eq!(run.messages[0].body, b"");
    assert_eq!(run.messages[0].envelope.mail_from, b"");
}

#[test]
fn spool_failure_is_451() {
    let input = session(b"MAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nx\r\n.\r\nRSET\r\n");
    let run = run_every_split(&input, MAX, false);
    assert_replies(
        &run,
        &after_ehlo(&[
            "250 2.1.0",
            "250 2.1.5",
            "354 ",
            "451 4.3.0 ",
            "250 2.0.0 Ok",
        ]),
    );
}

#[test]
fn out_of_order_commands_are_503() {
    check(
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nBDAT 3\r\nabcQUIT\r\n",
        &[
            GREET,
            "503 5.5.1 ",
            "503 5.5.1 ",
            "503 5.5.1 ",
            "503 5.5.1 ",
            "221 2.0.0",
        ],
    );
    check(
        &session(b"RCPT TO:<alice@example.com>\r\nMAIL FROM:<>\r\nDATA\r\nBDAT 0 LAST\r\nMAIL FROM:<>\r\n"),
        &after_ehlo(&[
            "503 5.5.1 Error: need MAIL",
            "250 2.1.0",
            "503 5.5.1 Error: need RCPT",
            "503 5.5.1 Error: need RCPT",
            "503 5.5.1 Error: nested MAIL",
        ]),
    );
}

#[test]
fn address_syntax_errors_split_sender_and_recipient() {
    check(
        &session(b"MAIL FROM:<a@@b>\r\nMAIL FROM:a@b.example\r\nMAIL FROM:<>\r\nRCPT TO:<c@@d>\r\nRCPT TO:<>\r\n"),
        &after_ehlo(&["501 5.1.7 ", "501 5.1.7 ", "250 2.1.0", "501 5.1.3 ", "501 5.1.3 "]),
    );
}

#[test]
fn parameters() {
    check(
        &session(
            b"MAIL FROM:<> AUTH=<>\r\nMAIL FROM:<> BODY=BINARYMIME\r\nMAIL FROM:<> SIZE=10001\r\n\
              MAIL FROM:<> SIZE=10000\r\nRCPT TO:<alice@example.com> NOTIFY=NEVER\r\n",
        ),
        &after_ehlo(&[
            "555 5.5.4 ",
            "555 5.5.4 ",
            "552 5.3.4 ",
            "250 2.1.0",
            "555 5.5.4 ",
        ]),
    );
}

#[test]
fn recipients_unknown_relay_postmaster() {
    check(
        &session(
            b"MAIL FROM:<a@b.example>\r\nRCPT TO:<carol@example.com>\r\nRCPT TO:<x@elsewhere.example>\r\n\
              RCPT TO:<Postmaster>\r\nRCPT TO:<alice+tag@example.com>\r\n",
        ),
        &after_ehlo(&[
            "250 2.1.0 Ok",
            "550 5.1.1 <carol@example.com>: Recipient address rejected: User unknown",
            "554 5.7.1 <x@elsewhere.example>: Relay access denied",
            "250 2.1.5 Ok",
            "250 2.1.5 Ok",
        ]),
    );
}

#[test]
fn too_many_recipients() {
    let mut input = session(b"MAIL FROM:<>\r\n");
    let mut expected = after_ehlo(&["250 2.1.0"]);
    for i in 0..101 {
        input.extend_from_slice(format!("RCPT TO:<u{i}@catchall.example>\r\n").as_bytes());
        expected.push(if i < 100 { "250 2.1.5" } else { "452 4.5.3 " });
    }
    let run = common::run_cut(&input, &[], MAX, true);
    assert_replies(&run, &expected);
}

#[test]
fn no_valid_recipients() {
    check(
        &session(
            b"MAIL FROM:<>\r\nRCPT TO:<nobody@example.com>\r\nDATA\r\nBDAT 2 LAST\r\nxxRSET\r\n",
        ),
        &after_ehlo(&[
            "250 2.1.0",
            "550 5.1.1 ",
            "554 5.5.1 Error: no valid recipients",
            "554 5.5.1 Error: no valid recipients",
            "250 2.0.0 Ok",
        ]),
    );
}

#[test]
fn oversize_data_is_read_to_the_end_then_552() {
    let mut input = session(b"MAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n");
    for _ in 0..200 {
        input.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
        );
    }
    input.extend_from_slice(b".\r\nNOOP\r\n");
    let run = common::run_cut(&input, &[], MAX, true);
    assert_replies(
        &run,
        &after_ehlo(&[
            "250 2.1.0",
            "250 2.1.5",
            "354 ",
            "552 5.3.4 ",
            "250 2.0.0 Ok",
        ]),
    );
    assert_eq!(run.messages.len(), 1);
    assert_eq!(run.messages[0].outcome, Outcome::Discarded);
    let small = session(
        b"MAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n0123456789\r\n.\r\nNOOP\r\n",
    );
    let run = run_every_split(&small, 10, true);
    assert_eq!(
        run.lines()[EHLO_REPLY.len() + 4],
        "552 5.3.4 Message size exceeds fixed limit; message refused"
    );
}

#[test]
fn oversize_bdat_is_552_at_last() {
    let input = session(b"MAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nBDAT 8\r\n01234567BDAT 8 LAST\r\n01234567NOOP\r\n");
    let run = run_every_split(&input, 10, true);
    let lines = run.lines();
    assert_eq!(
        &lines[EHLO_REPLY.len() + 1..EHLO_REPLY.len() + 3],
        ["250 2.1.0 Ok", "250 2.1.5 Ok"]
    );
    assert!(lines[EHLO_REPLY.len() + 3].starts_with("250 2.0.0 Ok: 8 octets"));
    assert!(lines[EHLO_REPLY.len() + 4].starts_with("552 5.3.4 "));
    assert_eq!(run.messages[0].outcome, Outcome::Discarded);
}

#[test]
fn bdat_chunks() {
    let run = check(
        &session(
            b"MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nBDAT 5\r\nline\nBDAT 8\r\n\r\n.two\r\nbdat 3 LAST\r\nendQUIT\r\n",
        ),
        &after_ehlo(&[
            "250 2.1.0",
            "250 2.1.5",
            "250 2.0.0 Ok: 5 octets received",
            "250 2.0.0 Ok: 8 octets received",
            "550 5.5.2 ",
            "221 2.0.0",
        ]),
    );
    assert_eq!(
        run.messages[0].outcome,
        Outcome::Discarded,
        "bare LF in the first chunk"
    );
    let run = check(
        &session(
            b"MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nBDAT 5\r\nline\rBDAT 7\r\n\n.two\r\nbdat 3 LAST\r\nendQUIT\r\n",
        ),
        &after_ehlo(&["250 2.1.0", "250 2.1.5", "250 2.0.0 Ok: 5", "250 2.0.0 Ok: 7", "250 2.0.0 Ok: queued as QID42", "221 2.0.0"]),
    );
    assert_eq!(run.messages[0].outcome, Outcome::Ready);
    assert_eq!(run.messages[0].body, b"line\r\n.two\r\nend");
    assert_eq!(
        run.messages[0].envelope.body_kind,
        Some(mxgate::proto::BodyKind::Bdat)
    );
}

#[test]
fn bdat_zero_last_and_no_data_after_bdat() {
    let run = check(
        &session(b"MAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nBDAT 2\r\nhiDATA\r\nMAIL FROM:<>\r\nBDAT 0 LAST\r\n"),
        &after_ehlo(&["250 2.1.0", "250 2.1.5", "250 2.0.0 Ok: 2", "503 5.5.1 ", "503 5.5.1 ", "250 2.0.0 Ok: queued as QID42"]),
    );
    assert_eq!(run.messages[0].body, b"hi");
    let run = check(
        &session(b"MAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nBDAT 0 LAST\r\n"),
        &after_ehlo(&["250 2.1.0", "250 2.1.5", "250 2.0.0 Ok: queued as QID42"]),
    );
    assert_eq!(run.messages[0].body, b"");
}

/// SMTP smuggling (CVE-2023-51764): fake terminators do not end DATA, the
/// commands after them are never answered, and the message is refused.
#[test]
fn smuggling_attempts_are_refused_after_the_real_end() {
    let fakes: &[&[u8]] = &[
        b"\n.\n",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r.\r",
        b"\r.\r\n",
        b"\n.\r",
        b"\r.\n",
        b"\r\n.\r\r\n",
        b"\r\r\n.\r\r\n",
    ];
    for fake in fakes {
        let input = [
            &session(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nhello")[..],
            fake,
            b"MAIL FROM:<evil@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nsmuggled\r\n.\r\nNOOP\r\n",
        ]
        .concat();
        let run = check(
            &input,
            &after_ehlo(&[
                "250 2.1.0",
                "250 2.1.5",
                "354 ",
                "550 5.5.2 ",
                "250 2.0.0 Ok",
            ]),
        );
        assert!(run.lines()[EHLO_REPLY.len() + 4].contains("bare <CR> or <LF>"));
        assert_eq!(run.messages.len(), 1);
        assert_eq!(run.messages[0].outcome, Outcome::Discarded);
    }
    // A NUL between CRLF and the dot is not a terminator, and not bare either.
    let input =
        session(b"MAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\na\r\n\x00.\r\nb\r\n.\r\n");
    let run = check(
        &input,
        &after_ehlo(&["250 2.1.0", "250 2.1.5", "354 ", "250 2.0.0 Ok: queued"]),
    );
    assert_eq!(run.messages[0].body, b"a\r\n\x00.\r\nb\r\n");
}

#[test]
fn long_lines_are_500_and_the_session_goes_on() {
    let mut input = session(b"NOOP ");
    input.extend(std::iter::repeat_n(b'x', 600));
    input.extend_from_slice(b"\r\nNOOP\r\n");
    check(
        &input,
        &after_ehlo(&["500 5.5.2 Error: line too long", "250 2.0.0 Ok"]),
    );
    // 510 octets plus CRLF fit; 511 do not.
    for (len, reply) in [
        (510, "250 2.0.0 Ok"),
        (511, "500 5.5.2 Error: line too long"),
    ] {
        let mut input = b"NOOP ".to_vec();
        input.extend(std::iter::repeat_n(b'x', len - 5));
        input.extend_from_slice(b"\r\n");
        assert_replies(&common::run_cut(&input, &[], MAX, true), &[GREET, reply]);
    }
}

#[test]
fn ten_mib_line_keeps_memory_bounded() {
    let mut driver = common::Driver::new(MAX, true);
    driver.flood(TEN_MIB, common::MAX_TAIL);
    driver.read(b"\r\nNOOP\r\n");
    assert_replies(&driver.run, &[GREET, "500 5.5.2 ", "250 2.0.0 Ok"]);
    assert!(driver.run.max_tail <= common::MAX_TAIL);
}

#[test]
fn other_commands() {
    check(
        &session(b"VRFY alice\r\nEXPN list\r\nHELP\r\nFOO bar\r\nSTARTTLS\r\nNOOP\r\nRSET\r\nQUIT\r\nNOOP\r\n"),
        &after_ehlo(&["252 2.5.2 ", "502 5.5.1 ", "214 2.0.0 ", "500 5.5.2 ", "502 5.5.1 ", "250 2.0.0 Ok", "250 2.0.0 Ok", "221 2.0.0 Bye"]),
    );
}

#[test]
fn rset_clears_the_transaction() {
    check(
        &session(
            b"MAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nRSET\r\nDATA\r\nMAIL FROM:<>\r\n",
        ),
        &after_ehlo(&[
            "250 2.1.0",
            "250 2.1.5",
            "250 2.0.0 Ok",
            "503 5.5.1 ",
            "250 2.1.0",
        ]),
    );
}

/// A whole pipelined group with two transactions: replies stay in order
/// behind each queued reply.
#[test]
fn pipelined_transactions_stay_in_order() {
    let run = check(
        &session(
            b"MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<nope@example.com>\r\nDATA\r\none\r\n.\r\n\
              MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nBDAT 3 LAST\r\ntwoQUIT\r\n",
        ),
        &after_ehlo(&[
            "250 2.1.0",
            "250 2.1.5",
            "550 5.1.1 ",
            "354 ",
            "250 2.0.0 Ok: queued as QID42",
            "250 2.1.0",
            "250 2.1.5",
            "250 2.0.0 Ok: queued as QID42",
            "221 2.0.0 Bye",
        ]),
    );
    let bodies: Vec<&[u8]> = run.messages.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, [&b"one\r\n"[..], b"two"]);
}

#[test]
fn idle_timeout_is_421_and_close() {
    use mxgate::proto::{Event, Session};
    use std::time::{Duration, Instant};
    let t0 = Instant::now();
    let table = common::table();
    let mut session = Session::new(common::config(MAX), t0);
    let mut out = Vec::new();
    session.greet(t0, &mut out);
    assert_eq!(session.deadline(), t0 + Duration::from_secs(300));
    let t1 = t0 + Duration::from_secs(10);
    let mut input: &[u8] = b"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n";
    let (n, event) = session.feed(input, t1, &table, &mut out);
    assert_eq!((n, event), (input.len(), Event::Envelope));
    input = &input[n..];
    assert_eq!(
        session.feed(input, t1, &table, &mut out),
        (0, Event::NeedInput)
    );
    assert_eq!(
        session.deadline(),
        t1 + Duration::from_secs(180),
        "DATA uses the data timeout"
    );
    session.time_out(&mut out);
    let text = String::from_utf8_lossy(&out);
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("421 4.4.2 mx.test") && last.contains("timeout"),
        "{last}"
    );
    assert_eq!(
        session.feed(b"QUIT\r\n", t1, &table, &mut out),
        (0, Event::Close)
    );
}

#[test]
fn shutdown_closes_idle_sessions_at_once() {
    let mut driver = common::Driver::new(MAX, true);
    driver.read(EHLO);
    assert!(driver.session.shut_down(&mut driver.run.replies));
    driver.read(b"NOOP\r\n");
    let mut expected = after_ehlo(&["421 4.3.2 mx.test"]);
    assert_replies(&driver.run, &expected);
    assert!(driver.run.closed);
    // Inside a transaction: it finishes, then the 421.
    let mut driver = common::Driver::new(MAX, true);
    driver.read(&session(b"MAIL FROM:<>\r\n"));
    assert!(!driver.session.shut_down(&mut driver.run.replies));
    driver.read(b"RCPT TO:<alice@example.com>\r\nDATA\r\nhi\r\n.\r\n");
    expected.pop();
    expected.extend([
        "250 2.1.0",
        "250 2.1.5",
        "354 ",
        "250 2.0.0 Ok: queued as QID42",
        "421 4.3.2 ",
    ]);
    assert_replies(&driver.run, &expected);
    assert!(driver.run.closed);
    assert_eq!(driver.run.messages.len(), 1);
}

#[test]
fn over_capacity_reply() {
    let mut out = Vec::new();
    mxgate::proto::reply::write_over_capacity(common::HOST, &mut out);
    assert_eq!(out, b"421 4.3.2 mx.test Error: too many connections\r\n");
}

#[test]
fn rset_between_bdat_chunks_discards_the_message() {
    let run = check(
        &session(b"MAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nBDAT 2\r\nhiRSET\r\nBDAT 1 LAST\r\nxNOOP\r\n"),
        &after_ehlo(&["250 2.1.0", "250 2.1.5", "250 2.0.0 Ok: 2", "250 2.0.0 Ok", "503 5.5.1 ", "250 2.0.0 Ok"]),
    );
    assert_eq!(run.messages.len(), 1);
    assert_eq!(run.messages[0].outcome, Outcome::Discarded);
}

#[test]
fn non_ascii_addresses_need_smtputf8() {
    let run = check(
        &session(
            "MAIL FROM:<jörg@b.example>\r\nMAIL FROM:<>\r\nRCPT TO:<jörg@catchall.example>\r\nRSET\r\n\
             MAIL FROM:<jörg@b.example> SMTPUTF8\r\nRCPT TO:<jörg@catchall.example>\r\n"
                .as_bytes(),
        ),
        &after_ehlo(&["553 5.6.7 ", "250 2.1.0", "553 5.6.7 ", "250 2.0.0 Ok", "250 2.1.0", "250 2.1.5"]),
    );
    assert!(!run.closed);
}

/// Ten MiB without a line end inside DATA and inside a BDAT chunk: the
/// driver never keeps more than a few octets, and the oversize message is
/// refused after its end.
#[test]
fn ten_mib_bodies_keep_memory_bounded() {
    for (start, end) in [
        (&b"DATA\r\n"[..], &b"\r\n.\r\nNOOP\r\n"[..]),
        (b"BDAT 10485760 LAST\r\n", b"NOOP\r\n"),
    ] {
        let mut driver = common::Driver::new(MAX, true);
        driver.read(&session(b"MAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\n"));
        driver.read(start);
        driver.flood(TEN_MIB, 4);
        driver.read(end);
        let mut expected = after_ehlo(&[
            "250 2.1.0",
            "250 2.1.5",
            "354 ",
            "552 5.3.4 ",
            "250 2.0.0 Ok",
        ]);
        if start.starts_with(b"BDAT") {
            expected.retain(|line| !line.starts_with("354"));
        }
        assert_replies(&driver.run, &expected);
        assert_eq!(driver.run.messages[0].outcome, Outcome::Discarded);
    }
}

/// An idle session must stay small: the runtime budgets ≤ 1 KiB per idle
/// connection, buffers included.
#[test]
fn a_session_is_a_small_struct() {
    let size = std::mem::size_of::<mxgate::proto::Session>();
    assert!(size <= 192, "Session is {size} octets");
}

/// Pacing stops before each command line, never inside a body or a long
/// line, and not before a line that is still incomplete.
#[test]
fn a_paced_session_stops_before_each_command_line_only() {
    let input = session(
        b"MAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nNOOP\r\nRSET\r\n.\r\n\
          BDAT 6\r\nNOOP\r\n",
    );
    let long = [&[b'x'; 600][..], b"\r\nQUIT\r\n"].concat();
    let mut driver = common::Driver::new(MAX, true);
    driver.session.pace();
    driver.read(&input);
    // EHLO, MAIL, RCPT, DATA, BDAT: not the body's lines.
    assert_eq!(driver.run.stops, 5);
    driver.read(b"RSET\r");
    assert_eq!(driver.run.stops, 5, "an incomplete line");
    driver.read(b"\n");
    assert_eq!(driver.run.stops, 6);
    driver.read(&long);
    assert_eq!(driver.run.stops, 8, "the long line, then QUIT");
    assert!(driver.run.closed);
}
