//! Descriptor exhaustion: with the process's descriptor table full, accept()
//! fails with EMFILE. The server must report ACCEPT_ERROR with
//! SOCKET_RESOURCE, back off (5 ms doubling to 500 ms) instead of spinning
//! on the error, and serve the waiting client by itself once descriptors
//! free up.
//!
//! This binary holds one test only: it lowers RLIMIT_NOFILE for the whole
//! process, which would break any test running beside it.

mod common;

use std::fs::File;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::descriptors::{fill_descriptor_table, Limit};
use common::*;
use rustls::ClientConnection;
use sslserver::{EventKind::*, PeerVerifyMode, SocketError};

#[test]
fn accept_backs_off_on_emfile_and_service_resumes_when_descriptors_free_up() {
    // Everything that needs a descriptor is set up first.
    let ca = TestCa::new("ca");
    let config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    let server = TestServer::start(&config);
    let client_cfg = client_config(&ca.identity.cert_der, None, &[]);
    assert!(poll_until(SOON, || library_threads()
        .iter()
        .any(|(_, name)| name == "sslserver-accep"))
    .is_some());
    let accept_tid = library_threads()
        .into_iter()
        .find(|(_, name)| name == "sslserver-accep")
        .unwrap()
        .0;
    let accept_stat = ThreadStat::open(accept_tid).expect("the accept thread runs");

    let limit = Limit::lower_to(open_fds() as u64 + 64);
    let mut fillers = fill_descriptor_table();
    // Room for exactly the client's socket: the server's accept then finds
    // the table full.
    fillers.pop();
    let mut tcp = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let client_port = tcp.local_addr().unwrap().port();
    assert_eq!(
        File::open("/dev/null").unwrap_err().raw_os_error(),
        Some(libc::EMFILE),
        "the table is full again"
    );
    let mut tls =
        ClientConnection::new(client_cfg.clone(), "localhost".try_into().unwrap()).unwrap();
    // The ClientHello waits in the kernel until the server accepts.
    tls.write_tls(&mut tcp).unwrap();

    // The first accept error, then a window in which the accept thread backs off.
    let events = server.events.wait_until("an ACCEPT_ERROR", |events| {
        events.iter().any(|e| e.kind == AcceptError)
    });
    let first = events
        .iter()
        .find(|e| e.kind == AcceptError)
        .unwrap()
        .clone();
    assert_eq!(first.socket_error, SocketError::SocketResource);
    assert_eq!(first.peer_port, None, "ACCEPT_ERROR concerns no connection");
    assert!(
        first.description.contains("Too many open files"),
        "{}",
        first.description
    );
    let (error, text) = server.server.server_error();
    assert_eq!(error, SocketError::SocketResource);
    assert!(text.contains("Too many open files"), "{text}");

    let window = Duration::from_secs(2);
    let ticks_before = accept_stat.ticks().unwrap();
    std::thread::sleep(window);
    let ticks = accept_stat.ticks().unwrap() - ticks_before;
    let errors: Vec<Instant> = server
        .events
        .all()
        .iter()
        .filter(|e| e.kind == AcceptError)
        .map(|e| e.at)
        .collect();
    let in_window = errors
        .iter()
        .filter(|at| at.duration_since(first.at) <= window)
        .count();
    let last_second = errors
        .iter()
        .filter(|at| at.duration_since(first.at) > window / 2)
        .count();
    let cpu = Duration::from_millis(ticks * 1000 / clock_ticks_per_second());
    eprintln!(
        "descriptor table full for {window:?}: {in_window} ACCEPT_ERRORs ({last_second} in the \
         second half), accept thread CPU {cpu:?}"
    );
    assert!(in_window >= 2, "the accept thread retries");
    assert!(
        in_window < 50,
        "{in_window} accept errors in {window:?}: not backing off"
    );
    assert!(
        last_second <= 5,
        "{last_second} errors in the second half: not backing off"
    );
    assert!(
        cpu < Duration::from_millis(200),
        "the accept thread used {cpu:?} of CPU in {window:?}: spinning"
    );
    assert!(
        server.events.of(client_port).is_empty(),
        "not accepted while the table is full"
    );

    // Free the descriptors: the waiting client is accepted and handshaken
    // without anyone touching the server.
    drop(fillers);
    let freed = Instant::now();
    tcp.set_read_timeout(Some(SOON)).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp)
            .expect("the waiting client completes its handshake");
    }
    let events = server.events.finished(client_port);
    let took = freed.elapsed();
    eprintln!("served {took:?} after the descriptors were freed");
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            NewConnection,
            StartedEncryptionHandshake,
            PendingConnectionAvailable
        ]
    );
    assert!(took < Duration::from_secs(3), "resumed after {took:?}");
    assert!(server.server.next_pending_connection().is_some());
    // The errors stop, and later clients are served normally.
    let errors_then = server
        .events
        .all()
        .iter()
        .filter(|e| e.kind == AcceptError)
        .count();
    let again = connect(server.port, client_cfg).unwrap();
    assert_eq!(
        server.events.kinds(port_of(&again)),
        [
            NewConnection,
            StartedEncryptionHandshake,
            PendingConnectionAvailable
        ]
    );
    let errors_now = server
        .events
        .all()
        .iter()
        .filter(|e| e.kind == AcceptError)
        .count();
    assert_eq!(
        errors_now, errors_then,
        "no accept error once descriptors are free"
    );
    drop(limit);
}
