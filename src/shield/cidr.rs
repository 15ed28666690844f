//! Address blocks written as CIDR (`192.0.2.0/24`, `2001:db8::/32`, or a
//! bare address for a block of one), and lists of them as settings write
//! them (`CIDR[,CIDR]...`, empty for none).
//!
//! Owns parsing and membership only. An IPv4 address that arrives
//! IPv4-mapped on an IPv6 socket (`::ffff:192.0.2.1`) is taken as the IPv4
//! address it stands for, so one list serves both kinds of listener.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A block of addresses: those whose first `prefix` bits are `addr`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, width) = bits(self.addr);
        let (ip, ip_width) = bits(ip.to_canonical());
        width == ip_width && (net ^ ip) & !host_mask(width, self.prefix) == 0
    }

    /// A comma-separated list; blanks around entries are allowed, and the
    /// empty string is the empty list.
    pub fn parse_list(text: &str) -> Result<Vec<Cidr>, String> {
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        text.split(',').map(|entry| entry.trim().parse()).collect()
    }
}

/// An address as a number, and its width in bits.
fn bits(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

/// The bits after the first `prefix` of a `width`-bit address.
fn host_mask(width: u8, prefix: u8) -> u128 {
    let host_bits = u32::from(width - prefix);
    u128::MAX.checked_shr(128 - host_bits).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    /// `ADDR/PREFIX` or a bare `ADDR`. Host bits set below the prefix are
    /// refused: `10.0.0.1/8` is more likely a typo than a wish.
    fn from_str(text: &str) -> Result<Cidr, String> {
        let bad = || format!("{text:?} is not an address or CIDR block");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => p.parse().map_err(|_| bad())?,
            Some(_) => return Err(bad()),
        };
        if prefix > width {
            return Err(format!("{text:?}: a prefix of at most {width} bits"));
        }
        if bits(addr).0 & host_mask(width, prefix) != 0 {
            return Err(format!("{text:?} has bits set after its /{prefix}"));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn membership() {
        let table = [
            ("127.0.0.0/8", "127.0.0.2", true),
            ("127.0.0.0/8", "128.0.0.1", false),
            ("127.0.0.0/8", "::ffff:127.0.0.9", true),
            ("127.0.0.0/8", "::1", false),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.6", false),
            ("0.0.0.0/0", "203.0.113.1", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("10.1.2.0/23", "10.1.3.255", true),
            ("10.1.2.0/23", "10.1.4.0", false),
            ("::1", "::1", true),
            ("::1", "::2", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("2001:db8:0:1::/64", "2001:db8:0:1:ffff::1", true),
            ("::/0", "2001:db8::1", true),
            ("::/0", "127.0.0.1", false),
        ];
        for (cidr, addr, inside) in table {
            let parsed: Cidr = cidr.parse().unwrap();
            assert_eq!(parsed.contains(ip(addr)), inside, "{cidr} ∋ {addr}");
        }
    }

    #[test]
    fn malformed_blocks_are_refused() {
        for text in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.1/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "10.0.0/8",
            "example.com",
            "2001:db8::1/32",
        ] {
            assert!(text.parse::<Cidr>().is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn lists() {
        assert_eq!(Cidr::parse_list("").unwrap(), Vec::new());
        assert_eq!(Cidr::parse_list("  ").unwrap(), Vec::new());
        let list = Cidr::parse_list("127.0.0.0/8, ::1").unwrap();
        let shown: Vec<String> = list.iter().map(Cidr::to_string).collect();
        assert_eq!(shown, ["127.0.0.0/8", "::1/128"]);
        assert!(Cidr::parse_list("127.0.0.0/8,").is_err());
        assert!(Cidr::parse_list("127.0.0.0/8,bogus").is_err());
    }
}
