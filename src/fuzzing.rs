//! Entry points for the fuzz targets (`fuzz/`) into parsers of peer bytes
//! that no public function reaches on its own: the PROXY protocol header
//! and the DTLS record layer. Compiled only with the `fuzzing` feature
//! (the fuzz crate and the tests enable it), hidden from the documentation,
//! not part of the API, and never called by the library itself.

use std::net::SocketAddr;

use crate::dtls::records;
use crate::proxy_protocol::{self, Parsed};

/// The longest PROXY protocol header the server accepts. (A function: a
/// public constant would reach the generated C header when the feature is
/// on.)
pub fn proxy_header_max_len() -> usize {
    proxy_protocol::MAX_HEADER_LEN
}

/// The parser's verdict on the first bytes of a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum ProxyVerdict {
    /// Valid so far; the server waits for more bytes.
    Incomplete,
    /// A whole header of `len` bytes naming `client` (or none: keep the
    /// transport's address).
    Complete {
        client: Option<SocketAddr>,
        len: usize,
    },
    /// Not a header; the server closes the connection.
    Malformed(String),
}

pub fn proxy_header(input: &[u8]) -> ProxyVerdict {
    match proxy_protocol::parse(input) {
        Ok(Parsed::Incomplete) => ProxyVerdict::Incomplete,
        Ok(Parsed::Complete { header, len }) => ProxyVerdict::Complete {
            client: header.client,
            len,
        },
        Err(malformed) => ProxyVerdict::Malformed(malformed.0),
    }
}

/// One record the DTLS server's framing check delimits in a datagram, with
/// what the server's later checks say of it.
#[derive(Debug)]
pub struct DtlsRecord {
    pub content_type: u8,
    pub epoch: u16,
    /// The record's bytes, header included.
    pub bytes: Vec<u8>,
    pub plausible: bool,
    pub plaintext_alert: Option<u8>,
    /// Whether the body holds only complete handshake fragments of
    /// messages numbered up to 8.
    pub fragments_within: bool,
}

pub fn dtls_records(datagram: &[u8]) -> Vec<DtlsRecord> {
    records::split(datagram)
        .iter()
        .map(|record| DtlsRecord {
            content_type: record.content_type,
            epoch: record.epoch,
            bytes: record.bytes.to_vec(),
            plausible: record.plausible(),
            plaintext_alert: record.plaintext_alert(),
            fragments_within: records::fragments_within(record.body(), 8),
        })
        .collect()
}
