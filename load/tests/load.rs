//! `mxgate_load` end to end over loopback TCP, against a minimal SMTP
//! server written here (std::net, one thread per connection or one
//! connection at a time), which counts what it saw so the load generator's
//! own counts can be checked against it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use mxgate_load::{self as load, Phase, Report};

mod common;
use common::{config, run, BOUND};

/// What the test server saw, summed over connections.
#[derive(Default)]
struct Seen {
    sessions: AtomicU64,
    messages: AtomicU64,
    body_octets: AtomicU64,
    rcpt_ok: AtomicU64,
    rcpt_unknown: AtomicU64,
    data_cmds: AtomicU64,
    rsets: AtomicU64,
    /// Commands already buffered when the previous reply was due.
    pipelined: AtomicU64,
    /// Messages whose final dot came with more input behind it.
    followed: AtomicU64,
    /// Connections accepted and not yet greeted, now and at most.
    ungreeted: AtomicU64,
    ungreeted_max: AtomicU64,
}

#[derive(Clone, Copy, PartialEq)]
enum Serve {
    /// One thread per connection.
    Concurrent,
    /// One connection at a time: a stall delays everyone queued behind it.
    Sequential,
    /// One thread per connection, each greeting 5 ms late.
    SlowGreeting,
    /// Accept and never greet.
    Silent,
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Seen>,
    /// Set: the next session to greet waits 50 ms first, once.
    stall_once: Arc<AtomicBool>,
}

fn server(mode: Serve) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let stall_once = Arc::new(AtomicBool::new(false));
    let (s, stall) = (seen.clone(), stall_once.clone());
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (s, stall) = (s.clone(), stall.clone());
            match mode {
                Serve::Concurrent => drop(thread::spawn(move || serve(stream, &s, &stall))),
                Serve::SlowGreeting => drop(thread::spawn(move || {
                    let now = s.ungreeted.fetch_add(1, SeqCst) + 1;
                    s.ungreeted_max.fetch_max(now, SeqCst);
                    thread::sleep(Duration::from_millis(5));
                    s.ungreeted.fetch_sub(1, SeqCst);
                    serve(stream, &s, &stall)
                })),
                Serve::Sequential => serve(stream, &s, &stall),
                Serve::Silent => std::mem::forget(stream),
            }
        }
    });
    Server {
        addr,
        seen,
        stall_once,
    }
}

/// Speaks just enough SMTP: 550 for local parts starting `nouser`.
fn serve(stream: TcpStream, seen: &Seen, stall_once: &AtomicBool) {
    seen.sessions.fetch_add(1, SeqCst);
    if stall_once.swap(false, SeqCst) {
        thread::sleep(Duration::from_millis(50));
    }
    let mut out = stream.try_clone().unwrap();
    let mut input = BufReader::new(stream);
    let mut accepted = 0;
    let _ = out.write_all(b"220 test ESMTP\r\n");
    let mut line = String::new();
    while input.read_line(&mut line).unwrap_or(0) > 0 {
        let cmd = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = match cmd.get(..4).unwrap_or("") {
            "EHLO" => b"250-test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
            "MAIL" => {
                accepted = 0;
                b"250 2.1.0 Ok\r\n"
            }
            "RCPT" if cmd.contains("<NOUSER") => {
                seen.rcpt_unknown.fetch_add(1, SeqCst);
                b"550 5.1.1 unknown\r\n"
            }
            "RCPT" => {
                accepted += 1;
                seen.rcpt_ok.fetch_add(1, SeqCst);
                b"250 2.1.5 Ok\r\n"
            }
            "DATA" => {
                seen.data_cmds.fetch_add(1, SeqCst);
                if accepted == 0 {
                    b"554 5.5.1 no valid recipients\r\n"
                } else {
                    let _ = out.write_all(b"354 go\r\n");
                    read_body(&mut input, seen);
                    b"250 2.0.0 Ok: queued\r\n"
                }
            }
            "RSET" => {
                seen.rsets.fetch_add(1, SeqCst);
                b"250 2.0.0 Ok\r\n"
            }
            "QUIT" => {
                let _ = out.write_all(b"221 2.0.0 Bye\r\n");
                return;
            }
            _ => b"500 5.5.2 what\r\n",
        };
        if !input.buffer().is_empty() {
            seen.pipelined.fetch_add(1, SeqCst);
        }
        let _ = out.write_all(reply);
        line.clear();
    }
}

/// Reads message lines up to the lone dot; counts octets before it.
fn read_body(input: &mut BufReader<TcpStream>, seen: &Seen) {
    let mut line = Vec::new();
    let mut octets = 0;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).unwrap_or(0) == 0 || line == b".\r\n" {
            break;
        }
        octets += line.len() as u64;
    }
    if !input.buffer().is_empty() {
        seen.followed.fetch_add(1, SeqCst);
    }
    seen.body_octets.fetch_add(octets, SeqCst);
    seen.messages.fetch_add(1, SeqCst);
}

/// After 100 ms (a third of the way into a 300-session run at 1000/s),
/// makes the next greeting wait 50 ms.
fn stall_soon(srv: &Server) -> thread::JoinHandle<()> {
    let stall = srv.stall_once.clone();
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        stall.store(true, SeqCst);
    })
}

fn phase_counts(report: &Report) -> Vec<u64> {
    Phase::ALL.iter().map(|&p| report.phase(p).count).collect()
}

#[test]
fn closed_loop_counts_every_phase() {
    let srv = server(Serve::Concurrent);
    let args = "--sessions 20 --messages 3 --rcpts 2 --size 500 --threads 2";
    let report = run(config(srv.addr, args));
    let c = report.counts;
    assert_eq!(c.sessions_started, 20);
    assert_eq!(c.sessions_completed, 20);
    assert_eq!(c.messages_accepted, 60);
    assert_eq!(
        (c.rcpt_sent, c.rcpt_accepted, c.rcpt_rejected),
        (120, 120, 0)
    );
    // banner, ehlo, mail, rcpt, data, eod, session
    assert_eq!(phase_counts(&report), [20, 20, 0, 60, 120, 60, 60, 20]);
    assert_eq!(srv.seen.sessions.load(SeqCst), 20);
    assert_eq!(srv.seen.messages.load(SeqCst), 60);
    assert_eq!(srv.seen.body_octets.load(SeqCst), 60 * 500);
    assert_eq!(
        srv.seen.pipelined.load(SeqCst),
        0,
        "lock-step must not pipeline"
    );
    assert_eq!(
        c.connect_errors + c.timeouts + c.io_errors + c.protocol_errors,
        0
    );
}

#[test]
fn invalid_ratio_rejects_exactly_that_fraction_with_pipelining() {
    let srv = server(Serve::Concurrent);
    let args = "--sessions 20 --messages 3 --rcpts 4 --invalid-ratio 0.25 --pipelining";
    let report = run(config(srv.addr, args));
    let c = report.counts;
    assert_eq!(
        (c.rcpt_sent, c.rcpt_accepted, c.rcpt_rejected),
        (240, 180, 60)
    );
    assert_eq!(report.phase(Phase::Rcpt).perm_fail, 60);
    assert_eq!(c.messages_accepted, 60);
    assert_eq!(srv.seen.rcpt_unknown.load(SeqCst), 60);
    assert_eq!(srv.seen.rcpt_ok.load(SeqCst), 180);
    assert!(
        srv.seen.pipelined.load(SeqCst) > 0,
        "commands went out in groups"
    );
}

#[test]
fn pipelining_sends_the_next_transaction_behind_each_message() {
    let srv = server(Serve::Concurrent);
    let args = "--sessions 5 --messages 3 --rcpts 2 --size 700 --pipelining";
    let report = run(config(srv.addr, args));
    let c = report.counts;
    assert_eq!((c.messages_accepted, c.sessions_completed), (15, 5));
    assert_eq!(srv.seen.messages.load(SeqCst), 15);
    assert_eq!(srv.seen.body_octets.load(SeqCst), 15 * 700);
    // Each message's end is written together with the next MAIL, RCPTs
    // and DATA, or with QUIT after the last one (RFC 2920 §3.1).
    assert_eq!(srv.seen.followed.load(SeqCst), 15);
    assert_eq!(phase_counts(&report), [5, 5, 0, 15, 30, 15, 15, 5]);
}

#[test]
fn lock_step_waits_for_each_message_reply() {
    let srv = server(Serve::Concurrent);
    let report = run(config(srv.addr, "--sessions 5 --messages 3"));
    assert_eq!(report.counts.messages_accepted, 15);
    assert_eq!(srv.seen.followed.load(SeqCst), 0);
}

#[test]
fn all_recipients_rejected_means_rset_not_data() {
    let srv = server(Serve::Concurrent);
    let args = "--sessions 4 --messages 3 --rcpts 2 --invalid-ratio 1";
    let report = run(config(srv.addr, args));
    let c = report.counts;
    assert_eq!((c.transactions, c.transactions_aborted), (12, 12));
    assert_eq!((c.messages_accepted, c.rcpt_rejected), (0, 24));
    assert_eq!(c.sessions_completed, 4);
    assert_eq!(srv.seen.data_cmds.load(SeqCst), 0);
    assert_eq!(srv.seen.rsets.load(SeqCst), 12);
}

#[test]
fn sessions_total_reconnects_until_done() {
    let srv = server(Serve::Concurrent);
    let report = run(config(srv.addr, "--sessions 5 --sessions-total 17"));
    assert_eq!(report.counts.sessions_completed, 17);
    assert_eq!(srv.seen.sessions.load(SeqCst), 17);
    assert_eq!(srv.seen.messages.load(SeqCst), 17);
}

#[test]
fn open_loop_shows_a_single_50ms_stall_in_the_tail() {
    let srv = server(Serve::Sequential);
    let due = stall_soon(&srv);
    let report = run(config(srv.addr, "--rate 1000 --sessions 300 --threads 1"));
    due.join().unwrap();
    assert!(!srv.stall_once.load(SeqCst), "the stall happened");
    assert_eq!(report.counts.sessions_completed, 300);
    let session = report.phase(Phase::Session);
    assert!(session.max >= 50_000, "max {} µs", session.max);
    assert!(session.p999 >= 50_000, "p99.9 {} µs", session.p999);
    let banner = report.phase(Phase::Banner);
    assert!(banner.p999 >= 50_000, "banner p99.9 {} µs", banner.p999);
}

#[test]
fn refused_connects_are_counted() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let report = run(config(addr, "--sessions 3"));
    assert_eq!(report.counts.connect_errors, 3);
    assert_eq!(report.counts.sessions_completed, 0);
}

#[test]
fn a_silent_server_times_out() {
    let srv = server(Serve::Silent);
    let report = run(config(srv.addr, "--sessions 3 --timeout 0.3"));
    assert_eq!(report.counts.timeouts, 3);
    assert_eq!(report.phase(Phase::Banner).count, 0);
}

#[test]
fn main_writes_hgrm_files_and_a_plot() {
    let srv = server(Serve::Concurrent);
    let dir = tempfile::tempdir().unwrap();
    let args = format!("--sessions 3 --json --hgrm-dir {}", dir.path().display());
    let cfg = config(srv.addr, &args);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(load::main(&cfg)));
    assert_eq!(rx.recv_timeout(BOUND).unwrap(), 0);
    let mut rcpt = String::new();
    std::fs::File::open(dir.path().join("rcpt.hgrm"))
        .unwrap()
        .read_to_string(&mut rcpt)
        .unwrap();
    assert!(rcpt.contains("Total count    =            3]"), "{rcpt}");
    assert!(dir.path().join("percentiles.svg").exists());
}

#[test]
fn bad_options_are_refused() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for args in [
        "--invalid-ratio 1.5",
        "--rate 0",
        "--threads 0",
        "--timeout=-1",
    ] {
        assert!(load::run(&config(addr, args)).is_err(), "{args}");
    }
}

#[test]
fn open_loop_charges_a_stall_to_every_session_queued_behind_it() {
    let srv = server(Serve::Sequential);
    let due = stall_soon(&srv);
    // One session at a time: sessions due during the stall start late, and
    // each is timed from when it was due, not from when it could start.
    let args = "--rate 1000 --sessions 300 --threads 1 --max-open 1";
    let report = run(config(srv.addr, args));
    due.join().unwrap();
    assert_eq!(report.counts.sessions_completed, 300);
    let late = report
        .stats
        .histogram(Phase::Session)
        .count_between(25_000, u64::MAX);
    assert!(late >= 25, "{late} sessions ≥ 25 ms");
    assert!(report.phase(Phase::Session).p99 >= 25_000);
}

#[test]
fn duration_stops_starting_sessions() {
    let srv = server(Serve::Concurrent);
    let report = run(config(srv.addr, "--sessions 2 --duration 0.3"));
    let c = report.counts;
    assert!(c.sessions_completed >= 2, "{c:?}");
    assert_eq!(c.sessions_completed, c.sessions_started);
    assert_eq!(srv.seen.sessions.load(SeqCst), c.sessions_started);
}

#[test]
fn connect_window_limits_sessions_awaiting_their_greeting() {
    let srv = server(Serve::SlowGreeting);
    let report = run(config(
        srv.addr,
        "--sessions 20 --connect-window 1 --threads 1",
    ));
    assert_eq!(report.counts.sessions_completed, 20);
    assert_eq!(srv.seen.ungreeted_max.load(SeqCst), 1);
}
