//! The spool file format: one message as batch SMTP (RFC 2442), exactly as
//! DESIGN.md's Spool section says — envelope commands, `DATA`, our Received
//! line, the body (DATA bodies as received, BDAT bodies dot-stuffed here),
//! then `.`. Writes to any `io::Write`; knows nothing of files, syncing or
//! how ids are made.

use std::io::{self, Write};

use memchr::memmem::Finder;

use super::Message;
use crate::proto::{BodyKind, Envelope};

/// Who stamps the message: the parts of the Received line not in [`Message`].
pub struct Trace<'a> {
    pub id: &'a str,
    pub date: &'a str,
    pub hostname: &'a str,
}

/// Renders messages; build one per thread and reuse it.
pub struct Bsmtp {
    /// A line starting with `.` follows every `\n.` (the first line aside).
    dot_line: Finder<'static>,
}

impl Default for Bsmtp {
    fn default() -> Self {
        Bsmtp {
            dot_line: Finder::new(b"\n.").into_owned(),
        }
    }
}

impl Bsmtp {
    /// Writes the whole spool file of `message`.
    pub fn write<W: Write>(&self, out: &mut W, message: &Message, trace: &Trace) -> io::Result<()> {
        write_envelope(out, &message.envelope)?;
        write_received(out, message, trace)?;
        let body = &message.body;
        match message.envelope.body_kind {
            Some(BodyKind::Bdat) => self.write_stuffed(out, body)?,
            Some(BodyKind::Data) | None => out.write_all(body)?,
        }
        // The session guarantees it for DATA; BDAT content may lack it.
        if !body.is_empty() && !body.ends_with(b"\r\n") {
            out.write_all(b"\r\n")?;
        }
        out.write_all(b".\r\n")
    }

    /// `body` with a second `.` before every line that starts with one.
    fn write_stuffed<W: Write>(&self, out: &mut W, body: &[u8]) -> io::Result<()> {
        if body.first() == Some(&b'.') {
            out.write_all(b".")?;
        }
        let mut start = 0;
        for newline in self.dot_line.find_iter(body) {
            out.write_all(&body[start..=newline])?;
            out.write_all(b".")?;
            start = newline + 1;
        }
        out.write_all(&body[start..])
    }
}

fn write_envelope<W: Write>(out: &mut W, envelope: &Envelope) -> io::Result<()> {
    out.write_all(b"MAIL FROM:<")?;
    out.write_all(&envelope.mail_from)?;
    out.write_all(b">")?;
    if envelope.body_8bitmime {
        out.write_all(b" BODY=8BITMIME")?;
    }
    if envelope.smtputf8 {
        out.write_all(b" SMTPUTF8")?;
    }
    out.write_all(b"\r\n")?;
    for rcpt in &envelope.rcpts {
        out.write_all(b"RCPT TO:<")?;
        out.write_all(rcpt)?;
        out.write_all(b">\r\n")?;
    }
    out.write_all(b"DATA\r\n")
}

fn write_received<W: Write>(out: &mut W, message: &Message, trace: &Trace) -> io::Result<()> {
    out.write_all(b"Received: from ")?;
    out.write_all(&message.helo)?;
    write!(out, " ({})", message.peer)?;
    // RFC 3848: ESMTPS, with the version and cipher in a comment as
    // Postfix writes them.
    let with = match &message.tls {
        Some(negotiated) => {
            write!(out, " (using {negotiated})")?;
            "ESMTPS"
        }
        None => "ESMTP",
    };
    write!(
        out,
        " by {} (mxgate) with {with} id {}; {}\r\n",
        trace.hostname, trace.id, trace.date
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    const RECEIVED: &str = "Received: from mx.example.net (192.0.2.7) by mx.test (mxgate) \
         with ESMTP id 0ID; Fri, 27 Nov 2026 03:32:09 +0000\r\n";

    fn message(kind: BodyKind, body: &[u8]) -> Message {
        Message {
            peer: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
            helo: b"mx.example.net".to_vec(),
            tls: None,
            envelope: Envelope {
                mail_from: b"alice@example.net".to_vec(),
                rcpts: vec![b"bob@example.com".to_vec(), b"carol@example.com".to_vec()],
                body_8bitmime: false,
                smtputf8: false,
                body_kind: Some(kind),
            },
            body: body.to_vec(),
            quarantine: None,
            id: None,
        }
    }

    fn render(message: &Message) -> String {
        let trace = Trace {
            id: "0ID",
            date: "Fri, 27 Nov 2026 03:32:09 +0000",
            hostname: "mx.test",
        };
        let mut out = Vec::new();
        Bsmtp::default().write(&mut out, message, &trace).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn expected(mail: &str, body: &str) -> String {
        format!(
            "{mail}\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<carol@example.com>\r\n\
             DATA\r\n{RECEIVED}{body}.\r\n"
        )
    }

    const FROM: &str = "MAIL FROM:<alice@example.net>";

    #[test]
    fn data_body_is_written_as_received() {
        let body = "Subject: x\r\n\r\n..stuffed\r\nend\r\n";
        let got = render(&message(BodyKind::Data, body.as_bytes()));
        assert_eq!(got, expected(FROM, body));
    }

    #[test]
    fn empty_bodies_get_only_the_dot() {
        for kind in [BodyKind::Data, BodyKind::Bdat] {
            assert_eq!(render(&message(kind, b"")), expected(FROM, ""));
        }
    }

    #[test]
    fn bdat_body_is_dot_stuffed() {
        let body = b".first\r\nmid\r\n.\r\n..two\r\nx.y\r\n.";
        let want = "..first\r\nmid\r\n..\r\n...two\r\nx.y\r\n..\r\n";
        assert_eq!(render(&message(BodyKind::Bdat, body)), expected(FROM, want));
    }

    #[test]
    fn bdat_body_gets_a_final_crlf() {
        let got = render(&message(BodyKind::Bdat, b"Subject: x\r\n\r\nno end"));
        assert_eq!(got, expected(FROM, "Subject: x\r\n\r\nno end\r\n"));
    }

    #[test]
    fn a_data_body_without_final_crlf_still_makes_a_valid_file() {
        let got = render(&message(BodyKind::Data, b"x\r\n.."));
        assert_eq!(got, expected(FROM, "x\r\n..\r\n"));
    }

    #[test]
    fn bdat_body_with_final_crlf_is_left_alone() {
        let got = render(&message(BodyKind::Bdat, b"a\r\nb\r\n"));
        assert_eq!(got, expected(FROM, "a\r\nb\r\n"));
    }

    #[test]
    fn mail_parameters_are_kept() {
        let cases = [
            (true, false, " BODY=8BITMIME"),
            (false, true, " SMTPUTF8"),
            (true, true, " BODY=8BITMIME SMTPUTF8"),
        ];
        for (eight_bit, utf8, params) in cases {
            let mut m = message(BodyKind::Data, b"x\r\n");
            m.envelope.body_8bitmime = eight_bit;
            m.envelope.smtputf8 = utf8;
            assert_eq!(render(&m), expected(&format!("{FROM}{params}"), "x\r\n"));
        }
    }

    #[test]
    fn null_sender_is_empty_brackets() {
        let mut m = message(BodyKind::Data, b"x\r\n");
        m.envelope.mail_from.clear();
        assert_eq!(render(&m), expected("MAIL FROM:<>", "x\r\n"));
    }

    /// Byte by byte: a `.` at the start of a line gets another.
    fn naive_stuff(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut line_start = true;
        for &byte in body {
            if line_start && byte == b'.' {
                out.push(b'.');
            }
            out.push(byte);
            line_start = byte == b'\n';
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn stuffing_matches_the_naive_reference(
            body in proptest::collection::vec(proptest::sample::select(b".\r\na".to_vec()), 0..64)
        ) {
            let mut out = Vec::new();
            Bsmtp::default().write_stuffed(&mut out, &body).unwrap();
            proptest::prop_assert_eq!(out, naive_stuff(&body));
        }
    }

    #[test]
    fn ipv6_peer_in_received_line() {
        let mut m = message(BodyKind::Data, b"");
        m.peer = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert!(render(&m).contains("Received: from mx.example.net (::1) by mx.test"));
    }

    /// Over STARTTLS: ESMTPS, and the version and cipher in a comment.
    #[test]
    fn received_line_over_tls() {
        let mut m = message(BodyKind::Data, b"");
        m.tls = Some(crate::tls::Negotiated {
            version: "TLSv1.3",
            cipher: "TLS_AES_256_GCM_SHA384",
        });
        let expected = "Received: from mx.example.net (192.0.2.7) (using TLSv1.3 with cipher \
             TLS_AES_256_GCM_SHA384) by mx.test (mxgate) with ESMTPS id 0ID; ";
        assert!(render(&m).contains(expected), "{}", render(&m));
    }
}
