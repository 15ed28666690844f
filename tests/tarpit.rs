//! The error tarpit (`--error-limits SOFT,HARD`), on each backend: from
//! SOFT unforgiven errors on, each command of the client is answered at
//! least a second late (pipelined ones too, in order); at HARD the client
//! gets `421 4.7.0 … too many errors` and the connection closes, and a
//! new session from it is refused at connect until an error is forgiven;
//! the count carries across its sessions; loopback, exempt by default,
//! is never slowed. Clients are 127.0.0.2 and 127.0.0.3 over loopback,
//! with no exceptions unless the test says so.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use mxgate::config::Backend;

use support::{BinServer, Client, TestServer};

const ALICE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const BOB: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// Looser than the tarpit's 1 s: a late reply takes at least this long.
const LATE: Duration = Duration::from_millis(900);
const TOO_MANY: &str = "421 4.7.0 mx.test Error: too many errors";

/// A server with `--error-limits limits` and no client exempt.
fn server(backend: Backend, limits: &str) -> TestServer {
    let flags = ["--error-limits", limits, "--client-limit-exceptions", ""];
    TestServer::start(backend, &flags)
}

fn from(server: &TestServer, client: IpAddr) -> Client {
    Client::connect_from(server.addr, client)
}

/// Sends `line`, checks the reply code; returns how long it took.
fn timed(c: &mut Client, line: &str, code: u16) -> Duration {
    let start = Instant::now();
    c.cmd(line, code);
    start.elapsed()
}

/// An unknown recipient of a local domain: `550 5.1.1`, one error.
fn unknown(i: usize) -> String {
    format!("RCPT TO:<nobody{i}@example.com>")
}

/// A greeted client in a transaction.
fn in_transaction(server: &TestServer, client: IpAddr) -> Client {
    let mut c = from(server, client);
    c.hello();
    c.cmd("MAIL FROM:<s@remote.example>", 250);
    c
}

fn the_eleventh_error_is_answered_a_second_late(backend: Backend) {
    let server = server(backend, "10,20");
    let mut c = in_transaction(&server, ALICE);
    for i in 0..10 {
        let took = timed(&mut c, &unknown(i), 550);
        assert!(took < LATE, "error {} took {took:?}", i + 1);
    }
    assert!(timed(&mut c, &unknown(10), 550) >= LATE, "the 11th");
    // Every command from then on, not only errors.
    assert!(timed(&mut c, "RCPT TO:<alice@example.com>", 250) >= LATE);
    assert!(timed(&mut c, "NOOP", 250) >= LATE);
    // Another client is not slowed.
    let mut bob = in_transaction(&server, BOB);
    assert!(timed(&mut bob, &unknown(0), 550) < LATE);
    // Closed first: a shutdown lets transactions in flight finish.
    drop((c, bob));
    server.stop();
}

fn the_hard_limit_refuses_with_421_and_closes(backend: Backend) {
    let server = server(backend, "2,4");
    let mut c = in_transaction(&server, ALICE);
    for i in 0..4 {
        c.cmd(&unknown(i), 550);
    }
    c.send(b"RCPT TO:<alice@example.com>\r\n");
    assert_eq!(c.expect(421), TOO_MANY);
    assert!(c.closed(), "closed after the 421");
    server.stop();
}

/// Opening a new session does not reset the count: at the hard limit the
/// client is refused at connect too. One error is forgiven every 60/SOFT
/// s: with SOFT 1, a minute, far longer than the test.
fn the_count_carries_to_new_sessions(backend: Backend) {
    let server = server(backend, "1,3");
    let mut c = in_transaction(&server, ALICE);
    for i in 0..3 {
        c.cmd(&unknown(i), 550);
    }
    c.send(b"NOOP\r\n");
    assert_eq!(c.expect(421), TOO_MANY);
    let mut again = from(&server, ALICE);
    assert_eq!(again.expect(421), TOO_MANY, "refused at connect");
    assert!(again.closed());
    let mut bob = from(&server, BOB);
    bob.hello();
    server.stop();
}

/// Once one error is forgiven (SOFT 20: one every 3 s), a client refused
/// at its hard limit is let in again, but slowed.
fn a_refused_client_is_let_in_once_an_error_is_forgiven(backend: Backend) {
    let server = server(backend, "20,21");
    let mut c = in_transaction(&server, ALICE);
    // 21 errors, or more if some were forgiven on the way.
    let refusal = (0..30).find_map(|i| {
        c.send(format!("{}\r\n", unknown(i)).as_bytes());
        let reply = c.reply();
        (reply.code != 550).then(|| reply.last().to_string())
    });
    assert_eq!(refusal.as_deref(), Some(TOO_MANY));
    let mut later = support::greeted_soon(|| from(&server, ALICE)).expect("forgiven within 5 s");
    assert!(timed(&mut later, "EHLO client.example", 250) >= LATE);
    server.stop();
}

fn slowed_from_the_first_command_of_a_new_session(backend: Backend) {
    let server = server(backend, "2,10");
    let mut c = in_transaction(&server, ALICE);
    c.cmd(&unknown(0), 550);
    c.cmd(&unknown(1), 550);
    assert!(timed(&mut c, "QUIT", 221) >= LATE);
    let mut next = from(&server, ALICE);
    next.expect(220);
    assert!(timed(&mut next, "EHLO client.example", 250) >= LATE);
    server.stop();
}

fn pipelined_commands_after_the_soft_limit_are_answered_in_order(backend: Backend) {
    let server = server(backend, "1,10");
    let mut c = in_transaction(&server, ALICE);
    let start = Instant::now();
    c.send(
        b"RCPT TO:<x1@example.com>\r\nRCPT TO:<alice@example.com>\r\n\
          RCPT TO:<x2@example.com>\r\nNOOP\r\nRCPT TO:<x3@example.com>\r\n",
    );
    let expected = [
        "550 5.1.1 <x1@example.com>: Recipient address rejected: User unknown",
        "250 2.1.5 Ok",
        "550 5.1.1 <x2@example.com>: Recipient address rejected: User unknown",
        "250 2.0.0 Ok",
        "550 5.1.1 <x3@example.com>: Recipient address rejected: User unknown",
    ];
    let mut at = Vec::new();
    for line in expected {
        assert_eq!(c.reply().last(), line);
        at.push(start.elapsed());
    }
    assert!(at[0] < LATE, "the first error is not late: {at:?}");
    for pair in at.windows(2) {
        assert!(pair[1] - pair[0] >= LATE, "one a second: {at:?}");
    }
    drop(c);
    server.stop();
}

/// Loopback is exempt by default: errors neither slow it nor close it.
fn exempt_clients_are_untouched(backend: Backend) {
    let server = TestServer::start(backend, &["--error-limits", "1,2"]);
    let mut c = server.client();
    c.hello();
    c.cmd("MAIL FROM:<s@remote.example>", 250);
    let start = Instant::now();
    let pipelined: String = (0..30).map(|i| unknown(i) + "\r\n").collect();
    c.send(pipelined.as_bytes());
    for _ in 0..30 {
        c.expect(550);
    }
    c.cmd("NOOP", 250);
    assert!(start.elapsed() < LATE, "{:?}", start.elapsed());
    // A new session is not refused either.
    let mut next = server.client();
    next.hello();
    drop(c);
    server.stop();
}

/// One mail log line per refusal, with the client's address: at the next
/// command, and at connect.
fn refusals_are_logged(backend: Backend) {
    let flags = ["--error-limits", "1,2", "--client-limit-exceptions", ""];
    let mut server = BinServer::start(tempfile::tempdir().unwrap(), backend, &flags);
    let mut c = Client::connect_from(server.addr, ALICE);
    c.hello();
    c.cmd("MAIL FROM:<s@remote.example>", 250);
    c.cmd(&unknown(0), 550);
    c.cmd(&unknown(1), 550);
    c.send(b"NOOP\r\n");
    assert_eq!(c.expect(421), TOO_MANY);
    assert_eq!(
        Client::connect_from(server.addr, ALICE).expect(421),
        TOO_MANY
    );
    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status, Some(0), "{log}");
    for stage in ["COMMAND", "CONNECT"] {
        let line = format!("reject: {stage} from [127.0.0.2]: {TOO_MANY}; limit=too-many-errors");
        assert_eq!(log.matches(&line).count(), 1, "no {line:?} in:\n{log}");
    }
}

support::backend_tests!(
    the_eleventh_error_is_answered_a_second_late,
    the_hard_limit_refuses_with_421_and_closes,
    the_count_carries_to_new_sessions,
    a_refused_client_is_let_in_once_an_error_is_forgiven,
    slowed_from_the_first_command_of_a_new_session,
    pipelined_commands_after_the_soft_limit_are_answered_in_order,
    exempt_clients_are_untouched,
    refusals_are_logged,
);
