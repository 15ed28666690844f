//! Milters for the tests, each started by the test on a loopback port in a
//! private temporary directory and stopped when dropped: the scripted milter
//! (tests/peers/milter.py, whose module text is its manual), clamd with
//! clamav-milter, and rspamd's milter proxy.
//!
//! Owns starting, stopping and reading the milters' logs; the assertions
//! live in the test files. A milter that is not installed fails the test,
//! naming it: `.ci/run` installs them.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};

use super::peers::{library, require, run};

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
        inet(self.addr)
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

    /// The first packet of `stage` whose `key` is `value`.
    pub fn find(&self, stage: &str, key: &str, value: &str) -> Option<Record> {
        let mut records = self.stage(stage).into_iter();
        records.find(|r| r.get(key) == Some(value))
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

/// A daemon the test started, in a process group of its own (rspamd forks
/// workers); stopped with SIGTERM to the group, then SIGKILL, when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `command` (`tool` is its name, checked to be installed),
    /// with stdout and stderr going to `log`.
    fn spawn(tool: &str, mut command: Command, log: PathBuf) -> Daemon {
        require(tool);
        let out = std::fs::File::create(&log).expect("create a daemon's log");
        let child = command
            .env(
                "PATH",
                format!(
                    "{}:/usr/sbin:/sbin",
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {tool}: {e}"));
        Daemon { child, log }
    }

    /// Waits until it accepts connections on `addr`; fails with its log
    /// (and `also`'s) if it exits first or `limit` passes.
    /// Until `ready(addr)` holds (the daemon is up), or panics naming it.
    fn wait_for(
        &mut self,
        addr: SocketAddr,
        limit: Duration,
        what: &str,
        also: &Path,
        ready: fn(SocketAddr) -> bool,
    ) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{what} exited ({status}) before it served {addr}; {}",
                    self.logs(also)
                );
            }
            if ready(addr) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{what} did not serve {addr} within {limit:?}; {}",
            self.logs(also)
        );
    }

    fn logs(&self, also: &Path) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "its output ({}):\n{}\nits log ({}):\n{}",
            self.log.display(),
            read(&self.log),
            also.display(),
            read(also)
        )
    }

    fn signal_group(&self, signal: Signal) {
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = kill_process_group(pid, signal);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.signal_group(Signal::TERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The leader may be gone while workers linger: the group gets KILL.
        self.signal_group(Signal::KILL);
        let _ = self.child.wait();
    }
}

/// The shell library that writes the real milters' configurations.
const MILTERS_LIB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/scripts/milters.sh");

/// Runs `function DIR ARGS...` of benches/scripts/milters.sh; returns its
/// stdout.
fn milters_lib(function: &str, dir: &Path, args: &[String]) -> String {
    let mut command = library(MILTERS_LIB, function);
    command.arg(dir).args(args);
    let done = run(command, "");
    assert!(
        done.success,
        "{function} failed: {}{}",
        done.stdout, done.stderr
    );
    done.stdout
}

/// The EICAR anti-virus test string (benches/scripts/milters.sh's).
pub fn eicar() -> String {
    let done = run(library(MILTERS_LIB, "eicar_string"), "");
    assert!(done.success, "eicar_string: {}", done.stderr);
    done.stdout
}

/// GTUBE, the Generic Test for Unsolicited Bulk Email: rspamd rejects a
/// message holding it.
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// A real milter daemon the test started, with what it needs behind it,
/// in a private directory; stopped when dropped.
pub struct RealMilter {
    // Dropped first to last: the milter, then what it uses.
    _daemons: Vec<Daemon>,
    dir: tempfile::TempDir,
    log: &'static str,
    pub addr: SocketAddr,
}

/// rspamd compiles its regular expressions at start-up: tens of seconds on
/// a busy machine.
const RSPAMD_START_LIMIT: Duration = Duration::from_secs(120);

impl RealMilter {
    /// clamd with a database of one signature (EICAR, as an `.ndb` body
    /// signature: no freshclam, no network) and clamav-milter in front of
    /// it, both on loopback ports, as `clamav_init` of
    /// benches/scripts/milters.sh sets them up: clamav-milter rejects
    /// infected mail and defers when clamd fails.
    pub fn clamav() -> RealMilter {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let (clamd_addr, addr) = (free_addr(), free_addr());
        let ports = [clamd_addr.port().to_string(), addr.port().to_string()];
        milters_lib("clamav_init", root, &ports);

        let mut clamd = Command::new("clamd");
        clamd.arg("--config-file").arg(root.join("clamd.conf"));
        let mut clamd = Daemon::spawn("clamd", clamd, root.join("clamd.out"));
        clamd.wait_for(
            clamd_addr,
            START_LIMIT,
            "clamd",
            &root.join("clamd.log"),
            listens,
        );

        let mut milter = Command::new("clamav-milter");
        milter
            .arg("--config-file")
            .arg(root.join("clamav-milter.conf"));
        let mut milter = Daemon::spawn("clamav-milter", milter, root.join("clamav-milter.out"));
        let log = "clamav-milter.log";
        milter.wait_for(
            addr,
            START_LIMIT,
            "clamav-milter",
            &root.join(log),
            negotiates,
        );
        RealMilter {
            _daemons: vec![milter, clamd],
            dir,
            log,
            addr,
        }
    }

    /// rspamd with Debian's stock configuration under the private local
    /// one of `rspamd_init` (benches/scripts/milters.sh): its proxy worker,
    /// in milter mode and scanning itself, on a loopback port; no Redis, no
    /// DNS; milter_headers' headers on every message. rspamd rejects GTUBE.
    pub fn rspamd() -> RealMilter {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let addr = free_addr();
        let ports = [addr, free_addr(), free_addr()].map(|a| a.port().to_string());
        milters_lib("rspamd_init", root, &ports);
        let vars = milters_lib("rspamd_vars", root, &[]);
        let mut command = Command::new("rspamd");
        command
            // In the foreground; as root, which it refuses without -i.
            .args(["-f", "-i", "-u", "root", "-g", "root"])
            .args(["-c", "/etc/rspamd/rspamd.conf"])
            .args(vars.split_whitespace());
        let mut daemon = Daemon::spawn("rspamd", command, root.join("rspamd.out"));
        let log = "rspamd.log";
        daemon.wait_for(
            addr,
            RSPAMD_START_LIMIT,
            "rspamd's proxy",
            &root.join(log),
            negotiates,
        );
        RealMilter {
            _daemons: vec![daemon],
            dir,
            log,
            addr,
        }
    }

    /// `inet:127.0.0.1:PORT`.
    pub fn spec(&self) -> String {
        inet(self.addr)
    }

    /// The milter's log (clamav-milter names the signature it found).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(self.log)).unwrap_or_default()
    }
}

/// `inet:IP:PORT`, the form `--milter` and Postfix's `smtpd_milters` take.
fn inet(addr: SocketAddr) -> String {
    format!("inet:{addr}")
}

/// Whether something accepts connections on `addr`.
fn listens(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Whether a milter on `addr` answers option negotiation. rspamd's main
/// process listens before its proxy worker serves: a connection made
/// meanwhile waits, and under load longer than a test's milter timeout.
fn negotiates(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    // SMFIC_OPTNEG: version 6; mxgate's actions (add and change headers,
    // quarantine), as libmilter drops an MTA that lacks one the milter
    // needs; every step the milter may decline.
    let optneg = [
        0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 0, 0x31, 0, 0x1f, 0xff, 0xff,
    ];
    let mut head = [0; 5];
    let answered = stream.write_all(&optneg).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head[4] == b'O';
    // SMFIC_QUIT: the milter forgets the probe.
    let _ = stream.write_all(&[0, 0, 0, 1, b'Q']);
    answered
}
