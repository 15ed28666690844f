//! Decoding one packet from a milter into a [`Reply`]: the reply codes of
//! protocol version 6 and their data, checked for shape (NUL-terminated
//! strings, a well-formed SMTP reply in REPLYCODE). Knows nothing of the
//! stage a reply arrives in or of what was negotiated: [`super::Client`]
//! judges that.

use std::fmt;

/// One reply from a milter, borrowing its data from the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `O`: the answer to option negotiation.
    Negotiate {
        version: u32,
        actions: u32,
        protocol: u32,
    },
    /// `a`: accept the message; no more stages of it for this milter.
    Accept,
    /// `c`: go on.
    Continue,
    /// `r`: reject.
    Reject,
    /// `t`: fail temporarily.
    Tempfail,
    /// `y`: reject or fail temporarily with this SMTP reply (`4xx`/`5xx`,
    /// one line or several joined by CRLF).
    ReplyCode(&'a str),
    /// `d`: accept and throw the message away.
    Discard,
    /// `q`: put the message in quarantine for this reason.
    Quarantine(&'a str),
    /// `h`: add a header at the end of the header section.
    AddHeader { name: &'a str, value: &'a str },
    /// `i`: insert a header at this position (0 is the top).
    InsertHeader {
        index: u32,
        name: &'a str,
        value: &'a str,
    },
    /// `m`: change the `index`-th (from 1) header of this name; an empty
    /// value deletes it.
    ChangeHeader {
        index: u32,
        name: &'a str,
        value: &'a str,
    },
    /// `p`: still working; the reply timeout starts again.
    Progress,
    /// `s`: skip the rest of the body.
    Skip,
    /// `f`: the connection to the client should fail.
    ConnFail,
    /// A modification this client never offers (`+`, `-`, `2`, `e`, `b`,
    /// `l`): its code.
    Unoffered(u8),
}

/// Why a packet is not a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// A code that is no reply of version 6.
    UnknownCode(u8),
    /// The data does not have the shape the code needs.
    Malformed(u8),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ReplyError::UnknownCode(code) => write!(f, "unknown reply code 0x{code:02x}"),
            ReplyError::Malformed(code) => {
                write!(f, "malformed '{}' reply", char::from(code).escape_default())
            }
        }
    }
}

/// Decodes the packet `(code, data)`.
pub fn decode(code: u8, data: &[u8]) -> Result<Reply<'_>, ReplyError> {
    let bad = ReplyError::Malformed(code);
    let reply = match code {
        b'O' => {
            let [v, a, p] = words(data).ok_or(bad)?;
            Reply::Negotiate {
                version: v,
                actions: a,
                protocol: p,
            }
        }
        b'a' => empty(data, Reply::Accept).ok_or(bad)?,
        b'c' => empty(data, Reply::Continue).ok_or(bad)?,
        b'r' => empty(data, Reply::Reject).ok_or(bad)?,
        b't' => empty(data, Reply::Tempfail).ok_or(bad)?,
        b'd' => empty(data, Reply::Discard).ok_or(bad)?,
        b'p' => empty(data, Reply::Progress).ok_or(bad)?,
        b's' => empty(data, Reply::Skip).ok_or(bad)?,
        b'f' => empty(data, Reply::ConnFail).ok_or(bad)?,
        b'y' => Reply::ReplyCode(smtp_reply(one_string(data).ok_or(bad)?).ok_or(bad)?),
        b'q' => Reply::Quarantine(one_string(data).ok_or(bad)?),
        b'h' => {
            let (name, value) = header(data).ok_or(bad)?;
            Reply::AddHeader { name, value }
        }
        b'i' | b'm' => {
            let (index, rest) = data.split_first_chunk::<4>().ok_or(bad)?;
            let index = u32::from_be_bytes(*index);
            let (name, value) = header(rest).ok_or(bad)?;
            if code == b'i' {
                Reply::InsertHeader { index, name, value }
            } else {
                Reply::ChangeHeader { index, name, value }
            }
        }
        b'+' | b'-' | b'2' | b'e' | b'b' | b'l' => Reply::Unoffered(code),
        _ => return Err(ReplyError::UnknownCode(code)),
    };
    Ok(reply)
}

fn empty(data: &[u8], reply: Reply<'static>) -> Option<Reply<'static>> {
    data.is_empty().then_some(reply)
}

/// Three big-endian 32-bit words (anything after them is ignored, as
/// libmilter's MTAs do).
fn words(data: &[u8]) -> Option<[u32; 3]> {
    let word = |i: usize| {
        let bytes = data.get(i * 4..i * 4 + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    };
    Some([word(0)?, word(1)?, word(2)?])
}

/// `data` as exactly one NUL-terminated UTF-8 string.
fn one_string(data: &[u8]) -> Option<&str> {
    let (text, rest) = c_string(data)?;
    rest.is_empty().then_some(text)
}

/// `name\0value\0`: a header name of printable ASCII other than `:`, and a
/// value with no NUL.
fn header(data: &[u8]) -> Option<(&str, &str)> {
    let (name, rest) = c_string(data)?;
    let (value, rest) = c_string(rest)?;
    let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    (name_ok && rest.is_empty()).then_some((name, value))
}

/// The UTF-8 string before the first NUL, and what follows the NUL.
fn c_string(data: &[u8]) -> Option<(&str, &[u8])> {
    let nul = memchr::memchr(0, data)?;
    let text = std::str::from_utf8(&data[..nul]).ok()?;
    Some((text, &data[nul + 1..]))
}

/// `text` if it is an SMTP reply a client may be given: lines joined by
/// CRLF, each `XYZ-text` but the last `XYZ text` (or just `XYZ`), one code
/// throughout, 4xx or 5xx, printable.
fn smtp_reply(text: &str) -> Option<&str> {
    let code = text.get(..3)?;
    let class = code.as_bytes()[0];
    let digits = code.bytes().all(|b| b.is_ascii_digit());
    if !digits || !(class == b'4' || class == b'5') {
        return None;
    }
    let mut lines = text.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        let sep = line.as_bytes().get(3).copied();
        let sep_ok = match sep {
            None => last,
            Some(b' ') => last,
            Some(b'-') => !last,
            Some(_) => false,
        };
        let printable = line
            .bytes()
            .all(|b| b == b' ' || b.is_ascii_graphic() || b >= 0x80);
        if !line.starts_with(code) || !sep_ok || !printable {
            return None;
        }
    }
    Some(text)
}
