//! Property tests of whole sessions: random DATA bodies against a naive
//! reference, and random conversations of right and wrong commands, each
//! replayed at random read boundaries. The fixed transcripts, one per row
//! of DESIGN.md's reply table, are in `transcripts.rs`.

mod common;

use common::{session, Outcome, HOST, MAX};

/// Reference for a DATA body: with a virtual CRLF before it, the first
/// `\r\n.\r\n` ends it; returns the body and whether it holds a bare CR/LF.
fn reference_body(text: &[u8]) -> Option<(&[u8], bool)> {
    let virtual_start = [b"\r\n", text].concat();
    let end = (0..virtual_start.len()).find(|&i| virtual_start[i..].starts_with(b"\r\n.\r\n"))?;
    let body = &text[..end];
    let bare = (0..body.len()).any(|i| match body[i] {
        b'\r' => body.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || body[i - 1] != b'\r',
        _ => false,
    });
    Some((body, bare))
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

    /// Random bodies dense in dots, CRs and LFs, through the whole session
    /// at random read boundaries: the message ends where the reference says,
    /// with the same octets and the same bare CR/LF verdict.
    #[test]
    fn session_bodies_match_the_reference(
        text in proptest::collection::vec(proptest::sample::select(&b"a.\r\n\x00"[..]), 0..64),
        cuts in proptest::collection::vec(0usize..160, 0..6),
    ) {
        let head = session(b"MAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n");
        let input = [&head[..], &text, b"\r\n.\r\n"].concat();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
        cuts.sort_unstable();
        let whole = common::run_cut(&input, &[], MAX, true);
        let split = common::run_cut(&input, &cuts, MAX, true);
        common::assert_same(&whole, &split, "random split");
        let with_end = [&text[..], b"\r\n.\r\n"].concat();
        let (body, bare) = reference_body(&with_end).expect("an end is always there");
        let message = &whole.messages[0];
        if bare {
            proptest::prop_assert_eq!(&message.outcome, &Outcome::Discarded);
        } else {
            proptest::prop_assert_eq!(&message.outcome, &Outcome::Ready);
            proptest::prop_assert_eq!(&message.body[..], body);
        }
    }

    /// Random conversations made of `PIECES`, at random read boundaries:
    /// no panic, the same replies and messages however the input is cut,
    /// every reply line well formed, the driver's buffer bounded (`run_cut`
    /// checks it), and no message ready for the spool holds a bare CR or LF.
    #[test]
    fn random_conversations_get_well_formed_replies(
        picks in proptest::collection::vec(0..PIECES.len(), 0..40),
        cuts in proptest::collection::vec(0usize..4000, 0..8),
    ) {
        let input: Vec<u8> = picks.iter().flat_map(|&i| PIECES[i].iter().copied()).collect();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
        cuts.sort_unstable();
        let whole = common::run_cut(&input, &[], MAX, true);
        common::assert_same(&whole, &common::run_cut(&input, &cuts, MAX, true), "random cuts");
        for line in whole.lines() {
            proptest::prop_assert!(well_formed(&line), "{:?}", line);
        }
        for message in whole.messages.iter().filter(|m| m.outcome == Outcome::Ready) {
            proptest::prop_assert!(only_crlf(&message.body), "{:?}", message.body);
        }
    }
}

/// Pieces of client input for random conversations: commands right and
/// wrong, body text, stray line ends, a long line, odd octets.
const PIECES: &[&[u8]] = &[
    b"EHLO c.example\r\n",
    b"HELO c\r\n",
    b"MAIL FROM:<a@b.example>\r\n",
    b"MAIL FROM:<> SIZE=100 BODY=8BITMIME\r\n",
    b"MAIL FROM:<a@b.example> FOO=1\r\n",
    b"RCPT TO:<alice@example.com>\r\n",
    b"rcpt to:<Bob+tag@EXAMPLE.com>\r\n",
    b"RCPT TO:<nobody@example.com>\r\n",
    b"RCPT TO:<x@elsewhere.test>\r\n",
    b"RCPT TO:<Postmaster>\r\n",
    b"RCPT TO:<bad address>\r\n",
    b"DATA\r\n",
    b"BDAT 5\r\n",
    b"BDAT 3 LAST\r\n",
    b"BDAT 0 LAST\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY x\r\n",
    b"EXPN x\r\n",
    b"HELP\r\n",
    b"hello",
    b".\r\n",
    b"\r\n.\r\n",
    b"\r",
    b"\n",
    b".",
    b"\x00\xff",
    &[b'x'; 600],
];

/// True if every CR in `body` starts a CRLF and every LF ends one.
fn only_crlf(body: &[u8]) -> bool {
    body.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => body.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && body[i - 1] == b'\r',
        _ => true,
    })
}

/// True if `line` is a well-formed reply line: a code, and an enhanced
/// status code of the same class, unless it is the greeting, the 354 or
/// one of EHLO/HELO's lines (which carry none).
fn well_formed(line: &str) -> bool {
    let Some((code, text)) = line.split_at_checked(4) else {
        return false;
    };
    let (class, separator) = (&code[..1], &code[3..]);
    let valid_code = code[..3].bytes().all(|b| b.is_ascii_digit())
        && "2345".contains(class)
        && (separator == " " || separator == "-");
    let hello_line = code.starts_with("250")
        && (text == HOST
            || [
                "PIPELINING",
                "SIZE ",
                "8BITMIME",
                "ENHANCEDSTATUSCODES",
                "SMTPUTF8",
                "CHUNKING",
            ]
            .iter()
            .any(|keyword| text.starts_with(keyword)));
    let plain = code == "220 " || code == "354 " || hello_line;
    let enhanced = text.split(' ').next().is_some_and(|status| {
        let parts: Vec<&str> = status.split('.').collect();
        parts.len() == 3
            && parts[0] == class
            && parts[1..]
                .iter()
                .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    });
    valid_code && (plain || enhanced)
}
