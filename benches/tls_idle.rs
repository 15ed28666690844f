//! How much memory one idle TLS session costs the server after STARTTLS,
//! with each of rustls' two APIs: the unbuffered `UnbufferedServerConnection`
//! behind `mxgate::tls::TlsLayer`, and the buffered `ServerConnection`.
//!
//! 1,000 sessions are held at once, each after a handshake and an SMTP
//! exchange, then again after each also received one full-size (16 KiB)
//! record; with mxgate's crypto provider (aws-lc-rs with ring's
//! record-layer suites), aws-lc-rs alone and ring alone; TLS 1.3 with an
//! ECDSA P-256 certificate, and for the layer and provider mxgate uses
//! also TLS 1.2 and RSA 2048. Each case
//! runs in a fresh child process (this binary again, one ignored test) and
//! gives two figures per session: Rust heap bytes still held (a counting
//! global allocator) and the growth of resident memory, which also sees
//! aws-lc's own C allocations (its AES-GCM contexts) and malloc's overhead.
//! `cargo bench --bench tls_idle` prints the table. A bench, not a test:
//! memory targets are read off figures, not asserted on a shared machine.

use std::alloc::System;
use std::io::{Read, Write};
use std::process::Command;
use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConnection};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

use mxgate::tls::{default_provider, server_config_with_provider, CertStore, TlsLayer};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SESSIONS: usize = 1000;
const EHLO: &[u8] = b"EHLO client.test\r\n";
const REPLY: &[u8] = b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 CHUNKING\r\n";

/// The server end of one session, whichever API carries it.
trait Server {
    fn feed(&mut self, ciphertext: &[u8]);
    fn take_plaintext(&mut self) -> Vec<u8>;
    fn reply(&mut self, plaintext: &[u8]);
    fn output(&mut self) -> Vec<u8>;
    fn handshaking(&self) -> bool;
}

impl Server for TlsLayer {
    fn feed(&mut self, mut ciphertext: &[u8]) {
        while !ciphertext.is_empty() {
            let n = self.handle_input(ciphertext).expect("layer input");
            ciphertext = &ciphertext[n..];
            let n = self.plaintext().len();
            self.consume_plaintext(n);
        }
    }
    fn take_plaintext(&mut self) -> Vec<u8> {
        let p = self.plaintext().to_vec();
        self.consume_plaintext(p.len());
        p
    }
    fn reply(&mut self, plaintext: &[u8]) {
        self.write_plaintext(plaintext).expect("write");
    }
    fn output(&mut self) -> Vec<u8> {
        let out = self.poll_output().to_vec();
        self.advance_output(out.len());
        out
    }
    fn handshaking(&self) -> bool {
        self.is_handshaking()
    }
}

impl Server for ServerConnection {
    fn feed(&mut self, mut ciphertext: &[u8]) {
        while !ciphertext.is_empty() {
            self.read_tls(&mut ciphertext).expect("read_tls");
            self.process_new_packets().expect("process");
            // A session reads what arrives at once, as mxgate's would.
            let _ = self.take_plaintext();
        }
    }
    fn take_plaintext(&mut self) -> Vec<u8> {
        let mut p = Vec::new();
        let _ = self.reader().read_to_end(&mut p);
        p
    }
    fn reply(&mut self, plaintext: &[u8]) {
        self.writer().write_all(plaintext).expect("write");
    }
    fn output(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.wants_write() {
            self.write_tls(&mut out).expect("write_tls");
        }
        out
    }
    fn handshaking(&self) -> bool {
        self.is_handshaking()
    }
}

fn client_flight(client: &mut ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).expect("client write_tls");
    }
    out
}

fn to_client(client: &mut ClientConnection, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        client.read_tls(&mut bytes).expect("client read_tls");
        client.process_new_packets().expect("client process");
    }
}

/// Handshake, EHLO and its reply; then, if asked, one full-size record.
fn session<S: Server>(server: &mut S, client_cfg: &Arc<ClientConfig>, big_record: bool) {
    let mut client =
        ClientConnection::new(client_cfg.clone(), "mx.test".try_into().unwrap()).unwrap();
    while client.is_handshaking() || server.handshaking() || client.wants_write() {
        let flight = client_flight(&mut client);
        server.feed(&flight);
        let out = server.output();
        to_client(&mut client, &out);
    }
    client.writer().write_all(EHLO).unwrap();
    let flight = client_flight(&mut client);
    server.feed(&flight);
    server.reply(REPLY);
    let out = server.output();
    to_client(&mut client, &out);
    if big_record {
        client.writer().write_all(&[b'x'; 16_384]).unwrap();
        let flight = client_flight(&mut client);
        server.feed(&flight);
    }
    let _ = server.take_plaintext();
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Per session: Rust heap bytes held, live allocations, resident bytes.
#[derive(Debug, Clone, Copy)]
struct Figures {
    heap: usize,
    allocs: usize,
    rss: usize,
}

fn measure<S: Server>(
    make: impl Fn() -> Box<S>,
    client_cfg: &Arc<ClientConfig>,
    big_record: bool,
) -> Figures {
    // One session first, so lazily built statics are not counted.
    session(&mut *make(), client_cfg, big_record);
    let mut held = Vec::with_capacity(SESSIONS);
    let rss_before = rss_bytes();
    let region = Region::new(GLOBAL);
    for _ in 0..SESSIONS {
        let mut server = make();
        session(&mut *server, client_cfg, big_record);
        held.push(server);
    }
    let change = region.change();
    let rss_after = rss_bytes();
    Figures {
        heap: (change.bytes_allocated - change.bytes_deallocated) / SESSIONS,
        allocs: (change.allocations - change.deallocations) / SESSIONS,
        rss: rss_after.saturating_sub(rss_before) / SESSIONS,
    }
}

// ring's whole provider is deprecated in rustls 0.23.48 (no post-quantum
// key exchange); it is here only to be measured. "mxgate" is the mix
// mxgate runs on (aws-lc-rs, with ring's record-layer suites).
#[allow(deprecated)]
fn provider(name: &str) -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(match name {
        "ring" => rustls::crypto::ring::default_provider(),
        "aws-lc-rs" => rustls::crypto::aws_lc_rs::default_provider(),
        _ => default_provider(),
    })
}

/// A case: which API, provider, whether a full record arrives, the TLS
/// version the client allows, and the certificate's key type.
struct Case<'a> {
    api: &'a str,
    provider: &'a str,
    big: bool,
    version: &'a str,
    key: &'a str,
}

impl Case<'_> {
    fn parse(s: &str) -> Case<'_> {
        let w: Vec<&str> = s.split(' ').collect();
        Case {
            api: w[0],
            provider: w[1],
            big: w[2] == "1",
            version: w[3],
            key: w[4],
        }
    }

    fn encode(&self) -> String {
        let big = self.big as u8;
        format!(
            "{} {} {big} {} {}",
            self.api, self.provider, self.version, self.key
        )
    }
}

fn configs(
    case: &Case<'_>,
) -> (
    tempfile::TempDir,
    Arc<rustls::ServerConfig>,
    Arc<ClientConfig>,
) {
    let alg = match case.key {
        "rsa2048" => &rcgen::PKCS_RSA_SHA256,
        _ => &rcgen::PKCS_ECDSA_P256_SHA256,
    };
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mx.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let store = Arc::new(CertStore::load(&cert_path, &key_path).unwrap());
    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = match case.version {
        "1.2" => &[&rustls::version::TLS12],
        _ => &[&rustls::version::TLS13],
    };
    let client = ClientConfig::builder_with_provider(provider(case.provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server = server_config_with_provider(store, provider(case.provider));
    (dir, server, Arc::new(client))
}

const CASE_VAR: &str = "MXGATE_TLS_MEMORY_CASE";

/// One case, in a child process (see [`Case::encode`]).
fn one_case(encoded: &str) {
    let case = Case::parse(encoded);
    let (_dir, config, client_cfg) = configs(&case);
    let f = match case.api {
        "unbuffered" => measure(
            || Box::new(TlsLayer::new(config.clone()).unwrap()),
            &client_cfg,
            case.big,
        ),
        _ => measure(
            || Box::new(ServerConnection::new(config.clone()).unwrap()),
            &client_cfg,
            case.big,
        ),
    };
    println!("RESULT {} {} {}", f.heap, f.allocs, f.rss);
}

fn run_case(case: &str) -> Figures {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CASE_VAR, case)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("{case}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    let n: Vec<usize> = line.split(' ').map(|w| w.parse().unwrap()).collect();
    Figures {
        heap: n[0],
        allocs: n[1],
        rss: n[2],
    }
}

fn all_cases() -> Vec<Case<'static>> {
    let mut cases = Vec::new();
    for api in ["unbuffered", "buffered"] {
        for provider in ["mxgate", "aws-lc-rs", "ring"] {
            for big in [false, true] {
                let (version, key) = ("1.3", "p256");
                cases.push(Case {
                    api,
                    provider,
                    big,
                    version,
                    key,
                });
            }
        }
    }
    // The other version and key type, for the layer mxgate uses.
    let (api, provider, big) = ("unbuffered", "mxgate", false);
    cases.push(Case {
        api,
        provider,
        big,
        version: "1.2",
        key: "p256",
    });
    cases.push(Case {
        api,
        provider,
        big,
        version: "1.3",
        key: "rsa2048",
    });
    cases.push(Case {
        api,
        provider,
        big,
        version: "1.2",
        key: "rsa2048",
    });
    cases
}

fn main() {
    if let Ok(case) = std::env::var(CASE_VAR) {
        return one_case(&case);
    }
    println!("per idle TLS session, {SESSIONS} held, each case in a fresh process:");
    println!(
        "api        | provider  | TLS | key     | after           | Rust heap B | allocs | RSS B"
    );
    for case in all_cases() {
        let f = run_case(&case.encode());
        let after = if case.big {
            "a 16 KiB record"
        } else {
            "EHLO only"
        };
        println!(
            "{:<10} | {:<9} | {} | {:<7} | {after:<15} | {:>11} | {:>6} | {:>5}",
            case.api, case.provider, case.version, case.key, f.heap, f.allocs, f.rss
        );
    }
    println!(
        "inline sizes: TlsLayer {} B (UnbufferedServerConnection {} B), ServerConnection {} B",
        std::mem::size_of::<TlsLayer>(),
        std::mem::size_of::<rustls::server::UnbufferedServerConnection>(),
        std::mem::size_of::<ServerConnection>(),
    );
}
