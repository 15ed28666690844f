//! The real `mxgate` binary: exit status 2 and one line on bad input and
//! on every start-up failure (empty table, spool, port in use), a config
//! file's single listen string and relative paths, SIGHUP reloading the
//! table under open sessions, SIGTERM draining transactions in flight and
//! exiting 0.

mod support;

use mxgate::config::Backend;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{files_in, queue_id, wait_until, BinServer, Client};

/// Runs the binary to completion, logging errors only; returns (status,
/// stderr).
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mxgate"))
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "error")
        .output()
        .expect("run mxgate");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_one_line_exit_2(args: &[&str], names: &str) {
    let (status, stderr) = run_to_exit(args);
    assert_eq!(status, Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
    assert!(
        stderr.contains(names),
        "{args:?}: {stderr:?} should name {names}"
    );
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.txt");
    std::fs::write(&table, support::TABLE).unwrap();
    let table = table.to_str().unwrap();
    let bad_table = dir.path().join("bad.txt");
    std::fs::write(&bad_table, "alice@example.com\nnot-an-address\n").unwrap();
    let config = dir.path().join("mx.toml");
    std::fs::write(&config, "workers = 1\nlisten-prot = 25\n").unwrap();

    assert_one_line_exit_2(&["--recipients", table, "--wrokers", "2"], "--wrokers");
    assert_one_line_exit_2(&["--recipients", table, "--workers", "many"], "--workers");
    assert_one_line_exit_2(&[], "--recipients");
    assert_one_line_exit_2(
        &["--recipients", "/nonexistent/table.txt"],
        "/nonexistent/table.txt",
    );
    assert_one_line_exit_2(&["--recipients", bad_table.to_str().unwrap()], "line 2");
    assert_one_line_exit_2(
        &["--recipients", table, "--config", config.to_str().unwrap()],
        "listen-prot",
    );
    assert_one_line_exit_2(
        &["--recipients", table, "--allow-empty-table", "maybe"],
        "maybe",
    );
}

#[test]
fn start_up_failures_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.txt");
    std::fs::write(&table, support::TABLE).unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "# nothing yet\n").unwrap();
    let spool = dir.path().join("spool").display().to_string();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let start = |recipients: &std::path::Path, spool: &str, listen: &str| {
        let recipients = recipients.to_str().unwrap();
        let args = [
            "--recipients",
            recipients,
            "--spool",
            spool,
            "--listen",
            listen,
        ];
        let more = ["--workers", "1", "--backend", "epoll"];
        let args: Vec<&str> = args.iter().chain(&more).copied().collect();
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let check = |args: Vec<String>, names: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_one_line_exit_2(&args, names);
    };
    check(start(&empty, &spool, "127.0.0.1:0"), "has no entries");
    check(start(&table, &spool, &busy), &busy);
    // A spool directory that cannot be created: its parent is a file.
    let unusable = table.join("spool").display().to_string();
    check(start(&table, &unusable, "127.0.0.1:0"), &unusable);
}

#[test]
fn a_config_file_takes_one_listen_string_and_paths_relative_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(etc.join("table.txt"), support::TABLE).unwrap();
    let config = etc.join("mx.toml");
    let text =
        "listen = \"127.0.0.1:0\"\nrecipients = \"table.txt\"\nspool = \"spool\"\nworkers = 1\n";
    std::fs::write(&config, text).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_mxgate"));
    command
        .args(["--config", config.to_str().unwrap(), "--backend", "epoll"])
        .current_dir(elsewhere.path())
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info");
    let log = log_until_ready(command);
    assert!(log.contains("entries=3 domains=2"), "{log}");
    let ready = log
        .lines()
        .find(|l| l.contains("mxgate ready"))
        .unwrap_or("");
    let files = format!("config {}, profile none", config.display());
    assert!(ready.contains(&files), "{log}");
    assert!(etc.join("spool/new").is_dir(), "spool not beside the file");
    assert!(!elsewhere.path().join("spool").exists());
}

#[test]
fn help_exits_0() {
    let output = Command::new(env!("CARGO_BIN_EXE_mxgate"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("--recipients"));
}

/// Installs a seccomp filter that refuses `io_uring_setup` (425 on every
/// Linux architecture) with EPERM, as a container profile would, then
/// execs its arguments.
const NO_IO_URING: &str = r#"
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
code = lambda c, jt, jf, k: struct.pack("HBBI", c, jt, jf, k)
prog = (code(0x20, 0, 0, 0) + code(0x15, 0, 1, 425)
        + code(0x06, 0, 0, 0x50000 | 1) + code(0x06, 0, 0, 0x7FFF0000))
buf = ctypes.create_string_buffer(prog)
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fprog = Fprog(4, ctypes.addressof(buf))
assert libc.prctl(38, 1, 0, 0, 0) == 0
assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0
os.execv(sys.argv[1], sys.argv[1:])
"#;

/// mxgate with io_uring refused by seccomp; `None` (test skipped, said
/// why) without python3.
fn mxgate_without_io_uring(args: &[&str]) -> Option<Command> {
    if Command::new("python3").arg("-V").output().is_err() {
        eprintln!("skipping: python3 is needed to install the seccomp filter");
        return None;
    }
    let mut command = Command::new("python3");
    command
        .args(["-c", NO_IO_URING, env!("CARGO_BIN_EXE_mxgate")])
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info");
    Some(command)
}

#[test]
fn backend_uring_without_io_uring_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.txt");
    std::fs::write(&table, support::TABLE).unwrap();
    let args = [
        "--recipients",
        table.to_str().unwrap(),
        "--backend",
        "uring",
    ];
    let Some(mut command) = mxgate_without_io_uring(&args) else {
        return;
    };
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("io_uring_disabled"), "{stderr}");
}

#[test]
fn backend_auto_without_io_uring_says_so_once_and_runs_on_epoll() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.txt");
    std::fs::write(&table, support::TABLE).unwrap();
    let args = support::base_args(dir.path(), &[]);
    let args: Vec<&str> = args[1..].iter().map(String::as_str).collect();
    let Some(command) = mxgate_without_io_uring(&args) else {
        return;
    };
    let log = log_until_ready(command);
    let said = log.lines().filter(|l| l.contains("io_uring unavailable"));
    assert_eq!(said.count(), 1, "{log}");
    assert!(log.contains("using epoll"), "{log}");
    assert!(log.contains("backend=Epoll"), "{log}");
}

/// Runs `command` until its log says `mxgate ready`, then kills it;
/// returns the log up to there.
fn log_until_ready(mut command: Command) -> String {
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("mxgate ready") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    log
}

/// Asks RCPT for `address` in `session` until the reply code is `code`.
fn rcpt_until(session: &mut Client, address: &str, code: u16) -> bool {
    wait_until(Duration::from_secs(10), || {
        session.send(format!("RCPT TO:<{address}>\r\n").as_bytes());
        session.reply().code == code
    })
}

fn sighup_reloads_the_table_under_open_sessions(backend: Backend) {
    let mut server = BinServer::start(tempfile::tempdir().unwrap(), backend, &[]);
    let table = server.path().join("table.txt");
    let mut session = server.client();
    session.hello();
    session.cmd("MAIL FROM:<s@remote.example>", 250);
    session.cmd("RCPT TO:<carol@example.com>", 550);

    std::fs::write(&table, format!("{}carol@example.com\n", support::TABLE)).unwrap();
    server.signal("HUP");
    assert!(
        rcpt_until(&mut session, "carol@example.com", 250),
        "reload not seen"
    );

    // A table that cannot be read: the old one stays. (An empty table is
    // refused the same way: tests/reload.rs; two SIGHUPs in a row may
    // arrive as one, so this test sends one per refusal it can observe.)
    std::fs::remove_file(&table).unwrap();
    server.signal("HUP");
    let mut other = server.client();
    other.hello();
    other.cmd("MAIL FROM:<s@remote.example>", 250);
    assert!(rcpt_until(&mut other, "carol@example.com", 250));
    session.cmd("DATA", 354);
    session.send(b"Subject: after reload\r\n\r\nhi\r\n.\r\n");
    queue_id(&session.expect(250));
    session.cmd("QUIT", 221);
    other.cmd("QUIT", 221);

    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status, Some(0), "{log}");
    assert!(log.contains("recipient table reloaded"), "{log}");
    assert!(
        log.contains("reload failed; keeping the old table"),
        "{log}"
    );
}

fn sigterm_drains_transactions_in_flight_then_exits_0(backend: Backend) {
    let mut server = BinServer::start(
        tempfile::tempdir().unwrap(),
        backend,
        &["--drain-timeout", "20"],
    );
    let spool = server.path().join("spool");
    let mut idle = server.client();
    idle.hello();
    let mut busy = server.client();
    busy.hello();
    busy.open_data("alice@example.com");
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n");

    server.signal("TERM");
    let bye = idle.expect(421);
    assert!(bye.starts_with("421 4.3.2"), "{bye}");
    assert!(idle.closed());

    busy.send(b"second half\r\n.\r\n");
    let id = queue_id(&busy.expect(250));
    busy.expect(421);
    assert!(busy.closed());

    let (status, log) = server.wait();
    assert_eq!(status, Some(0), "{log}");
    let spooled = files_in(&spool.join("new"));
    assert_eq!(spooled.len(), 1, "{spooled:?}");
    assert!(spooled[0].ends_with(format!("{id}.bsmtp")));
    let file = std::fs::read(&spooled[0]).unwrap();
    assert!(file.ends_with(b"\r\nSubject: in flight\r\n\r\nfirst half\r\nsecond half\r\n.\r\n"));
    assert!(
        files_in(&spool.join("tmp")).is_empty(),
        "half-written files left in tmp/"
    );
    assert!(
        log.contains("outcome=\"shutdown\"") || log.contains("outcome=shutdown"),
        "{log}"
    );
}

fn discard_mode_warns_loudly(backend: Backend) {
    let mut server = BinServer::start(
        tempfile::tempdir().unwrap(),
        backend,
        &["--spool-mode", "discard"],
    );
    let mut c = server.client();
    c.hello();
    c.open_data("alice@example.com");
    c.send(b"dropped\r\n.\r\n");
    queue_id(&c.expect(250));
    c.cmd("QUIT", 221);
    server.signal("INT");
    let spool = server.path().join("spool");
    let (status, log) = server.wait();
    assert_eq!(status, Some(0));
    assert!(log.contains("DISCARD"), "{log}");
    assert!(files_in(&spool.join("new")).is_empty());
}

fn spool_sync_fdatasync_commits_each_message(backend: Backend) {
    let mut server = BinServer::start(
        tempfile::tempdir().unwrap(),
        backend,
        &["--spool-sync", "fdatasync"],
    );
    let mut ids = Vec::new();
    for n in 0..3 {
        let mut c = server.client();
        c.hello();
        c.open_data("alice@example.com");
        c.send(format!("Subject: {n}\r\n\r\nsynced one by one\r\n.\r\n").as_bytes());
        ids.push(queue_id(&c.expect(250)));
        c.cmd("QUIT", 221);
    }
    server.signal("TERM");
    let spool = server.path().join("spool");
    let (status, log) = server.wait();
    assert_eq!(status, Some(0), "{log}");
    let spooled = files_in(&spool.join("new"));
    assert_eq!(spooled.len(), 3, "{spooled:?}");
    for id in ids {
        assert!(spooled.iter().any(|f| f.ends_with(format!("{id}.bsmtp"))));
    }
    assert!(files_in(&spool.join("tmp")).is_empty());
}

fn a_second_sigterm_stops_without_waiting_for_the_drain(backend: Backend) {
    let mut server = BinServer::start(
        tempfile::tempdir().unwrap(),
        backend,
        &["--drain-timeout", "120"],
    );
    let mut busy = server.client();
    busy.hello();
    busy.open_data("alice@example.com");
    busy.send(b"Subject: never finished\r\n");
    server.signal("TERM");
    // Listeners close when the drain begins.
    let addr = server.addr;
    assert!(wait_until(Duration::from_secs(10), || Client::try_connect(
        addr
    )
    .is_none()));
    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status, Some(1), "{log}");
    assert!(log.contains("second signal"), "{log}");
    assert!(files_in(&server.path().join("spool/new")).is_empty());
}

support::backend_tests!(
    sighup_reloads_the_table_under_open_sessions,
    sigterm_drains_transactions_in_flight_then_exits_0,
    discard_mode_warns_loudly,
    spool_sync_fdatasync_commits_each_message,
    a_second_sigterm_stops_without_waiting_for_the_drain,
);
