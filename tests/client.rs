//! Client mode (`connect_encrypted`): against `openssl s_server` and against
//! the library's own server.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use sslserver::{
    connect_encrypted, ErrorKind, PeerVerifyMode, Protocol, SslErrorCode, TlsConfig, WaitOutcome,
};

/// `openssl s_server` on an ephemeral port, reversing each line it receives.
struct SServer {
    child: Child,
    port: u16,
}

impl SServer {
    fn start(identity: &Identity, extra: &[&str]) -> SServer {
        let tag = format!(
            "{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let cert = temp_file(
            &format!("s_server-cert-{tag}.pem"),
            identity.cert_pem.as_bytes(),
        );
        let key = temp_file(
            &format!("s_server-key-{tag}.pem"),
            identity.key_pem.as_bytes(),
        );
        let mut child = Command::new("openssl")
            .args(["s_server", "-accept", "0", "-rev"])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the openssl CLI is installed");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines.next().expect("s_server prints ACCEPT").unwrap();
            if let Some(addr) = line.strip_prefix("ACCEPT ") {
                break addr.rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        SServer { child, port }
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn trusting(ca: &TestCa) -> TlsConfig {
    let mut config = TlsConfig::new();
    config
        .add_ca_certificates_pem(ca.identity.cert_pem.as_bytes())
        .unwrap();
    config
}

fn reversed_line(conn: &sslserver::Connection, line: &str) -> String {
    conn.write(format!("{line}\n").as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(b"\n") {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "s_server closed early");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap().trim_end().to_string()
}

#[test]
fn talks_to_openssl_over_tls13_and_tls12() {
    let ca = TestCa::new("ca");
    let server = SServer::start(&ca.server(), &[]);
    for (protocol, cipher_prefix) in [
        (Protocol::TlsV1_3, "TLS_AES_"),
        (Protocol::TlsV1_2, "TLS_ECDHE_"),
    ] {
        let mut config = trusting(&ca);
        config.set_protocol(protocol).unwrap();
        let conn = connect_encrypted("127.0.0.1", server.port, &config, Some("localhost"), 10_000)
            .unwrap();
        let info = conn.session().unwrap();
        assert_eq!(info.protocol, protocol);
        assert!(info.cipher.starts_with(cipher_prefix), "{}", info.cipher);
        assert!(conn.is_encrypted());
        assert_eq!(conn.peer_certificate_subject().unwrap(), "CN=localhost");
        assert!(conn.ssl_handshake_errors().is_empty());
        assert_eq!(reversed_line(&conn, "hello"), "olleh");
        conn.release();
    }
}

#[test]
fn presents_a_client_certificate_when_required() {
    let ca = TestCa::new("ca");
    let ca_file = temp_file("client-ca.pem", ca.identity.cert_pem.as_bytes());
    let server = SServer::start(
        &ca.server(),
        &["-Verify", "1", "-CAfile", ca_file.to_str().unwrap()],
    );
    // Without a certificate, the server refuses (the refusal arrives with
    // the first read in TLS 1.3).
    let bare = connect_encrypted(
        "127.0.0.1",
        server.port,
        &trusting(&ca),
        Some("localhost"),
        10_000,
    );
    if let Ok(conn) = bare {
        let _ = conn.write(b"x\n");
        assert!(conn.read(&mut [0u8; 8]).is_err());
    }
    let me = ca.client("me");
    let mut config = trusting(&ca);
    config
        .set_certificate_chain_pem(me.cert_pem.as_bytes())
        .unwrap();
    config
        .set_private_key_pem(me.key_pem.as_bytes(), None)
        .unwrap();
    let conn =
        connect_encrypted("127.0.0.1", server.port, &config, Some("localhost"), 10_000).unwrap();
    assert_eq!(reversed_line(&conn, "mutual"), "lautum");
}

#[test]
fn wrong_host_name_is_refused_with_host_name_mismatch() {
    let ca = TestCa::new("ca");
    let server = SServer::start(&ca.server(), &[]);
    let err = connect_encrypted(
        "127.0.0.1",
        server.port,
        &trusting(&ca),
        Some("example.org"),
        10_000,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls);
    assert!(
        err.message().contains("HostNameMismatch (22)"),
        "{}",
        err.message()
    );
}

#[test]
fn expired_certificate_refused_then_accepted_when_listed() {
    let ca = TestCa::new("ca");
    let expired = ca.expired_client("localhost");
    let server = SServer::start(&expired, &[]);
    let err = connect_encrypted(
        "127.0.0.1",
        server.port,
        &trusting(&ca),
        Some("localhost"),
        10_000,
    )
    .unwrap_err();
    assert!(
        err.message().contains("CertificateExpired (6)"),
        "{}",
        err.message()
    );
    let mut config = trusting(&ca);
    config.set_ignored_ssl_errors(&[
        SslErrorCode::CertificateExpired,
        SslErrorCode::InvalidPurpose,
    ]);
    let conn =
        connect_encrypted("127.0.0.1", server.port, &config, Some("localhost"), 10_000).unwrap();
    assert!(conn
        .ssl_handshake_errors()
        .contains(&SslErrorCode::CertificateExpired));
}

#[test]
fn untrusted_certificate_decided_by_the_callback() {
    let ca = TestCa::new("ca");
    let server = SServer::start(&self_signed("localhost"), &[]);
    let asked = Arc::new(AtomicUsize::new(0));
    let mut config = TlsConfig::new();
    let counter = asked.clone();
    config.set_ssl_errors_callback(Some(Arc::new(move |errors| {
        counter.fetch_add(1, Ordering::Relaxed);
        errors
            .iter()
            .all(|e| e.code == SslErrorCode::SelfSignedCertificate)
    })));
    let conn =
        connect_encrypted("127.0.0.1", server.port, &config, Some("localhost"), 10_000).unwrap();
    assert_eq!(asked.load(Ordering::Relaxed), 1);
    assert_eq!(
        conn.ssl_handshake_errors(),
        [SslErrorCode::SelfSignedCertificate]
    );
    conn.release(); // s_server serves one client at a time
                    // Without the callback the same server is refused.
    let err = connect_encrypted(
        "127.0.0.1",
        server.port,
        &trusting(&ca),
        Some("localhost"),
        10_000,
    )
    .unwrap_err();
    assert!(
        err.message().contains("SelfSignedCertificate (9)"),
        "{}",
        err.message()
    );
    // VERIFY_NONE asks nothing.
    let mut insecure = TlsConfig::new();
    insecure.set_peer_verify_mode(PeerVerifyMode::VerifyNone);
    connect_encrypted("127.0.0.1", server.port, &insecure, None, 10_000).unwrap();
}

#[test]
fn tls13_sessions_resume_across_connections() {
    let ca = TestCa::new("ca");
    let server = SServer::start(&ca.server(), &[]);
    let config = trusting(&ca);
    let first =
        connect_encrypted("127.0.0.1", server.port, &config, Some("localhost"), 10_000).unwrap();
    assert!(!first.session().unwrap().resumed);
    // The tickets arrive after the handshake; the round trip's read takes
    // them in.
    assert_eq!(reversed_line(&first, "abc"), "cba");
    first.release();
    let second =
        connect_encrypted("127.0.0.1", server.port, &config, Some("localhost"), 10_000).unwrap();
    assert!(
        second.session().unwrap().resumed,
        "the second connection resumes"
    );
}

#[test]
fn talks_to_the_library_own_server_with_alpn() {
    let ca = TestCa::new("ca");
    let mut server_cfg = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    server_cfg
        .set_alpn_protocols(&[b"echo/1".to_vec()])
        .unwrap();
    let server = TestServer::start(&server_cfg);
    let echo = spawn_echo(&server.server);
    let mut config = trusting(&ca);
    config.set_alpn_protocols(&[b"echo/1".to_vec()]).unwrap();
    let conn = connect_encrypted("localhost", server.port, &config, None, 10_000).unwrap();
    assert_eq!(
        conn.session().unwrap().alpn_protocol.as_deref(),
        Some(&b"echo/1"[..])
    );
    conn.write(b"ping").unwrap();
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        got += conn.read(&mut buf[got..]).unwrap();
    }
    assert_eq!(&buf, b"ping");
    conn.disconnect_from_host().unwrap();
    echo.join().unwrap();
    assert_eq!(
        server
            .server
            .wait_for_new_connection(Some(std::time::Duration::ZERO)),
        WaitOutcome::TimedOut
    );
}

#[test]
fn connects_over_ipv6() {
    let ca = TestCa::new("ca");
    let server = sslserver::Server::new();
    server
        .set_config(&server_config(
            &ca.server(),
            PeerVerifyMode::VerifyNone,
            None,
        ))
        .unwrap();
    server.listen(Some("::1"), 0).unwrap();
    let port = server.local_addr().unwrap().port();
    let conn = connect_encrypted("::1", port, &trusting(&ca), Some("localhost"), 10_000).unwrap();
    assert!(conn.peer_addr().is_ipv6());
    conn.write(b"over v6").unwrap();
    assert_eq!(
        server.wait_for_new_connection(Some(SOON)),
        WaitOutcome::Ready
    );
    let accepted = server.next_pending_connection().unwrap();
    let mut buf = [0u8; 16];
    let n = accepted.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"over v6");
    assert_eq!(accepted.peer_addr(), conn.local_addr());
}

#[test]
fn connection_failures_are_specific() {
    let config = TlsConfig::new();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = connect_encrypted("127.0.0.1", closed_port, &config, None, 5_000).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err.message().contains("refused"), "{}", err.message());
    let err = connect_encrypted("no-such-host.invalid", 443, &config, None, 5_000).unwrap_err();
    assert!(
        err.message().contains("cannot resolve"),
        "{}",
        err.message()
    );
    // A server that accepts but never answers: the deadline applies.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let err = connect_encrypted("127.0.0.1", port, &config, None, 200).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
}

#[test]
fn sessions_resume_against_the_library_own_server() {
    let ca = TestCa::new("ca");
    let server = TestServer::start(&server_config(
        &ca.server(),
        PeerVerifyMode::VerifyNone,
        None,
    ));
    let config = trusting(&ca);
    for round in 0..2 {
        let echo = spawn_echo(&server.server);
        let conn = connect_encrypted("127.0.0.1", server.port, &config, Some("localhost"), 10_000)
            .unwrap();
        assert_eq!(conn.session().unwrap().resumed, round == 1, "round {round}");
        conn.write(b"x").unwrap();
        conn.read(&mut [0u8; 1]).unwrap();
        conn.disconnect_from_host().unwrap();
        conn.release();
        echo.join().unwrap();
    }
}

#[test]
fn a_directly_trusted_certificate_without_sans_is_accepted_by_common_name() {
    // What `openssl req -x509 -subj /CN=localhost` makes: self-signed, CA:TRUE,
    // no subject alternative names. OpenSSL (and Qt) accept it when it is in
    // the trust store and the name matches its common name.
    let identity = openssl_req_x509("localhost");
    let server = SServer::start(&identity, &[]);
    let mut config = TlsConfig::new();
    config
        .add_ca_certificates_pem(identity.cert_pem.as_bytes())
        .unwrap();
    let conn =
        connect_encrypted("127.0.0.1", server.port, &config, Some("localhost"), 10_000).unwrap();
    assert_eq!(reversed_line(&conn, "cn"), "nc");
    conn.release();
    let err = connect_encrypted(
        "127.0.0.1",
        server.port,
        &config,
        Some("other.example"),
        10_000,
    )
    .unwrap_err();
    assert!(
        err.message().contains("HostNameMismatch"),
        "{}",
        err.message()
    );
    assert!(
        !err.message().contains("InvalidPurpose"),
        "{}",
        err.message()
    );
}
