//! An address range written as `ADDR/LEN` (or a bare address, a range of
//! one), as settings name trusted balancers and exempt clients. Parses and
//! tests membership; an IPv4 range never holds an IPv6 address, nor the
//! reverse (an IPv4-mapped IPv6 peer is compared as IPv4).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A range of addresses: a network address and its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(ip).into(), self.prefix, 32) == u32::from(net).into()
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(ip), self.prefix, 128) == u128::from(net)
            }
            _ => false,
        }
    }

    /// Parses a comma-separated list (empty: none); the error names the
    /// item that is not a range.
    pub fn parse_list(text: &str) -> Result<Vec<Cidr>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse()
                    .map_err(|()| format!("{item:?} is not ADDR or ADDR/LEN"))
            })
            .collect()
    }
}

/// `bits` (an address `width` bits wide) with all but its first `prefix`
/// bits cleared.
fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
    let host_bits = u32::from(width - prefix);
    let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
    bits & mask & (u128::MAX >> (128 - u32::from(width)))
}

impl FromStr for Cidr {
    type Err = ();

    /// `ADDR/LEN` or `ADDR`; host bits set after the prefix are an error
    /// (`10.0.0.1/8` is most likely a typo).
    fn from_str(text: &str) -> Result<Cidr, ()> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, len)) if len.bytes().all(|b| b.is_ascii_digit()) => {
                (addr, len.parse::<u8>().map_err(|_| ())?)
            }
            Some(_) => return Err(()),
            None => (text, u8::MAX),
        };
        let network: IpAddr = addr.parse().map_err(|_| ())?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix == u8::MAX { width } else { prefix };
        if prefix > width {
            return Err(());
        }
        let bits = match network {
            IpAddr::V4(ip) => u128::from(u32::from(ip)),
            IpAddr::V6(ip) => u128::from(ip),
        };
        if masked(bits, prefix, width) != bits {
            return Err(());
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_hold_their_addresses_only() {
        let cases = [
            ("127.0.0.0/8", "127.1.2.3", true),
            ("127.0.0.0/8", "128.0.0.1", false),
            ("10.1.2.3", "10.1.2.3", true),
            ("10.1.2.3", "10.1.2.4", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("192.0.2.0/24", "::ffff:192.0.2.7", true),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("::1", "::1", true),
            ("::/0", "::2", true),
            ("::/0", "127.0.0.1", false),
        ];
        for (range, addr, inside) in cases {
            let cidr: Cidr = range.parse().unwrap();
            assert_eq!(cidr.contains(ip(addr)), inside, "{range} {addr}");
        }
    }

    #[test]
    fn bad_ranges_are_refused() {
        for text in [
            "",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "::/129",
            "host/8",
            "10.0.0.0/",
            "1.2.3.4/+8",
        ] {
            assert!(text.parse::<Cidr>().is_err(), "{text}");
        }
    }

    #[test]
    fn lists_parse_and_name_the_bad_item() {
        let list = Cidr::parse_list("127.0.0.0/8, ::1").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].to_string(), "::1/128");
        assert!(Cidr::parse_list("").unwrap().is_empty());
        let err = Cidr::parse_list("127.0.0.1,nope").unwrap_err();
        assert!(err.contains("\"nope\""), "{err}");
    }
}
