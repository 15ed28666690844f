//! Limits on accepting: running out of file descriptors (the server stops
//! accepting without spinning, keeps serving the sessions it has, and
//! accepts the waiting clients once descriptors free up) and the
//! `worker-sessions` cap (connections beyond it wait for their greeting in
//! the listen backlog until a session ends).

mod support;

use mxgate::config::Backend;

use std::time::Duration;

use support::{cpu_ticks, BinServer, Client, TestServer};

/// True if the server has greeted `c` (its first byte is there) within `wait`.
fn greeted_within(c: &Client, wait: Duration) -> bool {
    c.stream().set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    let got = c.stream().peek(&mut byte).is_ok_and(|n| n == 1);
    c.stream()
        .set_read_timeout(Some(support::READ_TIMEOUT))
        .unwrap();
    got
}

fn out_of_descriptors_pauses_accepting_without_spinning(backend: Backend) {
    const CLIENTS: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--workers",
        "1",
        "--max-sessions",
        "1000",
        "--spool-threads",
        "1",
    ];
    let mut server = BinServer::start_limited(dir, backend, &flags, Some(40));
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| server.client()).collect();

    // Those that got a descriptor are greeted; the rest wait in the backlog.
    let greeted = |c: &Client| greeted_within(c, Duration::from_millis(100));
    let served: Vec<bool> = clients.iter().map(greeted).collect();
    let first = served
        .iter()
        .position(|&g| g)
        .expect("some sessions are served");
    let waiting = served.iter().filter(|&&g| !g).count();
    assert!(waiting > 0, "the limit of 40 descriptors never bit");

    // No busy loop while descriptors are exhausted.
    let before = cpu_ticks(server.child.id());
    std::thread::sleep(Duration::from_millis(1500));
    let spent = cpu_ticks(server.child.id()) - before;
    assert!(
        spent < 50,
        "{spent} ticks of CPU in 1.5 s while out of descriptors"
    );

    // Open sessions are still served.
    clients[first].hello();
    clients[first].cmd("NOOP", 250);

    // Closing the served sessions lets every waiting client in.
    let mut rest = Vec::new();
    for (c, was_served) in clients.drain(..).zip(&served) {
        if *was_served {
            drop(c);
        } else {
            rest.push(c);
        }
    }
    for c in &mut rest {
        c.expect(220);
        c.cmd("QUIT", 221);
    }
    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status, Some(0), "{log}");
    assert!(
        log.contains("out of file descriptors; accepting paused"),
        "{log}"
    );
}

fn a_full_worker_leaves_new_clients_in_the_backlog(backend: Backend) {
    let server = TestServer::start(backend, &["--workers", "1", "--worker-sessions", "2"]);
    let mut first = server.client();
    first.expect(220);
    let mut second = server.client();
    second.expect(220);

    // The kernel completes the handshake; the greeting waits for room.
    let mut third = server.client();
    assert!(
        !greeted_within(&third, Duration::from_millis(300)),
        "a third session was greeted past worker-sessions 2"
    );
    second.cmd("EHLO client.example", 250);

    first.cmd("QUIT", 221);
    third.hello();
    for c in [&mut second, &mut third] {
        c.cmd("QUIT", 221);
    }
    server.stop();
}

support::backend_tests!(
    out_of_descriptors_pauses_accepting_without_spinning,
    a_full_worker_leaves_new_clients_in_the_backlog,
);
