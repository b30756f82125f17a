//! Client mode (`QSslSocket::connectToHostEncrypted`): the same connection
//! type the server hands out, from the other end. Resolving, connecting and
//! the handshake share one deadline; afterwards the connection is read and
//! written by the application's threads, exactly like an accepted one.

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;

use crossbeam_channel::RecvTimeoutError;
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, ResolvesClientCert, Resumption,
    Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ClientConnection, NamedGroup, RootCertStore, SignatureScheme};

use crate::config::{protocol_versions, TlsConfig};
use crate::connection::Connection;
use crate::error::{os_reason, Error, ErrorKind, Result};
use crate::events::{Event, EventSink, SslError};
use crate::handshake::{self, Failure, HandshakeDeadline};
use crate::types::{AlertLevel, AlertType, EventKind, PeerVerifyMode, SocketError, SslMode};
use crate::verify::{
    observe_server_certificate_checks, take_server_certificate_errors, Refusal,
    ServerIdentityVerifier,
};

/// Connects to `host:port`, performs the TLS handshake within `timeout_ms`
/// (-1 = none) and returns the encrypted connection. The server's
/// certificate is checked against the system's trust store plus the CAs of
/// `config`, for `verify_name` (default: `host`).
pub fn connect_encrypted(
    host: &str,
    port: u16,
    config: &TlsConfig,
    verify_name: Option<&str>,
    timeout_ms: i32,
) -> Result<Arc<Connection>> {
    check_timeout(timeout_ms)?;
    let deadline = HandshakeDeadline::starting_now(timeout_ms);
    // "[::1]" is how a URL writes an IPv6 literal; the name to verify is
    // the address itself.
    let name = verify_name
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| without_brackets(host));
    let server_name = server_name_for(name)?;
    let context = client_context(config)?;
    let connection = connect_tcp(host, port, deadline, SslMode::Client)?;
    encrypt(&connection, &context, name, server_name, deadline)?;
    Ok(connection)
}

/// Connects to `host:port` within `timeout_ms` (-1 = none), without TLS:
/// a socket in UNENCRYPTED mode, for a protocol that upgrades later
/// (`start_client_encryption`).
pub fn connect(host: &str, port: u16, timeout_ms: i32) -> Result<Arc<Connection>> {
    check_timeout(timeout_ms)?;
    let deadline = HandshakeDeadline::starting_now(timeout_ms);
    connect_tcp(host, port, deadline, SslMode::Unencrypted)
}

/// Upgrades a plain connection to TLS as its client (STARTTLS), within
/// `timeout_ms`; the same trust rules as [`connect_encrypted`]. The name
/// verified is `verify_name`, else the host the socket was connected to; a
/// socket from a descriptor has no host, so it needs a name unless the
/// configuration verifies nothing (VERIFY_NONE). Reports MODE_CHANGED, the
/// handshake's events and ENCRYPTED (or ERROR_OCCURRED) to the socket's
/// callbacks; a failed handshake closes the socket.
pub fn start_client_encryption(
    connection: &Arc<Connection>,
    config: &TlsConfig,
    verify_name: Option<&str>,
    timeout_ms: i32,
) -> Result<()> {
    check_timeout(timeout_ms)?;
    let peer_ip = connection.peer_addr().ip().to_string();
    let name = match verify_name.filter(|n| !n.is_empty()) {
        Some(name) => name.to_string(),
        None => match connection.host() {
            Some(host) => without_brackets(host).to_string(),
            None if config.peer_verify_mode() == PeerVerifyMode::VerifyNone => peer_ip,
            None => {
                return Err(Error::invalid_argument(
                    "a socket made from a descriptor has no host name: pass peer_verify_name",
                ))
            }
        },
    };
    let server_name = server_name_for(&name)?;
    let context = client_context(config)?;
    crate::upgrade::begin(connection, SslMode::Client)?;
    let deadline = HandshakeDeadline::starting_now(timeout_ms);
    let outcome = encrypt(connection, &context, &name, server_name, deadline);
    crate::upgrade::finish(connection, outcome)
}

fn check_timeout(timeout_ms: i32) -> Result<()> {
    if timeout_ms < -1 {
        return Err(Error::invalid_argument(
            "the timeout must be >= 0 ms, or -1 for none",
        ));
    }
    Ok(())
}

fn server_name_for(name: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(name.to_string())
        .map_err(|_| Error::invalid_argument(format!("'{name}' is not a valid host name")))
}

/// The client's handshake on `connection`, within `deadline`; installs the
/// session on success. The socket's callbacks see the certificate errors
/// (and may accept them with `ignore_ssl_errors`) and the alerts.
fn encrypt(
    connection: &Arc<Connection>,
    context: &ClientContext,
    name: &str,
    server_name: ServerName<'static>,
    deadline: HandshakeDeadline,
) -> Result<()> {
    let client = ClientConnection::new(context.config.clone(), server_name.clone())
        .map_err(|e| Error::new(ErrorKind::Tls, e.to_string()))?;
    let mut tls = rustls::Connection::Client(client);
    let events = connection.events();
    events.emit(EventKind::StartedEncryptionHandshake, || {
        Event::new(EventKind::StartedEncryptionHandshake, Some(connection))
            .describe("TLS handshake started")
    });
    take_server_certificate_errors();
    take_tickets_received();
    let outcome = observe_server_certificate_checks(connection, &events, || {
        handshake::complete(connection, &mut tls, deadline, &mut |tls| {
            let chain = tls.peer_certificates().unwrap_or_default();
            context
                .verifier
                .judge(chain, &server_name, UnixTime::now())
                .map_err(|error| Refusal {
                    error,
                    alert: AlertType::BadCertificate,
                })
        })
    });
    let errors = take_server_certificate_errors();
    connection.verification().set_errors(&errors);
    if let Err(failure) = outcome {
        // Tickets of a failed handshake are nobody's.
        take_tickets_received();
        return Err(refused(connection, &events, failure, deadline, &errors));
    }
    connection.install(tls, Some(name.to_string()));
    Ok(())
}

/// Resolves and connects, trying each address until one answers.
fn connect_tcp(
    host: &str,
    port: u16,
    deadline: HandshakeDeadline,
    mode: SslMode,
) -> Result<Arc<Connection>> {
    let addresses = resolve(host, port, deadline)?;
    let mut last_error = Error::new(ErrorKind::Io, format!("'{host}' has no address"));
    for address in addresses {
        let attempt = match deadline.remaining() {
            Err(_) => return Err(timed_out(deadline)),
            Ok(None) => TcpStream::connect(address),
            Ok(Some(left)) => TcpStream::connect_timeout(&address, left),
        };
        match attempt {
            Ok(stream) => {
                return Connection::over_stream(stream, mode, Some(host.to_string()))
                    .map_err(|(error, _)| error)
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(timed_out(deadline)),
            Err(e) => {
                last_error = Error::new(
                    ErrorKind::Io,
                    format!("cannot connect to {address}: {}", os_reason(&e)),
                );
            }
        }
    }
    Err(last_error)
}

/// The addresses of `host`, within the deadline. getaddrinfo cannot be
/// interrupted, so a name is looked up on a thread of its own; one that
/// outlives the deadline finishes on its own and its answer is dropped.
fn resolve(host: &str, port: u16, deadline: HandshakeDeadline) -> Result<Vec<SocketAddr>> {
    static SYSTEM_LOOKUPS: LookupSlots = LookupSlots::new(MAX_OUTSTANDING_LOOKUPS);
    resolve_with(host, port, deadline, &SYSTEM_LOOKUPS, |name, port| {
        (name, port).to_socket_addrs().map(Vec::from_iter)
    })
}

/// "[::1]" -> "::1"; anything else unchanged.
fn without_brackets(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Lookup threads may outlive their deadline (getaddrinfo cannot be
/// interrupted); under a hung resolver they would pile up without bound.
/// Past this many still running, a lookup fails at once instead.
const MAX_OUTSTANDING_LOOKUPS: usize = 16;

/// Counts lookup threads still running, against a fixed cap.
struct LookupSlots {
    in_use: AtomicUsize,
    cap: usize,
}

impl LookupSlots {
    const fn new(cap: usize) -> Self {
        LookupSlots {
            in_use: AtomicUsize::new(0),
            cap,
        }
    }

    fn try_take(&'static self) -> Option<LookupSlot> {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.cap).then_some(n + 1)
            })
            .ok()
            .map(|_| LookupSlot(self))
    }
}

/// One taken slot, given back when the lookup thread ends.
struct LookupSlot(&'static LookupSlots);

impl Drop for LookupSlot {
    fn drop(&mut self) {
        self.0.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

type Lookup = fn(&str, u16) -> std::io::Result<Vec<SocketAddr>>;

fn resolve_with(
    host: &str,
    port: u16,
    deadline: HandshakeDeadline,
    slots: &'static LookupSlots,
    system_lookup: Lookup,
) -> Result<Vec<SocketAddr>> {
    let host_only = without_brackets(host);
    if let Ok(ip) = host_only.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let lookup = {
        let name = host_only.to_string();
        move || system_lookup(&name, port)
    };
    let left = match deadline.remaining() {
        Err(_) => return Err(timed_out(deadline)),
        // No deadline: nothing to wait for but the answer.
        Ok(None) => return lookup().map_err(|e| cannot_resolve(host, &e)),
        Ok(Some(left)) => left,
    };
    let Some(slot) = slots.try_take() else {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "cannot resolve '{host}': {} earlier name lookups are still running \
                 (the resolver is not answering)",
                slots.cap
            ),
        ));
    };
    let (answer, answered) = crossbeam_channel::bounded(1);
    let lookup_thread = thread::Builder::new().name("sslserver-dns".into()).spawn({
        let lookup = lookup.clone();
        move || {
            let _slot = slot;
            let _ = answer.send(lookup());
        }
    });
    let looked_up = match lookup_thread {
        // No thread to spare: look up here, unbounded, rather than fail.
        Err(_) => lookup(),
        Ok(_) => match answered.recv_timeout(left) {
            Ok(looked_up) => looked_up,
            Err(RecvTimeoutError::Timeout) => return Err(timed_out(deadline)),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("the name lookup of '{host}' failed"),
                ))
            }
        },
    };
    looked_up.map_err(|e| cannot_resolve(host, &e))
}

fn cannot_resolve(host: &str, err: &std::io::Error) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("cannot resolve '{host}': {}", os_reason(err)),
    )
}

fn timed_out(deadline: HandshakeDeadline) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!(
            "the connection was not encrypted within {} ms",
            deadline.timeout_ms()
        ),
    )
}

/// The error for a failed handshake; sends rustls's alert, reports it and
/// closes.
fn refused(
    connection: &Arc<Connection>,
    events: &EventSink,
    failure: Failure,
    deadline: HandshakeDeadline,
    errors: &[SslError],
) -> Error {
    let error = match failure {
        Failure::Timeout => timed_out(deadline),
        Failure::PeerClosed => Error::new(
            ErrorKind::Closed,
            "the server closed the connection during the handshake",
        ),
        Failure::Io(e) => Error::new(ErrorKind::Io, os_reason(&e)),
        Failure::NotTls(_) | Failure::Internal(_) | Failure::Unreadable(..) => {
            Error::new(ErrorKind::Tls, "the TLS handshake failed")
        }
        Failure::Tls(err, alert) | Failure::Refused(err, alert) => {
            if let rustls::Error::AlertReceived(description) = &err {
                let alert_type = AlertType::from_wire(u8::from(*description));
                events.emit(EventKind::AlertReceived, || {
                    Event::new(EventKind::AlertReceived, Some(connection))
                        .alert(AlertLevel::Fatal, alert_type)
                        .describe(format!("the server sent a fatal alert: {description:?}"))
                });
            }
            if let Some(alert) = alert {
                handshake::send_alert_bytes(connection, &alert.bytes);
                events.emit(EventKind::AlertSent, || {
                    Event::new(EventKind::AlertSent, Some(connection))
                        .alert(AlertLevel::Fatal, alert.alert)
                        .describe(format!("sent a fatal alert: {:?} ({err})", alert.alert))
                });
            }
            if errors.is_empty() {
                Error::new(ErrorKind::Tls, format!("the TLS handshake failed: {err}"))
            } else {
                let list: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{} ({}): {}", e.code.name(), e.code as i32, e.message))
                    .collect();
                Error::new(
                    ErrorKind::Tls,
                    format!("certificate verification failed: {}", list.join("; ")),
                )
            }
        }
    };
    let socket_error = socket_error_of(&error);
    connection.set_error(socket_error, error.to_string());
    connection.abort();
    events.emit(EventKind::ErrorOccurred, || {
        Event::new(EventKind::ErrorOccurred, Some(connection))
            .socket_error(socket_error)
            .describe(error.to_string())
    });
    error
}

/// The socket error a failed client handshake leaves readable.
fn socket_error_of(error: &Error) -> SocketError {
    match error.kind() {
        ErrorKind::Timeout => SocketError::SocketTimeout,
        ErrorKind::Closed => SocketError::RemoteHostClosed,
        ErrorKind::Io => SocketError::Network,
        _ => SocketError::SslHandshakeFailed,
    }
}

/// The rustls client config built from a [`TlsConfig`], with the verifier
/// inside it (which also judges resumed sessions, where rustls does not).
pub(crate) struct ClientContext {
    config: Arc<ClientConfig>,
    verifier: Arc<ServerIdentityVerifier>,
}

/// The client context of `config`, built once and shared by its unchanged
/// copies so that sessions resume.
fn client_context(config: &TlsConfig) -> Result<Arc<ClientContext>> {
    let mut slot = config.client_context().lock();
    if let Some(context) = slot.as_ref() {
        return Ok(context.clone());
    }
    let verifier = Arc::new(ServerIdentityVerifier::new(config, system_roots())?);
    let builder = ClientConfig::builder_with_provider(config.provider()?)
        .with_protocol_versions(protocol_versions(config.protocol())?)
        .map_err(|e| Error::new(ErrorKind::Tls, format!("unusable protocol versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone());
    let mut client = match config.certified_key() {
        Some(key) => builder.with_client_cert_resolver(Arc::new(OneClientCertificate(key))),
        None => builder.with_no_client_auth(),
    };
    client.alpn_protocols = config.alpn_protocols().to_vec();
    if let Some(key_log) = config.key_log() {
        client.key_log = key_log;
    }
    client.resumption = Resumption::store(Arc::new(CountingTicketStore(
        ClientSessionMemoryCache::new(SESSION_CACHE_SIZE),
    )));
    let context = Arc::new(ClientContext {
        config: Arc::new(client),
        verifier,
    });
    *slot = Some(context.clone());
    Ok(context)
}

/// The system's trust store, read once.
/// (and the certificates it holds, for their dates).
fn system_roots() -> &'static (RootCertStore, Vec<CertificateDer<'static>>) {
    static ROOTS: OnceLock<(RootCertStore, Vec<CertificateDer<'static>>)> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let usable = found
            .certs
            .into_iter()
            .map(CertificateDer::into_owned)
            .filter(|cert| roots.add(cert.clone()).is_ok())
            .collect();
        (roots, usable)
    })
}

/// Offers the configured certificate to every server that asks.
#[derive(Debug)]
struct OneClientCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for OneClientCertificate {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_slow_name_lookup_ends_at_the_deadline() {
        let slow: Lookup = |_, _| {
            thread::sleep(Duration::from_secs(30));
            Ok(Vec::new())
        };
        let started = Instant::now();
        static SLOTS: LookupSlots = LookupSlots::new(4);
        let err = resolve_with(
            "slow.example",
            443,
            HandshakeDeadline::starting_now(100),
            &SLOTS,
            slow,
        )
        .expect_err("the lookup outlives the deadline");
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "waited {:?} for a 100 ms deadline",
            started.elapsed()
        );
    }

    #[test]
    fn address_literals_are_not_looked_up() {
        let never: Lookup = |_, _| panic!("an address literal was looked up");
        let deadline = HandshakeDeadline::starting_now(100);
        static SLOTS: LookupSlots = LookupSlots::new(1);
        let v6 = resolve_with("[::1]", 443, deadline, &SLOTS, never).unwrap();
        assert_eq!(v6, vec!["[::1]:443".parse::<SocketAddr>().unwrap()]);
        let plain_v6 = resolve_with("::1", 443, deadline, &SLOTS, never).unwrap();
        assert_eq!(plain_v6, v6);
        let v4 = resolve_with("127.0.0.1", 443, deadline, &SLOTS, never).unwrap();
        assert_eq!(v4, vec!["127.0.0.1:443".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn hung_lookups_are_capped_and_the_next_fails_fast() {
        let hung: Lookup = |_, _| {
            thread::sleep(Duration::from_secs(5));
            Ok(Vec::new())
        };
        static SLOTS: LookupSlots = LookupSlots::new(3);
        for _ in 0..3 {
            let err = resolve_with(
                "hung.example",
                443,
                HandshakeDeadline::starting_now(20),
                &SLOTS,
                hung,
            )
            .expect_err("the lookup outlives its deadline");
            assert_eq!(err.kind(), ErrorKind::Timeout);
        }
        let started = Instant::now();
        let err = resolve_with(
            "hung.example",
            443,
            HandshakeDeadline::starting_now(2000),
            &SLOTS,
            hung,
        )
        .expect_err("no slot is free");
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(err.message().contains("still running"), "{}", err.message());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "waited {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_bracketed_ipv6_literal_is_a_valid_host() {
        let port = std::net::TcpListener::bind("[::1]:0").map(|l| l.local_addr().unwrap().port());
        let Ok(port) = port else {
            return; // no IPv6 loopback on this machine
        };
        // The listener is gone: the connection is refused, which proves the
        // host was accepted and looked up.
        let config = TlsConfig::new();
        for host in ["[::1]", "::1"] {
            let err = connect_encrypted(host, port, &config, None, 2000)
                .expect_err("nothing listens there any more");
            assert_ne!(
                err.kind(),
                ErrorKind::InvalidArgument,
                "{host}: {}",
                err.message()
            );
        }
    }
}

/// How many servers' sessions a client configuration remembers.
const SESSION_CACHE_SIZE: usize = 256;

thread_local! {
    /// TLS 1.3 tickets stored on this thread since the last look. rustls
    /// stores a ticket inside `process_new_packets`, on the thread reading
    /// the connection, so that thread learns of it here.
    static TICKETS_RECEIVED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The TLS 1.3 tickets stored on this thread since the last call.
pub(crate) fn take_tickets_received() -> usize {
    TICKETS_RECEIVED.with(|count| count.replace(0))
}

/// rustls's in-memory session store, counting the tickets it receives for
/// NEW_SESSION_TICKET_RECEIVED.
#[derive(Debug)]
struct CountingTicketStore(ClientSessionMemoryCache);

impl ClientSessionStore for CountingTicketStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.0.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.0.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.0.set_tls12_session(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.0.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.0.remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        TICKETS_RECEIVED.with(|count| count.set(count.get() + 1));
        self.0.insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.0.take_tls13_ticket(server_name)
    }
}
