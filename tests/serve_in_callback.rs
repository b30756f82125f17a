//! Serving a connection from its PENDING_CONNECTION_AVAILABLE callback, on
//! the library thread that accepted it and ran its handshake (the README's
//! "Serving a connection from its callback"): the connection's events all
//! come from that one thread, callbacks that serve for a long time do not
//! stop other clients from being accepted, and close waits until the
//! serving callbacks have returned.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, ThreadId};
use std::time::Duration;

use common::*;
use sslserver::{Event, EventKind, PeerVerifyMode, Server};

/// Which thread fired each event, by client port.
type Threads = Arc<Mutex<Vec<(u16, EventKind, ThreadId)>>>;

/// Echoes until the peer closes.
fn echo(connection: &sslserver::Connection) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = connection.read(&mut buf) {
        if n == 0 || connection.write(&buf[..n]).is_err() {
            break;
        }
    }
}

/// A server that serves every connection inside its pending callback, and
/// reports each callback that returned.
fn serving_server(returned: mpsc::Sender<u16>) -> (TestCa, TestServer, Threads) {
    let ca = TestCa::new("ca");
    let config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    let threads: Threads = Default::default();
    let this: Arc<Mutex<Weak<Server>>> = Default::default();
    let (seen, server_slot) = (threads.clone(), this.clone());
    let returned = Mutex::new(returned);
    let server = TestServer::start_with(
        &config,
        |_| {},
        move |event: &Event<'_>| {
            let port = event.connection.map(|c| c.peer_addr().port());
            if let Some(port) = port {
                let me = thread::current().id();
                seen.lock().unwrap().push((port, event.kind, me));
            }
            if event.kind != EventKind::PendingConnectionAvailable {
                return;
            }
            let Some(server) = server_slot.lock().unwrap().upgrade() else {
                return;
            };
            while let Some(connection) = server.next_pending_connection() {
                echo(&connection);
                let port = connection.peer_addr().port();
                connection.release();
                let _ = returned.lock().unwrap().send(port);
            }
        },
    );
    *this.lock().unwrap() = Arc::downgrade(&server.server);
    (ca, server, threads)
}

#[test]
fn connections_served_inside_the_pending_callback() {
    let (served_tx, served) = mpsc::channel();
    let (ca, server, threads) = serving_server(served_tx);
    let cfg = client_config(&ca.identity.cert_der, None, &[]);

    // Three clients held open: each is served by its own library thread,
    // which stays inside its callback meanwhile.
    let mut held: Vec<_> = (0..3)
        .map(|_| connect(server.port, cfg.clone()).unwrap())
        .collect();
    for client in &mut held {
        assert_eq!(echo_roundtrip(client, b"hello"), b"hello");
    }
    // A fourth is still accepted and served.
    let mut fourth = connect(server.port, cfg.clone()).unwrap();
    assert_eq!(echo_roundtrip(&mut fourth, b"again"), b"again");
    let fourth_port = port_of(&fourth);
    drop(fourth);
    assert_eq!(
        served.recv_timeout(SOON).unwrap(),
        fourth_port,
        "the fourth callback returned once its client closed"
    );

    // Every event of a connection came from one thread, and different
    // held connections from different threads.
    let threads = threads.lock().unwrap().clone();
    let mut serving = std::collections::HashSet::new();
    for client in &held {
        let port = port_of(client);
        let of: Vec<_> = threads.iter().filter(|(p, _, _)| *p == port).collect();
        assert_eq!(
            of.iter().map(|(_, kind, _)| *kind).collect::<Vec<_>>(),
            [
                EventKind::NewConnection,
                EventKind::StartedEncryptionHandshake,
                EventKind::PendingConnectionAvailable
            ]
        );
        assert!(
            of.iter().all(|(_, _, id)| *id == of[0].2),
            "the events of :{port} came from several threads: {of:?}"
        );
        serving.insert(of[0].2);
    }
    assert_eq!(serving.len(), 3, "each held connection has its own thread");

    // Close waits for the callbacks still serving.
    let (closed_tx, closed) = mpsc::channel();
    let closer = {
        let server = server.server.clone();
        thread::spawn(move || {
            server.close();
            closed_tx.send(()).unwrap();
        })
    };
    assert!(
        closed.recv_timeout(Duration::from_millis(300)).is_err(),
        "close returned while callbacks were still serving"
    );
    // The listening socket stops while close waits: new clients are
    // refused, not left in a backlog nobody accepts from. (Polled: the
    // closing thread may not have run yet on a loaded machine.)
    let refused = poll_until(SOON, || {
        std::net::TcpStream::connect(("127.0.0.1", server.port)).is_err()
    });
    assert!(
        refused.is_some(),
        "the listening socket still accepts connections during close"
    );
    // The held clients still get their echo: close does not touch
    // connections taken from the queue.
    for client in &mut held {
        assert_eq!(echo_roundtrip(client, b"still"), b"still");
    }
    let ports: Vec<u16> = held.iter().map(port_of).collect();
    drop(held);
    let mut returned: Vec<u16> = (0..3).map(|_| served.recv_timeout(SOON).unwrap()).collect();
    returned.sort();
    let mut expected = ports;
    expected.sort();
    assert_eq!(returned, expected);
    closed
        .recv_timeout(SOON)
        .expect("close returns once the callbacks have");
    closer.join().unwrap();
}
