//! The TLS layer driven by a rustls client in memory: handshakes with both
//! key types and both versions, an SMTP exchange, every split of the
//! client's bytes, bad input of each kind, close_notify, and certificate
//! reloads. No sockets: bytes go from one side to the other through Vecs.

use std::io::{Read, Write};

use rustls::version::{TLS12, TLS13};

use super::layer::{MAX_CIPHERTEXT_BUFFER, PLAINTEXT_HIGH_WATER};
use super::testkit::*;
use super::*;

/// Sends `line` from the client and returns what the layer decrypted.
fn client_says(
    layer: &mut TlsLayer,
    client: &mut rustls::ClientConnection,
    line: &[u8],
) -> Vec<u8> {
    client.writer().write_all(line).unwrap();
    let bytes = client_output(client);
    feed(layer, &bytes).unwrap();
    let got = layer.plaintext().to_vec();
    layer.consume_plaintext(got.len());
    got
}

/// Sends `reply` from the layer and returns what the client read.
fn server_says(
    layer: &mut TlsLayer,
    client: &mut rustls::ClientConnection,
    reply: &[u8],
) -> Vec<u8> {
    layer.write_plaintext(reply).unwrap();
    deliver_to_client(layer, client);
    let mut got = vec![0; reply.len() + 100];
    let n = client.reader().read(&mut got).unwrap();
    got.truncate(n);
    got
}

fn established(
    kind: KeyKind,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (TlsLayer, rustls::ClientConnection) {
    let cert = make_cert(kind);
    let (_files, _store, config) = server(&cert);
    let mut layer = TlsLayer::new(config).unwrap();
    let mut client = client(&client_config(&cert.der, versions));
    handshake(&mut layer, &mut client);
    (layer, client)
}

fn smtp_exchange(layer: &mut TlsLayer, client: &mut rustls::ClientConnection) {
    assert_eq!(
        client_says(layer, client, b"EHLO client.test\r\n"),
        b"EHLO client.test\r\n"
    );
    let ehlo = b"250-mx.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n";
    assert_eq!(server_says(layer, client, ehlo), ehlo);
    let pipelined = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n";
    assert_eq!(client_says(layer, client, pipelined), pipelined);
    assert_eq!(
        server_says(layer, client, b"250 2.1.0 Ok\r\n"),
        b"250 2.1.0 Ok\r\n"
    );
}

#[test]
fn ecdsa_p256_over_tls13_carries_an_smtp_exchange() {
    let (mut layer, mut client) = established(KeyKind::EcdsaP256, &[&TLS13]);
    let n = layer.negotiated().expect("established");
    assert_eq!(n.version, "TLSv1.3");
    assert_eq!(n.cipher, "TLS_AES_256_GCM_SHA384");
    assert!(!layer.is_handshaking());
    smtp_exchange(&mut layer, &mut client);
}

#[test]
fn rsa_2048_over_tls12_carries_an_smtp_exchange() {
    let (mut layer, mut client) = established(KeyKind::Rsa2048, &[&TLS12]);
    let n = layer.negotiated().expect("established");
    assert_eq!(n.version, "TLSv1.2");
    assert_eq!(n.cipher, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384");
    smtp_exchange(&mut layer, &mut client);
}

#[test]
fn ecdsa_over_tls12_names_the_ecdsa_suite() {
    let (layer, _client) = established(KeyKind::EcdsaP256, &[&TLS12]);
    let n = layer.negotiated().unwrap();
    assert_eq!(
        (n.version, n.cipher),
        ("TLSv1.2", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384")
    );
}

#[test]
fn rsa_over_tls13() {
    let (mut layer, mut client) = established(KeyKind::Rsa2048, &[&TLS13, &TLS12]);
    assert_eq!(layer.negotiated().unwrap().version, "TLSv1.3");
    smtp_exchange(&mut layer, &mut client);
}

/// One conversation with the client's byte stream (every flight, then a
/// pipelined command group) cut once at `cut`; the server must see the same.
fn conversation_cut_at(
    config: &std::sync::Arc<rustls::ServerConfig>,
    client_cfg: &std::sync::Arc<rustls::ClientConfig>,
    cut: usize,
) -> usize {
    let mut layer = TlsLayer::new(config.clone()).unwrap();
    let mut client = client(client_cfg);
    let mut sent = 0;
    let mut splitter = |flight: &[u8]| {
        let parts = split_stream(flight, sent, cut);
        sent += flight.len();
        parts
    };
    handshake_with(&mut layer, &mut client, &mut splitter);
    let line = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n";
    client.writer().write_all(line).unwrap();
    let bytes = client_output(&mut client);
    for part in splitter(&bytes) {
        feed(&mut layer, &part).unwrap();
    }
    assert_eq!(layer.plaintext(), line, "cut at {cut}");
    sent
}

/// Splits `flight`, which starts at offset `at` of the whole stream, where
/// the stream's offset `cut` falls inside it.
fn split_stream(flight: &[u8], at: usize, cut: usize) -> Vec<Vec<u8>> {
    if cut > at && cut < at + flight.len() {
        let (a, b) = flight.split_at(cut - at);
        vec![a.to_vec(), b.to_vec()]
    } else {
        vec![flight.to_vec()]
    }
}

#[test]
fn client_bytes_cut_at_every_offset() {
    let cert = make_cert(KeyKind::EcdsaP256);
    let (_files, _store, config) = server(&cert);
    for versions in [&[&TLS13][..], &[&TLS12][..]] {
        let client_cfg = client_config(&cert.der, versions);
        let total = conversation_cut_at(&config, &client_cfg, 0);
        for cut in 1..total {
            conversation_cut_at(&config, &client_cfg, cut);
        }
    }
}

#[test]
fn client_bytes_one_at_a_time() {
    let cert = make_cert(KeyKind::Rsa2048);
    let (_files, _store, config) = server(&cert);
    let mut layer = TlsLayer::new(config).unwrap();
    let mut client = client(&client_config(&cert.der, &[&TLS13]));
    handshake_with(&mut layer, &mut client, |f| {
        f.chunks(1).map(<[u8]>::to_vec).collect()
    });
    smtp_exchange(&mut layer, &mut client);
}

fn fresh_layer() -> TlsLayer {
    let cert = make_cert(KeyKind::EcdsaP256);
    let (_files, _store, config) = server(&cert);
    TlsLayer::new(config).unwrap()
}

#[test]
fn garbage_instead_of_a_client_hello_is_a_bad_record() {
    for garbage in [
        &b"EHLO client.test\r\n"[..],
        b"\x16\x03\x01\x00\x04\x01\x00\x00\x00",
        b"\x00\x00\x00\x00\x00\x00",
    ] {
        let mut layer = fresh_layer();
        assert_eq!(
            layer.handle_input(garbage),
            Err(Failure::BadRecord),
            "{garbage:?}"
        );
        assert_eq!(layer.state(), State::Failed(Failure::BadRecord));
        assert!(layer.detail().is_some());
        assert_eq!(
            layer.handle_input(b"more"),
            Err(Failure::BadRecord),
            "failure is final"
        );
        assert_eq!(
            layer.write_plaintext(b"x"),
            Err(WriteError::Failed(Failure::BadRecord))
        );
    }
}

/// A TLS 1.1 ClientHello as old clients send it: no extensions at all.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // two suites
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut hs = vec![0x01, 0x00, 0x00, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, hs.len() as u8];
    record.extend_from_slice(&hs);
    record
}

#[test]
fn a_tls11_client_finds_no_shared_version() {
    let mut layer = fresh_layer();
    assert_eq!(
        layer.handle_input(&tls11_client_hello()),
        Err(Failure::NoSharedVersion),
        "{:?}",
        layer.detail()
    );
    assert_eq!(layer.poll_output().first(), Some(&0x15), "an alert");
}

#[test]
fn a_bad_record_gets_an_alert_before_the_close() {
    let mut layer = fresh_layer();
    let _ = layer.handle_input(b"EHLO client.test\r\n");
    let out = layer.poll_output();
    assert_eq!(out.first(), Some(&0x15), "an alert record: {out:?}");
}

#[test]
fn a_peer_that_closes_mid_handshake() {
    let cert = make_cert(KeyKind::EcdsaP256);
    let (_files, _store, config) = server(&cert);
    let mut layer = TlsLayer::new(config.clone()).unwrap();
    let mut client = client(&client_config(&cert.der, &[&TLS13]));
    let hello = client_output(&mut client);
    feed(&mut layer, &hello[..hello.len() / 2]).unwrap();
    assert!(layer.is_handshaking());
    layer.peer_eof();
    assert_eq!(layer.state(), State::Failed(Failure::PeerClosed));

    // The same with close_notify instead of the TCP end, after the hello.
    let mut layer = TlsLayer::new(config).unwrap();
    let mut client = super::testkit::client(&client_config(&cert.der, &[&TLS13]));
    let hello = client_output(&mut client);
    feed(&mut layer, &hello).unwrap();
    let alert = b"\x15\x03\x03\x00\x02\x01\x00";
    assert_eq!(layer.handle_input(alert), Err(Failure::PeerClosed));
}

#[test]
fn eof_after_the_handshake_is_not_a_failure() {
    let (mut layer, _client) = established(KeyKind::EcdsaP256, &[&TLS13]);
    layer.peer_eof();
    assert!(layer.is_peer_closed());
    assert!(matches!(layer.state(), State::Established(_)));
}

#[test]
fn a_record_longer_than_tls_allows_is_oversized() {
    let mut layer = fresh_layer();
    // A handshake record header announcing 0x4806 octets: one more than the
    // largest ciphertext rustls accepts.
    assert_eq!(
        layer.handle_input(b"\x16\x03\x01\x48\x06"),
        Err(Failure::Oversized)
    );
}

#[test]
fn a_client_hello_too_large_to_hold_is_oversized() {
    let mut layer = fresh_layer();
    // A ClientHello announcing 60,000 octets, sent as full-size records:
    // rustls would join it, but the layer holds one record at most.
    let mut stream = Vec::new();
    let mut body = vec![0x01, 0x00, 0xea, 0x60];
    body.resize(60_004, 0x41);
    for chunk in body.chunks(16_384) {
        stream.extend_from_slice(&[0x16, 0x03, 0x01]);
        stream.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        stream.extend_from_slice(chunk);
    }
    let mut rest = &stream[..];
    let outcome = loop {
        match layer.handle_input(rest) {
            Ok(0) => panic!("stuck without a failure"),
            Ok(n) => rest = &rest[n..],
            Err(f) => break f,
        }
        assert!(!rest.is_empty(), "60 kB accepted");
    };
    assert_eq!(outcome, Failure::Oversized);
    assert!(layer.plaintext().is_empty());
}

#[test]
fn plaintext_the_session_does_not_take_stays_bounded() {
    let (mut layer, mut client) = established(KeyKind::EcdsaP256, &[&TLS13]);
    let blob = vec![b'x'; 300_000];
    client.set_buffer_limit(None);
    client.writer().write_all(&blob).unwrap();
    let bytes = client_output(&mut client);
    let mut rest = &bytes[..];
    let mut received = 0;
    while received < blob.len() {
        let n = layer.handle_input(rest).unwrap();
        rest = &rest[n..];
        assert!(layer.plaintext().len() <= 2 * PLAINTEXT_HIGH_WATER);
        // Capacities, so twice the lengths at most, plus a reply's worth.
        assert!(layer.buffered_bytes() <= 2 * (MAX_CIPHERTEXT_BUFFER + 2 * PLAINTEXT_HIGH_WATER));
        // A slow session: half of what is there, on each wake-up.
        let take = layer.plaintext().len().div_ceil(2);
        layer.consume_plaintext(take);
        received += take;
        assert!(n > 0 || take > 0, "no progress");
    }
    assert!(rest.is_empty());
}

#[test]
fn a_partial_line_left_behind_does_not_pin_a_large_buffer() {
    let (mut layer, mut client) = established(KeyKind::EcdsaP256, &[&TLS13]);
    let mut body = vec![b'x'; 16_000];
    body.extend_from_slice(b"\r\nRCPT T");
    client.writer().write_all(&body).unwrap();
    let bytes = client_output(&mut client);
    feed(&mut layer, &bytes).unwrap();
    // The session takes the complete line and leaves "RCPT T" for later.
    layer.consume_plaintext(16_002);
    assert_eq!(layer.plaintext(), b"RCPT T");
    assert!(layer.buffered_bytes() <= 1024, "{}", layer.buffered_bytes());
}

#[test]
fn negotiated_reads_as_the_received_line_wants_it() {
    let (layer, _client) = established(KeyKind::EcdsaP256, &[&TLS13]);
    assert_eq!(
        layer.negotiated().unwrap().to_string(),
        "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384"
    );
}

#[test]
fn close_notify_both_ways() {
    let (mut layer, mut client) = established(KeyKind::EcdsaP256, &[&TLS13]);
    client.send_close_notify();
    let bytes = client_output(&mut client);
    feed(&mut layer, &bytes).unwrap();
    assert!(layer.is_peer_closed());

    assert_eq!(
        server_says(&mut layer, &mut client, b"221 2.0.0 Bye\r\n"),
        b"221 2.0.0 Bye\r\n"
    );
    layer.close();
    assert_eq!(layer.write_plaintext(b"late"), Err(WriteError::Closed));
    deliver_to_client(&mut layer, &mut client);
    let mut buf = [0u8; 16];
    assert_eq!(client.reader().read(&mut buf).unwrap(), 0, "a clean end");
}

#[test]
fn a_command_sent_with_the_clients_finished_is_not_lost() {
    let cert = make_cert(KeyKind::EcdsaP256);
    let (_files, _store, config) = server(&cert);
    let mut layer = TlsLayer::new(config).unwrap();
    let mut client = client(&client_config(&cert.der, &[&TLS13]));
    let hello = client_output(&mut client);
    feed(&mut layer, &hello).unwrap();
    deliver_to_client(&mut layer, &mut client);
    // rustls sends this right behind its Finished, in the same flight.
    client.writer().write_all(b"EHLO client.test\r\n").unwrap();
    let flight = client_output(&mut client);
    feed(&mut layer, &flight).unwrap();
    assert!(layer.negotiated().is_some());
    assert_eq!(layer.plaintext(), b"EHLO client.test\r\n");
}

#[test]
fn a_reply_longer_than_a_record() {
    let (mut layer, mut client) = established(KeyKind::EcdsaP256, &[&TLS13]);
    let reply: Vec<u8> = (0..40_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    layer.write_plaintext(&reply).unwrap();
    let out = layer.poll_output().to_vec();
    layer.advance_output(out.len());
    assert!(layer.poll_output().is_empty());
    // The client's own plaintext buffer is small: read as records arrive.
    let mut rd: &[u8] = &out;
    let mut got = Vec::new();
    while !rd.is_empty() {
        client.read_tls(&mut rd).unwrap();
        client.process_new_packets().unwrap();
        let _ = client.reader().read_to_end(&mut got);
    }
    assert_eq!(got, reply);
}

#[test]
fn a_key_update_from_the_client_is_answered() {
    let (mut layer, mut client) = established(KeyKind::EcdsaP256, &[&TLS13]);
    client.refresh_traffic_keys().unwrap();
    assert_eq!(
        client_says(&mut layer, &mut client, b"NOOP\r\n"),
        b"NOOP\r\n"
    );
    assert_eq!(
        server_says(&mut layer, &mut client, b"250 2.0.0 Ok\r\n"),
        b"250 2.0.0 Ok\r\n"
    );
    smtp_exchange(&mut layer, &mut client);
}

#[test]
fn the_callers_timeout_fails_only_a_handshake() {
    let mut layer = fresh_layer();
    layer.handshake_timed_out();
    assert_eq!(layer.state(), State::Failed(Failure::Timeout));
    assert_eq!(Failure::Timeout.as_str(), "timeout");
    let (mut layer, _client) = established(KeyKind::EcdsaP256, &[&TLS13]);
    layer.handshake_timed_out();
    assert!(layer.negotiated().is_some());
}

#[test]
fn writing_before_the_handshake_is_refused() {
    let mut layer = fresh_layer();
    assert_eq!(
        layer.write_plaintext(b"220 hi\r\n"),
        Err(WriteError::NotEstablished)
    );
}

#[test]
fn an_idle_layer_holds_no_buffers() {
    let (mut layer, mut client) = established(KeyKind::EcdsaP256, &[&TLS13]);
    smtp_exchange(&mut layer, &mut client);
    assert_eq!(layer.buffered_bytes(), 0);
}

#[test]
fn failure_labels() {
    use rustls::Error as E;
    let cases = [
        (
            E::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
            Failure::BadRecord,
        ),
        (
            E::InvalidMessage(rustls::InvalidMessage::MessageTooLarge),
            Failure::Oversized,
        ),
        (E::DecryptError, Failure::BadRecord),
        (
            E::PeerIncompatible(rustls::PeerIncompatible::NoCipherSuitesInCommon),
            Failure::NoSharedCipher,
        ),
        (
            E::PeerIncompatible(rustls::PeerIncompatible::NoKxGroupsInCommon),
            Failure::NoSharedCipher,
        ),
        (
            E::PeerIncompatible(rustls::PeerIncompatible::SupportedVersionsExtensionRequired),
            Failure::NoSharedVersion,
        ),
        (
            E::PeerIncompatible(rustls::PeerIncompatible::SignatureAlgorithmsExtensionRequired),
            Failure::NoSharedVersion,
        ),
        (
            E::AlertReceived(rustls::AlertDescription::HandshakeFailure),
            Failure::PeerAlert,
        ),
        (
            E::AlertReceived(rustls::AlertDescription::CloseNotify),
            Failure::PeerClosed,
        ),
        (E::General("x".into()), Failure::Other),
    ];
    for (e, want) in cases {
        assert_eq!(Failure::classify(&e), want, "{e:?}");
    }
    assert_eq!(Failure::NoSharedCipher.to_string(), "no_shared_cipher");
}

#[test]
fn iana_names() {
    use rustls::CipherSuite as C;
    assert_eq!(
        layer::cipher_name(C::TLS13_AES_128_GCM_SHA256),
        "TLS_AES_128_GCM_SHA256"
    );
    assert_eq!(
        layer::cipher_name(C::TLS13_CHACHA20_POLY1305_SHA256),
        "TLS_CHACHA20_POLY1305_SHA256"
    );
    assert_eq!(
        layer::cipher_name(C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
    );
    assert_eq!(
        layer::version_name(rustls::ProtocolVersion::TLSv1_3),
        "TLSv1.3"
    );
    assert_eq!(
        layer::version_name(rustls::ProtocolVersion::TLSv1_0),
        "unknown"
    );
}

/// The certificate the client saw in its handshake.
fn presented(config: &std::sync::Arc<rustls::ServerConfig>, trusted: &TestCert) -> Vec<u8> {
    let mut layer = TlsLayer::new(config.clone()).unwrap();
    let mut client = client(&client_config(&trusted.der, &[&TLS13]));
    handshake(&mut layer, &mut client);
    client.peer_certificates().unwrap()[0].to_vec()
}

#[test]
fn a_reload_takes_effect_for_the_next_handshake_and_a_bad_file_keeps_the_old() {
    let first = make_cert(KeyKind::EcdsaP256);
    let (files, store, config) = server(&first);
    assert_eq!(presented(&config, &first), first.der.to_vec());

    let second = make_cert(KeyKind::Rsa2048);
    files.write(&second);
    store.reload().unwrap();
    assert_eq!(presented(&config, &second), second.der.to_vec());

    std::fs::write(&files.cert, "not a certificate\n").unwrap();
    let err = store.reload().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: no certificate in file", files.cert.display())
    );
    assert_eq!(presented(&config, &second), second.der.to_vec());

    // A key from another certificate: refused, the old pair stays.
    files.write(&first);
    std::fs::write(&files.key, &make_cert(KeyKind::EcdsaP256).key_pem).unwrap();
    let err = store.reload().unwrap_err();
    assert!(err.to_string().contains("key does not match"), "{err}");
    assert_eq!(presented(&config, &second), second.der.to_vec());
}

#[test]
fn a_handshake_in_flight_keeps_the_certificate_it_started_with() {
    let first = make_cert(KeyKind::EcdsaP256);
    let (files, store, config) = server(&first);
    let mut layer = TlsLayer::new(config).unwrap();
    let mut client = client(&client_config(&first.der, &[&TLS13]));
    let hello = client_output(&mut client);
    feed(&mut layer, &hello).unwrap();
    files.write(&make_cert(KeyKind::EcdsaP256));
    store.reload().unwrap();
    deliver_to_client(&mut layer, &mut client);
    handshake(&mut layer, &mut client);
    assert_eq!(
        client.peer_certificates().unwrap()[0].to_vec(),
        first.der.to_vec()
    );
}

mod random_input {
    //! Whatever arrives, the layer neither panics nor grows past its bounds.

    use std::sync::{Arc, OnceLock};

    use proptest::prelude::*;

    use super::super::testkit::*;
    use super::super::TlsLayer;
    use super::super::{Failure, State};

    /// One certificate for every case: making keys is the slow part.
    fn shared() -> &'static (TestCert, Arc<rustls::ServerConfig>) {
        static SHARED: OnceLock<(TestCert, Arc<rustls::ServerConfig>)> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cert = make_cert(KeyKind::EcdsaP256);
            let (files, _store, config) = server(&cert);
            drop(files);
            (cert, config)
        })
    }

    const BOUND: usize = 2 * (super::MAX_CIPHERTEXT_BUFFER + 2 * super::PLAINTEXT_HIGH_WATER);

    /// Feeds `bytes` in chunks of the given sizes, as reads would deliver them.
    fn feed_chunks(layer: &mut TlsLayer, bytes: &[u8], sizes: &[usize]) {
        let mut rest = bytes;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                return;
            }
            let chunk = &rest[..size.min(rest.len())];
            match layer.handle_input(chunk) {
                Ok(n) => rest = &rest[n..],
                Err(_) => return,
            }
            assert!(layer.buffered_bytes() <= BOUND);
            let n = layer.plaintext().len();
            layer.consume_plaintext(n);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn garbage_before_the_handshake(
            bytes in prop::collection::vec(any::<u8>(), 0..40_000),
            sizes in prop::collection::vec(1usize..5000, 1..8),
        ) {
            let mut layer = TlsLayer::new(shared().1.clone()).unwrap();
            feed_chunks(&mut layer, &bytes, &sizes);
            prop_assert!(matches!(layer.state(), State::Handshaking | State::Failed(_)));
        }

        #[test]
        fn a_handshake_record_headed_garbage(
            body in prop::collection::vec(any::<u8>(), 0..20_000),
            sizes in prop::collection::vec(1usize..5000, 1..8),
        ) {
            // Starts like a ClientHello record so rustls reads further in.
            let mut bytes = vec![0x16, 0x03, 0x01];
            bytes.extend_from_slice(&(body.len().min(0xffff) as u16).to_be_bytes());
            bytes.extend_from_slice(&body);
            let mut layer = TlsLayer::new(shared().1.clone()).unwrap();
            feed_chunks(&mut layer, &bytes, &sizes);
            prop_assert!(matches!(layer.state(), State::Handshaking | State::Failed(_)));
        }

        #[test]
        fn garbage_after_the_handshake(
            bytes in prop::collection::vec(any::<u8>(), 1..40_000),
            sizes in prop::collection::vec(1usize..5000, 1..8),
        ) {
            let (cert, config) = shared();
            let mut layer = TlsLayer::new(config.clone()).unwrap();
            let mut client = client(&client_config(&cert.der, &[&rustls::version::TLS13]));
            handshake(&mut layer, &mut client);
            feed_chunks(&mut layer, &bytes, &sizes);
            let state = layer.state();
            prop_assert!(matches!(
                state,
                State::Established(_) | State::Failed(Failure::BadRecord | Failure::Oversized | Failure::PeerAlert)
            ), "{:?}", state);
        }

        #[test]
        fn one_flipped_octet_in_the_client_hello(at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let (cert, config) = shared();
            let mut layer = TlsLayer::new(config.clone()).unwrap();
            let mut client = client(&client_config(&cert.der, &[&rustls::version::TLS13]));
            let mut hello = client_output(&mut client);
            let i = at.index(hello.len());
            hello[i] ^= 1 << bit;
            feed_chunks(&mut layer, &hello, &[hello.len()]);
            // Whatever the flip did, the layer is in a state it can report.
            let _ = layer.state();
        }
    }
}
