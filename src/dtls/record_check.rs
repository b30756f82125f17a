//! The check an encrypted record of an established session passes before
//! the engine sees it.
//!
//! Under a PSK suite rtc-dtls answers a record that fails to decrypt with
//! the fatal alert `unknown_psk_identity` and ends the session, so anyone
//! who knows a client's address and port could end it with one forged
//! record. Each encrypted record is therefore first tried on a copy of the
//! session, made once from the engine's exported state when the handshake
//! completes and kept: a record the copy cannot decrypt never reaches the
//! engine, whose replay window and state stay untouched.
//!
//! The copy keeps what decrypts (it never hands out the plaintext, and
//! remembers record numbers in its replay window), so it is rebuilt from
//! the exported state after it has taken `REBUILD_AFTER` bytes. A record of
//! a size no sealed record has (shorter than the suite's explicit nonce and
//! tag) is refused without any work.

use std::sync::Arc;

use rtc_dtls::cipher_suite::CipherSuiteId;
use rtc_dtls::config::HandshakeConfig;
use rtc_dtls::conn::DTLSConn;
use rtc_dtls::crypto_provider::RTCCryptoProvider;
use rtc_dtls::state::State;

use super::records::{self, Record};

/// Bytes of records the copy may take before it is rebuilt: it holds on to
/// what decrypted, for every established PSK peer (16 MiB for a full table
/// of 1,024). A rebuild costs about what one record used to cost.
pub(crate) const REBUILD_AFTER: usize = 16 * 1024;

/// The smallest body of a sealed record under `suite`: explicit nonce and
/// tag (RFC 5288 and 6655 suites carry an 8-byte explicit nonce; RFC 7905's
/// ChaCha20-Poly1305 none).
pub(crate) fn sealed_overhead(suite: CipherSuiteId) -> usize {
    match suite {
        CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8
        | CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Ccm_8 => 8 + 8,
        CipherSuiteId::Tls_Ecdhe_Rsa_With_ChaCha20_Poly1305_Sha256
        | CipherSuiteId::Tls_Ecdhe_Ecdsa_With_ChaCha20_Poly1305_Sha256 => 16,
        CipherSuiteId::Tls_Psk_With_Aes_128_Gcm_Sha256
        | CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Gcm_Sha256
        | CipherSuiteId::Tls_Ecdhe_Rsa_With_Aes_128_Gcm_Sha256
        | CipherSuiteId::Tls_Psk_With_Aes_128_Ccm
        | CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Ccm => 8 + 16,
        // Not offered by this server; no bound is assumed.
        _ => 0,
    }
}

/// A copy of an established PSK session that tells whether a record
/// decrypts.
pub(crate) struct RecordCheck {
    /// The session's exported state, to rebuild the copy from.
    sealed: Vec<u8>,
    config: Arc<HandshakeConfig>,
    provider: Arc<dyn RTCCryptoProvider>,
    copy: DTLSConn,
    /// Bytes of records the copy took since it was built.
    taken: usize,
}

impl RecordCheck {
    /// A check for the session whose engine state is `state`; fails (with
    /// why) if the state cannot be exported or restored, in which case
    /// records cannot be checked and the session must not go on.
    pub(crate) fn new(
        state: &State,
        config: Arc<HandshakeConfig>,
        provider: Arc<dyn RTCCryptoProvider>,
    ) -> Result<Self, String> {
        let sealed = state
            .marshal_binary()
            .map_err(|e| format!("cannot export the session state: {e}"))?;
        let copy = restore(&sealed, &config, &provider)?;
        Ok(RecordCheck {
            sealed,
            config,
            provider,
            copy,
            taken: 0,
        })
    }

    /// Whether `record` (of epoch 1) decrypts under the session's keys.
    /// Fails only if the copy cannot be rebuilt.
    pub(crate) fn decrypts(&mut self, record: &Record<'_>) -> Result<bool, String> {
        if self.taken > REBUILD_AFTER {
            self.copy = restore(&self.sealed, &self.config, &self.provider)?;
            self.taken = 0;
        }
        let result = self.copy.read(record.bytes);
        // An alert: the peer's own (a decrypted close_notify, say), or
        // unknown_psk_identity for a record that did not decrypt. The copy
        // has not "completed" its handshake, so it sends alerts
        // unencrypted.
        let mut undecryptable = false;
        while let Some(datagram) = self.copy.outgoing_raw_packet() {
            undecryptable |= records::split(&datagram)
                .iter()
                .any(|r| r.plaintext_alert() == Some(records::ALERT_UNKNOWN_PSK_IDENTITY));
        }
        if undecryptable {
            return Ok(false);
        }
        self.taken += record.bytes.len();
        if result.is_err() {
            // Whatever the copy made of a genuine alert, the next check
            // starts on a fresh copy.
            self.taken = REBUILD_AFTER + 1;
        }
        Ok(true)
    }
}

fn restore(
    sealed: &[u8],
    config: &Arc<HandshakeConfig>,
    provider: &Arc<dyn RTCCryptoProvider>,
) -> Result<DTLSConn, String> {
    let mut state = State::new(provider.clone(), false);
    state
        .unmarshal_binary(sealed)
        .map_err(|e| format!("cannot restore the session state: {e}"))?;
    Ok(DTLSConn::new(config.clone(), false, Some(state)))
}
