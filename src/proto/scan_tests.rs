//! Scanner tests: tables for the line scanner, and the DATA scanner and
//! CR/LF check against naive reference implementations under proptest.

use super::*;
use proptest::prelude::*;

#[test]
fn command_lines() {
    let long = vec![b'a'; MAX_LINE];
    let mut fits = vec![b'a'; MAX_LINE - 2];
    fits.extend_from_slice(b"\r\n");
    let cases: &[(&[u8], Line)] = &[
        (b"", Line::Partial),
        (b"NOOP", Line::Partial),
        (b"NOOP\r", Line::Partial),
        (b"NOOP\r\nRSET\r\n", Line::Complete(6)),
        (b"NOOP\nRSET", Line::Complete(5)),
        (b"\n", Line::Complete(1)),
        (&long, Line::TooLong),
        (&fits, Line::Complete(MAX_LINE)),
    ];
    for (input, want) in cases {
        assert_eq!(
            command_line(input),
            *want,
            "{:?}",
            input.escape_ascii().to_string()
        );
    }
}

#[test]
fn trimmed_lines() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"NOOP\r\n", b"NOOP"),
        (b"NOOP\n", b"NOOP"),
        (b"NOOP  \r\n", b"NOOP"),
        (b"\r\n", b""),
        (b"MAIL FROM:<a@b>\t\n", b"MAIL FROM:<a@b>"),
    ];
    for (input, want) in cases {
        assert_eq!(trim_line(input), *want);
    }
}

#[test]
fn data_steps() {
    let cases: &[(&[u8], DataStep)] = &[
        (b"", DataStep::NeedMore),
        (b".", DataStep::NeedMore),
        (b".\r", DataStep::NeedMore),
        (
            b".\r\n",
            DataStep::End {
                body: 0,
                consumed: 3,
            },
        ),
        (
            b".\r\nMAIL",
            DataStep::End {
                body: 0,
                consumed: 3,
            },
        ),
        (b"..\r\n", DataStep::Body(2)),
        (
            b"a\r\n.\r\n",
            DataStep::End {
                body: 3,
                consumed: 6,
            },
        ),
        (b"a\r\n.\r", DataStep::Body(1)),
        (b"a\r\n.", DataStep::Body(1)),
        (b"a\r\n", DataStep::Body(1)),
        (b"a\r", DataStep::Body(1)),
        (b"a\n.\n", DataStep::Body(4)),
        (b"a\r\n.\r\r\n", DataStep::Body(5)),
    ];
    for (input, want) in cases {
        assert_eq!(
            DataScanner::new().step(input),
            *want,
            "{:?}",
            input.escape_ascii().to_string()
        );
    }
}

#[test]
fn crlf_checks() {
    let cases: &[(&[&[u8]], bool)] = &[
        (&[b"a\r\nb\r\n"], false),
        (&[b"a\r", b"\nb"], false),
        (&[b"a\r", b"", b"\nb"], false),
        (&[b"a\r"], true),
        (&[b"a\nb"], true),
        (&[b"a\rb"], true),
        (&[b"a\r", b"\r\n"], true),
        (&[b"\n"], true),
        (&[b"\r\n\r\n", b"\r\n"], false),
    ];
    for (slices, bare) in cases {
        let mut check = CrLfCheck::default();
        slices.iter().for_each(|s| check.feed(s));
        assert_eq!(check.finish(), *bare, "{slices:?}");
    }
}

/// Naive reference: a bare CR or LF anywhere in `body`.
fn naive_bare(body: &[u8]) -> bool {
    (0..body.len()).any(|i| match body[i] {
        b'\r' => body.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || body[i - 1] != b'\r',
        _ => false,
    })
}

/// Naive reference for DATA: with a virtual CRLF before the body, the first
/// `\r\n.\r\n`; returns (body length, consumed).
fn naive_end(input: &[u8]) -> Option<(usize, usize)> {
    let mut v = b"\r\n".to_vec();
    v.extend_from_slice(input);
    (0..v.len())
        .find(|&i| v[i..].starts_with(b"\r\n.\r\n"))
        .map(|i| (i, i + 3))
}

/// What the incremental scanner reports when fed `input` in the given
/// pieces: body octets handed out, the end (consumed), the CR/LF verdict and
/// the largest tail it ever held back.
struct Scanned {
    body: Vec<u8>,
    end: Option<usize>,
    bare: bool,
    max_tail: usize,
}

fn scan_split(input: &[u8], cuts: &[usize]) -> Scanned {
    let mut scanner = DataScanner::new();
    let mut check = CrLfCheck::default();
    let mut got = Scanned {
        body: Vec::new(),
        end: None,
        bare: false,
        max_tail: 0,
    };
    let mut tail_start = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    bounds.sort_unstable();
    bounds.push(input.len());
    for end in bounds {
        loop {
            let buf = &input[tail_start..end];
            match scanner.step(buf) {
                DataStep::Body(n) => {
                    got.body.extend_from_slice(&buf[..n]);
                    check.feed(&buf[..n]);
                    tail_start += n;
                }
                DataStep::End { body, consumed } => {
                    got.body.extend_from_slice(&buf[..body]);
                    check.feed(&buf[..body]);
                    got.end = Some(tail_start + consumed);
                    got.bare = check.finish();
                    return got;
                }
                DataStep::NeedMore => break,
            }
        }
        got.max_tail = got.max_tail.max(end - tail_start);
    }
    got.bare = check.finish();
    got
}

/// Body text built from pieces that stress the terminator and CR/LF rules.
fn body_text() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"\n.\n".to_vec()),
        Just(b"\n.\r\n".to_vec()),
        Just(b"\r\n.\n".to_vec()),
        Just(b"\r.\r".to_vec()),
        Just(b"\r.\r\n".to_vec()),
        Just(b"\n.\r".to_vec()),
        Just(b"\r.\n".to_vec()),
        Just(b"\r\n.\r\r\n".to_vec()),
        Just(b"\r\r\n.\r\r\n".to_vec()),
        Just(b"\r\n\x00.\r\n".to_vec()),
        Just(b"\r\n.\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b".".to_vec()),
        Just(b"..".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        "[a-z .]{0,12}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..6),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn data_scanner_matches_reference(
        input in body_text(),
        cuts in proptest::collection::vec(0usize..200, 0..8),
    ) {
        let got = scan_split(&input, &cuts);
        prop_assert!(got.max_tail <= 4);
        match naive_end(&input) {
            Some((body, consumed)) => {
                prop_assert_eq!(got.end, Some(consumed));
                prop_assert_eq!(&got.body[..], &input[..body]);
                prop_assert_eq!(got.bare, naive_bare(&input[..body]));
            }
            None => {
                prop_assert_eq!(got.end, None);
                prop_assert!(input.starts_with(&got.body));
                prop_assert!(input.len() - got.body.len() <= 4);
            }
        }
    }

    #[test]
    fn crlf_check_matches_reference(
        input in body_text(),
        cuts in proptest::collection::vec(0usize..200, 0..8),
    ) {
        let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
        bounds.sort_unstable();
        bounds.push(input.len());
        let mut check = CrLfCheck::default();
        let mut start = 0;
        for end in bounds {
            check.feed(&input[start..end]);
            start = end;
        }
        prop_assert_eq!(check.finish(), naive_bare(&input));
    }
}
