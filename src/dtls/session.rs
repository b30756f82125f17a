//! One listening session: the UDP socket and its thread, the peer table,
//! and each peer's life from verified ClientHello to close.
//!
//! One thread per listening session reads the socket and runs every timer
//! (engine retransmissions, handshake deadlines, idle timeouts, cookie secret
//! rotation). The peer table sits behind one lock, taken by that thread for
//! each datagram and timer and by `write` from any thread; the lock is never
//! held while an event callback runs. The application's PSK callback runs
//! inside the engine, so under the lock: functions that need the lock refuse
//! to run from it instead of deadlocking.
//!
//! Who gets a peer and when a known address may start over is decided in
//! `session/admission.rs`. Before its handshake completes, every byte a
//! peer sends counts against its budget; after it, every unencrypted
//! record. The engine drops records that do not authenticate (`engine.rs`,
//! `records.rs`, `record_check.rs`).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;

use super::cookie::{ClientHello, CookieJar};
use super::engine::{self, EngineConfig, Output, Step};
use super::events::{bump, Counters, DtlsAuthentication, DtlsEvent, DtlsEventKind};
use super::peers::{canonical, PeerTable};
use super::server::{ms, Common};
use crate::error::{os_reason, Error, ErrorKind, Result};
use crate::types::SocketError;

mod admission;

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);
/// Datagrams read before timers get a turn.
const READ_BATCH: usize = 256;
const RECV_BUFFER: usize = 65536;

/// An event waiting to be delivered once the lock is released.
type Pending = Vec<DtlsEvent>;

struct Table {
    peers: PeerTable,
    jar: CookieJar,
}

/// One `listen` call's lifetime.
pub(super) struct Session {
    common: Arc<Common>,
    socket: UdpSocket,
    pub(super) local: SocketAddr,
    table: Mutex<Table>,
    pub(super) engine: Mutex<Arc<EngineConfig>>,
    closing: AtomicBool,
    pub(super) waker: Waker,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: Mutex<Option<ThreadId>>,
    pub(super) counters: Counters,
}

impl Session {
    pub(super) fn start(common: Arc<Common>, socket: UdpSocket) -> Result<Arc<Session>> {
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

    pub(super) fn close(&self) {
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
                        self.hello_verify(&table.jar, from, key, hello, now);
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
        // Before the handshake completes every byte counts.
        if !peer.established && !peer.charge(datagram.len(), budget) {
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
            peer.stamp(&mut event);
            pending.push(event);
            table.peers.remove(&key);
            return;
        }
        let established = peer.established;
        let used = &mut peer.unauthenticated_bytes;
        // After the handshake only the client's repeated last flight is
        // unencrypted: each such record the engine may see is charged, so
        // the budget bounds what it can buffer of them, and past it they
        // are dropped, not the peer.
        let mut charge = |len: usize| {
            if !established {
                return true;
            }
            if *used + len > budget {
                return false;
            }
            *used += len;
            true
        };
        let step = peer.engine.read(now, datagram, &mut charge);
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
                    peer.since = now;
                    peer.last_activity = now;
                    peer.identity = peer.engine.identity();
                    peer.idle_timeout = ms(self.common.idle_timeout_ms.load(Ordering::Relaxed));
                    bump(&self.counters.handshakes_completed);
                    peer.authentication = peer.engine.authentication();
                    peer.cipher_suite = peer.engine.cipher().unwrap_or_default();
                    let cipher = &peer.cipher_suite;
                    let how = match peer.authentication {
                        DtlsAuthentication::Psk => format!(
                            "identity \"{}\", {cipher}",
                            engine::printable(&peer.identity)
                        ),
                        _ => format!("certificate, {cipher}"),
                    };
                    let mut event = DtlsEvent::new(
                        DtlsEventKind::HandshakeComplete,
                        Some(key),
                        format!("{key}: successfully completed a handshake ({how})"),
                    );
                    peer.stamp(&mut event);
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
                    peer.stamp(&mut event);
                    pending.push(event);
                }
                Output::PeerClosed => {
                    let mut event = DtlsEvent::new(
                        DtlsEventKind::PeerClosed,
                        Some(key),
                        format!("{key}: the remote host closed the connection"),
                    );
                    peer.stamp(&mut event);
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
            peer.stamp(&mut event);
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
                    peer.stamp(&mut event);
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
                    peer.stamp(&mut event);
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

    pub(super) fn write(&self, key: SocketAddr, data: &[u8]) -> Result<()> {
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
