//! Every configuration loader given garbage, empty input, a missing file, a
//! mismatched or encrypted key: a specific error, a message that names the
//! problem, and an unchanged configuration.

mod common;

use std::process::Command;

use common::*;
use sslserver::{ErrorKind, PeerVerifyMode, Protocol, Server, TlsConfig};

fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the openssl CLI is installed");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?} failed");
    out.stdout
}

#[test]
fn certificate_loaders_reject_bad_input_and_keep_the_old_chain() {
    let ca = TestCa::new("ca");
    let good = ca.server();
    let mut config = TlsConfig::new();
    config
        .set_certificate_chain_pem(good.cert_pem.as_bytes())
        .unwrap();
    for (input, needle) in [
        (&b""[..], "empty"),
        (&b"  \n"[..], "empty"),
        (&b"hello, world"[..], "no PEM certificate"),
        (
            &b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"[..],
            "malformed",
        ),
        (
            &b"-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n"[..],
            "not a valid X.509",
        ),
        (good.key_pem.as_bytes(), "no PEM certificate"),
    ] {
        let err = config.set_certificate_chain_pem(input).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Certificate, "{input:?}");
        assert!(
            err.message().contains(needle),
            "{:?}: {}",
            input,
            err.message()
        );
    }
    assert_eq!(
        config.certificate_chain(),
        std::slice::from_ref(&good.cert_der),
        "unchanged"
    );
}

#[test]
fn file_loaders_name_the_file() {
    let mut config = TlsConfig::new();
    let err = config
        .set_certificate_chain_file("/nonexistent/chain.pem")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert_eq!(
        err.message(),
        "/nonexistent/chain.pem: No such file or directory"
    );
    let err = config
        .set_private_key_file("/nonexistent/key.pem", None)
        .unwrap_err();
    assert_eq!(
        err.message(),
        "/nonexistent/key.pem: No such file or directory"
    );
    let err = config
        .add_ca_certificates_file("/nonexistent/ca.pem")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    let empty = temp_file("empty.pem", b"");
    let err = config
        .set_certificate_chain_file(empty.to_str().unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Certificate);
    assert!(
        err.message().starts_with(empty.to_str().unwrap()),
        "{}",
        err.message()
    );
    let err = config
        .set_private_key_file(empty.to_str().unwrap(), None)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PrivateKey);
    let dir = std::env::temp_dir();
    let err = config
        .set_certificate_chain_file(dir.to_str().unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "a directory is not a file");
}

#[test]
fn mismatched_key_is_refused_in_either_order() {
    let ca = TestCa::new("ca");
    let (one, two) = (ca.server(), ca.server());
    let mut config = TlsConfig::new();
    config
        .set_certificate_chain_pem(one.cert_pem.as_bytes())
        .unwrap();
    let err = config
        .set_private_key_pem(two.key_pem.as_bytes(), None)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PrivateKey);
    assert_eq!(err.message(), "private key does not match the certificate");

    let mut config = TlsConfig::new();
    config
        .set_private_key_pem(two.key_pem.as_bytes(), None)
        .unwrap();
    let err = config
        .set_certificate_chain_pem(one.cert_pem.as_bytes())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PrivateKey);
    assert!(
        config.certificate_chain().is_empty(),
        "the mismatched chain was not kept"
    );
    config
        .set_certificate_chain_pem(two.cert_pem.as_bytes())
        .unwrap();
    Server::new().set_config(&config).unwrap();
}

#[test]
fn key_formats_pkcs8_pkcs1_sec1_and_encrypted_pkcs8() {
    let rsa_pkcs8 = openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        b"",
    );
    let rsa_pkcs1 = openssl(&["rsa", "-traditional"], &rsa_pkcs8);
    let ec_pkcs8 = openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
        b"",
    );
    let ec_sec1 = openssl(&["ec"], &ec_pkcs8);
    let encrypted = openssl(
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:s3cret",
        ],
        &ec_pkcs8,
    );
    assert!(String::from_utf8_lossy(&rsa_pkcs1).contains("BEGIN RSA PRIVATE KEY"));
    assert!(String::from_utf8_lossy(&ec_sec1).contains("BEGIN EC PRIVATE KEY"));
    for key in [&rsa_pkcs8, &rsa_pkcs1, &ec_pkcs8, &ec_sec1] {
        TlsConfig::new().set_private_key_pem(key, None).unwrap();
    }
    let mut config = TlsConfig::new();
    let err = config.set_private_key_pem(&encrypted, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PrivateKey);
    assert!(err.message().contains("passphrase"), "{}", err.message());
    let err = config
        .set_private_key_pem(&encrypted, Some("wrong"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PrivateKey);
    assert!(
        err.message().contains("wrong passphrase"),
        "{}",
        err.message()
    );
    config
        .set_private_key_pem(&encrypted, Some("s3cret"))
        .unwrap();

    let legacy = openssl(&["ec", "-aes256", "-passout", "pass:x"], &ec_sec1);
    let err = config.set_private_key_pem(&legacy, Some("x")).unwrap_err();
    assert!(err.message().contains("legacy"), "{}", err.message());
}

#[test]
fn private_key_garbage_and_empty_input() {
    let mut config = TlsConfig::new();
    for (input, needle) in [
        (&b""[..], "empty"),
        (&b"garbage"[..], "no PEM private key"),
        (
            &b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"[..],
            "unusable private key",
        ),
    ] {
        let err = config.set_private_key_pem(input, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PrivateKey);
        assert!(
            err.message().contains(needle),
            "{input:?}: {}",
            err.message()
        );
    }
}

#[test]
fn set_config_requires_certificate_and_key() {
    let ca = TestCa::new("ca");
    let id = ca.server();
    let server = Server::new();
    assert_eq!(
        server.set_config(&TlsConfig::new()).unwrap_err().kind(),
        ErrorKind::Certificate
    );
    let mut only_cert = TlsConfig::new();
    only_cert
        .set_certificate_chain_pem(id.cert_pem.as_bytes())
        .unwrap();
    assert_eq!(
        server.set_config(&only_cert).unwrap_err().kind(),
        ErrorKind::PrivateKey
    );
}

#[test]
fn old_protocols_are_unsupported() {
    let mut config = TlsConfig::new();
    for p in [
        Protocol::TlsV1_0,
        Protocol::TlsV1_1,
        Protocol::TlsV1_0OrLater,
        Protocol::TlsV1_1OrLater,
    ] {
        assert_eq!(
            config.set_protocol(p).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
    }
    assert_eq!(
        config.set_protocol(Protocol::Unknown).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(config.protocol(), Protocol::SecureProtocols, "unchanged");
    config.set_protocol(Protocol::TlsV1_3).unwrap();
}

#[test]
fn alpn_names_must_fit_the_wire_format() {
    let mut config = TlsConfig::new();
    assert!(config.set_alpn_protocols(&[Vec::new()]).is_err());
    assert!(config.set_alpn_protocols(&[vec![b'a'; 256]]).is_err());
    config.set_alpn_protocols(&[b"h2".to_vec()]).unwrap();
    assert_eq!(config.alpn_protocols(), [b"h2".to_vec()]);
}

#[test]
fn self_signed_default_serves_its_names() {
    let mut config = TlsConfig::new();
    config
        .generate_self_signed(&["localhost".into(), "127.0.0.1".into(), "::1".into()])
        .unwrap();
    let fingerprint = config.certificate_fingerprint_sha256().unwrap();
    assert_eq!(fingerprint.len(), 32 * 3 - 1);
    let pem = config.certificate_chain_pem().unwrap();
    let leaf = config.certificate_chain()[0].clone();
    config.set_peer_verify_mode(PeerVerifyMode::VerifyNone);
    let server = TestServer::start(&config);
    // A client that trusts exactly the exported PEM verifies the server.
    let reparsed = {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    };
    assert_eq!(reparsed, leaf);
    let client = connect(server.port, client_config(&reparsed, None, &[])).unwrap();
    assert_eq!(client.conn.peer_certificates().unwrap()[0], leaf);
    assert!(
        TlsConfig::new().generate_self_signed(&[]).is_ok(),
        "no names = localhost"
    );
}
