//! `dtlsserver_*`: the DTLS 1.2 server with pre-shared keys (Qt's DTLS
//! server example: `QDtls` + `QDtlsClientVerifier`), the C view of
//! [`crate::dtls::DtlsServer`].

use std::ffi::{c_char, c_int, c_void, CString};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::{call_or, copy_out, read_handle, text, with_handle, Failure};
use super::{sslserver_result, static_text};
use crate::dtls::{DtlsAuthentication, DtlsEvent, DtlsEventKind, DtlsServer};
use crate::types::SocketError;

/// The largest key a PSK callback can return, in bytes (the size of the
/// buffer it writes into).
pub const DTLSSERVER_MAX_PSK_LENGTH: usize = 256;

/// What a dtlsserver_event reports.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum dtlsserver_event_kind {
    /// A ClientHello came back with a valid cookie (the stateless
    /// HelloVerifyRequest round trip is done): the peer now has a session
    /// and its handshake runs ("verified, starting a handshake").
    DTLSSERVER_EVENT_HANDSHAKE_STARTED = 0,
    /// The handshake completed; authentication says whether by PSK (then
    /// psk_identity is the client's identity, possibly empty) or by the
    /// server's certificate (an anonymous client; psk_identity empty). From
    /// now on dtlsserver_write may send to the peer.
    DTLSSERVER_EVENT_HANDSHAKE_COMPLETE = 1,
    /// A datagram from the peer was decrypted; data/data_len is the plaintext.
    DTLSSERVER_EVENT_DATAGRAM_RECEIVED = 2,
    /// The peer sent close_notify (the server answered it); its session is gone.
    DTLSSERVER_EVENT_PEER_CLOSED = 3,
    /// Something failed: socket_error and description say what. With a peer
    /// (peer_port != 0) that peer's session is gone, or never began: a failed
    /// handshake (SSL_HANDSHAKE_FAILED: a refused identity, a wrong key
    /// (reported at the handshake deadline), no shared cipher suite), a
    /// handshake deadline or idle timeout (SOCKET_TIMEOUT), a full peer
    /// table, a peer over its handshake budget or an address at its
    /// handshake or peer bound (SOCKET_RESOURCE), a fatal alert after the
    /// handshake (SSL_INTERNAL), a new session from the same address and
    /// port replacing the old one (REMOTE_HOST_CLOSED). One exception: when
    /// a new handshake from an address and port that has a session is
    /// refused, that session goes on, and the description ends with "(its
    /// current session goes on)". Datagrams that do not authenticate never
    /// cause one: they are dropped silently.
    DTLSSERVER_EVENT_ERROR = 4,
}

/// A `dtlsserver_event_kind` as C passes it (any int, checked on use).
pub type RawDtlsEventKind = c_int;

impl From<DtlsEventKind> for dtlsserver_event_kind {
    fn from(kind: DtlsEventKind) -> Self {
        use dtlsserver_event_kind::*;
        match kind {
            DtlsEventKind::HandshakeStarted => DTLSSERVER_EVENT_HANDSHAKE_STARTED,
            DtlsEventKind::HandshakeComplete => DTLSSERVER_EVENT_HANDSHAKE_COMPLETE,
            DtlsEventKind::DatagramReceived => DTLSSERVER_EVENT_DATAGRAM_RECEIVED,
            DtlsEventKind::PeerClosed => DTLSSERVER_EVENT_PEER_CLOSED,
            DtlsEventKind::Error => DTLSSERVER_EVENT_ERROR,
        }
    }
}

/// How a peer's session was authenticated (dtlsserver_event.authentication).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum dtlsserver_authentication {
    /// The handshake has not completed, or the event concerns no peer.
    DTLSSERVER_AUTHENTICATION_NONE = 0,
    /// A PSK suite: the client proved it holds the key the PSK callback
    /// returned for psk_identity (which may be empty).
    DTLSSERVER_AUTHENTICATION_PSK = 1,
    /// A certificate suite: only the server proved who it is. The client is
    /// anonymous (no client certificate is requested): anyone can complete
    /// such a handshake. Check this before trusting psk_identity: a PSK
    /// client with an empty identity and a certificate client otherwise
    /// look alike.
    DTLSSERVER_AUTHENTICATION_CERTIFICATE = 2,
}

impl From<DtlsAuthentication> for dtlsserver_authentication {
    fn from(authentication: DtlsAuthentication) -> Self {
        use dtlsserver_authentication::*;
        match authentication {
            DtlsAuthentication::None => DTLSSERVER_AUTHENTICATION_NONE,
            DtlsAuthentication::Psk => DTLSSERVER_AUTHENTICATION_PSK,
            DtlsAuthentication::Certificate => DTLSSERVER_AUTHENTICATION_CERTIFICATE,
        }
    }
}

/// A DTLS server event; it and everything it points to are valid during the
/// callback only.
#[repr(C)]
pub struct dtlsserver_event {
    pub kind: dtlsserver_event_kind,
    /// The peer's address, e.g. "127.0.0.1" or "::1" (IPv4-mapped IPv6
    /// addresses are shown as IPv4); "" for errors of the socket itself.
    pub peer_address: *const c_char,
    /// The peer's UDP port; 0 for errors of the socket itself.
    pub peer_port: u16,
    /// DATAGRAM_RECEIVED: the decrypted datagram; NULL when data_len is 0.
    pub data: *const u8,
    pub data_len: usize,
    /// The client's PSK identity (not NUL-terminated) once the handshake got
    /// that far; NULL when psk_identity_len is 0.
    pub psk_identity: *const u8,
    pub psk_identity_len: usize,
    /// ERROR: what failed (UNKNOWN for the other kinds).
    pub socket_error: SocketError,
    /// Human-readable text for the event, never NULL, e.g.
    /// "127.0.0.1:5000: successfully completed a handshake (...)".
    pub description: *const c_char,
    /// How the peer's session was authenticated, from HANDSHAKE_COMPLETE on
    /// (on every later event about that peer); NONE before.
    pub authentication: dtlsserver_authentication,
    /// The negotiated cipher suite's IANA name, e.g.
    /// "TLS_PSK_WITH_AES_128_GCM_SHA256", from HANDSHAKE_COMPLETE on; ""
    /// before. Never NULL.
    pub cipher_suite: *const c_char,
}

/// An event callback.
pub type dtlsserver_callback =
    Option<unsafe extern "C" fn(event: *const dtlsserver_event, userdata: *mut c_void)>;

/// The PSK callback: the client announced `identity` (`identity_len` bytes,
/// not NUL-terminated, may contain any byte). Write the key for it into
/// `key` (room for `key_capacity` = DTLSSERVER_MAX_PSK_LENGTH bytes) and
/// return its length (1..key_capacity); return 0 or a negative number to
/// refuse the client (its handshake fails with the alert
/// unknown_psk_identity and an ERROR event).
pub type dtlsserver_psk_callback = Option<
    unsafe extern "C" fn(
        identity: *const u8,
        identity_len: usize,
        key: *mut u8,
        key_capacity: usize,
        userdata: *mut c_void,
    ) -> c_int,
>;

/// A C function and its userdata.
struct CFunction<F> {
    function: F,
    userdata: *mut c_void,
}

// SAFETY: the C contract (dtlsserver_register_callback,
// dtlsserver_set_psk_callback) says callbacks run on the library's thread;
// the application registers only userdata that may be used from there. The
// library never dereferences it.
unsafe impl<F> Send for CFunction<F> {}
// SAFETY: as above; the library only passes the pointer along.
unsafe impl<F> Sync for CFunction<F> {}

type EventFn = unsafe extern "C" fn(*const dtlsserver_event, *mut c_void);
type PskFn = unsafe extern "C" fn(*const u8, usize, *mut u8, usize, *mut c_void) -> c_int;

fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', " ")).unwrap_or_default()
}

fn pointer_or_null(bytes: &[u8]) -> *const u8 {
    if bytes.is_empty() {
        std::ptr::null()
    } else {
        bytes.as_ptr()
    }
}

impl CFunction<EventFn> {
    fn deliver(&self, event: &DtlsEvent) {
        let address = c_string(&event.peer.map_or(String::new(), |p| p.ip().to_string()));
        let description = c_string(&event.description);
        let cipher_suite = c_string(&event.cipher_suite);
        let c_event = dtlsserver_event {
            kind: event.kind.into(),
            peer_address: address.as_ptr(),
            peer_port: event.peer.map_or(0, |p| p.port()),
            data: pointer_or_null(&event.data),
            data_len: event.data.len(),
            psk_identity: pointer_or_null(&event.psk_identity),
            psk_identity_len: event.psk_identity.len(),
            socket_error: event.socket_error,
            description: description.as_ptr(),
            authentication: event.authentication.into(),
            cipher_suite: cipher_suite.as_ptr(),
        };
        // SAFETY: `function` is the application's callback; the event and
        // the strings and buffers it points to outlive the call.
        unsafe { (self.function)(&c_event, self.userdata) }
    }
}

impl CFunction<PskFn> {
    fn key_for(&self, identity: &[u8]) -> Option<Vec<u8>> {
        let mut key = [0u8; DTLSSERVER_MAX_PSK_LENGTH];
        // SAFETY: `function` is the application's PSK callback; `identity`
        // is readable for its length and `key` writable for its length
        // during the call.
        let n = unsafe {
            (self.function)(
                pointer_or_null(identity),
                identity.len(),
                key.as_mut_ptr(),
                key.len(),
                self.userdata,
            )
        };
        let result = usize::try_from(n)
            .ok()
            .filter(|&n| n >= 1 && n <= key.len())
            .map(|n| key[..n].to_vec());
        key.fill(0);
        result
    }
}

/// Creates a DTLS server (not listening, no PSK callback, no identity hint).
/// NULL only if out of memory.
#[no_mangle]
pub extern "C" fn dtlsserver_new() -> *mut DtlsServer {
    call_or(std::ptr::null_mut(), || {
        Arc::into_raw(Arc::new(DtlsServer::new())).cast_mut()
    })
}

/// Closes the server (as dtlsserver_close: close_notify to every peer) and
/// frees it. Safe from any thread, except from one of its own callbacks.
/// NULL is a no-op.
#[no_mangle]
pub extern "C" fn dtlsserver_free(server: *mut DtlsServer) {
    call_or((), || {
        if !server.is_null() {
            // SAFETY: a non-NULL server came from dtlsserver_new and this call
            // gives up the caller's reference, once.
            let server = unsafe { Arc::from_raw(server.cast_const()) };
            server.close();
        }
    })
}

/// The PSK identity hint announced to clients in the handshake (NULL or ""
/// = none, the default). Applies to handshakes started afterwards.
#[no_mangle]
pub extern "C" fn dtlsserver_set_identity_hint(
    server: *mut DtlsServer,
    hint: *const c_char,
) -> sslserver_result {
    with_handle(server, "server", |s| {
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let hint = unsafe { text(hint, "hint") }?.unwrap_or("");
        Ok(s.set_identity_hint(hint.as_bytes())?)
    })
}

/// Sets the callback that picks the key for a client's PSK identity (see
/// dtlsserver_psk_callback); `cb` NULL removes it: PSK clients are then
/// refused, or, with a certificate set, PSK suites are no longer offered.
/// Required before dtlsserver_listen unless dtlsserver_set_config gave a
/// certificate. It runs on the server's
/// thread during the handshake, while the server's lock is held: it must
/// not call dtlsserver_write (that returns SSLSERVER_ERROR_INVALID_STATE)
/// nor dtlsserver_free; dtlsserver_close is allowed.
#[no_mangle]
pub extern "C" fn dtlsserver_set_psk_callback(
    server: *mut DtlsServer,
    cb: dtlsserver_psk_callback,
    userdata: *mut c_void,
) -> sslserver_result {
    with_handle(server, "server", |s| {
        let callback = cb.map(|function| {
            let c_function = CFunction { function, userdata };
            Arc::new(move |identity: &[u8]| c_function.key_for(identity))
                as crate::dtls::PskCallback
        });
        s.set_psk_callback(callback);
        Ok(())
    })
}

/// Sets the callback for one event kind (registering again replaces it; `cb`
/// NULL removes it). `userdata` is passed back untouched. Callbacks run on
/// the server's thread with no library lock held, one at a time, and may
/// call any function here (dtlsserver_write to answer a datagram,
/// dtlsserver_close) except dtlsserver_free on this server. They must return
/// (no longjmp, no C++ exceptions).
#[no_mangle]
pub extern "C" fn dtlsserver_register_callback(
    server: *mut DtlsServer,
    kind: RawDtlsEventKind,
    cb: dtlsserver_callback,
    userdata: *mut c_void,
) -> sslserver_result {
    with_handle(server, "server", |s| {
        let kind = DtlsEventKind::from_raw(kind)
            .ok_or_else(|| Failure::invalid(format!("{kind} is not a DTLS event kind")))?;
        let callback = cb.map(|function| {
            let c_function = CFunction { function, userdata };
            Arc::new(move |event: &DtlsEvent| c_function.deliver(event))
                as crate::dtls::DtlsCallback
        });
        s.set_callback(kind, callback);
        Ok(())
    })
}

/// One deadline per peer from its verified ClientHello to handshake
/// completion, in ms (default 5000; -1 = none). Applies to handshakes
/// started afterwards. Lost flights are retransmitted within it (1 s, 2 s,
/// 4 s, ...).
#[no_mangle]
pub extern "C" fn dtlsserver_set_handshake_timeout(
    server: *mut DtlsServer,
    msecs: c_int,
) -> sslserver_result {
    with_handle(server, "server", |s| Ok(s.set_handshake_timeout(msecs)?))
}

/// The handshake timeout in ms (-1 = none); 0 for NULL.
#[no_mangle]
pub extern "C" fn dtlsserver_handshake_timeout(server: *const DtlsServer) -> c_int {
    read_handle(server, 0, DtlsServer::handshake_timeout)
}

/// A peer whose handshake completed and from which nothing authenticated
/// arrives for this long (ms) is sent close_notify and dropped, with an
/// ERROR event (SOCKET_TIMEOUT). Default 300000; -1 = never. Applies to
/// handshakes completed afterwards.
#[no_mangle]
pub extern "C" fn dtlsserver_set_idle_timeout(
    server: *mut DtlsServer,
    msecs: c_int,
) -> sslserver_result {
    with_handle(server, "server", |s| Ok(s.set_idle_timeout(msecs)?))
}

/// The idle timeout in ms (-1 = never); 0 for NULL.
#[no_mangle]
pub extern "C" fn dtlsserver_idle_timeout(server: *const DtlsServer) -> c_int {
    read_handle(server, 0, DtlsServer::idle_timeout)
}

/// Bounds the peers with a session, handshaking or established (default
/// 1024, at least 1). A client whose cookie checks out while the table is
/// full is dropped with an ERROR event (SOCKET_RESOURCE). Clients that have
/// not returned a cookie never count: they cost the server no memory.
#[no_mangle]
pub extern "C" fn dtlsserver_set_max_peers(server: *mut DtlsServer, n: c_int) -> sslserver_result {
    with_handle(server, "server", |s| Ok(s.set_max_peers(n)?))
}

/// The peer bound; 0 for NULL.
#[no_mangle]
pub extern "C" fn dtlsserver_max_peers(server: *const DtlsServer) -> c_int {
    read_handle(server, 0, DtlsServer::max_peers)
}

/// Bytes a peer may send before its handshake completes (default 65536, at
/// least 2048); a peer that sends more is dropped with an ERROR event
/// (SOCKET_RESOURCE). Every byte counts, whether it authenticates or not,
/// so neither a client nor someone spoofing its address can make the
/// server buffer more for it. After the handshake the same budget bounds
/// the peer's unencrypted bytes (a repeated last flight); past it those are
/// dropped, not the peer. Takes effect with the next datagram.
#[no_mangle]
pub extern "C" fn dtlsserver_set_handshake_budget(
    server: *mut DtlsServer,
    bytes: c_int,
) -> sslserver_result {
    with_handle(server, "server", |s| Ok(s.set_handshake_budget(bytes)?))
}

/// The handshake budget in bytes; 0 for NULL.
#[no_mangle]
pub extern "C" fn dtlsserver_handshake_budget(server: *const DtlsServer) -> c_int {
    read_handle(server, 0, DtlsServer::handshake_budget)
}

/// Bounds the peers from one IP address whose handshake has not completed
/// (default 32, at least 1), so one host cannot fill the peer table from
/// many source ports. A client whose cookie checks out while its address is
/// at the bound is dropped with an ERROR event (SOCKET_RESOURCE);
/// established peers do not count.
#[no_mangle]
pub extern "C" fn dtlsserver_set_max_handshakes_per_address(
    server: *mut DtlsServer,
    n: c_int,
) -> sslserver_result {
    with_handle(server, "server", |s| {
        Ok(s.set_max_handshakes_per_address(n)?)
    })
}

/// The per-address handshake bound; 0 for NULL.
#[no_mangle]
pub extern "C" fn dtlsserver_max_handshakes_per_address(server: *const DtlsServer) -> c_int {
    read_handle(server, 0, DtlsServer::max_handshakes_per_address)
}

/// Bounds all peers from one IP address, handshaking or established
/// (default DTLSSERVER_DEFAULT_MAX_PEERS_PER_ADDRESS = 64, at least 1). With
/// a certificate, clients need no key, so without this bound one host could
/// complete handshakes from many source ports until the peer table is full.
/// A client whose cookie checks out while its address is at the bound is
/// dropped with an ERROR event (SOCKET_RESOURCE). Raise it when many genuine
/// clients share one address (a NAT). Applies to handshakes started
/// afterwards; peers already in the table stay.
#[no_mangle]
pub extern "C" fn dtlsserver_set_max_peers_per_address(
    server: *mut DtlsServer,
    n: c_int,
) -> sslserver_result {
    with_handle(server, "server", |s| Ok(s.set_max_peers_per_address(n)?))
}

/// The per-address peer bound; 0 for NULL.
#[no_mangle]
pub extern "C" fn dtlsserver_max_peers_per_address(server: *const DtlsServer) -> c_int {
    read_handle(server, 0, DtlsServer::max_peers_per_address)
}

/// Serves certificate suites (ECDHE-ECDSA or ECDHE-RSA with AES-GCM or
/// ChaCha20-Poly1305, as the key allows) with the certificate chain and
/// private key of `cfg` (copied; `cfg` may be freed afterwards). With a PSK
/// callback set, clients may use either; without one, certificates only
/// (dtlsserver_listen then needs no PSK callback). The rest of the
/// sslconfig does not apply to DTLS: no client certificate is requested.
/// Warning: a certificate admits anonymous clients. Anyone can complete a
/// certificate handshake, also beside a PSK callback that refuses unknown
/// identities; such sessions have authentication
/// DTLSSERVER_AUTHENTICATION_CERTIFICATE and an empty psk_identity in their
/// events, so tell them apart by authentication, never by the identity.
/// SSLSERVER_ERROR_INVALID_ARGUMENT when `cfg` has no certificate and key.
/// Applies to handshakes started afterwards.
#[no_mangle]
pub extern "C" fn dtlsserver_set_config(
    server: *mut DtlsServer,
    cfg: *const crate::ffi::config::sslconfig,
) -> sslserver_result {
    with_handle(server, "server", |s| {
        let config = crate::ffi::config::snapshot(cfg)?;
        Ok(s.set_config(&config)?)
    })
}

/// Binds a UDP socket to `address` (NULL or "" = every address, dual-stack
/// where possible; otherwise an IPv4 or IPv6 literal) and `port` (0 = an
/// ephemeral port, read it back with dtlsserver_server_port) and starts the
/// server's thread. Requires dtlsserver_set_psk_callback or
/// dtlsserver_set_config first (SSLSERVER_ERROR_INVALID_STATE otherwise,
/// and while listening).
#[no_mangle]
pub extern "C" fn dtlsserver_listen(
    server: *mut DtlsServer,
    address: *const c_char,
    port: u16,
) -> sslserver_result {
    with_handle(server, "server", |s| {
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let address = unsafe { text(address, "address") }?;
        Ok(s.listen(address, port)?)
    })
}

/// Whether the server is listening; false for NULL.
#[no_mangle]
pub extern "C" fn dtlsserver_is_listening(server: *const DtlsServer) -> bool {
    read_handle(server, false, DtlsServer::is_listening)
}

/// The bound UDP port; 0 when not listening.
#[no_mangle]
pub extern "C" fn dtlsserver_server_port(server: *const DtlsServer) -> u16 {
    read_handle(server, 0, |s| s.local_addr().map_or(0, |a| a.port()))
}

/// The bound address, e.g. "127.0.0.1" or "::" (string-out convention).
/// SSLSERVER_ERROR_INVALID_STATE when not listening.
#[no_mangle]
pub extern "C" fn dtlsserver_server_address(
    server: *const DtlsServer,
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

/// Encrypts `data` (`len` bytes, at most 16384; NULL allowed with 0) into
/// one datagram to the peer at `peer_address` (as in the events, e.g.
/// "127.0.0.1") and `peer_port`, whose handshake has completed. Returns
/// SSLSERVER_ERROR_CLOSED when there is no session with that peer (never
/// connected, closed or timed out), SSLSERVER_ERROR_INVALID_STATE while its
/// handshake runs. Like any UDP send, delivery is not guaranteed.
#[no_mangle]
pub extern "C" fn dtlsserver_write(
    server: *mut DtlsServer,
    peer_address: *const c_char,
    peer_port: u16,
    data: *const u8,
    len: usize,
) -> sslserver_result {
    with_handle(server, "server", |s| {
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let address = unsafe { super::required_text(peer_address, "peer_address") }?;
        let literal = address.trim().trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = literal
            .parse()
            .map_err(|_| Failure::invalid(format!("'{address}' is not an IPv4 or IPv6 address")))?;
        // SAFETY: the caller passes `len` readable bytes (or NULL with 0).
        let data = unsafe { super::bytes(data, len, "data") }?;
        Ok(s.write(SocketAddr::new(ip, peer_port), data)?)
    })
}

/// The peers that have a session now (handshaking or established); 0 for
/// NULL or when not listening.
#[no_mangle]
pub extern "C" fn dtlsserver_peer_count(server: *const DtlsServer) -> usize {
    read_handle(server, 0, DtlsServer::peer_count)
}

/// Sends close_notify to every peer, closes the socket and joins the
/// server's thread; no callback runs after it returns (other than one
/// already running on the calling thread). Safe at any moment, from any
/// thread and from callbacks (there the rest completes when the callback
/// returns). dtlsserver_listen may be called again.
#[no_mangle]
pub extern "C" fn dtlsserver_close(server: *mut DtlsServer) {
    read_handle(server, (), DtlsServer::close)
}

/// The name of a DTLS event kind, e.g. "DATAGRAM_RECEIVED"; never NULL.
#[no_mangle]
pub extern "C" fn dtlsserver_event_kind_name(kind: RawDtlsEventKind) -> *const c_char {
    call_or(static_text("unknown\0"), || {
        super::name_text(DtlsEventKind::from_raw(kind).map(DtlsEventKind::name))
    })
}
