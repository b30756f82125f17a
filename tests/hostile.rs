//! Hostile clients: silent, slow and drip-feeding ones, floods of resets,
//! and garbage of every kind. The server must cut each bad client at its
//! one handshake deadline, keep serving good clients meanwhile, report
//! exactly the events of the contract's table (and nothing else), and
//! leave no thread or descriptor behind.
//!
//! The flood test counts the whole process's threads and descriptors, so it
//! takes [`exclusive`] while every other test here takes [`shared`].

mod common;
#[path = "../fuzz/src/harness.rs"]
mod harness;
mod hostile_support;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use hostile_support::*;
use sslserver::{EventKind, EventKind::*, SocketError};

static EXCLUSIVE: RwLock<()> = RwLock::new(());

/// Held by every test that may run next to others.
fn shared() -> RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner())
}

/// Held by a test that must be alone in the process.
fn exclusive() -> RwLockWriteGuard<'static, ()> {
    EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Slow and silent clients

#[derive(Clone, Copy, Debug, PartialEq)]
enum Slow {
    Silent,
    PartialHello,
    Drip,
    /// A whole ClientHello, then silence: the server has sent its flight
    /// and waits for the client's Finished.
    SilentAfterHello,
}

#[test]
fn silent_partial_and_drip_feeding_clients_are_cut_at_the_deadline_while_good_ones_are_served() {
    let _guard = shared();
    const TIMEOUT: Duration = Duration::from_millis(500);
    const PER_KIND: usize = 100;
    let (ca, server) = plain_server(|s| {
        s.set_handshake_timeout(TIMEOUT.as_millis() as i32).unwrap();
        s.set_listen_backlog_size(1024).unwrap();
    });
    let good_cfg = client_config(&ca.identity.cert_der, None, &[]);
    let hello = client_hello();

    // (kind, client port, instant before connect (earlier than the accept), stream)
    let mut bad: Vec<(Slow, u16, Instant, TcpStream)> = Vec::new();
    for kind in [
        Slow::Silent,
        Slow::PartialHello,
        Slow::Drip,
        Slow::SilentAfterHello,
    ] {
        for _ in 0..PER_KIND {
            let before = Instant::now();
            let mut tcp = server.tcp();
            let port = tcp.local_addr().unwrap().port();
            match kind {
                Slow::Silent => {}
                Slow::PartialHello => tcp.write_all(&hello[..hello.len() / 2]).unwrap(),
                Slow::Drip => tcp.write_all(&hello[..1]).unwrap(),
                Slow::SilentAfterHello => tcp.write_all(&hello).unwrap(),
            }
            bad.push((kind, port, before, tcp));
        }
    }
    let all_connected = Instant::now();

    // One byte every 25 ms to every drip client: it never finishes in time,
    // but it never stays silent either.
    let drip_streams: Vec<TcpStream> = bad
        .iter()
        .filter(|b| b.0 == Slow::Drip)
        .map(|b| b.3.try_clone().unwrap())
        .collect();
    let dripper = {
        let hello = hello.clone();
        thread::spawn(move || {
            let mut alive: Vec<(TcpStream, usize)> =
                drip_streams.into_iter().map(|s| (s, 1)).collect();
            let until = Instant::now() + SOON;
            while !alive.is_empty() && Instant::now() < until {
                alive.retain_mut(|(stream, next)| {
                    if *next >= hello.len() - 1 {
                        return false; // never send the last byte
                    }
                    let ok = stream.write_all(&hello[*next..*next + 1]).is_ok();
                    *next += 1;
                    ok
                });
                thread::sleep(Duration::from_millis(25));
            }
        })
    };

    // Good clients complete their handshake while the bad ones hold 400
    // connections (and 400 threads): each must finish well within the
    // bad ones' deadline, so also within its own.
    let mut good_times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let good = connect(server.port, good_cfg.clone()).expect("a good client is served");
        let took = started.elapsed();
        assert_eq!(
            server.events.kinds(port_of(&good)),
            [
                NewConnection,
                StartedEncryptionHandshake,
                PendingConnectionAvailable
            ]
        );
        assert!(server.server.next_pending_connection().is_some());
        good_times.push(took);
    }
    let still_connected = bad
        .iter()
        .filter(|b| {
            !server
                .events
                .of(b.1)
                .iter()
                .any(|e| e.kind == ErrorOccurred)
        })
        .count();
    eprintln!(
        "good handshakes with {} bad clients connected ({still_connected} not yet cut): {:?}, \
         {:?} after the last bad one connected",
        bad.len(),
        good_times,
        all_connected.elapsed()
    );
    for took in &good_times {
        assert!(
            *took < Duration::from_secs(3),
            "good handshake took {took:?}"
        );
    }

    // Every bad client is cut exactly once, with SOCKET_TIMEOUT, at its
    // deadline: not before, and not much after.
    let mut latest = Duration::ZERO;
    for (kind, port, before, _) in &bad {
        let events = server.events.finished(*port);
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        let expected: &[EventKind] = match kind {
            Slow::Silent => &[NewConnection, ErrorOccurred],
            _ => &[NewConnection, StartedEncryptionHandshake, ErrorOccurred],
        };
        assert_eq!(kinds, expected, "{kind:?} client :{port}");
        let error = events.last().unwrap();
        assert_eq!(error.socket_error, SocketError::SocketTimeout, "{kind:?}");
        let since_connect = error.at.duration_since(*before);
        let since_accept = error.at.duration_since(events[0].at);
        assert!(
            since_connect >= TIMEOUT,
            "{kind:?} :{port} cut {since_connect:?} after connecting, before the deadline"
        );
        assert!(
            since_accept < TIMEOUT + Duration::from_millis(1500),
            "{kind:?} :{port} cut {since_accept:?} after its accept: late"
        );
        latest = latest.max(since_accept);
    }
    eprintln!("latest cut: {latest:?} after accept (deadline {TIMEOUT:?})");
    for (kind, port, _, stream) in &mut bad {
        assert!(
            closed_by_server(stream),
            "{kind:?} :{port} still open on the client side"
        );
    }
    dripper.join().unwrap();
    assert_nothing_else(&server);
}

// ---------------------------------------------------------------------------
// Floods

/// The library's handshake threads (working or idle in their pool).
fn is_connection_thread(name: &str) -> bool {
    name == "sslserver-conn"
}

/// Waits until no connection thread of any server runs (tests that ran
/// before may still be ending theirs).
fn settle() {
    let settled = poll_until(SOON, || {
        library_threads()
            .iter()
            .all(|(_, name)| !is_connection_thread(name))
    });
    assert!(
        settled.is_some(),
        "connection threads left over: {:?}",
        library_threads()
    );
}

#[test]
fn a_flood_of_resetting_clients_leaves_no_thread_or_descriptor_behind() {
    let _guard = exclusive();
    settle();
    const CLIENTS: usize = 2000;
    const FLOODERS: usize = 4;
    let accept_threads = || {
        library_threads()
            .iter()
            .filter(|(_, name)| name == "sslserver-accep")
            .count()
    };
    let accepting_before = accept_threads();
    let (ca, server) = plain_server(|s| s.set_listen_backlog_size(1024).unwrap());
    // The accept thread names itself once it runs.
    assert!(poll_until(SOON, || accept_threads() == accepting_before + 1).is_some());
    let baseline_threads = library_threads().len();
    let baseline_all_threads = process_threads();
    let baseline_fds = open_fds();

    // Peak figures, sampled while the flood runs.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        thread::spawn(move || {
            let (mut threads, mut fds) = (0, 0);
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                threads = threads.max(library_threads().len());
                fds = fds.max(open_fds());
                thread::sleep(Duration::from_millis(10));
            }
            (threads, fds)
        })
    };
    let hello = client_hello();
    let started = Instant::now();
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|f| {
            let port = server.port;
            let hello = hello.clone();
            thread::spawn(move || {
                for i in 0..CLIENTS / FLOODERS {
                    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    // Every fourth one resets in the middle of its handshake.
                    if (i + f) % 4 == 0 {
                        let _ = tcp.write_all(&hello[..hello.len() / 2]);
                    }
                    close_with_reset(tcp);
                }
            })
        })
        .collect();
    for flooder in flooders {
        flooder.join().unwrap();
    }
    let flood_took = started.elapsed();

    // The kernel may drop a flooded connection before the library ever sees
    // it (a full accept queue drops the client's final ACK, and the client's
    // reset then removes the half-open entry), so the number accepted is not
    // known in advance. A sentinel connected after the flood sits behind
    // every flooded connection in the accept queue: once it is accepted, so
    // is everything the kernel will ever hand over. Once no connection thread
    // but the sentinel's is left, every accepted connection has had all its
    // events.
    let sentinel = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let sentinel_port = sentinel.local_addr().unwrap().port();
    server
        .events
        .wait_until("the sentinel to be accepted", |events| {
            events
                .iter()
                .any(|e| e.kind == NewConnection && e.peer_port == Some(sentinel_port))
        });
    let connection_threads = || {
        library_threads()
            .iter()
            .filter(|(_, name)| is_connection_thread(name))
            .count()
    };
    assert!(
        poll_until(SOON, || connection_threads() <= 1).is_some(),
        "connection threads still running after the flood: {:?}",
        library_threads()
    );
    let events: Vec<_> = server
        .events
        .all()
        .into_iter()
        .filter(|e| e.peer_port != Some(sentinel_port))
        .collect();
    let accepted = events.iter().filter(|e| e.kind == NewConnection).count();
    // Every accepted connection ends with one error; none is queued.
    let mut errors: HashMap<SocketError, usize> = HashMap::new();
    for e in &events {
        assert!(
            matches!(
                e.kind,
                NewConnection | StartedEncryptionHandshake | ErrorOccurred
            ),
            "unexpected event in a flood of resets: {e:?}"
        );
        if e.kind == ErrorOccurred {
            *errors.entry(e.socket_error).or_default() += 1;
        }
    }
    assert_eq!(
        errors.get(&SocketError::RemoteHostClosed).copied(),
        Some(accepted),
        "every accepted connection ends with one REMOTE_HOST_CLOSED: {errors:?}"
    );
    // Loopback drops a few under load, not most: a library that stopped
    // accepting would fail here.
    assert!(
        accepted >= CLIENTS / 2,
        "only {accepted} of {CLIENTS} flooded connections were accepted"
    );
    close_with_reset(sentinel);
    server.events.finished(sentinel_port);

    // Threads and descriptors return to where they were.
    let returned = poll_until(Duration::from_secs(20), || {
        library_threads().len() <= baseline_threads && open_fds() <= baseline_fds
    });
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let (peak_threads, peak_fds) = sampler.join().unwrap();
    eprintln!(
        "flood: {CLIENTS} resets ({accepted} accepted) in {flood_took:?}; library threads {baseline_threads} -> peak \
         {peak_threads} -> {}; descriptors {baseline_fds} -> peak {peak_fds} -> {}; process \
         threads {baseline_all_threads} -> {}; back after {returned:?}",
        library_threads().len(),
        open_fds(),
        process_threads(),
    );
    assert!(
        returned.is_some(),
        "not back to the baseline: library threads {:?} (baseline {baseline_threads}), \
         descriptors {} (baseline {baseline_fds})",
        library_threads(),
        open_fds()
    );
    assert!(process_threads() <= baseline_all_threads);

    // And it still serves. (Its port may be one a flooded client had, so
    // only events from now on count.)
    let before = server.events.all().len();
    let good = connect(server.port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    let port = port_of(&good);
    let events = server
        .events
        .wait_until("the good client's last event", |events| {
            events[before..].iter().any(|e| {
                e.peer_port == Some(port)
                    && matches!(e.kind, PendingConnectionAvailable | ErrorOccurred)
            })
        });
    let kinds: Vec<_> = events[before..]
        .iter()
        .filter(|e| e.peer_port == Some(port))
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            NewConnection,
            StartedEncryptionHandshake,
            PendingConnectionAvailable
        ]
    );
}
