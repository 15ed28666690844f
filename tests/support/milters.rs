//! Milters for the tests, each started by the test on a loopback port in a
//! private temporary directory and stopped when dropped: the scripted milter
//! (tests/peers/milter.py, whose module text is its manual), clamd with
//! clamav-milter, and rspamd's milter proxy.
//!
//! Owns starting, stopping and reading the milters' logs; the assertions
//! live in the test files. A milter that is not installed fails the test,
//! naming it: `.ci/run` installs them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::peers::require;

/// The scripted milter.
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/milter.py");
/// How long a milter may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(30);

/// The scripted milter, running with one script.
pub struct Scripted {
    child: Child,
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl Scripted {
    /// Starts it on a free loopback port with `script`: `--on RULE`,
    /// `--actions`, `--protocol` arguments as tests/peers/milter.py says.
    pub fn start(script: &[&str]) -> Scripted {
        require("python3");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .args(["--listen", "inet:127.0.0.1:0", "--log"])
            .arg(dir.path().join("milter.log"))
            .args(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python3 tests/peers/milter.py");
        let line = first_line(&mut child);
        let addr = line
            .strip_prefix("milter listening on inet:")
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let output = child.wait_with_output().expect("wait for the milter");
            panic!(
                "the scripted milter did not start ({line:?}): {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        Scripted { child, dir, addr }
    }

    /// `inet:127.0.0.1:PORT`, for `--milter` and Postfix's `smtpd_milters`.
    pub fn spec(&self) -> String {
        format!("inet:{}", self.addr)
    }

    /// Every packet it received so far, in order.
    pub fn records(&self) -> Vec<Record> {
        let text = std::fs::read_to_string(self.dir.path().join("milter.log")).unwrap_or_default();
        text.lines().map(Record::parse).collect()
    }

    /// The packets of one stage (`connect`, `macros`, `header`, `eom`, ...).
    pub fn stage(&self, stage: &str) -> Vec<Record> {
        let mut records = self.records();
        records.retain(|r| r.stage == stage);
        records
    }

    /// Stops it (SIGTERM) and returns what it printed on stderr: its
    /// summary line, or a traceback if the script broke.
    pub fn stop(mut self) -> String {
        signal_term(&self.child);
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            use std::io::Read;
            let _ = pipe.read_to_string(&mut stderr);
        }
        let _ = self.child.wait();
        stderr
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of the scripted milter's log: a packet it received.
#[derive(Debug, Clone)]
pub struct Record {
    /// `CONNECTION.SESSION`, both counted from 1.
    pub session: String,
    pub stage: String,
    /// `KEY=VALUE` pairs in order, values unescaped.
    pub fields: Vec<(String, String)>,
}

impl Record {
    fn parse(line: &str) -> Record {
        let mut parts = line.split('\t');
        let session = parts.next().unwrap_or_default().to_string();
        let stage = parts.next().unwrap_or_default().to_string();
        let fields = parts
            .map(|f| {
                let (k, v) = f.split_once('=').unwrap_or((f, ""));
                (k.to_string(), unescape(v))
            })
            .collect();
        Record {
            session,
            stage,
            fields,
        }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Undoes the log's escapes (`\t \r \n \\ \xNN`); octets come back as
/// chars U+0000..U+00FF.
fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(char::from(u8::from_str_radix(&hex, 16).unwrap_or(b'?')));
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The first line `child` prints on stdout, within [`START_LIMIT`]; empty
/// if it printed none.
fn first_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line.trim_end().to_string());
    });
    rx.recv_timeout(START_LIMIT).unwrap_or_default()
}

/// Sends SIGTERM to `child` with kill(1).
fn signal_term(child: &Child) {
    let _ = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status();
}

/// A free loopback port (bound, then released: the daemon that takes it
/// next is the one the test starts).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Waits until something accepts connections on `addr`; fails with
/// `what` and `log`'s contents if nothing does within `limit`.
pub fn wait_for_port(addr: SocketAddr, limit: Duration, what: &str, log: &Path) {
    let up = super::wait_until(limit, || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        up,
        "{what} did not listen on {addr} within {limit:?}; its log {}:\n{text}",
        log.display()
    );
}
