//! One accepted connection (`QSslSocket` in server mode).
//!
//! The connection's own thread performs the handshake and then stays on as
//! its reader: it waits for bytes without holding any lock, decrypts them
//! under the lock, and wakes readers, so data and the peer's close are noticed
//! without the application polling. Application threads read decrypted bytes
//! and write through rustls under the same lock, but never hold it across a
//! blocking socket call: a writer blocked on a full socket must not stop the
//! reader from draining the other direction (that deadlocks a client that
//! writes a lot before it reads).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use rustls::pki_types::CertificateDer;

use crate::error::{os_reason, Error, ErrorKind, Result};
use crate::events::SslError;
use crate::types::{Protocol, SocketError, SocketState, SslErrorCode};
use crate::workers::{Stage, WorkState};

/// How long freeing a connection waits for its close_notify to leave.
const RELEASE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// At most this much plaintext is encrypted per socket write, so one huge
/// `sslsocket_write` does not build one huge buffer.
const WRITE_BATCH: usize = 256 * 1024;

/// The reader decrypts ahead of the application while rustls holds at most
/// this much plaintext (rustls's own limit: above it, `read_tls` refuses),
/// so the next record is ready when the application reads again.
const READ_AHEAD: usize = 16 * 1024;

/// Room for a record's framing and AEAD tag: 5 + 16 bytes in TLS 1.3
/// (+1 content type), 5 + 8 + 16 in TLS 1.2.
const RECORD_OVERHEAD: usize = 64;
/// The largest plaintext fragment rustls puts in one record.
const MAX_FRAGMENT: usize = 16 * 1024;

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

    fn fail(&mut self, error: SocketError, text: impl Into<String>) {
        self.error = error;
        self.error_text = text.into();
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
    peer: SocketAddr,
    local: SocketAddr,
    verification: Verification,
    session: OnceLock<SessionInfo>,
    io: Mutex<Io>,
    /// Plaintext, the end of input, or an error arrived.
    readable: Condvar,
    /// The application consumed plaintext (the reader may read on).
    drained: Condvar,
    /// Held by whoever sends `Io::outgoing`, so records leave in order.
    send: Mutex<()>,
    /// The library thread working for this connection (handshake, reader).
    work: Arc<WorkState>,
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
    pub(crate) fn new(stream: TcpStream, peer: SocketAddr, local: SocketAddr) -> Self {
        Connection {
            stream,
            peer: unmap(peer),
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
            }),
            readable: Condvar::new(),
            drained: Condvar::new(),
            send: Mutex::new(()),
            work: Arc::default(),
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
        self.work.start(Stage::Handshake, job)
    }

    /// Waits until the library thread is done with this connection, unless
    /// called from that thread.
    pub(crate) fn wait_for_work(&self) {
        self.work.wait();
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// `address:port`, with brackets around IPv6 addresses.
    pub(crate) fn peer_display(&self) -> String {
        self.peer.to_string()
    }

    pub fn session(&self) -> Option<&SessionInfo> {
        self.session.get()
    }

    pub fn is_encrypted(&self) -> bool {
        self.session.get().is_some() && self.state() == SocketState::Connected
    }

    pub fn state(&self) -> SocketState {
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
    }

    /// Decrypted bytes ready to read without blocking.
    pub fn bytes_available(&self) -> usize {
        self.io.lock().plaintext
    }

    /// Blocks until at least one byte is available and reads it; `Ok(0)`
    /// means the peer closed cleanly (close_notify).
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Err(Error::invalid_argument("the buffer length must not be 0"));
        }
        let mut io = self.io.lock();
        if io.tls.is_none() {
            return Err(Error::invalid_state("the TLS handshake has not completed"));
        }
        loop {
            if io.plaintext > 0 {
                let n = take_plaintext(&mut io, buf);
                self.drained.notify_one();
                return Ok(n);
            }
            match io.input {
                Input::Open => self.readable.wait(&mut io),
                Input::CloseNotify => return Ok(0),
                Input::Eof => {
                    return Err(Error::new(
                        ErrorKind::Closed,
                        "the peer closed the connection without close_notify",
                    ))
                }
                Input::Reset => return Err(Error::new(ErrorKind::Closed, io.error_text.clone())),
                Input::Failed if io.error == SocketError::SslInternal => {
                    return Err(Error::new(ErrorKind::Tls, io.error_text.clone()))
                }
                Input::Failed => return Err(Error::new(ErrorKind::Io, io.error_text.clone())),
                Input::Closed => {
                    return Err(Error::new(ErrorKind::Closed, "the connection is closed"))
                }
            }
        }
    }

    /// Waits until plaintext is available (true), or the timeout passes or no
    /// more data can come (false). `None` waits forever.
    pub fn wait_for_ready_read(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut io = self.io.lock();
        loop {
            if io.plaintext > 0 {
                return true;
            }
            if io.input != Input::Open || io.tls.is_none() {
                return false;
            }
            match deadline {
                None => self.readable.wait(&mut io),
                Some(deadline) => {
                    if self.readable.wait_until(&mut io, deadline).timed_out() {
                        return io.plaintext > 0;
                    }
                }
            }
        }
    }

    /// Encrypts and sends all of `data`; blocks until the kernel has it.
    pub fn write(&self, data: &[u8]) -> Result<usize> {
        let send = self.send.lock();
        let mut offset = 0;
        while offset < data.len() {
            let batch = {
                let mut guard = self.io.lock();
                check_writable(&guard)?;
                let io = &mut *guard;
                let tls = io.tls.as_mut().expect("checked by check_writable");
                let end = data.len().min(offset + WRITE_BATCH);
                // One allocation for the batch's records, not a growing copy.
                let records = (end - offset).div_ceil(MAX_FRAGMENT);
                io.outgoing
                    .reserve(end - offset + records * RECORD_OVERHEAD);
                while offset < end {
                    let n = tls
                        .writer()
                        .write(&data[offset..end])
                        .map_err(|e| Error::new(ErrorKind::Tls, e.to_string()))?;
                    if n == 0 {
                        return Err(Error::new(ErrorKind::Tls, "rustls accepted no plaintext"));
                    }
                    offset += n;
                    while tls.wants_write() {
                        let _ = tls.write_tls(&mut io.outgoing);
                    }
                }
                std::mem::take(&mut io.outgoing)
            };
            self.send_bytes(&batch)?;
        }
        self.flush_outgoing(send)?;
        Ok(data.len())
    }

    /// Sends close_notify and shuts down the write side; idempotent. Waits
    /// for writes in progress on other threads.
    pub fn disconnect_from_host(&self) -> Result<()> {
        self.disconnect(self.send.lock())
    }

    fn disconnect(&self, send: MutexGuard<'_, ()>) -> Result<()> {
        {
            let mut io = self.io.lock();
            if io.output_closed {
                return Ok(());
            }
            if let Some(tls) = io.tls.as_mut() {
                tls.send_close_notify();
            }
            io.collect_outgoing();
            io.output_closed = true;
        }
        let flushed = self.flush_outgoing(send);
        let _ = self.stream.shutdown(Shutdown::Write);
        self.readable.notify_all();
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
        let _ = self.stream.shutdown(Shutdown::Both);
        self.readable.notify_all();
        self.drained.notify_all();
    }

    /// The application lets go of the connection (`sslsocket_free`): a
    /// graceful close if it is still open, then the reader thread ends.
    ///
    /// It never blocks for long: if another thread is in the middle of a
    /// write, or the peer stops reading, the connection is closed without
    /// close_notify rather than waiting.
    pub fn release(&self) {
        if self.session.get().is_some() {
            if let Some(send) = self.send.try_lock() {
                let _ = self.stream.set_write_timeout(Some(RELEASE_FLUSH_TIMEOUT));
                let _ = self.disconnect(send);
            }
        }
        self.abort();
    }

    /// Runs the reader loop on a reader thread. Called by the handshake's
    /// thread, it hands the connection over; `wait_for_work` then waits for
    /// the reader.
    pub(crate) fn start_reader(self: &Arc<Self>) -> io::Result<()> {
        let connection = self.clone();
        self.work
            .start(Stage::Reader, move || connection.run_reader())
    }

    /// The reader loop, run after the handshake until no more input can come.
    pub(crate) fn run_reader(&self) {
        loop {
            {
                let mut io = self.io.lock();
                while io.plaintext > READ_AHEAD && io.input == Input::Open {
                    self.drained.wait(&mut io);
                }
                if io.input != Input::Open {
                    return;
                }
            }
            // Wait for bytes with no lock held; only this thread reads the
            // socket, so once peek sees data, read_tls will not block.
            let ready = self.stream.peek(&mut [0u8; 1]);
            let mut io = self.io.lock();
            match ready {
                Ok(0) => self.end_of_input(&mut io),
                Ok(_) => self.receive(&mut io),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.input_failed(&mut io, &e),
            }
            let has_outgoing = !io.outgoing.is_empty();
            drop(io);
            self.readable.notify_all();
            if has_outgoing {
                // Protocol replies (e.g. to a KeyUpdate). If a writer holds
                // the send lock it sends these after its own records.
                if let Some(send) = self.send.try_lock() {
                    let _ = self.flush_outgoing(send);
                }
            }
        }
    }

    fn receive(&self, io: &mut Io) {
        if io.input != Input::Open {
            return;
        }
        let tls = io
            .tls
            .as_mut()
            .expect("the reader runs after the handshake");
        match tls.read_tls(&mut &self.stream) {
            Ok(0) => return self.end_of_input(io),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(e) => return self.input_failed(io, &e),
        }
        let state = tls.process_new_packets();
        io.absorb(state);
        io.collect_outgoing();
    }

    fn end_of_input(&self, io: &mut Io) {
        if io.input != Input::Open {
            return;
        }
        io.input = if io.peer_closed {
            Input::CloseNotify
        } else {
            Input::Eof
        };
        io.fail(
            SocketError::RemoteHostClosed,
            "the remote host closed the connection",
        );
    }

    fn input_failed(&self, io: &mut Io, err: &io::Error) {
        if io.input != Input::Open {
            return;
        }
        let reset = matches!(
            err.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
        );
        if reset {
            io.input = Input::Reset;
            io.fail(
                SocketError::RemoteHostClosed,
                format!("the peer reset the connection ({})", os_reason(err)),
            );
        } else {
            io.input = Input::Failed;
            io.fail(SocketError::Network, os_reason(err));
        }
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
        (&self.stream).write_all(bytes).map_err(|e| {
            let mut io = self.io.lock();
            io.output_closed = true;
            let (error, kind) = match e.kind() {
                io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted => {
                    (SocketError::RemoteHostClosed, ErrorKind::Closed)
                }
                _ => (SocketError::Network, ErrorKind::Io),
            };
            let text = os_reason(&e);
            io.fail(error, text.clone());
            Error::new(kind, text)
        })
    }
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
