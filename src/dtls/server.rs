//! The DTLS server's public face: settings, listen, write, close, stats.
//! The socket, its thread and the peers live in `session.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustls::sign::CertifiedKey;
use socket2::{Domain, Socket, Type};

use super::engine::{self, EngineConfig, PskCallback};
use super::events::{DtlsCallback, DtlsEventKind, DtlsStats};
use super::peers::canonical;
use super::session::Session;
use crate::config::TlsConfig;
use crate::error::{os_reason, Error, ErrorKind, Result};
use crate::types::SocketError;
/// The DTLS server's default handshake timeout, in ms.
pub const DTLSSERVER_DEFAULT_HANDSHAKE_TIMEOUT_MS: i32 = 5000;
/// The DTLS server's default idle timeout, in ms.
pub const DTLSSERVER_DEFAULT_IDLE_TIMEOUT_MS: i32 = 300_000;
/// The DTLS server's default bound on peers with a session.
pub const DTLSSERVER_DEFAULT_MAX_PEERS: i32 = 1024;
/// How long a cookie secret is current, in ms; cookies made with it stay
/// valid for one more period after it is replaced.
pub const DTLSSERVER_DEFAULT_COOKIE_LIFETIME_MS: u64 = 60_000;
/// The DTLS server's default budget of bytes a peer may send before its
/// handshake completes (and of epoch-0 bytes after it).
pub const DTLSSERVER_DEFAULT_HANDSHAKE_BUDGET: i32 = 64 * 1024;
/// The smallest handshake budget accepted: a handshake takes about 1 KiB of
/// the client's bytes.
pub const DTLSSERVER_MIN_HANDSHAKE_BUDGET: i32 = 2048;
/// The DTLS server's default bound on handshaking peers per IP address.
pub const DTLSSERVER_DEFAULT_MAX_HANDSHAKES_PER_ADDRESS: i32 = 32;
/// The DTLS server's default bound on all peers (handshaking or
/// established) per IP address.
pub const DTLSSERVER_DEFAULT_MAX_PEERS_PER_ADDRESS: i32 = 64;
/// The largest plaintext one datagram may carry (one DTLS record).
pub const DTLSSERVER_MAX_DATAGRAM_PAYLOAD: usize = 16384;

/// Settings and callbacks, shared by the server and its sessions.
pub(super) struct Common {
    pub(super) identity_hint: Mutex<Vec<u8>>,
    pub(super) psk: Mutex<Option<PskCallback>>,
    /// The certificate chain and key for ECDHE suites (`set_config`).
    pub(super) certificate: Mutex<Option<Arc<CertifiedKey>>>,
    pub(super) callbacks: Mutex<[Option<DtlsCallback>; DtlsEventKind::COUNT]>,
    pub(super) handshake_timeout_ms: AtomicI32,
    pub(super) idle_timeout_ms: AtomicI32,
    pub(super) max_peers: AtomicI32,
    pub(super) handshake_budget: AtomicI32,
    pub(super) max_handshakes_per_address: AtomicI32,
    pub(super) max_peers_per_address: AtomicI32,
    pub(super) cookie_lifetime_ms: AtomicU64,
    pub(super) last_error: Mutex<(SocketError, String)>,
}

impl Common {
    pub(super) fn callback(&self, kind: DtlsEventKind) -> Option<DtlsCallback> {
        self.callbacks.lock()[kind as usize].clone()
    }

    fn key_for(&self, identity: &[u8]) -> Option<Vec<u8>> {
        let psk = self.psk.lock().clone()?;
        psk(identity)
    }

    /// The engine configuration for the current settings. PSK suites are
    /// offered unless there is a certificate and no PSK callback (without
    /// either, every client is refused, as before a callback is set).
    pub(super) fn engine_config(self: &Arc<Self>) -> Result<EngineConfig> {
        let certificate = self.certificate.lock().clone();
        self.engine_config_with(certificate.as_deref())
    }

    fn engine_config_with(
        self: &Arc<Self>,
        certificate: Option<&CertifiedKey>,
    ) -> Result<EngineConfig> {
        let hint = self.identity_hint.lock().clone();
        let psk = (self.psk.lock().is_some() || certificate.is_none()).then(|| {
            let weak = Arc::downgrade(self);
            Arc::new(move |identity: &[u8]| {
                weak.upgrade().and_then(|common| common.key_for(identity))
            }) as PskCallback
        });
        EngineConfig::new(&hint, psk, certificate)
    }
}

pub(super) fn ms(value: i32) -> Option<Duration> {
    u64::try_from(value).ok().map(Duration::from_millis)
}

/// A DTLS 1.2 server with pre-shared keys (Qt's `QDtls` server side).
pub struct DtlsServer {
    common: Arc<Common>,
    session: Mutex<Option<Arc<Session>>>,
}

impl Default for DtlsServer {
    fn default() -> Self {
        Self::new()
    }
}

impl DtlsServer {
    pub fn new() -> Self {
        DtlsServer {
            common: Arc::new(Common {
                identity_hint: Mutex::new(Vec::new()),
                psk: Mutex::new(None),
                certificate: Mutex::new(None),
                callbacks: Mutex::new(Default::default()),
                handshake_timeout_ms: AtomicI32::new(DTLSSERVER_DEFAULT_HANDSHAKE_TIMEOUT_MS),
                idle_timeout_ms: AtomicI32::new(DTLSSERVER_DEFAULT_IDLE_TIMEOUT_MS),
                max_peers: AtomicI32::new(DTLSSERVER_DEFAULT_MAX_PEERS),
                handshake_budget: AtomicI32::new(DTLSSERVER_DEFAULT_HANDSHAKE_BUDGET),
                max_handshakes_per_address: AtomicI32::new(
                    DTLSSERVER_DEFAULT_MAX_HANDSHAKES_PER_ADDRESS,
                ),
                max_peers_per_address: AtomicI32::new(DTLSSERVER_DEFAULT_MAX_PEERS_PER_ADDRESS),
                cookie_lifetime_ms: AtomicU64::new(DTLSSERVER_DEFAULT_COOKIE_LIFETIME_MS),
                last_error: Mutex::new((SocketError::Unknown, String::new())),
            }),
            session: Mutex::new(None),
        }
    }

    /// The PSK identity hint announced to clients (empty = none). Applies to
    /// handshakes started afterwards.
    pub fn set_identity_hint(&self, hint: &[u8]) -> Result<()> {
        if hint.len() > u16::MAX as usize {
            return Err(Error::invalid_argument(
                "the identity hint is longer than 65535 bytes",
            ));
        }
        *self.common.identity_hint.lock() = hint.to_vec();
        self.refresh_engine()
    }

    /// Rebuilds a listening session's engine configuration from the
    /// settings; handshakes started afterwards use it.
    fn refresh_engine(&self) -> Result<()> {
        if let Some(session) = self.current() {
            let config = self.common.engine_config()?;
            *session.engine.lock() = Arc::new(config);
        }
        Ok(())
    }

    /// Serves ECDHE-ECDSA or ECDHE-RSA suites (as the key allows) with the
    /// certificate chain and private key of `config`, beside the PSK suites
    /// when a PSK callback is set, instead of them otherwise. The rest of
    /// the configuration does not apply to DTLS (no client certificates are
    /// requested). Applies to handshakes started afterwards.
    ///
    /// A certificate admits anonymous clients: anyone can complete such a
    /// handshake, whatever the PSK callback refuses. Their events carry
    /// [`DtlsAuthentication::Certificate`](super::DtlsAuthentication) and an
    /// empty identity; tell them apart by that, never by the identity.
    pub fn set_config(&self, config: &TlsConfig) -> Result<()> {
        let certified = config.certified_key().ok_or_else(|| {
            Error::invalid_argument(
                "the sslconfig has no certificate chain and private key: set both first",
            )
        })?;
        // Built once here so that a key the engine cannot use is refused
        // by this call, not by every handshake.
        self.common.engine_config_with(Some(&certified))?;
        *self.common.certificate.lock() = Some(certified);
        self.refresh_engine()
    }

    pub fn identity_hint(&self) -> Vec<u8> {
        self.common.identity_hint.lock().clone()
    }

    /// Chooses the key for a client's identity; `None` refuses the client.
    /// Runs on the server's thread during the handshake.
    pub fn set_psk_callback(&self, callback: Option<PskCallback>) {
        *self.common.psk.lock() = callback;
        // Whether PSK suites are offered beside a certificate depends on it.
        // A configuration that was valid stays valid with or without PSK
        // suites, so this cannot fail.
        let _ = self.refresh_engine();
    }

    pub fn set_callback(&self, kind: DtlsEventKind, callback: Option<DtlsCallback>) {
        self.common.callbacks.lock()[kind as usize] = callback;
    }

    /// From ClientHello-with-cookie to handshake completion, in ms (default
    /// 5000; -1 = none). Applies to handshakes started afterwards.
    pub fn set_handshake_timeout(&self, msecs: i32) -> Result<()> {
        timeout_value(msecs, "the handshake timeout")?;
        self.common
            .handshake_timeout_ms
            .store(msecs, Ordering::Relaxed);
        self.wake();
        Ok(())
    }

    pub fn handshake_timeout(&self) -> i32 {
        self.common.handshake_timeout_ms.load(Ordering::Relaxed)
    }

    /// An established peer from which nothing authenticated arrives for this
    /// long (ms) is sent close_notify and dropped (default 300000; -1 = never).
    pub fn set_idle_timeout(&self, msecs: i32) -> Result<()> {
        timeout_value(msecs, "the idle timeout")?;
        self.common.idle_timeout_ms.store(msecs, Ordering::Relaxed);
        self.wake();
        Ok(())
    }

    pub fn idle_timeout(&self) -> i32 {
        self.common.idle_timeout_ms.load(Ordering::Relaxed)
    }

    /// Bounds the peer table (handshaking and established peers; default
    /// 1024, at least 1). A verified ClientHello that finds it full is
    /// dropped with an error event.
    pub fn set_max_peers(&self, n: i32) -> Result<()> {
        if n < 1 {
            return Err(Error::invalid_argument(
                "the maximum number of peers must be at least 1",
            ));
        }
        self.common.max_peers.store(n, Ordering::Relaxed);
        Ok(())
    }

    pub fn max_peers(&self) -> i32 {
        self.common.max_peers.load(Ordering::Relaxed)
    }

    /// Bytes a peer may send before its handshake completes (default 64 KiB,
    /// at least 2048); a peer that sends more is dropped. Every byte counts,
    /// whether it authenticates or not, so a peer (or whoever spoofs its
    /// address) cannot make the engine buffer more. After the handshake the
    /// same budget bounds the peer's unencrypted (epoch 0) bytes, which are
    /// dropped past it. Takes effect with the next datagram.
    pub fn set_handshake_budget(&self, bytes: i32) -> Result<()> {
        if bytes < DTLSSERVER_MIN_HANDSHAKE_BUDGET {
            return Err(Error::invalid_argument(format!(
                "the handshake budget must be at least {DTLSSERVER_MIN_HANDSHAKE_BUDGET} bytes \
                 (a handshake takes about 1 KiB)"
            )));
        }
        self.common.handshake_budget.store(bytes, Ordering::Relaxed);
        Ok(())
    }

    pub fn handshake_budget(&self) -> i32 {
        self.common.handshake_budget.load(Ordering::Relaxed)
    }

    /// Bounds the peers from one IP address whose handshake has not
    /// completed (default 32, at least 1), so one host cannot fill the peer
    /// table from many ports. A verified ClientHello over it is dropped with
    /// an error event; established peers do not count.
    pub fn set_max_handshakes_per_address(&self, n: i32) -> Result<()> {
        if n < 1 {
            return Err(Error::invalid_argument(
                "the maximum number of handshakes per address must be at least 1",
            ));
        }
        self.common
            .max_handshakes_per_address
            .store(n, Ordering::Relaxed);
        Ok(())
    }

    pub fn max_handshakes_per_address(&self) -> i32 {
        self.common
            .max_handshakes_per_address
            .load(Ordering::Relaxed)
    }

    /// Bounds all peers from one IP address, handshaking or established
    /// (default 64, at least 1). In certificate mode clients are anonymous,
    /// so without it one host could complete handshakes from many ports
    /// until the peer table is full. A verified ClientHello over it is
    /// dropped with an error event. Many genuine clients behind one NAT
    /// address need a higher value.
    pub fn set_max_peers_per_address(&self, n: i32) -> Result<()> {
        if n < 1 {
            return Err(Error::invalid_argument(
                "the maximum number of peers per address must be at least 1",
            ));
        }
        self.common
            .max_peers_per_address
            .store(n, Ordering::Relaxed);
        Ok(())
    }

    pub fn max_peers_per_address(&self) -> i32 {
        self.common.max_peers_per_address.load(Ordering::Relaxed)
    }

    /// How long a cookie secret is current (at least 1 ms); a cookie stays
    /// valid for one more period after its secret is replaced. Applies from
    /// the next `listen`.
    pub fn set_cookie_lifetime(&self, lifetime: Duration) -> Result<()> {
        let ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return Err(Error::invalid_argument(
                "the cookie lifetime must be at least 1 ms",
            ));
        }
        self.common.cookie_lifetime_ms.store(ms, Ordering::Relaxed);
        Ok(())
    }

    /// Binds a UDP socket to `address` (`None` or "" = every address,
    /// dual-stack where possible) and `port` (0 = ephemeral) and starts the
    /// server's thread. Requires a PSK callback.
    pub fn listen(&self, address: Option<&str>, port: u16) -> Result<()> {
        let result = self.try_listen(address, port);
        if let Err(e) = &result {
            let error = match e.kind() {
                ErrorKind::AddressInUse => SocketError::AddressInUse,
                ErrorKind::AddressNotAvailable => SocketError::SocketAddressNotAvailable,
                ErrorKind::InvalidState | ErrorKind::InvalidArgument => SocketError::Operation,
                _ => SocketError::Unknown,
            };
            *self.common.last_error.lock() = (error, e.message().to_string());
        }
        result
    }

    fn try_listen(&self, address: Option<&str>, port: u16) -> Result<()> {
        let mut slot = self.session.lock();
        if slot.is_some() {
            return Err(Error::invalid_state("the server is already listening"));
        }
        if self.common.psk.lock().is_none() && self.common.certificate.lock().is_none() {
            return Err(Error::invalid_state(
                "the server has no PSK callback and no certificate: call \
                 dtlsserver_set_psk_callback or dtlsserver_set_config first",
            ));
        }
        let socket = bind(address, port)?;
        *slot = Some(Session::start(self.common.clone(), socket)?);
        Ok(())
    }

    fn current(&self) -> Option<Arc<Session>> {
        self.session.lock().clone()
    }

    fn wake(&self) {
        if let Some(session) = self.current() {
            let _ = session.waker.wake();
        }
    }

    pub fn is_listening(&self) -> bool {
        self.current().is_some()
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.current().map(|s| s.local)
    }

    /// Encrypts `data` into one datagram to the established peer `peer`.
    pub fn write(&self, peer: SocketAddr, data: &[u8]) -> Result<()> {
        if engine::in_psk_callback() {
            return Err(Error::invalid_state(
                "cannot write from inside the PSK callback",
            ));
        }
        if data.len() > DTLSSERVER_MAX_DATAGRAM_PAYLOAD {
            return Err(Error::invalid_argument(format!(
                "{} bytes do not fit one DTLS record (at most {DTLSSERVER_MAX_DATAGRAM_PAYLOAD})",
                data.len()
            )));
        }
        let session = self
            .current()
            .ok_or_else(|| Error::new(ErrorKind::Closed, "the server is not listening"))?;
        session.write(canonical(peer), data)
    }

    /// Sends close_notify to every peer, closes the socket and joins the
    /// server's thread; no callback runs after it returns (other than one
    /// already running on the calling thread). From a callback or the PSK
    /// callback, the thread finishes this when that callback returns.
    pub fn close(&self) {
        let session = self.session.lock().take();
        if let Some(session) = session {
            session.close();
        }
    }

    /// The last listen error and its text.
    pub fn server_error(&self) -> (SocketError, String) {
        self.common.last_error.lock().clone()
    }

    pub fn peer_count(&self) -> usize {
        self.current()
            .map_or(0, |s| s.counters.peers.load(Ordering::Relaxed))
    }

    pub fn stats(&self) -> DtlsStats {
        let Some(session) = self.current() else {
            return DtlsStats::default();
        };
        let c = &session.counters;
        DtlsStats {
            peers: c.peers.load(Ordering::Relaxed),
            hello_verify_requests: c.hello_verify_requests.load(Ordering::Relaxed),
            cookies_rejected: c.cookies_rejected.load(Ordering::Relaxed),
            handshakes_started: c.handshakes_started.load(Ordering::Relaxed),
            handshakes_completed: c.handshakes_completed.load(Ordering::Relaxed),
            datagrams_dropped: c.datagrams_dropped.load(Ordering::Relaxed),
            records_dropped: c.records_dropped.load(Ordering::Relaxed),
            peers_over_budget: c.peers_over_budget.load(Ordering::Relaxed),
            handshakes_refused_per_address: c
                .handshakes_refused_per_address
                .load(Ordering::Relaxed),
            peers_refused_per_address: c.peers_refused_per_address.load(Ordering::Relaxed),
        }
    }
}

impl Drop for DtlsServer {
    fn drop(&mut self) {
        self.close();
    }
}

fn timeout_value(msecs: i32, what: &str) -> Result<()> {
    if msecs < -1 {
        return Err(Error::invalid_argument(format!(
            "{what} must be >= 0 ms, or -1 for none"
        )));
    }
    Ok(())
}

/// Binds the UDP socket. "" or `None` is the IPv6 any-address with IPv4
/// mapped in, or IPv4 any where the host has no IPv6.
fn bind(address: Option<&str>, port: u16) -> Result<UdpSocket> {
    let address = address.unwrap_or("").trim();
    if address.is_empty() {
        let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        return match bind_one(any6, true) {
            Err(e) if e.kind() == ErrorKind::AddressNotAvailable || e.kind() == ErrorKind::Io => {
                bind_one(
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
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
    bind_one(SocketAddr::new(ip, port), false)
}

fn bind_one(addr: SocketAddr, dual_stack: bool) -> Result<UdpSocket> {
    let bind_error = |e: std::io::Error| {
        let kind = match e.raw_os_error() {
            Some(libc::EADDRINUSE) => ErrorKind::AddressInUse,
            Some(libc::EADDRNOTAVAIL) | Some(libc::EAFNOSUPPORT) => ErrorKind::AddressNotAvailable,
            _ => ErrorKind::Io,
        };
        Error::new(kind, format!("cannot bind {addr}: {}", os_reason(&e)))
    };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None).map_err(bind_error)?;
    if dual_stack {
        socket.set_only_v6(false).map_err(bind_error)?;
    }
    socket.bind(&addr.into()).map_err(bind_error)?;
    socket.set_nonblocking(true).map_err(bind_error)?;
    Ok(socket.into())
}
