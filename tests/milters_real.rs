//! mxgate with the real milters, on both backends: clamd + clamav-milter
//! with one EICAR signature, and rspamd's milter proxy (each started by the
//! test on loopback ports, tests/support/milters.rs; the same setups
//! tests/milter_peers.rs proves with Postfix). A virus or GTUBE gets a 5xx
//! at the end of DATA and nothing is spooled; a clean message gets its 250,
//! through rspamd with rspamd's headers in the spooled file. One message
//! per session, as most MX traffic comes.

mod support;

use support::milters::{eicar, RealMilter, GTUBE};
use support::{queue_id, TestServer};

use mxgate::config::Backend;

/// Seconds mxgate waits for each milter reply here: below the test
/// client's own patience, so a reply that never comes shows as mxgate's
/// 451 rather than as a client timeout.
const MILTER_TIMEOUT: &str = "10";

/// A session of its own sending one message with `body` to
/// alice@example.com; returns the reply to the end of data.
fn send(server: &TestServer, subject: &str, body: &str) -> support::Reply {
    let mut client = server.client();
    client.hello();
    client.open_data("alice@example.com");
    let message = format!(
        "From: <s@remote.example>\r\nTo: <alice@example.com>\r\nSubject: {subject}\r\n\r\n{body}\r\n.\r\n"
    );
    client.send(message.as_bytes());
    let reply = client.reply();
    client.cmd("QUIT", 221);
    reply
}

/// mxgate on `backend` with `milter` as its one milter.
fn server_with(backend: Backend, milter: &RealMilter) -> TestServer {
    let spec = milter.spec();
    TestServer::start(
        backend,
        &["--milter", &spec, "--milter-timeout", MILTER_TIMEOUT],
    )
}

/// mxgate on `backend` with `milter` as its one milter: a message with
/// `bad` in its body gets a 5xx at the end of DATA and nothing is spooled,
/// then one with `good` (Subject: clean) a 250 and is spooled. Returns the
/// spooled file's text.
fn refused_then_spooled(backend: Backend, milter: &RealMilter, bad: &str, good: &str) -> String {
    let server = server_with(backend, milter);

    let refused = send(&server, "refused", bad);
    assert_eq!(
        refused.code / 100,
        5,
        "{:?}\n{}",
        refused.lines,
        milter.log()
    );
    assert!(server.spooled().is_empty(), "{:?}", server.spooled());

    let accepted = send(&server, "clean", good);
    assert_eq!(accepted.code, 250, "{:?}\n{}", accepted.lines, milter.log());
    let spooled = server.spooled();
    assert_eq!(spooled.len(), 1, "{spooled:?}");
    let id = queue_id(accepted.last());
    assert!(
        spooled[0].display().to_string().contains(&id),
        "{spooled:?}"
    );
    let text = std::fs::read_to_string(&spooled[0]).expect("read the spool file");
    server.stop();
    text
}

fn clamav_refuses_eicar_and_passes_a_clean_message(backend: Backend) {
    let clamav = RealMilter::clamav();
    refused_then_spooled(backend, &clamav, &eicar(), "nothing to see here");
    let log = clamav.log();
    assert!(log.contains("Mxgate.Test.EICAR"), "{log}");
}

fn rspamd_refuses_gtube_and_adds_its_headers_to_a_clean_message(backend: Backend) {
    let rspamd = RealMilter::rspamd();
    let text = refused_then_spooled(backend, &rspamd, GTUBE, "a perfectly ordinary note");
    // rspamd's headers come after mxgate's Received line, before the
    // message's own.
    let received = text.find("Received: from").expect("a Received line");
    let subject = text.find("Subject: clean").expect("the message's Subject");
    for header in ["X-Spamd-Result:", "X-Rspamd-Server:", "X-Rspamd-Queue-Id:"] {
        let at = text
            .find(header)
            .unwrap_or_else(|| panic!("no {header} in\n{text}"));
        assert!(
            received < at && at < subject,
            "{header} out of place in\n{text}"
        );
    }
    // The `i` macro: rspamd names the id the message was queued as.
    let line = text.lines().find(|l| l.starts_with("X-Rspamd-Queue-Id: "));
    let id = line.and_then(|l| l.split(' ').nth(1)).unwrap_or_default();
    assert!(
        id.len() > 1 && text.contains(&format!(" id {id};")),
        "{text}"
    );
}

/// One session, three messages (clean, `bad`, clean) through `milter`, as a
/// sending MTA that caches its connection does: each gets its own verdict
/// on the session's one milter conversation (the next message goes on
/// from MAIL).
fn messages_of_a_session(backend: Backend, milter: &RealMilter, bad: &str) {
    let server = server_with(backend, milter);
    let mut client = server.client();
    client.hello();
    for (n, body) in ["first, clean", bad, "third, clean"]
        .into_iter()
        .enumerate()
    {
        client.cmd("MAIL FROM:<s@remote.example>", 250);
        client.cmd("RCPT TO:<alice@example.com>", 250);
        client.cmd("DATA", 354);
        let message = format!("Subject: {n}\r\n\r\n{body}\r\n.\r\n");
        client.send(message.as_bytes());
        let reply = client.reply();
        let expected = if body == bad { 5 } else { 2 };
        assert_eq!(
            reply.code / 100,
            expected,
            "message {n}: {:?}\n{}",
            reply.lines,
            milter.log()
        );
    }
    client.cmd("QUIT", 221);
    assert_eq!(server.spooled().len(), 2, "{:?}", server.spooled());
    server.stop();
}

fn clamav_judges_each_message_of_a_session(backend: Backend) {
    messages_of_a_session(backend, &RealMilter::clamav(), &eicar());
}

fn rspamd_judges_each_message_of_a_session(backend: Backend) {
    messages_of_a_session(backend, &RealMilter::rspamd(), GTUBE);
}

support::backend_tests!(
    clamav_refuses_eicar_and_passes_a_clean_message,
    rspamd_refuses_gtube_and_adds_its_headers_to_a_clean_message,
    clamav_judges_each_message_of_a_session,
    rspamd_judges_each_message_of_a_session,
);
