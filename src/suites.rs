//! Cipher suites and key exchange groups chosen by name, as Qt's
//! `QSslConfiguration::setCiphers` and `setEllipticCurves` choose them:
//! IANA names, `:`-separated, most preferred first. A configuration that
//! chooses either gets a crypto provider of its own: the library's, with
//! only those suites or groups, in that order.

use std::sync::Arc;

use rustls::crypto::aws_lc_rs::{ALL_CIPHER_SUITES, ALL_KX_GROUPS};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::{ProtocolVersion, SignatureAlgorithm, SupportedCipherSuite, SupportedProtocolVersion};

use crate::config::crypto_provider;
use crate::error::{Error, Result};

/// A key exchange group of the library's provider.
pub(crate) type KxGroup = &'static dyn SupportedKxGroup;

/// Other names people use for the groups (OpenSSL's and NIST's).
const GROUP_ALIASES: [(&str, &str); 3] = [
    ("P-256", "secp256r1"),
    ("prime256v1", "secp256r1"),
    ("P-384", "secp384r1"),
];

/// The IANA name of a suite: `TLS13_AES_128_GCM_SHA256` (rustls) ->
/// `TLS_AES_128_GCM_SHA256`; the TLS 1.2 names are already IANA's.
pub(crate) fn iana_name(suite: rustls::CipherSuite) -> String {
    let name = suite
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{suite:?}"));
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

/// The IANA name of one of the provider's suites.
pub(crate) fn cipher_suite_name(suite: &SupportedCipherSuite) -> String {
    iana_name(suite.suite())
}

/// The IANA name of a group ("X25519", "secp256r1").
pub(crate) fn group_name(group: KxGroup) -> String {
    format!("{:?}", group.name())
}

/// The names in a `:`-separated list; an empty list or an empty name in it
/// is refused.
fn names_in<'a>(list: &'a str, what: &str) -> Result<Vec<&'a str>> {
    let names: Vec<&str> = list.split(':').map(str::trim).collect();
    if list.trim().is_empty() {
        return Err(Error::invalid_argument(format!(
            "the list of {what} is empty (name at least one)"
        )));
    }
    if names.iter().any(|name| name.is_empty()) {
        return Err(Error::invalid_argument(format!(
            "the list of {what} '{list}' has an empty name (two ':' in a row, or one at an end)"
        )));
    }
    Ok(names)
}

/// The suites named in `list`, in its order (a repeated name counts once).
pub(crate) fn parse_cipher_suites(list: &str) -> Result<Vec<SupportedCipherSuite>> {
    let mut suites: Vec<SupportedCipherSuite> = Vec::new();
    for name in names_in(list, "cipher suites")? {
        let suite = ALL_CIPHER_SUITES
            .iter()
            .find(|s| cipher_suite_name(s).eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let known: Vec<String> = ALL_CIPHER_SUITES.iter().map(cipher_suite_name).collect();
                Error::invalid_argument(format!(
                    "'{name}' is not a cipher suite this library supports (IANA names: {})",
                    known.join(", ")
                ))
            })?;
        if !suites.iter().any(|s| s.suite() == suite.suite()) {
            suites.push(*suite);
        }
    }
    Ok(suites)
}

/// The groups named in `list`, in its order (a repeated name counts once).
pub(crate) fn parse_groups(list: &str) -> Result<Vec<KxGroup>> {
    let mut groups: Vec<KxGroup> = Vec::new();
    for name in names_in(list, "groups")? {
        let canonical = GROUP_ALIASES
            .iter()
            .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
            .map_or(name, |(_, canonical)| canonical);
        let group = ALL_KX_GROUPS
            .iter()
            .find(|g| group_name(**g).eq_ignore_ascii_case(canonical))
            .ok_or_else(|| {
                let known: Vec<String> = ALL_KX_GROUPS.iter().map(|g| group_name(*g)).collect();
                Error::invalid_argument(format!(
                    "'{name}' is not a key exchange group this library supports (names: {}; \
                     also P-256, prime256v1, P-384)",
                    known.join(", ")
                ))
            })?;
        if !groups.iter().any(|g| g.name() == group.name()) {
            groups.push(*group);
        }
    }
    Ok(groups)
}

/// The provider for a configuration's suites and groups (`None`: the
/// library's own), checked against the protocol versions it allows: at
/// least one of them must have a suite and a group, or no handshake could
/// ever complete.
pub(crate) fn provider_for(
    suites: Option<&[SupportedCipherSuite]>,
    groups: Option<&[KxGroup]>,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<Arc<CryptoProvider>> {
    let library = crypto_provider();
    if suites.is_none() && groups.is_none() {
        return Ok(library.clone());
    }
    let mut provider = CryptoProvider::clone(library);
    if let Some(suites) = suites {
        provider.cipher_suites = suites.to_vec();
    }
    if let Some(groups) = groups {
        provider.kx_groups = groups.to_vec();
    }
    let version_name = |v: ProtocolVersion| match v {
        ProtocolVersion::TLSv1_3 => "TLS 1.3".to_string(),
        ProtocolVersion::TLSv1_2 => "TLS 1.2".to_string(),
        other => format!("{other:?}"),
    };
    let allowed: Vec<String> = versions.iter().map(|v| version_name(v.version)).collect();
    let with_suites: Vec<ProtocolVersion> = versions
        .iter()
        .map(|v| v.version)
        .filter(|v| {
            provider
                .cipher_suites
                .iter()
                .any(|s| s.version().version == *v)
        })
        .collect();
    if with_suites.is_empty() {
        let names: Vec<String> = provider
            .cipher_suites
            .iter()
            .map(cipher_suite_name)
            .collect();
        return Err(Error::invalid_argument(format!(
            "none of the cipher suites {} is for {}, the protocol versions the configuration allows",
            names.join(":"),
            allowed.join(" or ")
        )));
    }
    let usable = with_suites
        .iter()
        .any(|v| provider.kx_groups.iter().any(|g| g.usable_for_version(*v)));
    if !usable {
        let names: Vec<String> = provider.kx_groups.iter().map(|g| group_name(*g)).collect();
        let versions: Vec<String> = with_suites.into_iter().map(version_name).collect();
        return Err(Error::invalid_argument(format!(
            "none of the groups {} can be used with {}, the protocol versions the configuration \
             allows and has cipher suites for",
            names.join(":"),
            versions.join(" or ")
        )));
    }
    Ok(Arc::new(provider))
}

/// Checks that a server with `provider` can serve a certificate whose key
/// is of `algorithm` (`which`: "the default certificate", an SNI name) in
/// one of `versions`. TLS 1.3 suites serve any key; a TLS 1.2 suite serves
/// only keys of its kind (ECDSA or RSA), so chosen suites can leave a key
/// that no handshake could use.
pub(crate) fn check_serves(
    provider: &CryptoProvider,
    versions: &[&'static SupportedProtocolVersion],
    algorithm: SignatureAlgorithm,
    which: &str,
) -> Result<()> {
    let usable = provider.cipher_suites.iter().any(|suite| {
        let version = suite.version().version;
        versions.iter().any(|v| v.version == version)
            && suite.usable_for_signature_algorithm(algorithm)
            && provider
                .kx_groups
                .iter()
                .any(|g| g.usable_for_version(version))
    });
    if usable {
        return Ok(());
    }
    let names: Vec<String> = provider
        .cipher_suites
        .iter()
        .map(cipher_suite_name)
        .collect();
    Err(Error::invalid_argument(format!(
        "none of the cipher suites {} can serve {which}, whose key is {algorithm:?}, \
         with the protocol versions and groups the configuration allows",
        names.join(":")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::version::{TLS12, TLS13};

    #[test]
    fn names_are_iana_names_in_the_given_order() {
        let suites =
            parse_cipher_suites("TLS_CHACHA20_POLY1305_SHA256:tls_aes_128_gcm_sha256").unwrap();
        let names: Vec<String> = suites.iter().map(cipher_suite_name).collect();
        assert_eq!(
            names,
            ["TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"]
        );
        let groups = parse_groups("P-384:x25519:prime256v1:secp256r1").unwrap();
        let names: Vec<String> = groups.iter().map(|g| group_name(*g)).collect();
        assert_eq!(names, ["secp384r1", "X25519", "secp256r1"]);
    }

    #[test]
    fn unknown_and_empty_names_are_refused_by_name() {
        for (list, named) in [
            (
                "TLS_AES_128_GCM_SHA256:TLS_RSA_WITH_RC4_128_MD5",
                "'TLS_RSA_WITH_RC4_128_MD5'",
            ),
            (
                "ECDHE-RSA-AES128-GCM-SHA256",
                "'ECDHE-RSA-AES128-GCM-SHA256'",
            ),
            ("", "empty"),
            ("TLS_AES_128_GCM_SHA256::", "empty name"),
        ] {
            let err = parse_cipher_suites(list).unwrap_err();
            assert!(err.message().contains(named), "{}", err.message());
        }
        let err = parse_groups("X25519:brainpoolP256r1").unwrap_err();
        assert!(
            err.message().contains("'brainpoolP256r1'"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn a_provider_needs_a_suite_and_a_group_for_an_allowed_version() {
        let tls12_only = parse_cipher_suites("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256").unwrap();
        let err = provider_for(Some(&tls12_only), None, &[&TLS13]).unwrap_err();
        assert!(err.message().contains("TLS 1.3"), "{}", err.message());
        provider_for(Some(&tls12_only), None, &[&TLS13, &TLS12]).unwrap();
        let pq_only = parse_groups("MLKEM768").unwrap();
        let err = provider_for(Some(&tls12_only), Some(&pq_only), &[&TLS13, &TLS12]).unwrap_err();
        assert!(err.message().contains("MLKEM768"), "{}", err.message());
    }
}
