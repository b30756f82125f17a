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
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};

use crate::config::{crypto_provider, SslErrorsCallback, TlsConfig};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::events::{Event, EventSink, SslError};
use crate::types::{EventKind, PeerVerifyMode, SslErrorCode};

/// How a server checks client certificates; built once per `set_config`.
pub(crate) struct ClientAuthPolicy {
    /// `QueryPeer` or `VerifyPeer` (AUTO is QUERY on a server).
    mode: PeerVerifyMode,
    interrupt_on_error: bool,
    /// webpki over the configured CAs; `None` when there are none, so every
    /// client certificate is untrusted.
    trust: Option<Arc<dyn ClientCertVerifier>>,
    /// The configured CAs: a client presenting one of these exact
    /// certificates is trusted directly, as OpenSSL (and so Qt) does.
    anchors: Vec<CertificateDer<'static>>,
    hints: Vec<DistinguishedName>,
}

impl ClientAuthPolicy {
    /// The policy for `config`, or `None` when no client certificate is requested.
    pub(crate) fn new(config: &TlsConfig) -> Result<Option<Arc<Self>>> {
        let mode = match config.peer_verify_mode() {
            PeerVerifyMode::VerifyNone => return Ok(None),
            PeerVerifyMode::QueryPeer | PeerVerifyMode::AutoVerifyPeer => PeerVerifyMode::QueryPeer,
            PeerVerifyMode::VerifyPeer => PeerVerifyMode::VerifyPeer,
        };
        let mut roots = RootCertStore::empty();
        for (index, ca) in config.ca_certificates().iter().enumerate() {
            roots.add(ca.clone()).map_err(|e| {
                Error::certificate(format!("CA certificate {} cannot be used: {e}", index + 1))
            })?;
        }
        let hints = roots.subjects();
        let trust = if roots.is_empty() {
            None
        } else {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                crypto_provider().clone(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| Error::certificate(format!("cannot use the CA certificates: {e}")))?;
            Some(verifier)
        };
        Ok(Some(Arc::new(ClientAuthPolicy {
            mode,
            interrupt_on_error: config.handshake_must_interrupt_on_error(),
            trust,
            anchors: config.ca_certificates().to_vec(),
            hints,
        })))
    }

    pub(crate) fn mode(&self) -> PeerVerifyMode {
        self.mode
    }

    /// The Qt errors of a presented chain, and the rustls error (which picks
    /// the alert) to fail with if they are not accepted.
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> (Vec<SslError>, rustls::Error) {
        let directly_trusted = self
            .anchors
            .iter()
            .any(|a| a.as_ref() == end_entity.as_ref());
        let verdict = match &self.trust {
            _ if directly_trusted => Ok(()),
            Some(webpki) => webpki
                .verify_client_cert(end_entity, intermediates, now)
                .map(|_| ()),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        };
        let errors = chain_errors(&verdict, end_entity, intermediates, now);
        let cause = verdict
            .err()
            .unwrap_or(rustls::Error::InvalidCertificate(CertificateError::Expired));
        (errors, cause)
    }
}

/// The Qt errors of a chain, given webpki's verdict on it. webpki stops at
/// the first problem; Qt (like OpenSSL) also reports the leaf's validity
/// period when the issuer is the problem.
fn chain_errors(
    verdict: &std::result::Result<(), rustls::Error>,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Vec<SslError> {
    let mut codes = Vec::new();
    if let Err(err) = verdict {
        codes.push(classify(err, end_entity, intermediates));
    }
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(end_entity.as_ref()) {
        let now = now.as_secs() as i64;
        if cert.validity().not_after.timestamp() < now {
            codes.push(SslErrorCode::CertificateExpired);
        }
        if cert.validity().not_before.timestamp() > now {
            codes.push(SslErrorCode::CertificateNotYetValid);
        }
    }
    let leaf = Some(end_entity.clone().into_owned());
    let mut errors: Vec<SslError> = Vec::new();
    for code in codes {
        if !errors.iter().any(|e| e.code == code) {
            errors.push(SslError::new(code, leaf.clone()));
        }
    }
    errors
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
        for error in errors {
            events.emit(EventKind::PeerVerifyError, || {
                Event::new(EventKind::PeerVerifyError, Some(connection))
                    .ssl_errors(std::slice::from_ref(error))
                    .describe(error.message.clone())
            });
        }
    }
    events.emit(EventKind::SslErrors, || {
        let names: Vec<&str> = errors.iter().map(|e| e.code.name()).collect();
        Event::new(EventKind::SslErrors, Some(connection))
            .ssl_errors(errors)
            .describe(format!("client certificate errors: {}", names.join(", ")))
    });
    policy.mode == PeerVerifyMode::QueryPeer || verification.errors_ignored()
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
    /// can only be accepted if the application ignored errors before this
    /// point (from NEW_CONNECTION or STARTED_ENCRYPTION_HANDSHAKE).
    fn client_auth_mandatory(&self) -> bool {
        self.policy.mode == PeerVerifyMode::VerifyPeer
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
        connection
            .verification()
            .record_chain(end_entity, intermediates);
        let (errors, cause) = self.policy.check(end_entity, intermediates, now);
        if errors.is_empty() || report_errors(&self.policy, &connection, &self.events, &errors) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(cause)
        }
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
    /// webpki over the system's roots and the configured CAs.
    trust: Option<Arc<WebPkiServerVerifier>>,
    /// The configured CAs: a server presenting one of these exact
    /// certificates is trusted directly, as OpenSSL (and so Qt) does for a
    /// self-signed certificate in the trust store.
    anchors: Vec<CertificateDer<'static>>,
    ignored: Vec<SslErrorCode>,
    decide: Option<SslErrorsCallback>,
}

thread_local! {
    /// What the last server-certificate check on this thread found. rustls
    /// runs the check inside the handshake call, on the connecting thread,
    /// and the verifier is shared by connections (for resumption), so this
    /// is how `connect_encrypted` learns the errors of its own handshake.
    static FOUND: std::cell::RefCell<Vec<SslError>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The errors the last server-certificate check on this thread found
/// (taken, so a later handshake starts empty).
pub(crate) fn take_server_certificate_errors() -> Vec<SslError> {
    FOUND.with(|found| std::mem::take(&mut *found.borrow_mut()))
}

impl ServerIdentityVerifier {
    pub(crate) fn new(config: &TlsConfig, roots: RootCertStore) -> Result<Self> {
        let mode = match config.peer_verify_mode() {
            PeerVerifyMode::AutoVerifyPeer => PeerVerifyMode::VerifyPeer,
            other => other,
        };
        let trust = if roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    crypto_provider().clone(),
                )
                .build()
                .map_err(|e| Error::certificate(format!("cannot use the CA certificates: {e}")))?,
            )
        };
        Ok(ServerIdentityVerifier {
            mode,
            trust,
            anchors: config.ca_certificates().to_vec(),
            ignored: config.ignored_ssl_errors().to_vec(),
            decide: config.ssl_errors_callback(),
        })
    }
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
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if self.mode == PeerVerifyMode::VerifyNone {
            return Ok(ServerCertVerified::assertion());
        }
        let directly_trusted = self
            .anchors
            .iter()
            .any(|a| a.as_ref() == end_entity.as_ref());
        let verdict = match &self.trust {
            _ if directly_trusted => Ok(()),
            Some(webpki) => webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map(|_| ()),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        };
        let mut errors = chain_errors(&verdict, end_entity, intermediates, now);
        // webpki checks the name only on a trusted chain; Qt always does.
        if !matches_host_name(end_entity, server_name)
            && !errors
                .iter()
                .any(|e| e.code == SslErrorCode::HostNameMismatch)
        {
            errors.push(SslError::new(
                SslErrorCode::HostNameMismatch,
                Some(end_entity.clone().into_owned()),
            ));
        }
        if errors.is_empty() {
            return Ok(ServerCertVerified::assertion());
        }
        let all_ignored = errors.iter().all(|e| self.ignored.contains(&e.code));
        let accepted = all_ignored
            || self.mode == PeerVerifyMode::QueryPeer
            || self.decide.as_ref().is_some_and(|decide| decide(&errors));
        FOUND.with(|found| *found.borrow_mut() = errors);
        if accepted {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(verdict.err().unwrap_or(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            )))
        }
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

/// The Qt code for webpki's verdict on a chain.
fn classify(
    err: &rustls::Error,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> SslErrorCode {
    use CertificateError as C;
    let rustls::Error::InvalidCertificate(cert_err) = err else {
        return SslErrorCode::Unspecified;
    };
    let ca_as_leaf = matches!(cert_err, C::Other(other)
        if matches!(other.0.downcast_ref::<webpki::Error>(), Some(webpki::Error::CaUsedAsEndEntity)));
    let issuer_problem = ca_as_leaf
        || matches!(
            cert_err,
            C::UnknownIssuer
                | C::BadSignature
                | C::UnsupportedSignatureAlgorithmContext { .. }
                | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. }
        );
    // An untrusted self-signed leaf is reported as such (as OpenSSL and Qt
    // do), even when a trusted certificate with the same name made webpki
    // try, and fail, a signature check.
    if issuer_problem && is_self_signed(end_entity) {
        return SslErrorCode::SelfSignedCertificate;
    }
    match cert_err {
        C::UnknownIssuer => {
            if intermediates.iter().any(is_self_signed) {
                SslErrorCode::SelfSignedCertificateInChain
            } else {
                SslErrorCode::UnableToGetLocalIssuerCertificate
            }
        }
        C::Expired | C::ExpiredContext { .. } => SslErrorCode::CertificateExpired,
        C::NotValidYet | C::NotValidYetContext { .. } => SslErrorCode::CertificateNotYetValid,
        C::Revoked => SslErrorCode::CertificateRevoked,
        C::UnknownRevocationStatus => SslErrorCode::CertificateStatusUnknown,
        C::BadSignature
        | C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            SslErrorCode::CertificateSignatureFailed
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => SslErrorCode::HostNameMismatch,
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => SslErrorCode::InvalidPurpose,
        C::ApplicationVerificationFailure => SslErrorCode::CertificateRejected,
        C::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
            Some(webpki::Error::PathLenConstraintViolated)
            | Some(webpki::Error::MaximumPathDepthExceeded) => SslErrorCode::PathLengthExceeded,
            Some(webpki::Error::CaUsedAsEndEntity) => SslErrorCode::InvalidPurpose,
            Some(webpki::Error::EndEntityUsedAsCa) => SslErrorCode::InvalidCaCertificate,
            _ => SslErrorCode::Unspecified,
        },
        _ => SslErrorCode::Unspecified,
    }
}

/// Whether the certificate is valid for `name`: its subject alternative
/// names (webpki's check), or, when it has no DNS names, its common name
/// (Qt's fallback, for certificates made without SANs).
fn matches_host_name(cert: &CertificateDer<'_>, name: &ServerName<'_>) -> bool {
    if webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|c| c.verify_is_valid_for_subject_name(name).is_ok())
    {
        return true;
    }
    let ServerName::DnsName(dns) = name else {
        return false;
    };
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return false;
    };
    let has_dns_names = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value
                .general_names
                .iter()
                .any(|n| matches!(n, x509_parser::extensions::GeneralName::DNSName(_)))
        });
    if has_dns_names {
        return false;
    }
    let wanted = dns.as_ref().to_ascii_lowercase();
    let matched = parsed
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .any(|cn| {
            let cn = cn.to_ascii_lowercase();
            match cn.strip_prefix("*.") {
                Some(suffix) => wanted
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
                None => cn == wanted,
            }
        });
    matched
}

fn is_self_signed(cert: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(cert.as_ref())
        .map(|(_, c)| c.issuer().as_raw() == c.subject().as_raw())
        .unwrap_or(false)
}
