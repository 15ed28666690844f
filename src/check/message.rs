//! A message as milters see it and edit it: the body as received (still
//! dot-stuffed after DATA) unstuffed into plain lines, cut into its header
//! fields and its body; the header edits of milters applied to that plain
//! copy. Knows nothing of sockets, milters' replies or the spool format.

use super::milter::HeaderEdit;

/// One header field of a plain message, as ranges of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    name: std::ops::Range<usize>,
    /// From after the colon to before the final CRLF (folds included).
    value: std::ops::Range<usize>,
}

/// A message without dot-stuffing, and where its header fields are.
#[derive(Debug, Clone)]
pub struct Plain {
    text: Vec<u8>,
    fields: Vec<Field>,
    /// Where the body starts (after the blank line, if there is one).
    body: usize,
}

impl Plain {
    /// `body` as received: `stuffed` after DATA (a leading `.` doubled),
    /// raw after BDAT.
    pub fn new(body: &[u8], stuffed: bool) -> Plain {
        let text = if stuffed {
            unstuff(body)
        } else {
            body.to_vec()
        };
        let (fields, body) = fields(&text);
        Plain { text, fields, body }
    }

    /// The header fields as a milter is told of them: the name, and the
    /// value without its leading blanks, folds joined by `\n`.
    pub fn headers(&self) -> impl Iterator<Item = (&str, Vec<u8>)> + '_ {
        self.fields.iter().map(|field| {
            let name = std::str::from_utf8(&self.text[field.name.clone()]).unwrap_or("X-Invalid");
            let value = &self.text[field.value.clone()];
            let start = value.iter().position(|b| !matches!(b, b' ' | b'\t'));
            let value = &value[start.unwrap_or(value.len())..];
            (name, unfold_crlf(value))
        })
    }

    /// The body after the header section.
    pub fn body(&self) -> &[u8] {
        &self.text[self.body..]
    }

    /// The whole message with `edits` applied (in order) to its header
    /// section; the body is untouched. Added and inserted fields go at the
    /// top, where the spool's Received line will sit above them.
    pub fn edited(&self, edits: &[HeaderEdit]) -> Vec<u8> {
        let mut lines: Vec<Vec<u8>> = self
            .fields
            .iter()
            .map(|field| self.text[field.name.start..field.value.end + 2].to_vec())
            .collect();
        let mut added = 0;
        for edit in edits {
            match edit {
                HeaderEdit::Add { name, value } => {
                    lines.insert(added, render(name, value));
                    added += 1;
                }
                HeaderEdit::Insert { index, name, value } => {
                    let at = (*index as usize).min(lines.len());
                    lines.insert(at, render(name, value));
                }
                HeaderEdit::Change { index, name, value } => {
                    change(&mut lines, *index, name, value)
                }
            }
        }
        let head_end = self.fields.last().map_or(0, |field| field.value.end + 2);
        let mut out = lines.concat();
        out.extend_from_slice(&self.text[head_end..]);
        out
    }
}

/// Replaces (or with an empty value deletes) the `index`-th field called
/// `name`; one that is not there is added at the end of the section.
fn change(lines: &mut Vec<Vec<u8>>, index: u32, name: &str, value: &str) {
    let position = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| field_name(line).eq_ignore_ascii_case(name.as_bytes()))
        .nth((index as usize).saturating_sub(1))
        .map(|(at, _)| at);
    match (position, value.is_empty()) {
        (Some(at), true) => {
            lines.remove(at);
        }
        (Some(at), false) => lines[at] = render(name, value),
        (None, true) => {}
        (None, false) => lines.push(render(name, value)),
    }
}

fn field_name(line: &[u8]) -> &[u8] {
    let colon = memchr::memchr(b':', line).unwrap_or(line.len());
    &line[..colon]
}

/// `Name: value` as a header line: every line break becomes CRLF and a
/// continuation line starts with a blank, so a milter's value can neither
/// end the header section nor add a field of its own.
fn render(name: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + value.len() + 4);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    let mut lines = value.split('\n').map(|line| line.trim_end_matches('\r'));
    if let Some(first) = lines.next() {
        out.extend_from_slice(first.as_bytes());
    }
    for line in lines.filter(|line| !line.trim().is_empty()) {
        out.extend_from_slice(b"\r\n");
        if !line.starts_with([' ', '\t']) {
            out.push(b'\t');
        }
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Folded lines joined by `\n` (as Sendmail tells milters).
fn unfold_crlf(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i..].starts_with(b"\r\n") {
            out.push(b'\n');
            i += 2;
        } else {
            out.push(value[i]);
            i += 1;
        }
    }
    out
}

/// DATA's transparency undone (RFC 5321 §4.5.2): a line's leading `.` is
/// dropped.
fn unstuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

/// The header fields of `text` and where its body starts: fields run until
/// a blank line (taken with them) or a line that is no field.
fn fields(text: &[u8]) -> (Vec<Field>, usize) {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let Some(eol) = memchr::memchr(b'\n', &text[pos..]).map(|i| pos + i) else {
            break;
        };
        let line = &text[pos..=eol];
        if line == b"\r\n" || line == b"\n" {
            return (fields, eol + 1);
        }
        let crlf = line.ends_with(b"\r\n");
        if matches!(line[0], b' ' | b'\t') && crlf {
            match fields.last_mut() {
                Some(field) => field.value.end = eol - 1,
                None => return (fields, pos),
            }
        } else {
            let colon = memchr::memchr(b':', line);
            let name_ok = colon.is_some_and(|c| {
                c > 0 && line[..c].iter().all(|b| b.is_ascii_graphic() && *b != b':')
            });
            let (Some(colon), true, true) = (colon, name_ok, crlf) else {
                return (fields, pos);
            };
            fields.push(Field {
                name: pos..pos + colon,
                value: pos + colon + 1..eol - 1,
            });
        }
        pos = eol + 1;
    }
    (fields, pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"Subject: hi\r\n  there\r\nFrom: a@b\r\n\r\n..dot\r\nbody\r\n";

    #[test]
    fn headers_and_body_are_cut_and_unstuffed() {
        let plain = Plain::new(MESSAGE, true);
        let headers: Vec<(&str, Vec<u8>)> = plain.headers().collect();
        assert_eq!(
            headers,
            vec![
                ("Subject", b"hi\n  there".to_vec()),
                ("From", b"a@b".to_vec())
            ]
        );
        assert_eq!(plain.body(), b".dot\r\nbody\r\n");
        let raw = Plain::new(MESSAGE, false);
        assert_eq!(raw.body(), b"..dot\r\nbody\r\n");
    }

    #[test]
    fn a_message_without_headers_is_all_body() {
        let plain = Plain::new(b"just text\r\n", false);
        assert_eq!(plain.headers().count(), 0);
        assert_eq!(plain.body(), b"just text\r\n");
        assert_eq!(plain.edited(&[]), b"just text\r\n");
    }

    #[test]
    fn edits_go_at_the_top_and_in_place_and_the_body_is_untouched() {
        let plain = Plain::new(MESSAGE, true);
        let edits = [
            HeaderEdit::Add {
                name: "X-Spam".into(),
                value: "no".into(),
            },
            HeaderEdit::Add {
                name: "X-Scan".into(),
                value: "one\nbad: injected\n\n".into(),
            },
            HeaderEdit::Change {
                index: 1,
                name: "subject".into(),
                value: "new".into(),
            },
            HeaderEdit::Change {
                index: 1,
                name: "From".into(),
                value: String::new(),
            },
            HeaderEdit::Insert {
                index: 0,
                name: "X-Top".into(),
                value: "1".into(),
            },
        ];
        let edited = plain.edited(&edits);
        let want = b"X-Top: 1\r\nX-Spam: no\r\nX-Scan: one\r\n\tbad: injected\r\nsubject: new\r\n\r\n.dot\r\nbody\r\n";
        assert_eq!(
            String::from_utf8_lossy(&edited),
            String::from_utf8_lossy(want)
        );
    }
}
