//! Milter packet framing: a 4-octet big-endian length (of what follows),
//! a command octet, then data. Owns encoding the MTA's packets and cutting
//! the milter's byte stream into packets, with a bound on their size; knows
//! nothing of what a command means.

/// The largest packet (command octet and data) taken from a milter: a body
/// chunk or header the milter hands back fits; anything larger is refused
/// before it is buffered.
pub const MAX_PACKET: usize = 64 << 10;

/// Appends one packet: `command`, then each of `parts` in turn.
pub fn encode(out: &mut Vec<u8>, command: u8, parts: &[&[u8]]) {
    let len: usize = 1 + parts.iter().map(|part| part.len()).sum::<usize>();
    let len = u32::try_from(len).expect("milter packets are far below 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.push(command);
    for part in parts {
        out.extend_from_slice(part);
    }
}

/// Why a milter's byte stream cannot be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A length of zero: no command octet.
    Empty,
    /// A length over [`MAX_PACKET`].
    Oversized(u32),
}

/// Cuts a byte stream, split anywhere, into packets. Holds at most one
/// partial packet.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the next packet starts in `buf`.
    start: usize,
}

impl Decoder {
    /// Appends received octets.
    pub fn extend(&mut self, input: &[u8]) {
        self.buf.drain(..self.start);
        self.start = 0;
        self.buf.extend_from_slice(input);
    }

    /// The next complete packet as (command, data), `Ok(None)` if more
    /// input is needed.
    pub fn next_packet(&mut self) -> Result<Option<(u8, &[u8])>, FrameError> {
        let rest = &self.buf[self.start..];
        let Some(head) = rest.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let size = len as usize;
        if size == 0 {
            return Err(FrameError::Empty);
        }
        if size > MAX_PACKET {
            return Err(FrameError::Oversized(len));
        }
        if rest.len() < 4 + size {
            return Ok(None);
        }
        let at = self.start + 4;
        self.start = at + size;
        Ok(Some((self.buf[at], &self.buf[at + 1..at + size])))
    }

    /// Octets received and not yet taken as a packet.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}
