//! Certificate verification with Qt's semantics: of client certificates on
//! a server (a rustls `ClientCertVerifier`), and of the server's certificate
//! in client mode (a `ServerCertVerifier`).
//!
//! webpki decides whether a chain is trusted; this module turns its verdict
//! into Qt-numbered errors, reports them as events in Qt's order, and lets the
//! application accept the certificate anyway (QUERY_PEER always does;
//! VERIFY_PEER does when the application ignores the errors from a callback).
//! The decision has to be made inside rustls's call, because rustls finishes
//! the handshake in the same `process_new_packets` call; so the verifier is
//! built per connection and reports to that connection's event sink.

use std::sync::{Arc, Weak};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore};

use crate::config::{crypto_provider, SslErrorsCallback, TlsConfig};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::events::{Event, EventSink, SslError};
use crate::trust::{self, IgnoredErrors, Purpose, TrustStore};
use crate::types::{AlertType, EventKind, PeerVerifyMode, SslErrorCode};

/// How a server checks client certificates; built once per `set_config`.
pub(crate) struct ClientAuthPolicy {
    /// `QueryPeer` or `VerifyPeer` (AUTO is QUERY on a server).
    mode: PeerVerifyMode,
    interrupt_on_error: bool,
    /// The configured CAs; with none, every client certificate is untrusted.
    trust: TrustStore,
    /// Errors the configuration accepts up front.
    ignored: IgnoredErrors,
    hints: Vec<DistinguishedName>,
}

/// Why a handshake is refused after the peer's chain was judged: the rustls
/// error to report and the alert to send.
pub(crate) struct Refusal {
    pub(crate) error: rustls::Error,
    pub(crate) alert: AlertType,
}

impl ClientAuthPolicy {
    /// The policy for `config`, or `None` when no client certificate is requested.
    pub(crate) fn new(config: &TlsConfig) -> Result<Option<Arc<Self>>> {
        let mode = match config.peer_verify_mode() {
            PeerVerifyMode::VerifyNone => return Ok(None),
            PeerVerifyMode::QueryPeer | PeerVerifyMode::AutoVerifyPeer => PeerVerifyMode::QueryPeer,
            PeerVerifyMode::VerifyPeer => PeerVerifyMode::VerifyPeer,
        };
        let roots = root_store(RootCertStore::empty(), config)?;
        let hints = roots.subjects();
        Ok(Some(Arc::new(ClientAuthPolicy {
            mode,
            interrupt_on_error: config.handshake_must_interrupt_on_error(),
            trust: TrustStore::new(
                roots,
                config.ca_certificates(),
                config.ca_certificates().to_vec(),
            ),
            ignored: config.ignored_errors().clone(),
            hints,
        })))
    }

    /// Judges a client's chain (`None`: it sent none): records it, reports
    /// its errors as events and decides. A full handshake gets here from
    /// rustls's verifier call; a resumed one from the handshake loop, with
    /// the chain stored in its ticket, so that no decision taken for an
    /// earlier connection carries over to this one.
    pub(crate) fn judge(
        &self,
        connection: &Arc<Connection>,
        events: &EventSink,
        chain: Option<&[CertificateDer<'_>]>,
        now: UnixTime,
    ) -> std::result::Result<(), Refusal> {
        let errors = match chain.and_then(|c| c.split_first()) {
            Some((end_entity, intermediates)) => {
                connection
                    .verification()
                    .record_chain(end_entity, intermediates);
                self.trust
                    .examine(end_entity, intermediates, now, Purpose::TlsClient, None)
            }
            None if self.mode == PeerVerifyMode::VerifyPeer => {
                vec![SslError::new(SslErrorCode::NoPeerCertificate, None)]
            }
            None => Vec::new(),
        };
        if errors.is_empty() || report_errors(self, connection, events, &errors) {
            return Ok(());
        }
        let error = trust::refusal(&errors);
        let alert = match &error {
            rustls::Error::NoCertificatesPresented => AlertType::CertificateRequired,
            rustls::Error::InvalidCertificate(e) => {
                AlertType::from_wire(u8::from(rustls::AlertDescription::from(e.clone())))
            }
            _ => AlertType::HandshakeFailure,
        };
        Err(Refusal { error, alert })
    }
}

/// `roots` plus the configured CAs.
fn root_store(mut roots: RootCertStore, config: &TlsConfig) -> Result<RootCertStore> {
    for (index, ca) in config.ca_certificates().iter().enumerate() {
        roots.add(ca.clone()).map_err(|e| {
            Error::certificate(format!("CA certificate {} cannot be used: {e}", index + 1))
        })?;
    }
    Ok(roots)
}

/// Reports verification errors in Qt's order (the table in the C contract)
/// and says whether the handshake may go on.
pub(crate) fn report_errors(
    policy: &ClientAuthPolicy,
    connection: &Arc<Connection>,
    events: &EventSink,
    errors: &[SslError],
) -> bool {
    connection.verification().set_errors(errors);
    let verification = connection.verification();
    if policy.interrupt_on_error {
        events.emit(EventKind::HandshakeInterruptedOnError, || {
            Event::new(EventKind::HandshakeInterruptedOnError, Some(connection))
                .ssl_errors(&errors[..1])
                .describe(format!(
                    "handshake interrupted on a client-certificate error: {}",
                    errors[0].message
                ))
        });
        if !verification.continue_requested() {
            return false;
        }
    } else {
        emit_peer_verify_errors(connection, events, errors);
    }
    emit_ssl_errors(connection, events, errors, "client");
    policy.mode == PeerVerifyMode::QueryPeer
        || verification.errors_ignored()
        || policy.ignored.cover(errors)
}

/// The verifier of one connection's handshake.
pub(crate) struct PeerVerifier {
    policy: Arc<ClientAuthPolicy>,
    connection: Weak<Connection>,
    events: EventSink,
}

impl PeerVerifier {
    pub(crate) fn new(
        policy: Arc<ClientAuthPolicy>,
        connection: &Arc<Connection>,
        events: &EventSink,
    ) -> Self {
        PeerVerifier {
            policy,
            connection: Arc::downgrade(connection),
            events: events.clone(),
        }
    }
}

impl std::fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerVerifier")
            .field("mode", &self.policy.mode)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    /// rustls asks this when a client Certificate message arrives, and uses
    /// the answer only if it is empty. A missing certificate under VERIFY_PEER
    /// can only be accepted if the configuration ignores NO_PEER_CERTIFICATE
    /// or the application ignored errors before this point (from
    /// NEW_CONNECTION or STARTED_ENCRYPTION_HANDSHAKE); the handshake loop
    /// then reports it.
    fn client_auth_mandatory(&self) -> bool {
        let missing = [SslError::new(SslErrorCode::NoPeerCertificate, None)];
        self.policy.mode == PeerVerifyMode::VerifyPeer
            && !self.policy.ignored.cover(&missing)
            && !self
                .connection
                .upgrade()
                .is_some_and(|c| c.verification().errors_ignored())
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.policy.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let Some(connection) = self.connection.upgrade() else {
            return Err(rustls::Error::General("connection closed".into()));
        };
        let chain: Vec<CertificateDer<'_>> = std::iter::once(end_entity.clone())
            .chain(intermediates.iter().cloned())
            .collect();
        self.policy
            .judge(&connection, &self.events, Some(&chain), now)
            .map(|()| ClientCertVerified::assertion())
            .map_err(|refusal| refusal.error)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        supported_schemes()
    }
}

/// Handshake signatures are checked whatever the application decides about
/// the certificate: the peer must prove it holds the key.
fn verify_tls12(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls12_signature(
        message,
        cert,
        dss,
        &crypto_provider().signature_verification_algorithms,
    )
}

fn verify_tls13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &crypto_provider().signature_verification_algorithms,
    )
}

fn supported_schemes() -> Vec<rustls::SignatureScheme> {
    crypto_provider()
        .signature_verification_algorithms
        .supported_schemes()
}

/// A client's check of the server's certificate, as QSslSocket does it:
/// every error with its Qt code, the host name checked even when the chain
/// is untrusted, and errors accepted when listed up front or when the
/// application's callback says so.
pub(crate) struct ServerIdentityVerifier {
    /// VerifyNone, QueryPeer or VerifyPeer (AUTO is VERIFY on a client).
    mode: PeerVerifyMode,
    /// The system's roots and the configured CAs.
    trust: TrustStore,
    ignored: IgnoredErrors,
    decide: Option<SslErrorsCallback>,
}

thread_local! {
    /// What the last server-certificate check on this thread found. rustls
    /// runs the check inside the handshake call, on the connecting thread,
    /// and the verifier is shared by connections (for resumption), so this
    /// is how `connect_encrypted` learns the errors of its own handshake.
    static FOUND: std::cell::RefCell<Vec<SslError>> = const { std::cell::RefCell::new(Vec::new()) };
}

thread_local! {
    /// The socket whose client handshake runs on this thread, and where its
    /// events go: PEER_VERIFY_ERROR and SSL_ERRORS come from inside rustls's
    /// call, like on a server.
    static OBSERVER: std::cell::RefCell<Option<(Arc<Connection>, EventSink)>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `handshake` (a client handshake of `connection` on this thread)
/// with the server-certificate checks reporting to `events`; the socket's
/// callbacks may accept the errors with `ignore_ssl_errors`.
pub(crate) fn observe_server_certificate_checks<T>(
    connection: &Arc<Connection>,
    events: &EventSink,
    handshake: impl FnOnce() -> T,
) -> T {
    /// Puts back the outer observer however the handshake ends (a Rust
    /// callback may panic), so the socket is not kept alive by the thread.
    struct Restore(Option<(Arc<Connection>, EventSink)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            OBSERVER.with(|o| *o.borrow_mut() = outer);
        }
    }
    // A callback may run another client handshake on this thread.
    let _restore =
        Restore(OBSERVER.with(|o| o.replace(Some((connection.clone(), events.clone())))));
    handshake()
}

/// The errors the last server-certificate check on this thread found
/// (taken, so a later handshake starts empty).
pub(crate) fn take_server_certificate_errors() -> Vec<SslError> {
    FOUND.with(|found| std::mem::take(&mut *found.borrow_mut()))
}

impl ServerIdentityVerifier {
    /// `system_roots`: the system's trust store and the certificates it
    /// was made from.
    pub(crate) fn new(
        config: &TlsConfig,
        system_roots: &(RootCertStore, Vec<CertificateDer<'static>>),
    ) -> Result<Self> {
        let mode = match config.peer_verify_mode() {
            PeerVerifyMode::AutoVerifyPeer => PeerVerifyMode::VerifyPeer,
            other => other,
        };
        Ok(ServerIdentityVerifier {
            mode,
            trust: TrustStore::new(
                root_store(system_roots.0.clone(), config)?,
                &[&system_roots.1[..], config.ca_certificates()].concat(),
                config.ca_certificates().to_vec(),
            ),
            ignored: config.ignored_errors().clone(),
            decide: config.ssl_errors_callback(),
        })
    }

    /// Judges the server's chain for `server_name`: records what is wrong
    /// for `take_server_certificate_errors` and decides. A full handshake
    /// gets here from rustls's verifier call; a resumed one from the
    /// handshake loop, with the chain stored with the session.
    pub(crate) fn judge(
        &self,
        chain: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> std::result::Result<(), rustls::Error> {
        if self.mode == PeerVerifyMode::VerifyNone {
            return Ok(());
        }
        let errors = match chain.split_first() {
            Some((end_entity, intermediates)) => self.trust.examine(
                end_entity,
                intermediates,
                now,
                Purpose::TlsServer,
                Some(server_name),
            ),
            None => vec![SslError::new(SslErrorCode::NoPeerCertificate, None)],
        };
        if errors.is_empty() {
            return Ok(());
        }
        let observer = OBSERVER.with(|o| o.borrow().clone());
        let accepted_by_callback = observer.is_some_and(|(connection, events)| {
            report_server_certificate_errors(&connection, &events, &errors);
            connection.verification().errors_ignored()
        });
        let accepted = self.mode == PeerVerifyMode::QueryPeer
            || accepted_by_callback
            || self.ignored.cover(&errors)
            || self.decide.as_ref().is_some_and(|decide| decide(&errors));
        let refusal = trust::refusal(&errors);
        FOUND.with(|found| *found.borrow_mut() = errors);
        if accepted {
            Ok(())
        } else {
            Err(refusal)
        }
    }
}

/// A client socket's PEER_VERIFY_ERROR (one per error) and SSL_ERRORS.
fn report_server_certificate_errors(
    connection: &Arc<Connection>,
    events: &EventSink,
    errors: &[SslError],
) {
    connection.verification().set_errors(errors);
    emit_peer_verify_errors(connection, events, errors);
    emit_ssl_errors(connection, events, errors, "server");
}

/// PEER_VERIFY_ERROR, once per error.
fn emit_peer_verify_errors(connection: &Arc<Connection>, events: &EventSink, errors: &[SslError]) {
    for error in errors {
        events.emit(EventKind::PeerVerifyError, || {
            Event::new(EventKind::PeerVerifyError, Some(connection))
                .ssl_errors(std::slice::from_ref(error))
                .describe(error.message.clone())
        });
    }
}

/// SSL_ERRORS with every error of the `whose` ("client", "server") chain.
fn emit_ssl_errors(
    connection: &Arc<Connection>,
    events: &EventSink,
    errors: &[SslError],
    whose: &str,
) {
    events.emit(EventKind::SslErrors, || {
        let names: Vec<&str> = errors.iter().map(|e| e.code.name()).collect();
        Event::new(EventKind::SslErrors, Some(connection))
            .ssl_errors(errors)
            .describe(format!("{whose} certificate errors: {}", names.join(", ")))
    });
}

impl std::fmt::Debug for ServerIdentityVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentityVerifier")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for ServerIdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<CertificateDer<'_>> = std::iter::once(end_entity.clone())
            .chain(intermediates.iter().cloned())
            .collect();
        self.judge(&chain, server_name, now)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        supported_schemes()
    }
}
