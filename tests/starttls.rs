//! QSslSocket's own server pattern and STARTTLS: a socket from a
//! descriptor or a plain connection, plain I/O, then an upgrade on the
//! calling thread with the socket's own events; bad descriptors, starts in
//! the wrong state, deadlines, and no STARTTLS injection.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use sslserver::ffi::sslserver_result::*;
use sslserver::ffi::upgrade::*;
use sslserver::{
    connect, start_client_encryption, start_server_encryption, AlertType, Connection, ErrorKind,
    EventKind, PeerVerifyMode, SocketError, SslErrorCode, SslMode, TlsConfig,
};

/// What a socket's callbacks saw.
#[derive(Clone, Debug)]
struct Seen {
    kind: EventKind,
    ssl_errors: Vec<SslErrorCode>,
    alert: Option<AlertType>,
    socket_error: SocketError,
}

/// Registers a recording callback for every kind a socket reports.
fn record(socket: &Arc<Connection>) -> Arc<Mutex<Vec<Seen>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    for kind in (0..20).filter_map(EventKind::from_raw) {
        if matches!(
            kind,
            EventKind::NewConnection
                | EventKind::PendingConnectionAvailable
                | EventKind::AcceptError
        ) {
            continue;
        }
        let seen = seen.clone();
        socket.set_callback(
            kind,
            Some(Arc::new(move |event: &sslserver::Event<'_>| {
                seen.lock().unwrap().push(Seen {
                    kind: event.kind,
                    ssl_errors: event.ssl_errors.iter().map(|e| e.code).collect(),
                    alert: event.alert.map(|(_, alert)| alert),
                    socket_error: event.socket_error,
                });
            })),
        );
    }
    seen
}

fn kinds(seen: &Mutex<Vec<Seen>>) -> Vec<EventKind> {
    seen.lock().unwrap().iter().map(|s| s.kind).collect()
}

/// A connected pair: the application's accepted stream and its client.
fn accepted_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    client.set_read_timeout(Some(SOON)).unwrap();
    (accepted, client)
}

/// The accepted stream's descriptor made into a socket, as C does it.
fn socket_from_descriptor(stream: TcpStream) -> Arc<Connection> {
    let mut socket = std::ptr::null_mut();
    assert_eq!(
        sslsocket_new_from_descriptor(stream.into_raw_fd(), &mut socket),
        SSLSERVER_OK
    );
    // SAFETY (test): the pointer is an Arc from the call above.
    unsafe { Arc::from_raw(socket.cast_const()) }
}

fn read_line(socket: &Connection) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        match socket.read(&mut byte).unwrap() {
            0 => break,
            _ => line.push(byte[0]),
        }
    }
    String::from_utf8(line).unwrap()
}

/// A rustls client finishing its handshake over an existing stream.
fn tls_client_over(tcp: TcpStream, config: Arc<rustls::ClientConfig>) -> std::io::Result<Client> {
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// The pattern of QSslSocket's documentation: the application accepts,
/// wraps the descriptor, talks plain, then starts server encryption.
#[test]
fn a_wrapped_descriptor_talks_plain_then_upgrades_as_the_server() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let ca = TestCa::new("ca");
        let config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
        let (accepted, mut client) = accepted_pair();
        let socket = socket_from_descriptor(accepted);
        assert_eq!(
            sslsocket_mode(Arc::as_ptr(&socket)),
            SslSocketMode::SSLSOCKET_UNENCRYPTED_MODE
        );
        assert!(sslsocket_descriptor(Arc::as_ptr(&socket)) >= 0);
        let seen = record(&socket);
        let server = thread::spawn({
            let socket = socket.clone();
            move || {
                assert_eq!(read_line(&socket), "STARTTLS\r\n");
                socket.write(b"220 go ahead\r\n").unwrap();
                start_server_encryption(&socket, &config, 10_000).unwrap();
                let mut buf = [0u8; 64];
                let n = socket.read(&mut buf).unwrap();
                socket.write(&buf[..n]).unwrap();
            }
        });
        client.write_all(b"STARTTLS\r\n").unwrap();
        let mut reply = String::new();
        BufReader::new(&client).read_line(&mut reply).unwrap();
        assert_eq!(reply, "220 go ahead\r\n");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.identity.cert_der.clone()).unwrap();
        let tls = rustls::ClientConfig::builder_with_protocol_versions(&[version])
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut tls = tls_client_over(client, Arc::new(tls)).unwrap();
        assert_eq!(echo_roundtrip(&mut tls, b"secret"), b"secret");
        server.join().unwrap();
        assert!(socket.is_encrypted());
        assert_eq!(socket.mode(), SslMode::Server);
        assert_eq!(
            kinds(&seen),
            [
                EventKind::ModeChanged,
                EventKind::StartedEncryptionHandshake,
                EventKind::Encrypted
            ],
            "{version:?}"
        );
    }
}

/// Client certificates on an upgraded socket: the events and decisions of
/// the server's table, reported to the socket.
#[test]
fn client_certificates_on_an_upgrade_follow_the_servers_event_table() {
    let ca = TestCa::new("ca");
    let stranger = self_signed("stranger");
    for mode in [PeerVerifyMode::QueryPeer, PeerVerifyMode::VerifyPeer] {
        let config = server_config(&ca.server(), mode, Some(&ca));
        let (accepted, client) = accepted_pair();
        let socket = socket_from_descriptor(accepted);
        let seen = record(&socket);
        let server = thread::spawn({
            let socket = socket.clone();
            move || start_server_encryption(&socket, &config, 10_000)
        });
        let tls = client_config(&ca.identity.cert_der, Some(&stranger), &[]);
        let mut client = tls_client_over(client, tls).unwrap();
        let outcome = server.join().unwrap();
        let errors = [SslErrorCode::SelfSignedCertificate];
        match mode {
            PeerVerifyMode::QueryPeer => {
                outcome.unwrap();
                assert_eq!(echo_roundtrip_with(&socket, &mut client), b"ping");
                assert_eq!(
                    kinds(&seen),
                    [
                        EventKind::ModeChanged,
                        EventKind::StartedEncryptionHandshake,
                        EventKind::PeerVerifyError,
                        EventKind::SslErrors,
                        EventKind::Encrypted
                    ]
                );
            }
            _ => {
                let err = outcome.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
                assert_eq!(socket.error().0, SocketError::SslHandshakeFailed);
                assert_eq!(
                    kinds(&seen),
                    [
                        EventKind::ModeChanged,
                        EventKind::StartedEncryptionHandshake,
                        EventKind::PeerVerifyError,
                        EventKind::SslErrors,
                        EventKind::AlertSent,
                        EventKind::ErrorOccurred
                    ]
                );
                assert_eq!(seen.lock().unwrap()[4].alert, Some(AlertType::UnknownCa));
                assert_eq!(sslsocket_descriptor(Arc::as_ptr(&socket)), -1);
                let mut byte = [0u8; 1];
                assert!(client.read(&mut byte).is_err(), "the client was refused");
            }
        }
        assert_eq!(seen.lock().unwrap()[3].ssl_errors, errors);
        assert_eq!(socket.ssl_handshake_errors(), errors);
        assert_eq!(
            socket.peer_certificate_chain(),
            std::slice::from_ref(&stranger.cert_der)
        );
    }
}

fn echo_roundtrip_with(socket: &Arc<Connection>, client: &mut Client) -> Vec<u8> {
    let echo = thread::spawn({
        let socket = socket.clone();
        move || {
            let mut buf = [0u8; 4];
            let n = socket.read(&mut buf).unwrap();
            socket.write(&buf[..n]).unwrap();
        }
    });
    let back = echo_roundtrip(client, b"ping");
    echo.join().unwrap();
    back
}

/// The library on both ends: a plain connection, a line each way, then
/// client and server encryption, and the client's own events.
#[test]
fn the_library_upgrades_both_ends_and_resumes_with_the_same_config() {
    let ca = TestCa::new("ca");
    let server_tls = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    let mut client_tls = TlsConfig::new();
    client_tls
        .add_ca_certificates_pem(ca.identity.cert_pem.as_bytes())
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let mut resumed = Vec::new();
        for _ in 0..2 {
            let (accepted, _) = listener.accept().unwrap();
            let socket = socket_from_descriptor(accepted);
            socket.write(b"220 ready\r\n").unwrap();
            assert_eq!(read_line(&socket), "STARTTLS\r\n");
            start_server_encryption(&socket, &server_tls, 10_000).unwrap();
            socket.write(b"250 encrypted\r\n").unwrap();
            resumed.push(socket.session().unwrap().resumed);
            let mut rest = [0u8; 1];
            // The client's close_notify ends the session cleanly.
            assert_eq!(socket.read(&mut rest).unwrap(), 0);
        }
        resumed
    });
    for round in 0..2 {
        let socket = connect("localhost", port, 10_000).unwrap();
        assert_eq!(socket.mode(), SslMode::Unencrypted);
        let seen = record(&socket);
        assert_eq!(read_line(&socket), "220 ready\r\n");
        socket.write(b"STARTTLS\r\n").unwrap();
        start_client_encryption(&socket, &client_tls, None, 10_000).unwrap();
        assert_eq!(socket.mode(), SslMode::Client);
        assert_eq!(read_line(&socket), "250 encrypted\r\n");
        let mut want = vec![
            EventKind::ModeChanged,
            EventKind::StartedEncryptionHandshake,
            EventKind::Encrypted,
        ];
        if round == 0 {
            // The tickets came with the line just read.
            want.push(EventKind::NewSessionTicketReceived);
            assert_eq!(kinds(&seen)[..3], want[..3]);
            assert!(kinds(&seen)[3..]
                .iter()
                .all(|k| *k == EventKind::NewSessionTicketReceived));
            assert!(
                kinds(&seen).len() > 3,
                "no ticket reported: {:?}",
                kinds(&seen)
            );
        }
        socket.disconnect_from_host().unwrap();
        socket.release();
    }
    assert_eq!(server.join().unwrap(), [false, true]);
}

/// The library as a STARTTLS client of `openssl s_server` (no plain part),
/// with the name it connected to verified; a wrong name is refused with the
/// socket's error events.
#[test]
fn a_plain_connection_upgrades_against_openssl_s_server() {
    let ca = TestCa::new("ca");
    let identity = ca.server();
    let cert = temp_file("starttls-s-server-cert.pem", identity.cert_pem.as_bytes());
    let key = temp_file("starttls-s-server-key.pem", identity.key_pem.as_bytes());
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut s_server = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-rev",
            "-cert",
        ])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = poll_until(SOON, || TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(started.is_some(), "openssl s_server did not start");
    let mut config = TlsConfig::new();
    config
        .add_ca_certificates_pem(ca.identity.cert_pem.as_bytes())
        .unwrap();
    let socket = connect("127.0.0.1", port, 10_000).unwrap();
    start_client_encryption(&socket, &config, Some("localhost"), 10_000).unwrap();
    socket.write(b"olleh\n").unwrap();
    assert_eq!(read_line(&socket), "hello\n");
    socket.release();

    let wrong = connect("127.0.0.1", port, 10_000).unwrap();
    let seen = record(&wrong);
    let err = start_client_encryption(&wrong, &config, Some("example.org"), 10_000).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls);
    assert!(err.to_string().contains("HostNameMismatch"), "{err}");
    assert_eq!(
        kinds(&seen),
        [
            EventKind::ModeChanged,
            EventKind::StartedEncryptionHandshake,
            EventKind::PeerVerifyError,
            EventKind::SslErrors,
            EventKind::AlertSent,
            EventKind::ErrorOccurred
        ]
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[4].alert, Some(AlertType::BadCertificate));
    assert_eq!(seen[5].socket_error, SocketError::SslHandshakeFailed);
    assert_eq!(
        wrong.ssl_handshake_errors(),
        [SslErrorCode::HostNameMismatch]
    );
    assert_eq!(wrong.error().0, SocketError::SslHandshakeFailed);
    let _ = s_server.kill();
    let _ = s_server.wait();
}

/// An SSL_ERRORS callback of the socket may accept the server's
/// certificate (`ignoreSslErrors` from `sslErrors`), as on a server.
#[test]
fn a_client_socket_callback_may_accept_the_servers_certificate() {
    let ca = TestCa::new("ca");
    let server_tls = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        for _ in 0..2 {
            let (accepted, _) = listener.accept().unwrap();
            let socket = socket_from_descriptor(accepted);
            let _ = start_server_encryption(&socket, &server_tls, 10_000);
        }
    });
    for accept in [false, true] {
        // No CA configured: the server's certificate is untrusted.
        let socket = connect("localhost", port, 10_000).unwrap();
        socket.set_callback(
            EventKind::SslErrors,
            Some(Arc::new(move |event: &sslserver::Event<'_>| {
                if accept {
                    event.connection.unwrap().ignore_ssl_errors();
                }
            })),
        );
        let outcome = start_client_encryption(&socket, &TlsConfig::new(), None, 10_000);
        assert_eq!(outcome.is_ok(), accept, "{outcome:?}");
        assert_eq!(
            socket.ssl_handshake_errors(),
            [SslErrorCode::UnableToGetLocalIssuerCertificate]
        );
    }
    server.join().unwrap();
}

/// A start against a peer that says nothing ends at its deadline, and the
/// socket is closed with SocketTimeout.
#[test]
fn a_start_against_a_silent_peer_ends_at_its_deadline() {
    let ca = TestCa::new("ca");
    let config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    let (accepted, _silent_client) = accepted_pair();
    let socket = socket_from_descriptor(accepted);
    let seen = record(&socket);
    let started = Instant::now();
    let err = start_server_encryption(&socket, &config, 200).unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        took >= Duration::from_millis(200) && took < SOON,
        "{took:?}"
    );
    assert_eq!(socket.error().0, SocketError::SocketTimeout);
    assert_eq!(
        kinds(&seen),
        [EventKind::ModeChanged, EventKind::ErrorOccurred]
    );
    assert_eq!(sslsocket_descriptor(Arc::as_ptr(&socket)), -1);

    // The client side: a server that accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let socket = connect("127.0.0.1", port, 10_000).unwrap();
    let err =
        start_client_encryption(&socket, &TlsConfig::new(), Some("localhost"), 200).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(socket.error().0, SocketError::SocketTimeout);
    drop(listener);
}

/// STARTTLS injection (CVE-2011-0411 class): a man in the middle appends
/// `NOOP` behind `STARTTLS` in the same packet. Those bytes are the start of
/// the TLS stream: the handshake fails, and no reply to NOOP is ever sent.
#[test]
fn commands_pipelined_behind_starttls_fail_the_handshake() {
    let ca = TestCa::new("ca");
    let config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    let (accepted, mut client) = accepted_pair();
    let socket = socket_from_descriptor(accepted);
    let server = thread::spawn({
        let socket = socket.clone();
        move || {
            // An application reading one line at a time, as SMTP servers do.
            assert_eq!(read_line(&socket), "STARTTLS\r\n");
            socket.write(b"220 Ready to start TLS\r\n").unwrap();
            let outcome = start_server_encryption(&socket, &config, 10_000);
            // Whatever happens, a NOOP must never be seen as a command.
            if outcome.is_ok() {
                let line = read_line(&socket);
                socket.write(format!("250 {line}").as_bytes()).unwrap();
            }
            outcome
        }
    });
    client.write_all(b"STARTTLS\r\nNOOP\r\n").unwrap();
    let err = server.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert_eq!(socket.error().0, SocketError::SslHandshakeFailed);
    let mut received = Vec::new();
    let _ = client.read_to_end(&mut received);
    assert!(
        received.starts_with(b"220 Ready to start TLS\r\n"),
        "{received:?}"
    );
    assert!(
        !received.windows(3).any(|w| w == b"250"),
        "a reply to the injected command went out: {received:?}"
    );
    let mut buf = [0u8; 16];
    assert!(
        socket.read(&mut buf).is_err(),
        "the injected bytes became data"
    );
}

/// Descriptors that are not connected TCP sockets are refused, saying why,
/// and stay the caller's.
#[test]
fn bad_descriptors_are_refused_and_left_open() {
    let file = std::fs::File::open("/dev/null").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (unix, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let unconnected =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let closed = {
        let (stream, _) = accepted_pair();
        stream.as_raw_fd()
    };
    let cases = [
        (-1, "is not a descriptor"),
        (closed, "is not open"),
        (file.as_raw_fd(), "is not a socket"),
        (listener.as_raw_fd(), "listening"),
        (udp.as_raw_fd(), "not a stream socket"),
        (unix.as_raw_fd(), "not a TCP socket"),
        (unconnected.as_raw_fd(), "not connected"),
    ];
    for (fd, why) in cases {
        let mut socket = std::ptr::null_mut();
        assert_eq!(
            sslsocket_new_from_descriptor(fd, &mut socket),
            SSLSERVER_ERROR_INVALID_ARGUMENT,
            "{why}"
        );
        assert!(socket.is_null());
        let message = last_error();
        assert!(message.contains(why), "{why}: {message}");
        if fd >= 0 && fd != closed {
            // SAFETY (test): fcntl only queries the descriptor.
            assert_ne!(
                unsafe { libc::fcntl(fd, libc::F_GETFD) },
                -1,
                "{why}: closed"
            );
        }
    }
}

fn last_error() -> String {
    // SAFETY (test): the library returns a NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(sslserver::ffi::sslserver_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

/// A start on a socket that is already encrypted, being encrypted or closed
/// is INVALID_STATE and changes nothing; plain I/O ends cleanly.
#[test]
fn starts_in_the_wrong_state_are_invalid_and_plain_io_ends_cleanly() {
    let ca = TestCa::new("ca");
    let config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);

    // Plain I/O, then the peer's close: 0 bytes, like a clean close.
    let (accepted, mut client) = accepted_pair();
    let socket = socket_from_descriptor(accepted);
    client.write_all(b"abc").unwrap();
    assert!(socket.wait_for_ready_read(Some(SOON)));
    assert_eq!(socket.bytes_available(), 3);
    let mut buf = [0u8; 8];
    assert_eq!(socket.read(&mut buf).unwrap(), 3);
    assert!(!socket.wait_for_ready_read(Some(Duration::from_millis(50))));
    drop(client);
    assert_eq!(socket.read(&mut buf).unwrap(), 0);
    assert_eq!(
        start_server_encryption(&socket, &config, 1000)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidState
    );

    // Aborted: closed, so no start.
    let (accepted, _client) = accepted_pair();
    let socket = socket_from_descriptor(accepted);
    socket.abort();
    assert_eq!(sslsocket_descriptor(Arc::as_ptr(&socket)), -1);
    assert_eq!(
        start_server_encryption(&socket, &config, 1000)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidState
    );
    assert_eq!(socket.mode(), SslMode::Unencrypted);

    // Encrypted: a second start is refused; so is a server's socket.
    let server = TestServer::start(&config);
    let _client = connect_tls(&server, &ca);
    let accepted = server.accept_one();
    assert_eq!(accepted.mode(), SslMode::Server);
    assert_eq!(
        start_server_encryption(&accepted, &config, 1000)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidState
    );
    let mut verify_none = TlsConfig::new();
    verify_none.set_peer_verify_mode(PeerVerifyMode::VerifyNone);
    assert_eq!(
        start_client_encryption(&accepted, &verify_none, None, 1000)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidState
    );
}

fn connect_tls(server: &TestServer, ca: &TestCa) -> Client {
    common::connect(server.port, client_config(&ca.identity.cert_der, None, &[])).unwrap()
}

/// A socket from a descriptor has no host name to verify: a client start
/// needs one, unless nothing is verified.
#[test]
fn a_client_start_on_a_descriptor_needs_a_name_to_verify() {
    let (accepted, _peer) = accepted_pair();
    let socket = socket_from_descriptor(accepted);
    let err = start_client_encryption(&socket, &TlsConfig::new(), None, 1000).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("peer_verify_name"), "{err}");
    assert_eq!(
        socket.mode(),
        SslMode::Unencrypted,
        "a refused start changes nothing"
    );
}

/// The callback kinds: a socket refuses a server's kinds, a server the
/// socket-only ones; the hand-written mode enum matches the library's.
#[test]
fn callback_kinds_and_the_mode_enum_are_consistent() {
    use sslserver::ffi::server::{sslserver_free, sslserver_new, sslserver_register_callback};
    let (accepted, _peer) = accepted_pair();
    let socket = socket_from_descriptor(accepted);
    let s = Arc::as_ptr(&socket).cast_mut();
    unsafe extern "C" fn ignore(
        _: *const sslserver::ffi::events::sslserver_event,
        _: *mut std::ffi::c_void,
    ) {
    }
    for kind in [
        EventKind::NewConnection,
        EventKind::PendingConnectionAvailable,
        EventKind::AcceptError,
    ] {
        assert_eq!(
            sslsocket_register_callback(s, kind as i32, Some(ignore), std::ptr::null_mut()),
            SSLSERVER_ERROR_INVALID_ARGUMENT
        );
    }
    assert_eq!(
        sslsocket_register_callback(
            s,
            EventKind::Encrypted as i32,
            Some(ignore),
            std::ptr::null_mut()
        ),
        SSLSERVER_OK
    );
    let server = sslserver_new();
    for kind in [
        EventKind::Encrypted,
        EventKind::ModeChanged,
        EventKind::NewSessionTicketReceived,
    ] {
        assert_eq!(
            sslserver_register_callback(server, kind as i32, Some(ignore), std::ptr::null_mut()),
            SSLSERVER_ERROR_INVALID_ARGUMENT
        );
    }
    sslserver_free(server);
    let header =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/sslserver.h"))
            .unwrap();
    for (name, value) in [
        (
            "SSLSOCKET_UNENCRYPTED_MODE",
            SslSocketMode::SSLSOCKET_UNENCRYPTED_MODE as i32,
        ),
        (
            "SSLSOCKET_CLIENT_MODE",
            SslSocketMode::SSLSOCKET_CLIENT_MODE as i32,
        ),
        (
            "SSLSOCKET_SERVER_MODE",
            SslSocketMode::SSLSOCKET_SERVER_MODE as i32,
        ),
    ] {
        assert!(header.contains(&format!("{name} = {value},")), "{name}");
    }
}

/// Ticket events come from reads only: a getter that happens to take the
/// tickets in (is_encrypted, state, bytes_available) never runs a callback,
/// so an application may call getters holding its own locks.
#[test]
fn ticket_events_come_from_reads_not_from_getters() {
    let ca = TestCa::new("ca");
    let server_tls = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    let mut client_tls = TlsConfig::new();
    client_tls
        .add_ca_certificates_pem(ca.identity.cert_pem.as_bytes())
        .unwrap();
    let (accepted, client) = accepted_pair();
    let server = thread::spawn(move || {
        let socket = socket_from_descriptor(accepted);
        start_server_encryption(&socket, &server_tls, 10_000).unwrap();
        let mut byte = [0u8; 1];
        let _ = socket.read(&mut byte);
    });
    let socket = sslserver::upgrade::wrap(client)
        .map_err(|(e, _)| e)
        .unwrap();
    let seen = record(&socket);
    start_client_encryption(&socket, &client_tls, Some("localhost"), 10_000).unwrap();
    // Wait, without taking anything in, until the tickets are on the socket.
    let mut poll = libc::pollfd {
        fd: sslsocket_descriptor(Arc::as_ptr(&socket)),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY (test): one valid pollfd.
    assert_eq!(unsafe { libc::poll(&mut poll, 1, 30_000) }, 1);
    let before = kinds(&seen).len();
    assert!(socket.is_encrypted());
    assert_eq!(socket.bytes_available(), 0);
    assert_eq!(kinds(&seen).len(), before, "a getter ran a callback");
    assert!(!socket.wait_for_ready_read(Some(Duration::from_millis(10))));
    assert!(
        kinds(&seen)[before..].contains(&EventKind::NewSessionTicketReceived),
        "the read did not report the tickets: {:?}",
        kinds(&seen)
    );
    socket.disconnect_from_host().unwrap();
    server.join().unwrap();
}

/// The client direction of injection: bytes a server (or a man in the
/// middle) sends behind its go-ahead are the start of the TLS stream: the
/// start fails, and they never come back from a read.
#[test]
fn a_reply_injected_behind_the_go_ahead_fails_the_client_start() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut peer, _) = listener.accept().unwrap();
        peer.write_all(b"220 ready\r\n250 injected\r\n").unwrap();
        peer.set_read_timeout(Some(SOON)).unwrap();
        // Until the client gives up.
        let _ = peer.read_to_end(&mut Vec::new());
    });
    let socket = connect("127.0.0.1", port, 10_000).unwrap();
    assert_eq!(read_line(&socket), "220 ready\r\n");
    let mut verify_none = TlsConfig::new();
    verify_none.set_peer_verify_mode(PeerVerifyMode::VerifyNone);
    let err = start_client_encryption(&socket, &verify_none, None, 10_000).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    let mut buf = [0u8; 64];
    assert!(
        socket.read(&mut buf).is_err(),
        "the injected reply became data"
    );
    socket.release();
    server.join().unwrap();
}

/// A Rust callback that panics inside a client handshake leaves nothing
/// behind on the thread: the socket is not kept alive.
#[test]
fn a_panicking_callback_does_not_keep_the_socket_alive() {
    let ca = TestCa::new("ca");
    let server_tls = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    let (accepted, client) = accepted_pair();
    let server = thread::spawn(move || {
        let socket = socket_from_descriptor(accepted);
        let _ = start_server_encryption(&socket, &server_tls, 10_000);
    });
    let socket = sslserver::upgrade::wrap(client)
        .map_err(|(e, _)| e)
        .unwrap();
    socket.set_callback(
        EventKind::SslErrors,
        Some(Arc::new(|_: &sslserver::Event<'_>| {
            panic!("callback panics")
        })),
    );
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        start_client_encryption(&socket, &TlsConfig::new(), Some("localhost"), 10_000)
    }));
    assert!(outcome.is_err(), "the callback's panic went through");
    socket.set_callback(EventKind::SslErrors, None);
    socket.abort();
    server.join().unwrap();
    assert_eq!(
        Arc::strong_count(&socket),
        1,
        "the thread still holds the socket"
    );
}
