//! RFC 5321 path syntax: `<>`, `<Postmaster>`, source routes (accepted and
//! dropped), dot-atom and quoted local parts, domains and address literals,
//! UTF-8 in local part and domain (RFC 6531), and the 64/255/256 octet
//! limits of RFC 5321 §4.5.3.1.
//!
//! Everything here borrows from the input and allocates nothing. It checks
//! syntax only: whether an address is ours is the table's business, and
//! whether UTF-8 is allowed in this transaction (SMTPUTF8) is the session's.

use std::net::Ipv6Addr;

/// Longest local part, in octets (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// Longest domain, in octets (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Longest path including `<` and `>`, in octets (RFC 5321 §4.5.3.1.3).
pub const MAX_PATH: usize = 256;

/// Longest DNS label (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;

/// A parsed reverse or forward path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path<'a> {
    /// `<>`
    Null,
    /// `<Postmaster>` without a domain (RFC 5321 §4.5.1).
    Postmaster,
    /// `local@domain`, source route dropped; `address` is the whole
    /// `local@domain` as given.
    Mailbox {
        address: &'a [u8],
        local: &'a [u8],
        domain: &'a [u8],
    },
}

/// Why a path was refused; each maps to a 501 5.1.x reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    Syntax,
    LocalPartTooLong,
    DomainTooLong,
    PathTooLong,
}

use AddressError::Syntax;

/// Parses a path starting at `<`; returns it and the octets consumed
/// (through `>`).
pub fn parse_path(input: &[u8]) -> Result<(Path<'_>, usize), AddressError> {
    if input.first() != Some(&b'<') {
        return Err(Syntax);
    }
    if input.get(1) == Some(&b'>') {
        return Ok((Path::Null, 2));
    }
    let start = match input.get(1) {
        Some(b'@') => skip_source_route(input, 1)?,
        _ => 1,
    };
    let at = scan_local_part(input, start)?;
    match input.get(at) {
        Some(b'>') if start == 1 && input[1..at].eq_ignore_ascii_case(b"postmaster") => {
            Ok((Path::Postmaster, at + 1))
        }
        Some(b'@') => mailbox(input, start, at),
        _ => Err(Syntax),
    }
}

/// The `local@domain>` part of a path: `start` is the local part's first
/// octet, `at` the index of its `@`.
fn mailbox(input: &[u8], start: usize, at: usize) -> Result<(Path<'_>, usize), AddressError> {
    let end = scan_domain(input, at + 1)?;
    if input.get(end) != Some(&b'>') {
        return Err(Syntax);
    }
    let (local, domain) = (&input[start..at], &input[at + 1..end]);
    let address = &input[start..end];
    if !address.is_ascii() && std::str::from_utf8(address).is_err() {
        return Err(Syntax);
    }
    check_lengths(local, domain, end + 1)?;
    Ok((
        Path::Mailbox {
            address,
            local,
            domain,
        },
        end + 1,
    ))
}

fn check_lengths(local: &[u8], domain: &[u8], path: usize) -> Result<(), AddressError> {
    if local.len() > MAX_LOCAL_PART {
        Err(AddressError::LocalPartTooLong)
    } else if domain.len() > MAX_DOMAIN {
        Err(AddressError::DomainTooLong)
    } else if path > MAX_PATH {
        Err(AddressError::PathTooLong)
    } else {
        Ok(())
    }
}

/// Skips `@dom,@dom:` starting at the first `@`; returns the index after `:`.
fn skip_source_route(input: &[u8], mut pos: usize) -> Result<usize, AddressError> {
    loop {
        if input.get(pos) != Some(&b'@') {
            return Err(Syntax);
        }
        pos = scan_domain(input, pos + 1)?;
        match input.get(pos) {
            Some(b',') => pos += 1,
            Some(b':') => return Ok(pos + 1),
            _ => return Err(Syntax),
        }
    }
}

/// Scans a dot-string or quoted-string local part; returns its end.
fn scan_local_part(input: &[u8], pos: usize) -> Result<usize, AddressError> {
    match input.get(pos) {
        Some(b'"') => scan_quoted(input, pos),
        _ => scan_dot_string(input, pos),
    }
}

/// Octet classes, one bit each, looked up in [`CLASS`].
const ATEXT: u8 = 1;
const LDH: u8 = 2;

/// RFC 5321 `atext` symbols; letters, digits and (RFC 6531) UTF-8 octets
/// are `atext` too.
const ATEXT_SYMBOLS: &[u8] = b"!#$%&'*+-/=?^_`{|}~";

/// The class bits of every octet, built at compile time, so a scan costs
/// one load and one test per octet.
static CLASS: [u8; 256] = {
    let mut class = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        // `Let-dig`, extended with UTF-8 octets (RFC 6531 U-labels).
        if (b as u8).is_ascii_alphanumeric() || b >= 0x80 {
            class[b] = ATEXT | LDH;
        }
        b += 1;
    }
    let mut i = 0;
    while i < ATEXT_SYMBOLS.len() {
        class[ATEXT_SYMBOLS[i] as usize] |= ATEXT;
        i += 1;
    }
    class[b'-' as usize] |= LDH;
    class
};

/// Length of the run of octets of class `class` that starts `bytes`.
fn run(bytes: &[u8], class: u8) -> usize {
    bytes
        .iter()
        .position(|&b| CLASS[usize::from(b)] & class == 0)
        .unwrap_or(bytes.len())
}

/// `Atom *("." Atom)`; returns the index after the last atom.
fn scan_dot_string(input: &[u8], pos: usize) -> Result<usize, AddressError> {
    scan_dotted(input, pos, |rest| {
        let atom = run(rest, ATEXT);
        (atom > 0).then_some(atom)
    })
}

/// `part *("." part)`, where `part` gives the length of the valid part that
/// starts its argument; returns the index after the last part.
fn scan_dotted(
    input: &[u8],
    mut pos: usize,
    part: impl Fn(&[u8]) -> Option<usize>,
) -> Result<usize, AddressError> {
    loop {
        pos += part(&input[pos.min(input.len())..]).ok_or(Syntax)?;
        if input.get(pos) != Some(&b'.') {
            return Ok(pos);
        }
        pos += 1;
    }
}

/// `DQUOTE *QcontentSMTP DQUOTE` starting at the opening quote; returns the
/// index after the closing quote.
fn scan_quoted(input: &[u8], mut pos: usize) -> Result<usize, AddressError> {
    pos += 1;
    loop {
        match *input.get(pos).ok_or(Syntax)? {
            b'"' => return Ok(pos + 1),
            b'\\' => match input.get(pos + 1) {
                Some(32..=126) => pos += 2,
                _ => return Err(Syntax),
            },
            32..=126 | 0x80..=0xff => pos += 1,
            _ => return Err(Syntax),
        }
    }
}

/// A domain or an address literal starting at `pos`; returns its end.
fn scan_domain(input: &[u8], pos: usize) -> Result<usize, AddressError> {
    match input.get(pos) {
        Some(b'[') => scan_address_literal(input, pos),
        _ => scan_labels(input, pos),
    }
}

/// `sub-domain *("." sub-domain)`; returns the index after the last label.
/// Labels are letters, digits, hyphens and (RFC 6531 U-labels) UTF-8 octets.
fn scan_labels(input: &[u8], pos: usize) -> Result<usize, AddressError> {
    scan_dotted(input, pos, |rest| {
        let label = run(rest, LDH);
        let hyphen_edge = label > 0 && (rest[0] == b'-' || rest[label - 1] == b'-');
        (label > 0 && label <= MAX_LABEL && !hyphen_edge).then_some(label)
    })
}

/// `[IPv4]`, `[IPv6:…]` or `[tag:…]` starting at `[`; returns the index
/// after `]`.
fn scan_address_literal(input: &[u8], pos: usize) -> Result<usize, AddressError> {
    let body = &input[pos + 1..];
    // dcontent excludes `[`, `\` and `]`, so the literal ends at the first `]`.
    let len = body
        .iter()
        .take_while(|&&b| matches!(b, 33..=90 | 94..=126))
        .count();
    if body.get(len) != Some(&b']') || !is_literal_content(&body[..len]) {
        return Err(Syntax);
    }
    Ok(pos + len + 2)
}

fn is_literal_content(content: &[u8]) -> bool {
    let Some(colon) = content.iter().position(|&b| b == b':') else {
        return is_ipv4(content);
    };
    let (tag, value) = (&content[..colon], &content[colon + 1..]);
    if tag.eq_ignore_ascii_case(b"IPv6") {
        return std::str::from_utf8(value).is_ok_and(|s| s.parse::<Ipv6Addr>().is_ok());
    }
    // General-address-literal: a standardized tag (Ldh-str) and dcontent.
    let ldh = !tag.is_empty()
        && tag.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-')
        && tag[tag.len() - 1] != b'-';
    ldh && !value.is_empty()
}

/// Four dot-separated decimal numbers of 1–3 digits, each at most 255.
fn is_ipv4(content: &[u8]) -> bool {
    let mut parts = 0;
    for part in content.split(|&b| b == b'.') {
        // Counted before the value is computed, so that it fits.
        if !(1..=3).contains(&part.len()) || !part.iter().all(u8::is_ascii_digit) {
            return false;
        }
        let value = part.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
        if value > 255 {
            return false;
        }
        parts += 1;
    }
    parts == 4
}

/// True if `bytes` is exactly a dot-string local part (`a.b+c`).
pub(crate) fn is_dot_string(bytes: &[u8]) -> bool {
    scan_dot_string(bytes, 0) == Ok(bytes.len())
}

/// True if `bytes` is exactly a domain or address literal.
pub(crate) fn is_domain(bytes: &[u8]) -> bool {
    scan_domain(bytes, 0) == Ok(bytes.len())
}

/// The content of a quoted local part (`"…"`) with quoted-pairs resolved,
/// written into `buf`; `None` if `quoted` is not exactly one quoted string
/// or its content does not fit.
pub(crate) fn unquote<'b>(quoted: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
    if quoted.first() != Some(&b'"') || scan_quoted(quoted, 0) != Ok(quoted.len()) {
        return None;
    }
    let mut len = 0;
    let mut escaped = false;
    for &b in &quoted[1..quoted.len() - 1] {
        if !escaped && b == b'\\' {
            escaped = true;
            continue;
        }
        escaped = false;
        *buf.get_mut(len)? = b;
        len += 1;
    }
    Some(&buf[..len])
}

#[cfg(test)]
mod tests;
