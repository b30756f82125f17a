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
///   earlier cut, never refused (TCP splits where it likes), and nothing is
///   still incomplete at the accepted size;
/// - from the first refused cut on, every longer cut is refused too (no
///   wait for bytes that cannot help);
/// - the client address returned is the source address of a version 1 TCP
///   line (read with the standard library) or of a version 2 TCP block.
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
            if let Some(expected) = v1_source(&data[..len]) {
                assert_eq!(*client, expected, "the line's source address");
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
            // Refused as soon as the bytes allow, and never taken back: from
            // the first refused cut on, every longer one is refused too.
            let first = (0..=data.len())
                .find(|&cut| {
                    matches!(
                        fuzzing::proxy_header(&data[..cut]),
                        ProxyVerdict::Malformed(_)
                    )
                })
                .expect("the whole input is refused");
            for cut in first..=data.len() {
                assert!(
                    matches!(
                        fuzzing::proxy_header(&data[..cut]),
                        ProxyVerdict::Malformed(_)
                    ),
                    "refused at {first} bytes, accepted again at {cut}"
                );
            }
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

/// What a complete version 1 line names, read with the standard library:
/// the source address and port of a TCP4 or TCP6 line, none for UNKNOWN.
fn v1_source(header: &[u8]) -> Option<Option<SocketAddr>> {
    let line = std::str::from_utf8(header.strip_prefix(b"PROXY ")?).ok()?;
    let fields: Vec<&str> = line.trim_end_matches("\r\n").split(' ').collect();
    match fields.as_slice() {
        ["UNKNOWN", ..] => Some(None),
        ["TCP4" | "TCP6", source, _, port, _] => {
            let ip: std::net::IpAddr = source.parse().expect("a source the parser accepted");
            let port: u16 = port.parse().expect("a port the parser accepted");
            Some(Some(SocketAddr::new(ip, port)))
        }
        other => panic!("a complete version 1 line of an unexpected form: {other:?}"),
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
/// at most 2^14 + 2048 bytes, and the split stops only where no further
/// record can be framed; what the later checks say of a record follows from
/// its bytes (only epochs 0 and 1 can be genuine; a plaintext alert is
/// exactly a 2-byte alert body; a handshake body is judged fragment by
/// fragment, here independently of the library's code).
pub fn dtls_records(data: &[u8]) {
    let mut offset = 0;
    for record in fuzzing::dtls_records(data) {
        let bytes = &record.bytes;
        assert!(
            data[offset..].starts_with(bytes),
            "a record not at offset {offset}"
        );
        assert_eq!(
            frame_len(&data[offset..]),
            Some(bytes.len()),
            "a record that its header does not frame"
        );
        let declared = bytes.len() - 13;
        assert_eq!(record.content_type, bytes[0]);
        assert_eq!(record.epoch, u16::from_be_bytes([bytes[3], bytes[4]]));
        let genuine_kind = match record.epoch {
            0 => record.content_type != 23,
            1 => record.content_type != 20,
            _ => false,
        };
        assert_eq!(record.plausible, genuine_kind, "epoch {}", record.epoch);
        let expected_alert = (record.content_type == 21 && declared == 2).then(|| bytes[14]);
        assert_eq!(
            record.plaintext_alert, expected_alert,
            "the plaintext alert"
        );
        assert_eq!(
            record.fragments_within,
            fragments_within(&bytes[13..], MAX_HANDSHAKE_SEQ),
            "the body's handshake fragments"
        );
        offset += bytes.len();
    }
    // The split stops only where no further record can be framed.
    assert_eq!(
        frame_len(&data[offset..]),
        None,
        "a well-framed record at offset {offset} was left out"
    );
}

/// The highest handshake message sequence accepted: the bound that
/// `sslserver::fuzzing::dtls_records` gives the library's check.
const MAX_HANDSHAKE_SEQ: u16 = 8;

/// The length of the record at the start of `bytes` if its header frames
/// one: a known content type (20-23), version 1.0 or 1.2, and a non-empty
/// body of at most 2^14 + 2048 bytes that lies within `bytes`.
fn frame_len(bytes: &[u8]) -> Option<usize> {
    let header = bytes.get(..13)?;
    let declared = usize::from(u16::from_be_bytes([header[11], header[12]]));
    let framed = (20..=23).contains(&header[0])
        && header[1] == 0xfe
        && (header[2] == 0xff || header[2] == 0xfd)
        && declared > 0
        && declared <= 16384 + 2048
        && 13 + declared <= bytes.len();
    framed.then_some(13 + declared)
}

/// Whether a handshake record's body is one or more fragments, each with
/// its 12-byte header, non-empty, inside its message and the body, of a
/// message numbered at most `max_seq`.
fn fragments_within(body: &[u8], max_seq: u16) -> bool {
    let be24 = |b: &[u8]| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
    let mut at = 0;
    while at < body.len() {
        let Some(header) = body.get(at..at + 12) else {
            return false;
        };
        let (length, seq) = (
            be24(&header[1..4]),
            u16::from_be_bytes([header[4], header[5]]),
        );
        let (offset, len) = (be24(&header[6..9]), be24(&header[9..12]));
        if len == 0 || offset + len > length || seq > max_seq || at + 12 + len > body.len() {
            return false;
        }
        at += 12 + len;
    }
    !body.is_empty()
}
