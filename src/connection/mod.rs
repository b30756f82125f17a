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

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use rustls::pki_types::CertificateDer;

use crate::error::{os_reason, Error, ErrorKind, Result};
use crate::events::{Callback, Callbacks, Event, EventSink, SslError};
use crate::types::{EventKind, Protocol, SocketError, SocketState, SslErrorCode, SslMode};
use crate::workers::WorkState;

mod inbox;
mod nonblocking;
mod plain;

use inbox::Inbox;

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

/// Why no more data will come in.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Input {
    Open,
    /// The peer sent close_notify: a clean end.
    CloseNotify,
    /// The peer closed TCP without close_notify (the data may be truncated).
    Eof,
    /// The peer reset the connection.
    Reset,
    /// A TLS protocol error, or a socket error other than a reset.
    Failed,
    /// Closed on this side (abort, free, server shutdown).
    Closed,
}

/// The state the lock protects.
struct Io {
    /// `None` until the handshake completes (the handshake owns it until then).
    tls: Option<rustls::Connection>,
    /// Encrypted records produced but not yet sent, in order.
    outgoing: Vec<u8>,
    /// Decrypted bytes waiting in rustls for the application.
    plaintext: usize,
    /// close_notify arrived; input ends once `plaintext` is consumed.
    peer_closed: bool,
    /// Plaintext decrypted before a TLS error, taken out of rustls when the
    /// error came; read before the error is reported.
    salvaged: Vec<u8>,
    input: Input,
    /// close_notify sent or the write side failed.
    output_closed: bool,
    error: SocketError,
    error_text: String,
    /// TLS 1.3 session tickets received (client mode) and not yet reported.
    tickets: usize,
}

impl Io {
    fn collect_outgoing(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            while tls.wants_write() {
                // Writing into a Vec cannot fail.
                let _ = tls.write_tls(&mut self.outgoing);
            }
        }
    }

    /// Takes in the result of `process_new_packets`. On an error, what was
    /// decrypted before the bad record stays readable: it is authentic.
    fn absorb(&mut self, state: std::result::Result<rustls::IoState, rustls::Error>) {
        self.tickets += crate::client::take_tickets_received();
        match state {
            Ok(state) => {
                self.plaintext = state.plaintext_bytes_to_read();
                self.peer_closed = state.peer_has_closed();
                self.end_if_closed();
            }
            Err(e) => {
                if let Some(tls) = self.tls.as_mut() {
                    // Stops at the end of the buffered plaintext (WouldBlock).
                    let _ = tls.reader().read_to_end(&mut self.salvaged);
                }
                self.plaintext = self.salvaged.len();
                self.input = Input::Failed;
                self.fail(SocketError::SslInternal, format!("TLS error: {e}"));
            }
        }
    }

    /// After close_notify, input ends when the last plaintext is consumed.
    fn end_if_closed(&mut self) {
        if self.peer_closed && self.plaintext == 0 && self.input == Input::Open {
            self.input = Input::CloseNotify;
            self.fail(
                SocketError::RemoteHostClosed,
                "the remote host closed the connection",
            );
        }
    }

    /// Queues close_notify and closes the output; false if it was closed.
    fn queue_close_notify(&mut self) -> bool {
        if self.output_closed {
            return false;
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
        }
        self.collect_outgoing();
        self.output_closed = true;
        true
    }

    /// Encrypts all of `data` into `outgoing`, behind what is queued there.
    fn encrypt(&mut self, data: &[u8]) -> Result<()> {
        let Some(tls) = self.tls.as_mut() else {
            return Err(Error::invalid_state("the TLS handshake has not completed"));
        };
        // One allocation for the records, not a growing copy.
        let records = data.len().div_ceil(MAX_FRAGMENT);
        self.outgoing
            .reserve(data.len() + records * RECORD_OVERHEAD);
        let mut offset = 0;
        while offset < data.len() {
            let n = tls
                .writer()
                .write(&data[offset..])
                .map_err(|e| Error::new(ErrorKind::Tls, e.to_string()))?;
            if n == 0 {
                return Err(Error::new(ErrorKind::Tls, "rustls accepted no plaintext"));
            }
            offset += n;
            while tls.wants_write() {
                let _ = tls.write_tls(&mut self.outgoing);
            }
        }
        Ok(())
    }

    /// The write side failed with `err`: nothing more can be sent, and what
    /// is queued never will be.
    fn sending_failed(&mut self, err: &io::Error) -> Error {
        self.output_closed = true;
        self.outgoing = Vec::new();
        let (error, kind) = match err.kind() {
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted => {
                (SocketError::RemoteHostClosed, ErrorKind::Closed)
            }
            _ => (SocketError::Network, ErrorKind::Io),
        };
        let text = os_reason(err);
        self.fail(error, text.clone());
        Error::new(kind, text)
    }

    fn fail(&mut self, error: SocketError, text: impl Into<String>) {
        self.error = error;
        self.error_text = text.into();
    }

    /// Hands received ciphertext to rustls and decrypts it, while rustls has
    /// room for the plaintext; what does not fit stays in the inbox.
    fn take_in(&mut self, inbox: &mut Inbox) {
        while self.input == Input::Open && self.plaintext <= PLAINTEXT_LIMIT && !inbox.is_empty() {
            let Some(tls) = self.tls.as_mut() else {
                return;
            };
            match tls.read_tls(&mut inbox.pending()) {
                // rustls takes nothing after the peer's close_notify.
                Ok(0) => inbox.consume(inbox.pending().len()),
                Ok(n) => inbox.consume(n),
                Err(e) => {
                    self.input = Input::Failed;
                    self.fail(SocketError::SslInternal, format!("TLS error: {e}"));
                    return;
                }
            }
            let state = tls.process_new_packets();
            self.absorb(state);
        }
        self.collect_outgoing();
    }

    /// What `read` returns once no plaintext is left: `None` while input may
    /// still come.
    fn end_of_read(&self) -> Option<Result<usize>> {
        let end = match self.input {
            Input::Open => return None,
            Input::CloseNotify => Ok(0),
            Input::Eof => Err(Error::new(
                ErrorKind::Closed,
                "the peer closed the connection without close_notify",
            )),
            Input::Reset => Err(Error::new(ErrorKind::Closed, self.error_text.clone())),
            Input::Failed if self.error == SocketError::SslInternal => {
                Err(Error::new(ErrorKind::Tls, self.error_text.clone()))
            }
            Input::Failed => Err(Error::new(ErrorKind::Io, self.error_text.clone())),
            Input::Closed => Err(Error::new(ErrorKind::Closed, "the connection is closed")),
        };
        Some(end)
    }

    fn end_of_input(&mut self) {
        if self.input != Input::Open {
            return;
        }
        self.input = if self.peer_closed {
            Input::CloseNotify
        } else {
            Input::Eof
        };
        self.fail(
            SocketError::RemoteHostClosed,
            "the remote host closed the connection",
        );
    }

    fn input_failed(&mut self, err: &io::Error) {
        if self.input != Input::Open {
            return;
        }
        let reset = matches!(
            err.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
        );
        if reset {
            self.input = Input::Reset;
            self.fail(
                SocketError::RemoteHostClosed,
                format!("the peer reset the connection ({})", os_reason(err)),
            );
        } else {
            self.input = Input::Failed;
            self.fail(SocketError::Network, os_reason(err));
        }
    }
}

/// How long `Connection::receive` may wait for the socket.
#[derive(Clone, Copy)]
enum Wait {
    Never,
    Until(Instant),
    Forever,
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
    /// called from that thread.
    pub(crate) fn wait_for_work(&self) {
        self.work.wait();
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
                .map(|s| iana_cipher_name(s.suite()))
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
        // The handshake deadline no longer applies.
        let _ = self.stream.set_read_timeout(None);
        let _ = self.stream.set_write_timeout(None);
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

    /// Decrypted bytes ready to read without blocking: what was decrypted
    /// before, or else what has arrived on the socket by now.
    pub fn bytes_available(&self) -> usize {
        if self.mode() == SslMode::Unencrypted {
            return self.plain_bytes_available();
        }
        self.receive(Wait::Never);
        self.io.lock().plaintext
    }

    /// Blocks until at least one byte is available and reads it; `Ok(0)`
    /// means the peer closed cleanly (close_notify).
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Err(Error::invalid_argument("the buffer length must not be 0"));
        }
        if !self.is_blocking() {
            return self.read_nonblocking(buf);
        }
        if self.mode() == SslMode::Unencrypted {
            return self.plain_read(buf);
        }
        loop {
            if let Some(outcome) = self.read_available(buf) {
                return outcome;
            }
            self.receive(Wait::Forever);
        }
    }

    /// What a read returns without receiving: plaintext already decrypted,
    /// or the end of input; `None` while more may come. Reports the tickets
    /// taken in meanwhile: reads report them, never a getter that happened
    /// to take them in.
    fn read_available(&self, buf: &mut [u8]) -> Option<Result<usize>> {
        let (outcome, tickets) = {
            let mut io = self.io.lock();
            if io.tls.is_none() {
                return Some(Err(Error::invalid_state(
                    "the TLS handshake has not completed",
                )));
            }
            let outcome = if io.plaintext > 0 {
                Some(Ok(take_plaintext(&mut io, buf)))
            } else {
                io.end_of_read()
            };
            (outcome, io.tickets > 0)
        };
        if tickets {
            self.report_tickets();
        }
        outcome
    }

    /// Waits until plaintext is available (true), or the timeout passes or no
    /// more data can come (false). `None` waits forever.
    pub fn wait_for_ready_read(&self, timeout: Option<Duration>) -> bool {
        let wait = match timeout {
            None => Wait::Forever,
            Some(timeout) => Wait::Until(Instant::now() + timeout),
        };
        if self.mode() == SslMode::Unencrypted {
            return self.plain_wait_for_ready_read(wait);
        }
        loop {
            let (ready, tickets) = {
                let io = self.io.lock();
                let ready = if io.plaintext > 0 {
                    Some(true)
                } else if io.input != Input::Open || io.tls.is_none() {
                    Some(false)
                } else {
                    None
                };
                (ready, io.tickets > 0)
            };
            if tickets {
                self.report_tickets();
            }
            if let Some(ready) = ready {
                return ready;
            }
            let received = self.receive(wait);
            let expired = matches!(wait, Wait::Until(deadline) if Instant::now() >= deadline);
            if !received || expired {
                return self.io.lock().plaintext > 0;
            }
        }
    }

    /// Brings in input: the ciphertext left in the inbox, or else what the
    /// socket delivers within `wait`, decrypted. False if `wait` ended with
    /// nothing received; true if there may be news (plaintext, the end of
    /// input), which the caller looks for under the I/O lock. A waiting
    /// receive returns as soon as there is plaintext; `Wait::Never` adds what
    /// has arrived to what there is.
    fn receive(&self, wait: Wait) -> bool {
        let Some(mut inbox) = self.lock_inbox(wait) else {
            return false;
        };
        {
            // Another thread may have received while this one waited for the
            // inbox; during the handshake the socket is the handshake's.
            let io = self.io.lock();
            let enough = match wait {
                Wait::Never => io.plaintext > PLAINTEXT_LIMIT,
                Wait::Until(_) | Wait::Forever => io.plaintext > 0,
            };
            if enough || io.input != Input::Open || io.tls.is_none() {
                return true;
            }
        }
        let received = if inbox.is_empty() {
            if let Wait::Until(deadline) = wait {
                if !wait_readable(&self.stream, deadline) {
                    return false;
                }
            }
            // A blocking receive rather than a poll and then a receive: one
            // system call per wait (a poll first cost 8% of echo throughput).
            let flags = match wait {
                Wait::Forever => RecvFlags::empty(),
                Wait::Until(_) | Wait::Never => RecvFlags::DONTWAIT,
            };
            Some(inbox.fill(&self.stream, flags))
        } else {
            None
        };
        let mut io = self.io.lock();
        match received {
            Some(Ok(0)) => io.end_of_input(),
            Some(Ok(_)) | None => io.take_in(&mut inbox),
            // Interrupted, or readable with nothing to read: look again.
            Some(Err(Errno::INTR | Errno::AGAIN)) => return !matches!(wait, Wait::Never),
            Some(Err(e)) => io.input_failed(&e.into()),
        }
        if io.input != Input::Open {
            // Nothing more will be read.
            inbox.release();
        }
        drop(inbox);
        self.send_replies(io);
        true
    }

    /// The inbox, waiting for it as long as `wait` allows: whoever holds it
    /// is the one thread receiving.
    fn lock_inbox(&self, wait: Wait) -> Option<MutexGuard<'_, Inbox>> {
        match wait {
            Wait::Forever => Some(self.inbox.lock()),
            Wait::Until(deadline) => self.inbox.try_lock_until(deadline),
            Wait::Never => self.inbox.try_lock(),
        }
    }

    /// Sends what rustls queued while taking input (a fatal alert after a
    /// TLS error, a warning refusing renegotiation) without waiting: a
    /// reading thread must not block on a peer that does not read. What the
    /// kernel does not take now leaves with the next write or the close; if
    /// a writer holds the send lock, it sends these after its own records.
    fn send_replies(&self, mut io: MutexGuard<'_, Io>) {
        if io.outgoing.is_empty() || io.output_closed {
            return;
        }
        let Some(_sending) = self.send.try_lock() else {
            return;
        };
        let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
        if let Ok(n) = rustix::net::send(&self.stream, &io.outgoing, flags) {
            io.outgoing.drain(..n);
        }
    }

    /// Encrypts and sends all of `data`; blocks until the kernel has it.
    pub fn write(&self, data: &[u8]) -> Result<usize> {
        if !self.is_blocking() {
            return self.write_nonblocking(data);
        }
        if self.mode() == SslMode::Unencrypted {
            return self.plain_write(data);
        }
        let send = self.send.lock();
        let mut offset = 0;
        while offset < data.len() {
            let batch = {
                let mut io = self.io.lock();
                check_writable(&io)?;
                let end = data.len().min(offset + WRITE_BATCH);
                io.encrypt(&data[offset..end])?;
                offset = end;
                std::mem::take(&mut io.outgoing)
            };
            self.send_bytes(&batch)?;
        }
        self.flush_outgoing(send)?;
        Ok(data.len())
    }

    /// Sends close_notify and shuts down the write side; idempotent. Waits
    /// for writes in progress on other threads.
    ///
    /// In non-blocking mode it queues close_notify behind what is queued and
    /// sends what the kernel takes now; `flush` sends the rest and then
    /// shuts the write side down.
    pub fn disconnect_from_host(&self) -> Result<()> {
        if !self.is_blocking() {
            return self.disconnect_nonblocking();
        }
        self.disconnect(self.send.lock())
    }

    fn disconnect(&self, send: MutexGuard<'_, ()>) -> Result<()> {
        let queued = {
            let mut io = self.io.lock();
            // A close_notify queued before (by a non-blocking disconnect)
            // may still be waiting to leave, behind data.
            io.queue_close_notify() || !io.outgoing.is_empty()
        };
        if !queued {
            return Ok(());
        }
        let flushed = self.flush_outgoing(send);
        let _ = self.stream.shutdown(Shutdown::Write);
        flushed
    }

    /// Closes at once, discarding unsent data; wakes every blocked call.
    pub fn abort(&self) {
        {
            let mut io = self.io.lock();
            if io.input == Input::Open {
                io.input = Input::Closed;
            }
            io.output_closed = true;
        }
        // Wakes a thread blocked receiving or sending on the socket.
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// The application lets go of the connection (`sslsocket_free`): a
    /// graceful close if it is still open.
    ///
    /// It never blocks for long: if another thread is in the middle of a
    /// write, or the peer stops reading, the connection is closed without
    /// close_notify rather than waiting.
    pub fn release(&self) {
        if self.session.get().is_some() {
            if let Some(send) = self.send.try_lock() {
                if self.is_blocking() {
                    let _ = self.stream.set_write_timeout(Some(RELEASE_FLUSH_TIMEOUT));
                    let _ = self.disconnect(send);
                } else {
                    // An event loop's socket: one attempt, never a wait.
                    self.release_nonblocking();
                }
            }
        }
        self.abort();
    }

    /// Sends everything queued in `Io::outgoing`, then releases the send lock
    /// while still holding the I/O lock, so nothing queued meanwhile is left
    /// behind without a sender.
    fn flush_outgoing(&self, send: MutexGuard<'_, ()>) -> Result<()> {
        loop {
            let batch = {
                let mut io = self.io.lock();
                if io.outgoing.is_empty() {
                    drop(send);
                    return Ok(());
                }
                std::mem::take(&mut io.outgoing)
            };
            self.send_bytes(&batch)?;
        }
    }

    fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        // std sends with MSG_NOSIGNAL, so a closed peer is an error, not SIGPIPE.
        (&self.stream)
            .write_all(bytes)
            .map_err(|e| self.io.lock().sending_failed(&e))
    }
}

/// Waits until the socket has input, its end or an error (true), or until
/// `deadline` (false).
fn wait_readable(stream: &TcpStream, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    // Only a timeout beyond i64 seconds fails to convert: that is forever.
    let timeout = Timespec::try_from(left).ok();
    let mut fds = [PollFd::new(stream, PollFlags::IN)];
    // An interrupted poll counts as ready: the caller looks and waits again.
    !matches!(rustix::event::poll(&mut fds, timeout.as_ref()), Ok(0))
}

fn check_writable(io: &Io) -> Result<()> {
    if io.tls.is_none() {
        return Err(Error::invalid_state("the TLS handshake has not completed"));
    }
    if io.output_closed || io.input == Input::Closed {
        return Err(Error::new(ErrorKind::Closed, "the connection is closed"));
    }
    Ok(())
}

fn take_plaintext(io: &mut Io, buf: &mut [u8]) -> usize {
    let n = if io.salvaged.is_empty() {
        let tls = io.tls.as_mut().expect("plaintext comes from rustls");
        tls.reader().read(buf).unwrap_or(0)
    } else {
        let n = buf.len().min(io.salvaged.len());
        buf[..n].copy_from_slice(&io.salvaged[..n]);
        io.salvaged.drain(..n);
        n
    };
    io.plaintext -= n;
    io.end_if_closed();
    n
}

/// `TLS13_AES_128_GCM_SHA256` (rustls) -> `TLS_AES_128_GCM_SHA256` (IANA).
fn iana_cipher_name(suite: rustls::CipherSuite) -> String {
    let name = suite
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{suite:?}"));
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
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
