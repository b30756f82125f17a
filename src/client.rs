//! Client mode (`QSslSocket::connectToHostEncrypted`): the same connection
//! type the server hands out, from the other end. Resolving, connecting and
//! the handshake share one deadline; afterwards the connection is read and
//! written by the application's threads, exactly like an accepted one.

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;

use crossbeam_channel::RecvTimeoutError;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ClientConnection, RootCertStore, SignatureScheme};

use crate::config::{crypto_provider, protocol_versions, TlsConfig};
use crate::connection::Connection;
use crate::error::{os_reason, Error, ErrorKind, Result};
use crate::events::SslError;
use crate::handshake::{self, Failure, HandshakeDeadline};
use crate::types::AlertType;
use crate::verify::{take_server_certificate_errors, Refusal, ServerIdentityVerifier};

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
    if timeout_ms < -1 {
        return Err(Error::invalid_argument(
            "the timeout must be >= 0 ms, or -1 for none",
        ));
    }
    let deadline = HandshakeDeadline::starting_now(timeout_ms);
    // "[::1]" is how a URL writes an IPv6 literal; the name to verify is
    // the address itself.
    let name = verify_name
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| without_brackets(host));
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|_| Error::invalid_argument(format!("'{name}' is not a valid host name")))?;
    let stream = connect_tcp(host, port, deadline)?;
    let _ = stream.set_nodelay(true);
    let (peer, local) = match (stream.peer_addr(), stream.local_addr()) {
        (Ok(peer), Ok(local)) => (peer, local),
        (Err(e), _) | (_, Err(e)) => return Err(Error::new(ErrorKind::Io, os_reason(&e))),
    };
    let connection = Arc::new(Connection::new(stream, peer, local));
    let context = client_context(config)?;
    let client = ClientConnection::new(context.config.clone(), server_name.clone())
        .map_err(|e| Error::new(ErrorKind::Tls, e.to_string()))?;
    let mut tls = rustls::Connection::Client(client);
    take_server_certificate_errors();
    let outcome = handshake::complete(&connection, &mut tls, deadline, &mut |tls| {
        let chain = tls.peer_certificates().unwrap_or_default();
        context
            .verifier
            .judge(chain, &server_name, UnixTime::now())
            .map_err(|error| Refusal {
                error,
                alert: AlertType::BadCertificate,
            })
    });
    let errors = take_server_certificate_errors();
    if let Err(failure) = outcome {
        return Err(refused(&connection, failure, deadline, &errors));
    }
    connection.verification().set_errors(&errors);
    connection.install(tls, Some(name.to_string()));
    Ok(connection)
}

/// Resolves and connects, trying each address until one answers.
fn connect_tcp(host: &str, port: u16, deadline: HandshakeDeadline) -> Result<TcpStream> {
    let addresses = resolve(host, port, deadline)?;
    let mut last_error = Error::new(ErrorKind::Io, format!("'{host}' has no address"));
    for address in addresses {
        let attempt = match deadline.remaining() {
            Err(_) => return Err(timed_out(deadline)),
            Ok(None) => TcpStream::connect(address),
            Ok(Some(left)) => TcpStream::connect_timeout(&address, left),
        };
        match attempt {
            Ok(stream) => return Ok(stream),
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

/// The error for a failed handshake; sends rustls's alert and closes.
fn refused(
    connection: &Connection,
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
        Failure::Tls(err, alert) => {
            if let Some(alert) = alert {
                let _ = std::io::Write::write_all(&mut connection.stream(), &alert.bytes);
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
    connection.abort();
    error
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
    let builder = ClientConfig::builder_with_provider(crypto_provider().clone())
        .with_protocol_versions(protocol_versions(config.protocol())?)
        .map_err(|e| Error::new(ErrorKind::Tls, format!("unusable protocol versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone());
    let mut client = match config.certified_key() {
        Some(key) => builder.with_client_cert_resolver(Arc::new(OneClientCertificate(key))),
        None => builder.with_no_client_auth(),
    };
    client.alpn_protocols = config.alpn_protocols().to_vec();
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
