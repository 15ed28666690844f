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

use support::peers::{self, Cert, Postfix};
use support::{files_in, BinServer};

use mxgate::config::Backend;

const SENDER: &str = "s@remote.example";
const RCPT: &str = "alice@example.com";

/// The binary on `backend`, with STARTTLS when `cert` is given.
fn start(backend: Backend, cert: Option<&Cert>) -> BinServer {
    let flags = cert.map(Cert::flags).unwrap_or_default();
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    BinServer::start(tempfile::tempdir().expect("temp dir"), backend, &extra)
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

support::backend_tests!(
    postfix_requiring_tls_defers_when_not_offered,
    swaks_tls_fails_cleanly_without_a_certificate,
);
