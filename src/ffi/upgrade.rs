//! `sslsocket_*` for sockets that start in plain text: from a descriptor
//! (`QSslSocket::setSocketDescriptor`) or `sslsocket_connect`
//! (`connectToHost`), upgraded with a start call (STARTTLS), and the
//! socket's own callbacks.

use std::ffi::{c_char, c_int, c_void};
use std::os::fd::{BorrowedFd, FromRawFd, IntoRawFd};
use std::sync::Arc;

use super::config::sslconfig;
use super::events::{callback_for, sslserver_callback};
use super::{call, put, read_handle, share, sslserver_result, Failure, RawEventKind};
use crate::connection::Connection;
use crate::types::{EventKind, SslMode};

/// Whether a socket is encrypted, and as which end (QSslSocket::SslMode).
#[repr(C)]
#[allow(clippy::enum_variant_names, clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslSocketMode {
    /// Plain TCP: from a descriptor or sslsocket_connect, before a start call.
    SSLSOCKET_UNENCRYPTED_MODE = 0,
    /// The client end of TLS (sslsocket_connect_encrypted, or started as client).
    SSLSOCKET_CLIENT_MODE = 1,
    /// The server end of TLS (from a server's queue, or started as server).
    SSLSOCKET_SERVER_MODE = 2,
}

impl From<SslMode> for SslSocketMode {
    fn from(mode: SslMode) -> Self {
        match mode {
            SslMode::Unencrypted => SslSocketMode::SSLSOCKET_UNENCRYPTED_MODE,
            SslMode::Client => SslSocketMode::SSLSOCKET_CLIENT_MODE,
            SslMode::Server => SslSocketMode::SSLSOCKET_SERVER_MODE,
        }
    }
}

/// QSslSocket::setSocketDescriptor: makes a socket of `fd`, a connected TCP
/// socket (IPv4 or IPv6, blocking or not), in UNENCRYPTED mode: read and
/// write carry plain bytes until sslsocket_start_server_encryption or
/// sslsocket_start_client_encryption. On success the socket owns `fd` (it
/// is put in blocking mode and closed by sslsocket_free); free it with
/// sslsocket_free. A descriptor that is -1, closed, not a socket, a UDP,
/// Unix-domain or listening socket, or not connected gives
/// SSLSERVER_ERROR_INVALID_ARGUMENT saying which, and stays the caller's.
#[no_mangle]
pub extern "C" fn sslsocket_new_from_descriptor(
    fd: c_int,
    out: *mut *mut Connection,
) -> sslserver_result {
    call(|| {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        if fd < 0 {
            return Err(Failure::invalid(format!(
                "descriptor {fd} is not a descriptor"
            )));
        }
        // SAFETY: fcntl(F_GETFD) only queries flags; it fails with EBADF on a
        // descriptor that is not open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            return Err(Failure::invalid(format!("descriptor {fd} is not open")));
        }
        // SAFETY: `fd` is open (checked above) and stays open during this
        // call: the caller still owns it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        crate::upgrade::check_descriptor(borrowed)
            .map_err(|why| Failure::invalid(format!("descriptor {fd} {why}")))?;
        // SAFETY: an open, connected TCP socket that the caller hands over;
        // if it cannot be used, it is given back with into_raw_fd.
        let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
        let connection = crate::upgrade::wrap(stream).map_err(|(error, stream)| {
            let _ = stream.into_raw_fd();
            Failure::from(error)
        })?;
        // SAFETY: out checked non-NULL; the caller passes a writable pointer.
        unsafe { put(out, Arc::into_raw(connection).cast_mut(), "out") }
    })
}

/// QSslSocket::connectToHost: resolves `host` and connects to `port` within
/// `msecs` (-1 = no limit), without TLS: `*out` is a socket in UNENCRYPTED
/// mode for a protocol that upgrades later (sslsocket_start_client_encryption
/// verifies the server against `host` by default). Free it with
/// sslsocket_free. SSLSERVER_ERROR_TIMEOUT when the time runs out,
/// SSLSERVER_ERROR_IO when the name does not resolve or nothing answers.
#[no_mangle]
pub extern "C" fn sslsocket_connect(
    host: *const c_char,
    port: u16,
    msecs: c_int,
    out: *mut *mut Connection,
) -> sslserver_result {
    call(|| {
        // SAFETY: the caller passes a NUL-terminated string.
        let host = unsafe { super::required_text(host, "host")? };
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let connection = crate::client::connect(host, port, msecs)?;
        // SAFETY: out checked non-NULL; the caller passes a writable pointer.
        unsafe { put(out, Arc::into_raw(connection).cast_mut(), "out") }
    })
}

/// QSslSocket::startServerEncryption + waitForEncrypted: runs the server
/// side of the TLS handshake on the calling thread, with the certificate,
/// key and client-certificate policy of `cfg` (copied), within `msecs`
/// (-1 = no limit; one deadline for the whole handshake). Bytes the peer
/// sent that were not read in plain text are the start of the handshake:
/// anything that is not TLS there (commands pipelined behind STARTTLS)
/// fails it, and is never returned as data.
/// Reports MODE_CHANGED, the handshake's events (STARTED_ENCRYPTION_HANDSHAKE,
/// PEER_VERIFY_ERROR, SSL_ERRORS, ALERT_*, as on a server) and ENCRYPTED,
/// or ERROR_OCCURRED, to the callbacks of sslsocket_register_callback, on
/// this thread. On success read and write carry TLS. A failed handshake
/// closes the socket, its error and certificate errors stay readable:
/// SSLSERVER_ERROR_TLS (sslsocket_error: SSL_HANDSHAKE_FAILED),
/// SSLSERVER_ERROR_TIMEOUT, SSLSERVER_ERROR_CLOSED (the peer left).
/// SSLSERVER_ERROR_INVALID_STATE when the socket is not in UNENCRYPTED mode
/// (already encrypted, or a start is running) or is closed; `cfg` without a
/// certificate: SSLSERVER_ERROR_CERTIFICATE. Do not read or write the
/// socket on other threads during the call.
#[no_mangle]
pub extern "C" fn sslsocket_start_server_encryption(
    s: *mut Connection,
    cfg: *const sslconfig,
    msecs: c_int,
) -> sslserver_result {
    with_socket(s, |s| {
        let config = super::config::snapshot(cfg)?;
        Ok(crate::upgrade::start_server_encryption(s, &config, msecs)?)
    })
}

/// QSslSocket::startClientEncryption + waitForEncrypted: runs the client
/// side of the TLS handshake on the calling thread within `msecs` (-1 = no
/// limit), with the same trust rules as sslsocket_connect_encrypted: the
/// server's certificate is checked for `peer_verify_name`, or when it is
/// NULL the host given to sslsocket_connect. A socket from a descriptor has
/// no host: it needs `peer_verify_name` (SSLSERVER_ERROR_INVALID_ARGUMENT
/// without one), unless `cfg` verifies nothing (VERIFY_NONE). `cfg` may be
/// NULL (defaults); sessions resume across sockets started with the same
/// `cfg` and its copies.
/// Events as for sslsocket_start_server_encryption; an SSL_ERRORS callback
/// may accept the server's certificate with sslsocket_ignore_ssl_errors,
/// and NEW_SESSION_TICKET_RECEIVED follows (from reads) when the server
/// sends TLS 1.3 tickets. Results as for sslsocket_start_server_encryption;
/// a refused certificate gives SSLSERVER_ERROR_TLS naming every error.
#[no_mangle]
pub extern "C" fn sslsocket_start_client_encryption(
    s: *mut Connection,
    cfg: *const sslconfig,
    peer_verify_name: *const c_char,
    msecs: c_int,
) -> sslserver_result {
    with_socket(s, |s| {
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let name = unsafe { super::text(peer_verify_name, "peer_verify_name")? };
        let config = if cfg.is_null() {
            crate::TlsConfig::new()
        } else {
            super::config::snapshot(cfg)?
        };
        Ok(crate::client::start_client_encryption(
            s, &config, name, msecs,
        )?)
    })
}

/// UNENCRYPTED_MODE before a start call, CLIENT_MODE or SERVER_MODE from
/// its beginning on (QSslSocket::mode). UNENCRYPTED_MODE for NULL.
#[no_mangle]
pub extern "C" fn sslsocket_mode(s: *const Connection) -> SslSocketMode {
    read_handle(s, SslSocketMode::SSLSOCKET_UNENCRYPTED_MODE, |s| {
        s.mode().into()
    })
}

/// The socket's descriptor, for poll/epoll readiness only (do not read,
/// write or close it); -1 once the socket is closed (abort, a failed
/// handshake, the peer's close seen) and for NULL.
#[no_mangle]
pub extern "C" fn sslsocket_descriptor(s: *const Connection) -> c_int {
    read_handle(s, -1, |s| s.descriptor())
}

/// Sets this socket's callback for `kind` (NULL removes it; registering
/// again replaces it); `userdata` is passed back untouched. The socket
/// reports the events of its own handshake (for a socket that starts
/// encryption itself: every kind of the server's table except
/// NEW_CONNECTION and PENDING_CONNECTION_AVAILABLE) and the socket-only
/// kinds ENCRYPTED, MODE_CHANGED and NEW_SESSION_TICKET_RECEIVED,
/// synchronously on the thread that makes them happen (the start call, or
/// sslsocket_read / sslsocket_wait_for_ready_read for a ticket; never a
/// getter), with no library lock held. A callback may call any sslsocket_*
/// function on this socket except sslsocket_free. Replacing or removing a
/// callback does not wait for a call of it running on another thread: keep
/// `userdata` valid until the socket is freed. Client mode has no
/// HANDSHAKE_INTERRUPTED_ON_ERROR: its errors are decided in SSL_ERRORS.
/// SSLSERVER_ERROR_INVALID_ARGUMENT for an unknown kind and for
/// NEW_CONNECTION, PENDING_CONNECTION_AVAILABLE and ACCEPT_ERROR (a
/// server's), SSLSERVER_ERROR_UNSUPPORTED for
/// PRE_SHARED_KEY_AUTHENTICATION_REQUIRED.
#[no_mangle]
pub extern "C" fn sslsocket_register_callback(
    s: *mut Connection,
    kind: RawEventKind,
    cb: sslserver_callback,
    userdata: *mut c_void,
) -> sslserver_result {
    with_socket(s, |s| {
        let kind = EventKind::from_raw(kind)
            .ok_or_else(|| Failure::invalid(format!("{kind} is not an event kind")))?;
        match kind {
            EventKind::NewConnection
            | EventKind::PendingConnectionAvailable
            | EventKind::AcceptError => {
                return Err(Failure::invalid(format!(
                    "{} is a server's event; register it with sslserver_register_callback",
                    kind.name()
                )))
            }
            EventKind::PreSharedKeyAuthenticationRequired => {
                return Err(Failure::from(crate::Error::new(
                    crate::ErrorKind::Unsupported,
                    "pre-shared keys are not available: rustls has no PSK cipher suites",
                )))
            }
            _ => {}
        }
        s.set_callback(kind, callback_for(cb, userdata));
        Ok(())
    })
}

/// `body` with the socket `s` held for the call, as the `Arc` the core's
/// start calls take.
fn with_socket(
    s: *const Connection,
    body: impl FnOnce(&Arc<Connection>) -> super::CallResult,
) -> sslserver_result {
    call(|| {
        // SAFETY: the C caller passes NULL or a live sslsocket, as the
        // header documents for every handle parameter.
        let socket = unsafe { share(s) }.ok_or_else(|| Failure::null("s"))?;
        body(&socket)
    })
}
