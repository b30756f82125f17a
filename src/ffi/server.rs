//! `sslserver_*`: the server (`QSslServer` + `QTcpServer`).

use std::ffi::{c_char, c_int, c_void};
use std::net::TcpListener;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Socket, Type};

use super::config::{snapshot, sslconfig};
use super::events::{callback_for, sslserver_callback};
use super::{call_or, copy_out, put, read_handle, share, text, with_handle, Failure};
use super::{sslserver_result, RawEventKind, RawProxyProtocol};
use crate::connection::Connection;
use crate::server::{Server, WaitOutcome};
use crate::types::{EventKind, ProxyProtocol, SocketError};

/// `msecs` as a wait: -1 is forever, other negatives are invalid.
fn wait_time(msecs: c_int) -> Result<Option<Duration>, Failure> {
    match u64::try_from(msecs) {
        Ok(ms) => Ok(Some(Duration::from_millis(ms))),
        Err(_) if msecs == -1 => Ok(None),
        Err(_) => Err(Failure::invalid(
            "msecs must be >= 0, or -1 to wait forever",
        )),
    }
}

/// Creates a server (not listening, no certificate). NULL only if out of memory.
#[no_mangle]
pub extern "C" fn sslserver_new() -> *mut Server {
    call_or(std::ptr::null_mut(), || {
        Arc::into_raw(Arc::new(Server::new())).cast_mut()
    })
}

/// Closes the server (as sslserver_close) and frees it. Not from one of its
/// own callbacks, nor from a callback that closed it (a callback of the
/// server may still be finishing), and only when no other thread is inside
/// a call on this server: to wake a thread blocked on it, call
/// sslserver_close first, join that thread, then free. Connections already taken with
/// sslserver_next_pending_connection stay valid. NULL is a no-op.
#[no_mangle]
pub extern "C" fn sslserver_free(server: *mut Server) {
    call_or((), || {
        if !server.is_null() {
            // SAFETY: a non-NULL server came from sslserver_new and this call
            // gives up the caller's reference, once.
            let server = unsafe { Arc::from_raw(server.cast_const()) };
            server.close();
        }
    })
}

/// Copies and validates `cfg` (certificate and matching key required) and
/// uses it for connections accepted from now on; connections already
/// accepted keep theirs. May be called while listening to rotate
/// certificates.
#[no_mangle]
pub extern "C" fn sslserver_set_config(
    server: *mut Server,
    cfg: *const sslconfig,
) -> sslserver_result {
    with_handle(server, "server", |s| {
        let config = snapshot(cfg)?;
        Ok(s.set_config(&config)?)
    })
}

/// One deadline from TCP accept to handshake completion, in ms (default
/// 5000; -1 = none). Applies to connections accepted after the call.
#[no_mangle]
pub extern "C" fn sslserver_set_handshake_timeout(
    server: *mut Server,
    msecs: c_int,
) -> sslserver_result {
    with_handle(server, "server", |s| Ok(s.set_handshake_timeout(msecs)?))
}

/// The handshake timeout in ms (-1 = none); 0 for NULL.
#[no_mangle]
pub extern "C" fn sslserver_handshake_timeout(server: *const Server) -> c_int {
    read_handle(server, 0, Server::handshake_timeout)
}

/// Bounds the queue of handshaken connections not yet taken (default 30,
/// at least 1). While it is full the server accepts nothing new.
#[no_mangle]
pub extern "C" fn sslserver_set_max_pending_connections(
    server: *mut Server,
    n: c_int,
) -> sslserver_result {
    with_handle(server, "server", |s| Ok(s.set_max_pending_connections(n)?))
}

/// The queue bound; 0 for NULL.
#[no_mangle]
pub extern "C" fn sslserver_max_pending_connections(server: *const Server) -> c_int {
    read_handle(server, 0, Server::max_pending_connections)
}

/// Bounds the handshakes in flight (default 1024, at least 1), so silent
/// clients cannot take every thread.
#[no_mangle]
pub extern "C" fn sslserver_set_max_concurrent_handshakes(
    server: *mut Server,
    n: c_int,
) -> sslserver_result {
    with_handle(
        server,
        "server",
        |s| Ok(s.set_max_concurrent_handshakes(n)?),
    )
}

/// The handshake bound; 0 for NULL.
#[no_mangle]
pub extern "C" fn sslserver_max_concurrent_handshakes(server: *const Server) -> c_int {
    read_handle(server, 0, Server::max_concurrent_handshakes)
}

/// The kernel's listen backlog for the next sslserver_listen (default 50).
#[no_mangle]
pub extern "C" fn sslserver_set_listen_backlog_size(
    server: *mut Server,
    n: c_int,
) -> sslserver_result {
    with_handle(server, "server", |s| Ok(s.set_listen_backlog_size(n)?))
}

/// The listen backlog; 0 for NULL.
#[no_mangle]
pub extern "C" fn sslserver_listen_backlog_size(server: *const Server) -> c_int {
    read_handle(server, 0, Server::listen_backlog_size)
}

/// Sets SO_REUSEPORT on the socket of the next sslserver_listen (default
/// off): several servers, in one process or many, may then listen on the
/// same address and port, and the kernel spreads new connections among
/// them. Every socket sharing the port needs it (and, on Linux, the same
/// user). A descriptor adopted with sslserver_set_socket_descriptor keeps
/// the options it was made with.
#[no_mangle]
pub extern "C" fn sslserver_set_reuse_port(server: *mut Server, on: bool) -> sslserver_result {
    with_handle(server, "server", |s| {
        s.set_reuse_port(on);
        Ok(())
    })
}

/// Expects HAProxy's PROXY protocol header (version 1 text or version 2
/// binary, at most 1024 bytes) in front of every connection's TLS stream
/// (default OFF). Applies to connections accepted after the call. With
/// REQUIRED, a connection whose header is missing, malformed or too long is
/// closed before its handshake with ERROR_OCCURRED (SSL_HANDSHAKE_FAILED),
/// one whose header does not arrive within the handshake timeout with
/// ERROR_OCCURRED (SOCKET_TIMEOUT), and no other event. After a valid
/// header NEW_CONNECTION fires, and sslsocket_peer_address/_port give
/// the client the header names (sslsocket_transport_peer_address gives the
/// balancer). Only for listeners that trusted balancers alone can reach: a
/// client that can connect directly can claim any address. A mode outside
/// the enum is SSLSERVER_ERROR_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn sslserver_set_proxy_protocol(
    server: *mut Server,
    mode: RawProxyProtocol,
) -> sslserver_result {
    with_handle(server, "server", |s| {
        let mode = ProxyProtocol::from_raw(mode)
            .ok_or_else(|| Failure::invalid(format!("{mode} is not a PROXY protocol mode")))?;
        s.set_proxy_protocol(mode);
        Ok(())
    })
}

/// Listens on `address` (NULL or "" = every address, dual-stack where
/// possible; otherwise an IPv4 or IPv6 literal) and `port` (0 = ephemeral,
/// read it back with sslserver_server_port). Requires sslserver_set_config
/// first (SSLSERVER_ERROR_INVALID_STATE otherwise, and while listening).
#[no_mangle]
pub extern "C" fn sslserver_listen(
    server: *mut Server,
    address: *const c_char,
    port: u16,
) -> sslserver_result {
    with_handle(server, "server", |s| {
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let address = unsafe { text(address, "address") }?;
        Ok(s.listen(address, port)?)
    })
}

/// Adopts an already listening TCP socket (systemd socket activation, a
/// parent's descriptor). On success the server owns it and closes it on
/// sslserver_close; on failure it is left open and untouched. While the
/// server listens on it, it is non-blocking with TCP_NODELAY set (copies
/// of the descriptor share both); sslserver_close restores them first.
#[no_mangle]
pub extern "C" fn sslserver_set_socket_descriptor(
    server: *mut Server,
    listening_fd: c_int,
) -> sslserver_result {
    with_handle(server, "server", |s| {
        if listening_fd < 0 {
            return Err(Failure::invalid("listening_fd must be a descriptor (>= 0)"));
        }
        // SAFETY: fcntl(F_GETFD) only queries flags; it fails with EBADF on a
        // descriptor that is not open, which we check before taking it over.
        if unsafe { libc::fcntl(listening_fd, libc::F_GETFD) } == -1 {
            return Err(Failure::invalid(format!(
                "{listening_fd} is not an open descriptor"
            )));
        }
        // SAFETY: the descriptor is open and the caller hands it to us; on
        // every failure path below it is given back with into_raw_fd.
        let socket = unsafe { Socket::from_raw_fd(listening_fd) };
        let is_tcp_listener = socket.r#type().is_ok_and(|t| t == Type::STREAM)
            && socket.is_listener().unwrap_or(false)
            && socket.local_addr().is_ok_and(|a| a.as_socket().is_some());
        if !is_tcp_listener {
            let _ = socket.into_raw_fd();
            return Err(Failure::invalid(format!(
                "descriptor {listening_fd} is not a listening TCP socket"
            )));
        }
        s.adopt_listener(TcpListener::from(socket))
            .map_err(|(error, listener)| {
                let _ = listener.into_raw_fd();
                Failure::from(error)
            })
    })
}

/// The listening descriptor (the adopted one if adopted); -1 when not listening.
#[no_mangle]
pub extern "C" fn sslserver_socket_descriptor(server: *const Server) -> c_int {
    read_handle(server, -1, Server::socket_descriptor)
}

/// Whether the server is listening; false for NULL.
#[no_mangle]
pub extern "C" fn sslserver_is_listening(server: *const Server) -> bool {
    read_handle(server, false, Server::is_listening)
}

/// The listening port; 0 when not listening.
#[no_mangle]
pub extern "C" fn sslserver_server_port(server: *const Server) -> u16 {
    read_handle(server, 0, |s| s.local_addr().map_or(0, |a| a.port()))
}

/// The listening address, e.g. "127.0.0.1" or "::" (string-out convention).
/// SSLSERVER_ERROR_INVALID_STATE when not listening.
#[no_mangle]
pub extern "C" fn sslserver_server_address(
    server: *const Server,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> sslserver_result {
    with_handle(server, "server", |s| {
        let addr = s.local_addr().ok_or_else(|| {
            Failure::from(crate::Error::invalid_state("the server is not listening"))
        })?;
        // SAFETY: the caller passes a buffer of `len` bytes and a size_t out pointer.
        unsafe { copy_out(&addr.ip().to_string(), buf, len, out_n) }
    })
}

/// Stops listening: aborts handshakes in flight, closes queued connections
/// and joins the library's threads; no callback runs after it returns, and
/// every thread calling it at once returns only when all of that is done.
/// Called from a callback, it does not wait for callbacks that are inside
/// sslserver_close themselves (its own, or a callback of any sslserver
/// closing an sslserver): they can only run to their end, and two servers
/// whose callbacks close each other would otherwise wait forever. So do not
/// free a server (or its userdata) from a callback that closed it. Safe at any
/// moment, from any thread and from callbacks. It wakes threads blocked on
/// the server (they return false / NULL): call it, join them, then
/// sslserver_free. sslserver_listen may be called again.
#[no_mangle]
pub extern "C" fn sslserver_close(server: *mut Server) {
    read_handle(server, (), Server::close)
}

/// Stops accepting; new clients wait in the kernel backlog.
#[no_mangle]
pub extern "C" fn sslserver_pause_accepting(server: *mut Server) {
    read_handle(server, (), Server::pause_accepting)
}

/// Accepts again after sslserver_pause_accepting.
#[no_mangle]
pub extern "C" fn sslserver_resume_accepting(server: *mut Server) {
    read_handle(server, (), Server::resume_accepting)
}

/// Whether a handshaken connection is waiting in the queue.
#[no_mangle]
pub extern "C" fn sslserver_has_pending_connections(server: *const Server) -> bool {
    read_handle(server, false, Server::has_pending_connections)
}

/// A descriptor that is readable (POLLIN) while a handshaken connection is
/// waiting in the queue, for an event loop: when it polls readable, call
/// sslserver_next_pending_connection until it returns NULL. It stays
/// readable while the queue is not empty and stops being readable when it
/// empties (level-triggered; also correct when max_pending_connections is
/// reached). The same descriptor serves the server's whole life, across
/// listen and close; the server owns it and closes it in sslserver_free: do
/// not read, write or close it. -1 for NULL or if no descriptor could be
/// made (see sslserver_last_error_message).
#[no_mangle]
pub extern "C" fn sslserver_notification_descriptor(server: *mut Server) -> c_int {
    let mut fd = -1;
    let result = with_handle(server.cast_const(), "server", |s| {
        fd = s.notification_descriptor()?;
        Ok(())
    });
    if result == sslserver_result::SSLSERVER_OK {
        fd
    } else {
        -1
    }
}

/// Takes the oldest handshaken connection from the queue; NULL when it is
/// empty. The caller owns the socket and frees it with sslsocket_free.
/// Taking one frees a queue slot, so accepting resumes.
#[no_mangle]
pub extern "C" fn sslserver_next_pending_connection(server: *mut Server) -> *mut Connection {
    call_or(std::ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or a live handle.
        let Some(server) = (unsafe { share(server.cast_const()) }) else {
            return std::ptr::null_mut();
        };
        server
            .next_pending_connection()
            .map_or(std::ptr::null_mut(), |c| Arc::into_raw(c).cast_mut())
    })
}

/// Waits up to `msecs` ms (-1 = forever) until a connection is in the queue.
/// Returns true only when one is (unlike Qt); `*timed_out` (may be NULL) is
/// set to whether the wait timed out. Returns false at once when the server
/// is not listening, and when it is closed or freed during the wait.
#[no_mangle]
pub extern "C" fn sslserver_wait_for_new_connection(
    server: *mut Server,
    msecs: c_int,
    timed_out: *mut bool,
) -> bool {
    call_or(false, || {
        // SAFETY: the caller passes NULL or a live handle.
        let Some(server) = (unsafe { share(server.cast_const()) }) else {
            return false;
        };
        let Ok(timeout) = wait_time(msecs) else {
            return false;
        };
        let outcome = server.wait_for_new_connection(timeout);
        if !timed_out.is_null() {
            // SAFETY: the caller passes NULL or a writable bool.
            let _ = unsafe { put(timed_out, outcome == WaitOutcome::TimedOut, "timed_out") };
        }
        outcome == WaitOutcome::Ready
    })
}

/// The last server-level error (listen, accept); UNKNOWN when none.
#[no_mangle]
pub extern "C" fn sslserver_server_error(server: *const Server) -> SocketError {
    read_handle(server, SocketError::Unknown, |s| s.server_error().0)
}

/// The text of the last server-level error (string-out convention).
#[no_mangle]
pub extern "C" fn sslserver_error_string(
    server: *const Server,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> sslserver_result {
    with_handle(server, "server", |s| {
        let text = s.server_error().1;
        // SAFETY: the caller passes a buffer of `len` bytes and a size_t out pointer.
        unsafe { copy_out(&text, buf, len, out_n) }
    })
}

/// Sets the callback for one event kind (registering again replaces it;
/// `cb` NULL removes it). `userdata` is passed back untouched. Callbacks run
/// on the library's threads with no library lock held and may call any
/// function here except sslserver_free on this server. They must return
/// (no longjmp, no C++ exceptions). PRE_SHARED_KEY_AUTHENTICATION_REQUIRED
/// gives SSLSERVER_ERROR_UNSUPPORTED: rustls has no PSK cipher suites.
#[no_mangle]
pub extern "C" fn sslserver_register_callback(
    server: *mut Server,
    kind: RawEventKind,
    cb: sslserver_callback,
    userdata: *mut c_void,
) -> sslserver_result {
    with_handle(server, "server", |s| {
        let kind = EventKind::from_raw(kind)
            .ok_or_else(|| Failure::invalid(format!("{kind} is not an event kind")))?;
        if kind.is_socket_only() {
            return Err(Failure::invalid(format!(
                "{} is a socket's event; register it with sslsocket_register_callback",
                kind.name()
            )));
        }
        if kind == EventKind::PreSharedKeyAuthenticationRequired {
            return Err(Failure::from(crate::Error::new(
                crate::ErrorKind::Unsupported,
                "pre-shared keys are not available: rustls has no PSK cipher suites",
            )));
        }
        s.set_callback(kind, callback_for(cb, userdata));
        Ok(())
    })
}
