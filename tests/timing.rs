//! The shield's time rules over loopback, on each backend, with timeouts
//! of a second or two: `--greet-delay` withholds the 220 and refuses a
//! client that talks first (behind a balancer, counted from the PROXY
//! header); without it, commands pipelined before the greeting are
//! answered; a command line trickled an octet at a time is cut off at
//! the command timeout although octets keep coming; a body below
//! `--min-data-rate` is cut off with 421 and nothing spooled, while a slow
//! body above it is accepted. Each refusal is counted in `/metrics` and
//! logged as a `reject:` line naming its rule.

mod support;

use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
use std::io::Write;
use std::time::{Duration, Instant};

use mxgate::config::Backend;

use support::{wait_until, BinServer, Client, TestServer};

const EARLY: &str = "554 5.5.1 mx.test Error: talking before the greeting";
const TIMEOUT: &str = "421 4.4.2 mx.test Error: timeout exceeded";

/// Sends `octets` one at a time, `every` apart, until the server says
/// something; returns its reply and how long after the first octet it
/// came. Panics if all were sent and no reply came.
fn trickle(c: &mut Client, octets: &[u8], every: Duration) -> (String, Duration) {
    let start = Instant::now();
    c.stream().set_read_timeout(Some(every)).unwrap();
    let mut peeked = [0u8; 1];
    for octet in octets {
        if c.stream().write_all(&[*octet]).is_err() {
            break; // closed under us: the reply is waiting
        }
        match c.stream().peek(&mut peeked) {
            Ok(_) => break,
            Err(e) if matches!(e.kind(), WouldBlock | TimedOut | Interrupted) => {}
            Err(e) => panic!("peek: {e}"),
        }
    }
    let took = start.elapsed();
    c.stream()
        .set_read_timeout(Some(support::READ_TIMEOUT))
        .unwrap();
    let reply = c.try_reply().expect("a reply before all octets were sent");
    (reply.last().to_string(), took)
}

/// Waits until `/metrics` counts `n` refusals under `rule`.
fn counted(server: &TestServer, rule: &str, n: f64) -> bool {
    let name = format!("mxgate_time_refusals_total{{reason=\"{rule}\"}}");
    wait_until(Duration::from_secs(10), || {
        server.scrape().get(&name) == Some(&n)
    })
}

/// Trickles `octets` five a second into `c`, whose timeout is 2 s: it must
/// be cut off with 421 in about that time (the timer wheel ticks each
/// second), closed, and counted under `rule`.
fn cut_off_after_two_seconds(server: &TestServer, c: &mut Client, octets: &[u8], rule: &str) {
    let (reply, took) = trickle(c, octets, Duration::from_millis(200));
    assert_eq!(reply, TIMEOUT);
    assert!(took >= Duration::from_secs(2), "cut off after {took:?}");
    assert!(took < Duration::from_millis(4500), "cut off after {took:?}");
    assert!(c.closed());
    assert!(counted(server, rule, 1.0));
}

fn a_greet_delay_withholds_the_220_and_refuses_early_talkers(backend: Backend) {
    let flags = ["--greet-delay", "1500", "--metrics", "127.0.0.1:0"];
    let server = TestServer::start(backend, &flags);
    let start = Instant::now();
    let mut patient = server.client();
    let mut talker = server.client();
    talker.send(b"EHLO spam.example\r\n");
    assert_eq!(talker.expect(554), EARLY);
    assert!(talker.closed());
    patient.expect(220);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "greeted after {waited:?}"
    );
    patient.cmd("EHLO client.example", 250);
    patient.cmd("QUIT", 221);
    assert!(counted(&server, "early-talker", 1.0));
    server.stop();
}

fn behind_a_balancer_the_delay_counts_from_the_header(backend: Backend) {
    let flags = [
        "--greet-delay",
        "1000",
        "--proxy-protocol-from",
        "127.0.0.1",
    ];
    let server = TestServer::start(backend, &flags);
    let header = b"PROXY TCP4 192.0.2.1 192.0.2.2 40000 25\r\n";
    let mut c = server.client();
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Instant::now();
    c.send(header);
    c.expect(220);
    let waited = sent.elapsed();
    assert!(waited >= Duration::from_secs(1), "greeted {waited:?} after");
    c.cmd("QUIT", 221);
    // Talking right behind the header is talking first.
    let mut talker = server.client();
    talker.send(&[&header[..], b"EHLO spam.example\r\n"].concat());
    assert_eq!(talker.expect(554), EARLY);
    assert!(talker.closed());
    server.stop();
}

fn without_a_delay_commands_pipelined_before_the_greeting_are_answered(backend: Backend) {
    let server = TestServer::start(backend, &[]);
    let mut c = server.client();
    c.send(b"EHLO early.example\r\nMAIL FROM:<s@remote.example>\r\n");
    c.send(b"RCPT TO:<alice@example.com>\r\nQUIT\r\n");
    for code in [220, 250, 250, 250, 221] {
        c.expect(code);
    }
    assert!(c.closed());
    server.stop();
}

fn a_trickled_command_is_cut_off_at_the_command_timeout(backend: Backend) {
    let flags = ["--command-timeout", "2", "--metrics", "127.0.0.1:0"];
    let server = TestServer::start(backend, &flags);
    let mut c = server.client();
    c.expect(220);
    // Ten seconds' worth of octets, never a line end.
    let octets = [b"EHLO ".as_slice(), &[b'a'; 45]].concat();
    cut_off_after_two_seconds(&server, &mut c, &octets, "command-timeout");
    server.stop();
}

fn a_body_below_the_rate_is_cut_off_and_nothing_spooled(backend: Backend) {
    let flags = ["--data-timeout", "2", "--metrics", "127.0.0.1:0"];
    let server = TestServer::start(backend, &flags);
    let mut c = server.client();
    c.hello();
    c.open_data("alice@example.com");
    // Five octets a second against the default 500: ten seconds' worth.
    let body = [b"Subject: drip\r\n\r\n".as_slice(), &[b'a'; 33]].concat();
    cut_off_after_two_seconds(&server, &mut c, &body, "data-rate");
    assert!(server.spooled().is_empty(), "nothing spooled");
    server.stop();
}

fn a_slow_body_above_the_rate_is_accepted(backend: Backend) {
    let flags = ["--data-timeout", "2", "--min-data-rate", "500"];
    let server = TestServer::start(backend, &flags);
    let mut c = server.client();
    c.hello();
    c.open_data("alice@example.com");
    c.send(b"Subject: slow\r\n\r\n");
    // 500 octets every 400 ms (1,250/s) for three data timeouts.
    let mut line = [b'a'; 500];
    line[498..].copy_from_slice(b"\r\n");
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(400));
        c.send(&line);
    }
    c.send(b".\r\n");
    support::queue_id(&c.expect(250));
    c.cmd("QUIT", 221);
    assert_eq!(server.spooled().len(), 1);
    server.stop();
}

/// The real binary logs one `reject:` line per refusal, naming the rule.
fn each_refusal_is_logged_with_its_rule(backend: Backend) {
    let flags = [
        "--greet-delay",
        "1000",
        "--command-timeout",
        "1",
        "--data-timeout",
        "1",
    ];
    let mut server = BinServer::start(tempfile::tempdir().unwrap(), backend, &flags);
    let mut talker = server.client();
    talker.send(b"EHLO spam.example\r\n");
    talker.expect(554);
    let mut idle = server.client();
    idle.expect(220);
    assert_eq!(idle.expect(421), TIMEOUT);
    let mut slow = server.client();
    slow.expect(220);
    slow.send(b"EHLO client.example\r\nMAIL FROM:<s@remote.example>\r\n");
    slow.send(b"RCPT TO:<alice@example.com>\r\nDATA\r\n");
    for code in [250, 250, 250, 354] {
        slow.expect(code);
    }
    let (reply, _) = trickle(&mut slow, &[b'a'; 30], Duration::from_millis(200));
    assert_eq!(reply, TIMEOUT);
    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status, Some(0), "{log}");
    let lines = [
        format!("reject: CONNECT from [127.0.0.1]: {EARLY}; rule=early-talker"),
        format!("reject: TIMEOUT from [127.0.0.1]: {TIMEOUT}; rule=command-timeout"),
        format!("reject: TIMEOUT from [127.0.0.1]: {TIMEOUT}; rule=data-rate"),
    ];
    for line in lines {
        assert_eq!(log.matches(&line).count(), 1, "no {line:?} in:\n{log}");
    }
}

support::backend_tests!(
    a_greet_delay_withholds_the_220_and_refuses_early_talkers,
    behind_a_balancer_the_delay_counts_from_the_header,
    without_a_delay_commands_pipelined_before_the_greeting_are_answered,
    a_trickled_command_is_cut_off_at_the_command_timeout,
    a_body_below_the_rate_is_cut_off_and_nothing_spooled,
    a_slow_body_above_the_rate_is_accepted,
    each_refusal_is_logged_with_its_rule,
);
