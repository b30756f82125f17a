//! The server's certificate for the DTLS engine: the chain and key of an
//! `sslconfig` (the same objects the TLS server signs with), handed to
//! rtc-dtls as its `Certificate`.
//!
//! The key stays the rustls signing key the configuration loaded (PKCS#8,
//! PKCS#1 or SEC1, encrypted or not): rtc-dtls signs through the adapter
//! below, so nothing is converted or exported.

use std::sync::Arc;

use rtc_dtls::crypto::Certificate;
use rtc_dtls::crypto_provider::{
    CryptoError, PublicKey, PublicKeyEncoding, SignatureScheme, SigningKey,
};
use rustls::sign::CertifiedKey;

use crate::error::{Error, ErrorKind, Result};

/// A rustls signing key as rtc-dtls's signing key.
struct RustlsKey {
    key: Arc<dyn rustls::sign::SigningKey>,
    /// The leaf certificate's SubjectPublicKeyInfo (DER).
    public_key: Vec<u8>,
}

/// The rustls name of a scheme rtc-dtls asks for.
fn rustls_scheme(scheme: SignatureScheme) -> Option<rustls::SignatureScheme> {
    use rustls::SignatureScheme as R;
    Some(match scheme {
        SignatureScheme::Ed25519 => R::ED25519,
        SignatureScheme::EcdsaP256Sha256 => R::ECDSA_NISTP256_SHA256,
        SignatureScheme::EcdsaP384Sha384 => R::ECDSA_NISTP384_SHA384,
        SignatureScheme::RsaPkcs1Sha256 => R::RSA_PKCS1_SHA256,
        SignatureScheme::RsaPkcs1Sha384 => R::RSA_PKCS1_SHA384,
        SignatureScheme::RsaPkcs1Sha512 => R::RSA_PKCS1_SHA512,
        // SHA-1 is for verifying legacy peers only; P-384 with SHA-256 has
        // no TLS 1.2 code point rustls signs with.
        _ => return None,
    })
}

impl RustlsKey {
    fn signer(&self, scheme: SignatureScheme) -> Option<Box<dyn rustls::sign::Signer>> {
        self.key.choose_scheme(&[rustls_scheme(scheme)?])
    }
}

impl SigningKey for RustlsKey {
    fn supports(&self, scheme: SignatureScheme) -> bool {
        self.signer(scheme).is_some()
    }

    fn public_key(&self) -> PublicKey<'_> {
        PublicKey {
            encoding: PublicKeyEncoding::SubjectPublicKeyInfoDer,
            bytes: &self.public_key,
        }
    }

    fn sign(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
    ) -> std::result::Result<Vec<u8>, CryptoError> {
        let signer = self
            .signer(scheme)
            .ok_or(CryptoError::UnsupportedAlgorithm(
                rtc_dtls::crypto_provider::CryptoAlgorithm::Signature(scheme),
            ))?;
        signer
            .sign(message)
            .map_err(|e| CryptoError::Provider(format!("signing failed: {e}")))
    }
}

/// The engine's certificate for a configuration's chain and key.
pub(crate) fn from_certified_key(certified: &CertifiedKey) -> Result<Certificate> {
    let leaf = certified
        .cert
        .first()
        .ok_or_else(|| Error::invalid_argument("the sslconfig has no certificate"))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        Error::new(
            ErrorKind::Certificate,
            format!("the certificate does not parse: {e}"),
        )
    })?;
    let key = RustlsKey {
        key: certified.key.clone(),
        public_key: parsed.tbs_certificate.subject_pki.raw.to_vec(),
    };
    Ok(Certificate::from_signing_key(
        certified.cert.clone(),
        Arc::new(key),
    ))
}
