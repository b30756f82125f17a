//! Session tickets for a fleet of servers behind a balancer: every server
//! given the same ticket key files (nginx's format) resumes the sessions of
//! every other, rotation keeps old tickets, bad files are refused, and
//! tickets can be turned off. Checked with rustls clients and the openssl
//! CLI.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::openssl_client::{ca_file, s_client, serve_once, stdout_of};
use common::*;
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, HandshakeKind, RootCertStore, SupportedProtocolVersion};
use sslserver::{ErrorKind, PeerVerifyMode};

/// Random bytes in a fresh file (a ticket key as `openssl rand N` makes it).
fn random_file(name: &str, size: usize) -> PathBuf {
    let mut bytes = vec![0u8; size];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .unwrap();
    temp_file(name, &bytes)
}

fn paths(files: &[&Path]) -> Vec<String> {
    files
        .iter()
        .map(|p| p.to_str().unwrap().to_string())
        .collect()
}

/// A server for `identity` whose tickets use the key files `keys`.
fn ticket_server(identity: &Identity, keys: &[&Path]) -> TestServer {
    let mut config = server_config(identity, PeerVerifyMode::VerifyNone, None);
    config.set_session_ticket_keys_files(&paths(keys)).unwrap();
    TestServer::start(&config)
}

/// A rustls client of one protocol version trusting `ca`; its session
/// store is shared by every connection made with it.
fn client_of(ca: &TestCa, version: &'static SupportedProtocolVersion) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.identity.cert_der.clone()).unwrap();
    Arc::new(
        ClientConfig::builder_with_protocol_versions(&[version])
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Connects, echoes a byte (which takes in TLS 1.3 tickets) and tells
/// whether the session was resumed.
fn resumed(server: &TestServer, client: &Arc<ClientConfig>) -> bool {
    let echo = spawn_echo(&server.server);
    let mut stream = connect(server.port, client.clone()).unwrap();
    assert_eq!(echo_roundtrip(&mut stream, b"x"), b"x");
    let kind = stream.conn.handshake_kind();
    stream.conn.send_close_notify();
    stream.conn.complete_io(&mut stream.sock).unwrap();
    drop(stream);
    echo.join().unwrap();
    match kind {
        Some(HandshakeKind::Resumed) => true,
        Some(HandshakeKind::Full | HandshakeKind::FullWithHelloRetryRequest) => false,
        None => panic!("the handshake did not complete"),
    }
}

const VERSIONS: [&SupportedProtocolVersion; 2] = [&TLS13, &TLS12];

#[test]
fn two_servers_with_the_same_key_file_resume_each_others_sessions() {
    let ca = TestCa::new("ca");
    let identity = ca.server();
    for (size, version) in [(80, &TLS13), (48, &TLS12), (48, &TLS13), (80, &TLS12)] {
        let key = random_file(&format!("shared-{size}-{version:?}.key"), size);
        let one = ticket_server(&identity, &[&key]);
        let two = ticket_server(&identity, &[&key]);
        let client = client_of(&ca, version);
        assert!(!resumed(&one, &client), "{version:?}: the first is full");
        assert!(resumed(&two, &client), "{version:?}: server 2 resumes");
        assert!(resumed(&one, &client), "{version:?}: and back on server 1");
    }
}

#[test]
fn servers_with_different_key_files_do_not_resume_each_others_sessions() {
    let ca = TestCa::new("ca");
    let identity = ca.server();
    for version in VERSIONS {
        let one = ticket_server(&identity, &[&random_file("diff-a.key", 80)]);
        let two = ticket_server(&identity, &[&random_file("diff-b.key", 80)]);
        let client = client_of(&ca, version);
        assert!(!resumed(&one, &client));
        assert!(!resumed(&two, &client), "{version:?}: another key");
        // Without key files each server has its own random key, too.
        let three = TestServer::start(&server_config(&identity, PeerVerifyMode::VerifyNone, None));
        assert!(!resumed(&three, &client), "{version:?}: a random key");
    }
}

#[test]
fn rotation_keeps_old_tickets_and_seals_new_ones_with_the_first_key() {
    let ca = TestCa::new("ca");
    let identity = ca.server();
    for version in VERSIONS {
        let (a, b) = (random_file("rot-a.key", 80), random_file("rot-b.key", 80));
        let only_a = ticket_server(&identity, &[&a]);
        let b_then_a = ticket_server(&identity, &[&b, &a]);
        let only_b = ticket_server(&identity, &[&b]);
        // A ticket from before the rotation resumes after it; the
        // rotated server's new ticket is sealed with B, which a server
        // knowing only B opens.
        let client = client_of(&ca, version);
        assert!(!resumed(&only_a, &client));
        assert!(resumed(&b_then_a, &client), "{version:?}: old ticket");
        assert!(resumed(&only_b, &client), "{version:?}: new ticket is B's");
        // ...while a ticket sealed with A is not B's.
        let other = client_of(&ca, version);
        assert!(!resumed(&only_a, &other));
        assert!(!resumed(&only_b, &other), "{version:?}: A's ticket on B");
    }
}

#[test]
fn the_same_files_keep_tickets_valid_across_set_config() {
    let ca = TestCa::new("ca");
    let identity = ca.server();
    let key = random_file("reload.key", 80);
    let mut config = server_config(&identity, PeerVerifyMode::VerifyNone, None);
    config
        .set_session_ticket_keys_files(&paths(&[&key]))
        .unwrap();
    let server = TestServer::start(&config);
    let client = client_of(&ca, &TLS13);
    assert!(!resumed(&server, &client));
    // A new configuration (say, a renewed certificate) from the same files.
    let mut reloaded = server_config(&identity, PeerVerifyMode::VerifyNone, None);
    reloaded
        .set_session_ticket_keys_files(&paths(&[&key]))
        .unwrap();
    server.server.set_config(&reloaded).unwrap();
    assert!(resumed(&server, &client));
}

#[test]
fn bad_ticket_key_files_are_refused_naming_the_file_and_change_nothing() {
    let ca = TestCa::new("ca");
    let identity = ca.server();
    let good = random_file("good.key", 80);
    let mut config = server_config(&identity, PeerVerifyMode::VerifyNone, None);
    config
        .set_session_ticket_keys_files(&paths(&[&good]))
        .unwrap();
    let dir = temp_file("marker", b"")
        .parent()
        .unwrap()
        .join("a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.key");
    let mut bad: Vec<(PathBuf, ErrorKind)> = vec![
        (missing, ErrorKind::Io),
        (dir.clone(), ErrorKind::InvalidArgument),
    ];
    for size in [0, 16, 47, 49, 79, 81, 4096] {
        bad.push((
            random_file(&format!("size-{size}.key"), size),
            ErrorKind::InvalidArgument,
        ));
    }
    for (path, kind) in &bad {
        // The bad file second: the good one before it is not kept either.
        let err = config
            .set_session_ticket_keys_files(&paths(&[&random_file("fine.key", 48), path]))
            .unwrap_err();
        assert_eq!(err.kind(), *kind, "{}", err.message());
        assert!(
            err.message().contains(path.to_str().unwrap()),
            "the message names the file: {}",
            err.message()
        );
    }
    // Still the good key: a server with it resumes a session of one that
    // has only the good key.
    let client = client_of(&ca, &TLS13);
    assert!(!resumed(&ticket_server(&identity, &[&good]), &client));
    assert!(resumed(&TestServer::start(&config), &client));
}

#[test]
fn tickets_turned_off_send_no_ticket_and_tls13_does_not_resume() {
    let ca = TestCa::new("ca");
    let identity = ca.server();
    let mut config = server_config(&identity, PeerVerifyMode::VerifyNone, None);
    config
        .set_session_ticket_keys_files(&paths(&[&random_file("off.key", 80)]))
        .unwrap();
    config.set_session_tickets(false);
    let server = TestServer::start(&config);
    let ca_path = ca_file(&ca, "off-ca.pem");
    // openssl reports every ticket it receives; with tickets on it sees some.
    for (tickets_on, server) in [(false, &server), (true, &ticket_server(&identity, &[]))] {
        for version in ["-tls1_3", "-tls1_2"] {
            let served = serve_once(server);
            let out = s_client(server.port, &ca_path, &[version], b"ticket?\n");
            served.join().unwrap();
            let stdout = stdout_of(&out);
            assert!(stdout.contains("ticket?"), "{version}: {stdout}");
            let ticket_seen = stdout.contains("New Session Ticket arrived")
                || stdout.contains("TLS session ticket:");
            assert_eq!(ticket_seen, tickets_on, "{version} tickets: {stdout}");
        }
    }
    // TLS 1.3 cannot resume without tickets; TLS 1.2 still resumes from
    // the server's session-ID cache.
    let tls13 = client_of(&ca, &TLS13);
    assert!(!resumed(&server, &tls13));
    assert!(!resumed(&server, &tls13), "TLS 1.3 without tickets");
    let tls12 = client_of(&ca, &TLS12);
    assert!(!resumed(&server, &tls12));
    assert!(resumed(&server, &tls12), "TLS 1.2 by session ID");
}
