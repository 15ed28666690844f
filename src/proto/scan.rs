//! Byte scanners for the SMTP session: command lines, the end of DATA, and
//! the bare CR / bare LF check that guards against SMTP smuggling
//! (CVE-2023-51764).
//!
//! Owns: where a command line ends (memchr), where DATA ends (a
//! `memmem::Finder` for `\r\n.\r\n` built once), which octets of a DATA body
//! may be handed out and which must be held back because they could start the
//! terminator, and whether body content holds a CR or LF outside a CRLF pair.
//! Does not own: what the octets mean, replies or session state; every
//! scanner here only reports positions and verdicts.
//!
//! Invariant: nothing here allocates or loops per byte in Rust; the searches
//! are memchr/memmem calls, at most one per line of body text.

use std::sync::OnceLock;

use memchr::memmem::Finder;

/// Longest command line, terminator included (RFC 5321 §4.5.3.1.4).
pub const MAX_LINE: usize = 512;

/// The only sequence that ends DATA.
const TERMINATOR: &[u8] = b"\r\n.\r\n";

fn terminator_finder() -> &'static Finder<'static> {
    static FINDER: OnceLock<Finder<'static>> = OnceLock::new();
    FINDER.get_or_init(|| Finder::new(TERMINATOR))
}

/// Where the next command line ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// A complete line of `len` octets including its LF.
    Complete(usize),
    /// No LF yet, and the line may still fit: wait for more input.
    Partial,
    /// No LF within [`MAX_LINE`] octets: the line is too long.
    TooLong,
}

/// Finds the end of the command line at the start of `input`.
pub fn command_line(input: &[u8]) -> Line {
    let window = &input[..input.len().min(MAX_LINE)];
    match memchr::memchr(b'\n', window) {
        Some(i) => Line::Complete(i + 1),
        None if input.len() >= MAX_LINE => Line::TooLong,
        None => Line::Partial,
    }
}

/// Strips the line terminator (CRLF or a lone LF) and trailing blanks.
pub fn trim_line(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\n' | b'\r' | b' ' | b'\t') {
        end -= 1;
    }
    &line[..end]
}

/// One step of DATA body scanning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataStep {
    /// The first `len` octets (never 0) are body; the rest may start the
    /// terminator.
    Body(usize),
    /// The first `body` octets are body (ending in the CRLF that precedes
    /// the terminator); `consumed` octets include the terminator.
    End { body: usize, consumed: usize },
    /// Nothing can be decided until more input arrives (at most 4 octets
    /// are held back).
    NeedMore,
}

/// Finds the end of a DATA body, one input slice at a time.
///
/// The scanner remembers only whether the octets handed out so far end a
/// line; everything else stays in the input, which the caller presents again
/// (so a partial terminator is never handed out as body).
#[derive(Debug, Clone, Copy)]
pub struct DataScanner {
    at_line_start: bool,
}

impl Default for DataScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl DataScanner {
    /// A scanner positioned right after the 354 reply (a line start, so
    /// `.\r\n` alone ends an empty body).
    pub fn new() -> Self {
        DataScanner {
            at_line_start: true,
        }
    }

    /// Scans `input`; the caller must then consume what the step says and
    /// present the rest again, followed by new bytes.
    pub fn step(&mut self, input: &[u8]) -> DataStep {
        if self.at_line_start {
            if input.starts_with(b".\r\n") {
                return DataStep::End {
                    body: 0,
                    consumed: 3,
                };
            }
            if b".\r\n".starts_with(input) {
                return DataStep::NeedMore;
            }
        }
        if let Some(p) = terminator_finder().find(input) {
            self.at_line_start = true;
            return DataStep::End {
                body: p + 2,
                consumed: p + TERMINATOR.len(),
            };
        }
        let len = input.len() - held_back(input);
        if len == 0 {
            return DataStep::NeedMore;
        }
        self.at_line_start = input[..len].ends_with(b"\r\n");
        DataStep::Body(len)
    }
}

/// Length of the longest suffix of `input` that is a proper prefix of the
/// terminator: those octets cannot be handed out yet.
fn held_back(input: &[u8]) -> usize {
    (1..TERMINATOR.len())
        .rev()
        .find(|&n| input.ends_with(&TERMINATOR[..n]))
        .unwrap_or(0)
}

/// Checks that body content pairs every CR with a following LF and every LF
/// with a preceding CR, across any number of slices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrLfCheck {
    pending_cr: bool,
    bare: bool,
}

impl CrLfCheck {
    /// Checks the next slice of content.
    pub fn feed(&mut self, s: &[u8]) {
        if self.bare || s.is_empty() {
            return;
        }
        let mut i = 0;
        if self.pending_cr {
            if s[0] != b'\n' {
                self.bare = true;
                return;
            }
            self.pending_cr = false;
            i = 1;
        }
        while let Some(off) = memchr::memchr2(b'\r', b'\n', &s[i..]) {
            let j = i + off;
            match (s[j], s.get(j + 1)) {
                (b'\r', Some(b'\n')) => i = j + 2,
                (b'\r', None) => {
                    self.pending_cr = true;
                    return;
                }
                _ => {
                    self.bare = true;
                    return;
                }
            }
        }
    }

    /// True once a bare CR or LF has been seen (a trailing CR is only
    /// known to be bare at [`Self::finish`]).
    pub fn failed(&self) -> bool {
        self.bare
    }

    /// Ends the content: a trailing CR is bare. Returns [`Self::failed`].
    pub fn finish(&mut self) -> bool {
        self.bare |= self.pending_cr;
        self.pending_cr = false;
        self.bare
    }
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
