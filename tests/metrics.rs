//! `--metrics`: an in-process server with the endpoint on, a few
//! transactions (a rejected recipient of every kind, a refused message),
//! then `/metrics` scraped over HTTP with a plain `TcpStream`, parsed, and
//! its counts checked.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use mxgate::config::Backend;

use support::{queue_id, wait_until, Client, TestServer, READ_TIMEOUT};

/// One HTTP/1.1 exchange: the status line and the body.
fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    )
}

/// Sends `request` as is; returns the status line and the body.
fn http(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.write_all(request).expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head");
    let status = head.lines().next().unwrap_or_default().to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(body.len(), length, "the body is as long as announced");
    (status, body.to_string())
}

/// Samples by name with labels (`mxgate_x{a="b"}`), comments skipped.
fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("name value");
            (name.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

fn get(samples: &HashMap<String, f64>, name: &str) -> f64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("no sample {name}"))
}

/// Session 1: one accepted recipient and one of each kind refused, then a
/// message. Session 2: a message. Session 3: a message with a bare LF.
fn run_transactions(server: &TestServer) {
    let mut c = server.client();
    c.hello();
    let rcpts = [
        ("<alice@example.com>", 250),
        ("<nobody@example.com>", 550),
        ("<someone@elsewhere.example>", 554),
        ("<broken", 501),
    ];
    queue_id(c.transaction(&rcpts, "one").last());
    c.cmd("QUIT", 221);

    let mut c = server.client();
    c.hello();
    c.open_data("bob@example.com");
    c.send(b"Subject: two\r\n\r\nhi\r\n.\r\n");
    queue_id(&c.expect(250));
    c.cmd("QUIT", 221);

    let mut c = server.client();
    c.hello();
    c.open_data("alice@example.com");
    c.send(b"Subject: three\r\n\r\nbare\nLF\r\n.\r\n");
    c.expect(550);
    c.cmd("QUIT", 221);
}

fn counts_after_a_few_transactions(backend: Backend) {
    let server = TestServer::start(backend, &["--metrics", "127.0.0.1:0"]);
    let handle = server.handle.as_ref().expect("running");
    let addr = handle.metrics_addr().expect("metrics on");
    run_transactions(&server);
    // Counts land before each reply is sent; only the session ends may
    // still be on their way once the client has read 221.
    let closed = "mxgate_sessions_ended_total{outcome=\"closed\"}";
    let mut samples = scrape(addr);
    wait_until(Duration::from_secs(10), || {
        samples = scrape(addr);
        samples.get(closed) == Some(&3.0)
    });
    assert_eq!(get(&samples, closed), 3.0);
    assert_eq!(get(&samples, "mxgate_workers_scraped"), 2.0);
    assert_eq!(get(&samples, "mxgate_sessions_total"), 3.0);
    assert_eq!(get(&samples, "mxgate_sessions_open"), 0.0);
    assert_eq!(get(&samples, "mxgate_recipients_accepted_total"), 3.0);
    for (reason, n) in [
        ("unknown_user", 1.0),
        ("relay_denied", 1.0),
        ("syntax", 1.0),
        ("too_many", 0.0),
    ] {
        let name = format!("mxgate_recipients_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(get(&samples, &name), n, "{name}");
    }
    assert_eq!(get(&samples, "mxgate_messages_spooled_total"), 2.0);
    assert_eq!(get(&samples, "mxgate_spool_depth_messages"), 2.0);
    let bytes: u64 = server
        .spooled()
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert_eq!(get(&samples, "mxgate_spool_depth_bytes"), bytes as f64);
    assert_eq!(get(&samples, "mxgate_spool_failures_total"), 0.0);
    let bare = "mxgate_messages_refused_total{reason=\"bare_cr_lf\"}";
    assert_eq!(get(&samples, bare), 1.0);
    assert_eq!(get(&samples, "mxgate_commands_total{verb=\"rcpt\"}"), 6.0);
    assert_eq!(get(&samples, "mxgate_commands_total{verb=\"quit\"}"), 3.0);
    let rcpt = "mxgate_command_duration_seconds_count{verb=\"rcpt\"}";
    assert_eq!(get(&samples, rcpt), 6.0);
    // Two spooled, one refused: three ends of data answered.
    let data = "mxgate_command_duration_seconds_count{verb=\"data\"}";
    assert_eq!(get(&samples, data), 3.0);
    assert_eq!(get(&samples, "mxgate_spool_commit_seconds_count"), 2.0);
    assert_eq!(get(&samples, "mxgate_session_duration_seconds_count"), 3.0);
    assert!(get(&samples, "mxgate_received_bytes_total") > 200.0);
    let p999 = "mxgate_command_duration_seconds{verb=\"rcpt\",quantile=\"0.999\"}";
    assert!(get(&samples, p999) > 0.0);
    server.stop();
}

/// Connections refused by a per-client limit, by the limit they were over.
fn client_refusals_are_counted_by_reason(backend: Backend) {
    let flags = [
        "--metrics",
        "127.0.0.1:0",
        "--client-sessions",
        "1",
        "--client-rate",
        "2",
        "--client-limit-exceptions",
        "",
    ];
    let server = TestServer::start(backend, &flags);
    let addr = server.handle.as_ref().unwrap().metrics_addr().unwrap();
    let client = "127.0.0.2".parse().unwrap();
    let mut first = Client::connect_from(server.addr, client);
    first.expect(220);
    Client::connect_from(server.addr, client).expect(421);
    first.cmd("QUIT", 221);
    assert!(first.closed());
    let mut second = support::greeted_soon(|| Client::connect_from(server.addr, client))
        .expect("the first session's place is back");
    second.cmd("QUIT", 221);
    assert!(second.closed());
    Client::connect_from(server.addr, client).expect(421);
    let samples = scrape(addr);
    let refusals = |reason: &str| {
        let name = format!("mxgate_client_refusals_total{{reason=\"{reason}\"}}");
        get(&samples, &name)
    };
    assert_eq!(refusals("sessions"), 1.0);
    assert_eq!(refusals("rate"), 1.0);
    assert_eq!(get(&samples, "mxgate_over_capacity_total"), 0.0);
    server.stop();
}

/// Every refusal of the PROXY shield, counted by its outcome or limit:
/// a header from a peer not trusted for one, a balancer's bad header and
/// its missing one, and a proxied client over its session limit; the
/// balancer's own health check (LOCAL) is none of them.
fn proxy_refusals_are_counted_by_outcome(backend: Backend) {
    let flags = [
        "--metrics",
        "127.0.0.1:0",
        "--proxy-protocol-from",
        "127.0.0.1",
        "--command-timeout",
        "1",
        "--client-sessions",
        "1",
        "--client-limit-exceptions",
        "",
    ];
    let server = TestServer::start(backend, &flags);
    let addr = server.handle.as_ref().unwrap().metrics_addr().unwrap();
    let header = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n";

    let mut untrusted = Client::connect_from(server.addr, "127.0.0.2".parse().unwrap());
    untrusted.expect(220);
    untrusted.send(header);
    untrusted.expect(500);
    assert!(untrusted.closed(), "open after the 500");
    let mut invalid = server.client();
    invalid.send(b"EHLO client.example\r\n");
    assert!(invalid.closed(), "a bad header was answered");
    let mut check = server.client();
    check.send(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00");
    check.hello();
    let mut first = server.client();
    first.send(header);
    first.hello();
    let mut over = server.client();
    over.send(header);
    over.expect(421);
    assert!(over.closed(), "open after the 421");
    check.cmd("QUIT", 221);
    first.cmd("QUIT", 221);
    // No header within the command timeout (1 s).
    assert!(server.client().closed(), "a missing header was answered");

    let ended = |outcome: &str| format!("mxgate_sessions_ended_total{{outcome=\"{outcome}\"}}");
    let refused = |reason: &str| format!("mxgate_client_refusals_total{{reason=\"{reason}\"}}");
    let mut samples = HashMap::new();
    let counted = wait_until(Duration::from_secs(5), || {
        samples = scrape(addr);
        get(&samples, &ended("closed")) >= 3.0
    });
    assert!(counted, "{samples:?}");
    for outcome in ["proxy-untrusted", "proxy-invalid", "proxy-missing"] {
        assert_eq!(get(&samples, &ended(outcome)), 1.0, "{outcome}");
    }
    assert_eq!(get(&samples, &refused("sessions")), 1.0);
    assert_eq!(get(&samples, &refused("rate")), 0.0);
    server.stop();
}

/// The error tarpit: a late command, a refusal at the next command and
/// one at connect.
fn tarpit_delays_and_refusals_are_counted(backend: Backend) {
    let flags = [
        "--metrics",
        "127.0.0.1:0",
        "--error-limits",
        "1,2",
        "--client-limit-exceptions",
        "",
    ];
    let server = TestServer::start(backend, &flags);
    let addr = server.handle.as_ref().unwrap().metrics_addr().unwrap();
    let client = "127.0.0.2".parse().unwrap();
    let mut c = Client::connect_from(server.addr, client);
    c.hello();
    c.cmd("MAIL FROM:<s@remote.example>", 250);
    c.cmd("RCPT TO:<nobody@example.com>", 550);
    c.cmd("RCPT TO:<nobody2@example.com>", 550);
    c.cmd("NOOP", 421);
    assert!(c.closed());
    Client::connect_from(server.addr, client).expect(421);
    let samples = scrape(addr);
    let name = "mxgate_client_refusals_total{reason=\"too-many-errors\"}";
    assert_eq!(get(&samples, name), 2.0);
    assert_eq!(get(&samples, "mxgate_tarpit_delays_total"), 1.0);
    server.stop();
}

fn bad_requests_are_refused_and_the_endpoint_stops_with_the_server(backend: Backend) {
    let server = TestServer::start(backend, &["--metrics", "127.0.0.1:0"]);
    let addr = server.handle.as_ref().unwrap().metrics_addr().unwrap();
    let (status, _) = http_get(addr, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, body) = http_get(addr, "/metrics?x=1");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("# TYPE mxgate_sessions_total counter\n"));
    let (status, _) = http(addr, b"POST /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    let mut endless = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    endless.resize(16 << 10, b'a');
    let (status, _) = http(addr, &endless);
    assert_eq!(status, "HTTP/1.1 400 Bad Request", "a head over the limit");
    server.stop();
    assert!(TcpStream::connect(addr).is_err(), "the endpoint closed");
}

fn metrics_are_off_by_default(backend: Backend) {
    let server = TestServer::start(backend, &[]);
    assert_eq!(server.handle.as_ref().unwrap().metrics_addr(), None);
    server.stop();
}

support::backend_tests!(
    counts_after_a_few_transactions,
    client_refusals_are_counted_by_reason,
    proxy_refusals_are_counted_by_outcome,
    tarpit_delays_and_refusals_are_counted,
    bad_requests_are_refused_and_the_endpoint_stops_with_the_server,
    metrics_are_off_by_default,
);
