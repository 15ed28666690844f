//! Crash safety: `kill -9` the real binary while 200 clients send; every
//! message that got its 250 is complete in `new/`, nothing partial is there,
//! and a restart on the same spool directory serves again with `tmp/` clean.

mod support;

use mxgate::config::Backend;

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{files_in, wait_until, BinServer, READ_TIMEOUT};

const CLIENTS: usize = 200;
/// Acknowledged messages to wait for before the kill.
const ACKED_BEFORE_KILL: usize = 400;

/// A message body unique to (client, sequence number), ~2 KiB.
fn body(client: usize, seq: usize) -> String {
    let filler = format!("client {client} message {seq} {}\r\n", "z".repeat(50));
    format!("Subject: c{client} m{seq}\r\n\r\n{}", filler.repeat(28))
}

fn reply(reader: &mut BufReader<TcpStream>) -> io::Result<String> {
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line.trim_end().to_string());
        }
    }
}

fn expect(reader: &mut BufReader<TcpStream>, code: &str) -> io::Result<String> {
    let line = reply(reader)?;
    if line.starts_with(code) {
        Ok(line)
    } else {
        Err(io::Error::other(format!("{line:?} instead of {code}")))
    }
}

/// Sends messages until the connection dies; returns (queue id, body) of
/// every message that got a 250.
fn sender(addr: SocketAddr, client: usize, acked: &AtomicUsize) -> Vec<(String, String)> {
    let mut done = Vec::new();
    let _ = send_until_error(addr, client, acked, &mut done);
    done
}

fn send_until_error(
    addr: SocketAddr,
    client: usize,
    acked: &AtomicUsize,
    done: &mut Vec<(String, String)>,
) -> io::Result<()> {
    let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(stream);
    expect(&mut reader, "220")?;
    reader.get_mut().write_all(b"EHLO crash.example\r\n")?;
    expect(&mut reader, "250")?;
    for seq in 0..10_000 {
        let text = body(client, seq);
        let transaction = format!(
            "MAIL FROM:<c{client}@remote.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n{text}.\r\n"
        );
        reader.get_mut().write_all(transaction.as_bytes())?;
        for code in ["250", "250", "354"] {
            expect(&mut reader, code)?;
        }
        let queued = expect(&mut reader, "250")?;
        let id = queued.rsplit(' ').next().unwrap_or_default().to_string();
        done.push((id, text));
        acked.fetch_add(1, Ordering::SeqCst);
    }
    Ok(())
}

/// A spool file is complete: envelope, DATA, Received, body, final dot.
fn assert_complete(path: &Path) -> Vec<u8> {
    let file = std::fs::read(path).unwrap();
    assert!(file.starts_with(b"MAIL FROM:<c"), "{path:?} starts wrong");
    assert!(
        file.windows(26)
            .any(|w| w == b"\r\nDATA\r\nReceived: from cra"),
        "{path:?}"
    );
    assert!(file.ends_with(b"\r\n.\r\n"), "{path:?} is cut short");
    file
}

fn kill_9_loses_no_acknowledged_message_and_leaves_nothing_partial(backend: Backend) {
    mxgate::tuning::raise_open_files_limit().unwrap();
    let server = BinServer::start(tempfile::tempdir().unwrap(), backend, &[]);
    let acked = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (addr, acked) = (server.addr, Arc::clone(&acked));
            std::thread::spawn(move || sender(addr, client, &acked))
        })
        .collect();
    let enough = wait_until(Duration::from_secs(60), || {
        acked.load(Ordering::SeqCst) >= ACKED_BEFORE_KILL
    });
    server.signal("KILL");
    assert!(
        enough,
        "only {} messages acknowledged in 60 s",
        acked.load(Ordering::SeqCst)
    );
    let acknowledged: Vec<(String, String)> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let dir = server.into_dir();
    let spool = dir.path().join("spool");

    for (id, text) in &acknowledged {
        let file = assert_complete(&spool.join("new").join(format!("{id}.bsmtp")));
        assert!(
            file.ends_with(format!("{text}.\r\n").as_bytes()),
            "{id} has the wrong body"
        );
    }
    for path in files_in(&spool.join("new")) {
        assert_complete(&path);
    }

    let restarted = BinServer::start(dir, backend, &[]);
    let spool = restarted.path().join("spool");
    assert!(
        files_in(&spool.join("tmp")).is_empty(),
        "stale tmp/ files survive a restart"
    );
    let mut c = restarted.client();
    c.hello();
    c.open_data("alice@example.com");
    c.send(b"Subject: after the crash\r\n\r\nstill here\r\n.\r\n");
    support::queue_id(&c.expect(250));
    eprintln!(
        "{} messages acknowledged before kill -9, all complete in new/",
        acknowledged.len()
    );
}

support::backend_tests!(kill_9_loses_no_acknowledged_message_and_leaves_nothing_partial,);
