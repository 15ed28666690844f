//! The relay tests' next hops work on their own (tests/support/next_hop.rs
//! and `Postfix::next_hop`): swaks, a client no one here wrote, delivers to
//! each, and what arrived is counted where the relay tests will count it.
//! Each peer missing fails its test with what to install; .ci/run installs
//! them (postfix, dovecot-lmtpd, swaks).

mod support;

use support::next_hop::{free_addr, Dovecot, SmtpSink};
use support::peers::{self, Postfix, DELIVERY_LIMIT};
use support::wait_until;

/// swaks to `server` (a `host:port`, or a unix socket's path) with `extra`
/// flags; its transcript.
fn swaks(server: &str, extra: &[&str]) -> String {
    let mut command = peers::peer("swaks");
    let target = if server.starts_with('/') {
        "--socket"
    } else {
        "--server"
    };
    command.args([target, server, "--from", "s@remote.example"]);
    command.args(["--helo", "swaks.example"]).args(extra);
    let done = peers::run(command, "");
    format!("{}{}", done.stdout, done.stderr)
}

#[test]
fn dovecot_lmtp_answers_each_recipient_and_fills_maildirs() {
    let dovecot = Dovecot::start(free_addr(), &["alice@example.com", "bob@example.com"]);
    let server = dovecot.addr.to_string();
    let id = "--header=Message-ID: <lmtp-1@test>";
    let to = "alice@example.com,carol@example.com";
    let out = swaks(&server, &["--protocol", "LMTP", "--to", to, id]);
    let log = dovecot.log();
    assert!(out.contains("550 5.1.1 <carol@example.com>"), "{out}{log}");
    assert!(out.contains("250 2.0.0 <alice@example.com>"), "{out}{log}");
    let alice = dovecot.delivered("alice@example.com");
    assert_eq!(alice.len(), 1, "{out}\n{}", dovecot.log());
    assert!(alice[0].contains("<lmtp-1@test>"), "{}", alice[0]);

    let socket = dovecot.socket().display().to_string();
    let out = swaks(&socket, &["--protocol", "LMTP", "--to", "bob@example.com"]);
    assert!(out.contains("250 2.0.0 <bob@example.com>"), "{out}");
    assert_eq!(dovecot.delivered("bob@example.com").len(), 1);
}

#[test]
fn postfix_next_hop_delivers_to_maildirs_and_refuses_unknown_users() {
    let addr = free_addr();
    let postfix = Postfix::next_hop(addr, &["alice@example.com", "@catchall.example"]);
    let server = addr.to_string();
    let out = swaks(&server, &["--to", "alice@example.com"]);
    assert!(out.contains("250 2.0.0 Ok: queued"), "{out}");
    let out = swaks(&server, &["--to", "anyone@catchall.example"]);
    assert!(out.contains("250 2.0.0 Ok: queued"), "{out}");
    let out = swaks(&server, &["--to", "carol@example.com"]);
    assert!(out.contains("550 5.1.1 <carol@example.com>"), "{out}");

    let arrived = wait_until(DELIVERY_LIMIT, || {
        postfix.delivered("alice@example.com").len() == 1
            && postfix.delivered("@catchall.example").len() == 1
    });
    assert!(arrived, "Postfix's log:\n{}", postfix.log());
    let catchall = &postfix.delivered("@catchall.example")[0];
    assert!(catchall.contains("anyone@catchall.example"), "{catchall}");
}

#[test]
fn smtp_sink_dumps_what_it_accepts_and_scripts_refusals() {
    let sink = SmtpSink::start(free_addr(), &[]);
    let id = "--header=Message-ID: <sink-1@test>";
    let out = swaks(&sink.addr.to_string(), &["--to", "alice@example.com", id]);
    assert!(out.contains("250 2.0.0 Ok"), "{out}");
    let received = sink.received();
    assert_eq!(received.len(), 1, "{out}");
    assert!(received[0].contains("X-Rcpt-Args: <alice@example.com>"));
    assert!(received[0].contains("<sink-1@test>"));

    let full = SmtpSink::start(free_addr(), &["-r", "RCPT", "-b", "452 4.2.2 full"]);
    let out = swaks(&full.addr.to_string(), &["--to", "alice@example.com"]);
    assert!(out.contains("452 4.2.2 full"), "{out}");
    assert!(full.received().is_empty());

    let lmtp = SmtpSink::start(free_addr(), &["-L", "-f", "DATA"]);
    let args = ["--protocol", "LMTP", "--to", "alice@example.com"];
    let out = swaks(&lmtp.addr.to_string(), &args);
    assert!(out.contains("<** 5"), "DATA refused with a 5xx: {out}");
    assert!(lmtp.received().is_empty());
}
