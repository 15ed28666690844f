//! Loopback test plumbing for the runtime tests: a server started in-process
//! (or the real binary) on an ephemeral port with its own temporary table and
//! spool, and a plain blocking `std::net::TcpStream` SMTP client whose every
//! read has a timeout, so no test can hang.
//!
//! Owns test plumbing only; the assertions live in the test files.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mxgate::config::{self, Backend};
use mxgate::recipients::SharedTable;
use mxgate::runtime::{Server, ServerHandle};
use mxgate::spool::Spool;

pub mod haproxy;
pub mod milters;
pub mod netns;
pub mod next_hop;
pub mod peers;

pub const HOST: &str = "mx.test";
pub const TABLE: &str = "# test table\nalice@example.com\nbob@example.com OK\n@catchall.example\n";
/// Longest any single reply may take to arrive.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// A server running in this process, on its own temp dir.
pub struct TestServer {
    pub handle: Option<ServerHandle>,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl TestServer {
    /// Starts a server on `backend` with the test table, 2 workers and
    /// `extra` flags.
    pub fn start(backend: Backend, extra: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let table = dir.path().join("table.txt");
        std::fs::write(&table, TABLE).expect("write table");
        let args = base_args(dir.path(), &with_backend(backend, extra));
        let config = config::from_args(args).expect("test config");
        let shared = Arc::new(SharedTable::new(config.load_table().expect("table")));
        let spool = Spool::open_tuned(config.spool_config(), config.spool_tuning()).expect("spool");
        let handle = Server::start(&config, shared, spool).expect("server starts");
        let addr = handle.local_addr();
        TestServer {
            handle: Some(handle),
            dir,
            addr,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Files in `spool/new/`, sorted by name.
    pub fn spooled(&self) -> Vec<PathBuf> {
        files_in(&self.spool_dir().join("new"))
    }

    /// `/metrics` samples by name with labels (`--metrics` must be on).
    pub fn scrape(&self) -> HashMap<String, f64> {
        let handle = self.handle.as_ref().expect("running");
        scrape(handle.metrics_addr().expect("--metrics is on"))
    }

    /// Graceful shutdown and join.
    pub fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
            handle.join();
        }
    }
}

/// The flags every test server gets, except those `extra` sets itself,
/// then `extra`. `--spool-min-free 0`: a test is not about the free space
/// of the host's disk (tests/spool_space.rs sets its own).
pub fn base_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let table = dir.join("table.txt").display().to_string();
    let spool = dir.join("spool").display().to_string();
    let defaults = [
        ("--recipients", table.as_str()),
        ("--spool", spool.as_str()),
        ("--listen", "127.0.0.1:0"),
        ("--workers", "2"),
        ("--hostname", HOST),
        ("--spool-min-free", "0"),
    ];
    let mut args = vec!["mxgate".to_string()];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag.to_string(), value.to_string()]);
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `extra` with `--backend NAME` in front.
fn with_backend<'a>(backend: Backend, extra: &[&'a str]) -> Vec<&'a str> {
    let name = match backend {
        Backend::Epoll => "epoll",
        Backend::Uring => "uring",
        Backend::Auto => "auto",
    };
    let mut args = vec!["--backend", name];
    args.extend_from_slice(extra);
    args
}

/// Whether io_uring tests can run here; prints why not when they cannot.
pub fn uring_usable(test: &str) -> bool {
    match mxgate::runtime::choose_backend(Backend::Uring) {
        Ok(_) => true,
        Err(why) => {
            eprintln!("skipping uring::{test}: {why}");
            false
        }
    }
}

/// Runs every listed test, a `fn name(backend: Backend)` of the calling
/// file, once per backend: as `epoll::name` and as `uring::name` (which
/// passes, printing why, where the kernel offers no usable io_uring).
/// Test files that run on no backend (real next hops or milter peers alone) leave it unused.
#[allow(unused_macros)]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod epoll {
            $(
                #[test]
                fn $name() {
                    super::$name(mxgate::config::Backend::Epoll)
                }
            )*
        }
        mod uring {
            $(
                #[test]
                fn $name() {
                    if $crate::support::uring_usable(stringify!($name)) {
                        super::$name(mxgate::config::Backend::Uring)
                    }
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use backend_tests;

/// CPU time (user + system) process `pid` has used, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which is in parentheses).
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Regular files in `dir`, sorted; empty if it does not exist.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// One SMTP reply: its code and its lines (without CRLF).
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn last(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or("")
    }
}

/// A blocking SMTP client with timeouts.
pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).expect("connect")
    }

    /// Connects from the local address `source` (a loopback address other
    /// than 127.0.0.1 is a client of its own to the server).
    pub fn connect_from(addr: SocketAddr, source: IpAddr) -> Client {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .expect("socket");
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .expect("bind the source address");
        socket
            .connect_timeout(&addr.into(), READ_TIMEOUT)
            .expect("connect");
        Client::over(socket.into())
    }

    /// `None` if nothing accepts the connection.
    pub fn try_connect(addr: SocketAddr) -> Option<Client> {
        let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT).ok()?;
        Some(Client::over(stream))
    }

    /// A client over a connected `stream` (one bound to an address of the
    /// test's choosing, say), with the read and write timeouts.
    pub fn over(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("write timeout");
        Client {
            reader: BufReader::new(stream),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// The socket, for a protocol that takes over (TLS after STARTTLS):
    /// the server must not have sent anything not read yet.
    pub fn into_stream(self) -> TcpStream {
        assert!(self.reader.buffer().is_empty(), "unread octets");
        self.reader.into_inner()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("send");
    }

    /// Reads one (possibly multi-line) reply; panics on EOF or timeout.
    pub fn reply(&mut self) -> Reply {
        self.try_reply().expect("a reply before EOF")
    }

    /// Reads one reply; `None` at EOF.
    pub fn try_reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .expect("read reply (timed out?)");
            if n == 0 {
                assert!(lines.is_empty(), "EOF inside a reply: {lines:?}");
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            let code = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .expect("reply code");
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Some(Reply { code, lines });
            }
        }
    }

    /// Reads a reply and checks its code; returns its last line.
    pub fn expect(&mut self, code: u16) -> String {
        let reply = self.reply();
        assert_eq!(reply.code, code, "unexpected reply {:?}", reply.lines);
        reply.last().to_string()
    }

    /// Sends one command line and checks the reply code.
    pub fn cmd(&mut self, line: &str, code: u16) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.expect(code)
    }

    /// Banner and EHLO.
    pub fn hello(&mut self) {
        self.expect(220);
        self.cmd("EHLO client.example", 250);
    }

    /// MAIL from a remote sender, RCPT to `rcpt` (which must be accepted),
    /// DATA: ready for the body.
    pub fn open_data(&mut self, rcpt: &str) {
        self.cmd("MAIL FROM:<s@remote.example>", 250);
        self.cmd(&format!("RCPT TO:<{rcpt}>"), 250);
        self.cmd("DATA", 354);
    }

    /// One transaction: MAIL from a remote sender, RCPT to each path (as
    /// written, brackets included) with the reply code it must get, DATA
    /// and a short message with `subject`; returns the reply to its end.
    pub fn transaction(&mut self, rcpts: &[(&str, u16)], subject: &str) -> Reply {
        self.cmd("MAIL FROM:<s@remote.example>", 250);
        for (path, code) in rcpts {
            self.cmd(&format!("RCPT TO:{path}"), *code);
        }
        self.cmd("DATA", 354);
        self.send(format!("Subject: {subject}\r\n\r\nhi\r\n.\r\n").as_bytes());
        self.reply()
    }

    /// True if the server closes the connection without sending anything
    /// more (a reset after close counts as closed).
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// The queue id in a `250 2.0.0 Ok: queued as <ID>` line.
pub fn queue_id(line: &str) -> String {
    let id = line.rsplit(' ').next().expect("an id");
    assert!(line.contains("queued as"), "not a queued reply: {line}");
    id.to_string()
}

/// Polls `done` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// A client `connect` makes that is greeted with 220, trying again for up
/// to 5 s (while the server frees a place for it); `None` if none was.
pub fn greeted_soon(mut connect: impl FnMut() -> Client) -> Option<Client> {
    let mut greeted = None;
    wait_until(Duration::from_secs(5), || {
        let mut c = connect();
        let ok = c.reply().code == 220;
        greeted = ok.then_some(c);
        ok
    });
    greeted
}

/// The real `mxgate` binary, started on its own temp dir.
pub struct BinServer {
    pub child: Child,
    dir: Option<tempfile::TempDir>,
    pub addr: SocketAddr,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl BinServer {
    /// Starts the binary with the test table and waits until it listens.
    /// The port is taken from its "mxgate ready" log line.
    pub fn start(dir: tempfile::TempDir, backend: Backend, extra: &[&str]) -> BinServer {
        BinServer::start_limited(dir, backend, extra, None)
    }

    /// [`BinServer::start`] with the open-file limit (soft and hard) set to
    /// `nofile` first, through the shell's `ulimit`.
    pub fn start_limited(
        dir: tempfile::TempDir,
        backend: Backend,
        extra: &[&str],
        nofile: Option<u32>,
    ) -> BinServer {
        let Some(limit) = nofile else {
            return BinServer::start_through(dir, backend, extra, &[]);
        };
        let ulimit = format!("ulimit -n {limit} && exec \"$@\"");
        BinServer::start_through(dir, backend, extra, &["sh", "-c", &ulimit, "sh"])
    }

    /// [`BinServer::start`] with the binary run by `prefix`, a command
    /// that runs the rest of its arguments in its place (it must exec, so
    /// that signals reach mxgate): `ip netns exec NAME`, say.
    pub fn start_through(
        dir: tempfile::TempDir,
        backend: Backend,
        extra: &[&str],
        prefix: &[&str],
    ) -> BinServer {
        if !dir.path().join("table.txt").exists() {
            std::fs::write(dir.path().join("table.txt"), TABLE).expect("write table");
        }
        let mut args = base_args(dir.path(), &with_backend(backend, extra));
        args[0] = env!("CARGO_BIN_EXE_mxgate").to_string();
        let mut command = match prefix.split_first() {
            None => Command::new(&args[0]),
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(&args[0]);
                command
            }
        };
        let mut child = command
            .args(&args[1..])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mxgate");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let collector = std::thread::spawn(move || collect_log(stderr, tx));
        let Ok(addr) = rx.recv_timeout(READ_TIMEOUT) else {
            let _ = child.kill();
            let log = collector.join().unwrap_or_default();
            panic!("mxgate did not start: {log}");
        };
        BinServer {
            child,
            dir: Some(dir),
            addr,
            stderr: Some(collector),
        }
    }

    /// The server's directory (table.txt, spool/).
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("dir until drop").path()
    }

    /// Waits for the process to exit and hands back its directory, e.g. to
    /// start a new server on the same spool.
    pub fn into_dir(mut self) -> tempfile::TempDir {
        self.wait();
        self.dir.take().expect("dir until drop")
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Sends a signal by name (`HUP`, `TERM`, `KILL`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits (bounded) for the process to exit; returns its status code and
    /// everything it logged.
    pub fn wait(&mut self) -> (Option<i32>, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("mxgate did not exit within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = self
            .stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        (status.code(), log)
    }
}

impl Drop for BinServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the server's stderr to the end; sends the listen address once the
/// "mxgate ready" line shows it.
fn collect_log(stderr: impl Read, ready: std::sync::mpsc::Sender<SocketAddr>) -> String {
    let mut log = String::new();
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if line.contains("mxgate ready") {
            if let Some(addr) = listen_addr_in(&line) {
                let _ = ready.send(addr);
            }
        }
        log.push_str(&line);
        log.push('\n');
    }
    log
}

/// The first listening address in the ready line's `listen=[ADDR, …]`
/// (an IPv6 one has brackets of its own).
fn listen_addr_in(line: &str) -> Option<SocketAddr> {
    let list = &line[line.find("listen=[")? + "listen=[".len()..];
    let mut ends = list.match_indices([',', ']']);
    ends.find_map(|(end, _)| list[..end].parse().ok())
}

/// `/metrics` at `addr`: each sample's value by its name with labels
/// (`mxgate_x{a="b"}`).
pub fn scrape(addr: SocketAddr) -> std::collections::HashMap<String, f64> {
    let mut stream = TcpStream::connect(addr).expect("connect to /metrics");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read /metrics");
    text.lines()
        .filter(|line| line.starts_with("mxgate_"))
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(name, value)| (name.to_string(), value.parse().expect("a number")))
        .collect()
}
