//! Handle lifetimes under concurrency (issue 11): racing listens leave one
//! session, and array lengths that overflow are refused before any memory
//! is read.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use sslserver::ffi::config::*;
use sslserver::ffi::sslserver_result::*;
use sslserver::{ErrorKind, EventKind, PeerVerifyMode, Server};

/// Two threads listen on one server at once; before the fix both could pass
/// the "already listening" check and the first session was orphaned, still
/// accepting and firing callbacks. Exactly one must win, every round.
#[test]
fn concurrent_listens_exactly_one_succeeds() {
    let ca = TestCa::new("lifetimes");
    let config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    for round in 0..200 {
        let server = Arc::new(Server::new());
        server.set_config(&config).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let (server, barrier) = (server.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    server.listen(Some("127.0.0.1"), 0)
                })
            })
            .collect();
        let results: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {results:?}");
        let lost = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert_eq!(lost.kind(), ErrorKind::InvalidState, "round {round}");
        server.close();
    }
}

/// listen racing sslserver_set_socket_descriptor (adopt_listener): one
/// wins, the other is INVALID_STATE and gets its listener back.
#[test]
fn listen_racing_an_adopted_descriptor_exactly_one_succeeds() {
    let ca = TestCa::new("lifetimes");
    let config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    for round in 0..200 {
        let server = Arc::new(Server::new());
        server.set_config(&config).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let adopter = {
            let (server, barrier) = (server.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                server.adopt_listener(listener).map_err(|(e, _)| e)
            })
        };
        barrier.wait();
        let listened = server.listen(Some("127.0.0.1"), 0);
        let adopted = adopter.join().unwrap();
        let results = [listened, adopted];
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: {results:?}"
        );
        let lost = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert_eq!(lost.kind(), ErrorKind::InvalidState, "round {round}");
        server.close();
    }
}

/// A count whose byte size wraps around usize must be refused, not turned
/// into a short slice over the caller's memory.
#[test]
fn lengths_that_overflow_are_invalid_argument() {
    let cfg = sslconfig_new();
    let code: i32 = 0;
    let huge = usize::MAX / 2 + 2; // * 4 wraps to a small number
    assert_eq!(
        sslconfig_set_ignored_ssl_errors(cfg, &code, huge),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    let name = c"x".as_ptr();
    assert_eq!(
        sslconfig_set_alpn_protocols(cfg, &name, usize::MAX / 4 + 2),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    // A byte length no object can have (a negative length converted).
    let byte = 0u8;
    assert_eq!(
        sslconfig_add_ignored_ssl_error(cfg, 9, &byte, usize::MAX),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_set_certificate_chain_pem(cfg, &byte, usize::MAX - 7),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    sslconfig_free(cfg);
}

/// A PENDING_CONNECTION_AVAILABLE callback that holds on until it hears that
/// a close returned (or gives up after a while). If it hears it, a callback
/// ran after close returned: the use-after-free of issue 11.
struct LateCallbackProbe {
    closed: Sender<()>,
    ran_after_close: Arc<AtomicBool>,
    entered: Receiver<()>,
    left: Receiver<()>,
}

impl LateCallbackProbe {
    /// Whether the callback heard of a returned close while it ran.
    fn ran_after_close(&self) -> bool {
        self.left
            .recv_timeout(Duration::from_secs(10))
            .expect("the pending callback returned");
        self.ran_after_close.load(Ordering::SeqCst)
    }
}

fn probe(server: &Server) -> LateCallbackProbe {
    let (closed, hear_closed) = channel::<()>();
    let (tell_entered, entered) = channel::<()>();
    let hear_closed = Mutex::new(hear_closed);
    let ran_after_close = Arc::new(AtomicBool::new(false));
    let flag = ran_after_close.clone();
    let tell_entered = Mutex::new(tell_entered);
    let (tell_left, left) = channel::<()>();
    let tell_left = Mutex::new(tell_left);
    server.set_callback(
        EventKind::PendingConnectionAvailable,
        Some(Arc::new(move |_event: &sslserver::Event<'_>| {
            let _ = tell_entered.lock().unwrap().send(());
            let heard = hear_closed
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_millis(500));
            if heard.is_ok() {
                flag.store(true, Ordering::SeqCst);
            }
            let _ = tell_left.lock().unwrap().send(());
        })),
    );
    LateCallbackProbe {
        closed,
        ran_after_close,
        entered,
        left,
    }
}

fn listening_server() -> (TestCa, Arc<Server>) {
    let ca = TestCa::new("lifetimes");
    let server = Arc::new(Server::new());
    server
        .set_config(&server_config(
            &ca.server(),
            PeerVerifyMode::VerifyNone,
            None,
        ))
        .unwrap();
    (ca, server)
}

/// Another thread takes the connection from the queue before close runs;
/// the handshake thread is still inside the pending callback. close must
/// not return before that callback has.
#[test]
fn no_callback_runs_after_close_returned_when_the_connection_was_taken() {
    let (ca, server) = listening_server();
    let probe = probe(&server);
    server.listen(Some("127.0.0.1"), 0).unwrap();
    let port = server.local_addr().unwrap().port();
    let _client = connect(port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    probe
        .entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the pending callback ran");
    let taken = server.next_pending_connection();
    assert!(taken.is_some(), "the handshaken connection was queued");
    server.close();
    let _ = probe.closed.send(());
    assert!(
        !probe.ran_after_close(),
        "a callback was still running after close returned"
    );
}

/// Two threads close at once while a callback runs: each must return only
/// when that callback is over, not just the one that did the work.
#[test]
fn concurrent_closes_each_wait_for_running_callbacks() {
    let (ca, server) = listening_server();
    let probe = probe(&server);
    server.listen(Some("127.0.0.1"), 0).unwrap();
    let port = server.local_addr().unwrap().port();
    let _client = connect(port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    probe
        .entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the pending callback ran");
    let closers: Vec<_> = (0..2)
        .map(|_| {
            let (server, closed) = (server.clone(), probe.closed.clone());
            thread::spawn(move || {
                server.close();
                let _ = closed.send(());
            })
        })
        .collect();
    for closer in closers {
        closer.join().unwrap();
    }
    assert!(
        !probe.ran_after_close(),
        "a callback was still running after a close returned"
    );
}

/// Two callbacks close their server at the same moment ("close is safe from
/// a callback"). Each used to skip only itself and wait for the other:
/// both hung, and every later close with them.
#[test]
fn two_callbacks_closing_at_once_both_return() {
    let (_ca, server) = listening_server();
    let weak = Arc::downgrade(&server);
    let both_inside = Arc::new(Barrier::new(2));
    let (returned, returns) = channel::<()>();
    let returned = Mutex::new(returned);
    server.set_callback(
        EventKind::NewConnection,
        Some(Arc::new(move |_: &sslserver::Event<'_>| {
            both_inside.wait();
            if let Some(server) = weak.upgrade() {
                server.close();
            }
            let _ = returned.lock().unwrap().send(());
        })),
    );
    server.listen(Some("127.0.0.1"), 0).unwrap();
    let port = server.local_addr().unwrap().port();
    let _a = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _b = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let returned = (0..2)
        .filter(|_| returns.recv_timeout(Duration::from_secs(20)).is_ok())
        .count();
    if returned != 2 {
        // Dropping the server would hang this test too.
        std::mem::forget(server);
        panic!("{returned} of 2 callbacks returned from close: deadlock");
    }
}

/// A callback closes its own server and goes on using its userdata; a close
/// from another thread after that must still wait for the callback, or the
/// application frees the userdata under it.
#[test]
fn a_later_close_waits_for_a_callback_that_closed_the_server() {
    let (_ca, server) = listening_server();
    let weak = Arc::downgrade(&server);
    let (closed, closes) = channel::<()>();
    let closed = Mutex::new(closed);
    let callback_done = Arc::new(AtomicBool::new(false));
    let done = callback_done.clone();
    server.set_callback(
        EventKind::NewConnection,
        Some(Arc::new(move |_: &sslserver::Event<'_>| {
            if let Some(server) = weak.upgrade() {
                server.close();
            }
            let _ = closed.lock().unwrap().send(());
            // Still working with the application's data; the close below
            // starts meanwhile and must not return before this ends.
            thread::sleep(Duration::from_millis(300));
            done.store(true, Ordering::SeqCst);
        })),
    );
    server.listen(Some("127.0.0.1"), 0).unwrap();
    let port = server.local_addr().unwrap().port();
    let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    closes.recv_timeout(Duration::from_secs(20)).unwrap();
    server.close();
    assert!(
        callback_done.load(Ordering::SeqCst),
        "close returned while a callback of the server was still running"
    );
}
