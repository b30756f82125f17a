//! The server's semantics: one handshake deadline, the bounded queue,
//! close/free at any moment, certificate rotation, waiting for connections,
//! listening sockets.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use socket2::SockRef;
use sslserver::{
    Connection, ErrorKind, EventKind::*, PeerVerifyMode, Server, SocketError, WaitOutcome,
};

#[test]
fn drip_fed_client_hello_is_cut_at_the_deadline_not_later() {
    // Qt restarts its timer on the first byte, so a client that waits 0.9 T
    // and then drips gets about 1.9 T. Here the deadline is one: T from accept.
    let (_ca, config) = plain_config();
    let server =
        TestServer::start_with(&config, |s| s.set_handshake_timeout(1000).unwrap(), |_| {});
    let connected = Instant::now();
    let mut tcp = server.tcp();
    let port = tcp.local_addr().unwrap().port();
    thread::sleep(Duration::from_millis(900));
    let hello = client_hello();
    let mut cut_at = None;
    for byte in &hello {
        if tcp.write_all(&[*byte]).is_err() {
            cut_at = Some(connected.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(20));
        let events = server.events.of(port);
        if events.iter().any(|e| e.kind == ErrorOccurred) {
            cut_at = Some(connected.elapsed());
            break;
        }
    }
    let cut_at = cut_at.expect("the server cut the drip-feeding client");
    let events = server.events.finished(port);
    assert_eq!(
        kinds_of(&events),
        [NewConnection, StartedEncryptionHandshake, ErrorOccurred]
    );
    assert_eq!(events[2].socket_error, SocketError::SocketTimeout);
    assert!(
        cut_at >= Duration::from_millis(1000),
        "cut early: {cut_at:?}"
    );
    assert!(
        cut_at < Duration::from_millis(1700),
        "cut late (timer restarted?): {cut_at:?}"
    );
}

#[test]
fn full_queue_stops_accepting_and_resumes_when_a_slot_frees() {
    let (ca, config) = plain_config();
    let server = TestServer::start_with(
        &config,
        |s| s.set_max_pending_connections(2).unwrap(),
        |_| {},
    );
    let client_cfg = client_config(&ca.identity.cert_der, None, &[]);
    let _a = connect(server.port, client_cfg.clone()).unwrap();
    let _b = connect(server.port, client_cfg.clone()).unwrap();
    server.events.wait_until("two queued", |e| {
        e.iter()
            .filter(|e| e.kind == PendingConnectionAvailable)
            .count()
            == 2
    });
    // The third client connects (kernel backlog) but is not accepted.
    let third = thread::spawn({
        let cfg = client_cfg.clone();
        let port = server.port;
        move || connect(port, cfg).map(|c| port_of(&c))
    });
    thread::sleep(Duration::from_millis(300));
    let accepted = server
        .events
        .all()
        .iter()
        .filter(|e| e.kind == NewConnection)
        .count();
    assert_eq!(accepted, 2, "nothing is accepted while the queue is full");
    // Taking one frees a slot: the third is accepted and handshaken.
    let first = server.server.next_pending_connection().unwrap();
    let third_port = third.join().unwrap().unwrap();
    assert_eq!(
        server.events.kinds(third_port),
        [
            NewConnection,
            StartedEncryptionHandshake,
            PendingConnectionAvailable
        ]
    );
    drop(first);
}

#[test]
fn handshake_completing_while_the_queue_is_full_waits_for_a_slot() {
    let (ca, config) = plain_config();
    let server = TestServer::start_with(
        &config,
        |s| s.set_max_pending_connections(1).unwrap(),
        |_| {},
    );
    let client_cfg = client_config(&ca.identity.cert_der, None, &[]);
    // A's handshake starts (its ClientHello is in) before the queue fills.
    let mut a_tcp = server.tcp();
    let a_port = a_tcp.local_addr().unwrap().port();
    let mut a_tls =
        rustls::ClientConnection::new(client_cfg.clone(), "localhost".try_into().unwrap()).unwrap();
    a_tls.write_tls(&mut a_tcp).unwrap();
    server.events.wait_until("A started", |e| {
        e.iter()
            .any(|e| e.peer_port == Some(a_port) && e.kind == StartedEncryptionHandshake)
    });
    let b = connect(server.port, client_cfg.clone()).unwrap();
    server.events.kinds(port_of(&b));
    // A finishes its handshake while the queue is full.
    while a_tls.is_handshaking() {
        a_tls.complete_io(&mut a_tcp).unwrap();
    }
    thread::sleep(Duration::from_millis(200));
    assert!(
        !server
            .events
            .of(a_port)
            .iter()
            .any(|e| e.kind == PendingConnectionAvailable),
        "A must wait for a slot"
    );
    let b_conn = server.server.next_pending_connection().unwrap();
    assert_eq!(b_conn.peer_addr().port(), port_of(&b));
    assert_eq!(
        server.events.kinds(a_port),
        [
            NewConnection,
            StartedEncryptionHandshake,
            PendingConnectionAvailable
        ]
    );
    let a_conn = server.server.next_pending_connection().unwrap();
    assert_eq!(a_conn.peer_addr().port(), a_port);
}

#[test]
fn handshake_bound_holds_new_clients_in_the_backlog() {
    let (ca, config) = plain_config();
    let server = TestServer::start_with(
        &config,
        |s| {
            s.set_max_concurrent_handshakes(2).unwrap();
            s.set_handshake_timeout(400).unwrap();
        },
        |_| {},
    );
    let _silent: Vec<TcpStream> = (0..2).map(|_| server.tcp()).collect();
    server.events.wait_until("two silent accepted", |e| {
        e.iter().filter(|e| e.kind == NewConnection).count() == 2
    });
    let good = connect(server.port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    let good_port = port_of(&good);
    server.events.kinds(good_port);
    let events = server.events.all();
    let first_timeout = events
        .iter()
        .position(|e| e.socket_error == SocketError::SocketTimeout)
        .unwrap();
    let good_accepted = events
        .iter()
        .position(|e| e.peer_port == Some(good_port) && e.kind == NewConnection)
        .unwrap();
    assert!(
        good_accepted > first_timeout,
        "accepted only once a handshake slot freed"
    );
}

#[test]
fn silent_clients_do_not_starve_a_good_client() {
    let (ca, config) = plain_config();
    let server = TestServer::start_with(
        &config,
        |s| s.set_handshake_timeout(30_000).unwrap(),
        |_| {},
    );
    let _silent: Vec<TcpStream> = (0..200).map(|_| server.tcp()).collect();
    let started = Instant::now();
    let good = connect(server.port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    assert_eq!(
        server.events.kinds(port_of(&good)),
        [
            NewConnection,
            StartedEncryptionHandshake,
            PendingConnectionAvailable
        ]
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        !server.events.all().iter().any(|e| e.kind == ErrorOccurred),
        "no silent client timed out yet"
    );
}

#[test]
fn close_aborts_handshakes_closes_the_queue_and_stops_events() {
    let (ca, config) = plain_config();
    let server = TestServer::start(&config);
    let mut silent: Vec<TcpStream> = (0..20).map(|_| server.tcp()).collect();
    let queued = connect(server.port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    server.events.kinds(port_of(&queued));
    server.events.wait_until("all accepted", |e| {
        e.iter().filter(|e| e.kind == NewConnection).count() == 21
    });
    server.server.close();
    let after_close = server.events.all().len();
    assert!(!server.server.is_listening());
    assert!(!server.server.has_pending_connections());
    for tcp in &mut silent {
        assert!(closed_by_server(tcp));
    }
    let mut queued_tcp = queued.sock;
    assert!(closed_by_server(&mut queued_tcp));
    assert_eq!(
        server.events.all().len(),
        after_close,
        "no event after close returns"
    );
    // The server can listen again.
    server.server.listen(Some("127.0.0.1"), 0).unwrap();
    let port = server.server.local_addr().unwrap().port();
    let again = connect(port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    server.events.kinds(port_of(&again));
}

#[test]
fn dropping_the_server_with_handshakes_in_flight_joins_everything() {
    let (_ca, config) = plain_config();
    let server = TestServer::start(&config);
    let mut silent: Vec<TcpStream> = (0..10).map(|_| server.tcp()).collect();
    server.events.wait_until("all accepted", |e| {
        e.iter().filter(|e| e.kind == NewConnection).count() == 10
    });
    let TestServer {
        server: handle,
        events,
        ..
    } = server;
    let count = events.all().len();
    drop(handle);
    for tcp in &mut silent {
        assert!(closed_by_server(tcp));
    }
    assert_eq!(events.all().len(), count);
}

#[test]
fn close_from_inside_a_callback() {
    let (_ca, config) = plain_config();
    let holder: Arc<std::sync::Mutex<Weak<Server>>> = Arc::default();
    let holder_in_cb = holder.clone();
    let server = TestServer::start_with(
        &config,
        |_| {},
        move |event| {
            if event.kind == NewConnection {
                if let Some(server) = holder_in_cb.lock().unwrap().upgrade() {
                    server.close();
                }
            }
        },
    );
    *holder.lock().unwrap() = Arc::downgrade(&server.server);
    let mut tcp = server.tcp();
    assert!(closed_by_server(&mut tcp));
    server.events.wait_until("the callback ran", |e| {
        e.iter().any(|e| e.kind == NewConnection)
    });
    assert!(!server.server.is_listening());
}

#[test]
fn next_pending_connection_from_inside_the_pending_callback() {
    let (ca, config) = plain_config();
    let (tx, rx) = mpsc::channel::<Arc<Connection>>();
    let tx = std::sync::Mutex::new(tx);
    let holder: Arc<std::sync::Mutex<Weak<Server>>> = Arc::default();
    let holder_in_cb = holder.clone();
    let server = TestServer::start_with(
        &config,
        |_| {},
        move |event| {
            if event.kind == PendingConnectionAvailable {
                let server = holder_in_cb.lock().unwrap().upgrade().unwrap();
                let conn = server
                    .next_pending_connection()
                    .expect("queued before the event");
                assert!(Arc::ptr_eq(&conn, event.connection.unwrap()));
                tx.lock().unwrap().send(conn).unwrap();
            }
        },
    );
    *holder.lock().unwrap() = Arc::downgrade(&server.server);
    let mut client = connect(server.port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    let conn = rx.recv_timeout(SOON).unwrap();
    client.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    let mut got = 0;
    while got < 5 {
        got += conn.read(&mut buf[got..]).unwrap();
    }
    assert_eq!(&buf, b"hello");
}

#[test]
fn certificates_rotate_while_listening() {
    let ca = TestCa::new("ca");
    let first = ca.server();
    let second = ca.server();
    let server = TestServer::start(&server_config(&first, PeerVerifyMode::VerifyNone, None));
    let mut old = connect(server.port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    assert_eq!(old.conn.peer_certificates().unwrap()[0], first.cert_der);
    // Taken before the second client connects, so the queue's order cannot
    // hand over the wrong one.
    let old_conn = server.accept_one();
    assert_eq!(old_conn.peer_addr().port(), port_of(&old));
    server
        .server
        .set_config(&server_config(&second, PeerVerifyMode::VerifyNone, None))
        .unwrap();
    let new = connect(server.port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    assert_eq!(new.conn.peer_certificates().unwrap()[0], second.cert_der);
    // The connection accepted before the rotation goes on.
    old.write_all(b"still here").unwrap();
    old.flush().unwrap();
    let mut buf = [0u8; 16];
    let n = old_conn.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"still here");
    old_conn.write(b"and here").unwrap();
    let mut back = [0u8; 8];
    old.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"and here");
}

#[test]
fn echo_one_mebibyte_in_both_directions_at_once() {
    let (ca, config) = plain_config();
    let server = TestServer::start(&config);
    let echo = spawn_echo(&server.server);
    let client = connect(server.port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    // The client writes everything before reading anything back, so the
    // server must keep reading while its writes block.
    let (sock_r, sock_w) = (client.sock.try_clone().unwrap(), client.sock);
    let conn = Arc::new(std::sync::Mutex::new(client.conn));
    let writer = {
        let (conn, payload) = (conn.clone(), payload.clone());
        thread::spawn(move || {
            let mut sock = sock_w;
            for chunk in payload.chunks(16 * 1024) {
                let mut c = conn.lock().unwrap();
                c.writer().write_all(chunk).unwrap();
                while c.wants_write() {
                    let mut out = Vec::new();
                    c.write_tls(&mut out).unwrap();
                    drop(c);
                    sock.write_all(&out).unwrap();
                    c = conn.lock().unwrap();
                }
            }
        })
    };
    let mut received = Vec::with_capacity(payload.len());
    let mut sock = sock_r;
    let mut buf = vec![0u8; 64 * 1024];
    while received.len() < payload.len() {
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "server closed early");
        let mut c = conn.lock().unwrap();
        let mut incoming = &buf[..n];
        while !incoming.is_empty() {
            c.read_tls(&mut incoming).unwrap();
            c.process_new_packets().unwrap();
            let _ = c.reader().read_to_end(&mut received);
        }
    }
    writer.join().unwrap();
    assert!(received == payload, "echoed bytes differ");
    let mut c = conn.lock().unwrap();
    c.send_close_notify();
    let mut out = Vec::new();
    c.write_tls(&mut out).unwrap();
    sock.write_all(&out).unwrap();
    drop(c);
    echo.join().unwrap();
}

#[test]
fn wait_for_new_connection_reports_what_it_saw() {
    let (ca, config) = plain_config();
    let idle = Server::new();
    assert_eq!(
        idle.wait_for_new_connection(Some(Duration::from_millis(10))),
        WaitOutcome::NotListening
    );
    let server = TestServer::start(&config);
    assert_eq!(
        server
            .server
            .wait_for_new_connection(Some(Duration::from_millis(50))),
        WaitOutcome::TimedOut
    );
    let _client = connect(server.port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    assert_eq!(
        server.server.wait_for_new_connection(Some(SOON)),
        WaitOutcome::Ready
    );
    assert!(server.server.has_pending_connections());
    assert!(server.server.next_pending_connection().is_some());
    assert!(server.server.next_pending_connection().is_none());
}

#[test]
fn close_wakes_a_thread_blocked_in_wait_for_new_connection() {
    let (_ca, config) = plain_config();
    let server = TestServer::start(&config);
    let waiter = {
        let server = server.server.clone();
        thread::spawn(move || server.wait_for_new_connection(None))
    };
    thread::sleep(Duration::from_millis(100));
    server.server.close();
    assert_eq!(waiter.join().unwrap(), WaitOutcome::NotListening);
}

/// A connection knows the address it was accepted on: the listener's own,
/// or, behind a wildcard listener, the one the client connected to.
#[test]
fn a_connection_reports_the_address_it_was_accepted_on() {
    let (ca, config) = plain_config();
    for listen_on in ["127.0.0.1", "0.0.0.0"] {
        let server = Server::new();
        server.set_config(&config).unwrap();
        server.listen(Some(listen_on), 0).unwrap();
        let port = server.local_addr().unwrap().port();
        let client = connect(port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
        assert_eq!(
            server.wait_for_new_connection(Some(SOON)),
            WaitOutcome::Ready
        );
        let conn = server.next_pending_connection().unwrap();
        let expected: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert_eq!(conn.local_addr(), expected, "listening on {listen_on}");
        assert_eq!(conn.peer_addr(), client.sock.local_addr().unwrap());
    }
}

#[test]
fn pause_and_resume_accepting() {
    let (ca, config) = plain_config();
    let server = TestServer::start(&config);
    server.server.pause_accepting();
    // The accept thread may be blocked in poll; a connection wakes it, and
    // it must then decline to accept.
    let waiting = thread::spawn({
        let cfg = client_config(&ca.identity.cert_der, None, &[]);
        let port = server.port;
        move || connect(port, cfg).map(|c| port_of(&c))
    });
    thread::sleep(Duration::from_millis(300));
    assert!(
        server.events.all().is_empty(),
        "nothing accepted while paused"
    );
    server.server.resume_accepting();
    let port = waiting.join().unwrap().unwrap();
    server.events.kinds(port);
}

#[test]
fn listen_errors_are_specific() {
    let (_ca, config) = plain_config();
    let server = Server::new();
    assert_eq!(
        server.listen(Some("127.0.0.1"), 0).unwrap_err().kind(),
        ErrorKind::InvalidState
    );
    server.set_config(&config).unwrap();
    assert_eq!(
        server.listen(Some("not an address"), 0).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        server.listen(Some("192.0.2.1"), 0).unwrap_err().kind(),
        ErrorKind::AddressNotAvailable
    );
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = server.listen(Some("127.0.0.1"), port).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddressInUse);
    assert_eq!(server.server_error().0, SocketError::AddressInUse);
    server.listen(Some("127.0.0.1"), 0).unwrap();
    assert_eq!(
        server.listen(Some("127.0.0.1"), 0).unwrap_err().kind(),
        ErrorKind::InvalidState
    );
    assert!(server.socket_descriptor() >= 0);
    server.close();
    assert_eq!(server.socket_descriptor(), -1);
    assert!(server.local_addr().is_none());
}

#[test]
fn any_address_is_dual_stack() {
    let (ca, config) = plain_config();
    let server = Server::new();
    server.set_config(&config).unwrap();
    server.listen(None, 0).unwrap();
    let port = server.local_addr().unwrap().port();
    let cfg = client_config(&ca.identity.cert_der, None, &[]);
    let _v4 = connect(port, cfg.clone()).unwrap();
    assert_eq!(
        server.wait_for_new_connection(Some(SOON)),
        WaitOutcome::Ready
    );
    let conn = server.next_pending_connection().unwrap();
    assert_eq!(
        conn.peer_addr().ip().to_string(),
        "127.0.0.1",
        "IPv4 peers appear as IPv4"
    );
    // IPv6 clients too, where the host has IPv6 loopback.
    if let Ok(v6) = connect_to(("::1", port), cfg) {
        assert_eq!(
            server.wait_for_new_connection(Some(SOON)),
            WaitOutcome::Ready
        );
        let conn = server.next_pending_connection().unwrap();
        assert_eq!(conn.peer_addr().ip().to_string(), "::1");
        assert_eq!(conn.peer_addr().port(), port_of(&v6));
    }
}

#[test]
fn an_adopted_listener_serves_connections() {
    let (ca, config) = plain_config();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = Server::new();
    server.set_config(&config).unwrap();
    server.adopt_listener(listener).unwrap();
    assert_eq!(server.local_addr().unwrap().port(), port);
    let _client = connect(port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    assert_eq!(
        server.wait_for_new_connection(Some(SOON)),
        WaitOutcome::Ready
    );
}

/// A listener handed over with socket timeouts (set by a parent, say) does
/// not pass them on: a connection's blocking calls wait as long as they
/// must, as on a listener the library bound itself.
#[test]
fn an_adopted_listeners_socket_timeouts_do_not_reach_its_connections() {
    use socket2::{Domain, Socket, Type};
    let (ca, config) = plain_config();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    socket
        .set_write_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let address: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&address.into()).unwrap();
    socket.listen(16).unwrap();
    let listener = TcpListener::from(socket);
    let port = listener.local_addr().unwrap().port();
    let server = Server::new();
    server.set_config(&config).unwrap();
    server.adopt_listener(listener).unwrap();
    with_accepted_socket(&server, port, &ca, |accepted| {
        assert_eq!(accepted.read_timeout().unwrap(), None);
        assert_eq!(accepted.write_timeout().unwrap(), None);
    });
}

/// Connects a client to `port` and hands `check` the socket of the
/// connection `server` queues for it.
fn with_accepted_socket(server: &Server, port: u16, ca: &TestCa, check: impl FnOnce(SockRef<'_>)) {
    let _client = connect(port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    assert_eq!(
        server.wait_for_new_connection(Some(SOON)),
        WaitOutcome::Ready
    );
    let conn = server.next_pending_connection().unwrap();
    // SAFETY (test): the descriptor is the open connection's, and `conn`
    // outlives the borrow.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(conn.descriptor()) };
    check(SockRef::from(&fd));
}

#[test]
fn accepted_connections_block_and_have_nagle_off() {
    // Both are set on the listener (or left to Linux's defaults for
    // accepted sockets), not per connection: checked for a listener the
    // library opens and for an adopted non-blocking one.
    let (ca, config) = plain_config();
    let adopted = TcpListener::bind("127.0.0.1:0").unwrap();
    adopted.set_nonblocking(true).unwrap();
    let adopted_port = adopted.local_addr().unwrap().port();
    let own = Server::new();
    own.set_config(&config).unwrap();
    own.listen(Some("127.0.0.1"), 0).unwrap();
    let own_port = own.local_addr().unwrap().port();
    let theirs = Server::new();
    theirs.set_config(&config).unwrap();
    theirs.adopt_listener(adopted).unwrap();
    for (server, port) in [(&own, own_port), (&theirs, adopted_port)] {
        with_accepted_socket(server, port, &ca, |accepted| {
            assert!(accepted.tcp_nodelay().unwrap(), "Nagle on, port {port}");
            assert!(
                !accepted.nonblocking().unwrap(),
                "non-blocking, port {port}"
            );
        });
    }
}

#[test]
fn an_adopted_listener_gets_its_options_back_when_the_server_lets_go() {
    // Other copies of an adopted descriptor (systemd's, a parent's) share
    // the socket's options and its O_NONBLOCK.
    let (_ca, config) = plain_config();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let copy = listener.try_clone().unwrap();
    let shared = SockRef::from(&copy);
    let server = Server::new();
    server.set_config(&config).unwrap();
    server.adopt_listener(listener).unwrap();
    // Checked, so the test cannot pass by the library leaving them alone.
    assert!(shared.tcp_nodelay().unwrap(), "Nagle off while listening");
    assert!(
        shared.nonblocking().unwrap(),
        "non-blocking while listening"
    );
    server.close();
    assert!(!shared.tcp_nodelay().unwrap(), "Nagle back on after close");
    assert!(!shared.nonblocking().unwrap(), "blocking again after close");
}
