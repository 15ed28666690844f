//! Incremental parser for SMTP server replies (RFC 5321 §4.2), client side.
//!
//! Owns: splitting server output into complete, possibly multi-line replies
//! (`250-…` continued, `250 …` last), checking that every line of a reply
//! carries the same code, noticing the EHLO `PIPELINING` and `STARTTLS`
//! keywords, and keeping the text of the last reply (for logs and the
//! relay's `.reason` files).
//! Input may arrive split anywhere; only a partial line is carried between
//! calls, bounded by [`MAX_LINE`], and the kept text by [`MAX_TEXT`]. Does
//! not know what the client sent. Shared by mxgate's relay and mxgate-load,
//! so there is one reply parser in the workspace.

use memchr::memchr;

/// Longest reply line accepted (RFC 5321 §4.5.3.1.5 says 512; be lenient).
pub const MAX_LINE: usize = 4096;
/// Most lines one multi-line reply may have before it is called hostile.
pub const MAX_LINES: usize = 1000;
/// Most octets of a reply's text kept; the rest is cut (an EHLO reply's
/// keyword list is long and says nothing a log needs).
pub const MAX_TEXT: usize = 512;

/// One complete reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code, e.g. 250.
    pub code: u16,
    /// Some line of the reply was the `PIPELINING` extension keyword.
    pub pipelining: bool,
    /// Some line of the reply was the `STARTTLS` extension keyword.
    pub starttls: bool,
}

impl Reply {
    /// 2xx or 3xx: the server went along.
    pub fn is_positive(self) -> bool {
        (200..400).contains(&self.code)
    }
}

/// Why the server's output is not SMTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// A line did not start with three digits and ` `, `-` or its end.
    Malformed,
    /// A continuation line carried a different code than the first line.
    CodeChanged,
    /// A line longer than [`MAX_LINE`] or a reply longer than [`MAX_LINES`].
    TooLong,
}

/// Parser state carried between reads.
#[derive(Debug, Default)]
pub struct ReplyParser {
    /// A line whose LF has not arrived yet.
    carry: Vec<u8>,
    /// Code of the reply in progress (set by its first line).
    code: Option<u16>,
    pipelining: bool,
    starttls: bool,
    lines: usize,
    /// Text of the reply in progress: its lines after the code, joined by
    /// spaces, cut at [`MAX_TEXT`].
    partial_text: Vec<u8>,
    /// Text of the last complete reply.
    last_text: Vec<u8>,
}

impl ReplyParser {
    /// The text of the last complete reply (after its code, lines joined
    /// by a space; at most [`MAX_TEXT`] octets, as sent: not necessarily
    /// UTF-8). Empty before the first reply.
    pub fn text(&self) -> &[u8] {
        &self.last_text
    }

    /// Consumes input up to and including the end of the next complete
    /// reply. Returns the bytes consumed and the reply, or `None` when all
    /// of `input` was consumed without completing one.
    pub fn parse(&mut self, input: &[u8]) -> Result<(usize, Option<Reply>), ReplyError> {
        let mut used = 0;
        while used < input.len() {
            let rest = &input[used..];
            let Some(lf) = memchr(b'\n', rest) else {
                self.keep_partial(rest)?;
                return Ok((input.len(), None));
            };
            used += lf + 1;
            let reply = if self.carry.is_empty() {
                self.line(&rest[..lf])?
            } else {
                let mut line = std::mem::take(&mut self.carry);
                self.keep_check(line.len() + lf)?;
                line.extend_from_slice(&rest[..lf]);
                let reply = self.line(&line);
                line.clear();
                self.carry = line;
                reply?
            };
            if reply.is_some() {
                return Ok((used, reply));
            }
        }
        Ok((used, None))
    }

    fn keep_partial(&mut self, rest: &[u8]) -> Result<(), ReplyError> {
        self.keep_check(self.carry.len() + rest.len())?;
        self.carry.extend_from_slice(rest);
        Ok(())
    }

    fn keep_check(&self, len: usize) -> Result<(), ReplyError> {
        if len > MAX_LINE {
            return Err(ReplyError::TooLong);
        }
        Ok(())
    }

    /// One line without its LF; returns the reply when this line ends it.
    fn line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (code, last, text) = split_line(line)?;
        if *self.code.get_or_insert(code) != code {
            return Err(ReplyError::CodeChanged);
        }
        self.lines += 1;
        if self.lines > MAX_LINES {
            return Err(ReplyError::TooLong);
        }
        self.pipelining |= is_keyword(text, b"PIPELINING");
        self.starttls |= is_keyword(text, b"STARTTLS");
        self.keep_text(text);
        if !last {
            return Ok(None);
        }
        std::mem::swap(&mut self.partial_text, &mut self.last_text);
        self.partial_text.clear();
        let reply = Reply {
            code,
            pipelining: self.pipelining,
            starttls: self.starttls,
        };
        self.code = None;
        self.pipelining = false;
        self.starttls = false;
        self.lines = 0;
        Ok(Some(reply))
    }
}

impl ReplyParser {
    fn keep_text(&mut self, line: &[u8]) {
        if !self.partial_text.is_empty() {
            self.partial_text.push(b' ');
        }
        let room = MAX_TEXT.saturating_sub(self.partial_text.len());
        self.partial_text
            .extend_from_slice(&line[..line.len().min(room)]);
    }
}

/// Splits `250-text` into (250, is-last-line, text).
fn split_line(line: &[u8]) -> Result<(u16, bool, &[u8]), ReplyError> {
    let digits = line.get(..3).ok_or(ReplyError::Malformed)?;
    if !digits.iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&digits[0]) {
        return Err(ReplyError::Malformed);
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match line.get(3) {
        None => Ok((code, true, &[])),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(ReplyError::Malformed),
    }
}

/// EHLO keyword lines are `KEYWORD[ params]`, case-insensitive.
fn is_keyword(text: &[u8], keyword: &[u8]) -> bool {
    let word = text.split(|&b| b == b' ').next().unwrap_or_default();
    word.eq_ignore_ascii_case(keyword)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(parser: &mut ReplyParser, mut input: &[u8]) -> Result<Vec<Reply>, ReplyError> {
        let mut out = Vec::new();
        while !input.is_empty() {
            let (used, reply) = parser.parse(input)?;
            out.extend(reply);
            input = &input[used..];
        }
        Ok(out)
    }

    const EHLO: &[u8] = b"220 mx ESMTP\r\n250-mx.example\r\n250-SIZE 100\r\n\
        250-pipelining\r\n250-STARTTLS\r\n250 8BITMIME\r\n354 go\r\n550 5.1.1 nope\n221\r\n";

    fn expected() -> Vec<Reply> {
        let r = |code, ehlo| Reply {
            code,
            pipelining: ehlo,
            starttls: ehlo,
        };
        vec![
            r(220, false),
            r(250, true),
            r(354, false),
            r(550, false),
            r(221, false),
        ]
    }

    #[test]
    fn whole_input_gives_every_reply() {
        assert_eq!(parse_all(&mut ReplyParser::default(), EHLO), Ok(expected()));
    }

    #[test]
    fn split_at_every_byte_gives_the_same_replies() {
        for cut in 0..=EHLO.len() {
            let mut parser = ReplyParser::default();
            let mut got = parse_all(&mut parser, &EHLO[..cut]).unwrap();
            got.extend(parse_all(&mut parser, &EHLO[cut..]).unwrap());
            assert_eq!(got, expected(), "cut at {cut}");
        }
    }

    #[test]
    fn one_byte_at_a_time_gives_the_same_replies() {
        let mut parser = ReplyParser::default();
        let mut got = Vec::new();
        for byte in EHLO.chunks(1) {
            got.extend(parse_all(&mut parser, byte).unwrap());
        }
        assert_eq!(got, expected());
    }

    #[test]
    fn the_text_of_each_reply_is_kept() {
        let mut parser = ReplyParser::default();
        let input = b"250-first line\r\n250 second\r\n550 5.1.1 <a@b>: no\r\n221\r\n";
        let mut texts = Vec::new();
        let mut rest = &input[..];
        while !rest.is_empty() {
            let (used, reply) = parser.parse(rest).unwrap();
            if reply.is_some() {
                texts.push(String::from_utf8(parser.text().to_vec()).unwrap());
            }
            rest = &rest[used..];
        }
        assert_eq!(texts, ["first line second", "5.1.1 <a@b>: no", ""]);
    }

    #[test]
    fn long_texts_are_cut() {
        let mut input = b"250-".to_vec();
        input.extend([b'a'; 400]);
        input.extend(b"\r\n250 ");
        input.extend([b'b'; 400]);
        input.extend(b"\r\n");
        let mut parser = ReplyParser::default();
        parse_all(&mut parser, &input).unwrap();
        assert_eq!(parser.text().len(), MAX_TEXT);
    }

    #[test]
    fn bad_lines_are_errors() {
        let cases: &[(&[u8], ReplyError)] = &[
            (b"hello\r\n", ReplyError::Malformed),
            (b"25\r\n", ReplyError::Malformed),
            (b"250x\r\n", ReplyError::Malformed),
            (b"650 no\r\n", ReplyError::Malformed),
            (b"250-a\r\n251 b\r\n", ReplyError::CodeChanged),
        ];
        for (input, err) in cases {
            let got = parse_all(&mut ReplyParser::default(), input);
            assert_eq!(got, Err(*err), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn an_endless_line_is_refused_without_growing() {
        let mut parser = ReplyParser::default();
        let chunk = [b'2'; 1000];
        let mut result = Ok((0, None));
        for _ in 0..10 {
            result = parser.parse(&chunk);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ReplyError::TooLong));
        assert!(parser.carry.len() <= MAX_LINE);
    }

    #[test]
    fn an_endless_reply_is_refused() {
        let input = b"250-x\r\n".repeat(MAX_LINES + 1);
        let got = parse_all(&mut ReplyParser::default(), &input);
        assert_eq!(got, Err(ReplyError::TooLong));
    }
}
