//! Datagrams that do not authenticate, sent from the client's own address
//! and port (through a relay, as an attacker who knows the address would):
//! they are dropped and never end a handshake or a session (RFC 6347
//! 4.1.2.7), and the next real datagram still gets its answer. Also: a
//! server flight lost once is retransmitted and the handshake completes.

mod dtls_support;

use dtls_support::*;
use sslserver::dtls::DtlsEventKind;

fn errors(events: &Recorder) -> Vec<sslserver::dtls::DtlsEvent> {
    events
        .all()
        .into_iter()
        .filter(|e| e.kind == DtlsEventKind::Error)
        .collect()
}

#[test]
fn forged_datagrams_after_the_handshake_end_nothing() {
    let (server, events) = server();
    let relay = Relay::start(server.local_addr().unwrap());
    let mut client = Client::start(relay.port, KEY_HEX, "alice");
    client.wait_line("Cipher is");
    client.send_line("first");
    client.wait_count(": ACK", 1);

    let first = relay.client_datagrams().last().unwrap().clone();
    let mut forged = forged_datagrams();
    forged.push(("a replay of the client's last datagram", first));
    forged.push(("a plaintext fatal alert", record(21, 0, 60, &[2, 40])));
    for (what, datagram) in &forged {
        relay.inject(datagram);
        // Each one on its own, then the next real datagram must still be
        // answered.
        client.send_line(what);
        events.wait_for(what, |e| {
            e.kind == DtlsEventKind::DatagramReceived && e.data == format!("{what}\n").as_bytes()
        });
        assert!(
            errors(&events).is_empty(),
            "after {what}: {:#?}",
            errors(&events)
        );
    }
    client.wait_count(": ACK", 1 + forged.len());
    assert_eq!(server.peer_count(), 1);
    let received = events
        .all()
        .iter()
        .filter(|e| e.kind == DtlsEventKind::DatagramReceived)
        .count();
    assert_eq!(received, 1 + forged.len(), "the replay was delivered twice");
    // Every forgery but the replay and the plaintext alert (which the
    // engine's replay window and epoch check drop) was dropped before it.
    let stats = server.stats();
    assert!(
        stats.records_dropped >= forged.len() as u64 - 2,
        "{stats:?}"
    );
    client.close_input();
    events.wait_for("PEER_CLOSED", |e| e.kind == DtlsEventKind::PeerClosed);
}

#[test]
fn forged_datagrams_during_the_handshake_end_nothing() {
    let (server, events) = server();
    let relay = Relay::start(server.local_addr().unwrap());
    // Between the client's ChangeCipherSpec and its Finished: the server
    // has derived the keys and waits for the one record that proves them.
    let mut forged: Vec<Vec<u8>> = forged_datagrams().into_iter().map(|(_, d)| d).collect();
    forged.push(Vec::new()); // a replay of the client's previous datagram
    relay.inject_after_change_cipher_spec(forged);
    let mut client = Client::start(relay.port, KEY_HEX, "alice");
    client.wait_line("Cipher is");
    assert!(relay.injected_after_change_cipher_spec());
    events.wait_for("HANDSHAKE_COMPLETE", |e| {
        e.kind == DtlsEventKind::HandshakeComplete
    });
    client.send_line("after the forgeries");
    client.wait_count(": ACK", 1);
    assert!(errors(&events).is_empty(), "{:#?}", errors(&events));
    assert_eq!(server.stats().handshakes_completed, 1);
    assert_eq!(server.peer_count(), 1);
}

#[test]
fn a_lost_server_flight_is_retransmitted() {
    // The default deadline (5 s): the client retransmits after 1 s.
    let (server, events) = server();
    let relay = Relay::start(server.local_addr().unwrap());
    relay.drop_server_hellos(1);
    let mut client = Client::start(relay.port, KEY_HEX, "alice");
    client.wait_line("Cipher is");
    assert!(relay.dropped_all_server_hellos());
    client.send_line("after a retransmission");
    client.wait_count(": ACK", 1);
    assert!(errors(&events).is_empty(), "{:#?}", errors(&events));
    assert_eq!(server.stats().handshakes_completed, 1);
}

#[test]
fn a_lost_last_server_flight_is_sent_again_when_the_client_repeats_its_own() {
    // The server's ChangeCipherSpec and Finished are lost: the server has
    // completed, the client has not and repeats its last flight (with its
    // unencrypted ClientKeyExchange), which must still reach the engine.
    let (server, events) = server();
    let relay = Relay::start(server.local_addr().unwrap());
    relay.drop_server_finished(1);
    let mut client = Client::start(relay.port, KEY_HEX, "alice");
    client.wait_line("Cipher is");
    assert!(relay.dropped_all_server_finished());
    client.send_line("after a repeated last flight");
    client.wait_count(": ACK", 1);
    assert!(errors(&events).is_empty(), "{:#?}", errors(&events));
    assert_eq!(server.stats().handshakes_completed, 1);
}

/// A measurement, not run by default (`cargo test --release --test
/// dtls_spoofing -- --ignored --nocapture`): how long the server takes per
/// forged epoch-1 record, one per datagram, on an established PSK session,
/// where each one is tried on the session's record check before the engine
/// sees it. The session must survive the flood.
#[test]
#[ignore]
fn measure_forged_record_cost() {
    const N: u64 = 20_000;
    let (server, events) = server();
    let relay = Relay::start(server.local_addr().unwrap());
    let mut client = Client::start(relay.port, KEY_HEX, "alice");
    client.wait_line("Cipher is");
    client.send_line("before");
    client.wait_count(": ACK", 1);
    let junk: Vec<u8> = (0..40u8).collect();
    let base = server.stats().records_dropped;
    let start = std::time::Instant::now();
    let mut sent = 0u64;
    while sent < N {
        // In batches the socket buffer holds, so (almost) none is lost.
        for _ in 0..100 {
            relay.inject(&record(23, 1, 1000 + sent, &junk));
            sent += 1;
        }
        wait_until("the batch to be dropped", || {
            server.stats().records_dropped >= base + sent * 9 / 10
        });
    }
    let took = start.elapsed();
    println!(
        "{N} forged records dropped in {took:?}: {:.1} us each, relay and test included",
        took.as_secs_f64() * 1e6 / N as f64
    );
    client.send_line("after");
    client.wait_count(": ACK", 2);
    assert!(errors(&events).is_empty(), "{:#?}", errors(&events));
}

/// A client that reconnects from the same address and port (a device with
/// a fixed source port, a reused NAT mapping): a replay of its previous
/// session's ClientHello, cookie included, still within the cookie's
/// lifetime, must not end or replace the session it has now.
#[test]
fn a_replayed_hello_of_an_earlier_session_ends_nothing() {
    let (server, events) = server();
    let relay = Relay::start(server.local_addr().unwrap());
    let mut first = Client::start(relay.port, KEY_HEX, "alice");
    first.wait_line("Cipher is");
    // The first session's ClientHello with the cookie: no session id
    // (byte 59), a cookie (its length at byte 60).
    let hello = relay
        .client_datagrams()
        .into_iter()
        .find(|d| handshake_type(d) == Some(1) && d.len() > 61 && d[59] == 0 && d[60] != 0)
        .expect("the first session's ClientHello with its cookie");
    first.close_input();
    events.wait_for("PEER_CLOSED", |e| e.kind == DtlsEventKind::PeerClosed);

    let mut second = Client::start(relay.port, KEY_HEX, "alice");
    second.wait_line("Cipher is");
    second.send_line("hello");
    second.wait_count(": ACK", 1);

    relay.inject(&hello);
    // Sent after the replay from the same address: answered only if the
    // replay left the session alone.
    second.send_line("still there?");
    second.wait_count(": ACK", 2);
    assert!(errors(&events).is_empty(), "{:#?}", errors(&events));
    assert_eq!(server.peer_count(), 1);
    let stats = server.stats();
    assert_eq!(stats.handshakes_started, 2, "{stats:?}");
    assert!(stats.cookies_rejected >= 1, "{stats:?}");
}

/// A client that restarts on the same address and port without closing
/// (a crashed device) gets a new session, which replaces the old one once
/// its handshake has started.
#[test]
fn a_client_restarting_on_the_same_port_replaces_its_session() {
    let (server, events) = server();
    let relay = Relay::start(server.local_addr().unwrap());
    let mut first = Client::start(relay.port, KEY_HEX, "alice");
    first.wait_line("Cipher is");
    first.send_line("first");
    first.wait_count(": ACK", 1);
    drop(first); // killed: no close_notify

    let mut second = Client::start(relay.port, KEY_HEX, "alice");
    second.wait_line("Cipher is");
    second.send_line("second");
    second.wait_count(": ACK", 1);
    let replaced = events.wait_for("the old session replaced", |e| {
        e.kind == DtlsEventKind::Error && e.description.contains("started a new session")
    });
    assert_eq!(
        replaced.socket_error,
        sslserver::SocketError::RemoteHostClosed
    );
    assert_eq!(server.peer_count(), 1);
    assert_eq!(server.stats().handshakes_completed, 2);
}
