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

    // Within the second after the session, the worker polls although nothing
    // happens: it is runnable at most looks, whatever share of a core a
    // loaded machine gives it (a sleeping worker is runnable at none; the
    // io_uring worker's polls enter the kernel, and are sometimes seen there).
    let running = runnable_looks(pid, backend);
    assert!(
        running >= 8,
        "runnable at {running} of 20 looks during busy-poll"
    );

    // Once the second is over it sleeps like any idle worker.
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(last_event.elapsed()));
    let running = runnable_looks(pid, backend);
    assert!(
        running <= 4,
        "runnable at {running} of 20 looks after busy-poll"
    );
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(1000));
    let idle = cpu_ticks(pid) - before;
    assert!(idle < 30, "{idle} ticks in 1 s with no traffic");

    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status, Some(0), "{log}");
}

/// How many of 20 looks over 300 ms found the worker thread (`mxgate-worker-0`
/// or `mxgate-uring-0`) runnable
/// (`R` in /proc: running or waiting for a core) rather than asleep.
fn runnable_looks(pid: u32, backend: Backend) -> usize {
    let kind = match backend {
        Backend::Epoll => "worker",
        _ => "uring",
    };
    let worker = format!("mxgate-{kind}-0");
    (0..20)
        .filter(|_| {
            std::thread::sleep(Duration::from_millis(15));
            thread_state(pid, &worker) == 'R'
        })
        .count()
}

/// The scheduler state of `pid`'s thread named `name`.
fn thread_state(pid: u32, name: &str) -> char {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let stat = std::fs::read_to_string(task.expect("task").path().join("stat")).expect("stat");
        let (open, close) = (stat.find('(').unwrap(), stat.rfind(')').unwrap());
        if &stat[open + 1..close] == name {
            return stat[close + 2..].chars().next().unwrap();
        }
    }
    panic!("no thread named {name}");
}

support::backend_tests!(busy_poll_spins_after_traffic_and_then_sleeps,);
