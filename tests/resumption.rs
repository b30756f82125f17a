//! Resumed sessions are judged like full handshakes: a connection that
//! resumes a session (TLS 1.3 ticket, TLS 1.2 session) reports the peer's
//! chain and its errors, fires PEER_VERIFY_ERROR / SSL_ERRORS, and under
//! VERIFY_PEER is refused unless the errors are ignored again. A decision
//! taken for the connection that got the ticket never carries over.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use common::*;
use rustls::version::{TLS12, TLS13};
use rustls::{ServerConfig, StreamOwned, SupportedProtocolVersion};
use sslserver::{
    connect_encrypted, AlertType, EventKind, PeerVerifyMode, Server, SslErrorCode, TlsConfig,
    WaitOutcome,
};

/// A server that checks client certificates against a CA the client's
/// self-signed certificate is not from. Its SSL_ERRORS callback ignores
/// the errors while `ignore` is set.
struct Setup {
    server: TestServer,
    ignore: Arc<AtomicBool>,
    client: Identity,
}

fn setup(mode: PeerVerifyMode) -> Setup {
    let ca = TestCa::new("trusted ca");
    let config = server_config(&ca.server(), mode, Some(&ca));
    let ignore = Arc::new(AtomicBool::new(false));
    let flag = ignore.clone();
    let server = TestServer::start_with(
        &config,
        |_| {},
        move |event| {
            if event.kind == EventKind::SslErrors && flag.load(Ordering::SeqCst) {
                event.connection.unwrap().ignore_ssl_errors();
            }
        },
    );
    Setup {
        server,
        ignore,
        client: self_signed("client"),
    }
}

fn ssl_errors_of(events: &[Recorded]) -> Option<Vec<SslErrorCode>> {
    events
        .iter()
        .find(|e| e.kind == EventKind::SslErrors)
        .map(|e| e.ssl_errors.clone())
}

/// Connects with `client`, echoes a byte (which takes in the session
/// tickets), and returns the server side's connection.
fn connect_and_take(
    setup: &Setup,
    client: &Arc<rustls::ClientConfig>,
) -> Arc<sslserver::Connection> {
    let mut stream = connect(setup.server.port, client.clone()).unwrap();
    let conn = setup.server.accept_one();
    let echo = {
        let conn = conn.clone();
        thread::spawn(move || {
            let mut byte = [0u8; 1];
            conn.read(&mut byte).unwrap();
            conn.write(&byte).unwrap();
        })
    };
    assert_eq!(echo_roundtrip(&mut stream, b"x"), b"x");
    echo.join().unwrap();
    conn
}

fn verify_peer_resumption(version: &'static SupportedProtocolVersion) {
    let setup = setup(PeerVerifyMode::VerifyPeer);
    let client = client_presenting(
        std::slice::from_ref(&setup.client.cert_der),
        &setup.client.key_der(),
        &[version],
    );
    // 1. A full handshake; the application ignores the errors.
    setup.ignore.store(true, Ordering::SeqCst);
    let first = connect_and_take(&setup, &client);
    assert!(!first.session().unwrap().resumed);
    let first_events = setup.server.events.finished(first.peer_addr().port());
    assert_eq!(
        ssl_errors_of(&first_events),
        Some(vec![SslErrorCode::SelfSignedCertificate])
    );
    // 2. Resumed, ignored again: the same errors and events, and the chain.
    let second = connect_and_take(&setup, &client);
    assert!(second.session().unwrap().resumed, "{version:?}: resumed");
    let second_events = setup.server.events.finished(second.peer_addr().port());
    assert_eq!(
        kinds_of(&second_events),
        [
            EventKind::NewConnection,
            EventKind::StartedEncryptionHandshake,
            EventKind::PeerVerifyError,
            EventKind::SslErrors,
            EventKind::PendingConnectionAvailable
        ],
        "{version:?}"
    );
    assert_eq!(
        ssl_errors_of(&second_events),
        Some(vec![SslErrorCode::SelfSignedCertificate])
    );
    assert_eq!(
        second.ssl_handshake_errors(),
        [SslErrorCode::SelfSignedCertificate]
    );
    assert_eq!(
        second.peer_certificate_chain(),
        std::slice::from_ref(&setup.client.cert_der)
    );
    // 3. Resumed, not ignored this time: refused, with the alert a full
    //    handshake would get.
    setup.ignore.store(false, Ordering::SeqCst);
    let (port, refused) = connect_from_port(setup.server.port, client.clone());
    let err = refused.expect_err("the client is refused");
    assert!(err.to_string().contains("UnknownCA"), "{version:?}: {err}");
    let events = setup.server.events.finished(port);
    assert_eq!(
        kinds_of(&events),
        [
            EventKind::NewConnection,
            EventKind::StartedEncryptionHandshake,
            EventKind::PeerVerifyError,
            EventKind::SslErrors,
            EventKind::AlertSent,
            EventKind::ErrorOccurred
        ],
        "{version:?}: {events:#?}"
    );
    let alert = events
        .iter()
        .find(|e| e.kind == EventKind::AlertSent)
        .unwrap();
    assert_eq!(
        alert.alert.map(|(_, t)| t),
        Some(AlertType::UnknownCa),
        "{version:?}"
    );
    assert!(!setup.server.server.has_pending_connections());
}

#[test]
fn tls13_resumption_under_verify_peer_is_refused_unless_ignored_again() {
    verify_peer_resumption(&TLS13);
}

#[test]
fn tls12_resumption_under_verify_peer_is_refused_unless_ignored_again() {
    verify_peer_resumption(&TLS12);
}

#[test]
fn resumption_under_query_peer_reports_the_same_errors() {
    for version in [&TLS13, &TLS12] {
        let setup = setup(PeerVerifyMode::QueryPeer);
        let client = client_presenting(
            std::slice::from_ref(&setup.client.cert_der),
            &setup.client.key_der(),
            &[version],
        );
        let first = connect_and_take(&setup, &client);
        let second = connect_and_take(&setup, &client);
        assert!(!first.session().unwrap().resumed);
        assert!(second.session().unwrap().resumed, "{version:?}");
        for conn in [&first, &second] {
            let events = setup.server.events.finished(conn.peer_addr().port());
            assert_eq!(
                ssl_errors_of(&events),
                Some(vec![SslErrorCode::SelfSignedCertificate]),
                "{version:?}"
            );
            assert_eq!(
                conn.ssl_handshake_errors(),
                [SslErrorCode::SelfSignedCertificate]
            );
        }
    }
}

/// `openssl s_client -sess_out`, then `-sess_in`: the reproduction.
fn s_client(
    port: u16,
    version: &str,
    cert: &Path,
    key: &Path,
    session: &Path,
    out: bool,
) -> String {
    // Bounded: a server that wrongly accepts the connection and then never
    // closes it must fail the test, not hang it.
    let mut child = Command::new("timeout")
        .args([
            "20",
            "openssl",
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            version,
        ])
        .args(["-ign_eof", "-cert"])
        .arg(cert)
        .arg("-key")
        .arg(key)
        .arg(if out { "-sess_out" } else { "-sess_in" })
        .arg(session)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl CLI is installed");
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Takes one connection, says hello and closes, so s_client (which waits
/// for the server's close with -ign_eof) has read the tickets.
fn greet_once(server: &Arc<Server>) -> thread::JoinHandle<bool> {
    let server = server.clone();
    thread::spawn(move || {
        if server.wait_for_new_connection(Some(SOON)) != WaitOutcome::Ready {
            return false;
        }
        let conn = server.next_pending_connection().unwrap();
        let resumed = conn.session().unwrap().resumed;
        conn.write(b"hello\n").unwrap();
        conn.disconnect_from_host().unwrap();
        conn.release();
        resumed
    })
}

#[test]
fn openssl_sess_in_cannot_skip_client_certificate_checks() {
    for version in ["-tls1_3", "-tls1_2"] {
        let setup = setup(PeerVerifyMode::VerifyPeer);
        let tag = format!("{}{version}", setup.server.port);
        let cert = temp_file(
            &format!("sess-cert-{tag}.pem"),
            setup.client.cert_pem.as_bytes(),
        );
        let key = temp_file(
            &format!("sess-key-{tag}.pem"),
            setup.client.key_pem.as_bytes(),
        );
        let session = std::env::temp_dir().join(format!("sslserver-sess-{tag}.pem"));
        let port = setup.server.port;
        setup.ignore.store(true, Ordering::SeqCst);
        let greeter = greet_once(&setup.server.server);
        let first = s_client(port, version, &cert, &key, &session, true);
        assert!(
            !greeter.join().unwrap(),
            "{version}: the first is a full handshake"
        );
        assert!(first.contains("hello"), "{version}: {first}");
        // Ignored again: resumes, with the same errors reported.
        let greeter = greet_once(&setup.server.server);
        let second = s_client(port, version, &cert, &key, &session, false);
        assert!(second.contains("Reused"), "{version}: {second}");
        assert!(greeter.join().unwrap(), "{version}: the second resumes");
        // Not ignored: the same resumption is refused.
        setup.ignore.store(false, Ordering::SeqCst);
        let errors_before = setup
            .server
            .events
            .all()
            .iter()
            .filter(|e| e.kind == EventKind::SslErrors)
            .count();
        let third = s_client(port, version, &cert, &key, &session, false);
        assert!(!third.contains("hello"), "{version}: {third}");
        let events = setup.server.events.wait_until("the refusal", |events| {
            events
                .iter()
                .filter(|e| e.kind == EventKind::ErrorOccurred)
                .count()
                == 1
        });
        let errors: Vec<_> = events
            .iter()
            .filter(|e| e.kind == EventKind::SslErrors)
            .collect();
        assert_eq!(errors.len(), errors_before + 1, "{version}: {events:#?}");
        assert_eq!(
            errors.last().unwrap().ssl_errors,
            [SslErrorCode::SelfSignedCertificate]
        );
        assert!(!setup.server.server.has_pending_connections());
    }
}

/// The library as a client: a resumed session's server certificate is
/// judged again, by the callback and the ignore list.
#[test]
fn client_mode_judges_resumed_sessions_again() {
    for version in [&TLS13, &TLS12] {
        let server_identity = self_signed("localhost");
        let config = Arc::new(
            ServerConfig::builder_with_protocol_versions(&[version])
                .with_no_client_auth()
                .with_single_cert(
                    vec![server_identity.cert_der.clone()],
                    server_identity.key_der(),
                )
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let serving = thread::spawn(move || {
            for _ in 0..3 {
                let (tcp, _) = listener.accept().unwrap();
                tcp.set_read_timeout(Some(SOON)).unwrap();
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut stream = StreamOwned::new(conn, tcp);
                while stream.conn.is_handshaking() {
                    if stream.conn.complete_io(&mut stream.sock).is_err() {
                        break;
                    }
                }
                let _ = stream.write_all(b"hello\n");
                let _ = stream.flush();
            }
        });
        let accept = Arc::new(AtomicBool::new(true));
        let asked = Arc::new(AtomicUsize::new(0));
        let mut client = TlsConfig::new();
        let (flag, counter) = (accept.clone(), asked.clone());
        client.set_ssl_errors_callback(Some(Arc::new(move |errors| {
            counter.fetch_add(1, Ordering::SeqCst);
            assert_eq!(errors[0].code, SslErrorCode::SelfSignedCertificate);
            flag.load(Ordering::SeqCst)
        })));
        let hello = |conn: &sslserver::Connection| {
            let mut buf = [0u8; 6];
            let mut got = 0;
            while got < buf.len() {
                got += conn.read(&mut buf[got..]).unwrap();
            }
        };
        let first =
            connect_encrypted("127.0.0.1", port, &client, Some("localhost"), 10_000).unwrap();
        hello(&first); // takes in the tickets
        assert!(!first.session().unwrap().resumed);
        let second =
            connect_encrypted("127.0.0.1", port, &client, Some("localhost"), 10_000).unwrap();
        hello(&second);
        assert!(second.session().unwrap().resumed, "{version:?}");
        assert_eq!(
            second.ssl_handshake_errors(),
            [SslErrorCode::SelfSignedCertificate]
        );
        assert_eq!(asked.load(Ordering::SeqCst), 2, "asked again on resumption");
        accept.store(false, Ordering::SeqCst);
        let err = connect_encrypted("127.0.0.1", port, &client, Some("localhost"), 10_000)
            .expect_err("refused this time");
        assert!(
            err.message().contains("SelfSignedCertificate (9)"),
            "{version:?}: {}",
            err.message()
        );
        assert_eq!(asked.load(Ordering::SeqCst), 3);
        serving.join().unwrap();
    }
}

/// A client without a certificate, let in once under VERIFY_PEER by the
/// application, resumes and is refused: each error is reported once (it
/// used to be reported by the judgement and again by the refusal).
#[test]
fn a_refused_resumption_without_a_certificate_reports_each_error_once() {
    let ca = TestCa::new("trusted ca");
    let config = server_config(&ca.server(), PeerVerifyMode::VerifyPeer, Some(&ca));
    let let_in = Arc::new(AtomicBool::new(true));
    let flag = let_in.clone();
    let server = TestServer::start_with(
        &config,
        |_| {},
        move |event| {
            if event.kind == EventKind::NewConnection && flag.load(Ordering::SeqCst) {
                event.connection.unwrap().ignore_ssl_errors();
            }
        },
    );
    let client = client_config(&ca.identity.cert_der, None, &[]);
    let setup = Setup {
        server,
        ignore: Arc::new(AtomicBool::new(false)),
        client: self_signed("unused"),
    };
    let first = connect_and_take(&setup, &client);
    assert!(!first.session().unwrap().resumed);
    let_in.store(false, Ordering::SeqCst);
    let _ = connect(setup.server.port, client.clone());
    let events = setup.server.events.wait_until("the refusal", |events| {
        events.iter().any(|e| e.kind == EventKind::ErrorOccurred)
    });
    let second: Vec<_> = events
        .iter()
        .skip_while(|e| e.peer_port != Some(first.peer_addr().port()))
        .filter(|e| e.peer_port != Some(first.peer_addr().port()))
        .collect();
    let kinds: Vec<_> = second.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::NewConnection,
            EventKind::StartedEncryptionHandshake,
            EventKind::PeerVerifyError,
            EventKind::SslErrors,
            EventKind::AlertSent,
            EventKind::ErrorOccurred
        ]
    );
    assert_eq!(second[3].ssl_errors, [SslErrorCode::NoPeerCertificate]);
    assert_eq!(
        second[4].alert.map(|(_, alert)| alert),
        Some(AlertType::CertificateRequired)
    );
}
