//! The DTLS server: settings, the UDP socket and its thread, the peers'
//! life cycle, events and shutdown.
//!
//! One thread per listening session reads the socket and runs every timer
//! (engine retransmissions, handshake deadlines, idle timeouts, cookie secret
//! rotation). The peer table sits behind one lock, taken by that thread for
//! each datagram and timer and by `write` from any thread; the lock is never
//! held while an event callback runs. The application's PSK callback runs
//! inside the engine, so under the lock: functions that need the lock refuse
//! to run from it instead of deadlocking.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;
use socket2::{Domain, Socket, Type};

use super::cookie::{self, ClientHello, CookieJar};
use super::engine::{self, EngineConfig, Output, PeerEngine, PskCallback, Step};
use super::peers::{canonical, Peer, PeerTable};
use crate::config::TlsConfig;
use crate::error::{os_reason, Error, ErrorKind, Result};
use crate::types::SocketError;
use rustls::sign::CertifiedKey;

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
/// The largest plaintext one datagram may carry (one DTLS record).
pub const DTLSSERVER_MAX_DATAGRAM_PAYLOAD: usize = 16384;

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);
/// Datagrams read before timers get a turn.
const READ_BATCH: usize = 256;
const RECV_BUFFER: usize = 65536;

/// What a [`DtlsEvent`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DtlsEventKind {
    /// A ClientHello came back with a valid cookie: the peer now has a
    /// session and its handshake runs.
    HandshakeStarted = 0,
    /// The handshake completed; `psk_identity` is the client's identity.
    HandshakeComplete = 1,
    /// A datagram was decrypted; `data` is the plaintext.
    DatagramReceived = 2,
    /// The peer sent close_notify (answered); its session is gone.
    PeerClosed = 3,
    /// Something failed; `socket_error` and `description` say what. With a
    /// peer, that peer's session is gone.
    Error = 4,
}

impl DtlsEventKind {
    pub(crate) const COUNT: usize = 5;
    const ALL: [DtlsEventKind; Self::COUNT] = [
        DtlsEventKind::HandshakeStarted,
        DtlsEventKind::HandshakeComplete,
        DtlsEventKind::DatagramReceived,
        DtlsEventKind::PeerClosed,
        DtlsEventKind::Error,
    ];

    pub fn from_raw(raw: i32) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| *k as i32 == raw)
    }

    pub fn name(self) -> &'static str {
        match self {
            DtlsEventKind::HandshakeStarted => "HANDSHAKE_STARTED",
            DtlsEventKind::HandshakeComplete => "HANDSHAKE_COMPLETE",
            DtlsEventKind::DatagramReceived => "DATAGRAM_RECEIVED",
            DtlsEventKind::PeerClosed => "PEER_CLOSED",
            DtlsEventKind::Error => "ERROR",
        }
    }
}

/// One event, valid for the duration of the callback.
#[derive(Clone, Debug)]
pub struct DtlsEvent {
    pub kind: DtlsEventKind,
    /// The peer concerned (IPv4-mapped addresses shown as IPv4); `None` only
    /// for errors of the socket itself.
    pub peer: Option<SocketAddr>,
    /// DatagramReceived: the plaintext.
    pub data: Vec<u8>,
    /// The client's PSK identity, once the handshake got that far.
    pub psk_identity: Vec<u8>,
    /// Error: what kind (`SslHandshakeFailed`, `SocketTimeout`, ...);
    /// `Unknown` otherwise.
    pub socket_error: SocketError,
    /// Human-readable text, in the style of Qt's DTLS server example.
    pub description: String,
}

impl DtlsEvent {
    fn new(kind: DtlsEventKind, peer: Option<SocketAddr>, description: String) -> Self {
        DtlsEvent {
            kind,
            peer,
            data: Vec::new(),
            psk_identity: Vec::new(),
            socket_error: SocketError::Unknown,
            description,
        }
    }

    fn error(peer: Option<SocketAddr>, error: SocketError, description: String) -> Self {
        let mut event = Self::new(DtlsEventKind::Error, peer, description);
        event.socket_error = error;
        event
    }
}

/// A registered event callback.
pub type DtlsCallback = Arc<dyn Fn(&DtlsEvent) + Send + Sync>;

/// Counters, for tests and monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DtlsStats {
    /// Peers in the table now (handshaking or established).
    pub peers: usize,
    /// HelloVerifyRequests sent (each costs the server no state).
    pub hello_verify_requests: u64,
    /// ClientHellos whose cookie was present but not valid.
    pub cookies_rejected: u64,
    /// Peers created after a valid cookie.
    pub handshakes_started: u64,
    pub handshakes_completed: u64,
    /// Datagrams from unknown addresses that were not a ClientHello, and
    /// datagrams over a peer's budget.
    pub datagrams_dropped: u64,
    /// Records from peers that were malformed, of an epoch or kind no
    /// genuine client sends, or did not decrypt: dropped silently.
    pub records_dropped: u64,
    /// Peers dropped for sending more than the handshake budget.
    pub peers_over_budget: u64,
    /// Verified ClientHellos refused because their address had the maximum
    /// number of handshakes in progress.
    pub handshakes_refused_per_address: u64,
}

#[derive(Default)]
struct Counters {
    peers: AtomicUsize,
    hello_verify_requests: AtomicU64,
    cookies_rejected: AtomicU64,
    handshakes_started: AtomicU64,
    handshakes_completed: AtomicU64,
    datagrams_dropped: AtomicU64,
    records_dropped: AtomicU64,
    peers_over_budget: AtomicU64,
    handshakes_refused_per_address: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Settings and callbacks, shared by the server and its sessions.
struct Common {
    identity_hint: Mutex<Vec<u8>>,
    psk: Mutex<Option<PskCallback>>,
    /// The certificate chain and key for ECDHE suites (`set_config`).
    certificate: Mutex<Option<Arc<CertifiedKey>>>,
    callbacks: Mutex<[Option<DtlsCallback>; DtlsEventKind::COUNT]>,
    handshake_timeout_ms: AtomicI32,
    idle_timeout_ms: AtomicI32,
    max_peers: AtomicI32,
    handshake_budget: AtomicI32,
    max_handshakes_per_address: AtomicI32,
    cookie_lifetime_ms: AtomicU64,
    last_error: Mutex<(SocketError, String)>,
}

impl Common {
    fn callback(&self, kind: DtlsEventKind) -> Option<DtlsCallback> {
        self.callbacks.lock()[kind as usize].clone()
    }

    fn key_for(&self, identity: &[u8]) -> Option<Vec<u8>> {
        let psk = self.psk.lock().clone()?;
        psk(identity)
    }

    /// The engine configuration for the current settings. PSK suites are
    /// offered unless there is a certificate and no PSK callback (without
    /// either, every client is refused, as before a callback is set).
    fn engine_config(self: &Arc<Self>) -> Result<EngineConfig> {
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

fn ms(value: i32) -> Option<Duration> {
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
    /// dropped past it. Applies to handshakes started afterwards.
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

/// An event waiting to be delivered once the lock is released.
type Pending = Vec<DtlsEvent>;

struct Table {
    peers: PeerTable,
    jar: CookieJar,
}

/// One `listen` call's lifetime.
struct Session {
    common: Arc<Common>,
    socket: UdpSocket,
    local: SocketAddr,
    table: Mutex<Table>,
    engine: Mutex<Arc<EngineConfig>>,
    closing: AtomicBool,
    waker: Waker,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: Mutex<Option<ThreadId>>,
    counters: Counters,
}

impl Session {
    fn start(common: Arc<Common>, socket: UdpSocket) -> Result<Arc<Session>> {
        let io = |what: &str, e: std::io::Error| {
            Error::new(ErrorKind::Io, format!("{what}: {}", os_reason(&e)))
        };
        let local = socket
            .local_addr()
            .map_err(|e| io("not a bound socket", e))?;
        let poll = Poll::new().map_err(|e| io("cannot create a poller", e))?;
        poll.registry()
            .register(
                &mut SourceFd(&socket.as_raw_fd()),
                SOCKET,
                Interest::READABLE,
            )
            .map_err(|e| io("cannot watch the socket", e))?;
        let waker =
            Waker::new(poll.registry(), WAKE).map_err(|e| io("cannot create a waker", e))?;
        let engine = common.engine_config()?;
        let lifetime = Duration::from_millis(common.cookie_lifetime_ms.load(Ordering::Relaxed));
        let jar = CookieJar::new(engine.secret(), Instant::now(), lifetime);
        let session = Arc::new(Session {
            common,
            socket,
            local,
            table: Mutex::new(Table {
                peers: PeerTable::default(),
                jar,
            }),
            engine: Mutex::new(Arc::new(engine)),
            closing: AtomicBool::new(false),
            waker,
            thread: Mutex::new(None),
            thread_id: Mutex::new(None),
            counters: Counters::default(),
        });
        let runner = session.clone();
        let thread = std::thread::Builder::new()
            .name("dtlsserver".into())
            .spawn(move || runner.run(poll))
            .map_err(|e| io("cannot start the DTLS thread", e))?;
        *session.thread_id.lock() = Some(thread.thread().id());
        *session.thread.lock() = Some(thread);
        Ok(session)
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        let _ = self.waker.wake();
        let own_thread = *self.thread_id.lock() == Some(std::thread::current().id());
        if own_thread {
            // Called from a callback: the loop ends when it returns.
            return;
        }
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// Delivers events, unless the session is closing.
    fn emit(&self, events: Pending) {
        for event in events {
            if self.is_closing() {
                return;
            }
            if let Some(callback) = self.common.callback(event.kind) {
                callback(&event);
            }
        }
    }

    fn send(&self, to: SocketAddr, datagram: &[u8]) {
        // UDP: a full socket buffer drops the datagram, as the network may;
        // handshake retransmission recovers.
        let _ = self.socket.send_to(datagram, to);
    }

    fn send_all(&self, to: SocketAddr, datagrams: &[BytesMut]) {
        for datagram in datagrams {
            self.send(to, datagram);
        }
    }

    fn sync_count(&self, table: &Table) {
        self.counters
            .peers
            .store(table.peers.len(), Ordering::Relaxed);
    }

    fn run(self: Arc<Self>, mut poll: Poll) {
        let mut events = Events::with_capacity(8);
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut more = false;
        while !self.is_closing() {
            let timeout = if more {
                Some(Duration::ZERO)
            } else {
                self.next_wakeup()
                    .map(|at| at.saturating_duration_since(Instant::now()))
            };
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    self.emit(vec![DtlsEvent::error(
                        None,
                        SocketError::Unknown,
                        format!(
                            "the DTLS thread cannot wait for the socket: {}",
                            os_reason(&e)
                        ),
                    )]);
                    break;
                }
            }
            more = false;
            for n in 0.. {
                if n == READ_BATCH {
                    more = true;
                    break;
                }
                if self.is_closing() {
                    break;
                }
                match self.socket.recv_from(&mut buf) {
                    Ok((len, from)) => self.guarded(|| self.on_datagram(from, &buf[..len])),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // ICMP errors queued on the socket and the like: the
                        // socket itself goes on working.
                        self.emit(vec![DtlsEvent::error(
                            None,
                            SocketError::Network,
                            format!("reading a datagram failed: {}", os_reason(&e)),
                        )]);
                        break;
                    }
                }
            }
            if !self.is_closing() {
                self.guarded(|| self.on_timers(Instant::now()));
            }
        }
        self.shutdown_peers();
    }

    /// Runs one step of the loop; a panic (a bug, or a panicking Rust
    /// callback) becomes an error event instead of ending the thread.
    fn guarded(&self, body: impl FnOnce()) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(body)) {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            self.emit(vec![DtlsEvent::error(
                None,
                SocketError::SslInternal,
                format!("internal error in libsslserver (please report it): {detail}"),
            )]);
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let table = self.table.lock();
        let peers = table.peers.next_deadline();
        let rotation = table.jar.next_rotation();
        Some(peers.map_or(rotation, |p| p.min(rotation)))
    }

    /// Sends close_notify to every peer and empties the table.
    fn shutdown_peers(&self) {
        let now = Instant::now();
        let mut table = self.table.lock();
        for (_, mut peer) in table.peers.drain() {
            let datagrams = peer.engine.close(now);
            self.send_all(peer.raw, &datagrams);
        }
        self.sync_count(&table);
    }

    fn on_datagram(&self, from: SocketAddr, datagram: &[u8]) {
        let key = canonical(from);
        let now = Instant::now();
        let mut pending = Pending::new();
        {
            let mut table = self.table.lock();
            let table = &mut *table;
            let hello = ClientHello::parse(datagram);
            let known = table.peers.get_mut(&key).is_some();
            let fresh_session = match (&hello, table.peers.get_mut(&key)) {
                (Some(hello), Some(peer)) => {
                    !hello.cookie().is_empty() && hello.random() != peer.client_random
                }
                _ => false,
            };
            if known && !fresh_session {
                match &hello {
                    // A first ClientHello from a known address (the client
                    // restarted on the same port): answered statelessly.
                    Some(hello) if hello.cookie().is_empty() => {
                        self.hello_verify(&table.jar, from, key, hello);
                    }
                    _ => self.feed(table, key, datagram, now, &mut pending),
                }
            } else {
                match hello {
                    Some(hello) => {
                        self.on_hello(table, from, key, &hello, datagram, now, &mut pending)
                    }
                    None => bump(&self.counters.datagrams_dropped),
                }
            }
            self.sync_count(table);
        }
        self.emit(pending);
    }

    fn hello_verify(
        &self,
        jar: &CookieJar,
        from: SocketAddr,
        key: SocketAddr,
        hello: &ClientHello<'_>,
    ) {
        let cookie = jar.cookie(key, hello);
        bump(&self.counters.hello_verify_requests);
        self.send(
            from,
            &cookie::hello_verify_request(hello.record_sequence, &cookie),
        );
    }

    /// A ClientHello from an address without a session (or from a known
    /// peer that starts over with a new random).
    #[allow(clippy::too_many_arguments)]
    fn on_hello(
        &self,
        table: &mut Table,
        from: SocketAddr,
        key: SocketAddr,
        hello: &ClientHello<'_>,
        datagram: &[u8],
        now: Instant,
        pending: &mut Pending,
    ) {
        if hello.cookie().is_empty() || !table.jar.verify(key, hello) {
            if !hello.cookie().is_empty() {
                bump(&self.counters.cookies_rejected);
            }
            self.hello_verify(&table.jar, from, key, hello);
            return;
        }
        if hello.record_sequence == 0 || hello.message_sequence == 0 {
            // Every client numbers this record and message after its first
            // ClientHello's; the engine is shown that one first (engine.rs),
            // so both need a number below. A retransmission has a higher
            // record number.
            bump(&self.counters.datagrams_dropped);
            return;
        }
        if let Some(old) = table.peers.remove(&key) {
            pending.push(DtlsEvent::error(
                Some(key),
                SocketError::RemoteHostClosed,
                format!("{key}: the peer started a new session; the old one is discarded"),
            ));
            drop(old);
        }
        let max = usize::try_from(self.common.max_peers.load(Ordering::Relaxed)).unwrap_or(1);
        if table.peers.len() >= max {
            bump(&self.counters.datagrams_dropped);
            pending.push(DtlsEvent::error(
                Some(key),
                SocketError::SocketResource,
                format!("{key}: too many peers ({max}), handshake refused"),
            ));
            return;
        }
        let per_address = usize::try_from(
            self.common
                .max_handshakes_per_address
                .load(Ordering::Relaxed),
        )
        .unwrap_or(1);
        if table.peers.handshaking_from(key.ip()) >= per_address {
            bump(&self.counters.handshakes_refused_per_address);
            pending.push(DtlsEvent::error(
                Some(key),
                SocketError::SocketResource,
                format!(
                    "{key}: {} already has {per_address} handshakes in progress, handshake refused",
                    key.ip()
                ),
            ));
            return;
        }
        let config = self.engine.lock().clone();
        let started = PeerEngine::start(&config, self.local, from, hello, datagram, now);
        let (engine, step) = match started {
            Ok(started) => started,
            Err((reason, alert)) => {
                self.send_all(from, &alert);
                pending.push(DtlsEvent::error(
                    Some(key),
                    SocketError::SslHandshakeFailed,
                    format!("{key}: handshake failed: {reason}"),
                ));
                return;
            }
        };
        pending.push(DtlsEvent::new(
            DtlsEventKind::HandshakeStarted,
            Some(key),
            format!("{key}: verified, starting a handshake"),
        ));
        let handshake_timeout = self.common.handshake_timeout_ms.load(Ordering::Relaxed);
        let peer = Peer {
            raw: from,
            engine,
            established: false,
            client_random: hello.random().to_vec(),
            handshake_deadline: ms(handshake_timeout).map(|t| now + t),
            last_activity: now,
            idle_timeout: None,
            unauthenticated_bytes: datagram.len(),
            identity: Vec::new(),
        };
        if !table.peers.insert(key, peer, max) {
            return;
        }
        bump(&self.counters.handshakes_started);
        self.apply(table, key, step, now, pending);
    }

    /// A datagram for a peer that has a session.
    fn feed(
        &self,
        table: &mut Table,
        key: SocketAddr,
        datagram: &[u8],
        now: Instant,
        pending: &mut Pending,
    ) {
        let Some(peer) = table.peers.get_mut(&key) else {
            return;
        };
        let budget = usize::try_from(self.common.handshake_budget.load(Ordering::Relaxed))
            .unwrap_or(usize::MAX);
        if !peer.established {
            if !peer.charge(datagram.len(), budget) {
                bump(&self.counters.datagrams_dropped);
                bump(&self.counters.peers_over_budget);
                let mut event = DtlsEvent::error(
                    Some(key),
                    SocketError::SocketResource,
                    format!(
                        "{key}: sent more than {budget} bytes before completing its handshake; \
                         dropped"
                    ),
                );
                event.psk_identity = peer.identity.clone();
                pending.push(event);
                table.peers.remove(&key);
                return;
            }
        } else {
            // After the handshake only the client's repeated last flight is
            // unencrypted; the budget bounds what the engine may buffer of
            // it, and past it such datagrams are dropped, not the peer.
            let epoch0 = cookie::first_record(datagram).is_some_and(|r| r.epoch == 0);
            if epoch0 && !peer.charge(datagram.len(), budget) {
                bump(&self.counters.datagrams_dropped);
                return;
            }
        }
        let step = peer.engine.read(now, datagram);
        self.apply(table, key, step, now, pending);
    }

    /// Sends what a step produced and turns its outputs into events.
    fn apply(
        &self,
        table: &mut Table,
        key: SocketAddr,
        step: Step,
        now: Instant,
        pending: &mut Pending,
    ) {
        // Counters first: whoever sees our datagrams sees them up to date.
        self.sync_count(table);
        self.counters
            .records_dropped
            .fetch_add(step.dropped, Ordering::Relaxed);
        let Some(peer) = table.peers.get_mut(&key) else {
            return;
        };
        self.send_all(peer.raw, &step.transmits);
        for output in step.outputs {
            match output {
                Output::HandshakeComplete => {
                    peer.established = true;
                    peer.last_activity = now;
                    peer.identity = peer.engine.identity();
                    peer.idle_timeout = ms(self.common.idle_timeout_ms.load(Ordering::Relaxed));
                    bump(&self.counters.handshakes_completed);
                    let cipher = peer
                        .engine
                        .cipher()
                        .unwrap_or_else(|| "unknown cipher".into());
                    let how = if peer.identity.is_empty() && !cipher.contains("PSK") {
                        format!("certificate, {cipher}")
                    } else {
                        format!(
                            "identity \"{}\", {cipher}",
                            engine::printable(&peer.identity)
                        )
                    };
                    let mut event = DtlsEvent::new(
                        DtlsEventKind::HandshakeComplete,
                        Some(key),
                        format!("{key}: successfully completed a handshake ({how})"),
                    );
                    event.psk_identity = peer.identity.clone();
                    pending.push(event);
                }
                Output::Data(data) => {
                    peer.last_activity = now;
                    let mut event = DtlsEvent::new(
                        DtlsEventKind::DatagramReceived,
                        Some(key),
                        format!("{key}: received a datagram of {} bytes", data.len()),
                    );
                    event.data = data;
                    event.psk_identity = peer.identity.clone();
                    pending.push(event);
                }
                Output::PeerClosed => {
                    let mut event = DtlsEvent::new(
                        DtlsEventKind::PeerClosed,
                        Some(key),
                        format!("{key}: the remote host closed the connection"),
                    );
                    event.psk_identity = peer.identity.clone();
                    pending.push(event);
                    table.peers.remove(&key);
                    self.sync_count(table);
                    return;
                }
            }
        }
        if let Some(reason) = step.error {
            let (error, text) = if peer.established {
                (
                    SocketError::SslInternal,
                    format!("{key}: the DTLS session failed: {reason}"),
                )
            } else {
                (
                    SocketError::SslHandshakeFailed,
                    format!("{key}: handshake failed: {reason}"),
                )
            };
            let mut event = DtlsEvent::error(Some(key), error, text);
            event.psk_identity = peer.identity.clone();
            pending.push(event);
            table.peers.remove(&key);
            self.sync_count(table);
        }
    }

    fn on_timers(&self, now: Instant) {
        let mut pending = Pending::new();
        {
            let mut guard = self.table.lock();
            let table = &mut *guard;
            let engine = self.engine.lock().clone();
            table.jar.rotate_if_due(now, || engine.secret());
            for key in table.peers.keys() {
                let Some(peer) = table.peers.get_mut(&key) else {
                    continue;
                };
                if !peer.established && peer.handshake_deadline.is_some_and(|d| now >= d) {
                    let mut event = match peer.engine.take_undecryptable_alert() {
                        Some(alert) => {
                            // The client's Finished never decrypted: only
                            // now, with no genuine one in time, is that
                            // taken for a wrong key (a forged record must
                            // not end a handshake).
                            self.send(peer.raw, &alert);
                            DtlsEvent::error(
                                Some(key),
                                SocketError::SslHandshakeFailed,
                                format!(
                                    "{key}: handshake failed: the client's Finished message \
                                     did not decrypt before the deadline (wrong pre-shared \
                                     key?); sent alert unknown_psk_identity"
                                ),
                            )
                        }
                        None => DtlsEvent::error(
                            Some(key),
                            SocketError::SocketTimeout,
                            format!("{key}: the handshake timed out"),
                        ),
                    };
                    event.psk_identity = peer.identity.clone();
                    pending.push(event);
                    table.peers.remove(&key);
                    continue;
                }
                if peer.established
                    && peer
                        .idle_timeout
                        .is_some_and(|idle| now >= peer.last_activity + idle)
                {
                    let idle = peer.idle_timeout.unwrap_or_default();
                    let datagrams = peer.engine.close(now);
                    self.send_all(peer.raw, &datagrams);
                    let mut event = DtlsEvent::error(
                        Some(key),
                        SocketError::SocketTimeout,
                        format!(
                            "{key}: nothing received for {} ms, session closed",
                            idle.as_millis()
                        ),
                    );
                    event.psk_identity = peer.identity.clone();
                    pending.push(event);
                    table.peers.remove(&key);
                    continue;
                }
                if peer.engine.next_timeout().is_some_and(|t| now >= t) {
                    let step = peer.engine.on_timeout(now);
                    self.apply(table, key, step, now, &mut pending);
                }
            }
            self.sync_count(table);
        }
        self.emit(pending);
    }

    fn write(&self, key: SocketAddr, data: &[u8]) -> Result<()> {
        let mut table = self.table.lock();
        let peer = table.peers.get_mut(&key).ok_or_else(|| {
            Error::new(
                ErrorKind::Closed,
                format!("no DTLS session with {key} (never connected, closed or timed out)"),
            )
        })?;
        if !peer.established {
            return Err(Error::invalid_state(format!(
                "the handshake with {key} has not completed"
            )));
        }
        let datagrams = peer
            .engine
            .write(Instant::now(), data)
            .map_err(|e| Error::new(ErrorKind::Tls, format!("cannot encrypt for {key}: {e}")))?;
        for datagram in &datagrams {
            self.socket.send_to(datagram, peer.raw).map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("sending to {key} failed: {}", os_reason(&e)),
                )
            })?;
        }
        Ok(())
    }
}
