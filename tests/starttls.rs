//! STARTTLS over loopback on both backends, with an in-process rustls
//! client: a message delivered inside TLS (its Received line), the discard
//! of what was pipelined after STARTTLS, every refusal, and the bad inputs
//! of issue #13 (garbage instead of a ClientHello, an oversized record, a
//! stalled handshake, a client closing mid-handshake, records written an
//! octet at a time), plus
//! the certificate reload on SIGHUP and the start-up checks of the two
//! flags, with the real binary. Certificates are made at test time.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mxgate::config::Backend;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use support::peers::Cert;
use support::{backend_tests, wait_until, BinServer, TestServer, HOST};

/// A client configuration that trusts exactly `certs`.
fn client_config(certs: &[&CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for der in certs {
        roots.add((*der).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A socket that writes one octet per system call, so that every TLS
/// record arrives split at every octet (as far as the kernel lets it).
struct Trickle(TcpStream);

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match buf.first() {
            Some(&octet) => self.0.write(&[octet]),
            None => Ok(0),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// An SMTP client inside TLS.
struct TlsClient<S: Read + Write> {
    stream: BufReader<StreamOwned<ClientConnection, S>>,
}

impl<S: Read + Write> TlsClient<S> {
    /// Does the handshake over `socket` (STARTTLS already answered 220).
    fn handshake(socket: S, config: &Arc<ClientConfig>) -> TlsClient<S> {
        let conn = ClientConnection::new(Arc::clone(config), HOST.try_into().unwrap()).unwrap();
        let mut stream = StreamOwned::new(conn, socket);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .expect("handshake");
        }
        TlsClient {
            stream: BufReader::new(stream),
        }
    }

    fn peer_certificate(&self) -> CertificateDer<'static> {
        let certs = self.stream.get_ref().conn.peer_certificates().unwrap();
        certs[0].clone().into_owned()
    }

    fn send(&mut self, bytes: &[u8]) {
        let stream = self.stream.get_mut();
        stream.write_all(bytes).unwrap();
        stream.flush().unwrap();
    }

    /// One reply: its code and lines.
    fn reply(&mut self) -> (u16, Vec<String>) {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            assert!(self.stream.read_line(&mut line).unwrap() > 0, "EOF");
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return (lines[0][..3].parse().unwrap(), lines);
            }
        }
    }

    fn cmd(&mut self, line: &str, code: u16) -> Vec<String> {
        self.send(format!("{line}\r\n").as_bytes());
        let (got, lines) = self.reply();
        assert_eq!(got, code, "{line}: {lines:?}");
        lines
    }

    /// A message to alice; returns the `250 … queued as` line.
    fn deliver(&mut self) -> String {
        self.cmd("EHLO client.example", 250);
        self.cmd("MAIL FROM:<s@remote.example>", 250);
        self.cmd("RCPT TO:<alice@example.com>", 250);
        self.cmd("DATA", 354);
        let lines = self.cmd("Subject: tls\r\n\r\nhello\r\n.", 250);
        lines[0].clone()
    }
}

/// A server with a fresh certificate (and `/metrics`), and the client
/// configuration that trusts it.
fn tls_server(backend: Backend, extra: &[&str]) -> (TestServer, Cert, Arc<ClientConfig>) {
    let cert = Cert::new();
    let (c, k) = (
        cert.cert.display().to_string(),
        cert.key.display().to_string(),
    );
    let mut args = vec![
        "--tls-cert",
        &c,
        "--tls-key",
        &k,
        "--metrics",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let server = TestServer::start(backend, &args);
    let config = client_config(&[&cert.der]);
    (server, cert, config)
}

/// Greeting, EHLO (which must offer STARTTLS), STARTTLS and its 220.
fn start_tls(server: &TestServer) -> TcpStream {
    let mut c = server.client();
    c.expect(220);
    c.send(b"EHLO client.example\r\n");
    let ehlo = c.reply();
    assert_eq!(ehlo.last(), "250 STARTTLS", "{:?}", ehlo.lines);
    assert_eq!(c.cmd("STARTTLS", 220), "220 2.0.0 Ready to start TLS");
    c.into_stream()
}

/// Waits until `/metrics` counts a handshake failure for `reason`.
fn failure_counted(server: &TestServer, reason: &str) -> bool {
    let name = format!("mxgate_tls_handshake_failures_total{{reason=\"{reason}\"}}");
    wait_until(Duration::from_secs(10), || {
        server.scrape().get(&name) == Some(&1.0)
    })
}

/// True once the server has closed the socket (after at most an alert).
fn closed_by_server(mut socket: TcpStream) -> bool {
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut rest = Vec::new();
    match socket.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

fn delivers_a_message_inside_tls(backend: Backend) {
    let (server, _cert, config) = tls_server(backend, &[]);
    let mut tls = TlsClient::handshake(start_tls(&server), &config);
    let ehlo = tls.cmd("EHLO client.example", 250);
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")), "{ehlo:?}");
    let queued = tls.deliver();
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    tls.cmd("QUIT", 221);

    let spooled = server.spooled();
    assert_eq!(spooled.len(), 1);
    let text = std::fs::read_to_string(&spooled[0]).unwrap();
    let received = text.lines().find(|l| l.starts_with("Received:")).unwrap();
    let expected = "Received: from client.example (127.0.0.1) (using TLSv1.3 with cipher TLS_";
    assert!(received.starts_with(expected), "{received}");
    assert!(
        received.contains(") by mx.test (mxgate) with ESMTPS id "),
        "{received}"
    );

    let samples = server.scrape();
    let handshakes: f64 = samples
        .iter()
        .filter(|(k, _)| k.starts_with("mxgate_tls_handshakes_total{version=\"TLSv1.3\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(handshakes, 1.0);
    assert_eq!(samples["mxgate_tls_handshake_seconds_count"], 1.0);
    server.stop();
}

/// `STARTTLS` and `MAIL` in one write: the MAIL is never answered, and
/// inside TLS the session needs EHLO again.
fn pipelined_commands_after_starttls_are_discarded(backend: Backend) {
    let (server, _cert, config) = tls_server(backend, &[]);
    let mut c = server.client();
    c.hello();
    c.send(b"STARTTLS\r\nMAIL FROM:<x@y.example>\r\n");
    assert_eq!(c.expect(220), "220 2.0.0 Ready to start TLS");
    let mut tls = TlsClient::handshake(c.into_stream(), &config);
    tls.cmd("NOOP", 250);
    let lines = tls.cmd("MAIL FROM:<s@remote.example>", 503);
    assert!(lines[0].contains("send HELO/EHLO first"), "{lines:?}");
    tls.deliver();
    server.stop();
}

/// STARTTLS inside TLS, with an argument, inside a transaction, and on a
/// server with no certificate.
fn starttls_refusals(backend: Backend) {
    let (server, _cert, config) = tls_server(backend, &[]);
    let mut c = server.client();
    c.hello();
    assert!(c.cmd("STARTTLS now", 501).starts_with("501 5.5.4 "));
    c.cmd("MAIL FROM:<s@remote.example>", 250);
    assert!(c.cmd("STARTTLS", 503).starts_with("503 5.5.1 "));
    c.cmd("RSET", 250);
    c.cmd("STARTTLS", 220);
    let mut tls = TlsClient::handshake(c.into_stream(), &config);
    tls.cmd("EHLO client.example", 250);
    let twice = tls.cmd("STARTTLS", 503);
    assert_eq!(twice[0], "503 5.5.1 Error: TLS already active");
    tls.deliver();
    server.stop();

    let plain = TestServer::start(backend, &[]);
    let mut c = plain.client();
    c.expect(220);
    c.send(b"EHLO client.example\r\n");
    assert_eq!(c.reply().last(), "250 CHUNKING");
    assert!(c.cmd("STARTTLS", 502).starts_with("502 5.5.1 "));
    plain.stop();
}

fn garbage_instead_of_a_client_hello_closes(backend: Backend) {
    let (server, _cert, _config) = tls_server(backend, &[]);
    let mut socket = start_tls(&server);
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(closed_by_server(socket));
    assert!(failure_counted(&server, "bad_record"));
    server.stop();
}

/// A record header announcing more than TLS allows closes at once.
fn an_oversized_record_closes(backend: Backend) {
    let (server, _cert, _config) = tls_server(backend, &[]);
    let mut socket = start_tls(&server);
    socket.write_all(b"\x16\x03\x01\x48\x06").unwrap();
    socket.write_all(&[0; 4096]).unwrap();
    assert!(closed_by_server(socket));
    assert!(failure_counted(&server, "oversized"));
    server.stop();
}

fn a_stalled_handshake_times_out(backend: Backend) {
    let (server, _cert, _config) = tls_server(backend, &["--command-timeout", "1"]);
    let socket = start_tls(&server);
    let start = Instant::now();
    assert!(closed_by_server(socket));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(failure_counted(&server, "timeout"));
    server.stop();
}

fn a_client_closing_mid_handshake_is_counted(backend: Backend) {
    let (server, _cert, config) = tls_server(backend, &[]);
    let mut socket = start_tls(&server);
    let mut conn = ClientConnection::new(config, HOST.try_into().unwrap()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    socket.write_all(&hello[..hello.len() / 2]).unwrap();
    socket.shutdown(Shutdown::Write).unwrap();
    assert!(closed_by_server(socket));
    assert!(failure_counted(&server, "peer_closed"));
    server.stop();
}

fn records_written_an_octet_at_a_time(backend: Backend) {
    let (server, _cert, config) = tls_server(backend, &[]);
    let socket = start_tls(&server);
    socket.set_nodelay(true).unwrap();
    let mut tls = TlsClient::handshake(Trickle(socket), &config);
    let queued = tls.deliver();
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    tls.cmd("QUIT", 221);
    server.stop();
}

backend_tests!(
    delivers_a_message_inside_tls,
    pipelined_commands_after_starttls_are_discarded,
    starttls_refusals,
    garbage_instead_of_a_client_hello_closes,
    an_oversized_record_closes,
    a_stalled_handshake_times_out,
    a_client_closing_mid_handshake_is_counted,
    records_written_an_octet_at_a_time,
    sighup_reloads_the_certificate,
);

/// The binary: a handshake sees the certificate of the last good reload;
/// a bad file keeps the old one with a log line. The log has the session
/// line's TLS fields and the failed handshake's line.
fn sighup_reloads_the_certificate(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let first = Cert::new();
    let second = Cert::new();
    let live = Cert::new();
    std::fs::copy(&first.cert, &live.cert).unwrap();
    std::fs::copy(&first.key, &live.key).unwrap();
    let (c, k) = (
        live.cert.display().to_string(),
        live.key.display().to_string(),
    );
    let mut server = BinServer::start(dir, backend, &["--tls-cert", &c, "--tls-key", &k]);
    let config = client_config(&[&first.der, &second.der]);
    let seen = |server: &BinServer| {
        let mut c = server.client();
        c.hello();
        c.cmd("STARTTLS", 220);
        let mut tls = TlsClient::handshake(c.into_stream(), &config);
        tls.cmd("QUIT", 221);
        tls.peer_certificate()
    };
    assert_eq!(seen(&server), first.der);

    std::fs::copy(&second.cert, &live.cert).unwrap();
    std::fs::copy(&second.key, &live.key).unwrap();
    server.signal("HUP");
    assert!(wait_until(Duration::from_secs(10), || seen(&server) == second.der));

    std::fs::write(&live.cert, "not a certificate").unwrap();
    server.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(seen(&server), second.der, "a bad file keeps the old one");

    let mut c = server.client();
    c.hello();
    c.cmd("STARTTLS", 220);
    let mut socket = c.into_stream();
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(closed_by_server(socket));

    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status, Some(0), "{log}");
    assert!(
        log.contains("TLS reload failed; keeping the old certificate"),
        "{log}"
    );
    assert!(log.contains("TLS certificate reloaded"), "{log}");
    let failed = log.lines().find(|l| l.contains("TLS handshake failed"));
    let failed = failed.unwrap_or_else(|| panic!("{log}"));
    let named = failed.contains("client=127.0.0.1") && failed.contains("reason=bad_record");
    assert!(named, "{failed}");
    assert!(failed.contains("detail="), "{failed}");
    let ended = log
        .lines()
        .find(|l| l.contains("session end") && l.contains("tls="));
    let ended = ended.unwrap_or_else(|| panic!("{log}"));
    assert!(ended.contains("tls=TLSv1.3 cipher=TLS_"), "{ended}");
}

/// One of the two flags alone, or a bad file: exit status 2, one line.
#[test]
fn bad_tls_flags_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let cert = Cert::new();
    std::fs::write(dir.path().join("table.txt"), support::TABLE).unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "junk").unwrap();
    let (c, k, b) = (
        cert.cert.display().to_string(),
        cert.key.display().to_string(),
        bad.display().to_string(),
    );
    let cases: [(&[&str], &str); 3] = [
        (&["--tls-cert", &c], "tls-cert: needs tls-key too"),
        (&["--tls-key", &k], "tls-key: needs tls-cert too"),
        (&["--tls-cert", &b, "--tls-key", &k], "bad.pem"),
    ];
    for (flags, expected) in cases {
        let mut args = support::base_args(dir.path(), flags);
        args[0] = env!("CARGO_BIN_EXE_mxgate").to_string();
        let out = std::process::Command::new(&args[0])
            .args(&args[1..])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr.lines().last().unwrap_or_default();
        assert!(
            line.starts_with("mxgate: ") && line.contains(expected),
            "{stderr}"
        );
    }
}
