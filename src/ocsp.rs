//! OCSP stapling: the checks an OCSP response passes before a server sends
//! it with its certificate. A client that asked for one reads what it gets
//! as a DER `OCSPResponse` (RFC 6960 4.2.1); stapling bytes that are not
//! one, or a response that is not `successful`, would only make clients
//! fail or ignore it, so both are refused when the response is set.
//!
//! ```text
//! OCSPResponse ::= SEQUENCE {
//!    responseStatus  ENUMERATED { successful (0), ... },
//!    responseBytes   [0] EXPLICIT SEQUENCE { responseType OID, response OCTET STRING } OPTIONAL }
//! ```
//!
//! The signature and the certificate it speaks for are the client's to
//! check, as they are for the certificate itself.

use crate::error::{Error, Result};

const SEQUENCE: u8 = 0x30;
const ENUMERATED: u8 = 0x0a;
const RESPONSE_BYTES: u8 = 0xa0;
const OBJECT_IDENTIFIER: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;

/// The largest response a server can staple: TLS 1.3 sends it in a
/// certificate entry's extensions, a list of at most 65535 bytes, after the
/// extension's type and length (4 bytes) and the status type and response
/// length (4 bytes). rustls does not check this when it writes the entry.
pub(crate) const MAX_RESPONSE_LEN: usize = 65535 - 4 - 4;

/// Checks that `der` is one successful OCSPResponse and nothing else.
pub(crate) fn check_response(der: &[u8]) -> Result<()> {
    let bad =
        |why: &str| Error::invalid_argument(format!("the OCSP response is not usable: {why}"));
    if der.len() > MAX_RESPONSE_LEN {
        return Err(bad(&format!(
            "it is {} bytes, more than the {MAX_RESPONSE_LEN} bytes a TLS 1.3 handshake can carry",
            der.len()
        )));
    }
    let (response, rest) =
        element(der, SEQUENCE).ok_or_else(|| bad("it is not a DER OCSPResponse (a SEQUENCE)"))?;
    if !rest.is_empty() {
        return Err(bad("there are bytes after the DER OCSPResponse"));
    }
    let (status, after_status) =
        element(response, ENUMERATED).ok_or_else(|| bad("it has no responseStatus"))?;
    match status {
        [0] => {}
        [code] => {
            return Err(bad(&format!(
                "its status is {} ({code}), not successful (0)",
                status_name(*code)
            )))
        }
        _ => return Err(bad("its responseStatus is malformed")),
    }
    let (bytes, trailing) = element(after_status, RESPONSE_BYTES)
        .ok_or_else(|| bad("a successful response must carry responseBytes"))?;
    if !trailing.is_empty() {
        return Err(bad("there are bytes after its responseBytes"));
    }
    let (inner, after) =
        element(bytes, SEQUENCE).ok_or_else(|| bad("its responseBytes are malformed"))?;
    let (_, after_type) =
        element(inner, OBJECT_IDENTIFIER).ok_or_else(|| bad("it has no responseType"))?;
    let (_, end) = element(after_type, OCTET_STRING).ok_or_else(|| bad("it has no response"))?;
    if !after.is_empty() || !end.is_empty() {
        return Err(bad("its responseBytes are malformed"));
    }
    Ok(())
}

/// RFC 6960's names for the response statuses.
fn status_name(code: u8) -> &'static str {
    match code {
        1 => "malformedRequest",
        2 => "internalError",
        3 => "tryLater",
        5 => "sigRequired",
        6 => "unauthorized",
        _ => "unknown",
    }
}

/// One DER element with tag `tag` at the start of `input`: its contents
/// and what follows it. Definite lengths in their shortest form only, as
/// DER requires.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len_byte, rest) = rest.split_first()?;
    let (len, rest) = if len_byte < 0x80 {
        (usize::from(len_byte), rest)
    } else {
        let count = usize::from(len_byte & 0x7f);
        if count == 0 || count > std::mem::size_of::<usize>() || rest.len() < count {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(count);
        // Shortest form: no leading zero byte, and the long form only for
        // lengths the short form cannot say.
        if len_bytes[0] == 0 {
            return None;
        }
        let len = len_bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        if len < 0x80 {
            return None;
        }
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A structurally complete successful response (the inner bytes are
    /// not a real BasicOCSPResponse; the client checks those).
    fn successful() -> Vec<u8> {
        let oid = [0x06, 0x03, 0x2b, 0x06, 0x01];
        let octets = [0x04, 0x02, 0xaa, 0xbb];
        let inner_len = (oid.len() + octets.len()) as u8;
        let mut bytes = vec![0x30, inner_len];
        bytes.extend_from_slice(&oid);
        bytes.extend_from_slice(&octets);
        let mut tagged = vec![0xa0, bytes.len() as u8];
        tagged.extend_from_slice(&bytes);
        let mut body = vec![0x0a, 0x01, 0x00];
        body.extend_from_slice(&tagged);
        let mut der = vec![0x30, body.len() as u8];
        der.extend_from_slice(&body);
        der
    }

    #[test]
    fn a_successful_response_passes_and_damage_is_refused() {
        let good = successful();
        check_response(&good).unwrap();
        for len in 0..good.len() {
            assert!(check_response(&good[..len]).is_err(), "{len} bytes");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(check_response(&longer).is_err());
        assert!(check_response(b"-----BEGIN OCSP-----").is_err());
    }

    /// DER of `tag` with `contents`, the length in its shortest form.
    fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
        let len = contents.len();
        let mut out = vec![tag];
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(contents);
        out
    }

    /// A successful response whose inner response is `size` bytes.
    fn successful_of(size: usize) -> Vec<u8> {
        let mut inner = der(OBJECT_IDENTIFIER, &[0x2b, 0x06, 0x01]);
        inner.extend(der(OCTET_STRING, &vec![0x55; size]));
        let mut body = der(ENUMERATED, &[0]);
        body.extend(der(RESPONSE_BYTES, &der(SEQUENCE, &inner)));
        der(SEQUENCE, &body)
    }

    #[test]
    fn a_response_too_large_for_a_handshake_is_refused() {
        // TLS 1.3 carries the response in a certificate entry's extensions,
        // at most 65535 bytes: a larger one cannot be sent (rustls would
        // write a wrong length, or panic in a debug build).
        check_response(&successful_of(4000)).unwrap();
        let large = successful_of(70_000);
        let err = check_response(&large).unwrap_err();
        assert!(err.message().contains("bytes"), "{}", err.message());
        assert!(check_response(&successful_of(MAX_RESPONSE_LEN)).is_err());
    }

    #[test]
    fn lengths_not_in_their_shortest_form_are_refused() {
        // DER has one encoding per value: 0x81 0x05 is BER for 5.
        let good = successful();
        let mut long_form = vec![good[0], 0x81];
        long_form.extend_from_slice(&good[1..]);
        assert!(check_response(&long_form).is_err());
        let mut padded = vec![good[0], 0x82, 0x00];
        padded.extend_from_slice(&good[1..]);
        assert!(check_response(&padded).is_err());
        check_response(&successful_of(200)).unwrap();
    }

    #[test]
    fn an_unsuccessful_status_is_named() {
        let try_later = [0x30, 0x03, 0x0a, 0x01, 0x03];
        let err = check_response(&try_later).unwrap_err();
        assert!(err.message().contains("tryLater"), "{}", err.message());
    }
}
