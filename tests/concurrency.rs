//! Many sessions at once over loopback: 2,000 concurrent sessions each
//! complete a transaction, and every message lands in the spool.

mod support;

use mxgate::config::Backend;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{queue_id, TestServer, READ_TIMEOUT};

const SESSIONS: usize = 2_000;
const CLIENT_THREADS: usize = 4;

/// Reads one reply line (our replies here are single-line) and returns it.
fn read_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("reply (timed out?)");
    line
}

/// Skips a multi-line reply; returns its last line.
fn read_reply(reader: &mut BufReader<TcpStream>) -> String {
    loop {
        let line = read_line(reader);
        assert!(line.len() >= 4, "short reply {line:?}");
        if line.as_bytes()[3] != b'-' {
            return line;
        }
    }
}

/// Opens `count` sessions and waits at `all_open` until every thread's
/// sessions have their greeting; then runs one pipelined transaction on each.
fn run_sessions(
    addr: SocketAddr,
    first: usize,
    count: usize,
    all_open: &AtomicUsize,
) -> Vec<String> {
    let mut sessions: Vec<BufReader<TcpStream>> = (0..count)
        .map(|_| {
            let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT).expect("connect");
            stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
            BufReader::new(stream)
        })
        .collect();
    for session in &mut sessions {
        assert!(read_line(session).starts_with("220 "));
    }
    all_open.fetch_add(1, Ordering::SeqCst);
    let everyone = || all_open.load(Ordering::SeqCst) == CLIENT_THREADS;
    assert!(
        support::wait_until(READ_TIMEOUT, everyone),
        "other client threads never got going"
    );
    for (n, session) in sessions.iter_mut().enumerate() {
        let transaction = format!(
            "EHLO c{id}.example\r\nMAIL FROM:<s{id}@remote.example>\r\n\
             RCPT TO:<alice@example.com>\r\nDATA\r\nSubject: {id}\r\n\r\nbody {id}\r\n.\r\nQUIT\r\n",
            id = first + n
        );
        session.get_mut().write_all(transaction.as_bytes()).unwrap();
    }
    sessions
        .iter_mut()
        .map(|session| {
            for code in ["250", "250", "250", "354"] {
                let reply = read_reply(session);
                assert!(reply.starts_with(code), "{reply:?} instead of {code}");
            }
            let id = queue_id(read_reply(session).trim_end());
            assert!(read_reply(session).starts_with("221"));
            id
        })
        .collect()
}

fn two_thousand_concurrent_sessions_each_complete_a_transaction(backend: Backend) {
    let limit = mxgate::tuning::raise_open_files_limit().unwrap();
    assert!(
        limit > 2 * SESSIONS as u64 + 200,
        "open-file limit {limit} too low for this test"
    );
    let server = TestServer::start(backend, &["--command-timeout", "120"]);
    let per_thread = SESSIONS / CLIENT_THREADS;
    let all_open = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            let (addr, all_open) = (server.addr, Arc::clone(&all_open));
            std::thread::spawn(move || run_sessions(addr, t * per_thread, per_thread, &all_open))
        })
        .collect();
    let mut ids: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), SESSIONS, "queue ids are unique");
    assert!(support::wait_until(Duration::from_secs(5), || server
        .spooled()
        .len()
        == SESSIONS));
    server.stop();
}

support::backend_tests!(two_thousand_concurrent_sessions_each_complete_a_transaction,);
