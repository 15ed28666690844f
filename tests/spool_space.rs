//! `--spool-min-free` on both backends: the spool on a tiny tmpfs the test
//! mounts (root), filled past the threshold and then freed. While it is
//! short, MAIL FROM gets `452 4.3.1` and `/metrics` shows the condition and
//! the refusals; once space is back, mail is accepted again without a
//! restart — also when it is the relay that frees it, by delivering what
//! filled the spool once its next hop (smtp-sink) comes up.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mxgate::config::Backend;

use support::next_hop::{free_addr, SmtpSink};
use support::{queue_id, wait_until, Client, TestServer, READ_TIMEOUT};

/// The monitor reads once a second; a change must show within this.
const NOTICE: Duration = Duration::from_secs(5);
const MAIL: &str = "MAIL FROM:<s@remote.example>";

/// A tmpfs of `size` mounted on a fresh temporary directory; unmounted
/// when dropped.
struct TinyFs {
    dir: tempfile::TempDir,
}

impl TinyFs {
    fn mount(size: &str) -> TinyFs {
        let root = rustix::process::geteuid().is_root();
        assert!(root, "mounting a tmpfs needs root; run the tests as root");
        let dir = tempfile::tempdir().expect("temp dir");
        let options = format!("size={size}");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "mxgate-test"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed");
        TinyFs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        // Lazy: a server a failed test left running still holds it.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The value of the sample `name` in the server's `/metrics`.
fn sample(metrics: SocketAddr, name: &str) -> f64 {
    let mut stream = TcpStream::connect_timeout(&metrics, READ_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let request = "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).expect("send request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read response");
    let prefix = format!("{name} ");
    let line = text.lines().find(|l| l.starts_with(&prefix));
    let line = line.unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    line[prefix.len()..].parse().expect("a number")
}

/// Sends MAIL until it is answered `code`, for up to [`NOTICE`] (the
/// monitor's next readings); a 250 that is not the answer awaited is
/// RSET. After a 250 awaited, the transaction is open.
fn mail_soon_gets(client: &mut Client, code: u16) -> bool {
    wait_until(NOTICE, || {
        client.send(format!("{MAIL}\r\n").as_bytes());
        let reply = client.reply().code;
        if reply == 250 && code != 250 {
            client.cmd("RSET", 250);
        }
        reply == code
    })
}

/// Writes a file of `bytes` zeros.
fn ballast(path: &Path, bytes: usize) -> PathBuf {
    std::fs::write(path, vec![0u8; bytes]).expect("write the ballast");
    path.to_path_buf()
}

fn refuses_mail_while_the_spool_is_short_of_space(backend: Backend) {
    let fs = TinyFs::mount("2m");
    let spool = fs.path().join("spool").display().to_string();
    let flags = ["--spool", &spool, "--spool-min-free", "50"];
    let server = TestServer::start(
        backend,
        &[&flags[..], &["--metrics", "127.0.0.1:0"]].concat(),
    );
    let metrics = server
        .handle
        .as_ref()
        .unwrap()
        .metrics_addr()
        .expect("metrics");
    let mut client = server.client();
    client.hello();
    client.cmd(MAIL, 250);
    client.cmd("RSET", 250);
    assert_eq!(sample(metrics, "mxgate_spool_low_space"), 0.0);

    // 1.5 MiB of 2: a quarter left, below the half asked for.
    let heavy = ballast(&fs.path().join("ballast"), 3 << 19);
    let refused = mail_soon_gets(&mut client, 452);
    assert!(refused, "MAIL still accepted with the spool short of space");
    let reply = client.cmd(MAIL, 452);
    assert_eq!(reply, "452 4.3.1 Insufficient system storage");
    client.cmd("RCPT TO:<alice@example.com>", 503);
    assert_eq!(sample(metrics, "mxgate_spool_low_space"), 1.0);
    assert!(sample(metrics, "mxgate_low_space_refusals_total") >= 2.0);
    assert!(sample(metrics, "mxgate_spool_available_bytes") < (1 << 20) as f64);

    std::fs::remove_file(heavy).expect("free the space");
    let accepted = mail_soon_gets(&mut client, 250);
    assert!(accepted, "MAIL still refused with the space back");
    client.cmd("RCPT TO:<alice@example.com>", 250);
    client.cmd("DATA", 354);
    client.send(b"Subject: space\r\n\r\nback\r\n.\r\n");
    let queued = client.expect(250);
    let id = queue_id(&queued);
    assert_eq!(sample(metrics, "mxgate_spool_low_space"), 0.0);
    let file = Path::new(&spool).join("new").join(format!("{id}.bsmtp"));
    assert!(file.exists(), "{} is not spooled", file.display());
    client.cmd("QUIT", 221);
    server.stop();
}

/// Sends one message of `size` octets of body to alice; returns the reply.
fn send_big(client: &mut Client, size: usize) -> String {
    client.cmd(MAIL, 250);
    client.cmd("RCPT TO:<alice@example.com>", 250);
    client.cmd("DATA", 354);
    let line = format!("{}\r\n", "x".repeat(98));
    client.send(b"Subject: big\r\n\r\n");
    client.send(line.repeat(size / line.len()).as_bytes());
    client.send(b".\r\n");
    client.expect(250)
}

fn the_relay_draining_the_spool_lifts_the_condition(backend: Backend) {
    let fs = TinyFs::mount("2m");
    let spool = fs.path().join("spool").display().to_string();
    let hop = free_addr();
    let relay_to = format!("smtp://{hop}");
    let flags = [
        "--spool",
        &spool,
        "--spool-min-free",
        "50",
        "--relay-to",
        &relay_to,
    ];
    let server = TestServer::start(backend, &[&flags[..], &["--relay-backoff", "1,1"]].concat());
    let mut client = server.client();
    client.hello();
    // The next hop is down: three 400 KiB messages stay in new/ and take
    // more than half of the 2 MiB.
    for _ in 0..3 {
        send_big(&mut client, 400 << 10);
    }
    let refused = mail_soon_gets(&mut client, 452);
    assert!(refused, "MAIL still accepted with the spool short of space");
    let new = Path::new(&spool).join("new");
    assert_eq!(support::files_in(&new).len(), 3);

    let sink = SmtpSink::start(hop, &[]);
    let delivered = wait_until(Duration::from_secs(20), || sink.received().len() == 3);
    assert!(
        delivered,
        "the relay delivered {} of 3",
        sink.received().len()
    );
    let accepted = mail_soon_gets(&mut client, 250);
    assert!(
        accepted,
        "MAIL still refused after the relay drained the spool"
    );
    assert!(
        support::files_in(&new).is_empty(),
        "{:?}",
        support::files_in(&new)
    );
    client.cmd("QUIT", 221);
    server.stop();
}

support::backend_tests!(
    refuses_mail_while_the_spool_is_short_of_space,
    the_relay_draining_the_spool_lifts_the_condition,
);
