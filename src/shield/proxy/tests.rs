//! Every header form, whole, followed by SMTP, and cut at every octet.

use super::*;

const SIG: &[u8] = V2_SIGNATURE;

/// A v2 header: command, family, then the body.
fn v2_header(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut header = SIG.to_vec();
    header.push(0x20 | command);
    header.push(family);
    header.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    header.extend_from_slice(body);
    header
}

fn ipv4_body(tlvs: &[u8]) -> Vec<u8> {
    let mut body = vec![192, 0, 2, 7, 10, 0, 0, 1];
    body.extend_from_slice(&40000u16.to_be_bytes());
    body.extend_from_slice(&25u16.to_be_bytes());
    body.extend_from_slice(tlvs);
    body
}

fn ipv6_body(tlvs: &[u8]) -> Vec<u8> {
    let mut body = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets().to_vec();
    body.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    body.extend_from_slice(&40000u16.to_be_bytes());
    body.extend_from_slice(&25u16.to_be_bytes());
    body.extend_from_slice(tlvs);
    body
}

/// Two TLVs: an ALPN (0x01) and a NOOP (0x04) of no value.
const TLVS: &[u8] = &[0x01, 0x00, 0x04, b's', b'm', b't', b'p', 0x04, 0x00, 0x00];

fn addr(text: &str) -> Option<SocketAddr> {
    Some(text.parse().unwrap())
}

/// Valid headers and the source each names.
fn valid() -> Vec<(Vec<u8>, Option<SocketAddr>)> {
    vec![
        (
            b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 25\r\n".to_vec(),
            addr("192.0.2.7:40000"),
        ),
        (
            b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n".to_vec(),
            addr("[2001:db8::7]:40000"),
        ),
        (
            b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 0\r\n".to_vec(),
            addr("255.255.255.255:65535"),
        ),
        (b"PROXY UNKNOWN\r\n".to_vec(), None),
        (
            b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n".to_vec(),
            None,
        ),
        (v2_header(1, 0x11, &ipv4_body(&[])), addr("192.0.2.7:40000")),
        (
            v2_header(1, 0x11, &ipv4_body(TLVS)),
            addr("192.0.2.7:40000"),
        ),
        (
            v2_header(1, 0x21, &ipv6_body(&[])),
            addr("[2001:db8::7]:40000"),
        ),
        (
            v2_header(1, 0x21, &ipv6_body(TLVS)),
            addr("[2001:db8::7]:40000"),
        ),
        (v2_header(0, 0x00, &[]), None),
        // LOCAL ignores whatever family and body it carries.
        (v2_header(0, 0x11, &ipv4_body(TLVS)), None),
        (v2_header(1, 0x00, TLVS), None),
        (v2_header(1, 0x31, &[0; 216]), None),
    ]
}

#[test]
fn valid_headers_name_their_source_and_stop_at_their_end() {
    for (header, source) in valid() {
        let mut input = header.clone();
        input.extend_from_slice(b"EHLO client.example\r\n");
        let consumed = header.len();
        assert_eq!(
            parse(&input),
            Parse::Done { consumed, source },
            "{header:?}"
        );
        for cut in 0..header.len() {
            assert_eq!(
                parse(&header[..cut]),
                Parse::Partial,
                "{header:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn invalid_headers_are_refused_whole_and_never_accepted_in_part() {
    let long_v1 = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX));
    let cases: Vec<(Vec<u8>, Flaw)> = vec![
        (b"EHLO client.example\r\n".to_vec(), Flaw::NoHeader),
        (b"PROXY\r\n".to_vec(), Flaw::NoHeader),
        (
            b"PROXY TCP4 192.0.2.7 10.0.0.1 40000\r\n".to_vec(),
            Flaw::V1Malformed,
        ),
        (
            b"PROXY TCP4 2001:db8::7 10.0.0.1 40000 25\r\n".to_vec(),
            Flaw::V1Malformed,
        ),
        (
            b"PROXY TCP6 192.0.2.7 2001:db8::1 40000 25\r\n".to_vec(),
            Flaw::V1Malformed,
        ),
        (
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 25\r\n".to_vec(),
            Flaw::V1Malformed,
        ),
        (
            b"PROXY TCP4 192.0.2.7 10.0.0.1 040000 25\r\n".to_vec(),
            Flaw::V1Malformed,
        ),
        (
            b"PROXY TCP4 192.0.2.7  10.0.0.1 40000 25\r\n".to_vec(),
            Flaw::V1Malformed,
        ),
        (
            b"PROXY UDP4 192.0.2.7 10.0.0.1 40000 25\r\n".to_vec(),
            Flaw::V1Malformed,
        ),
        (
            b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 25\n".to_vec(),
            Flaw::V1NoCr,
        ),
        // Found by the fuzzer: whole, it was taken for a header; cut
        // between the two line ends, it was refused.
        (b"PROXY UNKNOWN a\nb\r\n".to_vec(), Flaw::V1NoCr),
        (
            b"PROXY TCP4 \xff 10.0.0.1 40000 25\r\n".to_vec(),
            Flaw::V1NotText,
        ),
        (long_v1.into_bytes(), Flaw::V1TooLong),
        (v2_header(2, 0x11, &ipv4_body(&[])), Flaw::V2Command),
        (v2_header(1, 0x41, &ipv4_body(&[])), Flaw::V2Family),
        (v2_header(1, 0x12, &ipv4_body(&[])), Flaw::V2Datagram),
        (v2_header(1, 0x11, &ipv4_body(&[])[..11]), Flaw::V2Short),
        (v2_header(1, 0x21, &ipv4_body(&[])), Flaw::V2Short),
        (
            v2_header(1, 0x11, &ipv4_body(&[0x04, 0x00])),
            Flaw::V2TlvTruncated,
        ),
        (
            v2_header(1, 0x11, &ipv4_body(&[0x04, 0x00, 0x02, 0x00])),
            Flaw::V2TlvOverrun,
        ),
        (
            v2_header(1, 0x11, &vec![0; V2_MAX_BODY + 1]),
            Flaw::V2TooLong,
        ),
    ];
    let mut wrong_version = v2_header(1, 0x11, &ipv4_body(&[]));
    wrong_version[12] = 0x11;
    let cases = cases.into_iter().chain([(wrong_version, Flaw::V2Version)]);
    for (input, reason) in cases {
        assert_eq!(parse(&input), Parse::Invalid(reason), "{input:?}");
        for cut in 0..input.len() {
            let part = parse(&input[..cut]);
            assert!(
                matches!(part, Parse::Partial | Parse::Invalid(_)),
                "{input:?} cut at {cut}: {part:?}"
            );
        }
    }
}

#[test]
fn a_header_may_not_grow_without_bound() {
    let endless = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat();
    assert!(matches!(parse(&endless), Parse::Invalid(_)));
    let mut v2_max = v2_header(1, 0x11, &ipv4_body(&[]));
    v2_max[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    assert_eq!(parse(&v2_max), Parse::Invalid(Flaw::V2TooLong));
}

#[test]
fn sniffing_tells_headers_from_smtp() {
    assert_eq!(sniff(b"PROXY TCP4"), Sniff::Header);
    assert_eq!(sniff(b"PROXY "), Sniff::Header);
    assert_eq!(sniff(SIG), Sniff::Header);
    assert_eq!(sniff(b""), Sniff::Unsure);
    assert_eq!(sniff(b"PROX"), Sniff::Unsure);
    assert_eq!(sniff(b"\r\n\r\n"), Sniff::Unsure);
    assert_eq!(sniff(b"EHLO x\r\n"), Sniff::Other);
    assert_eq!(sniff(b"PROXYX"), Sniff::Other);
    assert_eq!(sniff(b"\r\nQUIT\r\n"), Sniff::Other);
}
