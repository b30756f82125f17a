//! TLS configuration (`QSslConfiguration`): the server's certificate chain and
//! key, the CAs client certificates are checked against, the verification
//! mode, protocol versions and ALPN.
//!
//! Everything is checked when it is loaded, so a mistake shows up at the call
//! that made it, with a message naming the problem, and a failed call leaves
//! the configuration as it was.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::version::{TLS12, TLS13};
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};
use sha2::{Digest, Sha256};

use crate::client::ClientContext;
use crate::error::{Error, Result};
use crate::events::SslError;
use crate::key_log::KeyLogFile;
use crate::sni::{ServerNamePattern, SniCertificates};
use crate::suites::{self, KxGroup};
use crate::tickets::FileTicketer;
use crate::tls::ServerTls;
use crate::trust::IgnoredErrors;
use crate::types::{PeerVerifyMode, Protocol, SslErrorCode};

/// Decides, in client mode, whether to go on despite the server
/// certificate's errors (true = go on).
pub type SslErrorsCallback = Arc<dyn Fn(&[SslError]) -> bool + Send + Sync>;

/// The one crypto provider of the library: aws-lc-rs (see the README for why).
pub fn crypto_provider() -> &'static Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// A TLS configuration, as `sslconfig` exposes it to C.
#[derive(Clone)]
pub struct TlsConfig {
    chain: Vec<CertificateDer<'static>>,
    key: Option<Arc<dyn SigningKey>>,
    ca_certificates: Vec<CertificateDer<'static>>,
    verify_mode: PeerVerifyMode,
    protocol: Protocol,
    alpn_protocols: Vec<Vec<u8>>,
    interrupt_on_error: bool,
    /// Certificate errors accepted up front (`ignoreSslErrors(list)`), of
    /// the server's certificate in client mode and of client certificates
    /// on a server.
    ignored_errors: IgnoredErrors,
    /// Client mode: the application's decision on certificate errors.
    ssl_errors_callback: Option<SslErrorsCallback>,
    /// Client mode: the rustls client config built from this one on first
    /// use, shared by unchanged copies (rustls resumes a session only with
    /// the same verifier and client-certificate objects). Every change
    /// starts a fresh slot.
    client_context: Arc<parking_lot::Mutex<Option<Arc<ClientContext>>>>,
    /// Sockets upgraded as servers (`sslsocket_start_server_encryption`):
    /// the server TLS material built on first use and shared the same way,
    /// so a client resumes its session on the next socket.
    server_tls: Arc<parking_lot::Mutex<Option<Arc<ServerTls>>>>,
    /// Server: the keys of session tickets shared with other processes
    /// (`None`: a random key of each server's own).
    ticket_keys: Option<Arc<FileTicketer>>,
    /// Server: whether to issue session tickets at all.
    session_tickets: bool,
    /// Server: more certificates, chosen by the name a client asks for.
    sni: SniCertificates,
    /// Server: the OCSP response stapled to the default chain. It speaks
    /// for one certificate, so a new chain drops it.
    ocsp_response: Option<Vec<u8>>,
    /// The cipher suites and groups to use, in preference order (`None`:
    /// the library's defaults).
    cipher_suites: Option<Vec<SupportedCipherSuite>>,
    kx_groups: Option<Vec<KxGroup>>,
    /// Where TLS secrets are logged (NSS key log format), if anywhere.
    key_log: Option<Arc<KeyLogFile>>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            chain: Vec::new(),
            key: None,
            ca_certificates: Vec::new(),
            verify_mode: PeerVerifyMode::AutoVerifyPeer,
            protocol: Protocol::SecureProtocols,
            alpn_protocols: Vec::new(),
            interrupt_on_error: false,
            ignored_errors: IgnoredErrors::default(),
            ssl_errors_callback: None,
            client_context: Arc::default(),
            server_tls: Arc::default(),
            ticket_keys: None,
            session_tickets: true,
            sni: SniCertificates::default(),
            ocsp_response: None,
            cipher_suites: None,
            kx_groups: None,
            key_log: None,
        }
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("chain_len", &self.chain.len())
            .field("has_key", &self.key.is_some())
            .field("ca_certificates", &self.ca_certificates.len())
            .field("verify_mode", &self.verify_mode)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the certificate chain (leaf first) from PEM.
    pub fn set_certificate_chain_pem(&mut self, pem: &[u8]) -> Result<()> {
        let chain = parse_certificates(pem)?;
        if let Some(key) = &self.key {
            check_key_matches(&chain, key)?;
        }
        self.changed();
        self.chain = chain;
        self.ocsp_response = None;
        Ok(())
    }

    pub fn set_certificate_chain_file(&mut self, path: &str) -> Result<()> {
        let pem = read_file(path)?;
        self.set_certificate_chain_pem(&pem)
            .map_err(|e| e.context(path))
    }

    /// Sets the private key from PEM: PKCS#8, PKCS#1 (RSA), SEC1 (EC), or
    /// encrypted PKCS#8 with `passphrase`.
    pub fn set_private_key_pem(&mut self, pem: &[u8], passphrase: Option<&str>) -> Result<()> {
        let key = parse_private_key(pem, passphrase)?;
        if !self.chain.is_empty() {
            check_key_matches(&self.chain, &key)?;
        }
        self.changed();
        self.key = Some(key);
        Ok(())
    }

    pub fn set_private_key_file(&mut self, path: &str, passphrase: Option<&str>) -> Result<()> {
        let pem = read_file(path)?;
        self.set_private_key_pem(&pem, passphrase)
            .map_err(|e| e.context(path))
    }

    /// Replaces certificate and key with a fresh self-signed ECDSA P-256
    /// certificate for `names` (DNS names or IP addresses; none = `localhost`).
    pub fn generate_self_signed(&mut self, names: &[String]) -> Result<()> {
        let names = if names.is_empty() {
            vec!["localhost".to_string()]
        } else {
            names.to_vec()
        };
        let invalid = |e: rcgen::Error| {
            Error::invalid_argument(format!("cannot generate a self-signed certificate: {e}"))
        };
        let mut params = rcgen::CertificateParams::new(names.clone()).map_err(invalid)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].clone());
        let key_pair = rcgen::KeyPair::generate().map_err(invalid)?;
        let cert = params.self_signed(&key_pair).map_err(invalid)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
        let key = load_signing_key(key_der)?;
        self.changed();
        self.chain = vec![cert.der().clone()];
        self.key = Some(key);
        self.ocsp_response = None;
        Ok(())
    }

    /// Adds trusted CA certificates for client-certificate verification.
    pub fn add_ca_certificates_pem(&mut self, pem: &[u8]) -> Result<()> {
        let certs = parse_certificates(pem)?;
        self.changed();
        self.ca_certificates.extend(certs);
        Ok(())
    }

    pub fn add_ca_certificates_file(&mut self, path: &str) -> Result<()> {
        let pem = read_file(path)?;
        self.add_ca_certificates_pem(&pem)
            .map_err(|e| e.context(path))
    }

    pub fn set_peer_verify_mode(&mut self, mode: PeerVerifyMode) {
        self.changed();
        self.verify_mode = mode;
    }

    pub fn set_protocol(&mut self, protocol: Protocol) -> Result<()> {
        protocol_versions(protocol)?;
        self.changed();
        self.protocol = protocol;
        Ok(())
    }

    /// Sets the ALPN protocols the server accepts, most preferred first.
    pub fn set_alpn_protocols(&mut self, protocols: &[Vec<u8>]) -> Result<()> {
        if let Some(bad) = protocols.iter().find(|p| p.is_empty() || p.len() > 255) {
            return Err(Error::invalid_argument(format!(
                "ALPN protocol names must be 1 to 255 bytes long (got {} bytes)",
                bad.len()
            )));
        }
        self.changed();
        self.alpn_protocols = protocols.to_vec();
        Ok(())
    }

    pub fn set_handshake_must_interrupt_on_error(&mut self, interrupt: bool) {
        self.interrupt_on_error = interrupt;
    }

    /// Certificate errors to accept without asking, for any certificate.
    /// Replaces every ignore set before (also those bound to a certificate).
    pub fn set_ignored_ssl_errors(&mut self, codes: &[SslErrorCode]) {
        self.changed();
        self.ignored_errors = IgnoredErrors::any_certificate(codes);
    }

    /// Accepts `code` without asking, only for the certificate with the DER
    /// bytes `certificate` (`None`: for any certificate).
    pub fn add_ignored_ssl_error(&mut self, code: SslErrorCode, certificate: Option<&[u8]>) {
        self.changed();
        self.ignored_errors.add(code, certificate);
    }

    /// The codes ignored for any certificate.
    pub fn ignored_ssl_errors(&self) -> Vec<SslErrorCode> {
        self.ignored_errors.codes_for_any_certificate()
    }

    pub(crate) fn ignored_errors(&self) -> &IgnoredErrors {
        &self.ignored_errors
    }

    /// Server: session tickets sealed with the keys in these files, in
    /// nginx's format (see `tickets`); the first key seals new tickets,
    /// every key opens old ones. No paths: back to a random key per server.
    pub fn set_session_ticket_keys_files(&mut self, paths: &[String]) -> Result<()> {
        let keys = if paths.is_empty() {
            None
        } else {
            Some(Arc::new(FileTicketer::from_files(paths)?))
        };
        self.changed();
        self.ticket_keys = keys;
        Ok(())
    }

    pub(crate) fn ticket_keys(&self) -> Option<&Arc<FileTicketer>> {
        self.ticket_keys.as_ref()
    }

    /// Server: serves the chain at `chain_path` (with the key at
    /// `key_path`) to clients asking for `server_name` by SNI: an exact
    /// name or `*.example.com`. Checked as the default chain and key are;
    /// errors name the file. The same name again replaces its entry.
    pub fn add_sni_certificate_files(
        &mut self,
        server_name: &str,
        chain_path: &str,
        key_path: &str,
        passphrase: Option<&str>,
    ) -> Result<()> {
        let pattern = ServerNamePattern::parse(server_name)?;
        let chain =
            parse_certificates(&read_file(chain_path)?).map_err(|e| e.context(chain_path))?;
        let key = parse_private_key(&read_file(key_path)?, passphrase)
            .map_err(|e| e.context(key_path))?;
        check_key_matches(&chain, &key)
            .map_err(|e| e.context(format!("{chain_path} and {key_path}")))?;
        self.changed();
        self.sni
            .insert(pattern, Arc::new(CertifiedKey::new(chain, key)));
        Ok(())
    }

    pub(crate) fn sni_certificates(&self) -> &SniCertificates {
        &self.sni
    }

    /// Server: the DER OCSP response to staple to the default chain (empty:
    /// none). Set it after the chain: setting a chain drops it.
    pub fn set_ocsp_response(&mut self, der: &[u8]) -> Result<()> {
        let response = if der.is_empty() {
            None
        } else {
            crate::ocsp::check_response(der)?;
            Some(der.to_vec())
        };
        self.changed();
        self.ocsp_response = response;
        Ok(())
    }

    pub fn ocsp_response(&self) -> Option<&[u8]> {
        self.ocsp_response.as_deref()
    }

    /// The cipher suites to use, by IANA name, `:`-separated, most
    /// preferred first ("TLS_AES_128_GCM_SHA256:TLS_ECDHE_ECDSA_WITH_...").
    pub fn set_ciphers(&mut self, names: &str) -> Result<()> {
        let suites = suites::parse_cipher_suites(names)?;
        self.changed();
        self.cipher_suites = Some(suites);
        Ok(())
    }

    /// The key exchange groups to use, `:`-separated, most preferred first
    /// ("X25519:secp256r1"; P-256, prime256v1 and P-384 are accepted too).
    pub fn set_groups(&mut self, names: &str) -> Result<()> {
        let groups = suites::parse_groups(names)?;
        self.changed();
        self.kx_groups = Some(groups);
        Ok(())
    }

    /// Logs the TLS secrets of every connection to `path` in the NSS key
    /// log format, appending (the file is created with mode 0600). `None`
    /// or "": no key log.
    pub fn set_key_log_file(&mut self, path: Option<&str>) -> Result<()> {
        let key_log = match path.filter(|p| !p.is_empty()) {
            Some(path) => Some(Arc::new(KeyLogFile::open(path)?)),
            None => None,
        };
        self.changed();
        self.key_log = key_log;
        Ok(())
    }

    pub(crate) fn key_log(&self) -> Option<Arc<dyn rustls::KeyLog>> {
        self.key_log
            .clone()
            .map(|log| log as Arc<dyn rustls::KeyLog>)
    }

    /// Whether the cipher suites were chosen (their order is then the
    /// server's preference, as in Qt).
    pub(crate) fn ciphers_chosen(&self) -> bool {
        self.cipher_suites.is_some()
    }

    /// The IANA names of the cipher suites in use, most preferred first.
    pub fn ciphers(&self) -> Vec<String> {
        self.cipher_suites
            .as_deref()
            .unwrap_or(&crypto_provider().cipher_suites)
            .iter()
            .map(suites::cipher_suite_name)
            .collect()
    }

    /// The names of the key exchange groups in use, most preferred first.
    pub fn groups(&self) -> Vec<String> {
        self.kx_groups
            .as_deref()
            .unwrap_or(&crypto_provider().kx_groups)
            .iter()
            .map(|g| suites::group_name(*g))
            .collect()
    }

    /// The crypto provider for this configuration's suites, groups and
    /// protocol versions; fails if they leave no version usable.
    pub(crate) fn provider(&self) -> Result<Arc<CryptoProvider>> {
        suites::provider_for(
            self.cipher_suites.as_deref(),
            self.kx_groups.as_deref(),
            protocol_versions(self.protocol)?,
        )
    }

    /// Server: whether to issue session tickets (default true).
    pub fn set_session_tickets(&mut self, enabled: bool) {
        self.changed();
        self.session_tickets = enabled;
    }

    pub fn session_tickets(&self) -> bool {
        self.session_tickets
    }

    /// Client mode: asked about server-certificate errors not ignored up front.
    pub fn set_ssl_errors_callback(&mut self, callback: Option<SslErrorsCallback>) {
        self.changed();
        self.ssl_errors_callback = callback;
    }

    pub fn ssl_errors_callback(&self) -> Option<SslErrorsCallback> {
        self.ssl_errors_callback.clone()
    }

    /// The client context slot (see the field).
    pub(crate) fn client_context(&self) -> &parking_lot::Mutex<Option<Arc<ClientContext>>> {
        &self.client_context
    }

    /// The server TLS material of this configuration, for upgrading
    /// sockets; built on first use and shared by unchanged copies.
    pub(crate) fn server_tls(&self) -> Result<Arc<ServerTls>> {
        let mut slot = self.server_tls.lock();
        if let Some(tls) = slot.as_ref() {
            return Ok(tls.clone());
        }
        let tls = Arc::new(ServerTls::new(self)?);
        *slot = Some(tls.clone());
        Ok(tls)
    }

    /// Every change invalidates what was built from the old state.
    fn changed(&mut self) {
        self.client_context = Arc::default();
        self.server_tls = Arc::default();
    }

    pub fn certificate_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub fn ca_certificates(&self) -> &[CertificateDer<'static>] {
        &self.ca_certificates
    }

    pub fn peer_verify_mode(&self) -> PeerVerifyMode {
        self.verify_mode
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn alpn_protocols(&self) -> &[Vec<u8>] {
        &self.alpn_protocols
    }

    pub fn handshake_must_interrupt_on_error(&self) -> bool {
        self.interrupt_on_error
    }

    /// The certified key (chain + signing key), if both are set.
    pub(crate) fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        let key = self.key.as_ref()?;
        if self.chain.is_empty() {
            return None;
        }
        Some(Arc::new(CertifiedKey::new(self.chain.clone(), key.clone())))
    }

    /// SHA-256 of the leaf certificate as `AB:CD:...`.
    pub fn certificate_fingerprint_sha256(&self) -> Result<String> {
        let leaf = self
            .chain
            .first()
            .ok_or_else(|| Error::invalid_state("no certificate is set"))?;
        let digest = Sha256::digest(leaf.as_ref());
        let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
        Ok(hex.join(":"))
    }

    /// The certificate chain as PEM, leaf first.
    pub fn certificate_chain_pem(&self) -> Result<String> {
        if self.chain.is_empty() {
            return Err(Error::invalid_state("no certificate is set"));
        }
        let mut out = String::new();
        for cert in &self.chain {
            let block = pkcs8::der::pem::encode_string(
                "CERTIFICATE",
                pkcs8::der::pem::LineEnding::LF,
                cert.as_ref(),
            )
            .map_err(|e| Error::certificate(format!("cannot encode the certificate: {e}")))?;
            out.push_str(&block);
        }
        Ok(out)
    }
}

/// The protocol versions rustls should offer for a `QSsl::SslProtocol`.
pub(crate) fn protocol_versions(
    protocol: Protocol,
) -> Result<&'static [&'static SupportedProtocolVersion]> {
    static BOTH: [&SupportedProtocolVersion; 2] = [&TLS13, &TLS12];
    static ONLY_12: [&SupportedProtocolVersion; 1] = [&TLS12];
    static ONLY_13: [&SupportedProtocolVersion; 1] = [&TLS13];
    use Protocol::*;
    match protocol {
        Any | SecureProtocols | TlsV1_2OrLater => Ok(&BOTH),
        TlsV1_2 => Ok(&ONLY_12),
        TlsV1_3 | TlsV1_3OrLater => Ok(&ONLY_13),
        TlsV1_0 | TlsV1_1 | TlsV1_0OrLater | TlsV1_1OrLater => Err(Error::new(
            crate::ErrorKind::Unsupported,
            "TLS 1.0 and 1.1 are not supported (rustls implements TLS 1.2 and 1.3 only)",
        )),
        DtlsV1_0 | DtlsV1_0OrLater | DtlsV1_2 | DtlsV1_2OrLater => Err(Error::new(
            crate::ErrorKind::Unsupported,
            "DTLS is not available on a TLS server",
        )),
        Unknown => Err(Error::invalid_argument("UNKNOWN is not a protocol to use")),
    }
}

fn read_file(path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::file(path, &e))
}

fn is_blank(input: &[u8]) -> bool {
    input.iter().all(u8::is_ascii_whitespace)
}

fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    if is_blank(pem) {
        return Err(Error::certificate("the certificate input is empty"));
    }
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::certificate(format!("malformed PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(Error::certificate(
            "no PEM certificate found (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    for (index, cert) in certs.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(cert.as_ref()) {
            return Err(Error::certificate(format!(
                "certificate {} is not a valid X.509 certificate: {e}",
                index + 1
            )));
        }
    }
    Ok(certs)
}

fn parse_private_key(pem_bytes: &[u8], passphrase: Option<&str>) -> Result<Arc<dyn SigningKey>> {
    if is_blank(pem_bytes) {
        return Err(Error::private_key("the private key input is empty"));
    }
    let text = String::from_utf8_lossy(pem_bytes);
    let der = if let Some(block) = pem_block(&text, "ENCRYPTED PRIVATE KEY") {
        decrypt_pkcs8(block, passphrase)?
    } else if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(Error::private_key(
            "legacy OpenSSL-encrypted PEM keys are not supported; \
             convert the key with `openssl pkcs8 -topk8`",
        ));
    } else {
        PrivateKeyDer::from_pem_slice(pem_bytes).map_err(|e| match e {
            pem::Error::NoItemsFound => Error::private_key(
                "no PEM private key found (expected PRIVATE KEY, RSA PRIVATE KEY, \
                 EC PRIVATE KEY or ENCRYPTED PRIVATE KEY)",
            ),
            other => Error::private_key(format!("malformed PEM private key: {other}")),
        })?
    };
    load_signing_key(der)
}

/// The text of the first `-----BEGIN label-----` ... `-----END label-----` block.
fn pem_block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = start + text[start..].find(&end)? + end.len();
    Some(&text[start..stop])
}

fn decrypt_pkcs8(block: &str, passphrase: Option<&str>) -> Result<PrivateKeyDer<'static>> {
    let Some(passphrase) = passphrase else {
        return Err(Error::private_key(
            "the private key is encrypted and no passphrase was given",
        ));
    };
    let (_, der) = pkcs8::der::pem::decode_vec(block.as_bytes())
        .map_err(|e| Error::private_key(format!("malformed encrypted private key PEM: {e}")))?;
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
        .map_err(|e| Error::private_key(format!("malformed encrypted private key: {e}")))?;
    let document = info.decrypt(passphrase).map_err(|_| {
        Error::private_key("cannot decrypt the private key: wrong passphrase or unsupported cipher")
    })?;
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        document.as_bytes().to_vec(),
    )))
}

fn load_signing_key(der: PrivateKeyDer<'static>) -> Result<Arc<dyn SigningKey>> {
    crypto_provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| Error::private_key(format!("unusable private key: {e}")))
}

fn check_key_matches(chain: &[CertificateDer<'static>], key: &Arc<dyn SigningKey>) -> Result<()> {
    use rustls::InconsistentKeys;
    match CertifiedKey::new(chain.to_vec(), key.clone()).keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => Err(
            Error::private_key("private key does not match the certificate"),
        ),
        Err(e) => Err(Error::certificate(format!(
            "cannot compare the certificate with the private key: {e}"
        ))),
    }
}
