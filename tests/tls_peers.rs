//! STARTTLS against clients no one here wrote, on both backends: Postfix's
//! own SMTP client relaying to mxgate (a private instance, see
//! benches/scripts/postfix.sh), `openssl s_client -starttls smtp`,
//! `swaks --tls` and Python's `smtplib`. Each drives the real `mxgate`
//! binary started with `--tls-cert`/`--tls-key` (a certificate made at test
//! time), or without them for the refusals.
//!
//! A peer that is not installed fails its test with what to install; .ci/run
//! installs them. The loopback TLS tests with an in-process rustls client
//! (injection, split records, stalls, reload) are tests/starttls.rs.

mod support;

use support::peers::{self, Cert, Interactive, Postfix, DELIVERY_LIMIT};
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

/// The files in the server's `spool/new/`.
fn spooled(server: &BinServer) -> Vec<std::path::PathBuf> {
    files_in(&server.path().join("spool").join("new"))
}

/// The Received line of the one message the server spooled, waiting
/// (bounded) for it to arrive.
fn received_line(server: &BinServer) -> String {
    let arrived = wait_until(DELIVERY_LIMIT, || spooled(server).len() == 1);
    assert!(
        arrived,
        "expected one spooled message: {:?}",
        spooled(server)
    );
    let text = std::fs::read_to_string(&spooled(server)[0]).expect("read the spool file");
    let line = text.lines().find(|l| l.starts_with("Received: from"));
    line.expect("a Received line").to_string()
}

/// Stops the server (SIGTERM) and returns its log.
fn stop(mut server: BinServer) -> String {
    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status, Some(0), "mxgate exit; log:\n{log}");
    log
}

/// Stops the server and returns its session-end line for the client that
/// said `helo`.
fn session_line(server: BinServer, helo: &str) -> String {
    let log = stop(server);
    let helo = format!("helo={helo} ");
    let line = log
        .lines()
        .find(|l| l.contains("session end") && l.contains(&helo));
    let line = line.unwrap_or_else(|| panic!("no session line with {helo}:\n{log}"));
    line.to_string()
}

/// The text after `key` in `text`, up to the next space, comma, paren or
/// line end.
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

/// `smtp_tls_security_level = encrypt`: Postfix insists on STARTTLS, and
/// the protocol and cipher it logs are the ones mxgate's Received line names.
fn postfix_relays_over_starttls(backend: Backend) {
    let cert = Cert::new();
    let server = start(backend, Some(&cert));
    let postfix = Postfix::relaying_to(server.addr, "encrypt", &[]);
    postfix.send(SENDER, RCPT, "Subject: via Postfix\n\nhello over TLS\n");
    let established = postfix.log_line("TLS connection established to");
    let sent = postfix.log_line("status=sent");
    assert!(sent.contains("250 2.0.0 Ok: queued as"), "{sent}");
    let received = received_line(&server);
    assert!(received.contains("with ESMTPS id"), "{received}");
    // "...: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) ..."
    let version = format!("TLSv1.{}", word_after(&established, ": TLSv1."));
    let cipher = word_after(&established, " with cipher ");
    let using = format!("(127.0.0.1) (using {version} with cipher {cipher}) by");
    assert!(
        received.contains(&using),
        "{received}\nPostfix: {established}"
    );
    let session = session_line(server, "postfix.test");
    let tls = format!("tls={version} cipher={cipher}");
    assert!(session.contains(&tls), "{session}");
}

/// Postfix held to TLS 1.2, against an RSA 2048 certificate: the
/// Received line names the ECDHE-RSA suite the IANA way.
fn postfix_relays_over_tls12_with_an_rsa_certificate(backend: Backend) {
    let cert = Cert::rsa();
    let server = start(backend, Some(&cert));
    let tls12 = "smtp_tls_mandatory_protocols = >=TLSv1.2, <=TLSv1.2";
    let postfix = Postfix::relaying_to(server.addr, "encrypt", &[tls12]);
    postfix.send(SENDER, RCPT, "Subject: via Postfix\n\nTLS 1.2, RSA\n");
    let established = postfix.log_line("TLS connection established to");
    assert!(
        established.contains(": TLSv1.2 with cipher ECDHE-RSA-"),
        "{established}"
    );
    postfix.log_line("status=sent");
    let received = received_line(&server);
    let using = "(127.0.0.1) (using TLSv1.2 with cipher TLS_ECDHE_RSA_WITH_";
    assert!(received.contains(using), "{received}");
}

/// `smtp_tls_security_level = encrypt` against a server without a
/// certificate: STARTTLS is not offered, Postfix defers, nothing is spooled.
fn postfix_requiring_tls_defers_when_not_offered(backend: Backend) {
    let server = start(backend, None);
    let postfix = Postfix::relaying_to(server.addr, "encrypt", &[]);
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
    assert!(spooled(&server).is_empty());
}

/// `smtp_tls_security_level = none` against a server offering STARTTLS:
/// Postfix does not use it, and the message arrives in plain text.
fn postfix_without_tls_still_delivers_in_plain_text(backend: Backend) {
    let cert = Cert::new();
    let server = start(backend, Some(&cert));
    let postfix = Postfix::relaying_to(server.addr, "none", &[]);
    postfix.send(SENDER, RCPT, "Subject: plain\n\nno TLS asked for\n");
    postfix.log_line("status=sent");
    let received = received_line(&server);
    assert!(
        received.contains("(127.0.0.1) by mx.test (mxgate) with ESMTP id"),
        "{received}"
    );
    assert!(!postfix.log().contains("TLS connection established"));
}

// ---- openssl s_client ----

/// `openssl s_client -starttls smtp` trusting only the test certificate
/// (so the handshake proves mxgate served it), plus `extra` flags.
fn s_client(server: &BinServer, cert: &Cert, extra: &[&str]) -> Interactive {
    let mut command = peers::peer("openssl");
    command
        .args(["s_client", "-starttls", "smtp", "-name", "client.example"])
        .args(["-connect", &server.addr.to_string()])
        .arg("-CAfile")
        .arg(&cert.cert)
        .args(["-verify_return_error", "-verify_hostname", "mx.test"])
        .args(["-quiet", "-brief"])
        .args(extra);
    Interactive::spawn(command)
}

/// After the handshake: EHLO (no STARTTLS any more), one message with
/// `body` (CRLF line ends, no final one), QUIT.
/// Returns s_client's report (stderr).
fn message_after_handshake(mut client: Interactive, body: &str) -> String {
    let ehlo = client.cmd("EHLO after.example", 250);
    assert!(ehlo.lines[0].contains("mx.test"), "{:?}", ehlo.lines);
    assert!(
        !ehlo.lines.iter().any(|l| l.contains("STARTTLS")),
        "{:?}",
        ehlo.lines
    );
    client.cmd(&format!("MAIL FROM:<{SENDER}>"), 250);
    client.cmd(&format!("RCPT TO:<{RCPT}>"), 250);
    client.cmd("DATA", 354);
    client.send(&format!("Subject: via openssl s_client\r\n\r\n{body}"));
    client.cmd(".", 250);
    client.cmd("QUIT", 221);
    client.finish()
}

fn openssl_s_client_sends_a_message_over_tls13(backend: Backend) {
    let cert = Cert::new();
    let server = start(backend, Some(&cert));
    let report = message_after_handshake(s_client(&server, &cert, &[]), "hello");
    assert!(report.contains("Protocol version: TLSv1.3"), "{report}");
    let cipher = word_after(&report, "Ciphersuite: ");
    let received = received_line(&server);
    let using = format!("from after.example (127.0.0.1) (using TLSv1.3 with cipher {cipher}) by");
    assert!(received.contains(&using), "{received}");
    assert!(received.contains("with ESMTPS id"), "{received}");
    let session = session_line(server, "after.example");
    let tls = format!("tls=TLSv1.3 cipher={cipher}");
    assert!(session.contains(&tls), "{session}");
}

/// TLS 1.2 works too; the Received line names its cipher the IANA way.
fn openssl_s_client_sends_a_message_over_tls12(backend: Backend) {
    let cert = Cert::new();
    let server = start(backend, Some(&cert));
    let report = message_after_handshake(s_client(&server, &cert, &["-tls1_2"]), "hello");
    assert!(report.contains("Protocol version: TLSv1.2"), "{report}");
    let received = received_line(&server);
    assert!(
        received.contains("(using TLSv1.2 with cipher TLS_ECDHE_ECDSA_WITH_"),
        "{received}"
    );
}

/// A body of some 260 KiB arrives in many full-size TLS records from
/// OpenSSL and is spooled exactly as sent.
fn openssl_s_client_sends_a_large_message(backend: Backend) {
    let cert = Cert::new();
    let server = start(backend, Some(&cert));
    let lines: Vec<String> = (0..3449)
        .map(|i| format!("line {i:05} {}", "x".repeat(64)))
        .collect();
    let body = lines.join("\r\n");
    message_after_handshake(s_client(&server, &cert, &[]), &body);
    received_line(&server);
    let spooled = std::fs::read_to_string(&spooled(&server)[0]).expect("read the spool file");
    assert!(
        spooled.contains(&format!("{body}\r\n.\r\n")),
        "the body arrived changed"
    );
}

/// A TLS 1.1 client gets no session: the handshake fails, the connection
/// closes and the failure is logged with its reason.
fn openssl_s_client_with_tls11_is_refused_and_logged(backend: Backend) {
    let cert = Cert::new();
    let server = start(backend, Some(&cert));
    // OpenSSL 3 offers TLS 1.1 only at security level 0.
    let extra = ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"];
    let mut client = s_client(&server, &cert, &extra);
    assert!(client.reply().is_none(), "no SMTP after a failed handshake");
    let report = client.finish();
    assert!(!report.contains("CONNECTION ESTABLISHED"), "{report}");
    let log = stop(server);
    assert!(
        log.contains("TLS handshake failed client=127.0.0.1 reason=no_shared_version"),
        "{log}"
    );
}

// ---- swaks ----

/// `swaks --tls` with `extra` flags.
fn swaks(server: &BinServer, extra: &[&str]) -> peers::Finished {
    let mut command = peers::peer("swaks");
    command
        .args(["--server", &server.addr.to_string(), "--tls"])
        .args(["--helo", "swaks.example", "--from", SENDER, "--to", RCPT])
        .args(extra);
    peers::run(command, "")
}

fn swaks_sends_a_message_over_starttls(backend: Backend) {
    let cert = Cert::new();
    let server = start(backend, Some(&cert));
    let done = swaks(&server, &[]);
    assert!(done.success, "{}{}", done.stdout, done.stderr);
    assert!(done.stdout.contains("=== TLS started"), "{}", done.stdout);
    assert!(
        done.stdout.contains("250 2.0.0 Ok: queued as"),
        "{}",
        done.stdout
    );
    let received = received_line(&server);
    assert!(
        received.contains("from swaks.example (127.0.0.1) (using TLSv1."),
        "{received}"
    );
    assert!(received.contains("with ESMTPS id"), "{received}");
}

/// `--pipeline`: MAIL, RCPT and DATA in one flight inside TLS.
fn swaks_pipelines_inside_tls(backend: Backend) {
    let cert = Cert::new();
    let server = start(backend, Some(&cert));
    let done = swaks(&server, &["--pipeline"]);
    assert!(done.success, "{}{}", done.stdout, done.stderr);
    let flight = format!(" ~> MAIL FROM:<{SENDER}>\n ~> RCPT TO:<{RCPT}>\n ~> DATA\n");
    assert!(done.stdout.contains(&flight), "{}", done.stdout);
    assert!(received_line(&server).contains("with ESMTPS id"));
}

/// Without a certificate STARTTLS is not offered: `swaks --tls` gives up
/// cleanly (QUIT, 221) and nothing is spooled.
fn swaks_tls_fails_cleanly_without_a_certificate(backend: Backend) {
    let server = start(backend, None);
    let done = swaks(&server, &[]);
    assert!(!done.success, "{}", done.stdout);
    let refusal = "*** Host did not advertise STARTTLS";
    assert!(done.stderr.contains(refusal), "{}", done.stderr);
    assert!(done.stdout.contains("221 2.0.0 Bye"), "{}", done.stdout);
    assert!(spooled(&server).is_empty());
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

/// Against a server without a certificate: STARTTLS not offered, so
/// `starttls()` refuses; sent anyway it gets 502; plain text still works.
const SMTPLIB_NOT_CONFIGURED: &str = r#"
import smtplib, sys
host, port = sys.argv[1], int(sys.argv[2])
with smtplib.SMTP(host, port, local_hostname="python.example", timeout=30) as smtp:
    smtp.ehlo()
    print("offered=%s" % smtp.has_extn("starttls"))
    try:
        smtp.starttls()
        print("starttls=done")
    except smtplib.SMTPNotSupportedError:
        print("starttls=not supported")
    code, text = smtp.docmd("STARTTLS")
    print("forced=%d %s" % (code, text.decode()))
    refused = smtp.sendmail("s@remote.example", ["alice@example.com"], "Subject: plain\r\n\r\nhello\r\n")
    print("refused=%s" % refused)
"#;

/// CVE-2011-0411 with OpenSSL (Python's ssl) as the client's TLS: EHLO and
/// MAIL in the same packet as STARTTLS, then the handshake and, inside TLS,
/// RCPT alone. Prints the STARTTLS reply and the first reply inside TLS:
/// 503 if the injected commands were discarded, as they must be (a server
/// that ran them in the TLS session answers 250).
const INJECTION: &str = r#"
import socket, ssl, sys
host, port, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def reply(stream):
    while True:
        line = stream.readline().decode().rstrip("\r\n")
        if line[3:4] != "-":
            return line

sock = socket.create_connection((host, port), timeout=30)
plain = sock.makefile("rb", buffering=0)
reply(plain)
sock.sendall(b"EHLO python.example\r\n")
reply(plain)
sock.sendall(b"STARTTLS\r\nEHLO evil.example\r\nMAIL FROM:<injected@evil.example>\r\n")
print("starttls=%s" % reply(plain))
tls = ssl.create_default_context(cafile=cafile).wrap_socket(sock, server_hostname=host)
stream = tls.makefile("rb")
tls.sendall(b"RCPT TO:<alice@example.com>\r\n")
print("rcpt=%s" % reply(stream))
"#;

fn python_ssl_commands_injected_after_starttls_are_discarded(backend: Backend) {
    let cert = Cert::new();
    let server = start(backend, Some(&cert));
    let out = python(INJECTION, server.addr, &[&cert.cert.display().to_string()]);
    let starttls = out.lines().find(|l| l.starts_with("starttls="));
    assert_eq!(
        starttls,
        Some("starttls=220 2.0.0 Ready to start TLS"),
        "{out}"
    );
    let rcpt = out.lines().find(|l| l.starts_with("rcpt="));
    assert!(
        rcpt.is_some_and(|l| l.starts_with("rcpt=503 5.5.1")),
        "{out}"
    );
}

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

fn python_smtplib_starttls(backend: Backend) {
    let cert = Cert::new();
    let server = start(backend, Some(&cert));
    let cipher = smtplib_starttls(server.addr, &cert);
    let received = received_line(&server);
    let using = format!("from python.example (127.0.0.1) (using TLSv1.3 with cipher {cipher}) by");
    assert!(received.contains(&using), "{received}");
}

fn python_smtplib_without_a_certificate(backend: Backend) {
    let server = start(backend, None);
    let out = python(SMTPLIB_NOT_CONFIGURED, server.addr, &[]);
    assert_lines(
        &out,
        &["offered=False", "starttls=not supported", "refused={}"],
    );
    assert!(out.contains("forced=502 5.5.1"), "{out}");
    let received = received_line(&server);
    let plain = "(127.0.0.1) by mx.test (mxgate) with ESMTP id";
    assert!(received.contains(plain), "{received}");
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
    postfix_relays_over_starttls,
    postfix_relays_over_tls12_with_an_rsa_certificate,
    postfix_requiring_tls_defers_when_not_offered,
    postfix_without_tls_still_delivers_in_plain_text,
    openssl_s_client_sends_a_message_over_tls13,
    openssl_s_client_sends_a_message_over_tls12,
    openssl_s_client_sends_a_large_message,
    openssl_s_client_with_tls11_is_refused_and_logged,
    swaks_sends_a_message_over_starttls,
    swaks_pipelines_inside_tls,
    swaks_tls_fails_cleanly_without_a_certificate,
    python_smtplib_starttls,
    python_smtplib_without_a_certificate,
    python_ssl_commands_injected_after_starttls_are_discarded,
);
