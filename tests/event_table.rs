//! One test per row of the event table in the C contract: the events a
//! connection produces, in order, for each scenario.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use sslserver::{AlertLevel, AlertType, EventKind::*, PeerVerifyMode, SocketError, SslErrorCode};

#[test]
fn success_without_client_certificate() {
    let ca = TestCa::new("ca");
    let server = TestServer::start(&server_config(
        &ca.server(),
        PeerVerifyMode::AutoVerifyPeer,
        None,
    ));
    let client = connect(server.port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    let port = port_of(&client);
    assert_eq!(
        server.events.kinds(port),
        [
            NewConnection,
            StartedEncryptionHandshake,
            PendingConnectionAvailable
        ]
    );
    let conn = server.server.next_pending_connection().expect("queued");
    assert!(conn.is_encrypted());
    assert_eq!(conn.peer_addr().port(), port);
    assert!(conn.peer_certificate_chain().is_empty());
}

#[test]
fn query_peer_reports_an_untrusted_self_signed_certificate_and_accepts_it() {
    let ca = TestCa::new("ca");
    let server = TestServer::start(&server_config(
        &ca.server(),
        PeerVerifyMode::AutoVerifyPeer,
        None,
    ));
    let me = self_signed("me");
    let mut client = connect(
        server.port,
        client_config(&ca.identity.cert_der, Some(&me), &[]),
    )
    .unwrap();
    let port = port_of(&client);
    let events = server.events.finished(port);
    assert_eq!(
        kinds_of(&events),
        [
            NewConnection,
            StartedEncryptionHandshake,
            PeerVerifyError,
            SslErrors,
            PendingConnectionAvailable
        ]
    );
    assert_eq!(events[2].ssl_errors, [SslErrorCode::SelfSignedCertificate]);
    assert_eq!(events[3].ssl_errors, [SslErrorCode::SelfSignedCertificate]);
    let conn = server.server.next_pending_connection().unwrap();
    assert_eq!(
        conn.peer_certificate_chain(),
        std::slice::from_ref(&me.cert_der)
    );
    assert_eq!(
        conn.ssl_handshake_errors(),
        [SslErrorCode::SelfSignedCertificate]
    );
    // The connection works.
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    let n = conn.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], &b"ping"[..n]);
}

#[test]
fn verify_peer_rejects_an_untrusted_certificate() {
    let ca = TestCa::new("ca");
    let other_ca = TestCa::new("other");
    let server = TestServer::start(&server_config(
        &ca.server(),
        PeerVerifyMode::VerifyPeer,
        Some(&ca),
    ));
    let stranger = other_ca.client("stranger");
    let mut client = connect(
        server.port,
        client_config(&ca.identity.cert_der, Some(&stranger), &[]),
    )
    .unwrap();
    let port = port_of(&client);
    let mut buf = [0u8; 1];
    let err = client
        .read(&mut buf)
        .expect_err("the server refuses the handshake");
    assert!(err.to_string().contains("UnknownCA"), "client saw: {err}");
    let events = server.events.finished(port);
    assert_eq!(
        kinds_of(&events),
        [
            NewConnection,
            StartedEncryptionHandshake,
            PeerVerifyError,
            SslErrors,
            AlertSent,
            ErrorOccurred
        ]
    );
    assert_eq!(
        events[2].ssl_errors,
        [SslErrorCode::UnableToGetLocalIssuerCertificate]
    );
    assert_eq!(
        events[4].alert,
        Some((AlertLevel::Fatal, AlertType::UnknownCa))
    );
    assert_eq!(events[5].socket_error, SocketError::SslHandshakeFailed);
    assert!(!server.server.has_pending_connections());
}

#[test]
fn verify_peer_rejects_a_missing_certificate() {
    let ca = TestCa::new("ca");
    let server = TestServer::start(&server_config(
        &ca.server(),
        PeerVerifyMode::VerifyPeer,
        Some(&ca),
    ));
    let mut client = connect(server.port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    let port = port_of(&client);
    let mut buf = [0u8; 1];
    assert!(client.read(&mut buf).is_err());
    let events = server.events.finished(port);
    assert_eq!(
        kinds_of(&events),
        [
            NewConnection,
            StartedEncryptionHandshake,
            PeerVerifyError,
            SslErrors,
            AlertSent,
            ErrorOccurred
        ]
    );
    assert_eq!(events[2].ssl_errors, [SslErrorCode::NoPeerCertificate]);
    assert_eq!(
        events[4].alert,
        Some((AlertLevel::Fatal, AlertType::CertificateRequired))
    );
}

/// The configuration may accept clients without a certificate up front,
/// like any other error: reported, then let in.
#[test]
fn verify_peer_accepts_a_missing_certificate_ignored_by_the_config() {
    let ca = TestCa::new("ca");
    let mut config = server_config(&ca.server(), PeerVerifyMode::VerifyPeer, Some(&ca));
    config.set_ignored_ssl_errors(&[SslErrorCode::NoPeerCertificate]);
    let server = TestServer::start(&config);
    let client = connect(server.port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    let port = port_of(&client);
    let events = server.events.finished(port);
    assert_eq!(
        kinds_of(&events),
        [
            NewConnection,
            StartedEncryptionHandshake,
            PeerVerifyError,
            SslErrors,
            PendingConnectionAvailable
        ]
    );
    assert_eq!(events[2].ssl_errors, [SslErrorCode::NoPeerCertificate]);
    let socket = server.accept_one();
    assert_eq!(
        socket.ssl_handshake_errors(),
        [SslErrorCode::NoPeerCertificate]
    );
}

#[test]
fn verify_peer_accepts_a_trusted_certificate() {
    let ca = TestCa::new("ca");
    let server = TestServer::start(&server_config(
        &ca.server(),
        PeerVerifyMode::VerifyPeer,
        Some(&ca),
    ));
    let alice = ca.client("alice");
    let client = connect(
        server.port,
        client_config(&ca.identity.cert_der, Some(&alice), &[]),
    )
    .unwrap();
    let port = port_of(&client);
    assert_eq!(
        server.events.kinds(port),
        [
            NewConnection,
            StartedEncryptionHandshake,
            PendingConnectionAvailable
        ]
    );
    let conn = server.server.next_pending_connection().unwrap();
    assert_eq!(conn.peer_certificate_chain()[0], alice.cert_der);
    assert!(conn.ssl_handshake_errors().is_empty());
}

#[test]
fn verify_peer_errors_ignored_in_the_ssl_errors_callback() {
    let ca = TestCa::new("ca");
    let config = server_config(&ca.server(), PeerVerifyMode::VerifyPeer, Some(&ca));
    let server = TestServer::start_with(
        &config,
        |_| {},
        |event| {
            if event.kind == SslErrors {
                event.connection.unwrap().ignore_ssl_errors();
            }
        },
    );
    let expired = ca.expired_client("old");
    let client = connect(
        server.port,
        client_config(&ca.identity.cert_der, Some(&expired), &[]),
    )
    .unwrap();
    let port = port_of(&client);
    let events = server.events.finished(port);
    assert_eq!(
        kinds_of(&events),
        [
            NewConnection,
            StartedEncryptionHandshake,
            PeerVerifyError,
            SslErrors,
            PendingConnectionAvailable
        ]
    );
    assert_eq!(events[3].ssl_errors, [SslErrorCode::CertificateExpired]);
}

#[test]
fn interrupt_on_error_not_continued_fails() {
    let ca = TestCa::new("ca");
    let mut config = server_config(&ca.server(), PeerVerifyMode::VerifyPeer, Some(&ca));
    config.set_handshake_must_interrupt_on_error(true);
    let server = TestServer::start(&config);
    let me = self_signed("me");
    let client = connect(
        server.port,
        client_config(&ca.identity.cert_der, Some(&me), &[]),
    )
    .unwrap();
    let port = port_of(&client);
    let events = server.events.finished(port);
    assert_eq!(
        kinds_of(&events),
        [
            NewConnection,
            StartedEncryptionHandshake,
            HandshakeInterruptedOnError,
            AlertSent,
            ErrorOccurred
        ]
    );
    assert_eq!(events[2].ssl_errors, [SslErrorCode::SelfSignedCertificate]);
    assert_eq!(events[3].alert.unwrap().0, AlertLevel::Fatal);
    assert_eq!(events[4].socket_error, SocketError::SslHandshakeFailed);
}

#[test]
fn interrupt_on_error_continued_then_ignored_succeeds() {
    let ca = TestCa::new("ca");
    let mut config = server_config(&ca.server(), PeerVerifyMode::VerifyPeer, Some(&ca));
    config.set_handshake_must_interrupt_on_error(true);
    let server = TestServer::start_with(
        &config,
        |_| {},
        |event| match event.kind {
            HandshakeInterruptedOnError => {
                event.connection.unwrap().continue_interrupted_handshake()
            }
            SslErrors => event.connection.unwrap().ignore_ssl_errors(),
            _ => {}
        },
    );
    let me = self_signed("me");
    let client = connect(
        server.port,
        client_config(&ca.identity.cert_der, Some(&me), &[]),
    )
    .unwrap();
    let port = port_of(&client);
    assert_eq!(
        server.events.kinds(port),
        [
            NewConnection,
            StartedEncryptionHandshake,
            HandshakeInterruptedOnError,
            SslErrors,
            PendingConnectionAvailable
        ]
    );
}

#[test]
fn client_rejecting_the_server_certificate() {
    let ca = TestCa::new("ca");
    let server = TestServer::start(&server_config(
        &ca.server(),
        PeerVerifyMode::VerifyNone,
        None,
    ));
    let unrelated = TestCa::new("unrelated");
    let result = connect(
        server.port,
        client_config(&unrelated.identity.cert_der, None, &[]),
    );
    assert!(result.is_err(), "the client must refuse the certificate");
    // The refused client's connection is the last one with a full story.
    let events = server.events.wait_until("the alert", |events| {
        events.iter().any(|e| e.kind == AlertReceived)
    });
    let port = events
        .iter()
        .find(|e| e.kind == AlertReceived)
        .unwrap()
        .peer_port
        .unwrap();
    let events = server.events.finished(port);
    assert_eq!(
        kinds_of(&events),
        [
            NewConnection,
            StartedEncryptionHandshake,
            AlertReceived,
            ErrorOccurred
        ]
    );
    assert_eq!(
        events[2].alert,
        Some((AlertLevel::Fatal, AlertType::UnknownCa))
    );
    assert_eq!(events[3].socket_error, SocketError::SslHandshakeFailed);
}

#[test]
fn plaintext_client_is_dropped_at_once() {
    let ca = TestCa::new("ca");
    let server = TestServer::start(&server_config(
        &ca.server(),
        PeerVerifyMode::VerifyNone,
        None,
    ));
    let mut tcp = server.tcp();
    let port = tcp.local_addr().unwrap().port();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert!(closed_by_server(&mut tcp));
    let events = server.events.finished(port);
    assert_eq!(kinds_of(&events), [NewConnection, ErrorOccurred]);
    assert_eq!(events[1].socket_error, SocketError::SslHandshakeFailed);
}

#[test]
fn malformed_client_hello_gets_a_fatal_alert() {
    let ca = TestCa::new("ca");
    let server = TestServer::start(&server_config(
        &ca.server(),
        PeerVerifyMode::VerifyNone,
        None,
    ));
    let mut tcp = server.tcp();
    let port = tcp.local_addr().unwrap().port();
    // A handshake record holding a ClientHello whose body is garbage.
    tcp.write_all(&[
        0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef,
    ])
    .unwrap();
    let mut reply = Vec::new();
    tcp.set_read_timeout(Some(SOON)).unwrap();
    let _ = tcp.read_to_end(&mut reply);
    assert_eq!(
        reply.first(),
        Some(&0x15),
        "the client receives an alert record: {reply:?}"
    );
    let events = server.events.finished(port);
    assert_eq!(
        kinds_of(&events),
        [
            NewConnection,
            StartedEncryptionHandshake,
            AlertSent,
            ErrorOccurred
        ]
    );
    let (level, alert) = events[2].alert.unwrap();
    assert_eq!(level, AlertLevel::Fatal);
    assert_eq!(
        reply[6], alert as u8,
        "the event names the alert that was sent"
    );
    assert_eq!(events[3].socket_error, SocketError::SslHandshakeFailed);
}

#[test]
fn silent_client_times_out_exactly_once_at_the_deadline() {
    let ca = TestCa::new("ca");
    let config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    let server = TestServer::start_with(&config, |s| s.set_handshake_timeout(300).unwrap(), |_| {});
    let started = Instant::now();
    let mut tcp = server.tcp();
    let port = tcp.local_addr().unwrap().port();
    assert!(closed_by_server(&mut tcp));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "cut before the deadline: {waited:?}"
    );
    let events = server.events.finished(port);
    assert_eq!(kinds_of(&events), [NewConnection, ErrorOccurred]);
    assert_eq!(events[1].socket_error, SocketError::SocketTimeout);
}

#[test]
fn client_closing_mid_handshake_is_remote_host_closed() {
    let ca = TestCa::new("ca");
    let server = TestServer::start(&server_config(
        &ca.server(),
        PeerVerifyMode::VerifyNone,
        None,
    ));
    let mut tcp = server.tcp();
    let port = tcp.local_addr().unwrap().port();
    let hello = client_hello();
    tcp.write_all(&hello[..hello.len() / 2]).unwrap();
    drop(tcp);
    let events = server.events.finished(port);
    assert_eq!(
        kinds_of(&events),
        [NewConnection, StartedEncryptionHandshake, ErrorOccurred]
    );
    assert_eq!(events[2].socket_error, SocketError::RemoteHostClosed);
}

#[test]
fn self_signed_ca_certificate_is_reported_as_self_signed() {
    // `openssl req -x509` makes CA:TRUE certificates; webpki calls that a CA
    // used as an end entity, Qt calls it self-signed.
    let ca = TestCa::new("ca");
    let server = TestServer::start(&server_config(
        &ca.server(),
        PeerVerifyMode::QueryPeer,
        None,
    ));
    let me = openssl_req_x509("me");
    let client = connect(
        server.port,
        client_config(&ca.identity.cert_der, Some(&me), &[]),
    )
    .unwrap();
    let events = server.events.finished(port_of(&client));
    assert_eq!(events[2].kind, PeerVerifyError);
    assert_eq!(events[2].ssl_errors, [SslErrorCode::SelfSignedCertificate]);
}

#[test]
fn a_client_certificate_that_is_a_configured_ca_is_trusted() {
    let ca = TestCa::new("ca");
    let me = openssl_req_x509("me");
    let mut config = server_config(&ca.server(), PeerVerifyMode::VerifyPeer, None);
    config
        .add_ca_certificates_pem(me.cert_pem.as_bytes())
        .unwrap();
    let server = TestServer::start(&config);
    let client = connect(
        server.port,
        client_config(&ca.identity.cert_der, Some(&me), &[]),
    )
    .unwrap();
    assert_eq!(
        server.events.kinds(port_of(&client)),
        [
            NewConnection,
            StartedEncryptionHandshake,
            PendingConnectionAvailable
        ]
    );
}

/// The events of one `openssl s_client -tls1_3` connection without a client
/// certificate; with `force_hello_retry`, its first key share is a group
/// rustls does not offer, so the server answers with a HelloRetryRequest.
fn events_of_openssl_client(server: &TestServer, force_hello_retry: bool) -> Vec<Recorded> {
    let mut command = std::process::Command::new("timeout");
    command.args([
        "20",
        "openssl",
        "s_client",
        "-tls1_3",
        "-connect",
        &server.addr(),
    ]);
    if force_hello_retry {
        command.args(["-groups", "ffdhe2048:X25519"]);
    }
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the openssl CLI is installed");
    let transcript = String::from_utf8_lossy(&output.stdout);
    if force_hello_retry {
        assert!(
            transcript.contains("Server Temp Key: X25519"),
            "the retry did not pick X25519: {transcript}"
        );
    }
    server
        .events
        .wait_until("the end of the connection", |events| {
            events
                .iter()
                .any(|e| matches!(e.kind, PendingConnectionAvailable | ErrorOccurred))
        })
}

/// After a HelloRetryRequest (which the client can force) the handshake is
/// still full: a missing certificate is reported as in any full handshake.
#[test]
fn a_missing_certificate_is_reported_after_a_hello_retry_request_too() {
    for force_hello_retry in [false, true] {
        let ca = TestCa::new("ca");
        let config = server_config(&ca.server(), PeerVerifyMode::VerifyPeer, Some(&ca));
        let server = TestServer::start_with(
            &config,
            |_| {},
            |event| {
                if event.kind == NewConnection {
                    event.connection.unwrap().ignore_ssl_errors();
                }
            },
        );
        let events = events_of_openssl_client(&server, force_hello_retry);
        assert_eq!(
            kinds_of(&events),
            [
                NewConnection,
                StartedEncryptionHandshake,
                PeerVerifyError,
                SslErrors,
                PendingConnectionAvailable
            ],
            "hello retry: {force_hello_retry}"
        );
        assert_eq!(
            server.accept_one().ssl_handshake_errors(),
            [SslErrorCode::NoPeerCertificate]
        );
    }
}

/// With interrupt-on-error, a client without a certificate needs the
/// application's go-ahead, also when it forces a HelloRetryRequest.
#[test]
fn a_hello_retry_request_does_not_skip_the_interrupt_on_a_missing_certificate() {
    for force_hello_retry in [false, true] {
        let ca = TestCa::new("ca");
        let mut config = server_config(&ca.server(), PeerVerifyMode::VerifyPeer, Some(&ca));
        config.add_ignored_ssl_error(SslErrorCode::NoPeerCertificate, None);
        config.set_handshake_must_interrupt_on_error(true);
        let server = TestServer::start(&config);
        let events = events_of_openssl_client(&server, force_hello_retry);
        let kinds = kinds_of(&events);
        assert!(
            kinds.contains(&HandshakeInterruptedOnError),
            "hello retry: {force_hello_retry}: {kinds:?}"
        );
        assert_eq!(
            kinds.last(),
            Some(&ErrorOccurred),
            "hello retry: {force_hello_retry}"
        );
        assert!(!server.server.has_pending_connections());
    }
}
