//! The DTLS 1.2 engine: rtc-dtls (webrtc-rs), a sans-IO implementation,
//! driven one peer at a time by the server's UDP thread.
//!
//! Each peer gets its own `rtc_dtls::endpoint::Endpoint`, created only after
//! the stateless cookie check (`cookie.rs`) has passed. rtc-dtls always runs
//! its own cookie exchange, with a random cookie it keeps per connection, so
//! it cannot sit in front of the peer table by itself. To hand it a client
//! whose cookie the server already verified, a new peer's engine is shown the
//! exchange it missed:
//!
//! 1. the verified ClientHello with the cookie taken out and message_seq 0,
//!    i.e. the client's first ClientHello, while the engine's random source
//!    is primed to produce the verified cookie as the engine's own cookie;
//! 2. the engine answers with a HelloVerifyRequest, which is checked to carry
//!    exactly that cookie and is not sent (the client already has it);
//! 3. the real ClientHello (with the cookie), which the engine now accepts as
//!    the answer to its own HelloVerifyRequest.
//!
//! The handshake transcript of DTLS 1.2 leaves out the first ClientHello and
//! the HelloVerifyRequest (RFC 6347 §4.2.1), so both sides hash the same
//! messages. Step 2's check makes this fail closed: an engine version that
//! draws its cookie differently makes every handshake fail with a clear
//! error instead of doing anything unverified.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use parking_lot::Mutex;
use rtc_dtls::cipher_suite::CipherSuiteId;
use rtc_dtls::config::{ConfigBuilder, HandshakeConfig};
use rtc_dtls::crypto_provider::providers::AwsLcRsProvider;
use rtc_dtls::crypto_provider::{CryptoError, RTCCrypto, RTCCryptoProvider, RTCRandom};
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_shared::TransportProtocol;
use rustls::sign::CertifiedKey;

use super::alerts::{explain_alert, plaintext_alert, rewrite_alert, take_alert};
use super::certificate;
use super::cookie::{self, ClientHello, COOKIE_LEN, SECRET_LEN};
use super::events::DtlsAuthentication;
use super::record_check::{sealed_overhead, RecordCheck};
use super::records;
use crate::error::{Error, ErrorKind, Result};

/// Looks up the key for a PSK identity; `None` refuses the client.
pub type PskCallback = Arc<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// The PSK cipher suites offered, in preference order (the client's order
/// decides). OpenSSL's default list has the first.
const PSK_SUITES: [CipherSuiteId; 3] = [
    CipherSuiteId::Tls_Psk_With_Aes_128_Gcm_Sha256,
    CipherSuiteId::Tls_Psk_With_Aes_128_Ccm,
    CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8,
];

/// The certificate suites offered (forward-secret ECDHE with AEAD); the
/// engine keeps those the certificate's key can sign for (ECDSA or RSA).
const CERTIFICATE_SUITES: [CipherSuiteId; 4] = [
    CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Gcm_Sha256,
    CipherSuiteId::Tls_Ecdhe_Rsa_With_Aes_128_Gcm_Sha256,
    CipherSuiteId::Tls_Ecdhe_Ecdsa_With_ChaCha20_Poly1305_Sha256,
    CipherSuiteId::Tls_Ecdhe_Rsa_With_ChaCha20_Poly1305_Sha256,
];

thread_local! {
    static IN_PSK_CALLBACK: Cell<bool> = const { Cell::new(false) };
    /// The identity the PSK callback refused during the current engine
    /// call on this thread (the engine reports a refusal as internal_error;
    /// see `PeerEngine::feed`).
    static REFUSED_IDENTITY: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Whether this thread is inside the application's PSK callback, where the
/// server's lock is held and calls that take it must not be made.
pub(crate) fn in_psk_callback() -> bool {
    IN_PSK_CALLBACK.with(Cell::get)
}

/// Marks this thread as inside the PSK callback until dropped (also when
/// the callback panics).
struct PskCallbackScope;

impl PskCallbackScope {
    fn enter() -> Self {
        IN_PSK_CALLBACK.with(|flag| flag.set(true));
        PskCallbackScope
    }
}

impl Drop for PskCallbackScope {
    fn drop(&mut self) {
        IN_PSK_CALLBACK.with(|flag| flag.set(false));
    }
}

/// The random source of the engine: the provider's, except that one
/// cookie-sized draw can be primed with a cookie (see the module docs).
struct PrimedRandom {
    inner: Arc<dyn RTCCryptoProvider>,
    cookie: Mutex<Option<[u8; COOKIE_LEN]>>,
}

impl RTCRandom for PrimedRandom {
    fn fill(&self, output: &mut [u8]) -> std::result::Result<(), CryptoError> {
        if output.len() == COOKIE_LEN {
            if let Some(cookie) = self.cookie.lock().take() {
                output.copy_from_slice(&cookie);
                return Ok(());
            }
        }
        self.inner.random().fill(output)
    }
}

/// AWS-LC (the library's TLS crypto too) with the primed random source.
struct Provider {
    inner: Arc<dyn RTCCryptoProvider>,
    random: PrimedRandom,
}

impl RTCCryptoProvider for Provider {
    fn name(&self) -> &'static str {
        "libsslserver (aws-lc-rs, primed cookie)"
    }

    fn crypto(&self) -> &dyn RTCCrypto {
        self.inner.crypto()
    }

    fn random(&self) -> &dyn RTCRandom {
        &self.random
    }
}

/// One listening session's engine configuration.
pub(crate) struct EngineConfig {
    provider: Arc<Provider>,
    config: Arc<HandshakeConfig>,
}

impl EngineConfig {
    /// With `psk`, PSK suites are offered: `psk` chooses each client's key
    /// and `hint` is announced in ServerKeyExchange (none when empty). With
    /// `certificate`, ECDHE suites are offered, signed with it. At least one
    /// of the two is needed.
    pub(crate) fn new(
        hint: &[u8],
        psk: Option<PskCallback>,
        certificate: Option<&CertifiedKey>,
    ) -> Result<Self> {
        let inner: Arc<dyn RTCCryptoProvider> = Arc::new(AwsLcRsProvider::new());
        let provider = Arc::new(Provider {
            random: PrimedRandom {
                inner: inner.clone(),
                cookie: Mutex::new(None),
            },
            inner,
        });
        let mut suites = Vec::new();
        let mut builder = ConfigBuilder::default().with_crypto_provider(provider.clone());
        if let Some(psk) = psk {
            suites.extend(PSK_SUITES);
            builder = builder.with_psk(Some(Arc::new(psk_lookup(psk))));
            if !hint.is_empty() {
                builder = builder.with_psk_identity_hint(Some(hint.to_vec()));
            }
        }
        if let Some(certificate) = certificate {
            suites.extend(CERTIFICATE_SUITES);
            builder =
                builder.with_certificates(vec![certificate::from_certified_key(certificate)?]);
        }
        if suites.is_empty() {
            return Err(Error::invalid_state(
                "the DTLS server has neither a PSK callback nor a certificate",
            ));
        }
        let config = builder
            .with_cipher_suites(suites)
            .build(false, None)
            .map_err(|e| Error::new(ErrorKind::Tls, format!("DTLS configuration: {e}")))?;
        Ok(EngineConfig {
            provider,
            config: Arc::new(config),
        })
    }

    /// A fresh secret for the cookie jar, from the engine's CSPRNG.
    pub(crate) fn secret(&self) -> [u8; SECRET_LEN] {
        let mut secret = [0; SECRET_LEN];
        if self.provider.inner.random().fill(&mut secret).is_err() {
            // AWS-LC's generator does not fail; if it ever did, a secret
            // from the clock and address-space layout still keeps cookies
            // unguessable enough to stop blind spoofing.
            let seed = format!("{:?}{:p}", Instant::now(), &secret);
            secret.copy_from_slice(&sha2_digest(seed.as_bytes()));
        }
        secret
    }
}

/// The engine's PSK lookup around the application's callback: marks the
/// thread as inside the callback, and notes a refused identity (see
/// `REFUSED_IDENTITY`).
fn psk_lookup(
    psk: PskCallback,
) -> impl Fn(&[u8]) -> std::result::Result<Vec<u8>, rtc_shared::error::Error> {
    move |identity: &[u8]| {
        let key = {
            let _inside = PskCallbackScope::enter();
            psk(identity)
        };
        match key {
            Some(key) if !key.is_empty() => Ok(key),
            _ => {
                REFUSED_IDENTITY.with(|refused| *refused.borrow_mut() = Some(identity.to_vec()));
                Err(rtc_shared::error::Error::Other(format!(
                    "unknown PSK identity \"{}\"",
                    printable(identity)
                )))
            }
        }
    }
}

fn sha2_digest(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Text for an identity in messages: UTF-8 as is, other bytes escaped.
pub(crate) fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}

/// What the engine reports after a step.
#[derive(Debug)]
pub(crate) enum Output {
    HandshakeComplete,
    Data(Vec<u8>),
    PeerClosed,
}

/// The result of feeding the engine: what happened, what to send, and the
/// error that ends the session, if any.
#[derive(Default)]
pub(crate) struct Step {
    pub outputs: Vec<Output>,
    pub transmits: Vec<BytesMut>,
    pub error: Option<String>,
    /// Records dropped because they were malformed or did not authenticate.
    pub dropped: u64,
}

/// How often the engine is asked to go on after a queued record failed to
/// decrypt (each time it takes one more record off its queue).
const MAX_RESUMES: usize = 64;

/// Records of one datagram that are looked at; the rest are dropped. A
/// client's largest flight has three (ClientKeyExchange, ChangeCipherSpec,
/// Finished); without a bound one 64 KB datagram holds over 4,000 records,
/// each of which would be checked.
pub(crate) const MAX_RECORDS_PER_DATAGRAM: usize = 16;

/// One peer's DTLS state.
pub(crate) struct PeerEngine {
    endpoint: Endpoint,
    /// The peer as the socket reports it.
    remote: SocketAddr,
    config: Arc<HandshakeConfig>,
    provider: Arc<dyn RTCCryptoProvider>,
    established: bool,
    /// Established with a PSK suite: the copy of the session on which an
    /// encrypted record is tried before the engine sees it (the engine
    /// answers a record that fails to decrypt under a PSK suite with a
    /// fatal alert, ending the session).
    check: Option<RecordCheck>,
    /// Established: the smallest body a sealed record of the negotiated
    /// suite can have; shorter epoch-1 records are dropped unread.
    min_sealed_body: usize,
    /// The message_seq of the client's last unencrypted handshake message
    /// (its ClientKeyExchange, after the verified ClientHello). After the
    /// handshake only a repeat of the client's last flight is unencrypted,
    /// so later numbers are dropped (the engine would keep their fragments
    /// forever).
    last_client_message_seq: u16,
    /// During the handshake: the alert unknown_psk_identity the engine
    /// wanted to send when a record failed to decrypt. Sent if the handshake
    /// then misses its deadline (the client's Finished never decrypted: a
    /// wrong key), never because of the record itself, which anyone could
    /// have forged.
    undecryptable: Option<BytesMut>,
}

impl PeerEngine {
    /// A session for a client whose ClientHello (`hello`, in `datagram`)
    /// carries a cookie the server verified; see the module docs. On
    /// failure, why, and the engine's alert to send (e.g. no shared cipher
    /// suite).
    pub(crate) fn start(
        config: &EngineConfig,
        local: SocketAddr,
        remote: SocketAddr,
        hello: &ClientHello<'_>,
        datagram: &[u8],
        now: Instant,
    ) -> std::result::Result<(Self, Step), (String, Vec<BytesMut>)> {
        let provider: Arc<dyn RTCCryptoProvider> = config.provider.clone();
        let mut engine = PeerEngine {
            endpoint: Endpoint::new(local, TransportProtocol::UDP, Some(config.config.clone())),
            remote,
            config: config.config.clone(),
            provider,
            established: false,
            check: None,
            min_sealed_body: 0,
            last_client_message_seq: hello.message_sequence.saturating_add(1),
            undecryptable: None,
        };
        let cookie: [u8; COOKIE_LEN] = hello
            .cookie()
            .try_into()
            .map_err(|_| ("the cookie has the wrong length".to_string(), Vec::new()))?;
        let first = hello.without_cookie(hello.record_sequence - 1);
        *config.provider.random.cookie.lock() = Some(cookie);
        let replayed = engine
            .endpoint
            .read(now, remote, None, BytesMut::from(&first[..]));
        let unused = config.provider.random.cookie.lock().take();
        let mut answer = Vec::new();
        while let Some(transmit) = engine.endpoint.poll_transmit() {
            answer.push(transmit.message);
        }
        if let Err(e) = replayed {
            answer.retain(|d| plaintext_alert(d).is_some());
            // The engine numbers its alert 0, which the client already saw
            // on the HelloVerifyRequest (RFC 6347 4.2.1 copies its first
            // ClientHello's number there) and would drop as a replay; the
            // verified ClientHello's number is above that one.
            let sequence = hello.record_sequence.to_be_bytes();
            for alert in &mut answer {
                if alert.len() >= records::HEADER_LEN {
                    alert[5..11].copy_from_slice(&sequence[2..]);
                }
            }
            return Err((
                format!("the DTLS engine rejected the ClientHello: {e}"),
                answer,
            ));
        }
        let adopted = unused.is_none()
            && answer.len() == 1
            && cookie::hello_verify_cookie(&answer[0]) == Some(&cookie[..]);
        if !adopted {
            // A ClientHello the engine cannot parse ends here too (it
            // answers nothing); an engine that draws its cookie differently
            // answers with another cookie.
            let reason = format!(
                "the DTLS engine did not take up the verified cookie (it answered {} \
                 datagram(s){}): malformed ClientHello, or an incompatible rtc-dtls",
                answer.len(),
                if unused.is_some() {
                    ", without drawing a cookie"
                } else {
                    ""
                }
            );
            return Err((reason, Vec::new()));
        }
        let step = engine.read(now, datagram, &mut |_| true);
        Ok((engine, step))
    }

    /// Feeds one datagram from the peer. Records with broken framing, of an
    /// epoch or kind no genuine client sends, or that fail to decrypt are
    /// dropped here (counted in `Step::dropped`) and end nothing; so are
    /// those past the first `MAX_RECORDS_PER_DATAGRAM`. After the handshake
    /// each unencrypted record that may reach the engine is first charged
    /// with `charge` (false: over the peer's budget, dropped).
    pub(crate) fn read(
        &mut self,
        now: Instant,
        datagram: &[u8],
        charge: &mut dyn FnMut(usize) -> bool,
    ) -> Step {
        let mut step = Step::default();
        let framed = records::split(datagram);
        let framed_len: usize = framed.iter().map(|r| r.bytes.len()).sum();
        if framed_len < datagram.len() {
            step.dropped += 1;
        }
        let excess = framed.len().saturating_sub(MAX_RECORDS_PER_DATAGRAM);
        step.dropped += excess as u64;
        let mut kept = Vec::new();
        let mut forged = false;
        for record in framed.into_iter().take(MAX_RECORDS_PER_DATAGRAM) {
            match self.admit(&record, charge, &mut forged) {
                Ok(true) => kept.push(record),
                Ok(false) => step.dropped += 1,
                Err(reason) => {
                    step.error = Some(reason);
                    return step;
                }
            }
        }
        if self.established {
            // One datagram as the peer sent it: the engine tells a repeat of
            // the client's last flight from data by the datagram.
            if !kept.is_empty() {
                let input: Vec<u8> = kept.iter().flat_map(|r| r.bytes.iter().copied()).collect();
                self.feed(now, &input, &mut step);
            }
        } else {
            // Record by record: the engine stops at the first record that
            // fails and would lose the ones after it.
            for record in kept {
                self.feed(now, record.bytes, &mut step);
                if step.error.is_some() {
                    break;
                }
            }
        }
        step
    }

    /// Whether a well-framed record may go to the engine. Before the
    /// handshake completes every plausible record does (the session charged
    /// the whole datagram, and a handshake's undecryptable records are dealt
    /// with in `feed`). After it, an unencrypted record must be a fragment
    /// of the client's last flight within the budget, and an encrypted one
    /// must decrypt (tried on the record check, for a PSK session; the
    /// engine drops a certificate session's undecryptable records itself).
    /// Once a record of the datagram failed the check (`forged`), the
    /// datagram is a forgery: a genuine one arrives whole or not at all, so
    /// its other encrypted records are dropped unread and a datagram costs
    /// at most one failed decryption. An error (the check cannot be rebuilt)
    /// ends the session.
    fn admit(
        &mut self,
        record: &records::Record<'_>,
        charge: &mut dyn FnMut(usize) -> bool,
        forged: &mut bool,
    ) -> std::result::Result<bool, String> {
        if !record.plausible() {
            return Ok(false);
        }
        if !self.established {
            return Ok(true);
        }
        if record.epoch == 0 {
            return Ok(record.content_type == records::HANDSHAKE
                && records::fragments_within(record.body(), self.last_client_message_seq)
                && charge(record.bytes.len()));
        }
        if *forged || record.body().len() < self.min_sealed_body {
            return Ok(false);
        }
        let Some(check) = &mut self.check else {
            return Ok(true);
        };
        let decrypts = check
            .decrypts(record)
            .map_err(|e| format!("cannot check the peer's records any more: {e}"))?;
        *forged = !decrypts;
        Ok(decrypts)
    }

    /// Runs the engine on `input` (one datagram's records, or nothing to let
    /// it go on with records it queued).
    fn feed(&mut self, now: Instant, input: &[u8], step: &mut Step) {
        let mut input = input;
        for _ in 0..MAX_RESUMES {
            REFUSED_IDENTITY.with(|refused| refused.borrow_mut().take());
            let result = self
                .endpoint
                .read(now, self.remote, None, BytesMut::from(input));
            let mut transmits = Vec::new();
            while let Some(transmit) = self.endpoint.poll_transmit() {
                transmits.push(transmit.message);
            }
            let refused = REFUSED_IDENTITY.with(|refused| refused.borrow_mut().take());
            match result {
                Ok(events) => {
                    step.transmits.extend(transmits);
                    for output in events.into_iter().filter_map(convert) {
                        if matches!(output, Output::HandshakeComplete) {
                            if let Err(reason) = self.on_established() {
                                // Without the check one forged record
                                // could end the session at any time.
                                step.error = Some(reason);
                                return;
                            }
                        }
                        step.outputs.push(output);
                    }
                    return;
                }
                Err(_) if refused.is_some() => {
                    // rtc-dtls answers a refused identity with
                    // internal_error; RFC 4279 2 asks for unknown_psk_identity.
                    rewrite_alert(
                        &mut transmits,
                        records::ALERT_INTERNAL_ERROR,
                        records::ALERT_UNKNOWN_PSK_IDENTITY,
                    );
                    step.transmits.extend(transmits);
                    step.error = Some(format!(
                        "unknown PSK identity \"{}\" (refused by the PSK callback); sent alert \
                         unknown_psk_identity",
                        printable(&refused.unwrap_or_default())
                    ));
                    return;
                }
                Err(e) => {
                    let undecryptable = !self.established
                        && describe(&e) == ALERT_ERROR
                        && !records::split(input)
                            .iter()
                            .any(|r| r.plaintext_alert().is_some())
                        && take_alert(&mut transmits, records::ALERT_UNKNOWN_PSK_IDENTITY)
                            .map(|alert| self.undecryptable.get_or_insert(alert))
                            .is_some();
                    step.transmits.extend(transmits);
                    if !undecryptable {
                        step.error = Some(match describe(&e) {
                            reason if reason == ALERT_ERROR => {
                                explain_alert(input, &step.transmits)
                            }
                            reason => reason,
                        });
                        return;
                    }
                    // A record failed to decrypt during the handshake: it is
                    // dropped, and the engine goes on with what it queued
                    // behind it.
                    step.dropped += 1;
                    input = &[];
                }
            }
        }
    }

    /// Sets up what checks the records of the established session: the
    /// smallest sealed body of its suite, and for a PSK suite the record
    /// check. Fails if the engine's session state cannot be exported or
    /// restored (the check would be missing, so the session cannot go on).
    fn on_established(&mut self) -> std::result::Result<(), String> {
        self.established = true;
        self.undecryptable = None;
        let state = self
            .endpoint
            .get_connection_state(self.remote)
            .ok_or("the DTLS engine has no state for the completed session")?;
        if let Some(suite) = state.cipher_suite() {
            self.min_sealed_body = sealed_overhead(suite.id());
        }
        if state.is_cipher_suite_psk() {
            let check = RecordCheck::new(state, self.config.clone(), self.provider.clone())
                .map_err(|e| format!("cannot set up the check of the peer's records: {e}"))?;
            self.check = Some(check);
        }
        Ok(())
    }

    /// The alert for a handshake in which a record failed to decrypt (see
    /// `undecryptable`), once.
    pub(crate) fn take_undecryptable_alert(&mut self) -> Option<BytesMut> {
        self.undecryptable.take()
    }

    /// Encrypts `data` into one record for the peer.
    pub(crate) fn write(
        &mut self,
        now: Instant,
        data: &[u8],
    ) -> std::result::Result<Vec<BytesMut>, String> {
        self.endpoint
            .write(now, self.remote, data)
            .map_err(|e| e.to_string())?;
        let mut step = Step::default();
        self.drain(&mut step);
        Ok(step.transmits)
    }

    /// Sends close_notify; the engine is finished afterwards.
    pub(crate) fn close(&mut self, now: Instant) -> Vec<BytesMut> {
        let _ = self.endpoint.stop(now, self.remote);
        let mut step = Step::default();
        self.drain(&mut step);
        step.transmits
    }

    /// When the engine next wants `on_timeout` (handshake retransmission).
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.endpoint.poll_timeout(&self.remote)
    }

    pub(crate) fn on_timeout(&mut self, now: Instant) -> Step {
        let mut step = Step::default();
        if let Err(e) = self.endpoint.handle_timeout(self.remote, now) {
            step.error = Some(format!(
                "no answer from the peer after the last retransmission ({e})"
            ));
        }
        self.drain(&mut step);
        step
    }

    /// The client's PSK identity, once known.
    pub(crate) fn identity(&self) -> Vec<u8> {
        self.endpoint
            .get_connection_state(self.remote)
            .map(|state| state.identity_hint.clone())
            .unwrap_or_default()
    }

    /// How the session was authenticated: by a PSK suite or a certificate
    /// suite (`None` before a suite is negotiated).
    pub(crate) fn authentication(&self) -> DtlsAuthentication {
        match self.endpoint.get_connection_state(self.remote) {
            Some(state) if state.is_cipher_suite_psk() => DtlsAuthentication::Psk,
            Some(state) if state.cipher_suite().is_some() => DtlsAuthentication::Certificate,
            _ => DtlsAuthentication::None,
        }
    }

    /// The negotiated cipher suite's IANA name, once known.
    pub(crate) fn cipher(&self) -> Option<String> {
        self.endpoint
            .get_connection_state(self.remote)
            .and_then(|state| state.cipher_suite().map(|suite| suite.to_string()))
    }

    fn drain(&mut self, step: &mut Step) {
        while let Some(transmit) = self.endpoint.poll_transmit() {
            step.transmits.push(transmit.message);
        }
    }
}

fn convert(event: EndpointEvent) -> Option<Output> {
    match event {
        EndpointEvent::HandshakeComplete => Some(Output::HandshakeComplete),
        EndpointEvent::ApplicationData(data) => Some(Output::Data(data.to_vec())),
        EndpointEvent::PeerClosed => Some(Output::PeerClosed),
        _ => None,
    }
}

/// The engine's error as text for the application.
fn describe(error: &rtc_shared::error::Error) -> String {
    match error {
        rtc_shared::error::Error::ErrAlertFatalOrClose => ALERT_ERROR.to_string(),
        other => other.to_string(),
    }
}

/// Stands for the engine's "a fatal alert was sent or received", which
/// `explain_alert` replaces with which one.
const ALERT_ERROR: &str = "fatal alert";
