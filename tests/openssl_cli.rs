//! Interoperability with a real, independent client: the openssl CLI.

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::thread;

use common::*;
use sslserver::{EventKind::*, PeerVerifyMode, Server, WaitOutcome};

/// Runs `openssl s_client` against `port` with `input` on stdin, asking
/// for `localhost` and failing on any verification error.
fn s_client(port: u16, ca: &Path, extra: &[&str], input: &[u8]) -> Output {
    let mut args = vec!["-servername", "localhost", "-verify_return_error"];
    args.extend_from_slice(extra);
    openssl_client::s_client(port, ca, &args, input)
}

/// Serves one connection: reads one message, echoes it, closes gracefully.
fn serve_once(server: &Arc<Server>) -> thread::JoinHandle<Option<Vec<Vec<u8>>>> {
    let server = server.clone();
    thread::spawn(move || {
        if server.wait_for_new_connection(Some(SOON)) != WaitOutcome::Ready {
            return None;
        }
        let conn = server.next_pending_connection().unwrap();
        let mut buf = [0u8; 1024];
        let n = conn.read(&mut buf).ok()?;
        conn.write(&buf[..n]).unwrap();
        conn.disconnect_from_host().unwrap();
        let chain = conn
            .peer_certificate_chain()
            .iter()
            .map(|c| c.to_vec())
            .collect();
        conn.release();
        Some(chain)
    })
}

fn setup(mode: PeerVerifyMode, alpn: &[&str]) -> (TestCa, TestServer, std::path::PathBuf) {
    let ca = TestCa::new("ca");
    let mut config = server_config(&ca.server(), mode, Some(&ca));
    let alpn: Vec<Vec<u8>> = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    config.set_alpn_protocols(&alpn).unwrap();
    let server = TestServer::start(&config);
    let ca_file = temp_file(
        &format!("ca-{}.pem", server.port),
        ca.identity.cert_pem.as_bytes(),
    );
    (ca, server, ca_file)
}

#[test]
fn openssl_client_echo_over_tls13_and_tls12() {
    for version in ["-tls1_3", "-tls1_2"] {
        let (_ca, server, ca_file) = setup(PeerVerifyMode::VerifyNone, &[]);
        let served = serve_once(&server.server);
        let out = s_client(
            server.port,
            &ca_file,
            &[version, "-quiet"],
            b"hello from openssl\n",
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("hello from openssl"),
            "{version}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(served.join().unwrap(), Some(vec![]));
    }
}

#[test]
fn openssl_client_certificate_accepted_under_verify_peer() {
    let (ca, server, ca_file) = setup(PeerVerifyMode::VerifyPeer, &[]);
    let client = ca.client("openssl-client");
    let cert = temp_file("client-cert.pem", client.cert_pem.as_bytes());
    let key = temp_file("client-key.pem", client.key_pem.as_bytes());
    let served = serve_once(&server.server);
    let out = s_client(
        server.port,
        &ca_file,
        &[
            "-quiet",
            "-cert",
            cert.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
        ],
        b"with certificate\n",
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("with certificate"));
    let chain = served.join().unwrap().unwrap();
    assert_eq!(
        chain[0],
        client.cert_der.to_vec(),
        "the server saw the client's certificate"
    );
}

#[test]
fn openssl_client_without_certificate_refused_under_verify_peer() {
    let (_ca, server, ca_file) = setup(PeerVerifyMode::VerifyPeer, &[]);
    let out = s_client(server.port, &ca_file, &[], b"no certificate\n");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("no certificate\n"));
    let events = server
        .events
        .wait_until("the refusal", |e| e.iter().any(|e| e.kind == ErrorOccurred));
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
}

#[test]
fn openssl_client_negotiates_alpn() {
    let (_ca, server, ca_file) = setup(PeerVerifyMode::VerifyNone, &["http/1.1"]);
    let served = serve_once(&server.server);
    let out = s_client(server.port, &ca_file, &["-alpn", "h2,http/1.1"], b"alpn\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ALPN protocol: http/1.1"), "{stdout}");
    served.join().unwrap();
}
