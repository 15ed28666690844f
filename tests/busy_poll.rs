//! `--busy-poll`: a worker keeps polling without sleeping for a while after
//! its last event, and sleeps once traffic stops.

mod support;

use std::time::{Duration, Instant};

use mxgate::config::Backend;
use support::{cpu_ticks, BinServer};

fn busy_poll_spins_after_traffic_and_then_sleeps(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--workers", "1", "--busy-poll", "1000000"];
    let mut server = BinServer::start(dir, backend, &flags);
    let pid = server.child.id();

    let mut client = server.client();
    client.hello();
    client.cmd("QUIT", 221);
    let last_event = Instant::now();

    // Within the second after the session, the worker polls: it burns CPU
    // although nothing happens (at least 50 ms of it in 300 ms).
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(300));
    let spinning = cpu_ticks(pid) - before;
    assert!(spinning >= 5, "{spinning} ticks in 300 ms of busy-poll");

    // Once the second is over it sleeps like any idle worker.
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(last_event.elapsed()));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(1000));
    let idle = cpu_ticks(pid) - before;
    assert!(idle < 30, "{idle} ticks in 1 s with no traffic");

    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status, Some(0), "{log}");
}

support::backend_tests!(busy_poll_spins_after_traffic_and_then_sleeps,);
