//! `sslconfig_*`: the TLS configuration (`QSslConfiguration`).

use std::ffi::c_char;

use parking_lot::Mutex;

use super::events::{errors_callback_for, sslconfig_ssl_errors_callback};
use super::{
    array_size, bytes, call, call_or, copy_out, required_text, text, text_array, CallResult,
    Failure,
};
use super::{sslserver_result, RawPeerVerifyMode, RawProtocol, RawSslErrorCode};
use crate::config::TlsConfig;
use crate::types::{PeerVerifyMode, Protocol, SslErrorCode};

/// A TLS configuration: certificate chain, private key, trusted CAs,
/// verification mode, protocols and ALPN. Create it with `sslconfig_new`,
/// hand it to `sslserver_set_config` (which copies it), free it with
/// `sslconfig_free`.
pub struct sslconfig {
    inner: Mutex<TlsConfig>,
}

/// Runs `body` on the configuration behind `cfg`.
fn with_config(
    cfg: *mut sslconfig,
    body: impl FnOnce(&mut TlsConfig) -> CallResult,
) -> sslserver_result {
    call(|| {
        // SAFETY: the C caller passes NULL or a live handle from sslconfig_new/clone.
        let cfg = unsafe { cfg.as_ref() }.ok_or_else(|| Failure::null("cfg"))?;
        body(&mut cfg.inner.lock())
    })
}

/// Creates an empty configuration: no certificate, AUTO_VERIFY_PEER,
/// SECURE_PROTOCOLS (TLS 1.2 and 1.3), no ALPN. NULL only if out of memory.
#[no_mangle]
pub extern "C" fn sslconfig_new() -> *mut sslconfig {
    call_or(std::ptr::null_mut(), || {
        Box::into_raw(Box::new(sslconfig {
            inner: Mutex::new(TlsConfig::new()),
        }))
    })
}

/// A copy of `cfg` to change independently; NULL if `cfg` is NULL.
#[no_mangle]
pub extern "C" fn sslconfig_clone(cfg: *const sslconfig) -> *mut sslconfig {
    call_or(std::ptr::null_mut(), || {
        // SAFETY: the C caller passes NULL or a live handle.
        let Some(cfg) = (unsafe { cfg.as_ref() }) else {
            return std::ptr::null_mut();
        };
        let copy = cfg.inner.lock().clone();
        Box::into_raw(Box::new(sslconfig {
            inner: Mutex::new(copy),
        }))
    })
}

/// Frees a configuration. NULL is a no-op. Servers keep their own copy.
#[no_mangle]
pub extern "C" fn sslconfig_free(cfg: *mut sslconfig) {
    call_or((), || {
        if !cfg.is_null() {
            // SAFETY: a non-NULL cfg came from sslconfig_new/clone and is
            // freed once, by this call.
            drop(unsafe { Box::from_raw(cfg) });
        }
    })
}

/// Sets the certificate chain from PEM text (leaf first; `len` bytes, no NUL
/// needed). Checked at once: empty input, bad PEM or a certificate that does
/// not parse give SSLSERVER_ERROR_CERTIFICATE; a chain whose leaf does not
/// match an already set key gives SSLSERVER_ERROR_PRIVATE_KEY. On failure
/// the configuration is unchanged.
#[no_mangle]
pub extern "C" fn sslconfig_set_certificate_chain_pem(
    cfg: *mut sslconfig,
    pem: *const u8,
    len: usize,
) -> sslserver_result {
    with_config(cfg, |c| {
        // SAFETY: the caller passes `len` readable bytes at `pem`.
        let pem = unsafe { bytes(pem, len, "pem") }?;
        Ok(c.set_certificate_chain_pem(pem)?)
    })
}

/// As sslconfig_set_certificate_chain_pem, from a file. A missing or
/// unreadable file gives SSLSERVER_ERROR_IO ("chain.pem: No such file or
/// directory").
#[no_mangle]
pub extern "C" fn sslconfig_set_certificate_chain_file(
    cfg: *mut sslconfig,
    path: *const c_char,
) -> sslserver_result {
    with_config(cfg, |c| {
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let path = unsafe { required_text(path, "path") }?;
        Ok(c.set_certificate_chain_file(path)?)
    })
}

/// Sets the private key from PEM: PKCS#8, PKCS#1 (RSA), SEC1 (EC), or
/// encrypted PKCS#8 ("ENCRYPTED PRIVATE KEY") with `passphrase` (NULL if the
/// key is not encrypted). Errors (SSLSERVER_ERROR_PRIVATE_KEY): empty input,
/// no key, encrypted without or with a wrong passphrase, a key that does not
/// match the certificate already set. On failure nothing changes.
#[no_mangle]
pub extern "C" fn sslconfig_set_private_key_pem(
    cfg: *mut sslconfig,
    pem: *const u8,
    len: usize,
    passphrase: *const c_char,
) -> sslserver_result {
    with_config(cfg, |c| {
        // SAFETY: the caller passes `len` readable bytes and a string or NULL.
        let (pem, passphrase) =
            unsafe { (bytes(pem, len, "pem")?, text(passphrase, "passphrase")?) };
        Ok(c.set_private_key_pem(pem, passphrase)?)
    })
}

/// As sslconfig_set_private_key_pem, from a file.
#[no_mangle]
pub extern "C" fn sslconfig_set_private_key_file(
    cfg: *mut sslconfig,
    path: *const c_char,
    passphrase: *const c_char,
) -> sslserver_result {
    with_config(cfg, |c| {
        // SAFETY: the caller passes NUL-terminated strings (passphrase may be NULL).
        let (path, passphrase) = unsafe {
            (
                required_text(path, "path")?,
                text(passphrase, "passphrase")?,
            )
        };
        Ok(c.set_private_key_file(path, passphrase)?)
    })
}

/// Development default: replaces certificate and key with a fresh
/// self-signed ECDSA P-256 certificate for `names` (DNS names or IP
/// addresses such as "127.0.0.1"; NULL/0 means "localhost").
#[no_mangle]
pub extern "C" fn sslconfig_generate_self_signed(
    cfg: *mut sslconfig,
    names: *const *const c_char,
    count: usize,
) -> sslserver_result {
    with_config(cfg, |c| {
        // SAFETY: the caller passes `count` NUL-terminated strings at `names`.
        let names = unsafe { text_array(names, count, "names") }?;
        Ok(c.generate_self_signed(&names)?)
    })
}

/// Adds trusted CA certificates (PEM) for verifying client certificates.
#[no_mangle]
pub extern "C" fn sslconfig_add_ca_certificates_pem(
    cfg: *mut sslconfig,
    pem: *const u8,
    len: usize,
) -> sslserver_result {
    with_config(cfg, |c| {
        // SAFETY: the caller passes `len` readable bytes at `pem`.
        let pem = unsafe { bytes(pem, len, "pem") }?;
        Ok(c.add_ca_certificates_pem(pem)?)
    })
}

/// As sslconfig_add_ca_certificates_pem, from a file.
#[no_mangle]
pub extern "C" fn sslconfig_add_ca_certificates_file(
    cfg: *mut sslconfig,
    path: *const c_char,
) -> sslserver_result {
    with_config(cfg, |c| {
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let path = unsafe { required_text(path, "path") }?;
        Ok(c.add_ca_certificates_file(path)?)
    })
}

/// Sets how client certificates are treated (default AUTO_VERIFY_PEER, which
/// is QUERY_PEER on a server: a certificate is requested, its errors are
/// reported, and it is accepted anyway).
#[no_mangle]
pub extern "C" fn sslconfig_set_peer_verify_mode(
    cfg: *mut sslconfig,
    mode: RawPeerVerifyMode,
) -> sslserver_result {
    with_config(cfg, |c| {
        let mode = PeerVerifyMode::from_raw(mode)
            .ok_or_else(|| Failure::invalid(format!("{mode} is not a peer verify mode")))?;
        c.set_peer_verify_mode(mode);
        Ok(())
    })
}

/// The peer verify mode; AUTO_VERIFY_PEER for NULL.
#[no_mangle]
pub extern "C" fn sslconfig_peer_verify_mode(cfg: *const sslconfig) -> PeerVerifyMode {
    call_or(PeerVerifyMode::AutoVerifyPeer, || {
        // SAFETY: the caller passes NULL or a live handle.
        unsafe { cfg.as_ref() }.map_or(PeerVerifyMode::AutoVerifyPeer, |c| {
            c.inner.lock().peer_verify_mode()
        })
    })
}

/// Sets the TLS versions to offer. TLS 1.0/1.1 (and DTLS) give
/// SSLSERVER_ERROR_UNSUPPORTED; UNKNOWN or another value gives
/// SSLSERVER_ERROR_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn sslconfig_set_protocol(
    cfg: *mut sslconfig,
    protocol: RawProtocol,
) -> sslserver_result {
    with_config(cfg, |c| {
        let protocol = Protocol::from_raw(protocol)
            .ok_or_else(|| Failure::invalid(format!("{protocol} is not a protocol")))?;
        Ok(c.set_protocol(protocol)?)
    })
}

/// The configured protocol; SECURE_PROTOCOLS for NULL.
#[no_mangle]
pub extern "C" fn sslconfig_protocol(cfg: *const sslconfig) -> Protocol {
    call_or(Protocol::SecureProtocols, || {
        // SAFETY: the caller passes NULL or a live handle.
        unsafe { cfg.as_ref() }.map_or(Protocol::SecureProtocols, |c| c.inner.lock().protocol())
    })
}

/// Sets the ALPN protocols the server accepts, most preferred first
/// (e.g. "h2", "http/1.1"); count 0 clears them. A client that offers ALPN
/// but none of these is refused with a no_application_protocol alert
/// (RFC 7301), as rustls does.
#[no_mangle]
pub extern "C" fn sslconfig_set_alpn_protocols(
    cfg: *mut sslconfig,
    protocols: *const *const c_char,
    count: usize,
) -> sslserver_result {
    with_config(cfg, |c| {
        // SAFETY: the caller passes `count` NUL-terminated strings.
        let names = unsafe { text_array(protocols, count, "protocols") }?;
        let names: Vec<Vec<u8>> = names.into_iter().map(String::into_bytes).collect();
        Ok(c.set_alpn_protocols(&names)?)
    })
}

/// With `interrupt`, verification stops at the first client-certificate
/// error and HANDSHAKE_INTERRUPTED_ON_ERROR is emitted instead of
/// PEER_VERIFY_ERROR; the handshake fails unless the callback calls
/// sslsocket_continue_interrupted_handshake.
#[no_mangle]
pub extern "C" fn sslconfig_set_handshake_must_interrupt_on_error(
    cfg: *mut sslconfig,
    interrupt: bool,
) -> sslserver_result {
    with_config(cfg, |c| {
        c.set_handshake_must_interrupt_on_error(interrupt);
        Ok(())
    })
}

/// The SHA-256 fingerprint of the leaf certificate as "AB:CD:..."
/// (string-out convention). SSLSERVER_ERROR_INVALID_STATE without a certificate.
#[no_mangle]
pub extern "C" fn sslconfig_certificate_fingerprint_sha256(
    cfg: *const sslconfig,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> sslserver_result {
    with_config(cfg.cast_mut(), |c| {
        let fingerprint = c.certificate_fingerprint_sha256()?;
        // SAFETY: the caller passes a buffer of `len` bytes and a size_t out pointer.
        unsafe { copy_out(&fingerprint, buf, len, out_n) }
    })
}

/// The certificate chain as PEM text (string-out convention), e.g. to give
/// clients the generated self-signed certificate as their CA file.
#[no_mangle]
pub extern "C" fn sslconfig_certificate_chain_pem(
    cfg: *const sslconfig,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> sslserver_result {
    with_config(cfg.cast_mut(), |c| {
        let pem = c.certificate_chain_pem()?;
        // SAFETY: the caller passes a buffer of `len` bytes and a size_t out pointer.
        unsafe { copy_out(&pem, buf, len, out_n) }
    })
}

/// Certificate errors to accept without asking, like Qt's
/// ignoreSslErrors(list): of the server's certificate in client mode, and of
/// client certificates on a server. A handshake goes on only when EVERY
/// error found is ignored; an untrusted certificate always has an issuer
/// error (SELF_SIGNED_CERTIFICATE or UNABLE_TO_GET_LOCAL_ISSUER_CERTIFICATE),
/// so ignoring CERTIFICATE_EXPIRED alone never accepts one.
///
/// WARNING: these codes apply to ANY certificate a peer presents. Ignoring
/// an issuer error this way accepts every certificate anyone can make;
/// bind such an ignore to the one certificate you expect with
/// sslconfig_add_ignored_ssl_error instead.
///
/// Replaces every ignore set before (also those bound to a certificate);
/// count 0 clears them.
#[no_mangle]
pub extern "C" fn sslconfig_set_ignored_ssl_errors(
    cfg: *mut sslconfig,
    codes: *const RawSslErrorCode,
    count: usize,
) -> sslserver_result {
    with_config(cfg, |c| {
        let size = array_size::<RawSslErrorCode>(count, "codes")?;
        // SAFETY: the caller passes `count` ints at `codes` (NULL with 0).
        let raw = unsafe { bytes(codes.cast::<u8>(), size, "codes") }?;
        let codes: &[RawSslErrorCode] = if raw.is_empty() {
            &[]
        } else {
            // SAFETY: the same memory, viewed as the ints it holds.
            unsafe { std::slice::from_raw_parts(codes, count) }
        };
        let codes = codes
            .iter()
            .map(|&code| {
                SslErrorCode::from_raw(code).ok_or_else(|| {
                    Failure::invalid(format!("{code} is not a certificate error code"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        c.set_ignored_ssl_errors(&codes);
        Ok(())
    })
}

/// Accepts the certificate error `code` without asking, only for the
/// certificate whose DER encoding is `cert_der` (`cert_der_len` bytes), as
/// Qt's QSslError(error, certificate) in an ignore list does. Adds to the
/// ignores set before. With cert_der_len 0 (cert_der NULL or not), `code` is
/// ignored for any certificate (see the warning at
/// sslconfig_set_ignored_ssl_errors). Errors that concern no certificate
/// (NO_PEER_CERTIFICATE) are ignored only for any certificate.
///
/// An error names the certificate it concerns (`certificate_der` in
/// sslserver_ssl_error): the leaf for issuer, purpose and name errors, the
/// expired certificate itself for date errors.
#[no_mangle]
pub extern "C" fn sslconfig_add_ignored_ssl_error(
    cfg: *mut sslconfig,
    code: RawSslErrorCode,
    cert_der: *const u8,
    cert_der_len: usize,
) -> sslserver_result {
    with_config(cfg, |c| {
        let code = SslErrorCode::from_raw(code)
            .ok_or_else(|| Failure::invalid(format!("{code} is not a certificate error code")))?;
        // SAFETY: the caller passes `cert_der_len` bytes at `cert_der` (NULL with 0).
        let der = unsafe { bytes(cert_der, cert_der_len, "cert_der") }?;
        let certificate = if der.is_empty() {
            None
        } else {
            x509_parser::parse_x509_certificate(der)
                .map_err(|_| Failure::invalid("cert_der is not a DER certificate"))?;
            Some(der)
        };
        c.add_ignored_ssl_error(code, certificate);
        Ok(())
    })
}

/// Client mode: `cb` is asked about server-certificate errors not ignored
/// up front, on the connecting thread; returning true accepts the
/// certificate. NULL removes it. Copies of the configuration share it.
#[no_mangle]
pub extern "C" fn sslconfig_set_ssl_errors_callback(
    cfg: *mut sslconfig,
    cb: sslconfig_ssl_errors_callback,
    userdata: *mut std::ffi::c_void,
) -> sslserver_result {
    with_config(cfg, |c| {
        c.set_ssl_errors_callback(errors_callback_for(cb, userdata));
        Ok(())
    })
}

/// Server: shares session tickets across processes and hosts. Each of the
/// `count` files at `paths` holds one key in nginx's ssl_session_ticket_key
/// format: 48 or 80 random bytes (`openssl rand 80 > ticket.key`), the
/// first 16 of which name the key. The first file's key seals new tickets;
/// every file's key opens tickets sealed with it, so rotate by putting a
/// new file first and dropping the oldest later. Every server (in this
/// process or another) configured with the same files resumes the others'
/// sessions, for TLS 1.3 and TLS 1.2 clients. The tickets themselves are
/// this library's own format (nginx cannot read them, nor this library
/// nginx's). A ticket resumes for at most 12 hours after it was issued,
/// whatever the files. The files are read by this call: to rotate, call it
/// again and pass the configuration to sslserver_set_config.
///
/// count 0 (paths may then be NULL) goes back to the default: a random
/// key of each server's own. A missing or unreadable file gives
/// SSLSERVER_ERROR_IO, a file of another size, a directory or two files
/// with the same key name give SSLSERVER_ERROR_INVALID_ARGUMENT; each
/// message names the file. On failure the configuration is unchanged.
/// Client mode ignores ticket keys.
#[no_mangle]
pub extern "C" fn sslconfig_set_session_ticket_keys_files(
    cfg: *mut sslconfig,
    paths: *const *const c_char,
    count: usize,
) -> sslserver_result {
    with_config(cfg, |c| {
        // SAFETY: the caller passes `count` NUL-terminated strings at `paths`.
        let paths = unsafe { text_array(paths, count, "paths") }?;
        Ok(c.set_session_ticket_keys_files(&paths)?)
    })
}

/// Server: whether to issue session tickets (default true). With false, no
/// ticket is sent: TLS 1.3 clients cannot resume at all, TLS 1.2 clients
/// still resume through the server's session-ID cache (in this process
/// only). Client mode ignores it.
#[no_mangle]
pub extern "C" fn sslconfig_set_session_tickets(
    cfg: *mut sslconfig,
    enabled: bool,
) -> sslserver_result {
    with_config(cfg, |c| {
        c.set_session_tickets(enabled);
        Ok(())
    })
}

/// Server: one more certificate, served to clients that ask for
/// `server_name` by SNI. `server_name` is a host name ("www.example.com",
/// matched without regard to case) or a wildcard for one label in front of
/// a name of two labels or more ("*.example.com" matches "a.example.com",
/// not "example.com" nor "a.b.example.com"); an exact name wins over a
/// wildcard. Clients that send no name, or a name no entry matches, get
/// the chain set with sslconfig_set_certificate_chain_*, which stays
/// required. The same server_name again replaces its entry.
///
/// The chain (PEM, leaf first) and the key (as for
/// sslconfig_set_private_key_file, `passphrase` NULL if the key is not
/// encrypted) are read and checked by this call; errors name the file:
/// SSLSERVER_ERROR_IO (unreadable), SSLSERVER_ERROR_CERTIFICATE,
/// SSLSERVER_ERROR_PRIVATE_KEY (bad or not matching the certificate). An
/// empty name, "*", a wildcard over one label ("*.com"), a wildcard that
/// is not the whole leftmost label, an address or an invalid DNS name give
/// SSLSERVER_ERROR_INVALID_ARGUMENT. The library does not check that the
/// certificate names server_name. On failure nothing changes. The OCSP
/// response (sslconfig_set_ocsp_response) is stapled to the default chain
/// only. Client mode ignores these certificates.
#[no_mangle]
pub extern "C" fn sslconfig_add_sni_certificate_files(
    cfg: *mut sslconfig,
    server_name: *const c_char,
    chain_path: *const c_char,
    key_path: *const c_char,
    passphrase: *const c_char,
) -> sslserver_result {
    with_config(cfg, |c| {
        // SAFETY: the caller passes NUL-terminated strings (passphrase may be NULL).
        let (server_name, chain_path, key_path, passphrase) = unsafe {
            (
                required_text(server_name, "server_name")?,
                required_text(chain_path, "chain_path")?,
                required_text(key_path, "key_path")?,
                text(passphrase, "passphrase")?,
            )
        };
        Ok(c.add_sni_certificate_files(server_name, chain_path, key_path, passphrase)?)
    })
}

/// Server: staples the OCSP response `der` (`len` bytes, DER, as `openssl
/// ocsp -respout` writes it) to the default certificate chain, for clients
/// that ask for one (status_request). The response must be a complete
/// OCSPResponse (strict DER) with status successful, at most 65527 bytes
/// (what a TLS 1.3 certificate entry can carry); anything else gives
/// SSLSERVER_ERROR_INVALID_ARGUMENT and changes nothing. Its signature,
/// dates and the certificate it speaks for are not checked here (clients
/// check them). len 0 (der may be NULL) removes it. The response belongs to
/// one certificate: setting a new chain (sslconfig_set_certificate_chain_*,
/// sslconfig_generate_self_signed) removes it, so set it after the chain.
/// SNI certificates get no stapled response. Refresh it before it expires
/// by calling again and passing the configuration to sslserver_set_config.
/// Client mode ignores it.
#[no_mangle]
pub extern "C" fn sslconfig_set_ocsp_response(
    cfg: *mut sslconfig,
    der: *const u8,
    len: usize,
) -> sslserver_result {
    with_config(cfg, |c| {
        // SAFETY: the caller passes `len` readable bytes at `der` (NULL with 0).
        let der = unsafe { bytes(der, len, "der") }?;
        Ok(c.set_ocsp_response(der)?)
    })
}

/// Sets the cipher suites to use, like QSslConfiguration::setCiphers:
/// IANA names separated by ':', most preferred first (a server, too, picks
/// by this order rather than the client's, as Qt's servers do), e.g.
/// "TLS_AES_128_GCM_SHA256:TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
/// (case does not matter). The names are those of TLS 1.3
/// (TLS_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256,
/// TLS_CHACHA20_POLY1305_SHA256) and of TLS 1.2's ECDHE suites with
/// AES-GCM or ChaCha20-Poly1305 for ECDSA and RSA certificates
/// (TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, ...); OpenSSL's own names
/// ("ECDHE-RSA-AES128-GCM-SHA256") are not accepted. An unknown or
/// unsupported name, an empty list or an empty name give
/// SSLSERVER_ERROR_INVALID_ARGUMENT naming it, and nothing changes.
/// Applies to servers and client mode alike (not to DTLS servers). A list
/// with no suite for any protocol version the configuration allows (only
/// TLS 1.2 suites with SSLSERVER_PROTOCOL_TLSV1_3) is refused when the
/// configuration is used: by sslserver_set_config, or by the connect or
/// start_encryption call in client mode. A TLS 1.2 suite serves only a
/// certificate of its kind (ECDSA or RSA): sslserver_set_config also
/// refuses a configuration with a certificate (default or SNI) that none
/// of the allowed suites can serve.
#[no_mangle]
pub extern "C" fn sslconfig_set_ciphers(
    cfg: *mut sslconfig,
    names: *const c_char,
) -> sslserver_result {
    with_config(cfg, |c| {
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let names = unsafe { required_text(names, "names") }?;
        Ok(c.set_ciphers(names)?)
    })
}

/// Sets the key exchange groups to use, like
/// QSslConfiguration::setEllipticCurves: names separated by ':', most
/// preferred first, e.g. "X25519:secp256r1:secp384r1". Accepted: X25519,
/// secp256r1 (also P-256, prime256v1), secp384r1 (also P-384) and the
/// post-quantum X25519MLKEM768, secp256r1MLKEM768, MLKEM768, MLKEM1024
/// (TLS 1.3 only); case does not matter. In client mode the order is the
/// order of preference; a server uses a group the client offered, in the
/// client's preference, among those allowed. Errors and scope as for
/// sslconfig_set_ciphers; a configuration whose groups fit none of its
/// protocol versions is refused when it is used.
#[no_mangle]
pub extern "C" fn sslconfig_set_groups(
    cfg: *mut sslconfig,
    names: *const c_char,
) -> sslserver_result {
    with_config(cfg, |c| {
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let names = unsafe { required_text(names, "names") }?;
        Ok(c.set_groups(names)?)
    })
}

/// Logs the TLS secrets of every connection made with this configuration
/// to the file `path`, in the NSS key log format Wireshark reads
/// ("CLIENT_TRAFFIC_SECRET_0 <client random> <secret>" lines, as
/// SSLKEYLOGFILE makes them elsewhere): for debugging only, since anyone
/// who reads the file can decrypt the captured traffic. The file is opened
/// by this call, for appending, and created with mode 0600; a path that
/// cannot be opened gives SSLSERVER_ERROR_IO naming it, a FIFO or another
/// file that is neither a regular file nor a character device gives
/// SSLSERVER_ERROR_INVALID_ARGUMENT (a pipe would make handshakes wait for
/// its reader); either way nothing changes. An existing file keeps its
/// permissions. NULL or "" turns the key log off. Each line is written whole,
/// so connections on several threads can share the file. The SSLKEYLOGFILE
/// environment variable alone never turns it on. Applies to servers and
/// client mode (not to DTLS servers).
#[no_mangle]
pub extern "C" fn sslconfig_set_key_log_file(
    cfg: *mut sslconfig,
    path: *const c_char,
) -> sslserver_result {
    with_config(cfg, |c| {
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let path = unsafe { text(path, "path") }?;
        Ok(c.set_key_log_file(path)?)
    })
}

/// The configuration behind a handle, for sslserver_set_config.
pub(crate) fn snapshot(cfg: *const sslconfig) -> Result<TlsConfig, Failure> {
    // SAFETY: the caller passes NULL or a live handle.
    let cfg = unsafe { cfg.as_ref() }.ok_or_else(|| Failure::null("cfg"))?;
    Ok(cfg.inner.lock().clone())
}
