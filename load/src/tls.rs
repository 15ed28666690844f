//! The client side of `--starttls`: one rustls configuration for the run,
//! and moving one session's bytes between its socket, its rustls
//! [`ClientConnection`] and its sans-IO [`Client`].
//!
//! Owns the certificate policy, which is for load tests only: any
//! certificate is accepted (test certificates are self-signed), but the
//! server's handshake signature is still checked, so the handshake costs
//! what a real client's does. Resumption is off: every session pays for a
//! full handshake, as a new sender would. rustls' buffered
//! `ClientConnection` is enough here: the client's memory is not measured.
//! Does not decide when TLS starts (the [`Client`] says so with
//! [`Status::StartTls`]) and does not own the socket.

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{aws_lc_rs, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

use super::client::{Client, Status};
use super::stats::{Failure, Stats};

/// The run's TLS client configuration: TLS 1.2 and 1.3, aws-lc-rs, any
/// certificate, no resumption.
pub fn client_config() -> Arc<ClientConfig> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let verifier = Arc::new(AcceptAnyCertificate(provider.clone()));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

/// A new client connection to `target`: its ClientHello is ready to write.
pub fn connect(
    config: &Arc<ClientConfig>,
    target: SocketAddr,
) -> Result<ClientConnection, Failure> {
    let name = ServerName::IpAddress(target.ip().into());
    ClientConnection::new(config.clone(), name).map_err(|_| Failure::Tls)
}

/// Feeds `bytes` read from the socket at `now` through TLS; the plaintext
/// goes to `client` (via `plain`, a scratch buffer).
pub fn input(
    tls: &mut ClientConnection,
    client: &mut Client,
    mut bytes: &[u8],
    plain: &mut [u8],
    now: u64,
    stats: &mut Stats,
) -> Result<Status, Failure> {
    while !bytes.is_empty() {
        // Takes what fits in rustls' buffer; the rest goes round again.
        tls.read_tls(&mut bytes).map_err(|_| Failure::Tls)?;
        let state = tls.process_new_packets().map_err(|_| Failure::Tls)?;
        if !tls.is_handshaking() {
            client.handshake_done(now, stats);
        }
        let mut left = state.plaintext_bytes_to_read();
        while left > 0 {
            let n = tls.reader().read(plain).map_err(|_| Failure::Tls)?;
            left -= n;
            match client.input(&plain[..n], now, stats) {
                Ok(Status::Running) => {}
                Ok(Status::Finished) => return Ok(Status::Finished),
                // The client never sends STARTTLS inside TLS.
                Ok(Status::StartTls) => return Err(Failure::Protocol),
                Err(e) => return Err(e.failure()),
            }
        }
        if state.peer_has_closed() {
            return Err(Failure::Io);
        }
    }
    Ok(Status::Running)
}

/// Encrypts what `client` has queued and writes TLS records to `socket`
/// until done or the socket is full. `now` reads the clock in µs.
pub fn flush(
    tls: &mut ClientConnection,
    client: &mut Client,
    socket: &mut impl Write,
    now: impl Fn() -> u64,
) -> Result<(), Failure> {
    loop {
        let [body, commands] = client.output();
        let queued = !(body.is_empty() && commands.is_empty());
        if queued && !tls.is_handshaking() {
            let out = [IoSlice::new(body), IoSlice::new(commands)];
            let n = tls
                .writer()
                .write_vectored(&out)
                .map_err(|_| Failure::Tls)?;
            client.wrote(n, now());
        }
        if !tls.wants_write() {
            return Ok(());
        }
        match tls.write_tls(socket) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Failure::Io),
        }
    }
}

/// Accepts every certificate; checks the handshake signatures with the
/// provider's algorithms. For load tests only.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
