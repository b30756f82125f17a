//! What one peer or one host can make the DTLS server hold: a peer past the
//! cookie that sends junk is dropped at its handshake budget and memory
//! stays bounded; many ports of one address cannot take more handshakes, or
//! more peers, than the per-address bounds, while another address still
//! gets in.

mod dtls_support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use dtls_support::*;
use sslserver::dtls::{DtlsEventKind, DtlsServer};
use sslserver::SocketError;

/// Gets `socket` past the cookie exchange: the server then has a peer for
/// it whose handshake runs.
fn start_handshake(server: &DtlsServer, socket: &UdpSocket, random: [u8; 32]) {
    let addr = server.local_addr().unwrap();
    socket
        .send_to(&client_hello(random, b"", 0, 0), addr)
        .unwrap();
    let cookie = receive_cookie(socket);
    socket
        .send_to(&client_hello(random, &cookie, 1, 1), addr)
        .unwrap();
}

fn count(events: &Recorder, pred: impl Fn(&sslserver::dtls::DtlsEvent) -> bool) -> usize {
    events.all().iter().filter(|e| pred(e)).count()
}

#[test]
fn junk_before_the_handshake_completes_is_bounded_by_the_budget() {
    const DEADLINE: Duration = Duration::from_millis(3000);
    // Junk goes out until the deadline, but at most this much (64 MiB):
    // enough to show unbounded buffering (before the budget existed the
    // server grew by over 100 MiB), little enough not to hurt a shared
    // machine if that ever comes back.
    const MAX_DATAGRAMS: u64 = 4096;
    const RSS_BOUND_KIB: u64 = 8 * 1024;
    let (server, events) = server_with(|s| {
        s.set_handshake_timeout(DEADLINE.as_millis() as i32)
            .unwrap()
    });
    let addr = server.local_addr().unwrap();
    let socket = raw_socket();
    start_handshake(&server, &socket, [7; 32]);
    events.wait_for("HANDSHAKE_STARTED", |e| {
        e.kind == DtlsEventKind::HandshakeStarted
    });
    let peer = socket.local_addr().unwrap();

    let before = rss_kib();
    let body = vec![0xab; 16 * 1024 - 13];
    let until = Instant::now() + DEADLINE;
    let mut sent = 0u64;
    while Instant::now() < until && sent < MAX_DATAGRAMS {
        // Epoch 1, which the engine would queue until the keys exist.
        if socket.send_to(&record(23, 1, sent, &body), addr).is_ok() {
            sent += 1;
        }
    }
    let dropped = events.wait_for("the peer dropped at its budget", |e| {
        e.kind == DtlsEventKind::Error && e.peer == Some(peer)
    });
    let after = rss_kib();
    println!(
        "RSS before {before} KiB, after {after} KiB, {sent} datagrams of 16 KiB sent \
         (bound: {RSS_BOUND_KIB} KiB of growth)"
    );
    assert_eq!(
        dropped.socket_error,
        SocketError::SocketResource,
        "{dropped:?}"
    );
    assert!(
        dropped
            .description
            .contains("bytes before completing its handshake"),
        "{dropped:?}"
    );
    assert!(
        after.saturating_sub(before) < RSS_BOUND_KIB,
        "RSS grew from {before} KiB to {after} KiB over {sent} datagrams of 16 KiB \
         (bound: {RSS_BOUND_KIB} KiB)"
    );
    assert_eq!(server.peer_count(), 0);
    assert_eq!(server.stats().peers_over_budget, 1);
}

#[test]
fn one_address_cannot_take_more_than_its_handshakes() {
    const PER_ADDRESS: usize = 32; // the default
    const CLIENTS: usize = PER_ADDRESS + 8;
    let (server, events) = server_with(|s| s.set_handshake_timeout(60_000).unwrap());
    let mut sockets = Vec::new();
    for i in 0..CLIENTS {
        let socket = raw_socket();
        start_handshake(&server, &socket, [i as u8; 32]);
        sockets.push(socket);
    }
    let started = |events: &Recorder| count(events, |e| e.kind == DtlsEventKind::HandshakeStarted);
    let refused = |events: &Recorder| {
        count(events, |e| {
            e.kind == DtlsEventKind::Error && e.socket_error == SocketError::SocketResource
        })
    };
    wait_until("every ClientHello answered", || {
        started(&events) + refused(&events) >= CLIENTS
    });
    assert_eq!(started(&events), PER_ADDRESS, "{:#?}", events.all());
    assert_eq!(refused(&events), CLIENTS - PER_ADDRESS);
    assert_eq!(server.peer_count(), PER_ADDRESS);
    assert_eq!(
        server.stats().handshakes_refused_per_address,
        (CLIENTS - PER_ADDRESS) as u64
    );
    let refusal = events.wait_for("a refusal", |e| e.kind == DtlsEventKind::Error);
    assert!(
        refusal.description.contains("handshakes in progress"),
        "{refusal:?}"
    );

    // Another address is not affected.
    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    other.set_read_timeout(Some(SOON)).unwrap();
    start_handshake(&server, &other, [200; 32]);
    let mut buf = [0u8; 2048];
    let (n, _) = other
        .recv_from(&mut buf)
        .expect("a ServerHello for 127.0.0.2");
    assert_eq!(handshake_type(&buf[..n]), Some(2), "{:02x?}", &buf[..n]);
    assert_eq!(server.peer_count(), PER_ADDRESS + 1);
}

#[test]
fn a_real_handshake_fits_the_smallest_budget() {
    let mut config = sslserver::TlsConfig::new();
    config.generate_self_signed(&["localhost".into()]).unwrap();
    let (server, events) = server_with(|s| {
        s.set_handshake_budget(sslserver::dtls::DTLSSERVER_MIN_HANDSHAKE_BUDGET)
            .unwrap();
        s.set_config(&config).unwrap();
    });
    let mut psk = Client::start_with(
        port(&server),
        &["-psk", KEY_HEX, "-psk_identity", "alice", "-cipher", "PSK"],
    );
    let mut certificate = Client::start_with(port(&server), &[]);
    psk.wait_line("Cipher is PSK-");
    certificate.wait_line("Cipher is ECDHE-");
    psk.send_line("within budget");
    psk.wait_line(": ACK");
    assert_eq!(server.stats().handshakes_completed, 2);
    assert_eq!(server.stats().peers_over_budget, 0, "{:#?}", events.all());
}

#[test]
fn one_address_cannot_take_more_than_its_peers_with_anonymous_clients() {
    // With a certificate a client needs no key, so one host can complete
    // handshakes from as many ports as it likes. (PSK as well, so that the
    // raw PSK ClientHellos below can start a handshake.)
    const PER_ADDRESS: usize = 3;
    let mut config = sslserver::TlsConfig::new();
    config.generate_self_signed(&["localhost".into()]).unwrap();
    let (server, events) = server_with(|s| {
        s.set_config(&config).unwrap();
        s.set_max_peers_per_address(PER_ADDRESS as i32).unwrap();
    });
    let mut clients = Vec::new();
    for _ in 0..PER_ADDRESS {
        let mut client = Client::start_with(port(&server), &[]);
        client.wait_line("Cipher is ECDHE-");
        clients.push(client);
    }
    // The client may print its cipher a moment before the server's thread
    // counts the handshake: wait for the count, within a generous bound.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.stats().handshakes_completed < PER_ADDRESS as u64
        && std::time::Instant::now() < until
    {
        std::thread::yield_now();
    }
    assert_eq!(server.stats().handshakes_completed, PER_ADDRESS as u64);

    // One more port of the same address: refused, though no handshake of
    // that address is in progress.
    let socket = raw_socket();
    start_handshake(&server, &socket, [9; 32]);
    let refusal = events.wait_for("a refusal", |e| {
        e.kind == DtlsEventKind::Error && e.peer == socket.local_addr().ok()
    });
    assert_eq!(refusal.socket_error, SocketError::SocketResource);
    assert!(
        refusal.description.contains("already has 3 peers"),
        "{refusal:?}"
    );
    assert_eq!(server.stats().peers_refused_per_address, 1);
    assert_eq!(server.peer_count(), PER_ADDRESS);

    // Another address is not affected.
    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    other.set_read_timeout(Some(SOON)).unwrap();
    start_handshake(&server, &other, [200; 32]);
    events.wait_for("127.0.0.2's handshake", |e| {
        e.kind == DtlsEventKind::HandshakeStarted && e.peer == other.local_addr().ok()
    });
    assert_eq!(server.peer_count(), PER_ADDRESS + 1);
}
