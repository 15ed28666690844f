//! Table tests of the milter client: negotiation, every stage and reply,
//! replies split at every octet, and bad packets.

use std::time::{Duration, Instant};

use super::packet::encode;
use super::*;

const TIMEOUT: Duration = Duration::from_secs(30);

/// One reply packet as a milter sends it.
fn packet(code: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&mut out, code, &[data]);
    out
}

fn negotiate_reply(version: u32, actions: u32, protocol: u32) -> Vec<u8> {
    let data: Vec<u8> = [version, actions, protocol]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect();
    packet(b'O', &data)
}

/// A client past negotiation with these actions and steps.
fn ready(actions: u32, protocol: u32) -> (Client, Instant) {
    let now = Instant::now();
    let mut client = Client::new(TIMEOUT, now);
    let sent = client.poll_output().to_vec();
    assert_eq!(&sent[..5], &[0, 0, 0, 13, b'O']);
    assert_eq!(&sent[5..9], &VERSION.to_be_bytes());
    client.advance_output(sent.len());
    let reply = negotiate_reply(6, actions, protocol);
    assert_eq!(client.handle_input(&reply, now), Ok(Some(Answer::Continue)));
    assert!(client.is_ready());
    (client, now)
}

/// Sends `stage`, then feeds `replies`; returns the answer.
fn ask(
    client: &mut Client,
    stage: Stage,
    replies: &[u8],
    now: Instant,
) -> Result<Option<Answer>, MilterError> {
    assert_eq!(client.stage(stage, &[], now), Step::Waiting);
    client.handle_input(replies, now)
}

#[test]
fn stages_are_encoded_as_version_6_packets() {
    let (mut client, now) = ready(action::OFFERED, 0);
    let addr = "192.0.2.7:4321".parse().unwrap();
    let stages: &[(Stage, &[u8])] = &[
        (
            Stage::Connect {
                hostname: "[192.0.2.7]",
                addr: Some(addr),
            },
            b"C[192.0.2.7]\x004\x10\xe1192.0.2.7\x00",
        ),
        (Stage::Helo("mx.example"), b"Hmx.example\x00"),
        (
            Stage::Mail("<a@b.example>", &["BODY=8BITMIME"]),
            b"M<a@b.example>\x00BODY=8BITMIME\x00",
        ),
        (Stage::Rcpt("<c@d.example>", &[]), b"R<c@d.example>\x00"),
        (Stage::Data, b"T"),
        (
            Stage::Header("Subject", b"hi\n\tthere"),
            b"LSubject\x00hi\n\tthere\x00",
        ),
        (Stage::EndOfHeaders, b"N"),
        (Stage::Body(b"line\r\n"), b"Bline\r\n"),
        (Stage::EndOfMessage, b"E"),
    ];
    for (stage, want) in stages {
        client.advance_output(usize::MAX);
        let got = ask(&mut client, *stage, &packet(b'c', b""), now);
        assert_eq!(got, Ok(Some(Answer::Continue)));
        let sent = client.poll_output();
        assert_eq!(&sent[4..], *want, "{stage:?}");
        assert_eq!(sent[..4], u32::try_from(want.len()).unwrap().to_be_bytes());
    }
}

#[test]
fn macros_precede_their_stage() {
    let (mut client, now) = ready(0, 0);
    client.advance_output(usize::MAX);
    client.stage(
        Stage::Mail("<a@b>", &[]),
        &[("{mail_addr}", "a@b"), ("i", "ID1")],
        now,
    );
    let sent = client.poll_output();
    let macro_packet = b"DM{mail_addr}\x00a@b\x00i\x00ID1\x00";
    assert_eq!(&sent[4..4 + macro_packet.len()], macro_packet);
    assert_eq!(sent[4 + macro_packet.len() + 4], b'M');
}

#[test]
fn declined_stages_are_skipped_and_unanswered_ones_not_awaited() {
    let (mut client, now) = ready(0, step::NO_HELO | step::NR_MAIL | step::NO_DATA);
    client.advance_output(usize::MAX);
    let step = client.stage(Stage::Helo("x"), &[("j", "mx")], now);
    assert_eq!(step, Step::Done(Answer::Continue));
    assert!(client.poll_output().is_empty(), "nor its macros");
    assert_eq!(
        client.stage(Stage::Data, &[], now),
        Step::Done(Answer::Continue)
    );
    let step = client.stage(Stage::Mail("<a@b>", &[]), &[], now);
    assert_eq!(step, Step::Done(Answer::Continue));
    assert_eq!(client.poll_output()[4], b'M');
    assert!(client.is_ready() && client.deadline().is_none());
}

#[test]
fn whether_rcpt_is_answered_follows_negotiation() {
    let now = Instant::now();
    assert!(Client::new(TIMEOUT, now).answers_rcpt(), "not known yet");
    assert!(ready(0, step::NO_HELO | step::NR_MAIL).0.answers_rcpt());
    assert!(!ready(0, step::NO_RCPT).0.answers_rcpt());
    assert!(!ready(0, step::NR_RCPT).0.answers_rcpt());
}

#[test]
fn every_final_reply_maps_to_an_answer() {
    let cases: &[(u8, &[u8], Answer)] = &[
        (b'a', b"", Answer::Accept),
        (b'c', b"", Answer::Continue),
        (b'r', b"", Answer::Reject(None)),
        (b't', b"", Answer::Tempfail(None)),
        (b'd', b"", Answer::Discard),
        (b'f', b"", Answer::Tempfail(None)),
        (
            b'y',
            b"554 5.7.1 virus found\0",
            Answer::Reject(Some("554 5.7.1 virus found".into())),
        ),
        (
            b'y',
            b"451 4.7.1 later\0",
            Answer::Tempfail(Some("451 4.7.1 later".into())),
        ),
        (
            b'y',
            b"550-5.7.1 one\r\n550 5.7.1 two\0",
            Answer::Reject(Some("550-5.7.1 one\r\n550 5.7.1 two".into())),
        ),
    ];
    for (code, data, want) in cases {
        let (mut client, now) = ready(0, 0);
        let got = ask(
            &mut client,
            Stage::Rcpt("<x@y>", &[]),
            &packet(*code, data),
            now,
        );
        assert_eq!(got, Ok(Some(want.clone())), "{}", char::from(*code));
        assert!(client.is_ready());
    }
}

#[test]
fn modifications_at_end_of_message_are_collected() {
    let (mut client, now) = ready(action::OFFERED, 0);
    let mut replies = packet(b'h', b"X-Spam\0yes\0");
    replies.extend(packet(b'i', b"\0\0\0\x01X-First\0top\0"));
    replies.extend(packet(b'm', b"\0\0\0\x02Subject\0\0"));
    replies.extend(packet(b'q', b"looks bad\0"));
    replies.extend(packet(b'a', b""));
    let got = ask(&mut client, Stage::EndOfMessage, &replies, now);
    assert_eq!(got, Ok(Some(Answer::Accept)));
    let edits = client.take_edits();
    assert_eq!(edits.quarantine.as_deref(), Some("looks bad"));
    assert_eq!(
        edits.headers,
        vec![
            HeaderEdit::Add {
                name: "X-Spam".into(),
                value: "yes".into()
            },
            HeaderEdit::Insert {
                index: 1,
                name: "X-First".into(),
                value: "top".into()
            },
            HeaderEdit::Change {
                index: 2,
                name: "Subject".into(),
                value: String::new()
            },
        ]
    );
}

#[test]
fn a_modification_not_negotiated_is_an_error() {
    let cases: &[(u32, u8, &[u8])] = &[
        (action::CHANGE_HEADERS | action::QUARANTINE, b'h', b"X\0y\0"),
        (action::ADD_HEADERS, b'm', b"\0\0\0\x01X\0y\0"),
        (action::ADD_HEADERS, b'q', b"why\0"),
        (action::OFFERED, b'+', b"<r@x>\0"),
        (action::OFFERED, b'b', b"new body"),
    ];
    for (actions, code, data) in cases {
        let (mut client, now) = ready(*actions, 0);
        let got = ask(&mut client, Stage::EndOfMessage, &packet(*code, data), now);
        assert_eq!(got, Err(MilterError::NotNegotiated(*code)));
    }
}

#[test]
fn a_modification_before_end_of_message_is_out_of_place() {
    let (mut client, now) = ready(action::OFFERED, 0);
    let got = ask(
        &mut client,
        Stage::Rcpt("<a@b>", &[]),
        &packet(b'h', b"X\0y\0"),
        now,
    );
    assert_eq!(got, Err(MilterError::Unexpected(b'h')));
    assert!(!client.is_ready());
}

/// Sends the stages without waiting; returns the client.
fn pipelined(stages: &[Stage]) -> (Client, Instant) {
    let (mut client, now) = ready(action::OFFERED, 0);
    for &stage in stages {
        assert_eq!(client.stage(stage, &[], now), Step::Waiting);
    }
    (client, now)
}

#[test]
fn pipelined_stages_are_answered_in_order() {
    let stages = [
        Stage::Mail("<a@b>", &[]),
        Stage::Rcpt("<c@d>", &[]),
        Stage::EndOfMessage,
    ];
    let (mut client, now) = pipelined(&stages);
    let continue_ = packet(b'c', b"");
    assert_eq!(client.handle_input(&continue_, now), Ok(None));
    // Edits belong to end of message, not to the RCPT still due.
    let mut early = pipelined(&stages).0;
    let edit = packet(b'h', b"X\0y\0");
    assert_eq!(
        early.handle_input(&[continue_.clone(), edit.clone()].concat(), now),
        Err(MilterError::Unexpected(b'h'))
    );
    assert_eq!(
        client.handle_input(&[continue_.clone(), edit].concat(), now),
        Ok(None)
    );
    assert_eq!(
        client.handle_input(&packet(b'a', b""), now),
        Ok(Some(Answer::Accept))
    );
    assert!(client.is_ready(), "every stage answered: in step");
    assert_eq!(client.take_edits().headers.len(), 1);
}

#[test]
fn a_final_answer_with_stages_due_ends_the_conversation() {
    let (mut client, now) = pipelined(&[Stage::Mail("<a@b>", &[]), Stage::Rcpt("<c@d>", &[])]);
    assert_eq!(
        client.handle_input(&packet(b'r', b""), now),
        Ok(Some(Answer::Reject(None)))
    );
    assert!(
        !client.is_ready() && !client.is_waiting(),
        "out of step: not reusable"
    );
    assert_eq!(client.deadline(), None, "nothing more is awaited");
}

#[test]
fn progress_restarts_the_timeout() {
    let (mut client, now) = ready(0, 0);
    assert_eq!(client.stage(Stage::EndOfMessage, &[], now), Step::Waiting);
    assert_eq!(client.deadline(), Some(now + TIMEOUT));
    let later = now + Duration::from_secs(20);
    assert_eq!(client.handle_input(&packet(b'p', b""), later), Ok(None));
    assert_eq!(client.deadline(), Some(later + TIMEOUT));
    assert_eq!(client.check_timeout(now + TIMEOUT), Ok(()));
    assert_eq!(
        client.check_timeout(later + TIMEOUT),
        Err(MilterError::Timeout)
    );
}

#[test]
fn replies_split_at_every_octet_give_the_same_answer() {
    let mut replies = packet(b'p', b"");
    replies.extend(packet(b'h', b"X-Virus\0clean\0"));
    replies.extend(packet(b'y', b"550 5.7.1 no\0"));
    for split in 0..=replies.len() {
        let (mut client, now) = ready(action::OFFERED, 0);
        assert_eq!(client.stage(Stage::EndOfMessage, &[], now), Step::Waiting);
        let first = client.handle_input(&replies[..split], now);
        let answer = if split == replies.len() {
            first
        } else {
            assert_eq!(first, Ok(None), "split at {split}");
            client.handle_input(&replies[split..], now)
        };
        assert_eq!(
            answer,
            Ok(Some(Answer::Reject(Some("550 5.7.1 no".into())))),
            "split at {split}"
        );
        assert_eq!(client.take_edits().headers.len(), 1);
    }
}

#[test]
fn negotiation_split_at_every_octet() {
    let reply = negotiate_reply(6, action::OFFERED, step::NO_HELO);
    for split in 0..reply.len() {
        let now = Instant::now();
        let mut client = Client::new(TIMEOUT, now);
        assert_eq!(client.handle_input(&reply[..split], now), Ok(None));
        assert_eq!(
            client.handle_input(&reply[split..], now),
            Ok(Some(Answer::Continue))
        );
    }
}

#[test]
fn negotiation_is_bounded_by_what_was_offered() {
    let now = Instant::now();
    let mut client = Client::new(TIMEOUT, now);
    // Asks for every action, and MDS_256K: neither was offered.
    let reply = negotiate_reply(6, u32::MAX, step::NO_HELO | 0x1000_0000);
    client.handle_input(&reply, now).unwrap();
    assert_eq!(
        client.stage(Stage::Helo("x"), &[], now),
        Step::Done(Answer::Continue)
    );
    let got = ask(
        &mut client,
        Stage::EndOfMessage,
        &packet(b'-', b"<r@x>\0"),
        now,
    );
    assert_eq!(got, Err(MilterError::NotNegotiated(b'-')));
}

#[test]
fn an_old_milter_is_not_told_of_data() {
    let now = Instant::now();
    let mut client = Client::new(TIMEOUT, now);
    client.handle_input(&negotiate_reply(2, 0, 0), now).unwrap();
    assert_eq!(
        client.stage(Stage::Data, &[], now),
        Step::Done(Answer::Continue)
    );
}

/// A case of [`bad_input_is_a_clear_error`]: a reply `code` whose `data`
/// does not parse.
fn malformed(name: &'static str, code: u8, data: &[u8]) -> (&'static str, Vec<u8>, MilterError) {
    let error = MilterError::Reply(ReplyError::Malformed(code));
    (name, packet(code, data), error)
}

#[test]
fn bad_input_is_a_clear_error() {
    let negotiate = negotiate_reply(6, 0, 0);
    let oversized = ((MAX_PACKET + 1) as u32).to_be_bytes();
    let cases: Vec<(&str, Vec<u8>, MilterError)> = vec![
        (
            "empty packet",
            vec![0, 0, 0, 0],
            MilterError::Frame(FrameError::Empty),
        ),
        (
            "oversized",
            oversized.to_vec(),
            MilterError::Frame(FrameError::Oversized(MAX_PACKET as u32 + 1)),
        ),
        (
            "unknown code",
            packet(b'Z', b""),
            MilterError::Reply(ReplyError::UnknownCode(b'Z')),
        ),
        malformed("data on accept", b'a', b"x"),
        malformed("2xx replycode", b'y', b"250 ok\0"),
        malformed("bad multiline", b'y', b"550 a\r\n550 b\0"),
        malformed("no NUL", b'q', b"reason"),
        malformed("bad header name", b'h', b"X:Y\0v\0"),
        ("negotiate again", negotiate, MilterError::Unexpected(b'O')),
        (
            "skip not offered",
            packet(b's', b""),
            MilterError::Unexpected(b's'),
        ),
        (
            "reply after the answer",
            [packet(b'c', b""), packet(b'c', b"")].concat(),
            MilterError::Unexpected(b'c'),
        ),
    ];
    for (name, input, want) in cases {
        let (mut client, now) = ready(action::OFFERED, 0);
        let got = ask(&mut client, Stage::Rcpt("<a@b>", &[]), &input, now);
        assert_eq!(got, Err(want), "{name}");
        assert!(!want.to_string().is_empty());
        assert!(!client.is_ready(), "{name}: broken");
        assert!(client.handle_input(&packet(b'c', b""), now).is_err());
    }
}

#[test]
fn negotiation_refuses_a_wrong_version_or_reply() {
    for (reply, want) in [
        (negotiate_reply(7, 0, 0), MilterError::Version(7)),
        (negotiate_reply(1, 0, 0), MilterError::Version(1)),
        (packet(b'c', b""), MilterError::Unexpected(b'c')),
        (
            packet(b'O', b"\0\0\0\x06"),
            MilterError::Reply(ReplyError::Malformed(b'O')),
        ),
    ] {
        let now = Instant::now();
        let mut client = Client::new(TIMEOUT, now);
        assert_eq!(client.handle_input(&reply, now), Err(want));
    }
}

#[test]
fn unsolicited_input_and_eof() {
    let (mut client, now) = ready(0, 0);
    assert_eq!(
        client.handle_input(&packet(b'c', b""), now),
        Err(MilterError::Unexpected(b'c'))
    );
    let (mut idle, _) = ready(0, 0);
    assert_eq!(idle.handle_eof(), Ok(()));
    let (mut waiting, now) = ready(0, 0);
    waiting.stage(Stage::EndOfMessage, &[], now);
    assert_eq!(waiting.handle_eof(), Err(MilterError::Closed));
}

#[test]
fn header_edits_are_bounded() {
    let (mut client, now) = ready(action::OFFERED, 0);
    client.stage(Stage::EndOfMessage, &[], now);
    let one = packet(b'h', b"X-A\0v\0");
    let mut result = Ok(None);
    for _ in 0..=MAX_EDITS {
        result = client.handle_input(&one, now);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(MilterError::TooManyEdits));
}

#[test]
fn abort_and_quit_frame_their_commands() {
    let (mut client, _) = ready(0, 0);
    client.advance_output(usize::MAX);
    client.abort();
    client.quit(true);
    client.quit(false);
    assert_eq!(client.poll_output(), b"\0\0\0\x01A\0\0\0\x01K\0\0\0\x01Q");
}
