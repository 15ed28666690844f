//! STARTTLS against clients no one here wrote, on both backends: Postfix's
//! own SMTP client relaying to mxgate (a private instance, see
//! benches/scripts/postfix.sh), `openssl s_client -starttls smtp`,
//! `swaks --tls` and Python's `smtplib`. Each drives the real `mxgate`
//! binary started with `--tls-cert`/`--tls-key` (a certificate made at test
//! time), or without them for the refusals.
//!
//! A peer that is not installed fails its test with what to install; .ci/run
//! installs them. The in-process TLS tests (injection, split records,
//! timeouts) live with the server's own tests.

mod support;

use support::peers::{self, Cert, Postfix, DELIVERY_LIMIT};
use support::{files_in, wait_until, BinServer};

use std::net::SocketAddr;

use mxgate::config::Backend;

const SENDER: &str = "s@remote.example";
const RCPT: &str = "alice@example.com";

/// The binary on `backend`, with STARTTLS when `cert` is given.
fn start(backend: Backend, cert: Option<&Cert>) -> BinServer {
    let flags = cert.map(Cert::flags).unwrap_or_default();
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    BinServer::start(tempfile::tempdir().expect("temp dir"), backend, &extra)
}

/// The text after `key` in `text`, up to the next space, comma or paren.
fn word_after<'a>(text: &'a str, key: &str) -> &'a str {
    let start = text
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in {text}"))
        + key.len();
    let rest = &text[start..];
    let end = rest.find([' ', ',', ')', '\n']).unwrap_or(rest.len());
    &rest[..end]
}

// ---- Postfix's SMTP client as a relay in front of mxgate ----

/// `smtp_tls_security_level = encrypt` against a server without a
/// certificate: STARTTLS is not offered, Postfix defers, nothing is spooled.
fn postfix_requiring_tls_defers_when_not_offered(backend: Backend) {
    let server = start(backend, None);
    let postfix = Postfix::relaying_to(server.addr, "encrypt");
    postfix.send(
        SENDER,
        RCPT,
        "Subject: must not arrive\n\nno TLS, no mail\n",
    );
    let deferred = postfix.log_line("status=deferred");
    assert!(
        deferred.contains("TLS is required, but was not offered"),
        "{deferred}"
    );
    assert!(files_in(&server.path().join("spool").join("new")).is_empty());
}

// ---- swaks ----

fn swaks(server: &BinServer) -> peers::Finished {
    let mut command = peers::peer("swaks");
    command
        .args(["--server", &server.addr.to_string(), "--tls"])
        .args(["--helo", "swaks.example", "--from", SENDER, "--to", RCPT]);
    peers::run(command, "")
}

/// Without a certificate STARTTLS is not offered: `swaks --tls` gives up
/// cleanly (QUIT, 221) and nothing is spooled.
fn swaks_tls_fails_cleanly_without_a_certificate(backend: Backend) {
    let server = start(backend, None);
    let done = swaks(&server);
    assert!(!done.success, "{}", done.stdout);
    let refusal = "*** Host did not advertise STARTTLS";
    assert!(done.stderr.contains(refusal), "{}", done.stderr);
    assert!(done.stdout.contains("221 2.0.0 Bye"), "{}", done.stdout);
    assert!(files_in(&server.path().join("spool").join("new")).is_empty());
}

// ---- Python's smtplib ----

/// Prints `key=value` lines: what EHLO offered before and after
/// `starttls()`, the negotiated version and cipher, and refused recipients.
const SMTPLIB_STARTTLS: &str = r#"
import smtplib, ssl, sys
host, port, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
context = ssl.create_default_context(cafile=cafile)
with smtplib.SMTP(host, port, local_hostname="python.example", timeout=30) as smtp:
    smtp.ehlo()
    print("offered_before=%s" % smtp.has_extn("starttls"))
    smtp.starttls(context=context)
    smtp.ehlo()
    print("offered_after=%s" % smtp.has_extn("starttls"))
    print("version=%s" % smtp.sock.version())
    print("cipher=%s" % smtp.sock.cipher()[0])
    refused = smtp.sendmail("s@remote.example", ["alice@example.com"], "Subject: smtplib\r\n\r\nhello\r\n")
    print("refused=%s" % refused)
"#;

/// Runs `script` with the server's host and port, then `extra`, as its
/// arguments; returns what it printed.
fn python(script: &str, addr: SocketAddr, extra: &[&str]) -> String {
    let mut command = peers::peer("python3");
    command
        .args([
            "-c",
            script,
            &addr.ip().to_string(),
            &addr.port().to_string(),
        ])
        .args(extra);
    let done = peers::run(command, "");
    assert!(
        done.success,
        "python3 failed:\n{}{}",
        done.stdout, done.stderr
    );
    done.stdout
}

/// Fails unless each of `expected` is a whole line of `out`.
fn assert_lines(out: &str, expected: &[&str]) {
    for line in expected {
        assert!(out.lines().any(|l| l == *line), "{line} in:\n{out}");
    }
}

/// [`SMTPLIB_STARTTLS`] against `addr`, trusting `cert`: STARTTLS offered,
/// TLS 1.3, gone from EHLO after it, the message taken. Returns the cipher.
fn smtplib_starttls(addr: SocketAddr, cert: &Cert) -> String {
    let out = python(SMTPLIB_STARTTLS, addr, &[&cert.cert.display().to_string()]);
    let expected = [
        "offered_before=True",
        "offered_after=False",
        "version=TLSv1.3",
        "refused={}",
    ];
    assert_lines(&out, &expected);
    word_after(&out, "cipher=").to_string()
}

/// The benchmarks' peer (benches/scripts/postfix.sh: Postfix's smtpd with
/// TLS) offers STARTTLS with the given certificate and holds what it takes.
#[test]
fn postfix_smtpd_of_the_benchmarks_serves_starttls() {
    let cert = Cert::new();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let postfix = Postfix::serving(addr, &cert);
    smtplib_starttls(addr, &cert);
    let held = wait_until(DELIVERY_LIMIT, || postfix.held() == 1);
    assert!(held, "{}", postfix.log());
}

support::backend_tests!(
    postfix_requiring_tls_defers_when_not_offered,
    swaks_tls_fails_cleanly_without_a_certificate,
);
