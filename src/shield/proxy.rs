//! A sans-IO reader of the PROXY protocol header (HAProxy's spec, versions
//! 1 and 2) that a trusted balancer sends before the client's first octet.
//!
//! [`parse`] takes the octets received so far and says whether a header is
//! complete ([`Parse::Done`], with how many octets it took and the client's
//! address), needs more ([`Parse::Partial`]) or cannot be one
//! ([`Parse::Invalid`]). It never reads past the header: what follows is the
//! client's SMTP. A header is bounded ([`V1_MAX`], [`V2_MAX_BODY`]), so a
//! peer cannot make a connection hold more. `LOCAL` (v2) and `UNKNOWN` (v1),
//! and address families with no IP address, give no source: the connection
//! is the balancer's own (a health check). [`sniff`] tells whether a
//! connection's first octets begin a header, for the peers that must not
//! send one. Knows nothing of sockets, sessions or replies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest v1 header, `\r\n` included (the spec's 107).
pub const V1_MAX: usize = 107;
/// The most address and TLV octets a v2 header may carry here: far more
/// than any balancer's addresses and TLVs, small enough to bound a
/// connection that has not been greeted.
pub const V2_MAX_BODY: usize = 2048;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version and command, family, length.
const V2_FIXED: usize = 16;

/// What the octets received so far make of a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// A header may still come: read more.
    Partial,
    /// A complete header of `consumed` octets; `source` is the client's
    /// address, or `None` for the balancer's own connection.
    Done {
        consumed: usize,
        source: Option<SocketAddr>,
    },
    /// Not a valid header, for this reason.
    Invalid(Flaw),
}

/// Why octets are not a valid header (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    NoHeader,
    V1TooLong,
    V1NoCr,
    V1NotText,
    V1Malformed,
    V2Version,
    V2Command,
    V2TooLong,
    V2Family,
    V2Datagram,
    V2Short,
    V2TlvTruncated,
    V2TlvOverrun,
}

impl Flaw {
    pub fn as_str(self) -> &'static str {
        match self {
            Flaw::NoHeader => "no PROXY header",
            Flaw::V1TooLong => "v1 header longer than 107 octets",
            Flaw::V1NoCr => "v1 header ends without CR",
            Flaw::V1NotText => "v1 header is not text",
            Flaw::V1Malformed => "malformed v1 header",
            Flaw::V2Version => "v2 header of an unknown version",
            Flaw::V2Command => "v2 header with an unknown command",
            Flaw::V2TooLong => "v2 header too long",
            Flaw::V2Family => "v2 header with an unknown family",
            Flaw::V2Datagram => "v2 header for a datagram",
            Flaw::V2Short => "v2 header shorter than its addresses",
            Flaw::V2TlvTruncated => "v2 header with a truncated TLV",
            Flaw::V2TlvOverrun => "v2 header with a TLV past its end",
        }
    }
}

impl std::fmt::Display for Flaw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a connection's first octets are a PROXY header's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// They begin one (`PROXY ` or the whole v2 signature).
    Header,
    /// They cannot.
    Other,
    /// Too few octets to tell.
    Unsure,
}

/// Reads a v1 or v2 header at the start of `input`.
pub fn parse(input: &[u8]) -> Parse {
    if starts_like(input, V2_SIGNATURE) {
        v2(input)
    } else if starts_like(input, V1_PREFIX) {
        v1(input)
    } else {
        Parse::Invalid(Flaw::NoHeader)
    }
}

/// Tells whether `input` begins a header (see [`Sniff`]).
pub fn sniff(input: &[u8]) -> Sniff {
    let v1 = starts_like(input, V1_PREFIX);
    let v2 = starts_like(input, V2_SIGNATURE);
    if input.starts_with(V1_PREFIX) || input.starts_with(V2_SIGNATURE) {
        Sniff::Header
    } else if v1 || v2 {
        Sniff::Unsure
    } else {
        Sniff::Other
    }
}

/// `input` and `prefix` agree on their common length.
fn starts_like(input: &[u8], prefix: &[u8]) -> bool {
    let n = input.len().min(prefix.len());
    input[..n] == prefix[..n]
}

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN ...\r\n`.
fn v1(input: &[u8]) -> Parse {
    let window = &input[..input.len().min(V1_MAX)];
    // The line ends at its first LF, which must follow a CR: a bare LF
    // inside would make the answer depend on where the input was cut.
    let Some(lf) = memchr::memchr(b'\n', window) else {
        return if input.len() >= V1_MAX {
            Parse::Invalid(Flaw::V1TooLong)
        } else {
            Parse::Partial
        };
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Parse::Invalid(Flaw::V1NoCr);
    }
    let end = lf - 1;
    let consumed = end + 2;
    let Ok(line) = std::str::from_utf8(&window[V1_PREFIX.len()..end]) else {
        return Parse::Invalid(Flaw::V1NotText);
    };
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Parse::Done {
            consumed,
            source: None,
        };
    }
    match v1_source(line) {
        Some(source) => Parse::Done {
            consumed,
            source: Some(source),
        },
        None => Parse::Invalid(Flaw::V1Malformed),
    }
}

/// The source of `TCP4|TCP6 SRC DST SPORT DPORT` (single spaces; both
/// addresses of the named family; decimal ports).
fn v1_source(line: &str) -> Option<SocketAddr> {
    let fields: Vec<&str> = line.split(' ').collect();
    let [family, src, dst, sport, dport] = fields[..] else {
        return None;
    };
    // The destination is the balancer's; it is checked, not kept.
    let src: IpAddr = match family {
        "TCP4" => {
            dst.parse::<Ipv4Addr>().ok()?;
            src.parse::<Ipv4Addr>().ok()?.into()
        }
        "TCP6" => {
            dst.parse::<Ipv6Addr>().ok()?;
            src.parse::<Ipv6Addr>().ok()?.into()
        }
        _ => return None,
    };
    port(dport)?;
    Some(SocketAddr::new(src, port(sport)?))
}

/// A decimal port: digits only, no leading zero, at most 65535.
fn port(text: &str) -> Option<u16> {
    let digits = text.bytes().all(|b| b.is_ascii_digit());
    let canonical = text == "0" || !text.starts_with('0');
    (digits && canonical).then(|| text.parse().ok()).flatten()
}

/// Signature, `0x2X` (X: 0 LOCAL, 1 PROXY), family and transport, a
/// big-endian length, then that many octets of addresses and TLVs.
fn v2(input: &[u8]) -> Parse {
    // Refused as soon as the octet that says so has arrived.
    let command = input.get(12).map(|&octet| (octet >> 4, octet & 0x0f));
    match command {
        Some((2, 0 | 1)) | None => {}
        Some((2, _)) => return Parse::Invalid(Flaw::V2Command),
        Some(_) => return Parse::Invalid(Flaw::V2Version),
    }
    let Some(fixed) = input.get(..V2_FIXED) else {
        return Parse::Partial;
    };
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > V2_MAX_BODY {
        return Parse::Invalid(Flaw::V2TooLong);
    }
    let Some(body) = input.get(V2_FIXED..V2_FIXED + len) else {
        return Parse::Partial;
    };
    let consumed = V2_FIXED + len;
    if fixed[12] & 0x0f == 0 {
        // LOCAL: whatever addresses follow are not a client's.
        return Parse::Done {
            consumed,
            source: None,
        };
    }
    match v2_source(fixed[13], body) {
        Ok(source) => Parse::Done { consumed, source },
        Err(reason) => Parse::Invalid(reason),
    }
}

/// The source address of a v2 `PROXY` header's body; the TLVs after the
/// addresses are skipped, but must fill the body exactly.
fn v2_source(family: u8, body: &[u8]) -> Result<Option<SocketAddr>, Flaw> {
    let (address_family, transport) = (family >> 4, family & 0x0f);
    if address_family > 3 || transport > 2 {
        return Err(Flaw::V2Family);
    }
    if transport == 2 {
        return Err(Flaw::V2Datagram);
    }
    let (source, addresses_len) = match address_family {
        1 if body.len() >= 12 => {
            let ip: [u8; 4] = body[..4].try_into().expect("4 octets");
            let port = u16::from_be_bytes([body[8], body[9]]);
            (Some(SocketAddr::new(Ipv4Addr::from(ip).into(), port)), 12)
        }
        2 if body.len() >= 36 => {
            let ip: [u8; 16] = body[..16].try_into().expect("16 octets");
            let port = u16::from_be_bytes([body[32], body[33]]);
            (Some(SocketAddr::new(Ipv6Addr::from(ip).into(), port)), 36)
        }
        1 | 2 => return Err(Flaw::V2Short),
        // AF_UNSPEC and AF_UNIX carry no client IP: the balancer's own.
        0 => (None, 0),
        _ if body.len() >= 216 => (None, 216),
        _ => return Err(Flaw::V2Short),
    };
    skip_tlvs(&body[addresses_len..])?;
    Ok(source)
}

/// Walks the TLVs (type, big-endian length, value) to the end of `tlvs`.
fn skip_tlvs(mut tlvs: &[u8]) -> Result<(), Flaw> {
    while !tlvs.is_empty() {
        let [_, high, low, ..] = *tlvs else {
            return Err(Flaw::V2TlvTruncated);
        };
        let end = 3 + usize::from(u16::from_be_bytes([high, low]));
        tlvs = tlvs.get(end..).ok_or(Flaw::V2TlvOverrun)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
