//! Milters at end of data, over loopback, on each backend, against a small
//! scripted milter in this file (the fuller one is tests/peers/milter.py):
//! a rejection with the milter's own reply
//! and nothing spooled; headers a milter adds in the spooled file after the
//! Received line; quarantine and discard; a milter that is down, or
//! silent past `--milter-timeout`, gives `--milter-default`; pipelined
//! commands behind a checked message are answered in order; each check
//! is one conversation per session; a recipient a milter refuses is
//! refused at RCPT, and one that declines RCPT is not asked or waited for
//! there (tests/peers/milter.py). The real milters (clamd + clamav-milter, rspamd) are
//! tests/milters_real.rs.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mxgate::config::Backend;
use support::milters::Scripted;
use support::{files_in, queue_id, Client, TestServer};

/// What the scripted milter answers at end of message.
#[derive(Clone)]
struct Script {
    /// Reply packets (code, data) at end of message.
    end_of_message: Vec<(u8, Vec<u8>)>,
    /// Waits this long before them.
    delay: Duration,
    /// The reply packet to a RCPT whose address starts with `bad`.
    bad_rcpt: (u8, Vec<u8>),
}

/// A milter on a loopback port answering every stage with continue and
/// end of message with its script; counts the connections it took.
struct ScriptedMilter {
    addr: String,
    connections: Arc<AtomicUsize>,
}

impl ScriptedMilter {
    /// The same milter on a unix socket at `path`.
    fn start_unix(script: Script, path: &std::path::Path) -> ScriptedMilter {
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        let addr = format!("unix:{}", path.display());
        let streams = std::iter::repeat_with(move || listener.accept());
        ScriptedMilter::serving(addr, script, streams.filter_map(|a| Some(a.ok()?.0)))
    }

    fn start(script: Script) -> ScriptedMilter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("inet:{}", listener.local_addr().unwrap());
        let streams = std::iter::repeat_with(move || listener.accept());
        ScriptedMilter::serving(addr, script, streams.filter_map(|a| Some(a.ok()?.0)))
    }

    /// Serves each connection `streams` yields with `script`, on a thread
    /// of its own, counting them.
    fn serving<S>(
        addr: String,
        script: Script,
        streams: impl Iterator<Item = S> + Send + 'static,
    ) -> ScriptedMilter
    where
        S: Read + Write + Send + 'static,
    {
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        std::thread::spawn(move || {
            for stream in streams {
                count.fetch_add(1, Ordering::SeqCst);
                let script = script.clone();
                std::thread::spawn(move || serve(stream, &script));
            }
        });
        ScriptedMilter { addr, connections }
    }
}

fn packet(code: u8, data: &[u8]) -> Vec<u8> {
    let mut out = (u32::try_from(data.len() + 1).unwrap())
        .to_be_bytes()
        .to_vec();
    out.push(code);
    out.extend_from_slice(data);
    out
}

/// One milter connection: reads packets and answers them until EOF.
fn serve(mut stream: impl Read + Write, script: &Script) {
    loop {
        let mut head = [0u8; 4];
        if stream.read_exact(&mut head).is_err() {
            return;
        }
        let mut data = vec![0; u32::from_be_bytes(head) as usize];
        if stream.read_exact(&mut data).is_err() {
            return;
        }
        let reply = match data[0] {
            // Version 6; add/change headers and quarantine; every stage.
            b'O' => packet(b'O', &[0, 0, 0, 6, 0, 0, 0, 0x31, 0, 0, 0, 0]),
            b'D' | b'A' | b'K' => continue,
            b'Q' => return,
            b'R' if data[1..].starts_with(b"<bad") => packet(script.bad_rcpt.0, &script.bad_rcpt.1),
            b'E' => {
                std::thread::sleep(script.delay);
                let replies = script.end_of_message.iter();
                replies
                    .flat_map(|(code, data)| packet(*code, data))
                    .collect()
            }
            _ => packet(b'c', b""),
        };
        if stream.write_all(&reply).is_err() {
            return;
        }
    }
}

fn eom(replies: &[(u8, &[u8])]) -> Script {
    Script {
        end_of_message: replies.iter().map(|(c, d)| (*c, d.to_vec())).collect(),
        delay: Duration::ZERO,
        bad_rcpt: (b'c', Vec::new()),
    }
}

/// Sends one message; returns the reply to its end.
fn send_message(server: &TestServer, subject: &str) -> String {
    let mut c = server.client();
    c.hello();
    c.open_data("alice@example.com");
    c.send(format!("Subject: {subject}\r\n\r\n.. dotted\r\nbody\r\n.\r\n").as_bytes());
    let reply = c.reply();
    c.cmd("QUIT", 221);
    reply.lines.join("\n")
}

/// The spooled file of message `id`.
fn spooled_text(server: &TestServer, id: &str) -> String {
    let path = server.spool_dir().join("new").join(format!("{id}.bsmtp"));
    std::fs::read_to_string(path).expect("spooled")
}

fn start(backend: Backend, milter: &ScriptedMilter, extra: &[&str]) -> TestServer {
    let mut flags = vec!["--milter", milter.addr.as_str(), "--milter-timeout", "1"];
    flags.extend_from_slice(extra);
    TestServer::start(backend, &flags)
}

/// The `/metrics` sample `name` of `milter` with more `labels` (`,k="v"`),
/// if the server (started with `--metrics`) has it.
fn milter_sample(server: &TestServer, name: &str, milter: &str, labels: &str) -> Option<f64> {
    let samples = server.scrape();
    samples
        .get(&format!("{name}{{milter=\"{milter}\"{labels}}}"))
        .copied()
}

fn a_rejection_is_passed_through_and_nothing_spooled(backend: Backend) {
    let milter = ScriptedMilter::start(eom(&[(b'y', b"554 5.7.1 virus found\0")]));
    let server = start(backend, &milter, &["--metrics", "127.0.0.1:0"]);
    assert_eq!(send_message(&server, "eicar"), "554 5.7.1 virus found");
    let sample = |name, labels| milter_sample(&server, name, &milter.addr, labels);
    let reject = sample("mxgate_milter_verdicts_total", ",action=\"reject\"");
    assert_eq!(reject, Some(1.0));
    // Once for the recipient, once for the message.
    assert_eq!(sample("mxgate_milter_latency_seconds_count", ""), Some(2.0));
    let plain = ScriptedMilter::start(eom(&[(b'r', b"")]));
    let other = start(backend, &plain, &[]);
    let reply = send_message(&other, "spam");
    assert!(reply.starts_with("550 5.7.1 "), "{reply}");
    assert!(server.spooled().is_empty() && other.spooled().is_empty());
    server.stop();
    other.stop();
}

/// `mxgate_milter_verdicts_total` counts what an operator means: one
/// verdict per message, plus the recipients refused at RCPT; accepted
/// recipients are not counted again (the latency summary has every check).
fn verdicts_count_each_message_once(backend: Backend) {
    let mut script = eom(&[(b'a', b"")]);
    script.bad_rcpt = (b'r', Vec::new());
    let milter = ScriptedMilter::start(script);
    let server = start(backend, &milter, &["--metrics", "127.0.0.1:0"]);
    let mut c = server.client();
    c.hello();
    let rcpts = [
        ("<alice@example.com>", 250),
        ("<bad@catchall.example>", 550),
        ("<bob@example.com>", 250),
    ];
    queue_id(c.transaction(&rcpts, "counted").last());
    c.cmd("QUIT", 221);
    let sample = |name, labels| milter_sample(&server, name, &milter.addr, labels);
    let verdicts = "mxgate_milter_verdicts_total";
    assert_eq!(sample(verdicts, ",action=\"accept\""), Some(1.0));
    assert_eq!(sample(verdicts, ",action=\"reject\""), Some(1.0));
    assert_eq!(sample("mxgate_milter_latency_seconds_count", ""), Some(4.0));
    server.stop();
}

/// mxgate with a milter answering end of message with `replies`; one
/// message with `subject` sent and queued: the server and its queue id.
fn queued_through(
    backend: Backend,
    replies: &[(u8, &[u8])],
    subject: &str,
) -> (TestServer, String) {
    let milter = ScriptedMilter::start(eom(replies));
    let server = start(backend, &milter, &[]);
    let id = queue_id(&send_message(&server, subject));
    (server, id)
}

fn added_headers_follow_the_received_line(backend: Backend) {
    let replies: &[(u8, &[u8])] = &[(b'h', b"X-Scanned\0clean\0"), (b'a', b"")];
    let (server, id) = queued_through(backend, replies, "hello");
    let text = spooled_text(&server, &id);
    let lines: Vec<&str> = text.lines().collect();
    let received = lines
        .iter()
        .position(|l| l.starts_with("Received: "))
        .unwrap();
    assert_eq!(lines[received + 1], "X-Scanned: clean", "{text}");
    assert_eq!(lines[received + 2], "Subject: hello", "{text}");
    assert!(
        text.contains("\r\n.. dotted\r\nbody\r\n.\r\n"),
        "body as received: {text}"
    );
    server.stop();
}

fn quarantine_and_discard(backend: Backend) {
    let replies: &[(u8, &[u8])] = &[(b'q', b"suspicious\0"), (b'c', b"")];
    let (server, id) = queued_through(backend, replies, "odd");
    let quarantine = server.spool_dir().join("quarantine");
    let reason = std::fs::read_to_string(quarantine.join(format!("{id}.reason"))).unwrap();
    assert_eq!(reason, "suspicious\n");
    assert!(quarantine.join(format!("{id}.bsmtp")).is_file());
    assert!(server.spooled().is_empty());
    server.stop();

    let milter = ScriptedMilter::start(eom(&[(b'd', b"")]));
    let server = start(backend, &milter, &[]);
    let reply = send_message(&server, "drop me");
    assert!(reply.starts_with("250 "), "{reply}");
    assert!(server.spooled().is_empty());
    assert!(files_in(&server.spool_dir().join("quarantine")).is_empty());
    server.stop();
}

fn a_milter_down_gives_the_default(backend: Backend) {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = ScriptedMilter {
        addr: format!("inet:{port}"),
        connections: Arc::default(),
    };
    let server = start(backend, &down, &["--metrics", "127.0.0.1:0"]);
    let mut c = server.client();
    c.hello();
    c.cmd("MAIL FROM:<s@remote.example>", 250);
    // The first stage that waits for a milter is RCPT.
    let reply = c.cmd("RCPT TO:<alice@example.com>", 451);
    assert!(reply.starts_with("451 4.7.1 "), "{reply}");
    c.cmd("QUIT", 221);
    let failures = milter_sample(&server, "mxgate_milter_failures_total", &down.addr, "");
    assert_eq!(failures, Some(1.0));
    server.stop();
    let server = start(backend, &down, &["--milter-default", "accept"]);
    queue_id(&send_message(&server, "x"));
    assert_eq!(server.spooled().len(), 1);
    server.stop();
}

fn a_silent_milter_times_out_and_pipelining_stays_in_order(backend: Backend) {
    let mut script = eom(&[(b'a', b"")]);
    script.delay = Duration::from_secs(30);
    let milter = ScriptedMilter::start(script);
    let server = start(backend, &milter, &[]);
    let mut c = server.client();
    c.hello();
    c.open_data("alice@example.com");
    let started = Instant::now();
    c.send(b"Subject: slow\r\n\r\nbody\r\n.\r\nNOOP\r\nRSET\r\n");
    let reply = c.expect(451);
    assert!(reply.starts_with("451 4.7.1 "), "{reply}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    c.expect(250);
    c.expect(250);
    c.cmd("QUIT", 221);
    assert!(server.spooled().is_empty());
    server.stop();
}

fn each_session_has_one_milter_conversation(backend: Backend) {
    let milter = ScriptedMilter::start(eom(&[(b'c', b"")]));
    let server = start(backend, &milter, &["--workers", "1"]);
    for n in 0..3 {
        queue_id(&send_message(&server, &format!("message {n}")));
    }
    assert_eq!(server.spooled().len(), 3);
    // Per session: the recipient's check goes on to the message's (not
    // reused across sessions: src/check/pool.rs).
    assert_eq!(milter.connections.load(Ordering::SeqCst), 3);
    server.stop();
}

/// Sends one message with `body` to a fresh session; returns the reply to
/// its end.
fn send_body(server: &TestServer, body: &str) -> support::Reply {
    let mut c = server.client();
    c.hello();
    c.open_data("alice@example.com");
    let message =
        format!("Subject: real milter\r\nFrom: <s@remote.example>\r\n\r\n{body}\r\n.\r\n");
    c.send(message.as_bytes());
    let reply = c.reply();
    c.cmd("QUIT", 221);
    reply
}

fn a_recipient_the_milter_refuses_is_refused_at_rcpt(backend: Backend) {
    let mut script = eom(&[(b'c', b"")]);
    script.bad_rcpt = (
        b'y',
        b"550 5.7.1 <bad@catchall.example>: no thanks\0".to_vec(),
    );
    let milter = ScriptedMilter::start(script);
    let server = start(backend, &milter, &[]);
    let mut c = server.client();
    c.hello();
    c.cmd("MAIL FROM:<s@remote.example>", 250);
    // Pipelined: the answers come in order, the refused one in its place.
    c.send(b"RCPT TO:<alice@example.com>\r\nRCPT TO:<bad@catchall.example>\r\nRCPT TO:<bob@example.com>\r\n");
    c.expect(250);
    assert_eq!(c.expect(550), "550 5.7.1 <bad@catchall.example>: no thanks");
    c.expect(250);
    c.cmd("DATA", 354);
    c.send(b"Subject: two of three\r\n\r\nhi\r\n.\r\n");
    queue_id(&c.expect(250));
    c.cmd("QUIT", 221);
    let text = std::fs::read_to_string(&server.spooled()[0]).unwrap();
    assert!(
        text.contains("RCPT TO:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"),
        "{text}"
    );
    server.stop();

    // A milter that fails at RCPT: 451 there, under the default.
    let mut script = eom(&[(b'c', b"")]);
    script.bad_rcpt = (b't', Vec::new());
    let milter = ScriptedMilter::start(script);
    let server = start(backend, &milter, &[]);
    let mut c = server.client();
    c.hello();
    c.cmd("MAIL FROM:<s@remote.example>", 250);
    let reply = c.cmd("RCPT TO:<bad@catchall.example>", 451);
    assert!(reply.starts_with("451 4.7.1 "), "{reply}");
    c.cmd("QUIT", 221);
    server.stop();
}

/// A milter that declines RCPT (SMFIP_NORCPT) is not asked about
/// recipients once a worker knows it: after the first session, a recipient
/// gets its 250 at once (the milter is slow at MAIL, which only an RCPT
/// check would wait for). Each session is one milter conversation.
fn a_milter_that_declines_rcpt_is_not_waited_for_at_rcpt(backend: Backend) {
    let milter = Scripted::start(&["--protocol", "norcpt", "--on", "mail=sleep:2"]);
    let spec = milter.spec();
    let flags = [
        "--milter",
        &spec,
        "--milter-timeout",
        "10",
        "--workers",
        "1",
    ];
    let server = TestServer::start(backend, &flags);
    // The first session checks its recipient: the milter's steps are not
    // known yet.
    queue_id(&send_message(&server, "first"));
    let connections = |milter: &Scripted| {
        let mut conns: Vec<String> = milter
            .stage("optneg")
            .into_iter()
            .map(|r| r.session)
            .collect();
        conns.dedup();
        conns.len()
    };
    assert_eq!(connections(&milter), 1, "{:?}", milter.records());
    for n in 0..2 {
        let mut c = server.client();
        c.hello();
        c.cmd("MAIL FROM:<s@remote.example>", 250);
        let asked = Instant::now();
        c.cmd("RCPT TO:<alice@example.com>", 250);
        let waited = asked.elapsed();
        assert!(
            waited < Duration::from_secs(1),
            "RCPT {n} waited {waited:?}"
        );
        c.cmd("DATA", 354);
        c.send(b"Subject: later\r\n\r\nbody\r\n.\r\n");
        queue_id(&c.expect(250));
        c.cmd("QUIT", 221);
    }
    assert_eq!(connections(&milter), 3, "{:?}", milter.records());
    assert!(
        milter.stage("rcpt").is_empty(),
        "{:?}",
        milter.stage("rcpt")
    );
    assert_eq!(milter.stage("eom").len(), 3);
    assert_eq!(server.spooled().len(), 3);
    server.stop();
}

/// The stages each connection to `milter` was told, in order (macros and
/// closes left out), by connection.
fn conversations(milter: &Scripted) -> Vec<Vec<String>> {
    let mut by_conn: Vec<(String, Vec<String>)> = Vec::new();
    for record in milter.records() {
        if ["macros", "closed", "optneg"].contains(&record.stage.as_str()) {
            continue;
        }
        let conn = record.session.split('.').next().unwrap_or_default();
        let stage = match record.get("addr") {
            Some(addr) if record.stage == "rcpt" => format!("rcpt {addr}"),
            _ => record.stage.clone(),
        };
        match by_conn.iter_mut().find(|(c, _)| c == conn) {
            Some((_, stages)) => stages.push(stage),
            None => by_conn.push((conn.to_string(), vec![stage])),
        }
    }
    by_conn.into_iter().map(|(_, stages)| stages).collect()
}

/// A milter that takes RCPT hears a session as one conversation, as
/// Postfix's milters do: each recipient's check goes on from the last (a
/// recipient it refused included), the message from there, the next
/// transaction from MAIL. A transaction given up (RSET) is aborted
/// (SMFIC_ABORT) and the next goes on from MAIL.
fn checks_of_a_transaction_are_one_conversation(backend: Backend) {
    let milter = Scripted::start(&["--on", "rcpt/bad@=reject"]);
    let spec = milter.spec();
    let server = TestServer::start(backend, &["--milter", &spec, "--workers", "1"]);
    let mut c = server.client();
    c.hello();
    let (alice, bob) = (("<alice@example.com>", 250), ("<bob@example.com>", 250));
    let id = queue_id(c.transaction(&[alice, bob], "one").last());
    // The `i` macro names the id the message is queued as, at DATA and at
    // end of message.
    for stage in ["T", "E"] {
        let told = milter
            .stage("macros")
            .into_iter()
            .find(|r| r.get("for") == Some(stage));
        assert_eq!(
            told.as_ref().and_then(|r| r.get("i")),
            Some(id.as_str()),
            "{stage}"
        );
    }
    c.cmd("MAIL FROM:<s@remote.example>", 250);
    c.cmd("RCPT TO:<alice@example.com>", 250);
    c.cmd("RSET", 250);
    let bad = ("<bad@catchall.example>", 550);
    queue_id(c.transaction(&[alice, bad, bob], "two").last());
    c.cmd("QUIT", 221);
    server.stop();
    let words = |text: &str| -> Vec<String> { text.split(' ').map(str::to_string).collect() };
    let rcpt = |who: &str| format!("rcpt <{who}>");
    let message = "data header eoh body eom";
    let (alice, bob, bad) = (
        rcpt("alice@example.com"),
        rcpt("bob@example.com"),
        rcpt("bad@catchall.example"),
    );
    let session: Vec<String> = [
        words("connect helo mail"),
        vec![alice.clone(), bob.clone()],
        words(message),
        vec!["mail".into(), alice.clone(), "abort".into()],
        vec!["mail".into(), alice, bad, bob],
        words(message),
    ]
    .concat();
    assert_eq!(conversations(&milter), [session]);
}

/// A discard at RCPT discards the transaction, as Postfix takes it: every
/// recipient gets 250, later ones are not checked, and the message gets
/// 250 without being spooled or told to the milter. The next transaction
/// is checked and spooled as usual.
fn a_discard_at_rcpt_discards_the_message(backend: Backend) {
    let milter = Scripted::start(&["--on", "rcpt/bad@=discard"]);
    let spec = milter.spec();
    let flags = ["--milter", &spec, "--metrics", "127.0.0.1:0"];
    let server = TestServer::start(backend, &flags);
    let mut c = server.client();
    c.hello();
    let rcpts = [
        ("<alice@example.com>", 250),
        ("<bad@catchall.example>", 250),
        ("<bob@example.com>", 250),
    ];
    assert_eq!(c.transaction(&rcpts, "dropped").lines, ["250 2.0.0 Ok"]);
    assert!(server.spooled().is_empty());
    let rcpts: Vec<_> = milter
        .stage("rcpt")
        .into_iter()
        .map(|r| r.get("addr").map(str::to_string))
        .collect();
    assert!(
        !rcpts.contains(&Some("<bob@example.com>".to_string())),
        "{rcpts:?}"
    );
    assert!(milter.stage("eom").is_empty(), "{:?}", milter.stage("eom"));
    queue_id(c.transaction(&[("<bob@example.com>", 250)], "kept").last());
    c.cmd("QUIT", 221);
    assert_eq!(server.spooled().len(), 1);
    assert_eq!(milter.stage("eom").len(), 1);
    server.stop();
}

/// An accepted recipient.
const ALICE: (&str, u16) = ("<alice@example.com>", 250);

/// A client outside the limit exceptions, greeted.
fn greeted_from(server: &TestServer, client: &str) -> Client {
    let mut c = Client::connect_from(server.addr, client.parse().unwrap());
    c.hello();
    c
}

/// A milter's own refusal counts toward the client's error score
/// (`--error-limits`) like any other refusal, at end of data and at RCPT;
/// `--milter-default` for a milter that failed does not (our fault, not
/// the client's).
fn milter_refusals_count_as_errors_and_its_failures_do_not(backend: Backend) {
    let limits = ["--error-limits", "2,2", "--client-limit-exceptions", ""];
    let mut script = eom(&[(b'r', b"")]);
    script.bad_rcpt = (b'r', Vec::new());
    let refusing = ScriptedMilter::start(script);
    let server = start(backend, &refusing, &limits);
    let mut c = greeted_from(&server, "127.0.0.2");
    assert_eq!(c.transaction(&[ALICE], "scored").code, 550);
    assert_eq!(c.transaction(&[ALICE], "scored").code, 550);
    c.cmd("NOOP", 421);
    let mut c = greeted_from(&server, "127.0.0.3");
    c.cmd("MAIL FROM:<s@remote.example>", 250);
    c.cmd("RCPT TO:<bad1@catchall.example>", 550);
    c.cmd("RCPT TO:<bad2@catchall.example>", 550);
    c.cmd("NOOP", 421);
    server.stop();

    // Silent at end of message: 451 after --milter-timeout, twice.
    let mut script = eom(&[(b'a', b"")]);
    script.delay = Duration::from_secs(30);
    let silent = ScriptedMilter::start(script);
    let server = start(backend, &silent, &limits);
    let mut c = greeted_from(&server, "127.0.0.2");
    assert_eq!(c.transaction(&[ALICE], "scored").code, 451);
    assert_eq!(c.transaction(&[ALICE], "scored").code, 451);
    c.cmd("NOOP", 250);
    server.stop();
    // Down: 451 at RCPT, twice.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = ["--milter", &format!("inet:{port}")].map(String::from);
    let flags: Vec<&str> = down.iter().map(String::as_str).chain(limits).collect();
    let server = TestServer::start(backend, &flags);
    let mut c = greeted_from(&server, "127.0.0.2");
    c.cmd("MAIL FROM:<s@remote.example>", 250);
    c.cmd("RCPT TO:<alice@example.com>", 451);
    c.cmd("RCPT TO:<bob@example.com>", 451);
    c.cmd("NOOP", 250);
    c.cmd("QUIT", 221);
    server.stop();
}

/// mxgate (one worker, `--milter-connections 1`, and `extra`) in front
/// of a milter answering a message that holds SLOW with `actions` at end
/// of message; one session's such message keeps the one connection busy.
/// The milter, the server and that session.
fn one_connection_busy(
    backend: Backend,
    actions: &str,
    extra: &[&str],
) -> (Scripted, TestServer, Client) {
    let milter = Scripted::start(&["--on", &format!("eom/SLOW={actions}")]);
    let spec = milter.spec();
    let flags = [
        "--milter",
        &spec,
        "--workers",
        "1",
        "--milter-connections",
        "1",
    ];
    let server = TestServer::start(backend, &[&flags[..], extra].concat());
    let mut slow = server.client();
    slow.hello();
    slow.open_data("alice@example.com");
    slow.send(b"Subject: slow\r\n\r\nSLOW\r\n.\r\n");
    let busy = || milter.stage("eom").len() == 1;
    assert!(support::wait_until(Duration::from_secs(5), busy));
    (milter, server, slow)
}

/// `--milter-connections 1`: while one session's message is with the
/// milter, another's recipient check waits for that connection instead of
/// opening a second; a connection kept idle for a session's next check is
/// closed for a check that needs one (that session's message then starts
/// its conversation over).
fn a_worker_caps_its_connections_to_a_milter(backend: Backend) {
    let (milter, server, mut slow) = one_connection_busy(backend, "sleep:2;accept", &[]);
    let mut kept = server.client();
    kept.hello();
    kept.cmd("MAIL FROM:<s@remote.example>", 250);
    let asked = Instant::now();
    kept.cmd("RCPT TO:<alice@example.com>", 250);
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "RCPT waited only {waited:?}"
    );
    queue_id(&slow.expect(250));
    // `kept`'s connection waits idle for its message; another check takes it.
    let mut other = server.client();
    other.hello();
    other.cmd("MAIL FROM:<s@remote.example>", 250);
    other.cmd("RCPT TO:<bob@example.com>", 250);
    kept.cmd("DATA", 354);
    kept.send(b"Subject: kept\r\n\r\nhi\r\n.\r\n");
    queue_id(&kept.expect(250));
    for mut c in [slow, kept, other] {
        c.cmd("QUIT", 221);
    }
    server.stop();
    // kept: its recipient, then (started over) its whole message.
    assert_eq!(
        conversations(&milter).len(),
        4,
        "{:?}",
        conversations(&milter)
    );
}

/// A check waits for a connection `--milter-timeout` at most, then gets
/// `--milter-default`: here the only connection is busy for 3 s (its
/// milter sends progress, so it does not time out itself).
fn a_check_waits_for_a_connection_no_longer_than_the_timeout(backend: Backend) {
    let busy = "sleep:0.8;progress;sleep:0.8;progress;sleep:0.8;progress;sleep:0.6;accept";
    let timeout = ["--milter-timeout", "1"];
    let (_milter, server, mut slow) = one_connection_busy(backend, busy, &timeout);
    let mut c = server.client();
    c.hello();
    c.cmd("MAIL FROM:<s@remote.example>", 250);
    let reply = c.cmd("RCPT TO:<alice@example.com>", 451);
    assert!(reply.starts_with("451 4.7.1 "), "{reply}");
    queue_id(&slow.expect(250));
    c.cmd("QUIT", 221);
    slow.cmd("QUIT", 221);
    server.stop();
}

fn a_milter_on_a_unix_socket(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let replies: &[(u8, &[u8])] = &[(b'h', b"X-Unix\0yes\0"), (b'a', b"")];
    let milter = ScriptedMilter::start_unix(eom(replies), &dir.path().join("milter.sock"));
    let server = start(backend, &milter, &[]);
    let id = queue_id(&send_message(&server, "over unix"));
    let text = spooled_text(&server, &id);
    assert!(
        text.contains("\r\nX-Unix: yes\r\nSubject: over unix\r\n"),
        "{text}"
    );
    server.stop();
}

fn several_milters_apply_in_order(backend: Backend) {
    let first = ScriptedMilter::start(eom(&[(b'h', b"X-First\0one\0"), (b'c', b"")]));
    let second = ScriptedMilter::start(eom(&[(b'h', b"X-Second\0two\0"), (b'a', b"")]));
    let flags = ["--milter", second.addr.as_str()];
    let server = start(backend, &first, &flags);
    let id = queue_id(&send_message(&server, "both"));
    let text = spooled_text(&server, &id);
    assert!(
        text.contains("\r\nX-First: one\r\nX-Second: two\r\nSubject: both\r\n"),
        "{text}"
    );
    server.stop();

    // The first one down and skipped (accept), the second still refuses.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = format!("inet:{port}");
    let refusing = ScriptedMilter::start(eom(&[(b'r', b"")]));
    let flags = [
        "--milter",
        down.as_str(),
        "--milter",
        refusing.addr.as_str(),
    ];
    let server = TestServer::start(
        backend,
        &[&flags[..], &["--milter-default", "accept"]].concat(),
    );
    let reply = send_message(&server, "second says no");
    assert!(reply.starts_with("550 5.7.1 "), "{reply}");
    assert!(server.spooled().is_empty());
    server.stop();
}

/// tests/peers/milter.py misbehaving at end of message (with the marker
/// BAD in the body): closing mid-stream, garbage, an oversized packet, a
/// modification it did not negotiate. Each gives that message 451 4.7.1
/// (nothing spooled); the next message, on a fresh connection, is served.
fn a_misbehaving_milter_gives_the_default(backend: Backend) {
    for fault in [
        "close",
        "garbage",
        "oversized",
        "addheader:X-Sneaky:1;accept",
    ] {
        let rule = format!("eom/BAD={fault}");
        let milter = support::milters::Scripted::start(&["--actions", "none", "--on", &rule]);
        let spec = milter.spec();
        let server = TestServer::start(backend, &["--milter", &spec, "--milter-timeout", "5"]);
        let refused = send_body(&server, "BAD");
        assert!(
            refused.last().starts_with("451 4.7.1 "),
            "{fault}: {:?}",
            refused.lines
        );
        assert!(server.spooled().is_empty(), "{fault}");
        let accepted = send_body(&server, "fine");
        assert_eq!(accepted.code, 250, "{fault}: {:?}", accepted.lines);
        server.stop();
    }
}

support::backend_tests!(
    a_rejection_is_passed_through_and_nothing_spooled,
    verdicts_count_each_message_once,
    added_headers_follow_the_received_line,
    quarantine_and_discard,
    a_milter_down_gives_the_default,
    a_silent_milter_times_out_and_pipelining_stays_in_order,
    each_session_has_one_milter_conversation,
    a_recipient_the_milter_refuses_is_refused_at_rcpt,
    a_milter_that_declines_rcpt_is_not_waited_for_at_rcpt,
    checks_of_a_transaction_are_one_conversation,
    a_discard_at_rcpt_discards_the_message,
    milter_refusals_count_as_errors_and_its_failures_do_not,
    a_worker_caps_its_connections_to_a_milter,
    a_check_waits_for_a_connection_no_longer_than_the_timeout,
    a_milter_on_a_unix_socket,
    several_milters_apply_in_order,
    a_misbehaving_milter_gives_the_default,
);
