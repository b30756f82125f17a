//! What the fuzz targets run, with the oracles that judge each input.
//!
//! This file is the library of the fuzz crate (`sslserver_fuzz`), and
//! `tests/fuzz_inputs.rs` includes it as a module to replay the committed corpus
//! and crash inputs under `cargo test`, with no libFuzzer. So it uses only
//! `sslserver`, `rustls` and `std`.
//!
//! Every target panics (a crash for libFuzzer) when the library panics, hangs
//! (bounded waits), or breaks its contract: a loader failing with the wrong
//! kind of error, a connection whose events are not a row of the contract's
//! event table, a forged record accepted after the handshake, bytes lost or
//! changed on an established connection.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use sslserver::ffi::sslserver_result;
use sslserver::{
    AlertLevel, AlertType, ErrorKind, EventKind, PeerVerifyMode, Server, SocketError, TlsConfig,
    WaitOutcome,
};

// Relative to this file, also when tests/fuzz_inputs.rs includes it.
#[path = "parsers.rs"]
mod parsers;
pub use parsers::{dtls_records, proxy_header};
#[path = "dtls_live.rs"]
mod dtls_live;
pub use dtls_live::dtls_server;

/// Every target by name (the names of `fuzz/fuzz_targets/*.rs` and of the
/// folders under `fuzz/corpus` and `fuzz/regressions`).
pub const TARGETS: &[&str] = &[
    "config_chain",
    "config_key",
    "config_key_passphrase",
    "config_ca",
    "config_server",
    "handshake",
    "handshake_mtls",
    "post_handshake",
    "proxy_header",
    "dtls_records",
    "dtls_server",
];

/// The function of a target, by name.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    Some(match name {
        "config_chain" => config_chain,
        "config_key" => config_key,
        "config_key_passphrase" => config_key_passphrase,
        "config_ca" => config_ca,
        "config_server" => config_server,
        "handshake" => handshake,
        "handshake_mtls" => handshake_mtls,
        "post_handshake" => post_handshake,
        "proxy_header" => proxy_header,
        "dtls_records" => dtls_records,
        "dtls_server" => dtls_server,
        _ => return None,
    })
}

/// No wait in a target lasts longer than this; past it the input hangs the
/// library.
const BOUND: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Loaders

fn ffi_config() -> *mut sslserver::ffi::config::sslconfig {
    let cfg = sslserver::ffi::config::sslconfig_new();
    assert!(!cfg.is_null());
    cfg
}

fn assert_ffi_result(result: sslserver_result, allowed: &[sslserver_result], what: &str) {
    assert_ne!(
        result,
        sslserver_result::SSLSERVER_ERROR_PANIC,
        "{what}: panic"
    );
    assert!(
        result == sslserver_result::SSLSERVER_OK || allowed.contains(&result),
        "{what}: {result:?}"
    );
    if result != sslserver_result::SSLSERVER_OK {
        // SAFETY: the library returns a valid NUL-terminated string.
        let message =
            unsafe { std::ffi::CStr::from_ptr(sslserver::ffi::sslserver_last_error_message()) };
        assert!(
            !message.to_bytes().is_empty(),
            "{what}: a failure has a message"
        );
    }
}

/// A certificate chain from PEM: CERTIFICATE errors only, and a chain that
/// loads is written back as PEM that loads to the same chain.
pub fn config_chain(data: &[u8]) {
    let mut config = TlsConfig::new();
    match config.set_certificate_chain_pem(data) {
        Ok(()) => {
            let chain = config.certificate_chain().to_vec();
            assert!(!chain.is_empty());
            let pem = config
                .certificate_chain_pem()
                .expect("a loaded chain has PEM");
            let mut again = TlsConfig::new();
            again
                .set_certificate_chain_pem(pem.as_bytes())
                .expect("written PEM loads");
            assert_eq!(again.certificate_chain(), chain.as_slice());
            let _ = config.certificate_fingerprint_sha256();
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Certificate, "{e}");
            assert!(
                config.certificate_chain().is_empty(),
                "unchanged on failure"
            );
            assert!(!e.message().is_empty());
        }
    }
    let cfg = ffi_config();
    let result =
        sslserver::ffi::config::sslconfig_set_certificate_chain_pem(cfg, data.as_ptr(), data.len());
    assert_ffi_result(
        result,
        &[sslserver_result::SSLSERVER_ERROR_CERTIFICATE],
        "sslconfig_set_certificate_chain_pem",
    );
    sslserver::ffi::config::sslconfig_free(cfg);
}

fn check_key(data: &[u8], passphrase: Option<&str>) {
    let mut config = TlsConfig::new();
    if let Err(e) = config.set_private_key_pem(data, passphrase) {
        assert_eq!(e.kind(), ErrorKind::PrivateKey, "{e}");
        assert!(!e.message().is_empty());
    }
    let cfg = ffi_config();
    let passphrase = passphrase.map(|p| CString::new(p.replace('\0', "")).unwrap());
    let result = sslserver::ffi::config::sslconfig_set_private_key_pem(
        cfg,
        data.as_ptr(),
        data.len(),
        passphrase.as_ref().map_or(std::ptr::null(), |p| p.as_ptr()),
    );
    assert_ffi_result(
        result,
        &[sslserver_result::SSLSERVER_ERROR_PRIVATE_KEY],
        "sslconfig_set_private_key_pem",
    );
    sslserver::ffi::config::sslconfig_free(cfg);
}

/// A private key without a passphrase: PRIVATE_KEY errors only.
pub fn config_key(data: &[u8]) {
    check_key(data, None);
}

/// A private key with a passphrase: the first byte is the passphrase's
/// length, then the passphrase, then the PEM.
pub fn config_key_passphrase(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = (n as usize).min(rest.len());
    let passphrase = String::from_utf8_lossy(&rest[..n]).replace('\0', "");
    check_key(&rest[n..], Some(&passphrase));
}

/// CA certificates: CERTIFICATE errors only; what loads is added.
pub fn config_ca(data: &[u8]) {
    let mut config = TlsConfig::new();
    match config.add_ca_certificates_pem(data) {
        Ok(()) => assert!(!config.ca_certificates().is_empty()),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Certificate, "{e}");
            assert!(config.ca_certificates().is_empty());
        }
    }
    let cfg = ffi_config();
    let result =
        sslserver::ffi::config::sslconfig_add_ca_certificates_pem(cfg, data.as_ptr(), data.len());
    assert_ffi_result(
        result,
        &[sslserver_result::SSLSERVER_ERROR_CERTIFICATE],
        "sslconfig_add_ca_certificates_pem",
    );
    sslserver::ffi::config::sslconfig_free(cfg);
}

/// A whole configuration handed to a server: `[mode][chain len u16][chain]
/// [key len u16][key][CA PEM...]`. set_config succeeds exactly when a chain
/// and a matching key loaded.
pub fn config_server(data: &[u8]) {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> &'a [u8] {
        let n = n.min(rest.len());
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        head
    }
    fn len(rest: &mut &[u8]) -> usize {
        match take(rest, 2) {
            [a, b] => u16::from_be_bytes([*a, *b]) as usize,
            [a] => *a as usize,
            _ => 0,
        }
    }
    let mut rest = data;
    let mode = take(&mut rest, 1).first().copied().unwrap_or(0);
    let chain_len = len(&mut rest);
    let chain = take(&mut rest, chain_len).to_vec();
    let key_len = len(&mut rest);
    let key = take(&mut rest, key_len).to_vec();
    let ca = rest.to_vec();

    let mut config = TlsConfig::new();
    let chain_ok = config.set_certificate_chain_pem(&chain).is_ok();
    let key_ok = config.set_private_key_pem(&key, None).is_ok();
    let _ = config.add_ca_certificates_pem(&ca);
    config.set_peer_verify_mode(match mode % 4 {
        0 => PeerVerifyMode::VerifyNone,
        1 => PeerVerifyMode::QueryPeer,
        2 => PeerVerifyMode::VerifyPeer,
        _ => PeerVerifyMode::AutoVerifyPeer,
    });
    config.set_handshake_must_interrupt_on_error(mode & 4 != 0);
    let server = Server::new();
    match server.set_config(&config) {
        Ok(()) => assert!(chain_ok && key_ok, "set_config needs a certificate and key"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                ErrorKind::Certificate | ErrorKind::PrivateKey | ErrorKind::InvalidArgument
            ) || !(chain_ok && key_ok),
            "set_config failed with a certificate and key: {e}"
        ),
    }
}

// ---------------------------------------------------------------------------
// A live server on 127.0.0.1, shared by every input of a process.

/// One event as the oracle needs it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub kind: EventKind,
    pub error: SocketError,
    pub alert: Option<(AlertLevel, AlertType)>,
}

#[derive(Default)]
struct Log {
    by_port: Mutex<HashMap<u16, Vec<Seen>>>,
    accept_errors: Mutex<Vec<String>>,
    changed: Condvar,
}

impl Log {
    /// The events of the connection from `port`, once it ended (ERROR or
    /// PENDING); forgets them, so the port can be used again.
    fn take_story(&self, port: u16) -> Vec<Seen> {
        let until = Instant::now() + BOUND;
        let mut by_port = self.by_port.lock().unwrap();
        loop {
            let ended = by_port.get(&port).is_some_and(|events| {
                events.iter().any(|e| {
                    matches!(
                        e.kind,
                        EventKind::ErrorOccurred | EventKind::PendingConnectionAvailable
                    )
                })
            });
            if ended {
                return by_port.remove(&port).unwrap();
            }
            let left = until.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the connection from :{port} never ended: {:?}",
                by_port.get(&port)
            );
            by_port = self.changed.wait_timeout(by_port, left).unwrap().0;
        }
    }
}

pub struct Live {
    pub server: Arc<Server>,
    pub port: u16,
    log: Arc<Log>,
    /// Trusts the server's certificate, for clients that complete a handshake.
    pub client_config: Arc<ClientConfig>,
}

fn start(config: TlsConfig) -> Live {
    let server = Arc::new(Server::new());
    server.set_config(&config).expect("a valid configuration");
    // Inputs are sent whole and half-closed, so no deadline should matter;
    // a generous one still bounds a lost wake-up.
    server
        .set_handshake_timeout(BOUND.as_millis() as i32)
        .unwrap();
    server.set_max_pending_connections(1000).unwrap();
    let log = Arc::new(Log::default());
    for raw in 0..EventKind::COUNT as i32 {
        let kind = EventKind::from_raw(raw).unwrap();
        if kind == EventKind::PreSharedKeyAuthenticationRequired {
            continue;
        }
        let log = log.clone();
        server.set_callback(
            kind,
            Some(Arc::new(move |event: &sslserver::Event<'_>| {
                assert!(
                    !event.description.is_empty(),
                    "every event has a description"
                );
                let seen = Seen {
                    kind: event.kind,
                    error: event.socket_error,
                    alert: event.alert,
                };
                match event.connection {
                    Some(c) => {
                        let mut by_port = log.by_port.lock().unwrap();
                        by_port.entry(c.peer_addr().port()).or_default().push(seen);
                    }
                    None => log
                        .accept_errors
                        .lock()
                        .unwrap()
                        .push(event.description.clone()),
                }
                log.changed.notify_all();
            })),
        );
    }
    server
        .listen(Some("127.0.0.1"), 0)
        .expect("listen on loopback");
    let port = server.local_addr().unwrap().port();
    let mut roots = RootCertStore::empty();
    for cert in config.certificate_chain() {
        roots.add(cert.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Live {
        server,
        port,
        log,
        client_config: Arc::new(client_config),
    }
}

fn self_signed(name: &str) -> TlsConfig {
    let mut config = TlsConfig::new();
    config
        .generate_self_signed(&[name.to_string()])
        .expect("generate a certificate");
    config
}

/// A server without client authentication.
pub fn live() -> &'static Live {
    static LIVE: OnceLock<Live> = OnceLock::new();
    LIVE.get_or_init(|| {
        let mut config = self_signed("localhost");
        config.set_peer_verify_mode(PeerVerifyMode::VerifyNone);
        start(config)
    })
}

/// A server that requires a client certificate from one CA, so client
/// Certificate messages reach the library's verifier (TLS 1.2 sends them
/// in plaintext, which a fuzzer can reach).
pub fn live_mtls() -> &'static Live {
    static LIVE: OnceLock<Live> = OnceLock::new();
    LIVE.get_or_init(|| {
        let mut config = self_signed("localhost");
        let ca = self_signed("fuzz client CA");
        config
            .add_ca_certificates_pem(ca.certificate_chain_pem().unwrap().as_bytes())
            .unwrap();
        config.set_peer_verify_mode(PeerVerifyMode::VerifyPeer);
        start(config)
    })
}

/// Sends `data`, half-closes, and reads what the server answers until it
/// closes. Returns (client port, reply).
fn exchange(live: &Live, data: &[u8]) -> (u16, Vec<u8>) {
    let mut tcp = TcpStream::connect(("127.0.0.1", live.port)).expect("connect to loopback");
    let port = tcp.local_addr().unwrap().port();
    tcp.set_write_timeout(Some(BOUND)).unwrap();
    tcp.set_read_timeout(Some(BOUND)).unwrap();
    // The server may close before reading everything: a failed write is fine.
    let _ = tcp.write_all(data);
    let _ = tcp.shutdown(Shutdown::Write);
    let mut reply = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
    (port, reply)
}

/// The content types of the whole records in `bytes`.
fn records(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 5 {
        let len = u16::from_be_bytes([bytes[3], bytes[4]]) as usize;
        if bytes.len() < 5 + len {
            break;
        }
        types.push(bytes[0]);
        bytes = &bytes[5 + len..];
    }
    types
}

/// The first plaintext alert record in `bytes`: (level, description).
fn plaintext_alert(mut bytes: &[u8]) -> Option<(u8, u8)> {
    while bytes.len() >= 5 {
        let len = u16::from_be_bytes([bytes[3], bytes[4]]) as usize;
        let record = bytes.get(5..5 + len)?;
        if bytes[0] == 0x15 && len == 2 {
            return Some((record[0], record[1]));
        }
        bytes = &bytes[5 + len..];
    }
    None
}

/// Is `story` a row of the contract's event table for a client that sent
/// `data` and half-closed?
pub fn check_story(data: &[u8], story: &[Seen], reply: &[u8]) {
    use EventKind::*;
    let kinds: Vec<EventKind> = story.iter().map(|e| e.kind).collect();
    let terminal = kinds
        .iter()
        .filter(|k| matches!(k, ErrorOccurred | PendingConnectionAvailable))
        .count();
    assert_eq!(terminal, 1, "one terminal event: {story:?}");
    assert_eq!(kinds.first(), Some(&NewConnection), "{story:?}");
    let last = story.last().unwrap();
    match data.first() {
        None => {
            assert_eq!(kinds, [NewConnection, ErrorOccurred], "{story:?}");
            assert_eq!(last.error, SocketError::RemoteHostClosed, "{story:?}");
            return;
        }
        Some(&first) if first != 0x16 => {
            assert_eq!(kinds, [NewConnection, ErrorOccurred], "not TLS: {story:?}");
            assert_eq!(last.error, SocketError::SslHandshakeFailed, "{story:?}");
            assert!(reply.is_empty(), "no answer to plaintext: {reply:?}");
            return;
        }
        Some(_) => {}
    }
    assert_eq!(kinds.get(1), Some(&StartedEncryptionHandshake), "{story:?}");
    // Verification events: PEER_VERIFY_ERROR* then SSL_ERRORS, or
    // HANDSHAKE_INTERRUPTED_ON_ERROR (then SSL_ERRORS if continued).
    let middle = &kinds[2..kinds.len() - 1];
    let mut i = 0;
    while i < middle.len() && middle[i] == PeerVerifyError {
        i += 1;
    }
    if i < middle.len() && middle[i] == HandshakeInterruptedOnError {
        i += 1;
    }
    if i < middle.len() && middle[i] == SslErrors {
        i += 1;
    }
    let alert = match &middle[i..] {
        [] => None,
        [AlertSent] | [AlertReceived] => Some(&story[2 + i]),
        other => panic!("unexpected events {other:?} in {story:?}"),
    };
    if last.kind == PendingConnectionAvailable {
        assert!(alert.is_none(), "no alert before success: {story:?}");
        return;
    }
    match alert {
        Some(alert) => {
            assert_eq!(last.error, SocketError::SslHandshakeFailed, "{story:?}");
            let (level, alert_type) = alert.alert.expect("an alert event names its alert");
            if alert.kind == AlertSent {
                assert_eq!(level, AlertLevel::Fatal, "{story:?}");
                // While the server's side is all plaintext (no
                // ChangeCipherSpec, no encrypted record), an alert it sent
                // is on the wire.
                let all_plaintext = records(reply).iter().all(|t| *t == 0x16 || *t == 0x15);
                assert!(
                    !all_plaintext || plaintext_alert(reply).is_some(),
                    "ALERT_SENT {alert_type:?} but no alert on the wire: {story:?}"
                );
                if let Some((wire_level, wire_type)) = plaintext_alert(reply) {
                    assert_eq!(wire_level, 2, "fatal on the wire");
                    assert_eq!(
                        wire_type, alert_type as u8,
                        "the event names the alert sent"
                    );
                }
            }
        }
        // Without an alert only the client's close ends a started
        // handshake: a refused one gets ALERT_SENT (the table's "malformed
        // ClientHello" row), unless the client had already been sent a
        // protected record and rustls queued no alert (an alert would need
        // keys only rustls holds).
        None => {
            let protected = records(reply).iter().any(|t| *t == 0x17 || *t == 0x14);
            assert!(
                last.error == SocketError::RemoteHostClosed
                    || (last.error == SocketError::SslHandshakeFailed && protected),
                "a refused handshake without ALERT_SENT: {story:?}"
            )
        }
    }
}

fn run_handshake(live: &Live, data: &[u8]) {
    let (port, reply) = exchange(live, data);
    let story = live.log.take_story(port);
    check_story(data, &story, &reply);
    if story.last().unwrap().kind == EventKind::PendingConnectionAvailable {
        if let Some(connection) = live.server.next_pending_connection() {
            connection.release();
        }
    }
    let accept_errors = live.log.accept_errors.lock().unwrap();
    assert!(accept_errors.is_empty(), "accept errors: {accept_errors:?}");
}

/// Arbitrary client bytes against the server side of the handshake.
pub fn handshake(data: &[u8]) {
    run_handshake(live(), data);
}

/// The same against a server that requires a client certificate.
pub fn handshake_mtls(data: &[u8]) {
    run_handshake(live_mtls(), data);
}

// ---------------------------------------------------------------------------
// After the handshake

/// Completes a real handshake, then, by the first byte:
/// 0: sends the rest as raw bytes (forged records): the application must
///    read no plaintext, and its read must end with an error;
/// 1: sends the rest as application data and close_notify: the application
///    reads exactly those bytes, then the clean end; it echoes them, and
///    the client reads them back;
/// 2: the second byte splits the rest: the head as application data, the
///    tail as raw bytes: the application reads exactly the head, then an
///    error.
pub fn post_handshake(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let live = live();
    let (sent, raw): (&[u8], &[u8]) = match mode % 3 {
        0 => (&[], rest),
        1 => (rest, &[]),
        _ => match rest.split_first() {
            Some((&at, rest)) => rest.split_at((at as usize).min(rest.len())),
            None => (&[], &[]),
        },
    };
    let clean = mode % 3 == 1;

    let mut tcp = TcpStream::connect(("127.0.0.1", live.port)).expect("connect");
    let port = tcp.local_addr().unwrap().port();
    tcp.set_read_timeout(Some(BOUND)).unwrap();
    tcp.set_write_timeout(Some(BOUND)).unwrap();
    let mut client = ClientConnection::new(
        live.client_config.clone(),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    while client.is_handshaking() {
        client
            .complete_io(&mut tcp)
            .expect("handshake with a good client");
    }
    let story = live.log.take_story(port);
    assert_eq!(
        story.last().unwrap().kind,
        EventKind::PendingConnectionAvailable,
        "{story:?}"
    );
    assert_eq!(
        live.server.wait_for_new_connection(Some(BOUND)),
        WaitOutcome::Ready
    );
    let connection = live.server.next_pending_connection().expect("queued");
    assert_eq!(connection.peer_addr().port(), port);

    // The client's side runs on its own thread: it may block writing
    // while the server has not read yet.
    let (sent_owned, raw_owned) = (sent.to_vec(), raw.to_vec());
    let mut client_tcp = tcp.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut stream = rustls::Stream::new(&mut client, &mut client_tcp);
        if !sent_owned.is_empty() {
            stream.write_all(&sent_owned).expect("client write");
        }
        if clean {
            stream.conn.send_close_notify();
        }
        while stream.conn.wants_write() {
            stream.conn.write_tls(stream.sock).expect("client flush");
        }
        let _ = client_tcp.write_all(&raw_owned);
        if !clean {
            let _ = client_tcp.shutdown(Shutdown::Write);
        }
        client
    });

    // The application's side.
    let mut received = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let ending = loop {
        assert!(
            connection.wait_for_ready_read(Some(BOUND))
                || connection.state() != sslserver::SocketState::Connected
                || connection.bytes_available() > 0,
            "read hangs after {} bytes",
            received.len()
        );
        match connection.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    let mut client = writer.join().expect("client thread");
    assert!(
        received == sent,
        "the application read {} bytes, {} were sent",
        received.len(),
        sent.len()
    );
    if clean {
        ending.expect("close_notify is a clean end");
        // Echo back, close, and check the client gets it all.
        connection.write(&received).expect("echo");
        connection.disconnect_from_host().expect("close_notify");
        let mut echoed = Vec::new();
        let mut stream = rustls::Stream::new(&mut client, &mut tcp);
        match stream.read_to_end(&mut echoed) {
            Ok(_) => {}
            Err(e) => panic!("client read of the echo: {e}"),
        }
        assert!(echoed == sent, "the echo differs");
    } else {
        let err = ending.expect_err("forged or truncated input is no clean end");
        assert!(
            matches!(
                err.kind(),
                ErrorKind::Tls | ErrorKind::Closed | ErrorKind::Io
            ),
            "{err:?}"
        );
    }
    connection.release();
}
