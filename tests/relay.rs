//! The relay end to end: messages accepted by mxgate over loopback reach a
//! next hop — Postfix's smtp-sink, a private Postfix delivering to
//! maildirs, Dovecot's LMTP over TCP and a unix socket, a scripted hop for
//! the faults — and every accepted message ends delivered or in `dead/`
//! with a `.reason`; nothing is lost, nothing bounced, no busy loop.

#[path = "relay/hop.rs"]
mod hop;
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hop::{say, Act, Hop};
use mxgate::config::Backend;
use support::next_hop::{free_addr, Dovecot, SmtpSink};
use support::peers::{Postfix, DELIVERY_LIMIT};
use support::{files_in, queue_id, wait_until, TestServer};

/// How long a relay test waits for the spool to drain.
const DRAIN: Duration = Duration::from_secs(20);

/// mxgate relaying to `url`, retrying after 1 s (at most 2 s), waiting
/// at most 2 s for any reply, unless `extra` says otherwise.
fn relay_to(url: &str, extra: &[&str]) -> TestServer {
    relay_on(Backend::Epoll, url, extra)
}

/// [`relay_to`] on `backend`.
fn relay_on(backend: Backend, url: &str, extra: &[&str]) -> TestServer {
    let mut args = vec!["--relay-to", url];
    for (flag, value) in [("--relay-backoff", "1,2"), ("--relay-timeout", "2")] {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
    TestServer::start(backend, &args)
}

/// Submits one message for `rcpts` (each accepted); returns its queue id.
fn submit(server: &TestServer, rcpts: &[&str], subject: &str) -> String {
    let mut client = server.client();
    client.hello();
    client.cmd("MAIL FROM:<s@remote.example>", 250);
    for rcpt in rcpts {
        client.cmd(&format!("RCPT TO:<{rcpt}>"), 250);
    }
    client.cmd("DATA", 354);
    let body = format!("Subject: {subject}\r\n\r\n..leading dot\r\nbody\r\n.\r\n");
    client.send(body.as_bytes());
    let line = client.expect(250);
    client.cmd("QUIT", 221);
    queue_id(&line)
}

fn new_files(server: &TestServer) -> Vec<PathBuf> {
    files_in(&server.spool_dir().join("new"))
}

fn dead_files(server: &TestServer) -> Vec<String> {
    files_in(&server.spool_dir().join("dead"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn drained(server: &TestServer) -> bool {
    wait_until(DRAIN, || new_files(server).is_empty())
}

fn reason(server: &TestServer, name: &str) -> String {
    let path = server
        .spool_dir()
        .join("dead")
        .join(format!("{name}.reason"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

support::backend_tests!(smtp_sink_receives_every_message_as_spooled);

fn smtp_sink_receives_every_message_as_spooled(backend: Backend) {
    let addr = free_addr();
    let sink = SmtpSink::start(addr, &[]);
    let server = relay_on(backend, &format!("smtp://{addr}"), &[]);
    for n in 0..20 {
        submit(
            &server,
            &["alice@example.com", "bob@example.com"],
            &format!("m{n}"),
        );
    }
    assert!(drained(&server), "left in new/: {:?}", new_files(&server));
    wait_until(DRAIN, || sink.received().len() == 20);
    let dumps = sink.received();
    assert_eq!(dumps.len(), 20, "smtp-sink got {} messages", dumps.len());
    for dump in &dumps {
        assert!(dump.contains("mxgate) with ESMTP id "), "{dump}");
        // Sent stuffed, spooled stuffed, relayed stuffed: one dot arrives.
        assert!(dump.contains("\n.leading dot\n"), "{dump}");
    }
    assert!(dead_files(&server).is_empty());
    // Delivered files are kept, emptied, for the spool's next messages.
    let free = files_in(&server.spool_dir().join("free"));
    assert!(!free.is_empty(), "no file recycled");
    assert!(free
        .iter()
        .all(|f| std::fs::metadata(f).unwrap().len() == 0));
    server.stop();
}

#[test]
fn smtp_sink_hard_refusal_dead_letters_with_the_reply() {
    let addr = free_addr();
    let sink = SmtpSink::start(addr, &["-f", "RCPT", "-B", "550 5.1.1 Error: no such user"]);
    let server = relay_to(&format!("smtp://{addr}"), &[]);
    let id = submit(&server, &["alice@example.com"], "refused");
    assert!(drained(&server));
    assert_eq!(
        dead_files(&server),
        [format!("{id}.bsmtp"), format!("{id}.reason")]
    );
    let why = reason(&server, &id);
    assert_eq!(why, "<alice@example.com>: 550 5.1.1 Error: no such user\n");
    assert!(sink.received().is_empty());
    server.stop();
}

#[test]
fn smtp_sink_soft_refusal_keeps_the_message_for_later() {
    let addr = free_addr();
    let _sink = SmtpSink::start(addr, &["-r", "."]);
    let (dir, spool) = own_spool();
    let server = relay_to(&format!("smtp://{addr}"), &["--spool", &spool]);
    let id = submit(&server, &["alice@example.com"], "later");
    std::thread::sleep(Duration::from_secs(3));
    server.stop();
    let left = files_in(&dir.path().join("spool/new"));
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with(format!("{id}.bsmtp")));
    assert!(files_in(&dir.path().join("spool/dead")).is_empty());
}

/// A spool directory that outlives the server (a [`TestServer`]'s goes
/// with it): the temporary directory and the `--spool` value.
fn own_spool() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool").display().to_string();
    (dir, spool)
}

#[test]
fn postfix_as_next_hop_gets_every_message_once_and_refuses_one_user() {
    let addr = free_addr();
    let postfix = Postfix::next_hop(addr, &["alice@example.com", "@catchall.example"]);
    let server = relay_to(&format!("smtp://{addr}"), &[]);
    for n in 0..5 {
        submit(&server, &["alice@example.com"], &format!("p{n}"));
    }
    let id = submit(&server, &["x@catchall.example", "bob@example.com"], "mixed");
    assert!(drained(&server), "left in new/: {:?}", new_files(&server));
    let arrived = wait_until(DELIVERY_LIMIT, || {
        postfix.delivered("alice@example.com").len() == 5
            && postfix.delivered("@catchall.example").len() == 1
    });
    assert!(arrived, "Postfix's log:\n{}", postfix.log());
    // Postfix knows no bob: his copy is dead, with Postfix's reply.
    let why = reason(&server, &id);
    assert!(why.starts_with("<bob@example.com>: 550 5.1.1"), "{why}");
    server.stop();
}

#[test]
fn dovecot_lmtp_decides_each_recipient_over_tcp_and_a_unix_socket() {
    let dovecot = Dovecot::start(free_addr(), &["alice@example.com", "x@catchall.example"]);
    let socket = format!("lmtp:{}", dovecot.socket().display());
    for (n, url) in [format!("lmtp://{}", dovecot.addr), socket]
        .iter()
        .enumerate()
    {
        let server = relay_to(url, &[]);
        let rcpts = ["alice@example.com", "bob@example.com", "x@catchall.example"];
        let id = submit(&server, &rcpts, &format!("lmtp{n}"));
        assert!(drained(&server), "{url}: left in new/; {}", dovecot.log());
        assert_eq!(dovecot.delivered("alice@example.com").len(), n + 1, "{url}");
        assert_eq!(
            dovecot.delivered("x@catchall.example").len(),
            n + 1,
            "{url}"
        );
        // Only bob, unknown to Dovecot, is in dead/: a copy for him alone.
        assert_eq!(
            dead_files(&server),
            [format!("{id}.bsmtp"), format!("{id}.reason")]
        );
        let why = reason(&server, &id);
        assert!(why.starts_with("<bob@example.com>: 550 5.1.1"), "{why}");
        let dead = std::fs::read_to_string(server.spool_dir().join(format!("dead/{id}.bsmtp")));
        let dead = dead.unwrap();
        assert!(
            dead.contains("RCPT TO:<bob@example.com>\r\nDATA\r\n"),
            "{dead}"
        );
        assert!(!dead.contains("alice"), "{dead}");
        server.stop();
    }
}

#[test]
fn a_421_greeting_is_retried_after_the_backoff_without_a_busy_loop() {
    let hop = Hop::start(|command, n| match (command, n) {
        ("CONNECT", 1 | 2) => Some(Act::SayAndClose("421 4.3.2 busy\r\n".into())),
        _ => None,
    });
    let server = relay_to(&hop.url(), &[]);
    submit(&server, &["alice@example.com"], "busy");
    assert!(drained(&server));
    assert_eq!(hop.delivered().len(), 1);
    // Two refusals, each holding the relay for the 1 s backoff: a few
    // connections, not a storm.
    assert!(hop.connections() <= 4, "{} connections", hop.connections());
    server.stop();
}

#[test]
fn recipients_refused_with_452_are_delivered_later_and_only_they() {
    let hop = Hop::start(|command, n| match (command, n) {
        ("RCPT TO:<BOB@EXAMPLE.COM>", 1) => Some(say("452 4.2.2 mailbox full")),
        _ => None,
    });
    let server = relay_to(&hop.url(), &[]);
    submit(&server, &["alice@example.com", "bob@example.com"], "two");
    assert!(drained(&server));
    let delivered = hop.delivered();
    let rcpts: Vec<&[String]> = delivered.iter().map(|d| &d.rcpts[..]).collect();
    assert_eq!(rcpts, [["<ALICE@EXAMPLE.COM>"], ["<BOB@EXAMPLE.COM>"]]);
    // The rest is the same message, Received line and all.
    assert_eq!(delivered[0].data, delivered[1].data);
    assert!(delivered[1].data.contains("Subject: two"));
    assert!(dead_files(&server).is_empty());
    server.stop();
}

#[test]
fn a_5xx_for_data_dead_letters_and_the_rest_of_the_queue_goes_on() {
    let hop = Hop::start(|command, _| match command {
        "." => Some(say("554 5.6.0 content refused")),
        _ => None,
    });
    let server = relay_to(&hop.url(), &[]);
    let id = submit(
        &server,
        &["alice@example.com", "bob@example.com"],
        "refused",
    );
    assert!(drained(&server));
    assert!(reason(&server, &id).contains("<bob@example.com>: 554 5.6.0 content refused"));
    assert!(hop.delivered().is_empty());
    server.stop();
}

#[test]
fn a_hop_that_hangs_after_the_data_gets_the_message_again() {
    let hop = Hop::start(|command, n| match (command, n) {
        (".", 1) => Some(Act::Hang),
        _ => None,
    });
    let server = relay_to(&hop.url(), &[]);
    submit(&server, &["alice@example.com"], "hang");
    assert!(drained(&server));
    assert_eq!(hop.delivered().len(), 1);
    server.stop();
}

#[test]
fn closing_mid_reply_and_garbage_are_retried() {
    let hop = Hop::start(|command, n| match (command, n) {
        (".", 1) => Some(Act::SayAndClose("250-2.0.0 Ok".into())),
        ("EHLO MX.TEST", 2) => Some(say("hello, this is not SMTP")),
        _ => None,
    });
    let server = relay_to(&hop.url(), &[]);
    submit(&server, &["alice@example.com"], "flaky");
    assert!(drained(&server));
    assert_eq!(hop.delivered().len(), 1);
    assert!(hop.connections() >= 3);
    server.stop();
}

#[test]
fn a_message_past_its_max_age_goes_to_dead_with_the_last_reply() {
    let hop = Hop::start(|command, _| match command {
        "." => Some(say("451 4.3.0 try again")),
        _ => None,
    });
    let server = relay_to(&hop.url(), &["--relay-max-age", "1"]);
    let id = submit(&server, &["alice@example.com"], "old");
    assert!(drained(&server));
    let why = reason(&server, &id);
    assert!(
        why.contains("<alice@example.com>: 451 4.3.0 try again"),
        "{why}"
    );
    assert!(why.contains("gave up after"), "{why}");
    server.stop();
}

#[test]
fn a_file_that_is_not_bsmtp_goes_to_dead_once_and_the_rest_is_delivered() {
    let hop = Hop::start(|_, _| None);
    let (dir, spool) = own_spool();
    let new = dir.path().join("spool/new");
    std::fs::create_dir_all(&new).unwrap();
    std::fs::write(new.join("junk.bsmtp"), b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let server = relay_to(&hop.url(), &["--spool", &spool]);
    submit(&server, &["alice@example.com"], "fine");
    assert!(wait_until(DRAIN, || files_in(&new).is_empty()));
    let dead = dir.path().join("spool/dead");
    let why = std::fs::read_to_string(dead.join("junk.reason")).unwrap();
    assert!(
        why.starts_with("mxgate: not a valid BSMTP spool file:"),
        "{why}"
    );
    assert_eq!(hop.delivered().len(), 1);
    server.stop();
}

#[test]
fn a_hop_down_costs_no_cpu_and_loses_nothing() {
    let addr = free_addr(); // nobody listens
    let server = relay_to(&format!("smtp://{addr}"), &[]);
    submit(&server, &["alice@example.com"], "waiting");
    let before = support::cpu_ticks(std::process::id());
    std::thread::sleep(Duration::from_secs(3));
    let used = support::cpu_ticks(std::process::id()) - before;
    assert!(used < 50, "{used} ticks of CPU in 3 s with the hop down");
    assert_eq!(new_files(&server).len(), 1);
    // It comes up: the message goes.
    let sink = SmtpSink::start(addr, &[]);
    assert!(drained(&server));
    wait_until(DRAIN, || sink.received().len() == 1);
    assert_eq!(sink.received().len(), 1);
    server.stop();
}

#[test]
fn shutdown_does_not_wait_for_a_hung_hop_and_keeps_the_message() {
    let hop = Hop::start(|command, _| match command {
        "." => Some(Act::Hang),
        _ => None,
    });
    let (dir, spool) = own_spool();
    let server = relay_to(&hop.url(), &["--relay-timeout", "60", "--spool", &spool]);
    submit(&server, &["alice@example.com"], "stuck");
    wait_until(DRAIN, || hop.connections() == 1);
    std::thread::sleep(Duration::from_millis(300));
    let new = dir.path().join("spool/new");
    let started = Instant::now();
    server.stop();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(files_in(&new).len(), 1);
}

#[test]
fn metrics_count_outcomes_connections_and_the_queue() {
    let hop = Hop::start(|command, _| match command {
        "RCPT TO:<BOB@EXAMPLE.COM>" => Some(say("550 5.1.1 no bob")),
        "RCPT TO:<X@CATCHALL.EXAMPLE>" => Some(say("451 4.3.0 later")),
        _ => None,
    });
    let server = relay_to(&hop.url(), &["--metrics", "127.0.0.1:0"]);
    let rcpts = ["alice@example.com", "bob@example.com", "x@catchall.example"];
    submit(&server, &rcpts, "counted");
    let metrics = server.handle.as_ref().unwrap().metrics_addr().unwrap();
    let outcome = |name: &str| format!("mxgate_relay_recipients_total{{outcome=\"{name}\"}}");
    let counted = wait_until(DRAIN, || {
        let samples = support::scrape(metrics);
        samples.get(&outcome("deferred")).is_some_and(|&n| n >= 1.0)
    });
    assert!(counted, "{:?}", support::scrape(metrics));
    let samples = support::scrape(metrics);
    assert_eq!(samples[&outcome("delivered")], 1.0);
    assert_eq!(samples[&outcome("dead")], 1.0);
    // Narrowed to the deferred recipient, still queued and counted.
    assert_eq!(samples["mxgate_relay_queue_messages"], 1.0);
    assert_eq!(samples["mxgate_spool_depth_messages"], 1.0);
    assert!(samples["mxgate_relay_connections"] <= 1.0);
    assert!(samples["mxgate_relay_reply_seconds_count"] >= 2.0);
    assert!(samples.contains_key("mxgate_relay_oldest_message_age_seconds"));
    server.stop();
}

#[test]
fn mxgate_relays_to_mxgate_byte_for_byte_what_it_found_at_start_up() {
    let next = TestServer::start(Backend::Epoll, &[]);
    // Accepted while no relay runs; a relaying mxgate then starts on it.
    let (dir, spool) = own_spool();
    let receiving = TestServer::start(Backend::Epoll, &["--spool", &spool]);
    let id = submit(&receiving, &["alice@example.com", "bob@example.com"], "hop");
    receiving.stop();
    let file = dir.path().join(format!("spool/new/{id}.bsmtp"));
    let ours = std::fs::read_to_string(&file).unwrap();
    let server = relay_to(&format!("smtp://{}", next.addr), &["--spool", &spool]);
    assert!(wait_until(DRAIN, || !file.exists()));
    assert!(wait_until(DRAIN, || next.spooled().len() == 1));
    let relayed = std::fs::read_to_string(&next.spooled()[0]).unwrap();
    // The next mxgate's file is ours with its own Received line added.
    let (envelope, body) = ours.split_once("DATA\r\n").unwrap();
    let (_, after) = relayed.split_once("(mxgate) with ESMTP id ").unwrap();
    let (_, after) = after.split_once("\r\n").unwrap();
    assert_eq!(after, body);
    assert!(relayed.starts_with(envelope), "{relayed}");
    server.stop();
    next.stop();
}
