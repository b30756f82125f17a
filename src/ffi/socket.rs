//! `sslsocket_*`: a connection (`QSslSocket` in server mode).

use std::ffi::{c_char, c_int};
use std::sync::Arc;

use super::sslserver_result;
use super::{call, call_or, copy_out, put, read_handle, with_handle, Failure};
use crate::connection::Connection;
use crate::types::{Protocol, SocketError, SocketState, SslErrorCode};

/// Client mode (QSslSocket::connectToHostEncrypted): resolves `host`,
/// connects to `port` (IPv4 or IPv6) and performs the TLS handshake, all
/// within `msecs` (-1 = no limit).
/// The server's certificate is verified (VERIFY_PEER unless `cfg` says
/// otherwise) against the system's trust store plus the CAs in `cfg`, for
/// `peer_verify_name` (NULL = `host`). Errors listed with
/// sslconfig_set_ignored_ssl_errors, or accepted by the callback of
/// sslconfig_set_ssl_errors_callback, do not stop it. The certificate and
/// key of `cfg`, if set, answer a request for a client certificate. `cfg`
/// may be NULL (defaults). Sessions are resumed across connections made with
/// the same `cfg` (and its copies).
/// On success `*out` is an encrypted socket on which every sslsocket_* call
/// works; free it with sslsocket_free. A rejected certificate gives
/// SSLSERVER_ERROR_TLS with each error's name and Qt code in
/// sslserver_last_error_message; a timeout SSLSERVER_ERROR_TIMEOUT.
#[no_mangle]
pub extern "C" fn sslsocket_connect_encrypted(
    host: *const c_char,
    port: u16,
    cfg: *const super::config::sslconfig,
    peer_verify_name: *const c_char,
    msecs: c_int,
    out: *mut *mut Connection,
) -> sslserver_result {
    call(|| {
        // SAFETY: the caller passes NUL-terminated strings (the name may be NULL).
        let (host, name) = unsafe {
            (
                super::required_text(host, "host")?,
                super::text(peer_verify_name, "peer_verify_name")?,
            )
        };
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let config = if cfg.is_null() {
            crate::TlsConfig::new()
        } else {
            super::config::snapshot(cfg)?
        };
        let connection = crate::client::connect_encrypted(host, port, &config, name, msecs)?;
        // SAFETY: out checked non-NULL; the caller passes a writable pointer.
        unsafe { put(out, Arc::into_raw(connection).cast_mut(), "out") }
    })
}

/// Reads decrypted bytes into `buf` (`len` > 0), blocking until at least one
/// is available. `*out_n = 0` means the peer closed cleanly (close_notify;
/// in UNENCRYPTED mode, the peer's TCP close). SSLSERVER_ERROR_CLOSED when
/// the peer closed TCP without close_notify or the socket was closed here;
/// SSLSERVER_ERROR_TLS on a protocol error; SSLSERVER_ERROR_IO on another
/// network error; SSLSERVER_ERROR_INVALID_STATE during a handshake (an
/// event's socket, a start call running); SSLSERVER_ERROR_INVALID_ARGUMENT
/// for `len` 0. In UNENCRYPTED mode it reads plain bytes, at most `len`:
/// what it does not read is left for the next read or, after a start call,
/// the handshake.
/// Non-blocking (sslsocket_set_blocking): returns the bytes already
/// decrypted, or what one receive that does not wait decrypts, and
/// SSLSERVER_ERROR_WOULD_BLOCK when that is none, also when the socket was
/// readable only for a record without data (a session ticket, a KeyUpdate).
/// `*out_n = 0` with SSLSERVER_OK still means a clean close.
#[no_mangle]
pub extern "C" fn sslsocket_read(
    s: *mut Connection,
    buf: *mut u8,
    len: usize,
    out_n: *mut usize,
) -> sslserver_result {
    with_handle(s, "s", |s| {
        if buf.is_null() || out_n.is_null() {
            return Err(Failure::null(if buf.is_null() { "buf" } else { "out_n" }));
        }
        if isize::try_from(len).is_err() {
            return Err(Failure::invalid(format!("buf: length {len} is too large")));
        }
        // SAFETY: the caller passes `len` writable bytes at `buf`, a
        // possible object size (checked).
        let buffer = unsafe { std::slice::from_raw_parts_mut(buf, len) };
        let n = s.read(buffer)?;
        // SAFETY: out_n checked non-NULL; the caller passes a writable size_t.
        unsafe { put(out_n, n, "out_n") }
    })
}

/// Encrypts and writes all `len` bytes (in UNENCRYPTED mode: writes them as
/// they are), blocking until the kernel has them; `*out_n` (may be NULL)
/// receives `len`. May run while another thread reads.
/// Non-blocking (sslsocket_set_blocking): encrypts as much of `buf` as fits
/// under the socket's bound of queued ciphertext (256 KiB; at least one
/// record when nothing is queued), sends what the kernel takes and queues
/// the rest (see sslsocket_wants_write, sslsocket_flush). `*out_n` receives
/// how many bytes of `buf` were taken, possibly fewer than `len`: pass the
/// rest again later. SSLSERVER_ERROR_WOULD_BLOCK only when none was taken.
/// In UNENCRYPTED mode nothing is queued: it takes what the kernel takes.
#[no_mangle]
pub extern "C" fn sslsocket_write(
    s: *mut Connection,
    buf: *const u8,
    len: usize,
    out_n: *mut usize,
) -> sslserver_result {
    with_handle(s, "s", |s| {
        // SAFETY: the caller passes `len` readable bytes at `buf`.
        let data = unsafe { super::bytes(buf, len, "buf") }?;
        let n = s.write(data)?;
        if !out_n.is_null() {
            // SAFETY: the caller passes NULL or a writable size_t.
            unsafe { put(out_n, n, "out_n") }?;
        }
        Ok(())
    })
}

/// Waits up to `msecs` ms (-1 = forever) for decrypted bytes (plain bytes
/// in UNENCRYPTED mode). False on
/// timeout, when the connection ends, and for NULL.
#[no_mangle]
pub extern "C" fn sslsocket_wait_for_ready_read(s: *mut Connection, msecs: c_int) -> bool {
    read_handle(s, false, |s| {
        let timeout = match u64::try_from(msecs) {
            Ok(ms) => Some(std::time::Duration::from_millis(ms)),
            Err(_) if msecs == -1 => None,
            Err(_) => return false,
        };
        s.wait_for_ready_read(timeout)
    })
}

/// Decrypted bytes (plain bytes in UNENCRYPTED mode) that sslsocket_read
/// returns without blocking. Takes in
/// what has arrived on the socket since the last call; never waits.
/// An event loop calls it (or reads until SSLSERVER_ERROR_WOULD_BLOCK)
/// before polling again: bytes already decrypted do not make the descriptor
/// readable.
#[no_mangle]
pub extern "C" fn sslsocket_bytes_available(s: *const Connection) -> usize {
    read_handle(s, 0, Connection::bytes_available)
}

/// Whether the handshake completed and the connection is still open. Like
/// sslsocket_state, it takes in what has arrived on the socket, without
/// waiting.
#[no_mangle]
pub extern "C" fn sslsocket_is_encrypted(s: *const Connection) -> bool {
    read_handle(s, false, Connection::is_encrypted)
}

/// CONNECTED while open both ways, UNCONNECTED once either side closed.
/// Takes in what has arrived on the socket, without waiting, so the peer's
/// close shows here once the data it sent before has been read.
#[no_mangle]
pub extern "C" fn sslsocket_state(s: *const Connection) -> SocketState {
    read_handle(s, SocketState::Unconnected, Connection::state)
}

/// The last error of the connection; UNKNOWN when there has been none.
#[no_mangle]
pub extern "C" fn sslsocket_error(s: *const Connection) -> SocketError {
    read_handle(s, SocketError::Unknown, |s| s.error().0)
}

/// The text of the last error (string-out convention; "" when none).
#[no_mangle]
pub extern "C" fn sslsocket_error_string(
    s: *const Connection,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> sslserver_result {
    with_handle(s, "s", |s| {
        let text = s.error().1;
        // SAFETY: the caller passes a buffer of `len` bytes and a size_t out pointer.
        unsafe { copy_out(&text, buf, len, out_n) }
    })
}

/// The peer's address, e.g. "127.0.0.1" or "::1" (IPv4 clients of a
/// dual-stack server appear as IPv4). Readable in every event. With the
/// PROXY protocol (sslserver_set_proxy_protocol) it is the client the
/// header named, from NEW_CONNECTION on; see
/// sslsocket_transport_peer_address for the balancer's.
#[no_mangle]
pub extern "C" fn sslsocket_peer_address(
    s: *const Connection,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> sslserver_result {
    with_handle(s, "s", |s| {
        let address = s.peer_addr().ip().to_string();
        // SAFETY: the caller passes a buffer of `len` bytes and a size_t out pointer.
        unsafe { copy_out(&address, buf, len, out_n) }
    })
}

/// The peer's port (with the PROXY protocol, the client's, as for
/// sslsocket_peer_address); 0 for NULL.
#[no_mangle]
pub extern "C" fn sslsocket_peer_port(s: *const Connection) -> u16 {
    read_handle(s, 0, |s| s.peer_addr().port())
}

/// The address of the TCP peer itself (string-out convention, as
/// sslsocket_peer_address): with the PROXY protocol, the balancer that
/// relayed the connection; otherwise the same as sslsocket_peer_address.
/// Readable in every event.
#[no_mangle]
pub extern "C" fn sslsocket_transport_peer_address(
    s: *const Connection,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> sslserver_result {
    with_handle(s, "s", |s| {
        let address = s.transport_peer_addr().ip().to_string();
        // SAFETY: the caller passes a buffer of `len` bytes and a size_t out pointer.
        unsafe { copy_out(&address, buf, len, out_n) }
    })
}

/// The local port of the connection; 0 for NULL.
#[no_mangle]
pub extern "C" fn sslsocket_local_port(s: *const Connection) -> u16 {
    read_handle(s, 0, |s| s.local_addr().port())
}

/// The negotiated version (TLS_V1_2 or TLS_V1_3); UNKNOWN before the
/// handshake completes.
#[no_mangle]
pub extern "C" fn sslsocket_session_protocol(s: *const Connection) -> Protocol {
    read_handle(s, Protocol::Unknown, |s| {
        s.session().map_or(Protocol::Unknown, |i| i.protocol)
    })
}

/// The IANA name of the negotiated cipher suite, e.g. "TLS_AES_256_GCM_SHA384"
/// (string-out convention). SSLSERVER_ERROR_INVALID_STATE before the handshake completes.
#[no_mangle]
pub extern "C" fn sslsocket_session_cipher(
    s: *const Connection,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> sslserver_result {
    with_handle(s, "s", |s| {
        let cipher = s
            .session()
            .map(|i| i.cipher.clone())
            .ok_or_else(not_handshaken)?;
        // SAFETY: the caller passes a buffer of `len` bytes and a size_t out pointer.
        unsafe { copy_out(&cipher, buf, len, out_n) }
    })
}

fn not_handshaken() -> Failure {
    Failure::from(crate::Error::invalid_state(
        "the TLS handshake has not completed",
    ))
}

/// Whether the session was resumed: on a server, the client presented a
/// ticket or session of this server; in client mode, a ticket from an
/// earlier connection with the same sslconfig was accepted. Either way the
/// peer's certificate was judged again.
#[no_mangle]
pub extern "C" fn sslsocket_session_resumed(s: *const Connection) -> bool {
    read_handle(s, false, |s| s.session().is_some_and(|i| i.resumed))
}

/// The subject of the peer's certificate, e.g. "CN=localhost"
/// (string-out convention). SSLSERVER_ERROR_INVALID_STATE if the peer sent none.
#[no_mangle]
pub extern "C" fn sslsocket_peer_certificate_subject(
    s: *const Connection,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> sslserver_result {
    with_handle(s, "s", |s| {
        let subject = s.peer_certificate_subject().ok_or_else(|| {
            Failure::from(crate::Error::invalid_state("the peer sent no certificate"))
        })?;
        // SAFETY: the caller passes a buffer of `len` bytes and a size_t out pointer.
        unsafe { copy_out(&subject, buf, len, out_n) }
    })
}

/// How many certificates the peer presented (0 if none).
#[no_mangle]
pub extern "C" fn sslsocket_peer_certificate_chain_length(s: *const Connection) -> usize {
    read_handle(s, 0, |s| s.peer_certificate_chain().len())
}

/// The DER bytes of certificate `index` of the peer's chain (0 is the
/// peer's own). The bytes live as long as `s`. SSLSERVER_ERROR_INVALID_ARGUMENT
/// for an index out of range.
#[no_mangle]
pub extern "C" fn sslsocket_peer_certificate_der(
    s: *const Connection,
    index: usize,
    der: *mut *const u8,
    der_len: *mut usize,
) -> sslserver_result {
    // The socket is held for the call, like every other handle call.
    with_handle(s, "s", |s| {
        if der.is_null() || der_len.is_null() {
            return Err(Failure::null(if der.is_null() { "der" } else { "der_len" }));
        }
        let chain = s.peer_certificate_chain();
        let cert = chain.get(index).ok_or_else(|| {
            Failure::invalid(format!(
                "index {index} is out of range (the chain has {})",
                chain.len()
            ))
        })?;
        // SAFETY: both out pointers are checked non-NULL and writable per the
        // contract; the chain is set once and lives as long as the socket.
        unsafe {
            put(der, cert.as_ptr(), "der")?;
            put(der_len, cert.len(), "der_len")
        }
    })
}

/// The negotiated ALPN protocol (string-out convention; "" when none).
/// SSLSERVER_ERROR_INVALID_STATE before the handshake completes.
#[no_mangle]
pub extern "C" fn sslsocket_alpn_protocol(
    s: *const Connection,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> sslserver_result {
    with_handle(s, "s", |s| {
        let info = s.session().ok_or_else(not_handshaken)?;
        let alpn =
            String::from_utf8_lossy(info.alpn_protocol.as_deref().unwrap_or_default()).into_owned();
        // SAFETY: the caller passes a buffer of `len` bytes and a size_t out pointer.
        unsafe { copy_out(&alpn, buf, len, out_n) }
    })
}

/// The host name the client asked for with SNI (string-out convention; ""
/// when none). SSLSERVER_ERROR_INVALID_STATE before the handshake completes.
#[no_mangle]
pub extern "C" fn sslsocket_server_name(
    s: *const Connection,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> sslserver_result {
    with_handle(s, "s", |s| {
        let info = s.session().ok_or_else(not_handshaken)?;
        let name = info.server_name.clone().unwrap_or_default();
        // SAFETY: the caller passes a buffer of `len` bytes and a size_t out pointer.
        unsafe { copy_out(&name, buf, len, out_n) }
    })
}

/// How many certificate errors the handshake found.
#[no_mangle]
pub extern "C" fn sslsocket_ssl_handshake_error_count(s: *const Connection) -> usize {
    read_handle(s, 0, |s| s.ssl_handshake_errors().len())
}

/// Certificate error `index` of the handshake; NONE when out of range.
#[no_mangle]
pub extern "C" fn sslsocket_ssl_handshake_error(
    s: *const Connection,
    index: usize,
) -> SslErrorCode {
    read_handle(s, SslErrorCode::None, |s| {
        s.ssl_handshake_errors()
            .get(index)
            .copied()
            .unwrap_or(SslErrorCode::None)
    })
}

/// From SSL_ERRORS or PEER_VERIFY_ERROR: accept the peer's certificate
/// despite its errors (a client's on a server, the server's in a client
/// start). Called earlier (NEW_CONNECTION, STARTED_..., or before a start
/// call), it accepts whatever errors come, and lets a VERIFY_PEER handshake
/// without a client certificate go on.
#[no_mangle]
pub extern "C" fn sslsocket_ignore_ssl_errors(s: *mut Connection) {
    read_handle(s, (), Connection::ignore_ssl_errors)
}

/// From HANDSHAKE_INTERRUPTED_ON_ERROR: go on with the handshake.
#[no_mangle]
pub extern "C" fn sslsocket_continue_interrupted_handshake(s: *mut Connection) {
    read_handle(s, (), Connection::continue_interrupted_handshake)
}

/// Sends close_notify, flushes and closes the write side. Data the client
/// still sends can be read until it closes. Calling it again does nothing.
/// Non-blocking: queues close_notify behind what is queued and sends what
/// the kernel takes; if sslsocket_wants_write is then true, sslsocket_flush
/// sends the rest and closes the write side.
#[no_mangle]
pub extern "C" fn sslsocket_disconnect_from_host(s: *mut Connection) -> sslserver_result {
    with_handle(s, "s", |s| Ok(s.disconnect_from_host()?))
}

/// Closes at once, discarding unsent data; blocked reads and writes on other
/// threads return SSLSERVER_ERROR_CLOSED.
#[no_mangle]
pub extern "C" fn sslsocket_abort(s: *mut Connection) {
    read_handle(s, (), Connection::abort)
}

/// Disconnects gracefully if still open (close_notify, after what is
/// queued; a blocking socket waits up to 1 s for a peer that does not read,
/// a non-blocking one not at all: see sslsocket_set_blocking), then frees
/// the socket. For every socket the application owns: from
/// sslserver_next_pending_connection, sslsocket_connect_encrypted,
/// sslsocket_connect or sslsocket_new_from_descriptor (never an event's
/// borrowed socket). Only when no other thread is inside a call on
/// this socket: to wake a thread blocked on it, call sslsocket_abort first,
/// join that thread, then free. NULL is a no-op.
#[no_mangle]
pub extern "C" fn sslsocket_free(s: *mut Connection) {
    call_or((), || {
        if !s.is_null() {
            // SAFETY: a non-NULL socket came from sslserver_next_pending_connection
            // (Arc::into_raw) and this call gives up that reference, once.
            let s = unsafe { Arc::from_raw(s.cast_const()) };
            s.release();
        }
    })
}

/// Blocking (`true`, the default: every call waits as documented) or
/// non-blocking (`false`) reads, writes, flushes and disconnects: they
/// return SSLSERVER_ERROR_WOULD_BLOCK instead of waiting, for an event loop
/// that polls sslsocket_descriptor. Can be switched at any time, also on a
/// live connection and in UNENCRYPTED mode; handshakes are unaffected.
/// sslsocket_free of a non-blocking socket does not wait either: it sends
/// what the kernel takes at once and drops the rest, so flush until
/// sslsocket_wants_write is false (or switch to blocking) before freeing
/// when every byte must arrive. A non-blocking call never waits for
/// another thread's blocking call on the same socket: it gets WOULD_BLOCK.
#[no_mangle]
pub extern "C" fn sslsocket_set_blocking(s: *mut Connection, blocking: bool) -> sslserver_result {
    with_handle(s, "s", |s| {
        s.set_blocking(blocking);
        Ok(())
    })
}

/// Whether encrypted bytes are queued, waiting for the kernel to take them
/// (a non-blocking write or disconnect, or a reply to the peer): poll the
/// descriptor for POLLOUT, then call sslsocket_flush. False for NULL.
#[no_mangle]
pub extern "C" fn sslsocket_wants_write(s: *const Connection) -> bool {
    read_handle(s, false, Connection::wants_write)
}

/// Sends what is queued (see sslsocket_wants_write). Non-blocking:
/// SSLSERVER_ERROR_WOULD_BLOCK if the kernel did not take all of it (poll
/// for POLLOUT and call again); after sslsocket_disconnect_from_host, the
/// write side is shut down once the close_notify has left. Blocking: waits
/// until the kernel has it all. SSLSERVER_ERROR_CLOSED or _IO if the
/// connection failed.
#[no_mangle]
pub extern "C" fn sslsocket_flush(s: *mut Connection) -> sslserver_result {
    with_handle(s, "s", |s| Ok(s.flush()?))
}
