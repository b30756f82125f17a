//! Closes called from ACCEPT_ERROR callbacks, which run on a server's
//! accept thread:
//! - A's ACCEPT_ERROR callback closes server B while B's callback (on a
//!   connection thread, or B's own ACCEPT_ERROR on its accept thread)
//!   closes A: both closes must finish, as when two connection callbacks
//!   close each other (tests/cross_close.rs);
//! - an ACCEPT_ERROR callback closes its own server and goes on: a close
//!   from outside any callback must still wait for it.
//!
//! This binary holds one test only: it fills the process's descriptor table
//! (under a lowered RLIMIT_NOFILE) to make accepts fail, which would break
//! any test running beside it.

mod common;

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread;
use std::time::Duration;

use common::descriptors::{fill_descriptor_table, Limit};
use common::*;
use sslserver::{EventKind, PeerVerifyMode, Server};

/// How long a close (or a meeting of the callbacks) may take before the
/// test calls it a deadlock.
const BOUND: Duration = Duration::from_secs(10);

/// The server a callback will close, known once both servers exist.
type Target = Arc<OnceLock<Weak<Server>>>;

/// One side of a meeting of the two callbacks: tells the other it is here
/// and waits (bounded) for the other to be.
struct Meeting {
    here: Mutex<Sender<()>>,
    other: Mutex<Receiver<()>>,
}

fn meeting() -> (Meeting, Meeting) {
    let (a_here, b_sees) = channel();
    let (b_here, a_sees) = channel();
    let a = Meeting {
        here: Mutex::new(a_here),
        other: Mutex::new(a_sees),
    };
    let b = Meeting {
        here: Mutex::new(b_here),
        other: Mutex::new(b_sees),
    };
    (a, b)
}

impl Meeting {
    fn meet(&self) -> bool {
        let _ = self.here.lock().unwrap().send(());
        self.other.lock().unwrap().recv_timeout(BOUND).is_ok()
    }
}

/// On its first `trigger`: tells `entered`, meets the other callback,
/// closes `target` and reports on `done`.
fn closer(
    name: &'static str,
    trigger: EventKind,
    meeting: Meeting,
    target: Target,
    entered: Sender<()>,
    done: Sender<String>,
) -> impl Fn(&sslserver::Event<'_>) + Send + Sync + 'static {
    let fired = AtomicBool::new(false);
    let (entered, done) = (Mutex::new(entered), Mutex::new(done));
    move |event| {
        if event.kind != trigger || fired.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = entered.lock().unwrap().send(());
        let report = if meeting.meet() {
            let target = target.get().and_then(Weak::upgrade).expect("target set");
            target.close();
            format!("{name} closed its target")
        } else {
            format!("{name}: the other callback never arrived")
        };
        let _ = done.lock().unwrap().send(report);
    }
}

#[test]
fn closes_from_accept_error_callbacks_finish_and_are_waited_for() {
    // The scenarios share the process's descriptor table: one after the other.
    cross_close(EventKind::NewConnection);
    cross_close(EventKind::AcceptError);
    own_close_then_outside_close();
}

/// A's ACCEPT_ERROR callback closes B while B's `b_trigger` callback
/// closes A.
fn cross_close(b_trigger: EventKind) {
    let ca = TestCa::new("ca");
    let config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    let (a_meeting, b_meeting) = meeting();
    let (done, reports) = channel();
    let (entered, b_entered) = channel();
    let (a_target, b_target): (Target, Target) = Default::default();
    let a = TestServer::start_with(
        &config,
        |s| s.pause_accepting(),
        closer(
            "A's ACCEPT_ERROR",
            EventKind::AcceptError,
            a_meeting,
            a_target.clone(),
            channel().0,
            done.clone(),
        ),
    );
    let b_accept_error = b_trigger == EventKind::AcceptError;
    let b = TestServer::start_with(
        &config,
        |s| {
            if b_accept_error {
                s.pause_accepting()
            }
        },
        closer(
            "B's callback",
            b_trigger,
            b_meeting,
            b_target.clone(),
            entered,
            done,
        ),
    );
    a_target.set(Arc::downgrade(&b.server)).unwrap();
    b_target.set(Arc::downgrade(&a.server)).unwrap();

    // A's client waits in the backlog while A is paused. B's waits there
    // too for an ACCEPT_ERROR; otherwise B's connection thread enters
    // NEW_CONNECTION now, before the table fills, and waits there for A's
    // callback.
    let a_client = TcpStream::connect(a.addr()).unwrap();
    let b_client = b.tcp();
    if !b_accept_error {
        assert!(
            b_entered.recv_timeout(BOUND).is_ok(),
            "no NEW_CONNECTION on B"
        );
    }
    let limit = Limit::lower_to(256);
    let fillers = fill_descriptor_table();
    // The accepts now fail with EMFILE: ACCEPT_ERROR on the accept threads.
    a.server.resume_accepting();
    if b_accept_error {
        b.server.resume_accepting();
    }

    let mut got = Vec::new();
    for _ in 0..2 {
        match reports.recv_timeout(BOUND) {
            Ok(report) => got.push(report),
            Err(_) => {
                // Dropping the stuck servers would hang in their close.
                std::mem::forget((a, b));
                panic!("{b_trigger:?}: deadlock, only {got:?} within {BOUND:?}");
            }
        }
    }
    drop(fillers);
    drop(limit);
    for report in &got {
        assert!(
            report.ends_with("closed its target"),
            "{b_trigger:?}: {report}"
        );
    }
    assert!(!a.server.is_listening() && !b.server.is_listening());
    drop_within((a, b, a_client, b_client), BOUND, &format!("{b_trigger:?}"));
}

/// An ACCEPT_ERROR callback closes its own server (close does not wait for
/// the caller) and stays in the callback: a close from outside any callback
/// waits until the callback returns, then joins the accept thread.
fn own_close_then_outside_close() {
    let ca = TestCa::new("ca");
    let config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    let me: Target = Default::default();
    let (closed_tx, closed_own) = channel();
    let (release, released) = channel::<()>();
    let (closed_tx, released) = (Mutex::new(closed_tx), Mutex::new(released));
    let fired = AtomicBool::new(false);
    let a = {
        let me = me.clone();
        TestServer::start_with(
            &config,
            |s| s.pause_accepting(),
            move |event| {
                if event.kind != EventKind::AcceptError || fired.swap(true, Ordering::AcqRel) {
                    return;
                }
                me.get().and_then(Weak::upgrade).unwrap().close();
                let _ = closed_tx.lock().unwrap().send(());
                let _ = released.lock().unwrap().recv_timeout(BOUND);
            },
        )
    };
    me.set(Arc::downgrade(&a.server)).unwrap();
    let client = TcpStream::connect(a.addr()).unwrap();
    let limit = Limit::lower_to(256);
    let fillers = fill_descriptor_table();
    a.server.resume_accepting();
    let own_close_returned = closed_own.recv_timeout(BOUND).is_ok();
    drop(fillers);
    drop(limit);
    assert!(
        own_close_returned,
        "the callback's close of its own server hangs"
    );

    let (closing, closing_rx) = channel();
    let (closed, closed_rx) = channel();
    let server = a.server.clone();
    thread::spawn(move || {
        let _ = closing.send(());
        server.close();
        let _ = closed.send(());
    });
    closing_rx.recv_timeout(BOUND).unwrap();
    assert!(
        closed_rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "close returned while the ACCEPT_ERROR callback still ran"
    );
    release.send(()).unwrap();
    assert!(
        closed_rx.recv_timeout(BOUND).is_ok(),
        "close never returned after the callback did"
    );
    // The accept thread took its listening socket with it.
    let refused = TcpStream::connect(a.addr()).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    drop_within((a, client), BOUND, "own close");
}
