//! The DTLS server against a real, independent client (`openssl s_client
//! -dtls1_2 -psk`, OpenSSL's default cipher list) and against raw
//! ClientHellos: handshake, cookie exchange before any state, data both
//! ways, refused keys and identities, a spoofed-ClientHello flood, two
//! clients at once, close_notify on close, and the C API.

mod dtls_support;

use std::ffi::{c_int, c_void, CStr, CString};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use dtls_support::*;
use sslserver::dtls::{DtlsEvent, DtlsEventKind, DtlsServer};
use sslserver::ffi::dtls::*;
use sslserver::ffi::sslserver_result;
use sslserver::SocketError;
// ------------------------------------------------------------ tests

#[test]
fn openssl_handshake_cookie_exchange_and_data_both_ways() {
    let (server, events) = server();
    let mut client = Client::start(port(&server), KEY_HEX, "alice");
    client.wait_line("Cipher is PSK-AES128-GCM-SHA256");
    // The cookie exchange, seen from the client: a HelloVerifyRequest with
    // a 20-byte cookie before the ServerHello.
    client.wait_line("HelloVerifyRequest");
    client.wait_line("cookie (len=20)");
    client.wait_line("test hint");
    let started = events.wait_for("HANDSHAKE_STARTED", |e| {
        e.kind == DtlsEventKind::HandshakeStarted
    });
    let complete = events.wait_for("HANDSHAKE_COMPLETE", |e| {
        e.kind == DtlsEventKind::HandshakeComplete
    });
    assert_eq!(complete.psk_identity, b"alice");
    assert_eq!(started.peer, complete.peer);
    assert!(
        complete
            .description
            .contains("successfully completed a handshake"),
        "{complete:?}"
    );
    let stats = server.stats();
    assert!(stats.hello_verify_requests >= 1, "{stats:?}");
    assert_eq!(stats.handshakes_started, 1, "{stats:?}");

    client.send_line("hello over DTLS");
    let datagram = events.wait_for("DATAGRAM_RECEIVED", |e| {
        e.kind == DtlsEventKind::DatagramReceived
    });
    assert_eq!(datagram.data, b"hello over DTLS\n");
    assert_eq!(datagram.psk_identity, b"alice");
    let peer = datagram.peer.unwrap();
    client.wait_line(&format!("to 127.0.0.1:{}: ACK", peer.port()));
    assert_eq!(server.peer_count(), 1);

    client.close_input();
    let closed = events.wait_for("PEER_CLOSED", |e| e.kind == DtlsEventKind::PeerClosed);
    assert_eq!(closed.peer, Some(peer));
    wait_until("an empty peer table", || server.peer_count() == 0);
    assert!(client.wait_exit().success());
    let errors: Vec<_> = events
        .all()
        .into_iter()
        .filter(|e| e.kind == DtlsEventKind::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn no_peer_state_before_the_cookie_round_trip() {
    let (server, events) = server_with(|s| s.set_handshake_timeout(700).unwrap());
    let addr: SocketAddr = server.local_addr().unwrap();
    let socket = raw_socket();
    let random = [0x42; 32];

    socket
        .send_to(&client_hello(random, b"", 0, 0), addr)
        .unwrap();
    let cookie = receive_cookie(&socket);
    assert_eq!(cookie.len(), 20);
    let stats = server.stats();
    assert_eq!(
        (
            stats.peers,
            stats.handshakes_started,
            stats.hello_verify_requests
        ),
        (0, 0, 1)
    );

    // A wrong cookie: another HelloVerifyRequest, still no state.
    let mut wrong = cookie.clone();
    wrong[19] ^= 1;
    socket
        .send_to(&client_hello(random, &wrong, 1, 1), addr)
        .unwrap();
    // A fresh cookie (it carries the time it was made, so it may differ
    // from the first); the first stays valid.
    let again = receive_cookie(&socket);
    assert_eq!(again.len(), 20);
    assert_ne!(again, wrong);
    let stats = server.stats();
    assert_eq!((stats.peers, stats.cookies_rejected), (0, 1));

    // The cookie is bound to the source port: another socket cannot use it.
    let other = raw_socket();
    other
        .send_to(&client_hello(random, &cookie, 1, 1), addr)
        .unwrap();
    assert_ne!(receive_cookie(&other), cookie);
    assert_eq!(server.stats().peers, 0);

    // The right cookie from the right port: now the peer exists and the
    // engine answers with its ServerHello flight.
    socket
        .send_to(&client_hello(random, &cookie, 2, 1), addr)
        .unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = socket
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no ServerHello ({e}); events {:#?}", events.all()));
    assert_eq!(
        handshake_type(&buf[..n]),
        Some(2),
        "ServerHello: {:02x?}",
        &buf[..n]
    );
    let stats = server.stats();
    assert_eq!((stats.peers, stats.handshakes_started), (1, 1), "{stats:?}");
    events.wait_for("HANDSHAKE_STARTED", |e| {
        e.kind == DtlsEventKind::HandshakeStarted
    });

    // The client never finishes: the handshake deadline drops the peer.
    let timeout = events.wait_for("handshake timeout", |e| e.kind == DtlsEventKind::Error);
    assert_eq!(
        timeout.socket_error,
        SocketError::SocketTimeout,
        "{timeout:?}"
    );
    assert!(timeout.description.contains("timed out"), "{timeout:?}");
    wait_until("an empty peer table", || server.peer_count() == 0);
}

#[test]
fn wrong_key_is_refused() {
    let (server, events) = server();
    let mut client = Client::start(port(&server), "00112233", "alice");
    let status = client.wait_exit();
    assert!(!status.success());
    assert!(
        client.saw("alert unknown psk identity"),
        "{}",
        client.output
    );
    let error = events.wait_for("ERROR", |e| e.kind == DtlsEventKind::Error);
    assert_eq!(
        error.socket_error,
        SocketError::SslHandshakeFailed,
        "{error:?}"
    );
    assert!(
        error.description.contains("wrong pre-shared key"),
        "{error:?}"
    );
    assert!(events
        .all()
        .iter()
        .all(|e| e.kind != DtlsEventKind::HandshakeComplete));
    wait_until("an empty peer table", || server.peer_count() == 0);
}

#[test]
fn unknown_identity_is_refused() {
    let (server, events) = server();
    let mut client = Client::start(port(&server), KEY_HEX, "mallory");
    assert!(!client.wait_exit().success());
    // RFC 4279 2: a refused identity gets unknown_psk_identity (115), not
    // the engine's internal_error.
    assert!(
        client.saw("alert unknown psk identity"),
        "{}",
        client.output
    );
    let error = events.wait_for("ERROR", |e| e.kind == DtlsEventKind::Error);
    assert_eq!(
        error.socket_error,
        SocketError::SslHandshakeFailed,
        "{error:?}"
    );
    assert!(
        error
            .description
            .contains("unknown PSK identity \"mallory\""),
        "{error:?}"
    );
    assert!(events
        .all()
        .iter()
        .all(|e| e.kind != DtlsEventKind::HandshakeComplete));
    wait_until("an empty peer table", || server.peer_count() == 0);
}

#[test]
fn spoofed_client_hello_flood_costs_no_state() {
    let (server, events) = server();
    let addr = server.local_addr().unwrap();
    const SOCKETS: usize = 400;
    const PER_SOCKET: usize = 5;
    let mut sent = 0u64;
    let send_batch = |from: usize, to: usize, sent: &mut u64| {
        for s in from..to {
            // A fresh source port each time: the server sees as many
            // "clients" as sockets, none of which ever answers.
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            for i in 0..PER_SOCKET {
                let mut random = [0u8; 32];
                random[..8].copy_from_slice(&((s * PER_SOCKET + i) as u64).to_be_bytes());
                let cookie: &[u8] = if i % 2 == 0 { b"" } else { &[7; 20] };
                socket
                    .send_to(&client_hello(random, cookie, i as u64, i as u16), addr)
                    .unwrap();
                *sent += 1;
            }
            // Pace on the server's progress, so the kernel's socket buffer
            // does not drop most of the flood.
            let target = *sent * 9 / 10;
            wait_until("the server to answer the flood", || {
                server.stats().hello_verify_requests >= target
            });
        }
    };
    send_batch(0, 40, &mut sent);
    let before = rss_kib();
    send_batch(40, SOCKETS, &mut sent);
    let after = rss_kib();
    println!("RSS before {before} KiB, after {after} KiB, over {sent} ClientHellos");
    let stats = server.stats();
    assert_eq!(stats.peers, 0, "{stats:?}");
    assert_eq!(stats.handshakes_started, 0, "{stats:?}");
    assert!(
        stats.hello_verify_requests >= sent * 9 / 10,
        "{stats:?} of {sent}"
    );
    assert!(stats.cookies_rejected > 0, "{stats:?}");
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB over {sent} ClientHellos"
    );
    assert!(events.all().is_empty(), "{:#?}", events.all());

    // A real client still gets through.
    let mut client = Client::start(port(&server), KEY_HEX, "alice");
    client.wait_line("Cipher is PSK-AES128-GCM-SHA256");
    client.send_line("after the flood");
    client.wait_line(": ACK");
}

#[test]
fn two_clients_at_once() {
    let (server, events) = server();
    let mut alice = Client::start(port(&server), KEY_HEX, "alice");
    let mut bob = Client::start(port(&server), KEY_HEX, "bob");
    alice.wait_line("Cipher is");
    bob.wait_line("Cipher is");
    wait_until("two peers", || server.peer_count() == 2);
    alice.send_line("from alice");
    bob.send_line("from bob");
    for (client, text, identity) in [
        (&mut alice, "from alice\n", "alice"),
        (&mut bob, "from bob\n", "bob"),
    ] {
        let datagram = events.wait_for(text, |e| {
            e.kind == DtlsEventKind::DatagramReceived && e.data == text.as_bytes()
        });
        assert_eq!(datagram.psk_identity, identity.as_bytes());
        client.wait_line(&format!(
            "to 127.0.0.1:{}: ACK",
            datagram.peer.unwrap().port()
        ));
    }
    let ports: std::collections::HashSet<_> = events
        .all()
        .iter()
        .filter(|e| e.kind == DtlsEventKind::HandshakeComplete)
        .map(|e| e.peer.unwrap().port())
        .collect();
    assert_eq!(ports.len(), 2);
}

#[test]
fn close_sends_close_notify_to_every_peer() {
    let (server, events) = server();
    let mut clients: Vec<Client> = ["c1", "c2"]
        .iter()
        .map(|id| Client::start(port(&server), KEY_HEX, id))
        .collect();
    for client in &mut clients {
        client.wait_line("Cipher is");
    }
    wait_until("two established peers", || {
        events
            .all()
            .iter()
            .filter(|e| e.kind == DtlsEventKind::HandshakeComplete)
            .count()
            == 2
    });
    server.close();
    assert!(!server.is_listening());
    for client in &mut clients {
        // -trace shows the decrypted alert record.
        client.wait_line("close notify");
    }
}

#[test]
fn idle_peers_are_closed() {
    let (server, events) = server_with(|s| s.set_idle_timeout(300).unwrap());
    let mut client = Client::start(port(&server), KEY_HEX, "alice");
    client.wait_line("Cipher is");
    let error = events.wait_for("idle timeout", |e| e.kind == DtlsEventKind::Error);
    assert_eq!(error.socket_error, SocketError::SocketTimeout);
    assert!(error.description.contains("nothing received"), "{error:?}");
    client.wait_line("close notify");
    wait_until("an empty peer table", || server.peer_count() == 0);
}

#[test]
fn psk_callback_cannot_deadlock_and_callbacks_may_close() {
    let server = Arc::new(DtlsServer::new());
    let inside: Arc<Mutex<Option<sslserver::ErrorKind>>> = Arc::default();
    let (weak, seen) = (Arc::downgrade(&server), inside.clone());
    server.set_psk_callback(Some(Arc::new(move |identity: &[u8]| {
        // The server's lock is held here: a write must fail, not hang.
        let server = weak.upgrade()?;
        let peer = SocketAddr::from(([127, 0, 0, 1], 9));
        *seen.lock().unwrap() = server.write(peer, b"x").err().map(|e| e.kind());
        key_for(identity)
    })));
    let recorder = Arc::new(Recorder::default());
    let (weak, r) = (Arc::downgrade(&server), recorder.clone());
    server.set_callback(
        DtlsEventKind::DatagramReceived,
        Some(Arc::new(move |e: &DtlsEvent| {
            r.push(e);
            // Closing from a callback: close_notify still goes out.
            if let Some(server) = weak.upgrade() {
                server.close();
            }
        })),
    );
    server.listen(Some("127.0.0.1"), 0).unwrap();
    let mut client = Client::start(port(&server), KEY_HEX, "alice");
    client.wait_line("Cipher is");
    assert_eq!(
        *inside.lock().unwrap(),
        Some(sslserver::ErrorKind::InvalidState)
    );
    client.send_line("close, please");
    recorder.wait_for("DATAGRAM_RECEIVED", |e| {
        e.kind == DtlsEventKind::DatagramReceived
    });
    client.wait_line("close notify");
    assert!(!server.is_listening());
}

#[test]
fn settings_and_errors() {
    let server = DtlsServer::new();
    assert!(
        server.listen(Some("127.0.0.1"), 0).is_err(),
        "no PSK callback"
    );
    assert!(server.set_handshake_timeout(-2).is_err());
    assert!(server.set_max_peers(0).is_err());
    assert_eq!(server.handshake_budget(), 64 * 1024);
    assert!(server.set_handshake_budget(100).is_err());
    assert_eq!(
        server.handshake_budget(),
        64 * 1024,
        "a refused value changes nothing"
    );
    server.set_handshake_budget(4096).unwrap();
    assert_eq!(server.handshake_budget(), 4096);
    assert_eq!(server.max_handshakes_per_address(), 32);
    assert!(server.set_max_handshakes_per_address(0).is_err());
    server.set_max_handshakes_per_address(2).unwrap();
    assert_eq!(server.max_handshakes_per_address(), 2);
    assert_eq!(server.max_peers_per_address(), 64);
    assert!(server.set_max_peers_per_address(0).is_err());
    assert_eq!(server.max_peers_per_address(), 64);
    server.set_max_peers_per_address(5).unwrap();
    assert_eq!(server.max_peers_per_address(), 5);
    server.set_psk_callback(Some(Arc::new(key_for)));
    assert!(server.listen(Some("not an address"), 0).is_err());
    server.listen(Some("127.0.0.1"), 0).unwrap();
    assert!(
        server.listen(Some("127.0.0.1"), 0).is_err(),
        "already listening"
    );
    let other = SocketAddr::from(([127, 0, 0, 1], 9));
    assert_eq!(
        server.write(other, b"x").unwrap_err().kind(),
        sslserver::ErrorKind::Closed
    );
    let taken = server.local_addr().unwrap().port();
    let second = DtlsServer::new();
    second.set_psk_callback(Some(Arc::new(key_for)));
    let err = second.listen(Some("127.0.0.1"), taken).unwrap_err();
    assert_eq!(err.kind(), sslserver::ErrorKind::AddressInUse);
    server.close();
    server.close();
    assert_eq!(server.peer_count(), 0);
}

// ------------------------------------------------------------ the C API

unsafe extern "C" fn c_psk(
    identity: *const u8,
    identity_len: usize,
    key: *mut u8,
    capacity: usize,
    _userdata: *mut c_void,
) -> c_int {
    let identity = unsafe { std::slice::from_raw_parts(identity, identity_len) };
    if identity == b"mallory" || capacity < KEY.len() {
        return -1;
    }
    unsafe { std::ptr::copy_nonoverlapping(KEY.as_ptr(), key, KEY.len()) };
    KEY.len() as c_int
}

/// An event as the C callback saw it: kind, peer address, peer port, data.
type Seen = (dtlsserver_event_kind, String, u16, Vec<u8>);

struct CState {
    server: *mut sslserver::dtls::DtlsServer,
    seen: Mutex<Vec<Seen>>,
    changed: Condvar,
}

unsafe extern "C" fn c_event(event: *const dtlsserver_event, userdata: *mut c_void) {
    let state = unsafe { &*(userdata as *const CState) };
    let event = unsafe { &*event };
    let address = unsafe { CStr::from_ptr(event.peer_address) }
        .to_str()
        .unwrap()
        .to_string();
    let data = if event.data_len == 0 {
        Vec::new()
    } else {
        unsafe { std::slice::from_raw_parts(event.data, event.data_len) }.to_vec()
    };
    let cipher_suite = unsafe { CStr::from_ptr(event.cipher_suite) }
        .to_str()
        .unwrap();
    if event.kind == dtlsserver_event_kind::DTLSSERVER_EVENT_HANDSHAKE_STARTED {
        assert_eq!(
            event.authentication,
            dtlsserver_authentication::DTLSSERVER_AUTHENTICATION_NONE
        );
        assert_eq!(cipher_suite, "");
    }
    if event.kind == dtlsserver_event_kind::DTLSSERVER_EVENT_HANDSHAKE_COMPLETE
        || event.kind == dtlsserver_event_kind::DTLSSERVER_EVENT_DATAGRAM_RECEIVED
    {
        // This server has no certificate: every session is a PSK session.
        assert_eq!(
            event.authentication,
            dtlsserver_authentication::DTLSSERVER_AUTHENTICATION_PSK
        );
        assert_eq!(cipher_suite, "TLS_PSK_WITH_AES_128_GCM_SHA256");
    }
    if event.kind == dtlsserver_event_kind::DTLSSERVER_EVENT_DATAGRAM_RECEIVED {
        let reply = format!("to {address}:{}: ACK", event.peer_port);
        let r = dtlsserver_write(
            state.server,
            event.peer_address,
            event.peer_port,
            reply.as_ptr(),
            reply.len(),
        );
        assert_eq!(r, sslserver_result::SSLSERVER_OK);
    }
    state
        .seen
        .lock()
        .unwrap()
        .push((event.kind, address, event.peer_port, data));
    state.changed.notify_all();
}

#[test]
fn c_api_null_safety_and_arguments() {
    use sslserver_result::*;
    let null = std::ptr::null_mut();
    assert_eq!(
        dtlsserver_listen(null, std::ptr::null(), 0),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        dtlsserver_write(null, std::ptr::null(), 0, std::ptr::null(), 0),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        dtlsserver_set_identity_hint(null, std::ptr::null()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(dtlsserver_server_port(null), 0);
    assert_eq!(dtlsserver_peer_count(null), 0);
    assert!(!dtlsserver_is_listening(null));
    dtlsserver_close(null);
    dtlsserver_free(null);

    let server = dtlsserver_new();
    assert_eq!(
        dtlsserver_listen(server, std::ptr::null(), 0),
        SSLSERVER_ERROR_INVALID_STATE
    );
    assert_eq!(
        dtlsserver_register_callback(server, 99, Some(c_event), std::ptr::null_mut()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        dtlsserver_set_idle_timeout(server, -5),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(dtlsserver_handshake_timeout(server), 5000);
    let name = unsafe { CStr::from_ptr(dtlsserver_event_kind_name(2)) };
    assert_eq!(name.to_str().unwrap(), "DATAGRAM_RECEIVED");
    let address = CString::new("127.0.0.1").unwrap();
    assert_eq!(
        dtlsserver_write(server, address.as_ptr(), 1, b"x".as_ptr(), 1),
        SSLSERVER_ERROR_CLOSED
    );
    let bad = CString::new("example.com").unwrap();
    assert_eq!(
        dtlsserver_write(server, bad.as_ptr(), 1, b"x".as_ptr(), 1),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    dtlsserver_free(server);
}

#[test]
fn c_api_serves_openssl() {
    use sslserver_result::*;
    let server = dtlsserver_new();
    let state = Box::new(CState {
        server,
        seen: Mutex::new(Vec::new()),
        changed: Condvar::new(),
    });
    let userdata = &*state as *const CState as *mut c_void;
    for kind in 0..5 {
        assert_eq!(
            dtlsserver_register_callback(server, kind, Some(c_event), userdata),
            SSLSERVER_OK
        );
    }
    let hint = CString::new("c hint").unwrap();
    assert_eq!(
        dtlsserver_set_identity_hint(server, hint.as_ptr()),
        SSLSERVER_OK
    );
    assert_eq!(
        dtlsserver_set_psk_callback(server, Some(c_psk), std::ptr::null_mut()),
        SSLSERVER_OK
    );
    let address = CString::new("127.0.0.1").unwrap();
    assert_eq!(dtlsserver_listen(server, address.as_ptr(), 0), SSLSERVER_OK);
    let port = dtlsserver_server_port(server);
    assert_ne!(port, 0);

    let mut client = Client::start(port, KEY_HEX, "carol");
    client.wait_line("Cipher is");
    client.wait_line("c hint");
    client.send_line("via C");
    let line = client.wait_line(": ACK");
    {
        let deadline = Instant::now() + SOON;
        let mut seen = state.seen.lock().unwrap();
        while !seen
            .iter()
            .any(|e| e.0 == dtlsserver_event_kind::DTLSSERVER_EVENT_DATAGRAM_RECEIVED)
        {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no datagram event");
            seen = state.changed.wait_timeout(seen, left).unwrap().0;
        }
        let (_, peer, peer_port, data) = seen
            .iter()
            .find(|e| e.0 == dtlsserver_event_kind::DTLSSERVER_EVENT_DATAGRAM_RECEIVED)
            .unwrap()
            .clone();
        assert_eq!(data, b"via C\n");
        assert!(
            line.contains(&format!("to {peer}:{peer_port}: ACK")),
            "{line}"
        );
    }
    let mut refused = Client::start(port, KEY_HEX, "mallory");
    assert!(!refused.wait_exit().success());
    dtlsserver_free(server);
    client.wait_line("close notify");
    drop(state);
}
