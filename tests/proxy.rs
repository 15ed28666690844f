//! The PROXY protocol over loopback, on each backend, through the real
//! binary: a balancer at 127.0.0.1 (in `--proxy-protocol-from`) opens with
//! a v1 or v2 header; the header's address is the client's in the
//! Received line and the logs; a LOCAL header is served as the balancer;
//! a bad header, or none, closes with no reply; a header from a peer not
//! in the list gets 500; the per-client limits count the header's client,
//! never the balancer.

mod support;

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use mxgate::config::Backend;

use support::{queue_id, BinServer, Client};

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header: PROXY over TCP from `[src]:40000` to `[2001:db8::1]:25`,
/// with a NOOP TLV to skip.
fn v2_ipv6(src: &str) -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x21, 0x21, 0, 36 + 4]);
    header.extend_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
    header.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    header.extend_from_slice(&[0x9c, 0x40, 0, 25]);
    header.extend_from_slice(&[0x04, 0, 1, 0]);
    header
}

/// A v2 LOCAL header (a balancer's health check).
fn v2_local() -> Vec<u8> {
    [V2_SIGNATURE, &[0x20, 0x00, 0, 0]].concat()
}

/// Sends a message on a greeted, EHLO'd client; returns its queue id.
fn send_message(c: &mut Client) -> String {
    c.open_data("alice@example.com");
    c.send(b"Subject: proxied\r\n\r\nbody\r\n.\r\n");
    let id = queue_id(&c.expect(250));
    c.cmd("QUIT", 221);
    id
}

/// The Received line of spooled message `id`.
fn received(server: &BinServer, id: &str) -> String {
    let path = server.path().join("spool/new").join(format!("{id}.bsmtp"));
    let text = std::fs::read_to_string(path).expect("spooled");
    let line = text.lines().find(|l| l.starts_with("Received: "));
    line.expect("a Received line").to_string()
}

fn balancer_headers_name_the_client(backend: Backend) {
    let flags = [
        "--proxy-protocol-from",
        "127.0.0.1",
        "--command-timeout",
        "2",
    ];
    let mut server = BinServer::start(tempfile::tempdir().unwrap(), backend, &flags);

    // v1, IPv4: nothing is said before the header.
    let mut c = server.client();
    c.stream()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut probe = [0u8; 1];
    let early = std::io::Read::read(&mut c.stream(), &mut probe);
    assert!(early.is_err(), "greeted before the header: {early:?}");
    c.stream()
        .set_read_timeout(Some(support::READ_TIMEOUT))
        .unwrap();
    c.send(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n");
    c.hello();
    let v1_id = send_message(&mut c);

    // v2, IPv6, with a TLV, and EHLO pipelined behind the header.
    let mut c = server.client();
    c.send(&[v2_ipv6("2001:db8::7"), b"EHLO client.example\r\n".to_vec()].concat());
    c.expect(220);
    c.expect(250);
    let v2_id = send_message(&mut c);

    // LOCAL: the balancer itself.
    let mut c = server.client();
    c.send(&v2_local());
    c.expect(220);
    c.cmd("NOOP", 250);
    c.cmd("QUIT", 221);

    // SMTP where the header should be: closed, not answered.
    let mut c = server.client();
    c.send(b"EHLO client.example\r\n");
    assert!(c.closed(), "a bad header was answered");

    // No header at all: closed, not answered, after the command timeout.
    let started = Instant::now();
    let mut c = server.client();
    assert!(c.closed(), "a missing header was answered");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed early"
    );

    assert!(received(&server, &v1_id).contains("from client.example (192.0.2.7) by mx.test"));
    assert!(received(&server, &v2_id).contains("from client.example (2001:db8::7) by mx.test"));
    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status, Some(0), "{log}");
    let ends: Vec<&str> = log.lines().filter(|l| l.contains("session end")).collect();
    let ended = |client: &str, outcome: &str| {
        let client = format!("client={client} ");
        let outcome = format!("outcome=\"{outcome}\"");
        ends.iter()
            .any(|l| l.contains(&client) && l.contains(&outcome))
    };
    assert!(ended("192.0.2.7", "closed"), "{log}");
    assert!(ended("2001:db8::7", "closed"), "{log}");
    assert!(ended("127.0.0.1", "closed"), "LOCAL: {log}");
    assert!(ended("127.0.0.1", "proxy-missing"), "{log}");
    let invalid = ends
        .iter()
        .find(|l| l.contains("outcome=\"proxy-invalid\""));
    assert!(
        invalid.is_some_and(|l| l.contains("reason=no PROXY header")),
        "{log}"
    );
    let from = "from [192.0.2.7] helo=<client.example>";
    assert!(log.contains(&format!("queued as {v1_id}: {from}")), "{log}");
}

fn a_header_from_anyone_else_gets_500(backend: Backend) {
    let flags = ["--proxy-protocol-from", "10.0.0.0/8"];
    let mut server = BinServer::start(tempfile::tempdir().unwrap(), backend, &flags);
    for header in [
        b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n".to_vec(),
        v2_ipv6("2001:db8::7"),
    ] {
        let mut c = server.client();
        c.expect(220);
        c.send(&header);
        let refusal = c.expect(500);
        assert!(
            refusal.starts_with("500 5.5.2 mx.test Error: PROXY header"),
            "{refusal}"
        );
        assert!(c.closed(), "still open after the 500");
    }
    // Others are served as ever.
    let mut c = server.client();
    c.hello();
    c.cmd("QUIT", 221);
    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status, Some(0), "{log}");
    assert_eq!(
        log.matches("outcome=\"proxy-untrusted\"").count(),
        2,
        "{log}"
    );
}

/// The per-client limits apply to the client a header names, never to the
/// balancer: two clients behind it each get their one session, a second
/// session of the first gets the 421 naming it, and one more session of
/// the second (once its first is gone) gets in. The balancer's own
/// health checks (LOCAL), two at once, are both served.
fn limits_apply_to_the_proxied_client(backend: Backend) {
    let flags = [
        "--proxy-protocol-from",
        "127.0.0.1",
        "--client-sessions",
        "1",
        "--client-limit-exceptions",
        "",
    ];
    let mut server = BinServer::start(tempfile::tempdir().unwrap(), backend, &flags);
    let header = |client: &str| format!("PROXY TCP4 {client} 127.0.0.1 40000 25\r\n");

    let mut first = server.client();
    first.send(header("192.0.2.7").as_bytes());
    first.hello();
    let mut other = server.client();
    other.send(header("192.0.2.8").as_bytes());
    other.hello();

    let checks: Vec<Client> = (0..2)
        .map(|_| {
            let mut check = server.client();
            check.send(&v2_local());
            check.hello();
            check
        })
        .collect();

    let mut second = server.client();
    second.send(header("192.0.2.7").as_bytes());
    let refusal = second.expect(421);
    assert_eq!(
        refusal,
        "421 4.7.0 mx.test Error: too many connections from 192.0.2.7"
    );
    assert!(second.closed(), "still open after the 421");

    other.cmd("QUIT", 221);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut again = loop {
        let mut c = server.client();
        c.send(header("192.0.2.8").as_bytes());
        if c.reply().code == 220 {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "192.0.2.8's place never came back"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    again.cmd("EHLO client.example", 250);
    again.cmd("QUIT", 221);
    first.cmd("QUIT", 221);
    for mut check in checks {
        check.cmd("QUIT", 221);
    }
    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status, Some(0), "{log}");
    assert!(
        log.contains("reject: CONNECT from [192.0.2.7]: 421 4.7.0"),
        "{log}"
    );
    assert!(!log.contains("from [127.0.0.1]"), "{log}");
}

support::backend_tests!(
    balancer_headers_name_the_client,
    a_header_from_anyone_else_gets_500,
    limits_apply_to_the_proxied_client
);
