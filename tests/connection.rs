//! A connection taken from the queue: blocking reads and waits, the peer's
//! close, release, and what it reports about its session.

mod common;

use std::io::{Read, Write};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use sslserver::{ErrorKind, PeerVerifyMode, Protocol, SocketError};

/// A server, a rustls client, and the server's side of their connection,
/// taken from the queue.
fn established() -> (TestServer, Client, Arc<sslserver::Connection>) {
    let (ca, config) = plain_config();
    let server = TestServer::start(&config);
    let client = connect(server.port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    let conn = server.accept_one();
    (server, client, conn)
}

#[test]
fn abort_and_release_wake_a_blocked_read() {
    let (_server, _client, conn) = established();
    let reader = {
        let conn = conn.clone();
        thread::spawn(move || conn.read(&mut [0u8; 16]))
    };
    thread::sleep(Duration::from_millis(100));
    conn.release();
    let err = reader.join().unwrap().expect_err("the read must fail");
    assert_eq!(err.kind(), ErrorKind::Closed);
}

#[test]
fn peer_close_is_seen_without_polling() {
    let (_server, mut client, conn) = established();
    client.write_all(b"last words").unwrap();
    client.conn.send_close_notify();
    client.flush().unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let n = conn.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"last words");
    assert_eq!(conn.state(), sslserver::SocketState::Unconnected);
    assert_eq!(conn.error().0, SocketError::RemoteHostClosed);
}

#[test]
fn state_sees_the_peers_close_without_a_read() {
    let (_server, mut client, conn) = established();
    assert_eq!(conn.state(), sslserver::SocketState::Connected);
    client.conn.send_close_notify();
    client.flush().unwrap();
    drop(client);
    let deadline = Instant::now() + SOON;
    while conn.state() == sslserver::SocketState::Connected {
        assert!(Instant::now() < deadline, "the close was never seen");
        thread::sleep(Duration::from_millis(1));
    }
    assert!(!conn.is_encrypted());
    assert_eq!(conn.read(&mut [0u8; 8]).unwrap(), 0);
}

#[test]
fn bytes_available_and_wait_for_ready_read_take_in_data_without_a_read() {
    // No library thread reads an encrypted connection: these calls receive
    // and decrypt what has arrived themselves.
    let (_server, mut client, conn) = established();
    assert_eq!(conn.bytes_available(), 0);
    assert!(!conn.wait_for_ready_read(Some(Duration::from_millis(50))));
    client.write_all(b"hello").unwrap();
    client.flush().unwrap();
    assert!(conn.wait_for_ready_read(Some(SOON)));
    assert_eq!(conn.bytes_available(), 5);

    client.write_all(b" world").unwrap();
    client.flush().unwrap();
    let deadline = Instant::now() + SOON;
    while conn.bytes_available() < 11 {
        assert!(
            Instant::now() < deadline,
            "bytes_available never saw ' world'"
        );
        thread::sleep(Duration::from_millis(1));
    }
    let mut buf = [0u8; 64];
    let n = conn.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello world");
}

#[test]
fn a_timed_wait_beside_a_blocked_read_returns_at_its_timeout() {
    let (_server, mut client, conn) = established();
    let reader = {
        let conn = conn.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 16];
            conn.read(&mut buf).map(|n| buf[..n].to_vec())
        })
    };
    let started = Instant::now();
    assert!(!conn.wait_for_ready_read(Some(Duration::from_millis(100))));
    assert!(started.elapsed() < SOON, "the timed wait hung");
    client.write_all(b"x").unwrap();
    client.flush().unwrap();
    assert_eq!(reader.join().unwrap().unwrap(), b"x");
}

#[test]
fn release_ends_the_connection_with_close_notify_and_eof() {
    // The close_notify leaves together with the end of stream (one
    // segment): the peer must still get both, blocking or not.
    for blocking in [true, false] {
        let (_server, mut client, conn) = established();
        conn.set_blocking(blocking);
        assert_eq!(conn.write(b"bye").unwrap(), 3);
        conn.release();
        let mut received = Vec::new();
        client
            .read_to_end(&mut received)
            .unwrap_or_else(|e| panic!("no clean end (blocking {blocking}): {e}"));
        assert_eq!(received, b"bye");
    }
}

#[test]
fn truncation_without_close_notify_is_an_error_not_eof() {
    let (_server, client, conn) = established();
    drop(client);
    let err = conn
        .read(&mut [0u8; 16])
        .expect_err("TCP close without close_notify");
    assert_eq!(err.kind(), ErrorKind::Closed);
}

#[test]
fn session_information_is_available() {
    let ca = TestCa::new("ca");
    let mut config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    config
        .set_alpn_protocols(&[b"h2".to_vec(), b"http/1.1".to_vec()])
        .unwrap();
    config.set_protocol(Protocol::TlsV1_2).unwrap();
    let server = TestServer::start(&config);
    let client = connect(
        server.port,
        client_config(&ca.identity.cert_der, None, &["http/1.1"]),
    )
    .unwrap();
    assert_eq!(client.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let conn = server.accept_one();
    let info = conn.session().unwrap();
    assert_eq!(info.protocol, Protocol::TlsV1_2);
    assert!(info.cipher.starts_with("TLS_ECDHE_"), "{}", info.cipher);
    assert_eq!(info.alpn_protocol.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(info.server_name.as_deref(), Some("localhost"));
    assert_eq!(conn.local_addr().port(), server.port);
}

#[test]
fn tls13_cipher_names_are_iana_names() {
    let (_server, _client, conn) = established();
    let info = conn.session().unwrap();
    assert_eq!(info.protocol, Protocol::TlsV1_3);
    assert!(
        [
            "TLS_AES_256_GCM_SHA384",
            "TLS_AES_128_GCM_SHA256",
            "TLS_CHACHA20_POLY1305_SHA256"
        ]
        .contains(&info.cipher.as_str()),
        "{}",
        info.cipher
    );
}

#[test]
fn data_sent_together_with_the_clients_finished_is_not_lost() {
    // rustls (like openssl s_client) sends data queued during the handshake
    // in the same write as its Finished; the handshake decrypts it.
    let (ca, config) = plain_config();
    let server = TestServer::start(&config);
    let mut tcp = server.tcp();
    let cfg = client_config(&ca.identity.cert_der, None, &[]);
    let mut tls = rustls::ClientConnection::new(cfg, "localhost".try_into().unwrap()).unwrap();
    tls.writer().write_all(b"early bird").unwrap();
    while tls.is_handshaking() || tls.wants_write() {
        tls.complete_io(&mut tcp).unwrap();
    }
    let conn = server.accept_one();
    assert!(conn.wait_for_ready_read(Some(SOON)));
    let mut buf = [0u8; 32];
    let n = conn.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"early bird");
}

#[test]
fn release_does_not_wait_for_a_writer_blocked_on_a_peer_that_does_not_read() {
    // The client completes the handshake, then never reads.
    let (_server, _client, conn) = established();
    let writer = {
        let conn = conn.clone();
        thread::spawn(move || {
            let chunk = vec![0u8; 1024 * 1024];
            loop {
                if conn.write(&chunk).is_err() {
                    return;
                }
            }
        })
    };
    // Wait until the writer is stuck: the socket buffers are full.
    thread::sleep(Duration::from_millis(300));
    let (done_tx, done_rx) = mpsc::channel();
    let releaser = {
        let conn = conn.clone();
        thread::spawn(move || {
            conn.release();
            done_tx.send(()).unwrap();
        })
    };
    done_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("release must not wait for the blocked writer");
    releaser.join().unwrap();
    writer.join().unwrap();
}
