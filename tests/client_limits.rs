//! Per-client limits at connect, on each backend: `--client-sessions` and
//! `--client-rate` refuse a client over them with `421 4.7.0 … too many
//! connections from <ip>` and close; a closed session gives its place back
//! however it ended; other clients and the exceptions are not touched.
//! Clients are told apart by their source address: 127.0.0.2 and
//! 127.0.0.3 are clients of their own over loopback.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use mxgate::config::Backend;

use support::{Client, TestServer};

const ALICE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const BOB: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

fn from(server: &TestServer, client: IpAddr) -> Client {
    Client::connect_from(server.addr, client)
}

/// Checks that `c` got the per-client refusal, then the close.
fn refused(mut c: Client, client: IpAddr) {
    let reply = c.expect(421);
    let expected = format!(
        "421 4.7.0 {} Error: too many connections from {client}",
        support::HOST
    );
    assert_eq!(reply, expected);
    assert!(c.closed(), "closed after the 421");
}

/// A client greeted with 220 once the server has freed a place for it.
fn greeted_soon(server: &TestServer, client: IpAddr) -> Client {
    support::greeted_soon(|| from(server, client)).expect("a place freed within 5 s")
}

fn a_client_over_its_sessions_is_refused_until_one_closes(backend: Backend) {
    let flags = ["--client-sessions", "3", "--client-limit-exceptions", ""];
    let server = TestServer::start(backend, &flags);
    let mut open: Vec<Client> = (0..3).map(|_| from(&server, ALICE)).collect();
    for c in &mut open {
        c.expect(220);
    }
    refused(from(&server, ALICE), ALICE);
    // Another client has places of its own.
    let mut bob = from(&server, BOB);
    bob.hello();
    // The refused ones held no place; a session that ends gives its back.
    open[0].cmd("QUIT", 221);
    assert!(open[0].closed());
    let mut again = greeted_soon(&server, ALICE);
    again.cmd("EHLO client.example", 250);
    refused(from(&server, ALICE), ALICE);
    server.stop();
}

/// Sessions that end every way (QUIT, a hang-up, a reset, a hang-up in
/// the middle of a message, a session refused by the limit itself) leave
/// no count behind: afterwards the client still gets its full share.
fn closed_sessions_never_leak_a_place(backend: Backend) {
    let flags = ["--client-sessions", "2", "--client-limit-exceptions", ""];
    let server = TestServer::start(backend, &flags);
    for round in 0..40 {
        let mut first = greeted_soon(&server, ALICE);
        let mut second = greeted_soon(&server, ALICE);
        refused(from(&server, ALICE), ALICE);
        match round % 4 {
            0 => {
                first.cmd("QUIT", 221);
                second.cmd("QUIT", 221);
            }
            1 => {
                first.cmd("EHLO client.example", 250);
                first.open_data("alice@example.com");
                first.send(b"Subject: cut\r\n\r\nhalf a mess");
            }
            2 => {
                for c in [&first, &second] {
                    let linger = Some(Duration::ZERO);
                    socket2::SockRef::from(c.stream())
                        .set_linger(linger)
                        .unwrap();
                }
            }
            _ => {
                second.cmd("NOOP", 250);
            }
        }
        drop((first, second));
    }
    let mut both = [greeted_soon(&server, ALICE), greeted_soon(&server, ALICE)];
    for c in &mut both {
        c.cmd("EHLO client.example", 250);
    }
    refused(from(&server, ALICE), ALICE);
    server.stop();
}

fn a_client_over_its_rate_is_refused_within_the_minute(backend: Backend) {
    let flags = [
        "--client-rate",
        "3",
        "--client-sessions",
        "0",
        "--client-limit-exceptions",
        "",
    ];
    let server = TestServer::start(backend, &flags);
    for _ in 0..3 {
        let mut c = from(&server, ALICE);
        c.expect(220);
        c.cmd("QUIT", 221);
    }
    // Closed or not, a fourth new session within the minute is one too many.
    refused(from(&server, ALICE), ALICE);
    refused(from(&server, ALICE), ALICE);
    let mut bob = from(&server, BOB);
    bob.hello();
    server.stop();
}

/// Loopback is exempt by default; a list replaces the default.
fn exceptions_skip_the_limits(backend: Backend) {
    let server = TestServer::start(backend, &["--client-sessions", "1"]);
    let mut local: Vec<Client> = (0..3).map(|_| server.client()).collect();
    for c in &mut local {
        c.expect(220);
    }
    let mut alice: Vec<Client> = (0..3).map(|_| from(&server, ALICE)).collect();
    for c in &mut alice {
        c.expect(220);
    }
    server.stop();

    let flags = [
        "--client-sessions",
        "1",
        "--client-limit-exceptions",
        "127.0.0.2/32, 10.0.0.0/8",
    ];
    let server = TestServer::start(backend, &flags);
    let mut alice: Vec<Client> = (0..3).map(|_| from(&server, ALICE)).collect();
    for c in &mut alice {
        c.expect(220);
    }
    let mut bob = from(&server, BOB);
    bob.expect(220);
    refused(from(&server, BOB), BOB);
    server.stop();
}

support::backend_tests!(
    a_client_over_its_sessions_is_refused_until_one_closes,
    closed_sessions_never_leak_a_place,
    a_client_over_its_rate_is_refused_within_the_minute,
    exceptions_skip_the_limits,
);
