//! The server (`QSslServer` + `QTcpServer`): settings, listening, the queue
//! of handshaken connections, and shutdown.
//!
//! Each `listen` starts a [`Session`]: the listening socket, its accept
//! thread, the handshakes in flight and the queue. `close` ends the session:
//! it stops the accept thread, aborts the handshakes, closes what is queued
//! and joins every thread it started, so no callback runs after it returns
//! (for a close called from a callback, apart from callbacks closing a
//! server themselves: see `callback_thread`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socket2::{Domain, Socket, Type};

use crate::config::TlsConfig;
use crate::connection::Connection;
use crate::error::{os_reason, Error, ErrorKind, Result};
use crate::events::{Callback, Callbacks};
use crate::notification::QueueNotification;
use crate::tls::ServerTls;
use crate::types::{EventKind, ProxyProtocol, SocketError};

mod callback_thread;
mod session;

pub(crate) use session::Session;

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
    /// inside a callback (of this server or another): it does not wait for
    /// its caller's callback, nor, called from a callback, for callbacks
    /// closing a server at the same time.
    pub fn close(&self) {
        let _marked = callback_thread::CloseFromCallback::enter();
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
        // Threads of sessions closed before (by a callback that was still
        // running, or skipped for one closing a server itself) count too.
        let retired = self.retired.lock().clone();
        for session in &retired {
            session.wait_for_threads();
        }
        let finished: Vec<_> = {
            let mut retired = self.retired.lock();
            let (finished, running) = retired.drain(..).partition(|s| s.is_finished());
            *retired = running;
            finished
        };
        // A closer that skipped a session's accept thread left it unjoined.
        for session in finished {
            session.join_accept_thread();
        }
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
