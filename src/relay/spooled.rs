//! A spool file as the relay reads it: the BSMTP of `spool::bsmtp` (RFC
//! 2442) — a MAIL line, one RCPT line per recipient, DATA, then the body,
//! already dot-stuffed and ending in `.`. Checks that a file is such a
//! message (a file that is not goes to `dead/` with the reason) and writes
//! the same message for a subset of its recipients. Does not touch files.

use std::io::{self, Write};

use memchr::memchr;

/// Longest envelope line accepted (RFC 5321 allows 512 with a 256-octet
/// path; parameters add a little).
const MAX_LINE: usize = 2048;

/// A parsed spool file; borrows its octets.
#[derive(Debug)]
pub struct Spooled<'a> {
    /// The MAIL command line, without CRLF.
    pub mail: &'a [u8],
    /// The RCPT command lines, without CRLF.
    pub rcpts: Vec<&'a [u8]>,
    /// The body from its first octet through the final `.` CRLF.
    pub body: &'a [u8],
}

impl<'a> Spooled<'a> {
    /// Reads `file`, or says in one line why it is not a spooled message.
    pub fn parse(file: &'a [u8]) -> Result<Spooled<'a>, String> {
        let mut rest = file;
        let mail = next_line(&mut rest)?;
        if !starts_with_ignore_case(mail, b"MAIL FROM:<") {
            return Err("the first line is not MAIL FROM:<…>".into());
        }
        let mut rcpts = Vec::new();
        loop {
            let line = next_line(&mut rest)?;
            if line.eq_ignore_ascii_case(b"DATA") {
                break;
            }
            if !starts_with_ignore_case(line, b"RCPT TO:<") {
                return Err(format!(
                    "line {} is neither RCPT TO:<…> nor DATA",
                    rcpts.len() + 2
                ));
            }
            rcpts.push(line);
        }
        if rcpts.is_empty() {
            return Err("no RCPT TO line".into());
        }
        if !(rest == b".\r\n" || rest.ends_with(b"\r\n.\r\n")) {
            return Err("the body does not end with <CR><LF>.<CR><LF>".into());
        }
        Ok(Spooled {
            mail,
            rcpts,
            body: rest,
        })
    }

    /// The address of recipient `index`, as the RCPT line names it.
    pub fn recipient(&self, index: usize) -> String {
        let line = self.rcpts[index];
        let inner = &line[b"RCPT TO:".len()..];
        let end = memchr(b'>', inner).map_or(inner.len(), |i| i + 1);
        String::from_utf8_lossy(&inner[..end]).into_owned()
    }

    /// The whole file again, for the recipients at `keep` only.
    pub fn write_for<W: Write>(&self, keep: &[usize], out: &mut W) -> io::Result<()> {
        out.write_all(self.mail)?;
        out.write_all(b"\r\n")?;
        for &index in keep {
            out.write_all(self.rcpts[index])?;
            out.write_all(b"\r\n")?;
        }
        out.write_all(b"DATA\r\n")?;
        out.write_all(self.body)
    }
}

/// The next CRLF-ended line (without it), bounded and free of bare CR/LF.
fn next_line<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let lf = memchr(b'\n', rest).ok_or("the envelope ends before DATA")?;
    let line = &rest[..lf];
    let line = line
        .strip_suffix(b"\r")
        .ok_or("an envelope line ends in a bare <LF>")?;
    if line.len() > MAX_LINE {
        return Err(format!("an envelope line is longer than {MAX_LINE} octets"));
    }
    if line.contains(&b'\r') || line.contains(&0) {
        return Err("an envelope line holds a bare <CR> or a NUL".into());
    }
    *rest = &rest[lf + 1..];
    Ok(line)
}

fn starts_with_ignore_case(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &[u8] = b"MAIL FROM:<a@x> BODY=8BITMIME\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\n\
        DATA\r\nReceived: x\r\n\r\n..dot\r\n.\r\n";

    #[test]
    fn a_spool_file_parses_into_its_parts() {
        let spooled = Spooled::parse(FILE).unwrap();
        assert_eq!(spooled.mail, b"MAIL FROM:<a@x> BODY=8BITMIME");
        assert_eq!(spooled.rcpts, [&b"RCPT TO:<b@y>"[..], b"RCPT TO:<c@y>"]);
        assert_eq!(spooled.body, b"Received: x\r\n\r\n..dot\r\n.\r\n");
        assert_eq!(spooled.recipient(1), "<c@y>");
    }

    #[test]
    fn a_subset_is_the_same_message_for_fewer_recipients() {
        let spooled = Spooled::parse(FILE).unwrap();
        let mut out = Vec::new();
        spooled.write_for(&[1], &mut out).unwrap();
        let want = b"MAIL FROM:<a@x> BODY=8BITMIME\r\nRCPT TO:<c@y>\r\nDATA\r\n\
            Received: x\r\n\r\n..dot\r\n.\r\n";
        assert_eq!(out, want);
        assert!(Spooled::parse(&out).is_ok());
    }

    #[test]
    fn an_empty_body_is_just_the_dot() {
        let spooled = Spooled::parse(b"MAIL FROM:<>\r\nRCPT TO:<b@y>\r\nDATA\r\n.\r\n").unwrap();
        assert_eq!(spooled.body, b".\r\n");
    }

    #[test]
    fn files_that_are_not_spooled_messages_say_why() {
        let long = [b"MAIL FROM:<".as_slice(), &[b'a'; 3000], b">\r\n"].concat();
        let cases: &[(&[u8], &str)] = &[
            (b"", "ends before DATA"),
            (b"hello\r\n", "not MAIL FROM"),
            (b"MAIL FROM:<a>\r\nDATA\r\n.\r\n", "no RCPT"),
            (
                b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nHELO x\r\n",
                "line 3 is neither",
            ),
            (b"MAIL FROM:<a>\nRCPT TO:<b>\r\nDATA\r\n.\r\n", "bare <LF>"),
            (
                b"MAIL FROM:<a\r>\r\nRCPT TO:<b>\r\nDATA\r\n.\r\n",
                "bare <CR>",
            ),
            (
                b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nbody\r\n",
                "does not end",
            ),
            (
                b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nx.\r\n",
                "does not end",
            ),
            (&long, "longer than"),
        ];
        for (file, want) in cases {
            let err = Spooled::parse(file).unwrap_err();
            assert!(
                err.contains(want),
                "{err:?} for {:?}",
                String::from_utf8_lossy(file)
            );
        }
    }
}
