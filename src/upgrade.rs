//! Encrypting a connection that began in plain text (`QSslSocket`'s
//! `startServerEncryption` / `startClientEncryption`): a socket the
//! application accepted itself and handed over as a descriptor, or one it
//! connected with `sslsocket_connect`, upgraded on the calling thread when
//! its protocol says so (STARTTLS).
//!
//! The handshake is the one an accepted connection gets, with the same
//! verification and events, reported to the socket's own callbacks; what
//! the peer sent in plain text and the application did not read is the
//! start of the TLS stream (see `connection::plain`).

use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use crate::config::TlsConfig;
use crate::connection::Connection;
use crate::error::{os_reason, Error, ErrorKind, Result};
use crate::events::Event;
use crate::handshake::{self, HandshakeDeadline};
use crate::types::{EventKind, SocketError, SslMode};

/// Runs the server side of the TLS handshake on `connection` (UNENCRYPTED)
/// with `config`'s certificate and client-certificate policy, within
/// `timeout_ms` (-1 = none). Reports MODE_CHANGED, the handshake's events
/// and ENCRYPTED or ERROR_OCCURRED; a failed handshake closes the socket
/// and leaves its error readable.
pub fn start_server_encryption(
    connection: &Arc<Connection>,
    config: &TlsConfig,
    timeout_ms: i32,
) -> Result<()> {
    if timeout_ms < -1 {
        return Err(Error::invalid_argument(
            "the timeout must be >= 0 ms, or -1 for none",
        ));
    }
    let tls = config.server_tls()?;
    begin(connection, SslMode::Server)?;
    let deadline = HandshakeDeadline::starting_now(timeout_ms);
    let events = connection.events();
    let outcome = match handshake::perform_server_side(connection, &tls, &events, deadline) {
        Some(server) => {
            let name = handshake::requested_server_name(&server);
            connection.install(server, name);
            Ok(())
        }
        None => Err(failure_of(connection)),
    };
    finish(connection, outcome)
}

/// Leaves UNENCRYPTED mode for `mode` and reports MODE_CHANGED.
pub(crate) fn begin(connection: &Arc<Connection>, mode: SslMode) -> Result<()> {
    connection.begin_encryption(mode)?;
    connection.events().emit(EventKind::ModeChanged, || {
        Event::new(EventKind::ModeChanged, Some(connection)).describe(match mode {
            SslMode::Server => "the socket is becoming the server end of TLS",
            _ => "the socket is becoming the client end of TLS",
        })
    });
    Ok(())
}

/// Reports ENCRYPTED (and tickets that came with the handshake) when the
/// handshake succeeded.
pub(crate) fn finish(connection: &Arc<Connection>, outcome: Result<()>) -> Result<()> {
    outcome?;
    connection.events().emit(EventKind::Encrypted, || {
        let session = connection.session();
        Event::new(EventKind::Encrypted, Some(connection)).describe(format!(
            "encrypted: {} {}",
            session.map_or("", |s| s.protocol.name()),
            session.map_or("", |s| s.cipher.as_str())
        ))
    });
    connection.report_tickets();
    Ok(())
}

/// The error a failed server handshake left on the socket, as a result.
fn failure_of(connection: &Connection) -> Error {
    let (error, text) = connection.error();
    let kind = match error {
        SocketError::SocketTimeout => ErrorKind::Timeout,
        SocketError::RemoteHostClosed => ErrorKind::Closed,
        SocketError::Network => ErrorKind::Io,
        _ => ErrorKind::Tls,
    };
    Error::new(kind, text)
}

/// Why `fd` cannot be a socket of this library, if it cannot: it must be
/// an open, connected TCP (IPv4 or IPv6) stream socket.
pub fn check_descriptor(fd: BorrowedFd<'_>) -> std::result::Result<(), String> {
    use rustix::net::{sockopt, AddressFamily, SocketType};
    let socket_type = sockopt::socket_type(fd).map_err(|e| match e {
        rustix::io::Errno::NOTSOCK => "is not a socket".to_string(),
        e => format!("cannot be inspected: {e}"),
    })?;
    if socket_type != SocketType::STREAM {
        return Err("is not a stream socket (UDP?)".to_string());
    }
    // TCP (or MPTCP, which applications use like TCP), not SCTP.
    const IPPROTO_MPTCP: u32 = 262;
    let protocol = sockopt::socket_protocol(fd).map_err(|e| format!("cannot be inspected: {e}"))?;
    if !protocol.is_some_and(|p| {
        p.as_raw().get() == libc::IPPROTO_TCP as u32 || p.as_raw().get() == IPPROTO_MPTCP
    }) {
        return Err("is not a TCP socket".to_string());
    }
    let family = sockopt::socket_domain(fd).map_err(|e| format!("cannot be inspected: {e}"))?;
    if family != AddressFamily::INET && family != AddressFamily::INET6 {
        return Err("is not a TCP socket (a Unix domain socket?)".to_string());
    }
    if sockopt::socket_acceptconn(fd).unwrap_or(false) {
        return Err("is a listening socket, not a connection".to_string());
    }
    if rustix::net::getpeername(fd).is_err() {
        return Err("is not connected".to_string());
    }
    Ok(())
}

/// A socket in UNENCRYPTED mode over `stream`, a connected TCP socket the
/// application hands over (`sslsocket_new_from_descriptor`). The library
/// owns it from now on, puts it in blocking mode and clears its socket
/// timeouts: blocking calls wait as on any other socket of the library,
/// which keeps its own deadlines. If it cannot be used, the stream comes
/// back with the error, untouched.
pub fn wrap(stream: TcpStream) -> std::result::Result<Arc<Connection>, (Error, TcpStream)> {
    if let Err(why) = check_descriptor(stream.as_fd()) {
        return Err((Error::invalid_argument(format!("the socket {why}")), stream));
    }
    let blocking = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(None))
        .and_then(|()| stream.set_write_timeout(None));
    if let Err(e) = blocking {
        return Err((Error::new(ErrorKind::Io, os_reason(&e)), stream));
    }
    Connection::over_stream(stream, SslMode::Unencrypted, None)
}
