//! The server (`QSslServer` + `QTcpServer`): settings, listening, the queue
//! of handshaken connections, and shutdown.
//!
//! Each `listen` starts a [`Session`]: the listening socket, its accept
//! thread, the handshakes in flight and the queue. `close` ends the session:
//! it stops the accept thread, aborts the handshakes, closes what is queued
//! and joins every thread it started, so no callback runs after it returns.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use socket2::{Domain, Socket, Type};

use crate::accept;
use crate::config::TlsConfig;
use crate::connection::Connection;
use crate::error::{os_reason, Error, ErrorKind, Result};
use crate::events::{Callback, Callbacks, EventSink};
use crate::handshake::{self, HandshakeDeadline};
use crate::notification::QueueNotification;
use crate::tls::ServerTls;
use crate::types::{EventKind, ProxyProtocol, SocketError, SslMode};

/// The default handshake timeout, in ms.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: i32 = 5000;
/// The default bound on the queue of handshaken connections.
pub const DEFAULT_MAX_PENDING_CONNECTIONS: i32 = 30;
/// The default bound on handshakes in flight.
pub const DEFAULT_MAX_CONCURRENT_HANDSHAKES: i32 = 1024;
/// The default listen backlog.
pub const DEFAULT_LISTEN_BACKLOG: i32 = 50;

/// What `wait_for_new_connection` saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// A connection is in the queue.
    Ready,
    TimedOut,
    /// The server is not listening (or was closed while waiting).
    NotListening,
}

/// Settings and callbacks: shared by the server and its sessions.
pub(crate) struct Common {
    tls: Mutex<Option<Arc<ServerTls>>>,
    handshake_timeout_ms: AtomicI32,
    max_pending: AtomicI32,
    max_handshakes: AtomicI32,
    backlog: AtomicI32,
    /// SO_REUSEPORT on the next `listen`.
    reuse_port: AtomicBool,
    /// A `ProxyProtocol`, read at each accept.
    proxy_protocol: AtomicI32,
    paused: AtomicBool,
    callbacks: Arc<Callbacks>,
    last_error: Mutex<(SocketError, String)>,
    /// `sslserver_notification_descriptor`: made on first use, kept for the
    /// server's life (across listen and close).
    notification: std::sync::OnceLock<QueueNotification>,
}

impl Common {
    pub(crate) fn set_error(&self, error: SocketError, text: impl Into<String>) {
        *self.last_error.lock() = (error, text.into());
    }
}

/// A TLS server: create it with `sslserver_new`, give it a certificate with
/// `sslserver_set_config`, `sslserver_listen`, and take handshaken
/// connections with `sslserver_next_pending_connection`.
pub struct Server {
    common: Arc<Common>,
    session: Mutex<Option<Arc<Session>>>,
    /// Closed sessions whose callbacks may still run: a callback may close
    /// its own server and go on, and a later close (or free) from another
    /// thread must still wait for it.
    retired: Mutex<Vec<Arc<Session>>>,
    /// Held from the "already listening?" check until the new session is
    /// stored, so two racing listens cannot both start one.
    starting: Mutex<()>,
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    pub fn new() -> Self {
        Server {
            common: Arc::new(Common {
                tls: Mutex::new(None),
                handshake_timeout_ms: AtomicI32::new(DEFAULT_HANDSHAKE_TIMEOUT_MS),
                max_pending: AtomicI32::new(DEFAULT_MAX_PENDING_CONNECTIONS),
                max_handshakes: AtomicI32::new(DEFAULT_MAX_CONCURRENT_HANDSHAKES),
                backlog: AtomicI32::new(DEFAULT_LISTEN_BACKLOG),
                reuse_port: AtomicBool::new(false),
                proxy_protocol: AtomicI32::new(ProxyProtocol::Off as i32),
                paused: AtomicBool::new(false),
                callbacks: Arc::new(Callbacks::default()),
                last_error: Mutex::new((SocketError::Unknown, String::new())),
                notification: std::sync::OnceLock::new(),
            }),
            session: Mutex::new(None),
            retired: Mutex::new(Vec::new()),
            starting: Mutex::new(()),
        }
    }

    /// Validates `config` and uses it for connections accepted from now on.
    pub fn set_config(&self, config: &TlsConfig) -> Result<()> {
        let tls = ServerTls::new(config)?;
        *self.common.tls.lock() = Some(Arc::new(tls));
        Ok(())
    }

    pub fn set_handshake_timeout(&self, msecs: i32) -> Result<()> {
        if msecs < -1 {
            return Err(Error::invalid_argument(
                "the handshake timeout must be >= 0 ms, or -1 for none",
            ));
        }
        self.common
            .handshake_timeout_ms
            .store(msecs, Ordering::Relaxed);
        Ok(())
    }

    pub fn handshake_timeout(&self) -> i32 {
        self.common.handshake_timeout_ms.load(Ordering::Relaxed)
    }

    pub fn set_max_pending_connections(&self, n: i32) -> Result<()> {
        positive(n, "the maximum number of pending connections")?;
        self.common.max_pending.store(n, Ordering::Relaxed);
        self.wake_session();
        Ok(())
    }

    pub fn max_pending_connections(&self) -> i32 {
        self.common.max_pending.load(Ordering::Relaxed)
    }

    pub fn set_max_concurrent_handshakes(&self, n: i32) -> Result<()> {
        positive(n, "the maximum number of concurrent handshakes")?;
        self.common.max_handshakes.store(n, Ordering::Relaxed);
        self.wake_session();
        Ok(())
    }

    pub fn max_concurrent_handshakes(&self) -> i32 {
        self.common.max_handshakes.load(Ordering::Relaxed)
    }

    /// Applies to the next `listen`.
    pub fn set_listen_backlog_size(&self, n: i32) -> Result<()> {
        positive(n, "the listen backlog size")?;
        self.common.backlog.store(n, Ordering::Relaxed);
        Ok(())
    }

    pub fn listen_backlog_size(&self) -> i32 {
        self.common.backlog.load(Ordering::Relaxed)
    }

    /// SO_REUSEPORT for the next `listen`: several sockets (processes) may
    /// then listen on one port, and the kernel spreads connections among
    /// them. Adopted listeners keep the options they were made with.
    pub fn set_reuse_port(&self, on: bool) {
        self.common.reuse_port.store(on, Ordering::Relaxed);
    }

    pub fn reuse_port(&self) -> bool {
        self.common.reuse_port.load(Ordering::Relaxed)
    }

    /// Whether connections accepted from now on must start with a PROXY
    /// protocol header (see `proxy_protocol`).
    pub fn set_proxy_protocol(&self, mode: ProxyProtocol) {
        self.common
            .proxy_protocol
            .store(mode as i32, Ordering::Relaxed);
    }

    pub fn proxy_protocol(&self) -> ProxyProtocol {
        ProxyProtocol::from_raw(self.common.proxy_protocol.load(Ordering::Relaxed))
            .unwrap_or_default()
    }

    pub fn set_callback(&self, kind: EventKind, callback: Option<Callback>) {
        self.common.callbacks.set(kind, callback);
    }

    /// Listens on `address` (`None` or "" = every address, dual-stack where
    /// possible) and `port` (0 = ephemeral).
    pub fn listen(&self, address: Option<&str>, port: u16) -> Result<()> {
        let _starting = self.starting.lock();
        let result = self.check_can_listen().and_then(|()| {
            let options = ListenOptions {
                backlog: self.listen_backlog_size(),
                reuse_port: self.reuse_port(),
            };
            let listener = bind(address, port, options)?;
            self.start(listener).map_err(|(error, _listener)| error)
        });
        self.record(result)
    }

    /// Adopts a socket that is already listening (socket activation, a
    /// parent's descriptor). The server owns it from now on; on failure it
    /// is handed back untouched.
    pub fn adopt_listener(
        &self,
        listener: TcpListener,
    ) -> std::result::Result<(), (Error, TcpListener)> {
        let _starting = self.starting.lock();
        let result = match self.check_can_listen() {
            Ok(()) => self.start(listener),
            Err(error) => Err((error, listener)),
        };
        if let Err((error, _)) = &result {
            let _ = self.record(Err(error.clone()));
        }
        result
    }

    fn check_can_listen(&self) -> Result<()> {
        if self.is_listening() {
            return Err(Error::invalid_state("the server is already listening"));
        }
        if self.common.tls.lock().is_none() {
            return Err(Error::invalid_state(
                "the server has no certificate: call sslserver_set_config first",
            ));
        }
        Ok(())
    }

    fn record(&self, result: Result<()>) -> Result<()> {
        if let Err(e) = &result {
            let error = match e.kind() {
                ErrorKind::AddressInUse => SocketError::AddressInUse,
                ErrorKind::AddressNotAvailable => SocketError::SocketAddressNotAvailable,
                ErrorKind::InvalidState | ErrorKind::InvalidArgument => SocketError::Operation,
                _ => SocketError::Unknown,
            };
            self.common.set_error(error, e.message());
        }
        result
    }

    fn start(&self, listener: TcpListener) -> std::result::Result<(), (Error, TcpListener)> {
        let session = Session::start(self.common.clone(), listener)?;
        *self.session.lock() = Some(session);
        Ok(())
    }

    fn current(&self) -> Option<Arc<Session>> {
        self.session.lock().clone()
    }

    fn wake_session(&self) {
        if let Some(session) = self.current() {
            session.wake();
        }
    }

    pub fn is_listening(&self) -> bool {
        self.current().is_some()
    }

    /// The listening socket's descriptor, or -1.
    pub fn socket_descriptor(&self) -> i32 {
        self.current().map_or(-1, |s| s.fd)
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.current().map(|s| s.local)
    }

    /// Stops listening; see the module docs. Safe from any thread, also from
    /// inside a callback (that callback's own thread is not joined).
    pub fn close(&self) {
        // The session stays stored until it is fully closed, so a second
        // concurrent close waits for it too instead of returning early.
        if let Some(session) = self.current() {
            session.close();
            let mut slot = self.session.lock();
            if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, &session)) {
                *slot = None;
                self.retired.lock().push(session);
            }
        }
        // Callbacks of sessions closed before (perhaps by a callback that
        // is still running) count too.
        let retired = self.retired.lock().clone();
        for session in &retired {
            session.wait_for_callbacks();
        }
        self.retired.lock().retain(|s| !s.is_finished());
    }

    /// Stops accepting new connections (they wait in the kernel backlog).
    pub fn pause_accepting(&self) {
        self.common.paused.store(true, Ordering::Release);
    }

    pub fn resume_accepting(&self) {
        self.common.paused.store(false, Ordering::Release);
        self.wake_session();
    }

    pub fn has_pending_connections(&self) -> bool {
        self.current()
            .is_some_and(|s| !s.state.lock().queue.is_empty())
    }

    /// A descriptor readable while the queue of handshaken connections is
    /// not empty; the same one for the server's life.
    pub fn notification_descriptor(&self) -> Result<i32> {
        let notification = match self.common.notification.get() {
            Some(notification) => notification,
            None => {
                let made = QueueNotification::new()?;
                // A racing caller may have stored one first: theirs is kept.
                let _ = self.common.notification.set(made);
                self.common.notification.get().expect("just set")
            }
        };
        // The queue may have filled before the descriptor existed.
        if let Some(session) = self.current() {
            let state = session.state.lock();
            // A session being closed (perhaps replaced by a new listen that
            // already queued connections) has no say any more.
            if !session.is_closing() {
                notification.set_ready(!state.queue.is_empty());
            }
        }
        Ok(notification.descriptor())
    }

    /// Takes the oldest handshaken connection from the queue.
    pub fn next_pending_connection(&self) -> Option<Arc<Connection>> {
        let session = self.current()?;
        let connection = {
            let mut state = session.state.lock();
            let connection = state.queue.pop_front();
            session.queue_changed(&state);
            connection
        };
        if connection.is_some() {
            // A slot freed: the accept thread and waiting handshakes go on.
            session.wake();
        }
        connection
    }

    /// Waits until a connection is in the queue (`None` = forever).
    pub fn wait_for_new_connection(&self, timeout: Option<Duration>) -> WaitOutcome {
        let Some(session) = self.current() else {
            return WaitOutcome::NotListening;
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut state = session.state.lock();
        loop {
            if !state.queue.is_empty() {
                return WaitOutcome::Ready;
            }
            if session.is_closing() {
                return WaitOutcome::NotListening;
            }
            match deadline {
                None => session.changed.wait(&mut state),
                Some(deadline) => {
                    if session.changed.wait_until(&mut state, deadline).timed_out() {
                        return if state.queue.is_empty() {
                            WaitOutcome::TimedOut
                        } else {
                            WaitOutcome::Ready
                        };
                    }
                }
            }
        }
    }

    /// The last server-level error (listen, accept) and its text.
    pub fn server_error(&self) -> (SocketError, String) {
        self.common.last_error.lock().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close();
    }
}

fn positive(n: i32, what: &str) -> Result<()> {
    if n < 1 {
        return Err(Error::invalid_argument(format!(
            "{what} must be at least 1"
        )));
    }
    Ok(())
}

/// Binds and listens. "" or `None` is the IPv6 any-address with IPv4 mapped
/// in (dual-stack), or IPv4 any where the host has no IPv6.
fn bind(address: Option<&str>, port: u16, options: ListenOptions) -> Result<TcpListener> {
    let address = address.unwrap_or("").trim();
    if address.is_empty() {
        let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        return match bind_one(any6, options, true) {
            Err(e) if e.kind() == ErrorKind::AddressNotAvailable || e.kind() == ErrorKind::Io => {
                bind_one(
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                    options,
                    false,
                )
            }
            other => other,
        };
    }
    let literal = address.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = literal.parse().map_err(|_| {
        Error::invalid_argument(format!("'{address}' is not an IPv4 or IPv6 address"))
    })?;
    bind_one(SocketAddr::new(ip, port), options, false)
}

/// The settings a new listening socket is made with.
#[derive(Clone, Copy)]
struct ListenOptions {
    backlog: i32,
    reuse_port: bool,
}

fn bind_one(addr: SocketAddr, options: ListenOptions, dual_stack: bool) -> Result<TcpListener> {
    let listen_error = |e: std::io::Error| {
        let kind = match e.raw_os_error() {
            Some(libc::EADDRINUSE) => ErrorKind::AddressInUse,
            Some(libc::EADDRNOTAVAIL) | Some(libc::EAFNOSUPPORT) => ErrorKind::AddressNotAvailable,
            _ => ErrorKind::Io,
        };
        Error::new(kind, format!("cannot listen on {addr}: {}", os_reason(&e)))
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(listen_error)?;
    if dual_stack {
        socket.set_only_v6(false).map_err(listen_error)?;
    }
    // Restarting a server must not fail on connections in TIME_WAIT.
    socket.set_reuse_address(true).map_err(listen_error)?;
    if options.reuse_port {
        // Must be set before bind, on every socket sharing the port.
        socket.set_reuse_port(true).map_err(listen_error)?;
    }
    socket.bind(&addr.into()).map_err(listen_error)?;
    socket.listen(options.backlog).map_err(listen_error)?;
    Ok(socket.into())
}

std::thread_local! {
    /// The session (by address) and connection id whose handshake thread
    /// this is, so a callback that closes its own server skips itself.
    static SERVING: std::cell::Cell<Option<(usize, u64)>> = const { std::cell::Cell::new(None) };
}

/// What the session's lock protects.
pub(crate) struct SessionState {
    /// Handshaken connections, oldest first.
    queue: std::collections::VecDeque<Arc<Connection>>,
    /// Connections whose thread is still in the handshake (or waiting for a
    /// queue slot), by id.
    handshakes: HashMap<u64, Arc<Connection>>,
    /// Connection threads (by connection id) that may still run a callback:
    /// from before their thread starts until their last callback returned.
    /// close waits for this to empty, also after a connection left the
    /// queue, since its thread may still be inside the pending callback.
    running: std::collections::HashSet<u64>,
    /// Connection threads inside `close` from a callback. Such a closer
    /// does not wait for these (they do not wait for it either), or two
    /// callbacks closing at once would wait for each other forever.
    closing_callbacks: std::collections::HashSet<u64>,
    /// The accept thread has not finished yet.
    accepting: bool,
    next_id: u64,
}

/// One `listen` call's lifetime.
pub(crate) struct Session {
    pub(crate) common: Arc<Common>,
    pub(crate) state: Mutex<SessionState>,
    /// Queue, handshakes, settings, pause or closing changed.
    pub(crate) changed: Condvar,
    closing: Arc<AtomicBool>,
    events: EventSink,
    waker: accept::Waker,
    accept_thread: Mutex<Option<JoinHandle<()>>>,
    /// Kept after the handle is taken, so any closer can tell whether it
    /// runs on the accept thread (a callback there must not wait for itself).
    accept_thread_id: Mutex<Option<std::thread::ThreadId>>,
    fd: i32,
    local: SocketAddr,
}

impl Session {
    fn start(
        common: Arc<Common>,
        listener: TcpListener,
    ) -> std::result::Result<Arc<Session>, (Error, TcpListener)> {
        let local = match listener.local_addr() {
            Ok(local) => local,
            Err(e) => {
                let error = Error::new(
                    ErrorKind::Io,
                    format!("not a bound socket: {}", os_reason(&e)),
                );
                return Err((error, listener));
            }
        };
        let (acceptor, waker) = accept::Acceptor::new(listener)?;
        let closing = Arc::new(AtomicBool::new(false));
        let session = Arc::new(Session {
            events: EventSink::new(common.callbacks.clone(), closing.clone()),
            common,
            state: Mutex::new(SessionState {
                queue: Default::default(),
                handshakes: HashMap::new(),
                running: Default::default(),
                closing_callbacks: Default::default(),
                accepting: true,
                next_id: 0,
            }),
            changed: Condvar::new(),
            closing,
            fd: acceptor.fd(),
            waker,
            accept_thread: Mutex::new(None),
            accept_thread_id: Mutex::new(None),
            local,
        });
        // The acceptor waits in a slot so a failed spawn can hand the
        // listener back to the caller.
        let slot = Arc::new(Mutex::new(Some(acceptor)));
        let (for_thread, slot_for_thread) = (session.clone(), slot.clone());
        let spawned = std::thread::Builder::new()
            .name("sslserver-accept".into())
            .spawn(move || {
                // Cleared however the thread ends (a panicking callback of
                // the Rust API included), or close would wait forever.
                let _finished = AcceptThreadFinished(&for_thread);
                let acceptor = slot_for_thread.lock().take();
                if let Some(acceptor) = acceptor {
                    acceptor.run(&for_thread);
                }
            });
        match spawned {
            Ok(handle) => {
                *session.accept_thread_id.lock() = Some(handle.thread().id());
                *session.accept_thread.lock() = Some(handle);
                Ok(session)
            }
            Err(e) => {
                session.closing.store(true, Ordering::Release);
                let acceptor = slot.lock().take().expect("the thread never started");
                let error = Error::new(
                    ErrorKind::Io,
                    format!("cannot start the accept thread: {e}"),
                );
                Err((error, acceptor.into_listener()))
            }
        }
    }

    pub(crate) fn events(&self) -> &EventSink {
        &self.events
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub(crate) fn wake(&self) {
        let _state = self.state.lock();
        self.changed.notify_all();
    }

    /// Blocks the accept thread while accepting is paused, the queue is full
    /// or too many handshakes are in flight. False once the session closes.
    pub(crate) fn wait_until_accepting(&self) -> bool {
        let mut state = self.state.lock();
        loop {
            if self.is_closing() {
                return false;
            }
            let queue_full =
                state.queue.len() >= self.common.max_pending.load(Ordering::Relaxed) as usize;
            let busy = state.handshakes.len()
                >= self.common.max_handshakes.load(Ordering::Relaxed) as usize;
            if !queue_full && !busy && !self.common.paused.load(Ordering::Acquire) {
                return true;
            }
            self.changed.wait(&mut state);
        }
    }

    /// Sleeps for `delay` unless the session closes first (false).
    pub(crate) fn sleep(&self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        let mut state = self.state.lock();
        while !self.is_closing() {
            if self.changed.wait_until(&mut state, until).timed_out() {
                break;
            }
        }
        !self.is_closing()
    }

    /// Starts the thread of a freshly accepted connection.
    pub(crate) fn start_connection(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Result<()> {
        // Records go out whole per write call, so Nagle only adds latency.
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(self.local);
        let connection = Connection::new(stream, peer, local, SslMode::Server, None);
        let id = {
            let mut state = self.state.lock();
            state.next_id += 1;
            let id = state.next_id;
            state.handshakes.insert(id, connection.clone());
            state.running.insert(id);
            id
        };
        // The deadline counts from accept, not from when the thread first runs.
        let timeout_ms = self.common.handshake_timeout_ms.load(Ordering::Relaxed);
        let deadline = HandshakeDeadline::starting_now(timeout_ms);
        // The certificate in force at accept, so a rotation never applies to
        // a connection accepted before it.
        let tls = self.common.tls.lock().clone();
        let proxy = ProxyProtocol::from_raw(self.common.proxy_protocol.load(Ordering::Relaxed))
            .unwrap_or_default();
        let session = self.clone();
        let for_thread = connection.clone();
        let started = connection.start_handshake(move || {
            // A bug in one connection must not leak its handshake slot or
            // leave its client hanging.
            let served = catch_unwind(AssertUnwindSafe(|| {
                SERVING.set(Some((Arc::as_ptr(&session) as usize, id)));
                session.serve(id, for_thread.clone(), tls, proxy, deadline)
            }));
            SERVING.set(None);
            if served.is_err() {
                for_thread.abort();
                session.forget(id);
            }
            session.state.lock().running.remove(&id);
            session.changed.notify_all();
        });
        started.map_err(|e| {
            let mut state = self.state.lock();
            state.handshakes.remove(&id);
            state.running.remove(&id);
            drop(state);
            connection.abort();
            Error::new(
                ErrorKind::Io,
                format!("cannot start a thread for {}: {e}", connection.peer_addr()),
            )
        })
    }

    /// The handshake thread: PROXY protocol header, handshake, queue,
    /// PENDING_CONNECTION_AVAILABLE.
    fn serve(
        &self,
        id: u64,
        connection: Arc<Connection>,
        tls: Option<Arc<ServerTls>>,
        proxy: ProxyProtocol,
        deadline: HandshakeDeadline,
    ) {
        let handshaken = match tls {
            Some(tls) => handshake::perform(&connection, &tls, &self.events, proxy, deadline),
            None => None,
        };
        let Some(tls) = handshaken else {
            self.forget(id);
            return;
        };
        let server_name = handshake::requested_server_name(&tls);
        connection.install(tls, server_name);
        if !self.enqueue(id, &connection) {
            connection.release();
            return;
        }
        self.events.emit(EventKind::PendingConnectionAvailable, || {
            crate::events::Event::new(EventKind::PendingConnectionAvailable, Some(&connection))
                .describe(format!(
                    "encrypted connection from {} is ready",
                    connection.peer_addr()
                ))
        });
    }

    fn forget(&self, id: u64) {
        self.state.lock().handshakes.remove(&id);
        self.changed.notify_all();
    }

    /// Waits for a free queue slot and queues the connection; false if the
    /// session closed first.
    fn enqueue(&self, id: u64, connection: &Arc<Connection>) -> bool {
        let mut state = self.state.lock();
        loop {
            if self.is_closing() {
                state.handshakes.remove(&id);
                return false;
            }
            if state.queue.len() < self.common.max_pending.load(Ordering::Relaxed) as usize {
                break;
            }
            self.changed.wait(&mut state);
        }
        state.handshakes.remove(&id);
        state.queue.push_back(connection.clone());
        self.queue_changed(&state);
        self.changed.notify_all();
        true
    }

    /// Makes the notification descriptor (if there is one) follow the
    /// queue; call with the state lock held, after changing the queue.
    fn queue_changed(&self, state: &SessionState) {
        if let Some(notification) = self.common.notification.get() {
            notification.set_ready(!state.queue.is_empty());
        }
    }

    /// Returns once no thread of this session runs a callback or touches
    /// the server any more, however many threads call it at once; a
    /// callback closing its own server does not wait for itself, nor for
    /// other callbacks closing it at the same time.
    fn close(&self) {
        let own = self.own_connection();
        if let Some(id) = own {
            self.state.lock().closing_callbacks.insert(id);
        }
        {
            let _state = self.state.lock();
            self.closing.store(true, Ordering::Release);
            self.changed.notify_all();
        }
        self.waker.wake();
        let on_accept_thread = *self.accept_thread_id.lock() == Some(std::thread::current().id());
        let accept_thread = self.accept_thread.lock().take();
        if let Some(handle) = accept_thread {
            if !on_accept_thread {
                let _ = handle.join();
            }
        }
        if !on_accept_thread {
            // Another closer may hold the handle and still be joining.
            let mut state = self.state.lock();
            while state.accepting {
                self.changed.wait(&mut state);
            }
        }
        // The accept thread is gone, so every connection it started is in
        // one of these two sets, with its thread handle stored.
        let (handshakes, queued) = {
            let mut state = self.state.lock();
            let handshakes: Vec<_> = state.handshakes.drain().map(|(_, c)| c).collect();
            let queued: Vec<_> = state.queue.drain(..).collect();
            self.queue_changed(&state);
            (handshakes, queued)
        };
        for connection in &handshakes {
            connection.abort();
        }
        for connection in &queued {
            connection.release();
        }
        for connection in handshakes.iter().chain(&queued) {
            connection.wait_for_work();
        }
        self.wait_for_callbacks();
        if let Some(id) = own {
            self.state.lock().closing_callbacks.remove(&id);
            self.changed.notify_all();
        }
    }

    /// The connection whose thread calls this, if it is one of this
    /// session's connection threads (a callback).
    fn own_connection(&self) -> Option<u64> {
        SERVING
            .get()
            .filter(|&(session, _)| session == self as *const Session as usize)
            .map(|(_, id)| id)
    }

    /// Waits until no connection thread of this session may run a callback,
    /// apart from the caller's own and, for a callback, the callbacks
    /// closing the server at the same time.
    fn wait_for_callbacks(&self) {
        let own = self.own_connection();
        let mut state = self.state.lock();
        while state
            .running
            .iter()
            .any(|id| Some(*id) != own && !(own.is_some() && state.closing_callbacks.contains(id)))
        {
            self.changed.wait(&mut state);
        }
    }

    /// No connection thread of this session is left.
    fn is_finished(&self) -> bool {
        self.state.lock().running.is_empty()
    }
}

/// Marks the accept thread finished when it ends.
struct AcceptThreadFinished<'a>(&'a Session);

impl Drop for AcceptThreadFinished<'_> {
    fn drop(&mut self) {
        self.0.state.lock().accepting = false;
        self.0.changed.notify_all();
    }
}
