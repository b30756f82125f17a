//! Garbage from clients: plaintext protocols, random bytes, broken,
//! truncated, oversized and empty records, obsolete hellos, huge handshake
//! messages, and the alerts and events each must produce; corrupt records
//! after the handshake; the fuzz corpus replayed. Every bad client is cut at
//! once or at its deadline, with exactly the events of the contract's table,
//! and the server keeps serving.

mod common;
mod hostile_support;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use hostile_support::*;
use rustls::ClientConnection;
use sslserver::{AlertLevel, AlertType, EventKind::*, PeerVerifyMode, SocketError};

/// A plaintext protocol or random bytes: closed at once, no reply, and only
/// NEW_CONNECTION, ERROR_OCCURRED(SSL_HANDSHAKE_FAILED).
fn assert_dropped_as_not_tls(server: &TestServer, input: &[u8], what: &str) {
    let (port, reply, closed, took) = send_raw(server.port, input, false);
    assert!(closed, "{what}: not closed");
    // The handshake timeout is 10 s: "at once" is far less.
    assert!(
        took < Duration::from_secs(2),
        "{what}: closed after {took:?}"
    );
    assert!(reply.is_empty(), "{what}: the server answered {reply:?}");
    let events = server.events.finished(port);
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [NewConnection, ErrorOccurred], "{what}");
    assert_eq!(events[1].socket_error, SocketError::SslHandshakeFailed);
}

fn garbage_server() -> (TestCa, TestServer) {
    plain_server(|s| s.set_handshake_timeout(10_000).unwrap())
}

/// As `garbage_server`, offering TLS 1.2 only.
fn tls12_server() -> (TestCa, TestServer) {
    let ca = TestCa::new("ca");
    let mut config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    config.set_protocol(sslserver::Protocol::TlsV1_2).unwrap();
    let server = TestServer::start_with(
        &config,
        |s| s.set_handshake_timeout(10_000).unwrap(),
        |_| {},
    );
    (ca, server)
}

#[test]
fn plaintext_protocols_are_dropped_at_once() {
    let (_ca, server) = garbage_server();
    let inputs: [(&str, &[u8]); 6] = [
        (
            "HTTP/1.1",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n",
        ),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ("SMTP EHLO", b"EHLO client.example.org\r\n"),
        ("SMTP STARTTLS", b"STARTTLS\r\n"),
        ("SSH", b"SSH-2.0-OpenSSH_9.6\r\n"),
        ("a lone CR LF", b"\r\n"),
    ];
    for (what, input) in inputs {
        assert_dropped_as_not_tls(&server, input, what);
    }
    assert_nothing_else(&server);
}

#[test]
fn records_of_other_types_and_sslv2_hellos_are_not_a_tls_handshake() {
    let (_ca, server) = garbage_server();
    let inputs: [(&str, &[u8]); 4] = [
        ("change_cipher_spec", &[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]),
        ("alert", &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]),
        ("application data", &[0x17, 0x03, 0x03, 0x00, 0x03, 1, 2, 3]),
        (
            // An SSLv2-compatible ClientHello (2-byte header, msg type 1).
            "SSLv2 ClientHello",
            &[
                0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x2f,
                0x00, 0x00, 0x35, 0x00, 0x00, 0x0a, 0x07, 0x00, 0xc0, 0x00, 0x00, 0x05, 0x00, 0x80,
                0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
                0x0f, 0x10, 0x11, 0x12,
            ],
        ),
    ];
    for (what, input) in inputs {
        assert_dropped_as_not_tls(&server, input, what);
    }
    assert_nothing_else(&server);
}

#[test]
fn random_bytes_that_do_not_start_a_handshake_record_are_dropped_at_once() {
    let (_ca, server) = garbage_server();
    let seed = 0x5eed_0001;
    let mut rng = XorShift::new(seed);
    for round in 0..40 {
        let len = 1 + rng.below(3000);
        let mut input = rng.bytes(len);
        if input[0] == 0x16 {
            input[0] = 0x17;
        }
        assert_dropped_as_not_tls(&server, &input, &format!("seed {seed:#x} round {round}"));
    }
    assert_nothing_else(&server);
}

/// The story of a connection whose first byte is 0x16 and that then sends
/// garbage and half-closes: a fatal alert (the one on the wire, when it went
/// out in plaintext) and SSL_HANDSHAKE_FAILED, or, when the garbage is
/// merely incomplete, REMOTE_HOST_CLOSED. Returns the alert sent, if any.
fn assert_rejected_handshake(
    server: &TestServer,
    port: u16,
    reply: &[u8],
    what: &str,
) -> Option<AlertType> {
    let events = server.events.finished(port);
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    match kinds.as_slice() {
        [NewConnection, StartedEncryptionHandshake, AlertSent, ErrorOccurred] => {
            assert_eq!(events[3].socket_error, SocketError::SslHandshakeFailed);
            let (level, alert) = events[2].alert.expect("ALERT_SENT names its alert");
            assert_eq!(level, AlertLevel::Fatal, "{what}");
            if let Some((wire_level, wire_alert)) = first_plaintext_alert(reply) {
                assert_eq!(wire_level, 2, "{what}: a fatal alert on the wire");
                assert_eq!(
                    wire_alert, alert as u8,
                    "{what}: the event names the alert that was sent"
                );
            }
            Some(alert)
        }
        [NewConnection, StartedEncryptionHandshake, ErrorOccurred] => {
            assert_eq!(
                events[2].socket_error,
                SocketError::RemoteHostClosed,
                "{what}: without an alert, only the client's close ends it: {events:#?}"
            );
            assert!(reply.is_empty() || first_plaintext_alert(reply).is_none());
            None
        }
        _ => panic!("{what}: unexpected story {events:#?}"),
    }
}

#[test]
fn random_bytes_inside_a_handshake_record_get_an_alert_or_a_close() {
    let (_ca, server) = garbage_server();
    let seed = 0x5eed_0002;
    let mut rng = XorShift::new(seed);
    let mut alerts: HashMap<String, usize> = HashMap::new();
    for round in 0..60 {
        let len = rng.below(2000);
        let mut input = vec![0x16];
        // Half of them get a plausible record header, so the garbage reaches
        // the handshake layer.
        if round % 2 == 0 {
            input.extend_from_slice(&[0x03, 0x01]);
            input.extend_from_slice(&(len as u16).to_be_bytes());
        }
        input.extend(rng.bytes(len));
        let what = format!("seed {seed:#x} round {round}");
        let (port, reply, closed, _) = send_raw(server.port, &input, true);
        assert!(closed, "{what}: not closed");
        let alert = assert_rejected_handshake(&server, port, &reply, &what);
        *alerts.entry(format!("{alert:?}")).or_default() += 1;
    }
    eprintln!("outcomes: {alerts:?}");
    assert_nothing_else(&server);
}

#[test]
fn truncated_records_end_with_the_clients_close_or_at_the_deadline() {
    let (_ca, server) = plain_server(|s| s.set_handshake_timeout(500).unwrap());
    let hello = client_hello();
    // Cut inside the header, right after it, inside the handshake header,
    // inside the body and one byte short.
    for cut in [1, 3, 5, 7, hello.len() / 2, hello.len() - 1] {
        let (port, reply, closed, _) = send_raw(server.port, &hello[..cut], true);
        assert!(closed && reply.is_empty(), "cut at {cut}: {reply:?}");
        let events = server.events.finished(port);
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [NewConnection, StartedEncryptionHandshake, ErrorOccurred],
            "cut at {cut}"
        );
        assert_eq!(events[2].socket_error, SocketError::RemoteHostClosed);
    }
    // A client that stays connected after a truncated record is cut at the deadline.
    let started = Instant::now();
    let mut tcp = server.tcp();
    let port = tcp.local_addr().unwrap().port();
    tcp.write_all(&hello[..hello.len() - 1]).unwrap();
    assert!(closed_by_server(&mut tcp));
    assert!(started.elapsed() >= Duration::from_millis(500));
    let events = server.events.finished(port);
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [NewConnection, StartedEncryptionHandshake, ErrorOccurred]
    );
    assert_eq!(events[2].socket_error, SocketError::SocketTimeout);
    assert_nothing_else(&server);
}

/// Sends `input` and half-closes; expects a fatal alert among `allowed`.
fn assert_alert(server: &TestServer, input: &[u8], allowed: &[AlertType], what: &str) {
    let (port, reply, closed, took) = send_raw(server.port, input, true);
    assert!(closed, "{what}: not closed");
    assert!(took < Duration::from_secs(3), "{what}: took {took:?}");
    let alert = assert_rejected_handshake(server, port, &reply, what);
    let alert = alert.unwrap_or_else(|| panic!("{what}: no alert was sent"));
    assert!(
        first_plaintext_alert(&reply).is_some(),
        "{what}: the alert is on the wire: {reply:?}"
    );
    let error = server.events.of(port).last().unwrap().description.clone();
    assert!(
        allowed.contains(&alert),
        "{what}: sent {alert:?}, expected one of {allowed:?} ({error})"
    );
    eprintln!("{what}: {alert:?} ({error})");
}

#[test]
fn oversized_records_get_a_fatal_alert() {
    let (_ca, server) = garbage_server();
    let record = |len: usize, fill: usize| {
        let mut r = vec![0x16, 0x03, 0x01];
        r.extend_from_slice(&(len as u16).to_be_bytes());
        r.extend(std::iter::repeat_n(0u8, fill));
        r
    };
    // RFC 8446 5.1/5.2: a TLSPlaintext fragment is at most 2^14 bytes and a
    // TLSCiphertext one at most 2^14 + 256; a longer record gets
    // record_overflow. rustls rejects lengths >= 2^14 + 2048 from the
    // header alone (decode_error) and checks shorter ones once they are
    // complete.
    let overflow = [AlertType::RecordOverflow, AlertType::DecodeError];
    assert_alert(
        &server,
        &record(0xffff, 100),
        &overflow,
        "the header of a 65535-byte record",
    );
    assert_alert(
        &server,
        &record(16384 + 2048, 0),
        &overflow,
        "the header of an 18432-byte record",
    );
    // The whole record sent: too long for a TLSPlaintext, and its zeros are
    // no ClientHello either.
    let too_long = 16384 + 256 + 1;
    let any_fatal = [
        AlertType::RecordOverflow,
        AlertType::DecodeError,
        AlertType::UnexpectedMessage,
        AlertType::IllegalParameter,
        AlertType::HandshakeFailure,
    ];
    assert_alert(
        &server,
        &record(too_long, too_long),
        &any_fatal,
        "a whole 16641-byte record of zeros",
    );
    // Only the header of a 16641-byte record, then the client's close:
    // either an alert at once, or (rustls waits for the rest of a record
    // shorter than 2^14 + 2048) the client's close ends it.
    let (port, reply, closed, _) = send_raw(server.port, &record(too_long, 0), true);
    assert!(closed);
    let alert = assert_rejected_handshake(&server, port, &reply, "a 16641-byte header");
    eprintln!("the header of a 16641-byte record, then EOF: {alert:?}");
    assert_nothing_else(&server);
}

#[test]
fn a_handshake_message_claiming_more_than_64_kib_gets_a_fatal_alert() {
    let (_ca, server) = garbage_server();
    for (what, claimed) in [
        ("65537-byte ClientHello", 0x01_0001u32),
        ("16 MiB ClientHello", 0xff_ffff),
    ] {
        // A record holding a ClientHello header whose length is too large,
        // and a few bytes of it.
        let mut message = vec![0x01];
        message.extend_from_slice(&claimed.to_be_bytes()[1..]);
        message.extend_from_slice(&[0x03, 0x03, 0, 0, 0, 0]);
        let mut input = vec![0x16, 0x03, 0x01];
        input.extend_from_slice(&(message.len() as u16).to_be_bytes());
        input.extend_from_slice(&message);
        assert_alert(
            &server,
            &input,
            &[AlertType::DecodeError, AlertType::RecordOverflow],
            what,
        );
    }
    assert_nothing_else(&server);
}

#[test]
fn a_huge_handshake_message_in_the_clients_second_tls12_flight_gets_a_fatal_alert() {
    // TLS 1.2 sends the whole handshake in plaintext until ChangeCipherSpec,
    // so after the server's first flight an alert still goes out in the
    // clear: a ClientKeyExchange claiming 65537 bytes must get one too.
    let (ca, server) = tls12_server();
    let mut input = tls12_client_hello(&ca);
    // ClientKeyExchange (16) claiming 65537 bytes.
    input.extend_from_slice(&[
        0x16, 0x03, 0x03, 0x00, 0x08, 0x10, 0x01, 0x00, 0x01, 1, 2, 3, 4,
    ]);
    let mut tcp = server.tcp();
    let port = tcp.local_addr().unwrap().port();
    // The ClientHello first, so the server answers it before it reads on.
    let split = input.len() - 13;
    tcp.write_all(&input[..split]).unwrap();
    server.events.wait_until("STARTED", |events| {
        events
            .iter()
            .any(|e| e.peer_port == Some(port) && e.kind == StartedEncryptionHandshake)
    });
    thread::sleep(Duration::from_millis(200));
    tcp.write_all(&input[split..]).unwrap();
    let _ = tcp.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    tcp.set_read_timeout(Some(SOON)).unwrap();
    let _ = std::io::Read::read_to_end(&mut tcp, &mut reply);
    let alert = assert_rejected_handshake(&server, port, &reply, "a 65537-byte ClientKeyExchange");
    eprintln!(
        "65537-byte ClientKeyExchange: {alert:?}, wire {:?}",
        first_plaintext_alert(&reply)
    );
    assert!(alert.is_some(), "a fatal alert is sent");
    assert_nothing_else(&server);
}

/// A rustls client's TLS 1.2-only ClientHello, trusting `ca`.
fn tls12_client_hello(ca: &TestCa) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.identity.cert_der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut conn =
        ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// Sends a ClientHello and, in the same segment, a record claiming a
/// 65537-byte handshake message. rustls answers the hello (queues the
/// server's flight) and then refuses the record. Returns the records the
/// client got, as (content type, payload), and the alert ALERT_SENT named.
fn huge_message_behind_the_hello(
    server: &TestServer,
    hello: Vec<u8>,
    what: &str,
) -> (Vec<(u8, Vec<u8>)>, Option<AlertType>) {
    let mut input = hello;
    // ClientKeyExchange (16) claiming 65537 bytes.
    input.extend_from_slice(&[
        0x16, 0x03, 0x03, 0x00, 0x08, 0x10, 0x01, 0x00, 0x01, 1, 2, 3, 4,
    ]);
    let (port, reply, closed, _) = send_raw(server.port, &input, true);
    assert!(closed, "{what}: not closed");
    let records = tls_records(&reply)
        .into_iter()
        .map(|r| (r.content_type, r.payload))
        .collect();
    let alert = assert_rejected_handshake(server, port, &reply, what);
    assert_nothing_else(server);
    (records, alert)
}

#[test]
fn a_huge_handshake_message_right_behind_a_tls12_client_hello_gets_the_alert_it_reports() {
    // rustls queues no alert for this in TLS 1.2. Nothing has gone out yet,
    // so the library sends a plaintext alert, alone: no flight the client
    // would answer.
    let (ca, server) = tls12_server();
    let (records, alert) =
        huge_message_behind_the_hello(&server, tls12_client_hello(&ca), "TLS 1.2");
    assert_eq!(
        records,
        [(0x15, vec![2, AlertType::DecodeError as u8])],
        "one plaintext fatal alert, nothing else"
    );
    assert_eq!(alert, Some(AlertType::DecodeError));
}

#[test]
fn a_huge_handshake_message_right_behind_a_tls13_client_hello_gets_the_alert_it_reports() {
    // In TLS 1.3 everything after the ClientHello must be protected, so the
    // record fails to decrypt. rustls sends its flight and then an
    // encrypted bad_record_mac: a 19-byte application_data record (2 bytes
    // of alert, the inner content type, a 16-byte tag), which ALERT_SENT
    // reports.
    let (_ca, server) = garbage_server();
    let (records, alert) = huge_message_behind_the_hello(&server, client_hello(), "TLS 1.3");
    let (last_type, last_payload) = records.last().expect("records");
    assert_eq!(
        (*last_type, last_payload.len()),
        (0x17, 19),
        "an encrypted alert last"
    );
    assert_eq!(alert, Some(AlertType::BadRecordMac));
}

#[test]
fn empty_handshake_records_get_a_fatal_alert() {
    let (_ca, server) = garbage_server();
    assert_alert(
        &server,
        &[0x16, 0x03, 0x01, 0x00, 0x00],
        &[AlertType::DecodeError, AlertType::UnexpectedMessage],
        "an empty handshake record",
    );
    assert_nothing_else(&server);
}

#[test]
fn tls10_and_sslv3_only_client_hellos_get_protocol_version() {
    let (_ca, server) = garbage_server();
    for (what, version) in [
        ("SSLv3", 0x0300u16),
        ("TLS 1.0", 0x0301),
        ("TLS 1.1", 0x0302),
    ] {
        // As old clients sent them: no extensions at all. RFC 5246 E.1 and
        // RFC 7568 ask for protocol_version; rustls checks for the
        // signature_algorithms extension first and sends handshake_failure.
        assert_alert(
            &server,
            &legacy_client_hello(version, false),
            &[AlertType::ProtocolVersion, AlertType::HandshakeFailure],
            what,
        );
        // With signature_algorithms the version check decides.
        assert_alert(
            &server,
            &legacy_client_hello(version, true),
            &[AlertType::ProtocolVersion],
            &format!("{what} with signature_algorithms"),
        );
    }
    assert_nothing_else(&server);
}

/// Runs a client handshake whose plaintext handshake records are cut so
/// each carries at most `size` bytes of handshake message.
fn handshake_in_small_records(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    size: usize,
) -> std::io::Result<Client> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(SOON))?;
    let mut conn = ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    let mut encrypting = false;
    loop {
        while conn.wants_write() {
            let mut out = Vec::new();
            conn.write_tls(&mut out)?;
            let mut framed = Vec::new();
            for record in tls_records(&out) {
                let mut raw = vec![record.content_type];
                raw.extend_from_slice(&record.version.to_be_bytes());
                raw.extend_from_slice(&(record.payload.len() as u16).to_be_bytes());
                raw.extend_from_slice(&record.payload);
                if record.content_type == 0x16 && !encrypting {
                    framed.extend(fragment_handshake_records(&raw, size));
                } else {
                    framed.extend(raw);
                }
                // After ChangeCipherSpec (TLS 1.2) handshake records are encrypted.
                encrypting |= record.content_type == 0x14;
            }
            tcp.write_all(&framed)?;
        }
        if !conn.is_handshaking() {
            break;
        }
        if conn.read_tls(&mut tcp)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        conn.process_new_packets().map_err(std::io::Error::other)?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

#[test]
fn a_client_hello_in_one_byte_records_completes_the_handshake() {
    let ca = TestCa::new("ca");
    for protocol in [sslserver::Protocol::TlsV1_3, sslserver::Protocol::TlsV1_2] {
        let mut config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
        config.set_protocol(protocol).unwrap();
        let server = TestServer::start(&config);
        let echo = spawn_echo(&server.server);
        let cfg = client_config(&ca.identity.cert_der, None, &[]);
        for size in [1, 2, 3, 7] {
            let mut client = handshake_in_small_records(server.port, cfg.clone(), size)
                .unwrap_or_else(|e| panic!("{protocol:?}, {size}-byte records: {e}"));
            let port = port_of(&client);
            assert_eq!(
                server.events.kinds(port),
                [
                    NewConnection,
                    StartedEncryptionHandshake,
                    PendingConnectionAvailable
                ],
                "{protocol:?}, {size}-byte records"
            );
            if size == 1 {
                assert_eq!(
                    echo_roundtrip(&mut client, b"tiny records"),
                    b"tiny records"
                );
                client.conn.send_close_notify();
                client.flush().unwrap();
            } else {
                assert!(server.server.next_pending_connection().is_some());
            }
        }
        echo.join().unwrap();
        assert_nothing_else(&server);
    }
}

#[test]
fn garbage_after_a_valid_client_hello_gets_a_fatal_alert() {
    let (_ca, server) = garbage_server();
    let mut input = client_hello();
    input.extend_from_slice(&[0x16, 0x03, 0x03, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef]);
    let (port, reply, closed, _) = send_raw(server.port, &input, true);
    assert!(closed);
    // The server answered the hello (ServerHello ...) before the garbage
    // made it send an alert, which TLS 1.3 encrypts: the event must still
    // name it.
    assert!(tls_records(&reply).len() >= 2, "{reply:?}");
    let alert = assert_rejected_handshake(&server, port, &reply, "garbage after ClientHello");
    assert!(alert.is_some(), "a fatal alert was sent");
    assert_nothing_else(&server);
}

#[test]
fn the_alert_event_names_the_alert_sent_after_the_servers_flight() {
    // When the server answers a ClientHello and the client's next record in
    // the same segment is refused, rustls queues the server's flight and
    // then the alert: ALERT_SENT must name the alert that went out, which
    // in TLS 1.2 is in plaintext on the wire.
    let (ca, server) = tls12_server();
    let hello = tls12_client_hello(&ca);
    let trailers: [(&str, &[u8]); 3] = [
        (
            "a change_cipher_spec of 2 bytes",
            &[0x14, 0x03, 0x03, 0x00, 0x02, 0x01, 0x01],
        ),
        ("a second ClientHello", &hello[..]),
        (
            "application data",
            &[0x17, 0x03, 0x03, 0x00, 0x02, 0x61, 0x62],
        ),
    ];
    for (what, trailer) in trailers {
        let mut input = hello.clone();
        input.extend_from_slice(trailer);
        let (port, reply, closed, _) = send_raw(server.port, &input, true);
        assert!(closed, "{what}");
        let wire = first_plaintext_alert(&reply);
        let alert = assert_rejected_handshake(&server, port, &reply, what);
        eprintln!("{what}: event {alert:?}, wire {wire:?}");
        assert!(
            wire.is_some(),
            "{what}: TLS 1.2 sends its alert in plaintext"
        );
    }
    assert_nothing_else(&server);
}

#[test]
fn the_alert_event_names_the_alert_sent_after_a_hello_retry_request() {
    // Found by the handshake_mtls fuzz target. A TLS 1.3 ClientHello whose
    // only key share is for a group the server lacks gets a
    // HelloRetryRequest; a malformed change_cipher_spec right behind it
    // then gets unexpected_message, in plaintext (no keys yet), in the same
    // write as the HelloRetryRequest. ALERT_SENT must name that alert.
    let (ca, server) = garbage_server();
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates({
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.identity.cert_der.clone()).unwrap();
                roots
            })
            .with_no_client_auth(),
    );
    let mut conn = ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    // key_share (0x0033): one X25519 share; make it X448 (0x001e), which
    // the server does not offer, so it asks again for X25519.
    let share = hello
        .windows(4)
        .position(|w| w == [0x00, 0x1d, 0x00, 0x20])
        .expect("an X25519 key share");
    hello[share + 1] = 0x1e;
    let mut input = hello;
    input.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x02, 0x01, 0x01]);
    let (port, reply, closed, _) = send_raw(server.port, &input, true);
    assert!(closed);
    let records = tls_records(&reply);
    assert_eq!(
        records[0].content_type, 0x16,
        "a HelloRetryRequest first: {reply:?}"
    );
    let wire = first_plaintext_alert(&reply);
    let events = server.events.finished(port);
    let sent = events
        .iter()
        .find(|e| e.kind == AlertSent)
        .and_then(|e| e.alert);
    eprintln!("wire {wire:?}, event {sent:?}");
    assert_eq!(wire, Some((2, AlertType::UnexpectedMessage as u8)));
    assert_eq!(
        sent,
        Some((AlertLevel::Fatal, AlertType::UnexpectedMessage)),
        "ALERT_SENT names the alert on the wire"
    );
    assert_rejected_handshake(&server, port, &reply, "HelloRetryRequest then a bad CCS");
    assert_nothing_else(&server);
}

#[test]
fn the_server_still_serves_after_every_kind_of_garbage() {
    let (ca, server) = garbage_server();
    let inputs: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.0\r\n\r\n".to_vec(),
        legacy_client_hello(0x0301, false),
        vec![0x16, 0x03, 0x01, 0xff, 0xff],
        vec![0x16; 64],
        client_hello()[..40].to_vec(),
    ];
    for input in &inputs {
        let _ = send_raw(server.port, input, true);
    }
    let good = connect(server.port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    assert_eq!(
        server.events.kinds(port_of(&good)),
        [
            NewConnection,
            StartedEncryptionHandshake,
            PendingConnectionAvailable
        ]
    );
    let ended = server
        .events
        .all()
        .iter()
        .filter(|e| e.kind == ErrorOccurred)
        .count();
    assert_eq!(ended, inputs.len());
}

// ---------------------------------------------------------------------------
// After the handshake

#[test]
fn data_received_before_a_corrupt_record_is_not_lost() {
    // TLS authenticates each record on its own: what arrived intact before
    // a forged or corrupted record is the client's data, and the
    // application must get it before the error (as OpenSSL's SSL_read
    // returns it). Here both records arrive in one segment, so the library
    // decrypts them in one go.
    let (ca, server) = plain_server(|_| {});
    let mut client = connect(server.port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    assert_eq!(
        server.server.wait_for_new_connection(Some(SOON)),
        sslserver::WaitOutcome::Ready
    );
    let conn = server.server.next_pending_connection().unwrap();
    client.conn.writer().write_all(b"hello").unwrap();
    let mut out = Vec::new();
    while client.conn.wants_write() {
        client.conn.write_tls(&mut out).unwrap();
    }
    // An application data record that does not decrypt.
    out.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x15]);
    out.extend_from_slice(&[0xab; 0x15]);
    client.sock.write_all(&out).unwrap();
    let mut buf = [0u8; 64];
    let first = conn.read(&mut buf);
    let second = conn.read(&mut buf);
    eprintln!("first read: {first:?}; second read: {second:?}");
    assert_eq!(
        first.as_ref().ok().map(|n| &buf[..*n]),
        Some(&b"hello"[..]),
        "the authenticated bytes before the bad record are delivered: {first:?}"
    );
    assert_eq!(
        second.expect_err("then the error").kind(),
        sslserver::ErrorKind::Tls
    );
}
