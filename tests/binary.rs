//! The real `mxgate` binary: exit status 2 and one line on bad input,
//! SIGHUP reloading the table under open sessions, SIGTERM draining
//! transactions in flight and exiting 0.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{files_in, queue_id, wait_until, BinServer, Client};

/// Runs the binary to completion; returns (status, stderr).
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mxgate"))
        .args(args)
        .env("NO_COLOR", "1")
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

/// Asks RCPT for `address` in `session` until the reply code is `code`.
fn rcpt_until(session: &mut Client, address: &str, code: u16) -> bool {
    wait_until(Duration::from_secs(10), || {
        session.send(format!("RCPT TO:<{address}>\r\n").as_bytes());
        session.reply().code == code
    })
}

#[test]
fn sighup_reloads_the_table_under_open_sessions() {
    let mut server = BinServer::start(tempfile::tempdir().unwrap(), &[]);
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

    // A table that cannot be read: the old one stays.
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

#[test]
fn sigterm_drains_transactions_in_flight_then_exits_0() {
    let mut server = BinServer::start(tempfile::tempdir().unwrap(), &["--drain-timeout", "20"]);
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

#[test]
fn discard_mode_warns_loudly() {
    let mut server = BinServer::start(tempfile::tempdir().unwrap(), &["--spool-mode", "discard"]);
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

#[test]
fn a_second_sigterm_stops_without_waiting_for_the_drain() {
    let mut server = BinServer::start(tempfile::tempdir().unwrap(), &["--drain-timeout", "120"]);
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
