//! Certificates chosen by the server name a client asks for (SNI), for a
//! server that answers for several names. The configuration's own chain
//! is the default: it answers clients that send no name or a name no
//! entry matches.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use rustls::pki_types::DnsName;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::{Error, Result};

/// A name an SNI certificate is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ServerNamePattern {
    /// Exactly this name (lower case, no trailing dot).
    Exact(String),
    /// `*.<base>`: any one label in front of `base`.
    Wildcard(String),
}

impl ServerNamePattern {
    /// Checks a configured name: a DNS name, or `*.` and a DNS name of at
    /// least two labels. Case does not matter; a trailing dot is dropped.
    pub(crate) fn parse(name: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid_argument(format!("'{name}' is not a server name for SNI: {why}"))
        };
        let lower = name.to_ascii_lowercase();
        let lower = lower.strip_suffix('.').unwrap_or(&lower);
        if lower.is_empty() {
            return Err(bad("it is empty"));
        }
        let (wildcard, base) = match lower.strip_prefix("*.") {
            Some(base) => (true, base),
            None => (false, lower),
        };
        if base.contains('*') {
            return Err(bad(
                "a wildcard is allowed only as the whole leftmost label (\"*.example.com\")",
            ));
        }
        if base.parse::<IpAddr>().is_ok() {
            return Err(bad("clients send host names in SNI, never addresses"));
        }
        if DnsName::try_from(base).is_err() {
            return Err(bad("it is not a valid DNS name"));
        }
        if !wildcard {
            return Ok(ServerNamePattern::Exact(base.to_string()));
        }
        if !base.contains('.') {
            return Err(bad(
                "a wildcard needs at least two labels after \"*.\" (\"*.example.com\", not \"*.com\")",
            ));
        }
        Ok(ServerNamePattern::Wildcard(base.to_string()))
    }
}

/// The SNI certificates of a configuration.
#[derive(Clone, Debug, Default)]
pub(crate) struct SniCertificates {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the name after "*.".
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl SniCertificates {
    /// Adds (or replaces) the certificate for `pattern`.
    pub(crate) fn insert(&mut self, pattern: ServerNamePattern, key: Arc<CertifiedKey>) {
        match pattern {
            ServerNamePattern::Exact(name) => self.exact.insert(name, key),
            ServerNamePattern::Wildcard(base) => self.wildcard.insert(base, key),
        };
    }

    /// Every entry, with the name it was added for ("*.example.com").
    pub(crate) fn entries(&self) -> impl Iterator<Item = (String, &Arc<CertifiedKey>)> {
        let exact = self.exact.iter().map(|(name, key)| (name.clone(), key));
        let wildcard = self
            .wildcard
            .iter()
            .map(|(base, key)| (format!("*.{base}"), key));
        exact.chain(wildcard)
    }

    /// The certificate for the name a client sent: an exact entry first,
    /// else a wildcard entry for the name without its first label.
    pub(crate) fn find(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        // Most servers have no SNI entries: no work per handshake for them.
        if self.exact.is_empty() && self.wildcard.is_empty() {
            return None;
        }
        let name = name.to_ascii_lowercase();
        let name = name.strip_suffix('.').unwrap_or(&name);
        if let Some(key) = self.exact.get(name) {
            return Some(key);
        }
        let (first, rest) = name.split_once('.')?;
        if first.is_empty() {
            return None;
        }
        self.wildcard.get(rest)
    }
}

/// Picks the certificate for each handshake: by SNI, else the default.
#[derive(Debug)]
pub(crate) struct CertificateByName {
    pub(crate) default: Arc<CertifiedKey>,
    pub(crate) by_name: SniCertificates,
}

impl ResolvesServerCert for CertificateByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello.server_name().and_then(|name| self.by_name.find(name));
        Some(chosen.unwrap_or(&self.default).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServerNamePattern::*;

    #[test]
    fn names_are_checked_and_normalized() {
        let parse = ServerNamePattern::parse;
        assert_eq!(
            parse("WWW.Example.COM.").unwrap(),
            Exact("www.example.com".into())
        );
        assert_eq!(parse("localhost").unwrap(), Exact("localhost".into()));
        assert_eq!(
            parse("*.Example.com").unwrap(),
            Wildcard("example.com".into())
        );
        for bad in [
            "",
            ".",
            "*",
            "*.",
            "*.com",
            "a.*.com",
            "*a.example.com",
            "**.example.com",
            "*.*.example.com",
            "exa mple.com",
            "127.0.0.1",
            "::1",
            "-bad-.com..",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(
                err.message().contains(&format!("'{bad}'")),
                "{}",
                err.message()
            );
        }
    }
}
