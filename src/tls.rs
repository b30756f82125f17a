//! The TLS material of a server: built from a [`TlsConfig`] by
//! `sslserver_set_config`, shared by every connection accepted while it is
//! current (so replacing it rotates certificates without touching
//! connections already accepted).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedProtocolVersion};

use crate::config::{protocol_versions, TlsConfig};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::events::EventSink;
use crate::sni::CertificateByName;
use crate::suites;
use crate::verify::{ClientAuthPolicy, PeerVerifier};

/// How many TLS 1.2 session IDs the server remembers for resumption.
const SESSION_CACHE_SIZE: usize = 1024;

pub(crate) struct ServerTls {
    certificate: Arc<CertificateByName>,
    versions: &'static [&'static SupportedProtocolVersion],
    /// The library's provider, or one with the configured suites and groups.
    provider: Arc<CryptoProvider>,
    /// Chosen suites are chosen in the server's order, as Qt's servers do
    /// (it is the order the application asked for).
    server_order: bool,
    key_log: Option<Arc<dyn rustls::KeyLog>>,
    alpn_protocols: Vec<Vec<u8>>,
    client_auth: Option<Arc<ClientAuthPolicy>>,
    /// `None`: no tickets (session tickets turned off).
    ticketer: Option<Arc<dyn ProducesTickets>>,
    session_storage: Arc<dyn StoresServerSessions>,
    /// The config every connection shares when no client certificate is requested.
    shared: Option<Arc<ServerConfig>>,
}

impl ServerTls {
    pub(crate) fn new(config: &TlsConfig) -> Result<Self> {
        let certified_key = config.certified_key().ok_or_else(|| {
            if config.certificate_chain().is_empty() {
                Error::certificate("the configuration has no certificate")
            } else {
                Error::private_key("the configuration has no private key")
            }
        })?;
        let ticketer: Option<Arc<dyn ProducesTickets>> = match config.ticket_keys() {
            _ if !config.session_tickets() => None,
            // The same files give the same keys, in this process and every
            // other: tickets outlive this ServerTls and cross processes.
            Some(keys) => Some(keys.clone()),
            None => Some(rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| {
                Error::new(
                    crate::ErrorKind::Tls,
                    format!("cannot create a session ticketer: {e}"),
                )
            })?),
        };
        let versions = protocol_versions(config.protocol())?;
        let provider = config.provider()?;
        if config.ciphers_chosen() {
            suites::check_serves(
                &provider,
                versions,
                certified_key.key.algorithm(),
                "the default certificate",
            )?;
            for (name, key) in config.sni_certificates().entries() {
                let which = format!("the SNI certificate for '{name}'");
                suites::check_serves(&provider, versions, key.key.algorithm(), &which)?;
            }
        }
        let mut tls = ServerTls {
            certificate: Arc::new(CertificateByName {
                default: Arc::new(CertifiedKey {
                    ocsp: config.ocsp_response().map(<[u8]>::to_vec),
                    ..(*certified_key).clone()
                }),
                by_name: config.sni_certificates().clone(),
            }),
            versions,
            provider,
            server_order: config.ciphers_chosen(),
            key_log: config.key_log(),
            alpn_protocols: config.alpn_protocols().to_vec(),
            client_auth: ClientAuthPolicy::new(config)?,
            ticketer,
            session_storage: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
            shared: None,
        };
        if tls.client_auth.is_none() {
            tls.shared = Some(Arc::new(tls.build(None)?));
        }
        Ok(tls)
    }

    pub(crate) fn client_auth(&self) -> Option<&ClientAuthPolicy> {
        self.client_auth.as_deref()
    }

    /// The rustls config for one connection's handshake.
    pub(crate) fn for_connection(
        &self,
        connection: &Arc<Connection>,
        events: &EventSink,
    ) -> Result<Arc<ServerConfig>> {
        match (&self.shared, &self.client_auth) {
            (Some(shared), _) => Ok(shared.clone()),
            (None, Some(policy)) => {
                let verifier = PeerVerifier::new(policy.clone(), connection, events);
                Ok(Arc::new(self.build(Some(Arc::new(verifier)))?))
            }
            (None, None) => unreachable!("ServerTls::new builds the shared config"),
        }
    }

    fn build(&self, verifier: Option<Arc<dyn ClientCertVerifier>>) -> Result<ServerConfig> {
        let builder = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(self.versions)
            .map_err(|e| {
                Error::new(
                    crate::ErrorKind::Tls,
                    format!("unusable protocol versions: {e}"),
                )
            })?;
        let builder = match verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(self.certificate.clone());
        config.alpn_protocols = self.alpn_protocols.clone();
        config.ignore_client_order = self.server_order;
        if let Some(key_log) = &self.key_log {
            config.key_log = key_log.clone();
        }
        match &self.ticketer {
            Some(ticketer) => config.ticketer = ticketer.clone(),
            // Without a ticketer rustls would still send TLS 1.3 tickets
            // naming sessions in its cache; off means none at all. TLS 1.2
            // clients still resume by session ID from the cache.
            None => config.send_tls13_tickets = 0,
        }
        config.session_storage = self.session_storage.clone();
        Ok(config)
    }
}
