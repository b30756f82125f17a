//! Targets for the parsers of peer bytes that run before any TLS: the PROXY
//! protocol header (its first bytes come from whoever connects) and the
//! DTLS record framing (any datagram from any address). Each is called
//! directly, so the fuzzer reaches every branch without a socket.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use sslserver::fuzzing::{self, ProxyVerdict};

/// The first bytes of a connection to a server that expects a PROXY
/// protocol header. Oracles:
/// - a complete header lies within the input and the accepted size, and is
///   judged on its own bytes (what follows it is the TLS stream);
/// - a header or a valid start received in parts is incomplete at every
///   earlier cut, never refused (TCP splits where it likes);
/// - refused bytes stay refused whatever follows them (no wait for more);
/// - a version 2 header for TCP names the source address of its block.
pub fn proxy_header(data: &[u8]) {
    let verdict = fuzzing::proxy_header(data);
    match &verdict {
        ProxyVerdict::Complete { client, len } => {
            let len = *len;
            assert!(
                len > 0 && len <= data.len() && len <= fuzzing::proxy_header_max_len(),
                "a {len}-byte header in {} bytes",
                data.len()
            );
            assert_eq!(fuzzing::proxy_header(&data[..len]), verdict);
            assert_incomplete_before(data, len);
            if let Some(expected) = v2_tcp_source(&data[..len]) {
                assert_eq!(*client, Some(expected), "the block's source address");
            }
        }
        ProxyVerdict::Incomplete => {
            assert!(
                data.len() < fuzzing::proxy_header_max_len(),
                "{} bytes and still incomplete",
                data.len()
            );
            assert_incomplete_before(data, data.len());
        }
        ProxyVerdict::Malformed(reason) => {
            assert!(!reason.is_empty(), "a refusal says why");
            let mut longer = data.to_vec();
            longer.extend_from_slice(b"\r\n\x00\x00\x00\x00");
            assert!(
                matches!(fuzzing::proxy_header(&longer), ProxyVerdict::Malformed(_)),
                "refused bytes accepted once more followed"
            );
        }
    }
}

fn assert_incomplete_before(data: &[u8], end: usize) {
    for cut in 0..end {
        assert_eq!(
            fuzzing::proxy_header(&data[..cut]),
            ProxyVerdict::Incomplete,
            "the first {cut} bytes of a valid start"
        );
    }
}

/// The source address of a version 2 PROXY command for TCP over IPv4 or
/// IPv6, read from the header's address block.
fn v2_tcp_source(header: &[u8]) -> Option<SocketAddr> {
    const SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    if !header.starts_with(SIGNATURE) || header.get(12) != Some(&0x21) {
        return None;
    }
    let block = header.get(16..)?;
    match header[13] {
        0x11 => {
            let ip = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([block[8], block[9]]),
            ))
        }
        0x21 => {
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&block[..16]).ok()?);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([block[32], block[33]]),
            ))
        }
        _ => None,
    }
}

/// One datagram to the DTLS server. Oracles: the records found tile the
/// start of the datagram, each a 13-byte DTLS header (a known content type,
/// version 1.0 or 1.2) and the non-empty body its length field declares,
/// at most 2^14 + 2048 bytes; what the later checks say of a record follows
/// from its header (only epochs 0 and 1 can be genuine; a plaintext alert
/// is a 2-byte alert body).
pub fn dtls_records(data: &[u8]) {
    let mut offset = 0;
    for record in fuzzing::dtls_records(data) {
        let bytes = &record.bytes;
        assert!(
            data[offset..].starts_with(bytes),
            "a record not at offset {offset}"
        );
        assert!(bytes.len() > 13, "a record without a body");
        let declared = usize::from(u16::from_be_bytes([bytes[11], bytes[12]]));
        assert_eq!(bytes.len(), 13 + declared, "the record's length field");
        assert!(declared <= 16384 + 2048, "a {declared}-byte body");
        assert!((20..=23).contains(&bytes[0]), "content type {}", bytes[0]);
        assert!(bytes[1] == 0xfe && (bytes[2] == 0xff || bytes[2] == 0xfd));
        assert_eq!(record.content_type, bytes[0]);
        assert_eq!(record.epoch, u16::from_be_bytes([bytes[3], bytes[4]]));
        let genuine_kind = match record.epoch {
            0 => record.content_type != 23,
            1 => record.content_type != 20,
            _ => false,
        };
        assert_eq!(record.plausible, genuine_kind, "epoch {}", record.epoch);
        if let Some(description) = record.plaintext_alert {
            assert!(record.content_type == 21 && declared == 2);
            assert_eq!(description, bytes[14]);
        }
        if record.fragments_within {
            assert!(
                declared >= 13,
                "a fragment needs its 12-byte header and a byte"
            );
        }
        offset += bytes.len();
    }
}
