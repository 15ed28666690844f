//! Test helpers for the TLS modules: certificates made at test time with
//! rcgen (no key is ever committed), a rustls client that trusts them, and
//! a pump that moves bytes between that client and a [`TlsLayer`] in memory.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::{server_config, CertStore, TlsLayer};

/// The name every test certificate is made for.
pub const HOST: &str = "mx.test";

#[derive(Clone, Copy, Debug)]
pub enum KeyKind {
    EcdsaP256,
    Rsa2048,
}

/// A certificate and its key as PEM text, plus the DER for trusting it.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

pub fn make_cert(kind: KeyKind) -> TestCert {
    let alg = match kind {
        KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyKind::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
    };
    let key = rcgen::KeyPair::generate_for(alg).expect("key generation");
    let params = rcgen::CertificateParams::new(vec![HOST.to_string()]).expect("params");
    let cert = params.self_signed(&key).expect("self-signed");
    TestCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().clone(),
    }
}

/// The two files of a certificate in a temporary directory.
pub struct CertFiles {
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    pub fn new(c: &TestCert) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = Self {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            dir,
        };
        files.write(c);
        files
    }

    pub fn write(&self, c: &TestCert) {
        std::fs::write(&self.cert, &c.cert_pem).expect("write cert");
        std::fs::write(&self.key, &c.key_pem).expect("write key");
    }
}

/// A server side ready to take handshakes with `c`.
pub fn server(c: &TestCert) -> (CertFiles, Arc<CertStore>, Arc<rustls::ServerConfig>) {
    let files = CertFiles::new(c);
    let store = Arc::new(CertStore::load(&files.cert, &files.key).expect("load"));
    let config = server_config(store.clone());
    (files, store, config)
}

/// A client that trusts `trusted` only, speaking the given versions.
pub fn client_config(
    trusted: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.clone()).expect("trust anchor");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

pub fn client(config: &Arc<ClientConfig>) -> ClientConnection {
    ClientConnection::new(config.clone(), HOST.try_into().expect("name")).expect("client")
}

/// Everything the client wants to send, as one byte string.
pub fn client_output(client: &mut ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).expect("write_tls to a Vec");
    }
    out
}

/// Feeds `bytes` to the layer the way a connection would: whatever it does
/// not take is offered again. Returns the first failure.
pub fn feed(layer: &mut TlsLayer, mut bytes: &[u8]) -> Result<(), super::Failure> {
    loop {
        let n = layer.handle_input(bytes)?;
        bytes = &bytes[n..];
        if bytes.is_empty() {
            return Ok(());
        }
        assert!(n > 0, "the layer took nothing from a non-empty input");
    }
}

/// Gives the client everything the layer has queued.
pub fn deliver_to_client(layer: &mut TlsLayer, client: &mut ClientConnection) {
    let out = layer.poll_output().to_vec();
    layer.advance_output(out.len());
    let mut rd: &[u8] = &out;
    while !rd.is_empty() {
        client.read_tls(&mut rd).expect("read_tls from a slice");
        client
            .process_new_packets()
            .expect("client accepts the server's records");
    }
}

/// Runs the handshake to the end with each client flight fed through `cut`,
/// which may split it into several `handle_input` calls.
pub fn handshake_with(
    layer: &mut TlsLayer,
    client: &mut ClientConnection,
    mut cut: impl FnMut(&[u8]) -> Vec<Vec<u8>>,
) {
    for _ in 0..10 {
        if !client.is_handshaking() && !layer.is_handshaking() && !client.wants_write() {
            return;
        }
        let flight = client_output(client);
        for part in cut(&flight) {
            feed(layer, &part).expect("the layer accepts the client's flight");
        }
        deliver_to_client(layer, client);
    }
    panic!("handshake did not finish in 10 round trips");
}

pub fn handshake(layer: &mut TlsLayer, client: &mut ClientConnection) {
    handshake_with(layer, client, |b| vec![b.to_vec()]);
}
