//! TLS configuration: the `--tls-cert`/`--tls-key` PEM files turned into a
//! rustls [`ServerConfig`], and the certificate store that SIGHUP reloads.
//!
//! Owns: reading and checking the two files, the policy DESIGN.md fixes
//! (TLS 1.2 and 1.3 only, no client certificate, one certificate whatever
//! the SNI, no session tickets or resumption), and [`CertStore`], a
//! [`ResolvesServerCert`] whose certificate is swapped atomically, so a
//! reload takes effect for the next handshake and never disturbs one in
//! flight.
//!
//! Does not own: when to reload (the runtime's SIGHUP handling), logging the
//! error (the caller logs the one line [`TlsConfigError`] displays), or the
//! per-connection layer ([`super::layer`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// Why a certificate or key file could not be used. Displays as one line
/// naming the file and the problem, as every bad file in mxgate does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfigError {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it, in a few words.
    pub problem: String,
}

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for TlsConfigError {}

impl TlsConfigError {
    fn new(path: &Path, problem: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}

/// The server's one certificate, replaceable while connections are served.
///
/// Every handshake reads the current [`CertifiedKey`] with one atomic load;
/// [`CertStore::reload`] builds the new one completely before swapping, so a
/// bad file never leaves the store half-updated.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    /// Loads the certificate chain and its private key. Errors name the file.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsConfigError> {
        let key = load_certified_key(cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: ArcSwap::from_pointee(key),
        })
    }

    /// Reads both files again and, only if they are good, makes them the
    /// certificate of every later handshake. On error the old one stays.
    pub fn reload(&self) -> Result<(), TlsConfigError> {
        let key = load_certified_key(&self.cert_path, &self.key_path)?;
        self.current.store(Arc::new(key));
        Ok(())
    }

    /// The certificate the next handshake will present.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertStore {
    /// SNI is ignored on purpose: an MX serves one name, and senders do not
    /// check it against anything but the MX host name anyway.
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The rustls configuration every TLS connection of this process shares,
/// on the process-wide crypto provider if one was installed, else rustls'
/// default (aws-lc-rs).
pub fn server_config(store: Arc<CertStore>) -> Arc<ServerConfig> {
    server_config_with_provider(store, provider())
}

/// [`server_config`] on a given crypto provider (tests measure ring's).
pub fn server_config_with_provider(
    store: Arc<CertStore>,
    provider: Arc<CryptoProvider>,
) -> Arc<ServerConfig> {
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .expect("rustls' providers all speak TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(store);
    // No resumption: a cache or tickets cost memory per session and per
    // process, and MTAs reconnect rarely enough that full handshakes are fine.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

/// Reads a PEM chain and a PEM key and checks that they belong together.
fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsConfigError> {
    let chain = read_chain(cert_path)?;
    let key = read_key(key_path)?;
    let provider = provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsConfigError::new(
            key_path,
            format!(
                "key does not match the certificate in {}",
                cert_path.display()
            ),
        ),
        other => TlsConfigError::new(key_path, format!("unusable key: {other}")),
    })
}

/// The process-wide provider if one was installed, else mxgate's own
/// ([`default_provider`]), named rather than left to rustls to pick: with
/// both crypto back ends compiled in, rustls would refuse to choose.
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(default_provider()))
}

/// aws-lc-rs for key exchange (with the post-quantum X25519MLKEM768
/// group), signatures and keys; ring's suites for the record layer. ring
/// keeps a connection's AES-GCM or ChaCha20-Poly1305 keys inside rustls'
/// own state, where aws-lc-rs allocates a C context of about 600 octets
/// per direction: an idle TLS session costs 113 octets less
/// (`benches/scripts/tls.sh idle`, benches/RESULTS.md).
pub fn default_provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: rustls::crypto::ring::DEFAULT_CIPHER_SUITES.to_vec(),
        ..rustls::crypto::aws_lc_rs::default_provider()
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|e| TlsConfigError::new(path, format!("unreadable: {e}")))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let bytes = read_file(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::new(path, format!("bad PEM: {}", pem_problem(&e))))?;
    if chain.is_empty() {
        return Err(TlsConfigError::new(path, "no certificate in file"));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    let bytes = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        // rustls reads no encrypted keys; say so rather than "no key".
        pem::Error::NoItemsFound if contains(&bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY") => {
            TlsConfigError::new(path, "encrypted private key: store it decrypted")
        }
        pem::Error::NoItemsFound => TlsConfigError::new(path, "no private key in file"),
        other => TlsConfigError::new(path, format!("bad PEM: {}", pem_problem(&other))),
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// pki-types' messages can span lines (base64 errors); keep ours to one.
fn pem_problem(e: &pem::Error) -> String {
    e.to_string().replace('\n', " ")
}
