//! What is wrong with a certificate chain, all of it.
//!
//! webpki answers one question, "is this chain valid for this purpose now?",
//! and stops at the first problem it meets; it checks the leaf's dates and
//! purpose before looking for its issuer. Reporting only that first problem
//! is unsound for an application that ignores some errors: an expired
//! self-signed certificate would be reported as "expired" only, and ignoring
//! expiry (common on devices without a clock) would accept any certificate
//! anyone can make. So the questions are asked separately here:
//!
//! 1. Is there a path to a trust anchor at all? Asked at a moment when the
//!    presented certificates are within their validity periods, and for any
//!    purpose, so that neither dates nor purpose hide the answer. No path
//!    means an issuer error, always, and it comes first.
//! 2. Is every certificate of the chain valid now? One error per
//!    certificate out of its period, naming that certificate.
//! 3. Is the chain fit for the purpose (TLS server or TLS client)?
//! 4. (Client mode) Is the leaf valid for the name the application expects?
//!
//! A connection proceeds only when every error found here is accepted.

use std::sync::Arc;

use rustls::pki_types::TrustAnchor;
use rustls::pki_types::{CertificateDer, ServerName, SignatureVerificationAlgorithm, UnixTime};
use rustls::{CertificateError, RootCertStore};
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter, KeyUsage};

use crate::config::crypto_provider;
use crate::events::SslError;
use crate::types::SslErrorCode;

/// Which end of a TLS connection a certificate must be fit for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The server's certificate, checked by a client.
    TlsServer,
    /// A client's certificate, checked by a server.
    TlsClient,
}

impl Purpose {
    fn key_usage(self) -> KeyUsage {
        match self {
            Purpose::TlsServer => KeyUsage::server_auth(),
            Purpose::TlsClient => KeyUsage::client_auth(),
        }
    }
}

/// The trust anchors a chain is checked against.
pub(crate) struct TrustStore {
    roots: RootCertStore,
    /// The certificates behind the anchors of `roots`, so that a path's CA
    /// has its dates checked too (webpki keeps only its name and key, and
    /// does not; OpenSSL, and so Qt, does).
    anchor_certificates: Vec<AnchorCertificate>,
    /// Certificates trusted as they are, when presented as the leaf: a
    /// configured CA certificate that is also the peer's own certificate
    /// (a self-signed certificate added as a CA), as OpenSSL and so Qt do.
    exact: Vec<CertificateDer<'static>>,
}

/// A trust anchor's certificate, found by the anchor's name and key.
struct AnchorCertificate {
    subject: Vec<u8>,
    subject_public_key_info: Vec<u8>,
    der: CertificateDer<'static>,
}

impl TrustStore {
    /// `roots` made from `anchors` (each of which webpki accepted), and the
    /// configured CAs `exact`.
    pub(crate) fn new(
        roots: RootCertStore,
        anchors: &[CertificateDer<'static>],
        exact: Vec<CertificateDer<'static>>,
    ) -> Self {
        let anchor_certificates = anchors
            .iter()
            .filter_map(|der| {
                let anchor = webpki::anchor_from_trusted_cert(der).ok()?;
                Some(AnchorCertificate {
                    subject: anchor.subject.to_vec(),
                    subject_public_key_info: anchor.subject_public_key_info.to_vec(),
                    der: der.clone(),
                })
            })
            .collect();
        TrustStore {
            roots,
            anchor_certificates,
            exact,
        }
    }

    /// The certificate of a path's trust anchor: of several with the same
    /// name and key (a root re-issued with new dates), one valid at `now`
    /// if there is one, as OpenSSL prefers.
    fn certificate_of(
        &self,
        anchor: &TrustAnchor<'_>,
        now: UnixTime,
    ) -> Option<&CertificateDer<'static>> {
        let now = now.as_secs() as i64;
        let mut matching = self.anchor_certificates.iter().filter(|a| {
            a.subject == anchor.subject.as_ref()
                && a.subject_public_key_info == anchor.subject_public_key_info.as_ref()
        });
        let first = matching.clone().next();
        matching
            .find(|a| validity(&a.der).is_some_and(|(from, until)| from <= now && now <= until))
            .or(first)
            .map(|a| &a.der)
    }

    /// Every problem of the chain `end_entity` + `intermediates` at `now`
    /// for `purpose` (and, in client mode, for the host `name`), issuer
    /// errors first. Empty means the chain is trusted and fit.
    pub(crate) fn examine(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        purpose: Purpose,
        name: Option<&ServerName<'_>>,
    ) -> Vec<SslError> {
        let mut found = Findings::default();
        let leaf = end_entity.clone().into_owned();
        let path = self.trusted_path(end_entity, intermediates, now, purpose, &leaf, &mut found);
        // Dates: of the certificates of the trusted path, or of the leaf
        // alone when there is none (which unrelated certificates the peer
        // sent along is not a question worth answering).
        let dated: Vec<CertificateDer<'static>> = match path {
            Some(path) => path,
            None => vec![leaf.clone()],
        };
        let now_secs = now.as_secs() as i64;
        for cert in &dated {
            if let Some((not_before, not_after)) = validity(cert) {
                if not_after < now_secs {
                    found.add(SslErrorCode::CertificateExpired, Some(cert));
                }
                if not_before > now_secs {
                    found.add(SslErrorCode::CertificateNotYetValid, Some(cert));
                }
            }
        }
        if let Some(name) = name {
            if !matches_host_name(end_entity, name) {
                found.add(SslErrorCode::HostNameMismatch, Some(&leaf));
            }
        }
        found.into_errors()
    }

    /// Question 1 (and 3): the certificates of a path to a trust anchor,
    /// leaf first, or `None` with an issuer error recorded.
    fn trusted_path(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        purpose: Purpose,
        leaf: &CertificateDer<'static>,
        found: &mut Findings,
    ) -> Option<Vec<CertificateDer<'static>>> {
        if self.exact.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            // Trusted as it is, but still only for what it may be used for.
            if !extended_key_usage_allows(end_entity, purpose) {
                found.add(SslErrorCode::InvalidPurpose, Some(leaf));
            }
            return Some(vec![leaf.clone()]);
        }
        let Ok(parsed) = EndEntityCert::try_from(end_entity) else {
            found.add_issuer(issuer_error(end_entity, intermediates, None), leaf);
            found.add(SslErrorCode::Unspecified, Some(leaf));
            return None;
        };
        let algorithms: &[&dyn SignatureVerificationAlgorithm] =
            crypto_provider().signature_verification_algorithms.all;
        let at = moment_of_validity(end_entity, intermediates, now);
        let anchors = &self.roots.roots;
        // Leaf, intermediates, and the CA's certificate when it is known.
        let path_of = |path: webpki::VerifiedPath<'_>| {
            std::iter::once(leaf.clone())
                .chain(
                    path.intermediate_certificates()
                        .map(|c| c.der().into_owned()),
                )
                .chain(self.certificate_of(path.anchor(), now).cloned())
                .collect::<Vec<_>>()
        };
        // The common case, a valid chain, costs one path search.
        let fit = parsed.verify_for_usage(
            algorithms,
            anchors,
            intermediates,
            at,
            purpose.key_usage(),
            None,
            None,
        );
        let fit_error = match fit {
            Ok(path) => return Some(path_of(path)),
            Err(err) => err,
        };
        let any_purpose = parsed.verify_for_usage(
            algorithms,
            anchors,
            intermediates,
            at,
            AnyPurpose,
            None,
            None,
        );
        match any_purpose {
            Ok(path) => {
                // Trusted, but not for this purpose.
                found.add(SslErrorCode::InvalidPurpose, Some(leaf));
                Some(path_of(path))
            }
            Err(err) => {
                found.add_issuer(issuer_error(end_entity, intermediates, Some(&err)), leaf);
                if is_purpose_error(&fit_error) || is_purpose_error(&err) {
                    found.add(SslErrorCode::InvalidPurpose, Some(leaf));
                }
                None
            }
        }
    }
}

/// Errors found so far: issuer errors first, no duplicates.
#[derive(Default)]
struct Findings {
    issuer: Vec<SslError>,
    other: Vec<SslError>,
}

impl Findings {
    fn add_issuer(&mut self, code: SslErrorCode, cert: &CertificateDer<'static>) {
        self.issuer.push(SslError::new(code, Some(cert.clone())));
    }

    fn add(&mut self, code: SslErrorCode, cert: Option<&CertificateDer<'static>>) {
        let cert = cert.cloned();
        if !self
            .other
            .iter()
            .any(|e| e.code == code && e.certificate == cert)
        {
            self.other.push(SslError::new(code, cert));
        }
    }

    fn into_errors(mut self) -> Vec<SslError> {
        self.issuer.append(&mut self.other);
        self.issuer
    }
}

/// Accepts any extended key usage: to ask whether a chain is trusted at
/// all, apart from what it may be used for.
struct AnyPurpose;

impl ExtendedKeyUsageValidator for AnyPurpose {
    fn validate(&self, _: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

fn is_purpose_error(err: &webpki::Error) -> bool {
    matches!(
        err,
        webpki::Error::RequiredEkuNotFoundContext(_) | webpki::Error::CaUsedAsEndEntity
    )
}

/// The issuer error of a chain with no trusted path. An untrusted chain
/// always gets one, whatever else is wrong with it: Qt's code for why no
/// path was found, or UNABLE_TO_GET_LOCAL_ISSUER_CERTIFICATE when the
/// search stopped at something else (the leaf itself, for instance).
fn issuer_error(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    why: Option<&webpki::Error>,
) -> SslErrorCode {
    use webpki::Error as E;
    if is_self_signed(end_entity) {
        return SslErrorCode::SelfSignedCertificate;
    }
    match why {
        Some(E::UnknownIssuer) if intermediates.iter().any(|c| is_self_signed(c)) => {
            SslErrorCode::SelfSignedCertificateInChain
        }
        Some(E::InvalidSignatureForPublicKey) => SslErrorCode::CertificateSignatureFailed,
        Some(E::PathLenConstraintViolated | E::MaximumPathDepthExceeded) => {
            SslErrorCode::PathLengthExceeded
        }
        Some(E::EndEntityUsedAsCa) => SslErrorCode::InvalidCaCertificate,
        _ => SslErrorCode::UnableToGetLocalIssuerCertificate,
    }
}

/// A moment at which the presented certificates are all within their
/// validity periods (`now` when it is one), so that the search for a
/// trusted path is not cut short by a date. If no such moment exists (the
/// peer sent certificates that never overlapped), a moment within the
/// leaf's period.
fn moment_of_validity(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> UnixTime {
    let now_secs = now.as_secs() as i64;
    let Some((leaf_from, leaf_until)) = validity(end_entity) else {
        return now;
    };
    let (mut from, mut until) = (leaf_from, leaf_until);
    for cert in intermediates {
        if let Some((f, u)) = validity(cert) {
            from = from.max(f);
            until = until.min(u);
        }
    }
    if from > until {
        (from, until) = (leaf_from, leaf_until);
    }
    let at = now_secs.clamp(from, until.max(from));
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.max(0) as u64))
}

/// The validity period of a certificate, in seconds since the epoch.
fn validity(cert: &CertificateDer<'_>) -> Option<(i64, i64)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let validity = parsed.validity();
    Some((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// The rustls error that picks the alert for refusing a chain with these
/// errors (the first one decides, as the first one is the most serious).
pub(crate) fn refusal(errors: &[SslError]) -> rustls::Error {
    use SslErrorCode as S;
    let cause = match errors.first().map(|e| e.code) {
        Some(S::CertificateExpired) => CertificateError::Expired,
        Some(S::CertificateNotYetValid) => CertificateError::NotValidYet,
        Some(S::InvalidPurpose) => CertificateError::InvalidPurpose,
        Some(S::HostNameMismatch) => CertificateError::NotValidForName,
        Some(S::CertificateSignatureFailed) => CertificateError::BadSignature,
        Some(S::NoPeerCertificate) => return rustls::Error::NoCertificatesPresented,
        Some(S::Unspecified) => CertificateError::BadEncoding,
        _ => CertificateError::UnknownIssuer,
    };
    rustls::Error::InvalidCertificate(cause)
}

/// Whether the certificate is valid for `name`: its subject alternative
/// names (webpki's check), or, when it has no DNS names, its common name
/// (Qt's fallback, for certificates made without SANs).
pub(crate) fn matches_host_name(cert: &CertificateDer<'_>, name: &ServerName<'_>) -> bool {
    if EndEntityCert::try_from(cert).is_ok_and(|c| c.verify_is_valid_for_subject_name(name).is_ok())
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
                // As Qt: the wildcard stands for one whole label, not an
                // internationalized one, below at least two more labels
                // (`*.com` matches nothing).
                Some(suffix) => {
                    suffix.contains('.')
                        && wanted.split_once('.').is_some_and(|(label, rest)| {
                            !label.is_empty() && !label.starts_with("xn--") && rest == suffix
                        })
                }
                None => cn == wanted,
            }
        });
    matched
}

/// Whether the certificate's extended key usage (if it has one) allows
/// `purpose`.
fn extended_key_usage_allows(cert: &CertificateDer<'_>, purpose: Purpose) -> bool {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return false;
    };
    match parsed.extended_key_usage() {
        Ok(None) => true,
        Ok(Some(usage)) => {
            let usage = &usage.value;
            usage.any
                || match purpose {
                    Purpose::TlsServer => usage.server_auth,
                    Purpose::TlsClient => usage.client_auth,
                }
        }
        Err(_) => false,
    }
}

fn is_self_signed(cert: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(cert.as_ref())
        .map(|(_, c)| c.issuer().as_raw() == c.subject().as_raw())
        .unwrap_or(false)
}

/// Certificate errors the application accepts up front
/// (`QSslSocket::ignoreSslErrors(list)`): each a code, for any certificate
/// or for one certificate only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IgnoredErrors(Vec<IgnoredError>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct IgnoredError {
    code: SslErrorCode,
    /// `None`: any certificate.
    certificate: Option<Arc<[u8]>>,
}

impl IgnoredErrors {
    pub(crate) fn any_certificate(codes: &[SslErrorCode]) -> Self {
        IgnoredErrors(
            codes
                .iter()
                .map(|&code| IgnoredError {
                    code,
                    certificate: None,
                })
                .collect(),
        )
    }

    pub(crate) fn add(&mut self, code: SslErrorCode, certificate: Option<&[u8]>) {
        let entry = IgnoredError {
            code,
            certificate: certificate.map(Arc::from),
        };
        if !self.0.contains(&entry) {
            self.0.push(entry);
        }
    }

    /// The codes ignored for any certificate.
    pub(crate) fn codes_for_any_certificate(&self) -> Vec<SslErrorCode> {
        self.0
            .iter()
            .filter(|e| e.certificate.is_none())
            .map(|e| e.code)
            .collect()
    }

    /// Whether every one of `errors` is ignored (and there is at least one
    /// ignore: no list accepts nothing).
    pub(crate) fn cover(&self, errors: &[SslError]) -> bool {
        !self.0.is_empty() && errors.iter().all(|error| self.covers(error))
    }

    fn covers(&self, error: &SslError) -> bool {
        self.0.iter().any(|ignored| {
            ignored.code == error.code
                && match (&ignored.certificate, &error.certificate) {
                    (None, _) => true,
                    (Some(wanted), Some(actual)) => wanted.as_ref() == actual.as_ref(),
                    (Some(_), None) => false,
                }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };

    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        der: CertificateDer<'static>,
    }

    fn ca(valid_until_2001: bool) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Test Root");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        if valid_until_2001 {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().clone();
        Ca { params, key, der }
    }

    fn server_leaf(
        issuer: &Ca,
        names: Vec<String>,
        common_name: Option<&str>,
    ) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(names).unwrap();
        if let Some(cn) = common_name {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        params
            .signed_by(&key, &Issuer::from_params(&issuer.params, &issuer.key))
            .unwrap()
            .der()
            .clone()
    }

    fn trusting(anchors: &[CertificateDer<'static>]) -> TrustStore {
        let mut roots = RootCertStore::empty();
        for anchor in anchors {
            roots.add(anchor.clone()).unwrap();
        }
        TrustStore::new(roots, anchors, anchors.to_vec())
    }

    fn codes_for(
        store: &TrustStore,
        leaf: &CertificateDer<'static>,
        host: &str,
    ) -> Vec<SslErrorCode> {
        let name = ServerName::try_from(host.to_string()).unwrap();
        store
            .examine(leaf, &[], UnixTime::now(), Purpose::TlsServer, Some(&name))
            .iter()
            .map(|e| e.code)
            .collect()
    }

    #[test]
    fn an_expired_trusted_ca_is_reported_and_named() {
        let root = ca(true);
        let leaf = server_leaf(&root, vec!["localhost".into()], None);
        let store = trusting(std::slice::from_ref(&root.der));
        let name = ServerName::try_from("localhost").unwrap();
        let errors = store.examine(&leaf, &[], UnixTime::now(), Purpose::TlsServer, Some(&name));
        let codes: Vec<_> = errors.iter().map(|e| e.code).collect();
        assert_eq!(codes, [SslErrorCode::CertificateExpired]);
        assert_eq!(errors[0].certificate.as_ref(), Some(&root.der));
    }

    /// A root re-issued with the same name and key: the expired copy listed
    /// first must not make a valid path look expired.
    #[test]
    fn a_reissued_root_valid_now_is_preferred_to_its_expired_copy() {
        let expired = ca(true);
        let mut params = expired.params.clone();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2090, 1, 1);
        let reissued = params.self_signed(&expired.key).unwrap().der().clone();
        let leaf = server_leaf(&expired, vec!["localhost".into()], None);
        for anchors in [
            [expired.der.clone(), reissued.clone()],
            [reissued.clone(), expired.der.clone()],
        ] {
            let mut roots = RootCertStore::empty();
            roots.add(anchors[0].clone()).unwrap();
            let store = TrustStore::new(roots, &anchors, Vec::new());
            assert_eq!(codes_for(&store, &leaf, "localhost"), []);
        }
    }

    #[test]
    fn a_pinned_certificate_is_still_checked_for_its_purpose() {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let client_only = params.self_signed(&key).unwrap().der().clone();
        let store = trusting(std::slice::from_ref(&client_only));
        assert_eq!(
            codes_for(&store, &client_only, "localhost"),
            [SslErrorCode::InvalidPurpose]
        );
    }

    #[test]
    fn a_common_name_wildcard_needs_two_labels_below_it() {
        let root = ca(false);
        let store = trusting(std::slice::from_ref(&root.der));
        let top_level = server_leaf(&root, vec![], Some("*.com"));
        assert_eq!(
            codes_for(&store, &top_level, "victim.com"),
            [SslErrorCode::HostNameMismatch]
        );
        let proper = server_leaf(&root, vec![], Some("*.example.com"));
        assert_eq!(codes_for(&store, &proper, "www.example.com"), []);
        assert_eq!(
            codes_for(&store, &proper, "xn--bcher-kva.example.com"),
            [SslErrorCode::HostNameMismatch]
        );
    }
}
