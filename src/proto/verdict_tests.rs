//! Table tests: a session's refusals carry the stage, the reply it wrote and
//! the envelope; the list is bounded; queued messages and log lines read as
//! documented.

use super::*;
use crate::proto::tally::run_session;
use crate::proto::Tally;

const HELLO: &str = "EHLO c\r\nMAIL FROM:<s@x.net>\r\n";

/// A refusal as owned strings: stage, code, reply, from, to.
type Row = (Stage, u16, String, String, String);

fn rows(tally: &Tally) -> Vec<Row> {
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
    let row = |r: Rejection| (r.stage, r.code(), text(r.reply), text(r.from), text(r.to));
    tally.rejections().iter().map(row).collect()
}

fn refusals_of(input: &str, queue_id: Option<&str>) -> Vec<Row> {
    rows(&run_session(input.as_bytes(), queue_id, |_| {}))
}

fn row(stage: Stage, reply: &str, from: &str, to: &str) -> Row {
    let code = reply[..3].parse().unwrap();
    (stage, code, reply.into(), from.into(), to.into())
}

#[test]
fn each_refusal_carries_its_reply_and_envelope() {
    use Stage::*;
    let unknown = "550 5.1.1 <b@example.com>: Recipient address rejected: User unknown";
    let cases: Vec<(String, Vec<Row>)> = vec![
        (
            format!("{HELLO}RCPT TO:<b@example.com>\r\n"),
            vec![row(Rcpt, unknown, "<s@x.net>", "<b@example.com>")],
        ),
        (
            format!("{HELLO}RCPT TO:<a@elsewhere.net>\r\n"),
            vec![row(
                Rcpt,
                "554 5.7.1 <a@elsewhere.net>: Relay access denied",
                "<s@x.net>",
                "<a@elsewhere.net>",
            )],
        ),
        (
            "EHLO c\r\nRCPT TO:<a@example.com>\r\n".into(),
            vec![row(
                Rcpt,
                "503 5.5.1 Error: need MAIL command",
                "",
                "<a@example.com>",
            )],
        ),
        (
            format!("{HELLO}RCPT TO:<broken\r\n"),
            vec![row(
                Rcpt,
                "501 5.1.3 Bad recipient address syntax",
                "<s@x.net>",
                "",
            )],
        ),
        (
            "MAIL FROM:<s@x.net>\r\n".into(),
            vec![row(
                Mail,
                "503 5.5.1 Error: send HELO/EHLO first",
                "<s@x.net>",
                "",
            )],
        ),
        (
            "EHLO c\r\nMAIL FROM:<s@x.net> SIZE=99\r\n".into(),
            vec![row(
                Mail,
                "552 5.3.4 Message size exceeds fixed limit",
                "<s@x.net>",
                "",
            )],
        ),
        (
            "EHLO c\r\nMAIL FROM:<>\r\nMAIL FROM:<>\r\n".into(),
            vec![row(Mail, "503 5.5.1 Error: nested MAIL command", "<>", "")],
        ),
        (
            format!("{HELLO}RCPT TO:<b@example.com>\r\nDATA\r\n"),
            vec![
                row(Rcpt, unknown, "<s@x.net>", "<b@example.com>"),
                row(
                    Data,
                    "554 5.5.1 Error: no valid recipients",
                    "<s@x.net>",
                    "",
                ),
            ],
        ),
        (
            format!("{HELLO}BDAT 2 LAST\r\nab"),
            vec![row(
                Data,
                "503 5.5.1 Error: need RCPT command",
                "<s@x.net>",
                "",
            )],
        ),
        (
            format!("{HELLO}RCPT TO:<a@example.com>\r\nDATA\r\nover sixteen octets\r\n.\r\n"),
            vec![row(
                EndOfMessage,
                "552 5.3.4 Message size exceeds fixed limit; message refused",
                "<s@x.net>",
                "<a@example.com>",
            )],
        ),
        (
            format!("{HELLO}RCPT TO:<a@example.com>\r\nBDAT 3 LAST\r\na\nb"),
            vec![row(
                EndOfMessage,
                "550 5.5.2 Error: bare <CR> or <LF> in message content; message refused",
                "<s@x.net>",
                "<a@example.com>",
            )],
        ),
        (
            format!("{HELLO}RCPT TO:<a@example.com>\r\nDATA\r\nok\r\n.\r\nQUIT\r\n"),
            vec![],
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(refusals_of(&input, Some("ID")), expected, "{input:?}");
    }
}

#[test]
fn a_spool_failure_is_refused_at_the_end_of_the_message() {
    let input = format!("{HELLO}RCPT TO:<a@example.com>\r\nDATA\r\nok\r\n.\r\n");
    let expected = row(
        Stage::EndOfMessage,
        "451 4.3.0 Error: queue file write error",
        "<s@x.net>",
        "<a@example.com>",
    );
    assert_eq!(refusals_of(&input, None), vec![expected]);
}

#[test]
fn many_recipients_are_named_up_to_four() {
    let rcpts = "RCPT TO:<a@example.com>\r\n".repeat(6);
    let input = format!("{HELLO}{rcpts}BDAT 1 LAST\r\n\n");
    let refusals = refusals_of(&input, Some("ID"));
    let to = "<a@example.com>,<a@example.com>,<a@example.com>,<a@example.com> (+2 more)";
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].4, to);
}

#[test]
fn a_flood_of_refusals_is_listed_up_to_the_cap_and_counted() {
    let bad = "RCPT TO:<b@example.com>\r\n".repeat(LISTED + 8);
    let tally = run_session(format!("{HELLO}{bad}").as_bytes(), None, |_| {});
    assert_eq!(tally.rejections().iter().count(), LISTED);
    assert_eq!(tally.rejections().unlisted(), 8);
    assert!(tally.rejections().iter().all(|r| r.helo == b"c"));
}

#[test]
fn each_refusal_names_the_helo_of_its_time() {
    let input = format!(
        "{HELLO}RCPT TO:<b@example.com>\r\nEHLO d\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\n"
    );
    let tally = run_session(input.as_bytes(), None, |_| {});
    let helos: Vec<&[u8]> = tally.rejections().iter().map(|r| r.helo).collect();
    assert_eq!(helos, [b"c", b"d"]);
}

#[test]
fn a_queued_message_names_its_envelope() {
    let input =
        format!("{HELLO}RCPT TO:<a@example.com>\r\nRCPT TO:<postmaster>\r\nDATA\r\nok\r\n.\r\n");
    let mut lines = Vec::new();
    let tally = run_session(input.as_bytes(), Some("4Xq2"), |session| {
        lines.push(session.queued("4Xq2").line("192.0.2.1").to_string());
    });
    assert!(tally.rejections().is_empty());
    let expected = "queued as 4Xq2: from [192.0.2.1] helo=<c>; from=<s@x.net> nrcpt=2 size=4";
    assert_eq!(lines, [expected]);
}

#[test]
fn a_rejection_line_reads_like_postfix() {
    let input = format!("{HELLO}RCPT TO:<b@example.com>\r\nDATA\r\n");
    let tally = run_session(input.as_bytes(), None, |_| {});
    let lines: Vec<String> = tally
        .rejections()
        .iter()
        .map(|r| r.line("203.0.113.9").to_string())
        .collect();
    assert_eq!(
        lines,
        [
            "reject: RCPT from [203.0.113.9] helo=<c>: 550 5.1.1 <b@example.com>: \
             Recipient address rejected: User unknown; from=<s@x.net> to=<b@example.com>",
            "reject: DATA from [203.0.113.9] helo=<c>: 554 5.5.1 Error: no valid recipients; \
             from=<s@x.net>",
        ]
    );
}

#[test]
fn client_octets_cannot_forge_log_lines() {
    let rejection = Rejection {
        stage: Stage::Mail,
        reply: b"503 5.5.1 Error: send HELO/EHLO first",
        helo: b"x\r\nreject: fake\x1b[31m \xff",
        from: b"<a@b>",
        to: b"",
    };
    let line = rejection.line("192.0.2.1").to_string();
    assert!(!line.contains(['\r', '\n', '\x1b']), "{line}");
    assert!(
        line.contains("helo=<x\\r\\nreject: fake\\u{1b}[31m \u{fffd}>"),
        "{line}"
    );
}

#[test]
fn printable_escapes_controls_between_plain_runs() {
    let cases: [(&[u8], &str); 5] = [
        (b"", ""),
        (b"plain.example", "plain.example"),
        (b"a\x07b\xc3\xa9\x1b", "a\\u{7}b\u{e9}\\u{1b}"),
        (b"\r\n", "\\r\\n"),
        (b"\xffok\xc2\x85", "\u{fffd}ok\\u{85}"),
    ];
    for (raw, shown) in cases {
        assert_eq!(Printable(raw).to_string(), shown, "{raw:?}");
    }
}
