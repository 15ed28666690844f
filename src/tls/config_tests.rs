//! Loading `--tls-cert`/`--tls-key`: each bad file is one line naming it.

use super::testkit::*;
use super::*;

fn load_err(cert: &std::path::Path, key: &std::path::Path) -> String {
    CertStore::load(cert, key).unwrap_err().to_string()
}

#[test]
fn both_key_types_load() {
    for kind in [KeyKind::EcdsaP256, KeyKind::Rsa2048] {
        let c = make_cert(kind);
        let files = CertFiles::new(&c);
        let store = CertStore::load(&files.cert, &files.key).unwrap();
        assert_eq!(store.current().cert[0], c.der);
    }
}

#[test]
fn each_bad_file_is_one_line_naming_it() {
    let c = make_cert(KeyKind::EcdsaP256);
    let files = CertFiles::new(&c);
    let missing = files.dir.path().join("missing.pem");
    let e = load_err(&missing, &files.key);
    assert!(
        e.starts_with(&format!("{}: unreadable: ", missing.display())),
        "{e}"
    );

    let empty = files.dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    assert_eq!(
        load_err(&empty, &files.key),
        format!("{}: no certificate in file", empty.display())
    );
    // A key file given as the certificate holds no certificate either.
    assert_eq!(
        load_err(&files.key, &files.key),
        format!("{}: no certificate in file", files.key.display())
    );
    assert_eq!(
        load_err(&files.cert, &files.cert),
        format!("{}: no private key in file", files.cert.display())
    );

    let other = make_cert(KeyKind::EcdsaP256);
    std::fs::write(&files.key, &other.key_pem).unwrap();
    assert_eq!(
        load_err(&files.cert, &files.key),
        format!(
            "{}: key does not match the certificate in {}",
            files.key.display(),
            files.cert.display()
        )
    );

    let encrypted = files.dir.path().join("encrypted.pem");
    std::fs::write(
        &encrypted,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    assert_eq!(
        load_err(&files.cert, &encrypted),
        format!(
            "{}: encrypted private key: store it decrypted",
            encrypted.display()
        )
    );

    let broken = files.dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = load_err(&broken, &files.key);
    assert!(
        e.starts_with(&format!("{}: bad PEM: ", broken.display())),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn one_file_holding_both_certificate_and_key_serves_for_both_flags() {
    let c = make_cert(KeyKind::Rsa2048);
    let files = CertFiles::new(&c);
    let both = files.dir.path().join("both.pem");
    std::fs::write(&both, format!("{}{}", c.cert_pem, c.key_pem)).unwrap();
    let store = CertStore::load(&both, &both).unwrap();
    assert_eq!(store.current().cert[0], c.der);
}

#[test]
fn the_server_config_follows_the_contract() {
    let c = make_cert(KeyKind::EcdsaP256);
    let (_files, _store, config) = server(&c);
    assert_eq!(config.send_tls13_tickets, 0);
    assert!(!config.session_storage.can_cache());
    assert_eq!(config.max_early_data_size, 0);
}

#[test]
fn the_provider_pairs_aws_lc_key_exchange_with_ring_record_suites() {
    let c = make_cert(KeyKind::EcdsaP256);
    let (_files, _store, config) = server(&c);
    let provider = config.crypto_provider();
    let suites = rustls::crypto::ring::DEFAULT_CIPHER_SUITES;
    assert_eq!(provider.cipher_suites, suites.to_vec());
    let groups: Vec<_> = provider.kx_groups.iter().map(|g| g.name()).collect();
    assert!(
        groups.contains(&rustls::NamedGroup::X25519MLKEM768),
        "{groups:?}"
    );
}
