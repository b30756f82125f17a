//! One TCP connection with TLS on top (`QSslSocket`): one a server accepted,
//! one the library connected, or one the application handed over as a
//! descriptor and upgrades later (STARTTLS, in `plain`).
//!
//! A library thread performs the handshake; after it, no library thread
//! works for the connection: the application's own threads do its socket
//! I/O, as with a blocking OpenSSL socket. A thread that wants plaintext and
//! finds none receives from the socket itself, so no thread hand-off stands
//! between the kernel and the reader (bench/analysis.md measures what the
//! hand-off cost). One thread at a time receives (the one holding the
//! inbox), and rustls is only touched under the I/O lock, never held across
//! a blocking call. A writer sends holding only the send lock, so a thread
//! blocked writing to a peer that does not read never stops another thread
//! from reading.
//!
//! Here: the connection, its identity and its handshake record. The state
//! under the I/O lock is in `io_state`, blocking reads and writes (and what
//! the other paths share with them) in `transfer`, non-blocking ones in
//! `nonblocking`, plain I/O before STARTTLS in `plain`, the receive buffer
//! in `inbox`.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;

use crate::error::{os_reason, Error, ErrorKind, Result};
use crate::events::{Callback, Callbacks, Event, EventSink, SslError};
use crate::types::{EventKind, Protocol, SocketError, SocketState, SslErrorCode, SslMode};
use crate::workers::WorkState;

mod inbox;
mod io_state;
mod nonblocking;
mod plain;
mod transfer;

use inbox::Inbox;
use io_state::{Input, Io};
use transfer::{check_writable, wait_readable, Wait};

/// How long freeing a connection waits for its close_notify to leave.
const RELEASE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// At most this much plaintext is encrypted per socket write, so one huge
/// `sslsocket_write` does not build one huge buffer.
const WRITE_BATCH: usize = 256 * 1024;

/// Room for a record's framing and AEAD tag: 5 + 16 bytes in TLS 1.3
/// (+1 content type), 5 + 8 + 16 in TLS 1.2.
const RECORD_OVERHEAD: usize = 64;
/// The largest plaintext fragment rustls puts in one record.
const MAX_FRAGMENT: usize = 16 * 1024;

/// Ciphertext is handed to rustls only while it holds at most this much
/// plaintext: rustls's own limit, above which `read_tls` refuses.
const PLAINTEXT_LIMIT: usize = 16 * 1024;

/// What was negotiated, fixed once the handshake completes.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub protocol: Protocol,
    /// IANA name, e.g. `TLS_AES_256_GCM_SHA384`.
    pub cipher: String,
    pub alpn_protocol: Option<Vec<u8>>,
    /// The SNI host name: the one the client asked for (server side), or
    /// the one verified (client side).
    pub server_name: Option<String>,
    /// The session was resumed (a TLS 1.3 ticket or TLS 1.2 session ID).
    pub resumed: bool,
}

/// The handshake's verification record, which callbacks read and steer.
#[derive(Default)]
pub(crate) struct Verification {
    ignore_errors: AtomicBool,
    continue_interrupted: AtomicBool,
    errors: Mutex<Vec<SslErrorCode>>,
    peer_chain: OnceLock<Vec<CertificateDer<'static>>>,
}

impl Verification {
    pub(crate) fn errors_ignored(&self) -> bool {
        self.ignore_errors.load(Ordering::Acquire)
    }

    pub(crate) fn continue_requested(&self) -> bool {
        self.continue_interrupted.load(Ordering::Acquire)
    }

    pub(crate) fn set_errors(&self, errors: &[SslError]) {
        *self.errors.lock() = errors.iter().map(|e| e.code).collect();
    }

    pub(crate) fn record_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) {
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        let _ = self.peer_chain.set(chain);
    }
}

/// An encrypted TLS connection: one a server accepted (from
/// `sslserver_next_pending_connection`, or borrowed in an event), or one made
/// with `sslsocket_connect_encrypted`. Free owned ones with `sslsocket_free`.
//
// Shared (`Arc`) between its thread, the server's queue and the
// application's handle.
pub struct Connection {
    stream: TcpStream,
    /// The TCP peer: with the PROXY protocol, the balancer.
    peer: SocketAddr,
    /// The client a PROXY protocol header named, set once before the
    /// handshake; the peer address from then on.
    proxied_peer: OnceLock<SocketAddr>,
    local: SocketAddr,
    verification: Verification,
    session: OnceLock<SessionInfo>,
    io: Mutex<Io>,
    inbox: Mutex<Inbox>,
    /// Held by whoever sends `Io::outgoing`, so records leave in order.
    send: Mutex<()>,
    /// The library thread performing the handshake.
    work: Arc<WorkState>,
    /// An `SslMode`: UNENCRYPTED until a start call picks a side.
    mode: AtomicU8,
    /// The host name given to `sslsocket_connect`, the default name to
    /// verify when the socket is upgraded as a client.
    host: Option<String>,
    /// `sslsocket_register_callback`: made on first use, so connections
    /// nobody listens to carry none.
    callbacks: OnceLock<Arc<Callbacks>>,
    /// This connection, for the events a reading thread reports.
    me: Weak<Connection>,
    /// False after `sslsocket_set_blocking(s, false)`: reads and writes
    /// return WOULD_BLOCK instead of waiting (see `nonblocking`).
    blocking: AtomicBool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection whose TLS is `mode`'s side (UNENCRYPTED: plain until a
    /// start call); `host` is the name it was connected to, if any.
    pub(crate) fn new(
        stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        mode: SslMode,
        host: Option<String>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Connection {
            stream,
            peer: unmap(peer),
            proxied_peer: OnceLock::new(),
            local: unmap(local),
            verification: Verification::default(),
            session: OnceLock::new(),
            io: Mutex::new(Io {
                tls: None,
                outgoing: Vec::new(),
                plaintext: 0,
                peer_closed: false,
                salvaged: Vec::new(),
                input: Input::Open,
                output_closed: false,
                error: SocketError::Unknown,
                error_text: String::new(),
                tickets: 0,
            }),
            inbox: Mutex::default(),
            send: Mutex::new(()),
            work: Arc::default(),
            mode: AtomicU8::new(mode as u8),
            host,
            callbacks: OnceLock::new(),
            me: me.clone(),
            blocking: AtomicBool::new(true),
        })
    }

    /// A connection over a connected TCP stream, its addresses read and
    /// Nagle off (records go out whole per write, so Nagle only adds
    /// latency). The stream comes back with the error if its addresses
    /// cannot be read.
    pub(crate) fn over_stream(
        stream: TcpStream,
        mode: SslMode,
        host: Option<String>,
    ) -> std::result::Result<Arc<Self>, (Error, TcpStream)> {
        let addresses = stream
            .peer_addr()
            .and_then(|peer| Ok((peer, stream.local_addr()?)));
        let (peer, local) = match addresses {
            Ok(addresses) => addresses,
            Err(e) => return Err((Error::new(ErrorKind::Io, os_reason(&e)), stream)),
        };
        let _ = stream.set_nodelay(true);
        Ok(Self::new(stream, peer, local, mode, host))
    }

    /// UNENCRYPTED, or the side of TLS this socket is (or is becoming).
    pub fn mode(&self) -> SslMode {
        SslMode::from_u8(self.mode.load(Ordering::Acquire))
    }

    /// The socket's descriptor, for readiness polling; -1 once closed.
    pub fn descriptor(&self) -> i32 {
        use std::os::fd::AsRawFd;
        let io = self.io.lock();
        let closed = io.input == Input::Closed || (io.input != Input::Open && io.output_closed);
        if closed {
            -1
        } else {
            self.stream.as_raw_fd()
        }
    }

    /// The host name the socket was connected to (`sslsocket_connect`).
    pub(crate) fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// Leaves UNENCRYPTED mode for `mode`, once: the first step of a start
    /// call, which from then on owns the handshake.
    pub(crate) fn begin_encryption(&self, mode: SslMode) -> Result<()> {
        {
            let io = self.io.lock();
            if io.input != Input::Open || io.output_closed {
                return Err(Error::invalid_state("the socket is closed"));
            }
        }
        self.mode
            .compare_exchange(
                SslMode::Unencrypted as u8,
                mode as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(|_| ())
            .map_err(|_| {
                Error::invalid_state("the socket is already encrypted (or being encrypted)")
            })
    }

    /// Sets this socket's callback for `kind` (`None` removes it).
    pub fn set_callback(&self, kind: EventKind, callback: Option<Callback>) {
        self.callbacks.get_or_init(Arc::default).set(kind, callback);
    }

    /// Where this socket's own events go (`sslsocket_register_callback`).
    pub(crate) fn events(&self) -> EventSink {
        // A socket's events stop only with the socket: one flag that is
        // never set serves them all.
        static NEVER_CLOSING: OnceLock<Arc<AtomicBool>> = OnceLock::new();
        EventSink::new(
            self.callbacks.get_or_init(Arc::default).clone(),
            NEVER_CLOSING.get_or_init(Arc::default).clone(),
        )
    }

    /// Reports the TLS 1.3 session tickets received since the last report,
    /// on the calling thread; call with no lock held.
    pub(crate) fn report_tickets(&self) {
        let count = std::mem::take(&mut self.io.lock().tickets);
        let (Some(_), Some(me)) = (self.callbacks.get(), self.me.upgrade()) else {
            return;
        };
        let events = self.events();
        for _ in 0..count {
            events.emit(EventKind::NewSessionTicketReceived, || {
                Event::new(EventKind::NewSessionTicketReceived, Some(&me))
                    .describe("the server sent a TLS 1.3 session ticket")
            });
        }
    }

    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub(crate) fn verification(&self) -> &Verification {
        &self.verification
    }

    /// Runs `job` (the handshake) on a library thread.
    pub(crate) fn start_handshake(&self, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
        self.work.start(job)
    }

    /// Waits until the library thread is done with this connection, unless
    /// called from that thread or, if `skip_closing`, while that thread is
    /// inside a close called from its callback.
    pub(crate) fn wait_for_work(&self, skip_closing: bool) {
        self.work.wait(skip_closing);
    }

    /// Marks this connection's library thread as inside (or out of) a close
    /// called from one of its callbacks.
    pub(crate) fn set_closing_from_callback(&self, closing: bool) {
        self.work.set_closing(closing);
    }

    /// The peer: the client a PROXY protocol header named, or else the TCP
    /// peer.
    pub fn peer_addr(&self) -> SocketAddr {
        self.proxied_peer.get().copied().unwrap_or(self.peer)
    }

    /// The TCP peer, whatever a PROXY protocol header said: the balancer
    /// when there was one, otherwise the same as `peer_addr`.
    pub fn transport_peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Records the client a PROXY protocol header named (once; IPv4-mapped
    /// IPv6 addresses appear as IPv4, as for TCP peers).
    pub(crate) fn set_proxied_peer(&self, client: SocketAddr) {
        let _ = self.proxied_peer.set(unmap(client));
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// `address:port`, with brackets around IPv6 addresses.
    pub(crate) fn peer_display(&self) -> String {
        self.peer_addr().to_string()
    }

    pub fn session(&self) -> Option<&SessionInfo> {
        self.session.get()
    }

    pub fn is_encrypted(&self) -> bool {
        self.session.get().is_some() && self.state() == SocketState::Connected
    }

    pub fn state(&self) -> SocketState {
        // The peer's close may be waiting on the socket.
        self.receive(Wait::Never);
        let io = self.io.lock();
        if io.input == Input::Open && !io.output_closed {
            SocketState::Connected
        } else {
            SocketState::Unconnected
        }
    }

    /// The last error (`UNKNOWN` when there has been none) and its text.
    pub fn error(&self) -> (SocketError, String) {
        let io = self.io.lock();
        (io.error, io.error_text.clone())
    }

    pub(crate) fn set_error(&self, error: SocketError, text: impl Into<String>) {
        self.io.lock().fail(error, text);
    }

    /// The peer's certificate chain, leaf first (empty if it sent none).
    pub fn peer_certificate_chain(&self) -> &[CertificateDer<'static>] {
        self.verification
            .peer_chain
            .get()
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The subject of the peer's certificate, e.g. `CN=localhost`.
    pub fn peer_certificate_subject(&self) -> Option<String> {
        let leaf = self.peer_certificate_chain().first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        Some(cert.subject().to_string())
    }

    /// The certificate errors found during the handshake.
    pub fn ssl_handshake_errors(&self) -> Vec<SslErrorCode> {
        self.verification.errors.lock().clone()
    }

    /// From SSL_ERRORS or PEER_VERIFY_ERROR (or earlier): accept the client
    /// certificate despite its errors.
    pub fn ignore_ssl_errors(&self) {
        self.verification
            .ignore_errors
            .store(true, Ordering::Release);
    }

    /// From HANDSHAKE_INTERRUPTED_ON_ERROR: go on with the handshake.
    pub fn continue_interrupted_handshake(&self) {
        self.verification
            .continue_interrupted
            .store(true, Ordering::Release);
    }

    /// Takes over the completed handshake. `server_name` is the SNI name
    /// (received on a server, verified on a client).
    pub(crate) fn install(&self, mut tls: rustls::Connection, server_name: Option<String>) {
        let info = SessionInfo {
            protocol: match tls.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => Protocol::TlsV1_3,
                Some(rustls::ProtocolVersion::TLSv1_2) => Protocol::TlsV1_2,
                _ => Protocol::Unknown,
            },
            cipher: tls
                .negotiated_cipher_suite()
                .map(|s| crate::suites::iana_name(s.suite()))
                .unwrap_or_default(),
            alpn_protocol: tls.alpn_protocol().map(<[u8]>::to_vec),
            server_name,
            resumed: tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        };
        if let Some(chain) = tls.peer_certificates() {
            let _ = self
                .verification
                .peer_chain
                .set(chain.iter().map(|c| c.clone().into_owned()).collect());
        }
        let _ = self.session.set(info);
        // The client's first data may have come with its Finished, and been
        // decrypted by the handshake already.
        let state = tls.process_new_packets();
        let mut io = self.io.lock();
        io.tls = Some(tls);
        io.absorb(state);
        // An alert for a bad record that came with the Finished leaves with
        // the next write or the close.
        io.collect_outgoing();
    }
}

/// `::ffff:1.2.3.4` (a dual-stack listener's view of IPv4) -> `1.2.3.4`.
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}
