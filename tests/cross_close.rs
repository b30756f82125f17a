//! Callbacks that close servers other than their own. close may be called
//! from any callback and returns once no callback of that server can run
//! any more (apart from the caller's own, still on the stack); two servers
//! whose callbacks close each other must therefore both finish closing,
//! not wait for each other forever.
//!
//! Every wait is bounded: a deadlock fails the test (and leaks the stuck
//! servers, whose drop would hang too) instead of hanging CI.

mod common;

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use sslserver::{Event, EventKind, Server, TlsConfig};

/// How long a close (or a meeting of callbacks) may take before the test
/// calls it a deadlock.
const BOUND: Duration = Duration::from_secs(10);

/// `n` threads meet here; false if they did not all arrive within `BOUND`.
struct Rendezvous {
    arrived: Mutex<usize>,
    all_here: Condvar,
    n: usize,
}

impl Rendezvous {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Rendezvous {
            arrived: Mutex::new(0),
            all_here: Condvar::new(),
            n,
        })
    }

    fn arrive(&self) -> bool {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.all_here.notify_all();
        let (arrived, timeout) = self
            .all_here
            .wait_timeout_while(arrived, BOUND, |a| *a < self.n)
            .unwrap();
        drop(arrived);
        !timeout.timed_out()
    }
}

/// The server a callback will close, known once both servers exist.
type Target = Arc<OnceLock<Weak<Server>>>;

/// A callback that, the first time `trigger` fires, runs `before` (still
/// inside the callback), meets the other server's callback, closes `target`
/// and reports `name` on `done`.
fn cross_closer(
    name: &'static str,
    trigger: EventKind,
    meet: Arc<Rendezvous>,
    target: Target,
    done: Sender<String>,
    before: impl Fn() + Send + Sync + 'static,
) -> impl Fn(&Event<'_>) + Send + Sync + 'static {
    let fired = AtomicBool::new(false);
    let done = Mutex::new(done);
    move |event| {
        if event.kind != trigger || fired.swap(true, Ordering::AcqRel) {
            return;
        }
        before();
        if !meet.arrive() {
            let _ = done
                .lock()
                .unwrap()
                .send(format!("{name}: the other callback never arrived"));
            return;
        }
        let target = target.get().and_then(Weak::upgrade).expect("target set");
        let started = Instant::now();
        target.close();
        assert!(!target.is_listening());
        let _ = done.lock().unwrap().send(format!(
            "{name} closed its target in {:?}",
            started.elapsed()
        ));
    }
}

/// Waits for `n` reports; on a timeout leaks `keep` (dropping a stuck server
/// would hang in its close) and fails.
fn expect_reports<T>(rx: &Receiver<String>, n: usize, keep: T, what: &str) -> (Vec<String>, T) {
    let mut reports = Vec::new();
    for _ in 0..n {
        match rx.recv_timeout(BOUND) {
            Ok(report) => reports.push(report),
            Err(_) => {
                std::mem::forget(keep);
                panic!("{what}: deadlock, only {reports:?} returned within {BOUND:?}");
            }
        }
    }
    for report in &reports {
        assert!(!report.contains("never arrived"), "{what}: {report}");
    }
    (reports, keep)
}

/// Two servers whose callbacks close each other, both triggered by
/// `trigger`; `connect` makes each server fire it once. A's callback first
/// runs `a_before` with its own server.
fn two_servers_closing_each_other(
    config: &TlsConfig,
    trigger: EventKind,
    what: &str,
    connect: impl Fn(u16) -> Box<dyn std::any::Any + Send>,
    a_before: impl Fn(&Server) + Send + Sync + 'static,
) {
    let meet = Rendezvous::new(2);
    let (done_tx, done_rx) = channel();
    let (a_target, b_target, a_self): (Target, Target, Target) = Default::default();
    let a_self_in_cb = a_self.clone();
    let a = TestServer::start_with(
        config,
        |_| {},
        cross_closer(
            "A's callback",
            trigger,
            meet.clone(),
            a_target.clone(),
            done_tx.clone(),
            move || a_before(&a_self_in_cb.get().and_then(Weak::upgrade).unwrap()),
        ),
    );
    let b = TestServer::start_with(
        config,
        |_| {},
        cross_closer(
            "B's callback",
            trigger,
            meet,
            b_target.clone(),
            done_tx,
            || {},
        ),
    );
    // A's callback closes B, B's callback closes A.
    a_self.set(Arc::downgrade(&a.server)).unwrap();
    a_target.set(Arc::downgrade(&b.server)).unwrap();
    b_target.set(Arc::downgrade(&a.server)).unwrap();

    let clients = (connect(a.port), connect(b.port));
    let (reports, (a, b, clients)) = expect_reports(&done_rx, 2, (a, b, clients), what);
    eprintln!("{what}: {reports:?}");
    assert!(!a.server.is_listening() && !b.server.is_listening());
    drop_within((a, b, clients), BOUND, what);
}

/// A plain TCP connection: enough for NEW_CONNECTION, fired on the
/// connection's thread before the handshake.
fn tcp_only(port: u16) -> Box<dyn std::any::Any + Send> {
    Box::new(TcpStream::connect(("127.0.0.1", port)).unwrap())
}

#[test]
fn new_connection_callbacks_closing_each_others_server_both_finish() {
    let (_ca, config) = plain_config();
    two_servers_closing_each_other(
        &config,
        EventKind::NewConnection,
        "NEW_CONNECTION callbacks closing each other's server",
        tcp_only,
        |_| {},
    );
}

#[test]
fn pending_callbacks_closing_each_others_server_both_finish() {
    let (ca, config) = plain_config();
    let client = client_config(&ca.identity.cert_der, None, &[]);
    two_servers_closing_each_other(
        &config,
        EventKind::PendingConnectionAvailable,
        "PENDING_CONNECTION_AVAILABLE callbacks closing each other's server",
        move |port| {
            // On a helper thread: the client's handshake ends about when
            // the server's PENDING_CONNECTION_AVAILABLE fires, and may fail
            // once the servers close.
            let client = client.clone();
            thread::spawn(move || {
                let _client = connect(port, client);
                thread::sleep(BOUND);
            });
            Box::new(())
        },
        |_| {},
    );
}

/// A's callback closes its own server (which it may) and listens again, so
/// its session is retired while the callback still runs; then it closes B
/// while B's callback closes A. A's close must not wait forever for the
/// retired session's callback.
#[test]
fn retired_session_callback_and_other_server_closing_each_other_both_finish() {
    let (_ca, config) = plain_config();
    two_servers_closing_each_other(
        &config,
        EventKind::NewConnection,
        "a retired session's callback and B's callback closing each other's server",
        tcp_only,
        |me| {
            me.close();
            me.listen(Some("127.0.0.1"), 0).unwrap();
        },
    );
}

/// A callback closes its own server while another thread is already inside
/// close of the same server (waiting for that callback): both return.
#[test]
fn callback_closing_its_own_server_while_another_thread_closes_it_both_finish() {
    let (_ca, config) = plain_config();
    let (done_tx, done_rx) = channel::<String>();
    let (in_callback_tx, in_callback_rx) = channel::<()>();
    let (go_tx, go_rx) = channel::<()>();
    let (in_callback_tx, go_rx) = (Mutex::new(in_callback_tx), Mutex::new(go_rx));
    let me: Target = Default::default();
    let me_in_cb = me.clone();
    let done_in_cb = Mutex::new(done_tx.clone());
    let fired = AtomicBool::new(false);
    let a = TestServer::start_with(
        &config,
        |_| {},
        move |event| {
            if event.kind != EventKind::NewConnection || fired.swap(true, Ordering::AcqRel) {
                return;
            }
            let _ = in_callback_tx.lock().unwrap().send(());
            if go_rx.lock().unwrap().recv_timeout(BOUND).is_err() {
                return;
            }
            me_in_cb.get().and_then(Weak::upgrade).unwrap().close();
            let _ = done_in_cb
                .lock()
                .unwrap()
                .send("the callback's own close returned".into());
        },
    );
    me.set(Arc::downgrade(&a.server)).unwrap();
    let _tcp = tcp_only(a.port);
    in_callback_rx
        .recv_timeout(BOUND)
        .expect("the callback never ran");
    let server = a.server.clone();
    thread::spawn(move || {
        server.close();
        let _ = done_tx.send("the other thread's close returned".into());
    });
    // Let the other thread get into close (it waits for the callback).
    thread::sleep(Duration::from_millis(200));
    go_tx.send(()).unwrap();
    let what = "a callback and another thread closing the same server";
    let (reports, a) = expect_reports(&done_rx, 2, a, what);
    eprintln!("{what}: {reports:?}");
    assert!(!a.server.is_listening());
    drop_within(a, BOUND, what);
}

/// The exception is for callbacks closing a server, no wider: a callback
/// that closes another server waits for that server's callbacks that are
/// busy with anything else.
#[test]
fn a_callback_closing_another_server_waits_for_its_busy_callbacks() {
    let (_ca, config) = plain_config();
    let (b_entered_tx, b_entered) = channel::<()>();
    let (release_b, b_released) = channel::<()>();
    let (b_entered_tx, b_released) = (Mutex::new(b_entered_tx), Mutex::new(b_released));
    let b = TestServer::start_with(
        &config,
        |_| {},
        move |event| {
            if event.kind == EventKind::NewConnection {
                let _ = b_entered_tx.lock().unwrap().send(());
                let _ = b_released.lock().unwrap().recv_timeout(BOUND);
            }
        },
    );
    let target: Target = Default::default();
    target.set(Arc::downgrade(&b.server)).unwrap();
    let (closing_tx, closing) = channel::<()>();
    let (closed_tx, closed) = channel::<()>();
    let (closing_tx, closed_tx) = (Mutex::new(closing_tx), Mutex::new(closed_tx));
    let a = TestServer::start_with(
        &config,
        |_| {},
        move |event| {
            if event.kind == EventKind::NewConnection {
                let _ = closing_tx.lock().unwrap().send(());
                target.get().and_then(Weak::upgrade).unwrap().close();
                let _ = closed_tx.lock().unwrap().send(());
            }
        },
    );
    let b_client = tcp_only(b.port);
    assert!(
        b_entered.recv_timeout(BOUND).is_ok(),
        "no NEW_CONNECTION on B"
    );
    let a_client = tcp_only(a.port);
    assert!(
        closing.recv_timeout(BOUND).is_ok(),
        "no NEW_CONNECTION on A"
    );
    assert!(
        closed.recv_timeout(Duration::from_millis(300)).is_err(),
        "A's callback closed B while B's callback was still busy"
    );
    release_b.send(()).unwrap();
    assert!(
        closed.recv_timeout(BOUND).is_ok(),
        "A's callback never finished closing B"
    );
    drop_within((a, b, a_client, b_client), BOUND, "busy callback");
}
