//! Certificate mode: `dtlsserver_set_config` with an sslconfig's chain and
//! key serves ECDHE-ECDSA and ECDHE-RSA suites to `openssl s_client
//! -dtls1_2`, alone or beside PSK, and forged datagrams do not end a
//! certificate session either.

mod dtls_support;

use std::ffi::{CStr, CString};
use std::process::Command;

use dtls_support::*;
use sslserver::dtls::{DtlsAuthentication, DtlsEventKind};
use sslserver::ffi::config::*;
use sslserver::ffi::dtls::*;
use sslserver::ffi::sslserver_result;
use sslserver::TlsConfig;

fn ecdsa_config() -> TlsConfig {
    let mut config = TlsConfig::new();
    config.generate_self_signed(&["localhost".into()]).unwrap();
    config
}

/// An RSA certificate and key, made by the openssl CLI (an independent
/// implementation, in the PKCS#8 PEM it writes by default).
fn rsa_config() -> TlsConfig {
    let dir = std::env::temp_dir().join(format!("dtls-rsa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let mut config = TlsConfig::new();
    config
        .set_certificate_chain_pem(&std::fs::read(&cert).unwrap())
        .unwrap();
    config
        .set_private_key_pem(&std::fs::read(&key).unwrap(), None)
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    config
}

fn serves_certificate_only(config: TlsConfig, cipher: &str) {
    let (server, events) = recording_server(false, |s| s.set_config(&config).unwrap());
    let mut client = Client::start_with(port(&server), &[]);
    // The client picks; OpenSSL's default order puts ChaCha20 before
    // AES-128-GCM.
    client.wait_line(&format!("Cipher is {cipher}"));
    let complete = events.wait_for("HANDSHAKE_COMPLETE", |e| {
        e.kind == DtlsEventKind::HandshakeComplete
    });
    assert!(complete.psk_identity.is_empty());
    assert_eq!(complete.authentication, DtlsAuthentication::Certificate);
    assert!(
        complete.description.contains("(certificate, TLS_ECDHE_"),
        "{complete:?}"
    );
    client.send_line("over a certificate session");
    let datagram = events.wait_for("DATAGRAM_RECEIVED", |e| {
        e.kind == DtlsEventKind::DatagramReceived
    });
    assert_eq!(datagram.data, b"over a certificate session\n");
    client.wait_line(": ACK");
    // A PSK-only client finds no common suite.
    let mut psk_client = Client::start_with(
        port(&server),
        &["-psk", KEY_HEX, "-psk_identity", "alice", "-cipher", "PSK"],
    );
    let refused = events.wait_for("the PSK-only client refused", |e| {
        e.kind == DtlsEventKind::Error
    });
    assert!(!psk_client.wait_exit().success(), "{refused:?}");
    assert!(
        psk_client.saw("alert insufficient security"),
        "{}",
        psk_client.output
    );
    assert!(
        refused.description.contains("shared cipher suites"),
        "{refused:?}"
    );
}

#[test]
fn ecdsa_certificate_only() {
    serves_certificate_only(ecdsa_config(), "ECDHE-ECDSA-");
}

#[test]
fn rsa_certificate_only() {
    serves_certificate_only(rsa_config(), "ECDHE-RSA-");
}

#[test]
fn certificate_beside_psk() {
    let config = ecdsa_config();
    let (server, events) = server_with(|s| s.set_config(&config).unwrap());
    // The client's order decides between the families; OpenSSL's default
    // list puts ECDHE first, so a PSK client here offers PSK suites only.
    let psk_only = |identity| {
        Client::start_with(
            port(&server),
            &["-psk", KEY_HEX, "-psk_identity", identity, "-cipher", "PSK"],
        )
    };
    let mut psk = psk_only("alice");
    psk.wait_line("Cipher is PSK-AES128-GCM-SHA256");
    let mut certificate = Client::start_with(port(&server), &[]);
    certificate.wait_line("Cipher is ECDHE-ECDSA-");
    psk.send_line("psk");
    certificate.send_line("certificate");
    psk.wait_line(": ACK");
    certificate.wait_line(": ACK");
    assert_eq!(server.stats().handshakes_completed, 2);
    // A PSK client with an empty identity: its events tell it from the
    // anonymous certificate client, whose identity is empty too.
    let mut empty = psk_only("");
    empty.wait_line("Cipher is PSK-AES128-GCM-SHA256");
    empty.send_line("empty identity");
    empty.wait_line(": ACK");
    let received = |text: &str| {
        events.wait_for(text, |e| {
            e.kind == DtlsEventKind::DatagramReceived && e.data == format!("{text}\n").as_bytes()
        })
    };
    let by_psk = received("empty identity");
    assert_eq!(by_psk.authentication, DtlsAuthentication::Psk);
    assert_eq!(by_psk.psk_identity, b"");
    assert_eq!(by_psk.cipher_suite, "TLS_PSK_WITH_AES_128_GCM_SHA256");
    let anonymous = received("certificate");
    assert_eq!(anonymous.authentication, DtlsAuthentication::Certificate);
    assert_eq!(anonymous.psk_identity, b"");
    assert!(
        anonymous.cipher_suite.starts_with("TLS_ECDHE_ECDSA_WITH_"),
        "{anonymous:?}"
    );
    assert_eq!(received("psk").psk_identity, b"alice");
    let completed: Vec<_> = events
        .all()
        .into_iter()
        .filter(|e| e.kind == DtlsEventKind::HandshakeComplete)
        .map(|e| (e.authentication, e.description))
        .collect();
    assert!(
        completed
            .iter()
            .any(|(a, d)| *a == DtlsAuthentication::Certificate
                && d.contains("(certificate, TLS_ECDHE_")),
        "{completed:#?}"
    );
    // Wrong identity, with certificates on: still unknown_psk_identity.
    let mut mallory = psk_only("mallory");
    assert!(!mallory.wait_exit().success());
    assert!(
        mallory.saw("alert unknown psk identity"),
        "{}",
        mallory.output
    );
    assert!(events
        .all()
        .iter()
        .any(|e| e.kind == DtlsEventKind::Error && e.description.contains("mallory")));
}

#[test]
fn forged_datagrams_do_not_end_a_certificate_session() {
    let config = ecdsa_config();
    let (server, events) = recording_server(false, |s| s.set_config(&config).unwrap());
    let relay = Relay::start(server.local_addr().unwrap());
    let mut client = Client::start_with(relay.port, &[]);
    client.wait_line("Cipher is ECDHE-ECDSA");
    client.send_line("first");
    client.wait_count(": ACK", 1);
    for (_, datagram) in forged_datagrams() {
        relay.inject(&datagram);
    }
    client.send_line("second");
    client.wait_count(": ACK", 2);
    assert_eq!(server.peer_count(), 1);
    assert!(
        events.all().iter().all(|e| e.kind != DtlsEventKind::Error),
        "{:#?}",
        events.all()
    );
}

#[test]
fn c_api_set_config() {
    use sslserver_result::*;
    let server = dtlsserver_new();
    assert_eq!(
        dtlsserver_set_config(server, std::ptr::null()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    let empty = sslconfig_new();
    assert_eq!(
        dtlsserver_set_config(server, empty),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    let message = unsafe { CStr::from_ptr(sslserver::ffi::sslserver_last_error_message()) };
    assert!(
        message
            .to_str()
            .unwrap()
            .contains("no certificate chain and private key"),
        "{message:?}"
    );
    assert_eq!(
        dtlsserver_set_config(std::ptr::null_mut(), empty),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        dtlsserver_set_handshake_budget(std::ptr::null_mut(), 4096),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        dtlsserver_set_max_handshakes_per_address(std::ptr::null_mut(), 4),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(dtlsserver_max_handshakes_per_address(std::ptr::null()), 0);
    assert_eq!(
        dtlsserver_set_max_peers_per_address(std::ptr::null_mut(), 4),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(dtlsserver_max_peers_per_address(std::ptr::null()), 0);
    let cfg = sslconfig_new();
    let names = [c"localhost".as_ptr()];
    assert_eq!(
        sslconfig_generate_self_signed(cfg, names.as_ptr(), names.len()),
        SSLSERVER_OK
    );
    assert_eq!(dtlsserver_set_config(server, cfg), SSLSERVER_OK);
    sslconfig_free(cfg);
    sslconfig_free(empty);
    assert_eq!(dtlsserver_handshake_budget(server), 65536);
    assert_eq!(
        dtlsserver_set_handshake_budget(server, 1),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(dtlsserver_max_handshakes_per_address(server), 32);
    assert_eq!(
        dtlsserver_set_max_handshakes_per_address(server, 0),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        dtlsserver_set_max_handshakes_per_address(server, 4),
        SSLSERVER_OK
    );
    assert_eq!(dtlsserver_max_handshakes_per_address(server), 4);
    assert_eq!(
        dtlsserver_max_peers_per_address(server),
        sslserver::dtls::DTLSSERVER_DEFAULT_MAX_PEERS_PER_ADDRESS
    );
    assert_eq!(
        dtlsserver_set_max_peers_per_address(server, 0),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        dtlsserver_set_max_peers_per_address(server, 8),
        SSLSERVER_OK
    );
    assert_eq!(dtlsserver_max_peers_per_address(server), 8);
    // No PSK callback needed with a certificate.
    let address = CString::new("127.0.0.1").unwrap();
    assert_eq!(dtlsserver_listen(server, address.as_ptr(), 0), SSLSERVER_OK);
    let port = dtlsserver_server_port(server);
    let mut client = Client::start_with(port, &[]);
    client.wait_line("Cipher is ECDHE-ECDSA-");
    dtlsserver_free(server);
    assert_eq!(dtlsserver_handshake_budget(std::ptr::null()), 0);
}
