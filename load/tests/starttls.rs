//! `mxgate-load --starttls` end to end over loopback TCP, against a small
//! STARTTLS server written here (std::net and a rustls `ServerConnection`
//! with a certificate made at test time, one thread per connection), which
//! counts the messages it received inside TLS.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;

use mxgate_load::Phase;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

mod common;
use common::{config, run};

/// How the server answers STARTTLS.
#[derive(Clone, Copy, PartialEq)]
enum Tls {
    /// Offered; 220, then a real handshake.
    Offered,
    /// Not in the EHLO reply (and 502 if asked anyway).
    NotOffered,
    /// Offered; 220, then plain text in answer to the ClientHello.
    Garbage,
    /// Offered; 220 and a plain-text reply behind it in one write (the
    /// server-side injection of CVE-2011-0411).
    Injected,
}

/// What the server saw, summed over connections.
#[derive(Default)]
struct Seen {
    handshakes: AtomicU64,
    /// Messages received in plain text.
    plain: Tally,
    /// Messages received inside TLS.
    tls: Tally,
}

/// Messages and their octets (before the final dot).
#[derive(Default)]
struct Tally {
    messages: AtomicU64,
    octets: AtomicU64,
}

fn server(tls: Tls) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let config = server_config();
    let s = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (s, config) = (s.clone(), config.clone());
            thread::spawn(move || serve(stream, tls, &config, &s));
        }
    });
    (addr, seen)
}

/// A self-signed ECDSA P-256 certificate for 127.0.0.1.
fn server_config() -> Arc<ServerConfig> {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let key = PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    let provider = Arc::new(aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], PrivateKeyDer::Pkcs8(key))
        .unwrap();
    Arc::new(config)
}

/// One session: plain text up to STARTTLS, then (maybe) the same inside TLS.
fn serve(stream: TcpStream, tls: Tls, config: &Arc<ServerConfig>, seen: &Seen) {
    let mut plain = BufReader::new(stream);
    let _ = plain.get_mut().write_all(b"220 test ESMTP\r\n");
    if !converse(&mut plain, tls, &seen.plain) {
        return;
    }
    // Whatever the client sent after STARTTLS is dropped with the buffer.
    let mut tcp = plain.into_inner();
    if tls == Tls::Garbage {
        let _ = tcp.read(&mut [0; 512]); // the ClientHello (or part of it)
        let _ = tcp.write_all(b"this is not a ServerHello\r\n");
        return;
    }
    let conn = ServerConnection::new(config.clone()).unwrap();
    let mut secure = BufReader::new(StreamOwned::new(conn, tcp));
    if secure.fill_buf().is_err() {
        return; // the handshake failed
    }
    seen.handshakes.fetch_add(1, SeqCst);
    converse(&mut secure, Tls::NotOffered, &seen.tls);
}

/// Answers commands, offering STARTTLS as `tls` says, until QUIT or the
/// connection's end (false) or a 220 to STARTTLS (true). Every recipient is
/// accepted.
fn converse<S: Read + Write>(io: &mut BufReader<S>, tls: Tls, tally: &Tally) -> bool {
    let offer_tls = matches!(tls, Tls::Offered | Tls::Garbage);
    let injected = tls == Tls::Injected;
    let mut line = String::new();
    loop {
        line.clear();
        if io.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        let cmd = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = match cmd.get(..4).unwrap_or("") {
            "EHLO" if offer_tls || injected => b"250-test\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
            "EHLO" => b"250-test\r\n250 PIPELINING\r\n",
            "STAR" if offer_tls => {
                let _ = io.get_mut().write_all(b"220 2.0.0 Ready to start TLS\r\n");
                return true;
            }
            "STAR" if injected => {
                let _ = io
                    .get_mut()
                    .write_all(b"220 2.0.0 Go ahead\r\n250 injected\r\n");
                return false;
            }
            "STAR" => b"502 5.5.1 not here\r\n",
            "MAIL" | "RCPT" => b"250 2.0.0 Ok\r\n",
            "DATA" => {
                let _ = io.get_mut().write_all(b"354 go\r\n");
                tally.octets.fetch_add(read_body(io), SeqCst);
                tally.messages.fetch_add(1, SeqCst);
                b"250 2.0.0 Ok: queued\r\n"
            }
            "QUIT" => {
                let _ = io.get_mut().write_all(b"221 2.0.0 Bye\r\n");
                return false;
            }
            _ => b"500 5.5.2 what\r\n",
        };
        if io.get_mut().write_all(reply).is_err() {
            return false;
        }
    }
}

/// Reads a message up to its final dot; returns its octets.
fn read_body(io: &mut impl BufRead) -> u64 {
    let mut octets = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        if io.read_until(b'\n', &mut line).unwrap_or(0) == 0 || line == b".\r\n" {
            return octets;
        }
        octets += line.len() as u64;
    }
}

#[test]
fn transactions_run_inside_tls_lock_step_and_pipelined() {
    for (pipelining, size) in [("", 1024), ("--pipelining", 70_000)] {
        let (addr, seen) = server(Tls::Offered);
        let args = format!(
            "--starttls {pipelining} --sessions 4 --sessions-total 12 --messages 2 --size {size}"
        );
        let report = run(config(addr, &args));
        let c = report.counts;
        assert_eq!(c.sessions_completed, 12, "{}", report.table());
        assert_eq!(c.messages_accepted, 24);
        assert_eq!(seen.handshakes.load(SeqCst), 12);
        assert_eq!(seen.tls.messages.load(SeqCst), 24);
        assert_eq!(seen.tls.octets.load(SeqCst), 24 * size as u64);
        assert_eq!(seen.plain.messages.load(SeqCst), 0);
        assert_eq!(report.phase(Phase::Starttls).count, 12);
        assert_eq!(report.phase(Phase::Ehlo).count, 24, "before and inside TLS");
        assert_eq!(c.protocol_errors + c.tls_errors + c.io_errors, 0);
    }
}

#[test]
fn without_starttls_the_same_server_gets_plain_text() {
    let (addr, seen) = server(Tls::Offered);
    let report = run(config(addr, "--sessions 2 --sessions-total 4"));
    assert_eq!(report.counts.messages_accepted, 4);
    assert_eq!(seen.plain.messages.load(SeqCst), 4);
    assert_eq!(seen.handshakes.load(SeqCst), 0);
    assert_eq!(report.phase(Phase::Starttls).count, 0);
}

#[test]
fn a_server_without_starttls_is_a_protocol_error() {
    let (addr, seen) = server(Tls::NotOffered);
    let report = run(config(addr, "--starttls --sessions 3"));
    let c = report.counts;
    assert_eq!(c.sessions_completed, 0);
    assert_eq!((c.protocol_errors, c.no_starttls), (3, 3));
    assert_eq!(seen.plain.messages.load(SeqCst), 0, "no mail in plain text");
    assert!(report.table().contains("(3 STARTTLS not offered)"));
}

#[test]
fn a_broken_handshake_is_a_tls_error() {
    let (addr, _) = server(Tls::Garbage);
    let report = run(config(addr, "--starttls --sessions 2"));
    let c = report.counts;
    assert_eq!((c.sessions_completed, c.tls_errors), (0, 2));
    assert_eq!(report.phase(Phase::Starttls).count, 0);
}

#[test]
fn plain_text_behind_the_220_to_starttls_is_a_protocol_error() {
    let (addr, seen) = server(Tls::Injected);
    let report = run(config(addr, "--starttls --sessions 2"));
    let c = report.counts;
    assert_eq!((c.sessions_completed, c.protocol_errors), (0, 2));
    assert_eq!(c.no_starttls, 0);
    assert_eq!(seen.plain.messages.load(SeqCst), 0);
}
