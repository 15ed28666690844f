//! Table tests for RFC 5321 path syntax.

use super::*;

fn mailbox(input: &str) -> (String, String, usize) {
    match parse_path(input.as_bytes()) {
        Ok((
            Path::Mailbox {
                local,
                domain,
                address,
            },
            used,
        )) => {
            assert_eq!(address.len(), local.len() + 1 + domain.len(), "{input}");
            let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
            (text(local), text(domain), used)
        }
        other => panic!("{input}: {other:?}"),
    }
}

#[test]
fn accepts_mailboxes() {
    let cases = [
        ("<user@example.com>", "user", "example.com"),
        ("<a.b+tag@sub.example.org>", "a.b+tag", "sub.example.org"),
        ("<!#$%&'*+-/=?^_`{|}~@x>", "!#$%&'*+-/=?^_`{|}~", "x"),
        (
            "<\"john smith\"@example.com>",
            "\"john smith\"",
            "example.com",
        ),
        (
            "<\"a\\\"b\\\\c\"@example.com>",
            "\"a\\\"b\\\\c\"",
            "example.com",
        ),
        ("<\"\"@example.com>", "\"\"", "example.com"),
        (
            "<@a.example,@b.example:user@c.example>",
            "user",
            "c.example",
        ),
        ("<@a.example:user@c.example>", "user", "c.example"),
        ("<user@[192.0.2.1]>", "user", "[192.0.2.1]"),
        ("<user@[IPv6:2001:db8::1]>", "user", "[IPv6:2001:db8::1]"),
        (
            "<user@[ipv6:::ffff:192.0.2.1]>",
            "user",
            "[ipv6:::ffff:192.0.2.1]",
        ),
        ("<user@[x-tag:anything]>", "user", "[x-tag:anything]"),
        ("<jörg@bücher.example>", "jörg", "bücher.example"),
        ("<\"jörg s\"@example.com>", "\"jörg s\"", "example.com"),
        (
            "<a-b@xn--bcher-kva.example>",
            "a-b",
            "xn--bcher-kva.example",
        ),
        ("<postmaster@example.com>", "postmaster", "example.com"),
    ];
    for (input, local, domain) in cases {
        assert_eq!(
            mailbox(input),
            (local.into(), domain.into(), input.len()),
            "{input}"
        );
    }
}

#[test]
fn consumed_stops_after_the_closing_bracket() {
    let (_, _, used) = mailbox("<a@b.example> SIZE=100");
    assert_eq!(used, 13);
    assert_eq!(parse_path(b"<> BODY=8BITMIME"), Ok((Path::Null, 2)));
}

#[test]
fn null_and_postmaster() {
    assert_eq!(parse_path(b"<>"), Ok((Path::Null, 2)));
    for input in ["<Postmaster>", "<postmaster>", "<POSTMASTER>"] {
        assert_eq!(
            parse_path(input.as_bytes()),
            Ok((Path::Postmaster, input.len()))
        );
    }
    assert_eq!(
        parse_path(b"<@a.example:Postmaster>"),
        Err(AddressError::Syntax)
    );
    assert_eq!(parse_path(b"<user>"), Err(AddressError::Syntax));
}

#[test]
fn rejects_garbage() {
    let cases: &[&[u8]] = &[
        b"",
        b"<",
        b"user@example.com",
        b"<user@example.com",
        b"< user@example.com>",
        b"<user@example.com >",
        b"<user @example.com>",
        b"<@example.com>",
        b"<user@>",
        b"<user@@example.com>",
        b"<.user@example.com>",
        b"<user.@example.com>",
        b"<us..er@example.com>",
        b"<user@example..com>",
        b"<user@.example.com>",
        b"<user@example.com.>",
        b"<user@-example.com>",
        b"<user@example-.com>",
        b"<user@exa_mple.com>",
        b"<a@b@example.com>",
        b"<\"unterminated@example.com>",
        b"<\"bad\\\x01\"@example.com>",
        b"<\"tab\there\"@example.com>",
        b"<user@[192.0.2.256]>",
        // Too many digits to be an octet, and to fit a u32 (fuzz finding:
        // the value was computed before the digits were counted).
        b"<user@[192.0.99999999999999999999.1]>",
        b"<user@[0001.0.2.1]>",
        b"<user@[192.0.2]>",
        b"<user@[1.2.3.4.5]>",
        b"<user@[IPv6:2001:db8::g]>",
        b"<user@[:x]>",
        b"<user@[tag:]>",
        b"<user@[192.0.2.1>",
        b"<@a.example user@c.example>",
        b"<@a.example,user@c.example>",
        b"<@:user@c.example>",
        b"<user@example.com\x00>",
        b"<\xff\xfe@example.com>",
        b"<user@\xc3>",
        b"<<>>",
    ];
    for &input in cases {
        assert_eq!(
            parse_path(input),
            Err(AddressError::Syntax),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn length_limits() {
    let local = |n| "l".repeat(n);
    // Labels of 49 octets; the lengths used never end on a dot.
    let domain = |n: usize| -> String {
        (0..n)
            .map(|i| if i % 50 == 49 { '.' } else { 'd' })
            .collect()
    };
    let ok = format!("<{}@example.com>", local(64));
    assert!(parse_path(ok.as_bytes()).is_ok());
    let long_local = format!("<{}@example.com>", local(65));
    assert_eq!(
        parse_path(long_local.as_bytes()),
        Err(AddressError::LocalPartTooLong)
    );
    let d255 = domain(255);
    assert_eq!(d255.len(), 255);
    assert!(is_domain(d255.as_bytes()));
    let long_domain = format!("<a@{}>", domain(256));
    assert_eq!(
        parse_path(long_domain.as_bytes()),
        Err(AddressError::DomainTooLong)
    );
    let path256 = format!("<{}@{}>", local(64), domain(189));
    assert_eq!(path256.len(), 256);
    assert!(parse_path(path256.as_bytes()).is_ok());
    let path257 = format!("<{}@{}>", local(64), domain(190));
    assert_eq!(
        parse_path(path257.as_bytes()),
        Err(AddressError::PathTooLong)
    );
    let long_label = format!("<a@{}.example>", "x".repeat(64));
    assert_eq!(parse_path(long_label.as_bytes()), Err(AddressError::Syntax));
}

#[test]
fn huge_input_is_refused_without_panic() {
    let mut input = b"<".to_vec();
    input.extend(std::iter::repeat(b'a').take(100_000));
    input.extend(b"@example.com>");
    assert_eq!(parse_path(&input), Err(AddressError::LocalPartTooLong));
}

#[test]
fn every_prefix_and_every_byte_is_safe() {
    let sample = b"<@a.example,@[192.0.2.1]:\"q\\\"x\"@[IPv6:2001:db8::1]>";
    for end in 0..sample.len() {
        let _ = parse_path(&sample[..end]);
    }
    for b in 0..=255u8 {
        let mut input = sample.to_vec();
        for i in 0..input.len() {
            let saved = std::mem::replace(&mut input[i], b);
            let _ = parse_path(&input);
            input[i] = saved;
        }
    }
}

#[test]
fn helpers() {
    assert!(is_dot_string(b"a.b+c"));
    assert!(!is_dot_string(b"a..b"));
    assert!(!is_dot_string(b""));
    assert!(is_domain(b"Example.COM"));
    assert!(is_domain(b"[192.0.2.1]"));
    assert!(!is_domain(b"example.com."));
    let mut buf = [0u8; MAX_LOCAL_PART];
    assert_eq!(unquote(b"\"jo\\hn\"", &mut buf), Some(&b"john"[..]));
    assert_eq!(unquote(b"\"a b\"", &mut buf), Some(&b"a b"[..]));
    assert_eq!(unquote(b"\"\"", &mut buf), Some(&b""[..]));
    assert_eq!(unquote(b"john", &mut buf), None);
    assert_eq!(unquote(b"\"a\"b\"", &mut buf), None);
    assert_eq!(unquote(b"", &mut buf), None);
    let long = format!("\"{}\"", "x".repeat(65));
    assert_eq!(unquote(long.as_bytes(), &mut buf), None);
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let input = [b"<".as_slice(), &tail].concat();
        if let Ok((_, used)) = parse_path(&input) {
            proptest::prop_assert!(used <= input.len() && input[used - 1] == b'>');
        }
    }

    #[test]
    fn generated_mailboxes_parse_whole(
        local in "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,10}(\\.[a-zA-Z0-9_-]{1,10}){0,3}",
        domain in "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-zA-Z0-9]([a-z0-9-]{0,10}[a-z0-9])?){0,3}",
        rest in "( SIZE=[0-9]{1,5})?",
    ) {
        let input = format!("<{local}@{domain}>{rest}");
        let address = format!("{local}@{domain}");
        let want = Path::Mailbox { address: address.as_bytes(), local: local.as_bytes(), domain: domain.as_bytes() };
        let (got, used) = parse_path(input.as_bytes()).unwrap();
        proptest::prop_assert_eq!(got, want);
        proptest::prop_assert_eq!(used, input.len() - rest.len());
    }
}

/// The octet classes, as the RFCs word them.
#[test]
fn class_table_matches_the_grammar() {
    for b in 0..=255u8 {
        let let_dig = b.is_ascii_alphanumeric() || b >= 0x80;
        let atext = let_dig || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
        assert_eq!(CLASS[usize::from(b)] & ATEXT != 0, atext, "{b:#x}");
        assert_eq!(
            CLASS[usize::from(b)] & LDH != 0,
            let_dig || b == b'-',
            "{b:#x}"
        );
    }
}

/// A naive reference for `parse_path`'s dot-string and domain scanning:
/// split at the dots and check each part octet by octet.
mod reference {
    use super::super::{Syntax, MAX_LABEL};
    use super::AddressError;

    fn is_atext(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b >= 0x80 || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
    }

    fn is_ldh(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b >= 0x80 || b == b'-'
    }

    /// The end of the longest run of `part`-octets and dots at `pos`, then
    /// checked part by part.
    fn dotted(
        input: &[u8],
        pos: usize,
        octet: fn(u8) -> bool,
        part_ok: fn(&[u8]) -> bool,
    ) -> Result<usize, AddressError> {
        let len = input[pos.min(input.len())..]
            .iter()
            .take_while(|&&b| octet(b) || b == b'.')
            .count();
        let text = &input[pos.min(input.len())..][..len];
        // A trailing dot ends the text but not the syntax: `a.@` is an error.
        if text.split(|&b| b == b'.').all(part_ok) {
            Ok(pos + len)
        } else {
            Err(Syntax)
        }
    }

    pub fn dot_string(input: &[u8], pos: usize) -> Result<usize, AddressError> {
        dotted(input, pos, is_atext, |atom| !atom.is_empty())
    }

    pub fn labels(input: &[u8], pos: usize) -> Result<usize, AddressError> {
        dotted(input, pos, is_ldh, |label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL
                && label[0] != b'-'
                && label[label.len() - 1] != b'-'
        })
    }
}

proptest::proptest! {
    /// The class-table scanners agree with the naive reference on inputs
    /// dense in dots, hyphens, symbols, UTF-8 and octets outside the classes.
    #[test]
    fn scanners_match_reference(
        input in proptest::collection::vec(proptest::sample::select(
            b"aZ09.-+_!~@<>\"\\[]: ,\x00\x7f\x80\xc3\xff".to_vec()), 0..80),
        pos in 0usize..4,
    ) {
        let pos = pos.min(input.len());
        proptest::prop_assert_eq!(scan_dot_string(&input, pos), reference::dot_string(&input, pos));
        proptest::prop_assert_eq!(scan_labels(&input, pos), reference::labels(&input, pos));
    }

    /// Long labels: the 63-octet limit.
    #[test]
    fn label_lengths_match_reference(a in 1usize..70, b in 1usize..70, hyphen in 0usize..140) {
        let mut input = [vec![b'x'; a], vec![b'.'], vec![b'y'; b], b">".to_vec()].concat();
        if hyphen < a + b + 1 {
            input[hyphen] = b'-';
        }
        proptest::prop_assert_eq!(scan_labels(&input, 0), reference::labels(&input, 0));
    }
}
