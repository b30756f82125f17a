//! What the DTLS server reports: events (to the application's callbacks)
//! and counters (for tests and monitoring).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::types::SocketError;

/// What a [`DtlsEvent`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DtlsEventKind {
    /// A ClientHello came back with a valid cookie: the peer now has a
    /// session and its handshake runs.
    HandshakeStarted = 0,
    /// The handshake completed; `authentication` says how (`psk_identity`
    /// is the client's identity for a PSK suite, possibly empty; empty for
    /// a certificate suite's anonymous client).
    HandshakeComplete = 1,
    /// A datagram was decrypted; `data` is the plaintext.
    DatagramReceived = 2,
    /// The peer sent close_notify (answered); its session is gone.
    PeerClosed = 3,
    /// Something failed; `socket_error` and `description` say what. With a
    /// peer, that peer's session is gone (or never began). Datagrams that do
    /// not authenticate never cause one.
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

/// How a peer's session was authenticated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DtlsAuthentication {
    /// The handshake has not completed (or the event concerns no peer).
    #[default]
    None = 0,
    /// A PSK suite: the client proved it holds the key the PSK callback
    /// returned for `psk_identity` (which may be empty).
    Psk = 1,
    /// A certificate suite: the server proved its identity; the client is
    /// anonymous (no client certificate is requested).
    Certificate = 2,
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
    /// How the peer's session was authenticated, once its handshake
    /// completed. A PSK session with an empty identity and a certificate
    /// session look alike otherwise.
    pub authentication: DtlsAuthentication,
    /// The negotiated cipher suite's IANA name once the handshake completed
    /// (e.g. "TLS_PSK_WITH_AES_128_GCM_SHA256"); empty before.
    pub cipher_suite: String,
    /// Error: what kind (`SslHandshakeFailed`, `SocketTimeout`, ...);
    /// `Unknown` otherwise.
    pub socket_error: SocketError,
    /// Human-readable text, in the style of Qt's DTLS server example.
    pub description: String,
}

impl DtlsEvent {
    pub(super) fn new(kind: DtlsEventKind, peer: Option<SocketAddr>, description: String) -> Self {
        DtlsEvent {
            kind,
            peer,
            data: Vec::new(),
            psk_identity: Vec::new(),
            authentication: DtlsAuthentication::None,
            cipher_suite: String::new(),
            socket_error: SocketError::Unknown,
            description,
        }
    }

    pub(super) fn error(peer: Option<SocketAddr>, error: SocketError, description: String) -> Self {
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
    /// Verified ClientHellos refused because their address had the maximum
    /// number of peers.
    pub peers_refused_per_address: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) peers: AtomicUsize,
    pub(super) hello_verify_requests: AtomicU64,
    pub(super) cookies_rejected: AtomicU64,
    pub(super) handshakes_started: AtomicU64,
    pub(super) handshakes_completed: AtomicU64,
    pub(super) datagrams_dropped: AtomicU64,
    pub(super) records_dropped: AtomicU64,
    pub(super) peers_over_budget: AtomicU64,
    pub(super) handshakes_refused_per_address: AtomicU64,
    pub(super) peers_refused_per_address: AtomicU64,
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
