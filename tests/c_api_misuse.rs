//! Misuse through the C API, as a C program would commit it: calls repeated,
//! calls from inside callbacks (registered as `extern "C"` functions, as C
//! registers them), handles freed or aborted while other threads are
//! blocked on them. Nothing may crash, hang or report a panic; blocked
//! calls wake up with an error.
//!
//! Every wait on a call that could hang runs under [`within`], so a hang is
//! a failed test and not a stuck test run.

mod common;

use std::ffi::{c_char, c_void, CString};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::ffi_support::configured_server;
use common::*;
use sslserver::ffi::events::sslserver_event;
use sslserver::ffi::server::*;
use sslserver::ffi::socket::*;
use sslserver::ffi::sslserver_result::{self, *};
use sslserver::{Connection, EventKind, Server, SocketError, SocketState};

/// Raw pointers are not Send; threads get them as addresses.
#[derive(Clone, Copy, Debug)]
struct Handle(usize);

impl Handle {
    fn server(self) -> *mut Server {
        self.0 as *mut Server
    }
    fn socket(self) -> *mut Connection {
        self.0 as *mut Connection
    }
}

/// Runs `f` on its own thread and fails the test if it has not returned
/// within `limit`.
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => value,
        Err(_) => panic!("{what} did not return within {limit:?}: it hangs"),
    }
}

/// Starts `f` on a thread that is expected to block; returns a receiver
/// for its result.
fn blocked<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

const WAKE_BOUND: Duration = Duration::from_secs(5);

/// What a callback does besides recording the event.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Record,
    /// sslserver_close(server) from inside the callback of this kind.
    CloseOn(EventKind),
    /// sslserver_next_pending_connection from inside PENDING_CONNECTION_AVAILABLE.
    TakeOnPending,
    /// Socket calls on the borrowed socket from inside NEW_CONNECTION.
    ProbeOnNew,
    /// sslsocket_abort(event->socket) from inside NEW_CONNECTION.
    AbortOnNew,
    /// The NEW_CONNECTION callback removes itself.
    UnregisterOnNew,
    /// NEW_CONNECTION sleeps this long (a slow callback).
    SleepOnNew(u64),
}

#[derive(Clone, Debug)]
struct Seen {
    kind: EventKind,
    port: u16,
    _error: SocketError,
}

/// The userdata of the C callback.
struct Ctx {
    server: AtomicUsize,
    action: Action,
    events: Mutex<Vec<Seen>>,
    changed: Condvar,
    taken: Mutex<Vec<Handle>>,
    notes: Mutex<Vec<String>>,
    in_callback: AtomicBool,
    /// The action runs once (later connections are only recorded).
    fired: AtomicBool,
}

impl Ctx {
    fn new(action: Action) -> Box<Ctx> {
        Box::new(Ctx {
            server: AtomicUsize::new(0),
            action,
            events: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            taken: Mutex::new(Vec::new()),
            notes: Mutex::new(Vec::new()),
            in_callback: AtomicBool::new(false),
            fired: AtomicBool::new(false),
        })
    }

    fn all(&self) -> Vec<Seen> {
        self.events.lock().unwrap().clone()
    }

    fn of(&self, port: u16) -> Vec<Seen> {
        self.all().into_iter().filter(|e| e.port == port).collect()
    }

    fn wait_until(&self, what: &str, pred: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let deadline = Instant::now() + SOON;
        let mut events = self.events.lock().unwrap();
        loop {
            if pred(&events) {
                return events.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}: {:?}",
                *events
            );
            events = self.changed.wait_timeout(events, left).unwrap().0;
        }
    }

    fn kinds_until_end(&self, port: u16) -> Vec<EventKind> {
        self.wait_until(&format!("the end of :{port}"), |events| {
            events.iter().any(|e| {
                e.port == port
                    && matches!(
                        e.kind,
                        EventKind::ErrorOccurred | EventKind::PendingConnectionAvailable
                    )
            })
        });
        self.of(port).iter().map(|e| e.kind).collect()
    }

    fn note(&self, text: String) {
        self.notes.lock().unwrap().push(text);
    }
}

/// The callback, as a C program registers it.
unsafe extern "C" fn on_event(event: *const sslserver_event, userdata: *mut c_void) {
    // SAFETY: the library passes a valid event for the duration of the call,
    // and userdata is the Ctx registered with it, alive until the server is freed.
    let (event, ctx) = unsafe { (&*event, &*(userdata as *const Ctx)) };
    ctx.in_callback.store(true, Ordering::SeqCst);
    let server = ctx.server.load(Ordering::SeqCst) as *mut Server;
    let socket = event.socket;
    let kind = event.kind;
    {
        let mut events = ctx.events.lock().unwrap();
        events.push(Seen {
            kind,
            port: sslsocket_peer_port(socket),
            _error: event.socket_error,
        });
        ctx.changed.notify_all();
    }
    assert!(!event.description.is_null());
    let once = |wanted: bool| wanted && !ctx.fired.swap(true, Ordering::SeqCst);
    match ctx.action {
        Action::CloseOn(on) if once(on == kind) => {
            sslserver_close(server);
            ctx.note(format!(
                "closed from {kind:?}; listening: {}",
                sslserver_is_listening(server)
            ));
        }
        Action::TakeOnPending if kind == EventKind::PendingConnectionAvailable => {
            let taken = sslserver_next_pending_connection(server);
            ctx.note(format!(
                "taken is the event's socket: {}; encrypted: {}; queue empty after: {}",
                taken == socket,
                sslsocket_is_encrypted(taken),
                !sslserver_has_pending_connections(server)
            ));
            if !taken.is_null() {
                ctx.taken.lock().unwrap().push(Handle(taken as usize));
            }
        }
        Action::ProbeOnNew if kind == EventKind::NewConnection => {
            let mut buf = [0u8; 16];
            let mut n = 0usize;
            let started = Instant::now();
            let read = sslsocket_read(socket, buf.as_mut_ptr(), buf.len(), &mut n);
            let write = sslsocket_write(socket, b"x".as_ptr(), 1, &mut n);
            let ready = sslsocket_wait_for_ready_read(socket, 100);
            let waited = started.elapsed();
            let mut text = [0 as c_char; 64];
            let cipher = sslsocket_session_cipher(socket, text.as_mut_ptr(), 64, &mut n);
            let address = sslsocket_peer_address(socket, text.as_mut_ptr(), 64, &mut n);
            ctx.note(format!(
                "read {read:?} write {write:?} ready {ready} cipher {cipher:?} address {address:?} \
                 encrypted {} available {} prompt {}",
                sslsocket_is_encrypted(socket),
                sslsocket_bytes_available(socket),
                waited < Duration::from_secs(1)
            ));
        }
        Action::AbortOnNew if once(kind == EventKind::NewConnection) => sslsocket_abort(socket),
        Action::UnregisterOnNew if kind == EventKind::NewConnection => {
            let result = sslserver_register_callback(server, kind as i32, None, null_mut());
            ctx.note(format!("unregistered: {result:?}"));
        }
        Action::SleepOnNew(ms) if kind == EventKind::NewConnection => {
            thread::sleep(Duration::from_millis(ms));
            ctx.note("slow callback done".to_string());
        }
        _ => {}
    }
    ctx.in_callback.store(false, Ordering::SeqCst);
}

/// A server configured through the C API with `ca`'s certificate, every
/// event going to `on_event` with `ctx`, listening on 127.0.0.1.
fn c_server(ca: &TestCa, ctx: &Ctx, timeout_ms: i32) -> (*mut Server, u16) {
    let server = configured_server(ca);
    assert_eq!(
        sslserver_set_handshake_timeout(server, timeout_ms),
        SSLSERVER_OK
    );
    ctx.server.store(server as usize, Ordering::SeqCst);
    let userdata = ctx as *const Ctx as *mut c_void;
    for kind in 0..11 {
        let expected = if kind == EventKind::PreSharedKeyAuthenticationRequired as i32 {
            SSLSERVER_ERROR_UNSUPPORTED
        } else {
            SSLSERVER_OK
        };
        assert_eq!(
            sslserver_register_callback(server, kind, Some(on_event), userdata),
            expected
        );
    }
    listen(server);
    (server, sslserver_server_port(server))
}

fn listen(server: *mut Server) {
    let local = CString::new("127.0.0.1").unwrap();
    assert_eq!(sslserver_listen(server, local.as_ptr(), 0), SSLSERVER_OK);
}

fn good_client(ca: &TestCa, port: u16) -> Client {
    connect(port, client_config(&ca.identity.cert_der, None, &[])).expect("handshake")
}

/// Takes the next connection (waiting for it).
fn take(server: *mut Server) -> *mut Connection {
    let mut timed_out = true;
    assert!(sslserver_wait_for_new_connection(
        server,
        10_000,
        &mut timed_out
    ));
    let socket = sslserver_next_pending_connection(server);
    assert!(!socket.is_null());
    socket
}

// ---------------------------------------------------------------------------

#[test]
fn closing_twice_and_calls_after_close_are_harmless() {
    let ca = TestCa::new("ca");
    let ctx = Ctx::new(Action::Record);
    let (server, port) = c_server(&ca, &ctx, 5000);
    let mut client = good_client(&ca, port);
    let socket = take(server);

    sslserver_close(server);
    sslserver_close(server);
    assert!(!sslserver_is_listening(server));
    assert_eq!(sslserver_server_port(server), 0);
    assert_eq!(sslserver_socket_descriptor(server), -1);
    sslserver_pause_accepting(server);
    sslserver_resume_accepting(server);
    let mut timed_out = true;
    let started = Instant::now();
    assert!(!sslserver_wait_for_new_connection(
        server,
        5000,
        &mut timed_out
    ));
    assert!(!timed_out, "not a timeout: the server is not listening");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "returns at once"
    );
    assert!(sslserver_next_pending_connection(server).is_null());
    assert!(!sslserver_has_pending_connections(server));

    // The socket taken before the close still works (the contract), and
    // repeated closes of it are harmless too.
    assert!(sslsocket_is_encrypted(socket));
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 8];
    let mut n = 0;
    assert_eq!(
        sslsocket_read(socket, buf.as_mut_ptr(), 8, &mut n),
        SSLSERVER_OK
    );
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(sslsocket_disconnect_from_host(socket), SSLSERVER_OK);
    assert_eq!(sslsocket_disconnect_from_host(socket), SSLSERVER_OK);
    assert_eq!(
        sslsocket_write(socket, b"late".as_ptr(), 4, &mut n),
        SSLSERVER_ERROR_CLOSED,
        "no write after disconnect"
    );
    sslsocket_abort(socket);
    sslsocket_abort(socket);
    assert_eq!(sslsocket_state(socket), SocketState::Unconnected);
    assert!(!sslsocket_is_encrypted(socket));
    assert!(!sslsocket_wait_for_ready_read(socket, 1000));
    assert_ne!(
        sslsocket_read(socket, buf.as_mut_ptr(), 8, &mut n),
        SSLSERVER_OK,
        "no read after abort"
    );
    assert_eq!(sslsocket_disconnect_from_host(socket), SSLSERVER_OK);
    sslsocket_free(socket);

    // Close on a server that never listened, then listen again after closes.
    let fresh = sslserver_new();
    sslserver_close(fresh);
    sslserver_close(fresh);
    sslserver_free(fresh);
    listen(server);
    let again = good_client(&ca, sslserver_server_port(server));
    let socket = take(server);
    assert_eq!(sslsocket_peer_port(socket), port_of(&again));
    sslsocket_free(socket);
    sslserver_close(server);
    sslserver_free(server);
    drop(ctx);
}

fn close_from_inside(on: EventKind, trigger: impl FnOnce(&TestCa, u16) -> u16) {
    let ca = TestCa::new("ca");
    let ctx = Ctx::new(Action::CloseOn(on));
    let (server, port) = c_server(&ca, &ctx, 5000);
    let client_port = trigger(&ca, port);
    ctx.wait_until(&format!("the {on:?} callback"), |events| {
        events.iter().any(|e| e.kind == on)
    });
    let closed = poll_until(SOON, || !sslserver_is_listening(server));
    assert!(closed.is_some(), "closed from inside {on:?}");
    // The callback returned (it noted so), and nothing came after it.
    assert!(poll_until(SOON, || !ctx.notes.lock().unwrap().is_empty()).is_some());
    thread::sleep(Duration::from_millis(300));
    let events = ctx.of(client_port);
    assert_eq!(
        events.last().map(|e| e.kind),
        Some(on),
        "no event after the close: {events:?}"
    );
    assert!(ctx.notes.lock().unwrap()[0].ends_with("listening: false"));
    // The server can listen again, from outside.
    listen(server);
    let again = good_client(&ca, sslserver_server_port(server));
    let _ = again;
    sslserver_free(server);
    drop(ctx);
}

#[test]
fn close_from_inside_new_connection() {
    close_from_inside(EventKind::NewConnection, |_, port| {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let client_port = tcp.local_addr().unwrap().port();
        assert!(closed_by_server(&mut tcp), "the client is closed");
        client_port
    });
}

#[test]
fn close_from_inside_started_encryption_handshake() {
    close_from_inside(EventKind::StartedEncryptionHandshake, |_, port| {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let client_port = tcp.local_addr().unwrap().port();
        tcp.write_all(&client_hello()).unwrap();
        assert!(closed_by_server(&mut tcp), "the client is closed");
        client_port
    });
}

#[test]
fn close_from_inside_error_occurred() {
    close_from_inside(EventKind::ErrorOccurred, |_, port| {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let client_port = tcp.local_addr().unwrap().port();
        tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(closed_by_server(&mut tcp));
        client_port
    });
}

#[test]
fn close_from_inside_pending_connection_available() {
    close_from_inside(EventKind::PendingConnectionAvailable, |ca, port| {
        let client = good_client(ca, port);
        let client_port = port_of(&client);
        // The queued connection is closed with the server.
        let mut tcp = client.sock;
        assert!(closed_by_server(&mut tcp));
        client_port
    });
}

#[test]
fn next_pending_connection_from_inside_pending_connection_available() {
    let ca = TestCa::new("ca");
    let ctx = Ctx::new(Action::TakeOnPending);
    let (server, port) = c_server(&ca, &ctx, 5000);
    let mut clients = Vec::new();
    for _ in 0..3 {
        let client = good_client(&ca, port);
        let kinds = ctx.kinds_until_end(port_of(&client));
        assert_eq!(
            kinds,
            [
                EventKind::NewConnection,
                EventKind::StartedEncryptionHandshake,
                EventKind::PendingConnectionAvailable
            ]
        );
        clients.push(client);
        // The event is recorded before the callback takes the connection:
        // the next client connects only once it has, so each callback finds
        // its own connection alone in the queue.
        let n = clients.len();
        assert!(poll_until(SOON, || ctx.taken.lock().unwrap().len() == n).is_some());
    }
    for note in ctx.notes.lock().unwrap().iter() {
        assert_eq!(
            note, "taken is the event's socket: true; encrypted: true; queue empty after: true",
            "from inside the callback"
        );
    }
    assert!(!sslserver_has_pending_connections(server));
    // The sockets taken inside the callbacks work from other threads.
    let taken = ctx.taken.lock().unwrap().clone();
    for (socket, client) in taken.iter().zip(&mut clients) {
        assert_eq!(sslsocket_peer_port(socket.socket()), port_of(client));
        client.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        let mut got = 0;
        while got < 5 {
            let mut n = 0;
            assert_eq!(
                sslsocket_read(socket.socket(), buf[got..].as_mut_ptr(), 5 - got, &mut n),
                SSLSERVER_OK
            );
            got += n;
        }
        assert_eq!(&buf, b"hello");
        let mut n = 0;
        assert_eq!(
            sslsocket_write(socket.socket(), b"world".as_ptr(), 5, &mut n),
            SSLSERVER_OK
        );
        let mut back = [0u8; 5];
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"world");
        sslsocket_free(socket.socket());
    }
    sslserver_free(server);
    drop(ctx);
}

#[test]
fn close_wakes_every_thread_blocked_in_wait_for_new_connection_then_free() {
    let ca = TestCa::new("ca");
    {
        let ctx = Ctx::new(Action::Record);
        let (server, _port) = c_server(&ca, &ctx, 5000);
        let handle = Handle(server as usize);
        let waiters: Vec<_> = [-1, -1, 60_000, 3_600_000]
            .into_iter()
            .map(|msecs| {
                blocked(move || {
                    let mut timed_out = true;
                    let got =
                        sslserver_wait_for_new_connection(handle.server(), msecs, &mut timed_out);
                    (got, timed_out)
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(200));
        for waiter in &waiters {
            assert!(waiter.try_recv().is_err(), "still waiting");
        }
        let started = Instant::now();
        within(WAKE_BOUND, "sslserver_close", move || {
            sslserver_close(handle.server())
        });
        for waiter in waiters {
            let outcome = waiter
                .recv_timeout(WAKE_BOUND)
                .unwrap_or_else(|_| panic!("a waiter hangs after close"));
            assert_eq!(
                outcome,
                (false, false),
                "woken with no connection, not a timeout"
            );
        }
        eprintln!("close woke 4 waiters in {:?}", started.elapsed());
        sslserver_free(server);
        drop(ctx);
    }
}

#[test]
fn abort_wakes_a_blocked_read_and_a_blocked_wait_for_ready_read_then_free() {
    let ca = TestCa::new("ca");
    let ctx = Ctx::new(Action::Record);
    let (server, port) = c_server(&ca, &ctx, 5000);
    let _client = good_client(&ca, port);
    let socket = Handle(take(server) as usize);
    let reader = blocked(move || {
        let mut buf = [0u8; 16];
        let mut n = 0;
        sslsocket_read(socket.socket(), buf.as_mut_ptr(), 16, &mut n)
    });
    let waiter = blocked(move || sslsocket_wait_for_ready_read(socket.socket(), -1));
    thread::sleep(Duration::from_millis(200));
    assert!(
        reader.try_recv().is_err() && waiter.try_recv().is_err(),
        "both blocked"
    );
    within(WAKE_BOUND, "sslsocket_abort", move || {
        sslsocket_abort(socket.socket())
    });
    assert_eq!(
        reader
            .recv_timeout(WAKE_BOUND)
            .expect("the read hangs after abort"),
        SSLSERVER_ERROR_CLOSED
    );
    assert!(!waiter
        .recv_timeout(WAKE_BOUND)
        .expect("wait_for_ready_read hangs after abort"));
    sslsocket_free(socket.socket());
    sslserver_free(server);
    drop(ctx);
}

#[test]
fn freeing_the_server_leaves_taken_sockets_working_and_their_blocked_reads_blocked() {
    let ca = TestCa::new("ca");
    let ctx = Ctx::new(Action::Record);
    let (server, port) = c_server(&ca, &ctx, 5000);
    let mut client = good_client(&ca, port);
    let socket = Handle(take(server) as usize);
    let reader = blocked(move || {
        let mut buf = [0u8; 16];
        let mut n = 0;
        let result = sslsocket_read(socket.socket(), buf.as_mut_ptr(), 16, &mut n);
        (result, buf[..n].to_vec())
    });
    thread::sleep(Duration::from_millis(100));
    let handle = Handle(server as usize);
    within(WAKE_BOUND, "sslserver_free", move || {
        sslserver_free(handle.server())
    });
    thread::sleep(Duration::from_millis(100));
    assert!(reader.try_recv().is_err(), "the socket outlives its server");
    client.write_all(b"after free").unwrap();
    let (result, data) = reader
        .recv_timeout(WAKE_BOUND)
        .expect("the read returns the data");
    assert_eq!(result, SSLSERVER_OK);
    assert_eq!(data, b"after free");
    let mut n = 0;
    assert_eq!(
        sslsocket_write(socket.socket(), b"still here".as_ptr(), 10, &mut n),
        SSLSERVER_OK
    );
    let mut back = [0u8; 10];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still here");
    within(WAKE_BOUND, "sslsocket_free", move || {
        sslsocket_free(socket.socket())
    });
    drop(ctx);
}

/// A client that completed its handshake and then never reads: the
/// server's writes fill the socket buffers and block.
fn blocked_writer(close: bool) {
    let ca = TestCa::new("ca");
    let ctx = Ctx::new(Action::Record);
    let (server, port) = c_server(&ca, &ctx, 5000);
    let client = good_client(&ca, port);
    let socket = Handle(take(server) as usize);
    let writer = blocked(move || {
        let data = vec![0x5au8; 10 * 1024 * 1024];
        let mut n = 0;
        let started = Instant::now();
        let result = sslsocket_write(socket.socket(), data.as_ptr(), data.len(), &mut n);
        (result, started.elapsed())
    });
    thread::sleep(Duration::from_millis(500));
    assert!(
        writer.try_recv().is_err(),
        "10 MiB to a client that does not read blocks"
    );
    let started = Instant::now();
    if close {
        within(WAKE_BOUND, "sslsocket_abort", move || {
            sslsocket_abort(socket.socket())
        });
    } else {
        within(WAKE_BOUND, "sslsocket_free", move || {
            sslsocket_free(socket.socket())
        });
    }
    let (result, _) = writer
        .recv_timeout(WAKE_BOUND)
        .expect("the blocked write wakes up");
    eprintln!(
        "{} woke the writer in {:?}: {result:?}",
        if close { "abort" } else { "free" },
        started.elapsed()
    );
    assert_eq!(result, SSLSERVER_ERROR_CLOSED);
    if close {
        assert_eq!(sslsocket_state(socket.socket()), SocketState::Unconnected);
        within(WAKE_BOUND, "sslsocket_free", move || {
            sslsocket_free(socket.socket())
        });
    }
    // The client sees the connection end (after the data that got through).
    let mut tcp = client.sock;
    assert!(closed_by_server(&mut tcp));
    sslserver_free(server);
    drop(ctx);
}

#[test]
fn abort_while_another_thread_writes_10_mib() {
    blocked_writer(true);
}

#[test]
fn free_while_another_thread_writes_10_mib() {
    blocked_writer(false);
}

#[test]
fn socket_calls_on_the_borrowed_socket_inside_new_connection_fail_without_blocking() {
    let ca = TestCa::new("ca");
    let ctx = Ctx::new(Action::ProbeOnNew);
    let (server, port) = c_server(&ca, &ctx, 5000);
    let client = good_client(&ca, port);
    let kinds = ctx.kinds_until_end(port_of(&client));
    assert_eq!(
        kinds,
        [
            EventKind::NewConnection,
            EventKind::StartedEncryptionHandshake,
            EventKind::PendingConnectionAvailable
        ],
        "the probing did not disturb the handshake"
    );
    let note = ctx.notes.lock().unwrap()[0].clone();
    eprintln!("{note}");
    assert!(
        note.starts_with(
            "read SSLSERVER_ERROR_INVALID_STATE write SSLSERVER_ERROR_INVALID_STATE ready false \
             cipher SSLSERVER_ERROR_INVALID_STATE address SSLSERVER_OK encrypted false available 0 \
             prompt true"
        ),
        "{note}"
    );
    sslserver_free(server);
    drop(ctx);
}

#[test]
fn abort_from_inside_new_connection_ends_the_handshake_once() {
    let ca = TestCa::new("ca");
    let ctx = Ctx::new(Action::AbortOnNew);
    let (server, port) = c_server(&ca, &ctx, 5000);
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let client_port = tcp.local_addr().unwrap().port();
    let _ = tcp.write_all(&client_hello());
    assert!(closed_by_server(&mut tcp));
    let kinds = ctx.kinds_until_end(client_port);
    thread::sleep(Duration::from_millis(300));
    let events = ctx.of(client_port);
    eprintln!("abort inside NEW_CONNECTION: {events:?}");
    assert_eq!(kinds.first(), Some(&EventKind::NewConnection));
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == EventKind::ErrorOccurred)
            .count(),
        1,
        "one ERROR_OCCURRED: {events:?}"
    );
    assert!(!events
        .iter()
        .any(|e| e.kind == EventKind::PendingConnectionAvailable));
    assert!(!sslserver_has_pending_connections(server));
    // The server goes on.
    let ctx_ok = good_client(&ca, port);
    assert_eq!(
        ctx.kinds_until_end(port_of(&ctx_ok)).first(),
        Some(&EventKind::NewConnection)
    );
    sslserver_free(server);
    drop(ctx);
}

#[test]
fn a_callback_may_unregister_itself() {
    let ca = TestCa::new("ca");
    let ctx = Ctx::new(Action::UnregisterOnNew);
    let (server, port) = c_server(&ca, &ctx, 5000);
    let first = good_client(&ca, port);
    ctx.kinds_until_end(port_of(&first));
    let second = good_client(&ca, port);
    let kinds = ctx.kinds_until_end(port_of(&second));
    assert_eq!(
        kinds,
        [
            EventKind::StartedEncryptionHandshake,
            EventKind::PendingConnectionAvailable
        ],
        "NEW_CONNECTION no longer reported"
    );
    assert_eq!(
        ctx.notes.lock().unwrap().as_slice(),
        ["unregistered: SSLSERVER_OK"]
    );
    sslserver_free(server);
    drop(ctx);
}

#[test]
fn free_waits_for_a_running_callback_and_no_callback_runs_after_it() {
    let ca = TestCa::new("ca");
    let ctx = Ctx::new(Action::SleepOnNew(500));
    let (server, port) = c_server(&ca, &ctx, 5000);
    let _clients: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    ctx.wait_until("a slow callback", |events| {
        events.iter().any(|e| e.kind == EventKind::NewConnection)
    });
    let handle = Handle(server as usize);
    let started = Instant::now();
    within(
        WAKE_BOUND,
        "sslserver_free with a slow callback",
        move || sslserver_free(handle.server()),
    );
    let took = started.elapsed();
    assert!(
        !ctx.in_callback.load(Ordering::SeqCst),
        "free returned while a callback was still running"
    );
    let count = ctx.all().len();
    thread::sleep(Duration::from_millis(700));
    assert_eq!(ctx.all().len(), count, "no callback after free returned");
    eprintln!("free waited {took:?} for the running callback(s)");
    drop(ctx);
}

#[test]
fn null_and_out_of_range_arguments_on_live_handles() {
    let ca = TestCa::new("ca");
    let ctx = Ctx::new(Action::Record);
    let (server, port) = c_server(&ca, &ctx, 5000);
    let _client = good_client(&ca, port);
    let socket = take(server);
    let mut n = 0usize;
    let mut buf = [0u8; 8];
    assert_eq!(
        sslsocket_read(socket, null_mut(), 8, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslsocket_read(socket, buf.as_mut_ptr(), 8, null_mut()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslsocket_write(socket, null(), 8, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(sslsocket_write(socket, null(), 0, null_mut()), SSLSERVER_OK);
    // Size queries with no buffer.
    assert_eq!(
        sslsocket_peer_address(socket, null_mut(), 0, &mut n),
        SSLSERVER_ERROR_BUFFER_TOO_SMALL
    );
    assert_eq!(n, "127.0.0.1".len());
    assert_eq!(
        sslsocket_peer_address(socket, null_mut(), 5, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT,
        "a length without a buffer"
    );
    assert_eq!(
        sslsocket_session_cipher(socket, null_mut(), 0, null_mut()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    let mut der: *const u8 = null();
    assert_eq!(
        sslsocket_peer_certificate_der(socket, 0, null_mut(), &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslsocket_peer_certificate_der(socket, usize::MAX, &mut der, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslsocket_ssl_handshake_error(socket, usize::MAX),
        sslserver::SslErrorCode::None
    );
    // Negative timeouts other than -1 return at once.
    let started = Instant::now();
    assert!(!sslsocket_wait_for_ready_read(socket, -5));
    assert!(!sslserver_wait_for_new_connection(server, -7, null_mut()));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        sslserver_server_address(server, null_mut(), 0, null_mut()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslserver_error_string(server, null_mut(), 0, &mut n),
        SSLSERVER_ERROR_BUFFER_TOO_SMALL
    );
    // Settings out of range leave the values alone.
    assert_eq!(
        sslserver_set_max_pending_connections(server, -1),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslserver_set_max_concurrent_handshakes(server, i32::MIN),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(sslserver_max_pending_connections(server), 30);
    assert_eq!(
        sslserver_register_callback(server, -1, Some(on_event), null_mut()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslserver_register_callback(server, i32::MAX, None, null_mut()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    // listen while listening, and on a bad address.
    let local = CString::new("127.0.0.1").unwrap();
    assert_eq!(
        sslserver_listen(server, local.as_ptr(), 0),
        SSLSERVER_ERROR_INVALID_STATE
    );
    assert!(sslserver_is_listening(server), "still listening");
    sslsocket_free(socket);
    sslserver_free(server);
    drop(ctx);
    let _: sslserver_result = SSLSERVER_OK;
}
