//! HAProxy's PROXY protocol (versions 1 and 2): the header a load balancer
//! puts in front of the TCP stream it relays, naming the client it accepted
//! the connection from.
//!
//! The parser is strict: anything that is not exactly a header as the
//! specification (haproxy's `doc/proxy-protocol.txt`) describes it is
//! refused, since a server that guesses would let any client pick the
//! address it is logged and judged by.
//!
//! - Version 1 is one line of text, `PROXY TCP4|TCP6|UNKNOWN ...\r\n`, at
//!   most 107 bytes with the CRLF. Single spaces, addresses of the announced
//!   family (a TCP6 address may end in dotted IPv4, as HAProxy writes
//!   IPv4-mapped ones), no leading zeros in numbers, ports up to 65535. After
//!   `UNKNOWN` the rest of the line is ignored, as the specification asks.
//! - Version 2 is binary: a 12-byte signature, the version (2) and command
//!   (LOCAL or PROXY), the family and transport, a 2-byte length and that
//!   many bytes: the addresses, then TLVs, which are checked for framing and
//!   skipped. A whole version 2 header is at most [`MAX_HEADER_LEN`] bytes.
//!
//! A header names the client (TCP over IPv4 or IPv6), or says to keep the
//! transport's address: a v1 `UNKNOWN` line, a v2 LOCAL command (a health
//! check by the balancer itself), or a v2 family or transport the server
//! does not use (AF_UNSPEC, AF_UNIX, UDP).
//!
//! Reading (see [`receive`]) happens before the TLS handshake, on the
//! connection's handshake thread and within its deadline.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rustix::event::PollFlags;
use rustix::io::Errno;
use rustix::net::RecvFlags;

use crate::connection::Connection;
use crate::handshake::HandshakeDeadline;
use crate::types::SocketError;

/// The longest header accepted, in bytes: version 2's 16-byte fixed part and
/// its addresses and TLVs. Balancers send a few dozen to a few hundred bytes
/// (addresses, an authority, a unique ID, TLS details); a longer header is
/// refused, so a peer cannot make the server hold an unbounded one.
pub(crate) const MAX_HEADER_LEN: usize = 1024;

/// The longest version 1 line, CRLF included (the specification's bound).
const MAX_V1_LEN: usize = 107;

/// Version 2's fixed part: signature, version and command, family and
/// transport, length.
const V2_FIXED_LEN: usize = 16;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// What a complete, valid header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// The client's address and port; `None`: keep the transport's (LOCAL,
    /// UNKNOWN, or a family the server does not use).
    pub(crate) client: Option<SocketAddr>,
}

/// The outcome of looking at the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// Valid so far; more bytes are needed.
    Incomplete,
    /// A whole header of `len` bytes; what follows belongs to TLS.
    Complete { header: Header, len: usize },
}

/// Why the bytes are not a PROXY protocol header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) String);

fn malformed(text: impl Into<String>) -> Malformed {
    Malformed(text.into())
}

/// Looks at the first bytes of a connection. Refuses as early as the bytes
/// allow (a TLS ClientHello fails on its first byte), so a peer that does
/// not speak the protocol is not waited for.
pub(crate) fn parse(input: &[u8]) -> Result<Parsed, Malformed> {
    let Some(&first) = input.first() else {
        return Ok(Parsed::Incomplete);
    };
    if first == V2_SIGNATURE[0] {
        parse_v2(input)
    } else if first == V1_PREFIX[0] {
        parse_v1(input)
    } else {
        Err(malformed(format!(
            "no PROXY protocol header (first byte 0x{first:02x})"
        )))
    }
}

fn parse_v1(input: &[u8]) -> Result<Parsed, Malformed> {
    let start = input.len().min(V1_PREFIX.len());
    if input[..start] != V1_PREFIX[..start] {
        return Err(malformed("no PROXY protocol header (bad version 1 prefix)"));
    }
    // The line ends at the first CR, which must be followed by LF; a lone
    // LF (or CR) is refused, as are bytes that are not printable ASCII. A
    // CR is looked for where its LF still fits in the longest line.
    let mut end = None;
    for (i, &byte) in input.iter().enumerate().take(MAX_V1_LEN - 1) {
        match byte {
            b'\r' => {
                match input.get(i + 1) {
                    Some(b'\n') => end = Some(i),
                    Some(_) => return Err(malformed("PROXY v1: CR without LF")),
                    None => {}
                }
                break;
            }
            b'\n' => return Err(malformed("PROXY v1: LF without CR")),
            b' '..=b'~' => {}
            other => {
                return Err(malformed(format!(
                    "PROXY v1: byte 0x{other:02x} in the header line"
                )))
            }
        }
    }
    let Some(end) = end else {
        if input.len() >= MAX_V1_LEN {
            return Err(malformed(format!(
                "PROXY v1: no CRLF within {MAX_V1_LEN} bytes"
            )));
        }
        return Ok(Parsed::Incomplete);
    };
    // Printable ASCII only, checked above.
    let line = std::str::from_utf8(&input[V1_PREFIX.len()..end])
        .map_err(|_| malformed("PROXY v1: the line is not ASCII"))?;
    let header = parse_v1_line(line)?;
    Ok(Parsed::Complete {
        header,
        len: end + 2,
    })
}

/// The line after "PROXY ", without the CRLF.
fn parse_v1_line(line: &str) -> Result<Header, Malformed> {
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Ok(Header { client: None });
    }
    let fields: Vec<&str> = line.split(' ').collect();
    let [family, source, destination, source_port, destination_port] = fields[..] else {
        return Err(malformed(format!(
            "PROXY v1: expected TCP4|TCP6 and four fields separated by single spaces, got {line:?}"
        )));
    };
    let parse_address: fn(&str) -> Result<IpAddr, Malformed> = match family {
        "TCP4" => |text| parse_ipv4(text).map(IpAddr::V4),
        "TCP6" => |text| parse_ipv6(text).map(IpAddr::V6),
        _ => {
            return Err(malformed(format!(
                "PROXY v1: unknown protocol {family:?} (TCP4, TCP6 or UNKNOWN)"
            )))
        }
    };
    let source = parse_address(source)?;
    parse_address(destination)?;
    let source_port = parse_port(source_port)?;
    parse_port(destination_port)?;
    Ok(Header {
        client: Some(SocketAddr::new(source, source_port)),
    })
}

/// A decimal number without leading zeros, at most `max`.
fn parse_decimal(text: &str, max: u32, what: &str) -> Result<u32, Malformed> {
    let bad = || malformed(format!("PROXY v1: bad {what} {text:?}"));
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || text.len() > 5 || (text.len() > 1 && text.starts_with('0')) {
        return Err(bad());
    }
    let value: u32 = text.parse().map_err(|_| bad())?;
    if value > max {
        return Err(bad());
    }
    Ok(value)
}

fn parse_port(text: &str) -> Result<u16, Malformed> {
    parse_decimal(text, u32::from(u16::MAX), "port").map(|p| p as u16)
}

/// Exactly four decimal octets, no leading zeros (they would read as octal
/// elsewhere).
fn parse_ipv4(text: &str) -> Result<Ipv4Addr, Malformed> {
    let octets: Vec<&str> = text.split('.').collect();
    let [a, b, c, d] = octets[..] else {
        return Err(malformed(format!("PROXY v1: bad IPv4 address {text:?}")));
    };
    let mut bytes = [0u8; 4];
    for (byte, octet) in bytes.iter_mut().zip([a, b, c, d]) {
        *byte = parse_decimal(octet, 255, "IPv4 address octet")? as u8;
    }
    Ok(Ipv4Addr::from(bytes))
}

/// Hexadecimal groups and colons (at most one "::"), no zone, no brackets.
/// The last 32 bits may be written as a dotted IPv4 address: HAProxy writes
/// an IPv4 side of a TCP6 line (a client of a dual-stack listener, or an
/// IPv6 path to this server) in the IPv4-mapped form `inet_ntop` gives,
/// "::ffff:203.0.113.7"; refusing it would refuse every IPv4 client behind
/// such a balancer. Its octets are as strict as a TCP4 line's (the standard
/// parser refuses leading zeros there too). It is returned in that mapped
/// form; the connection reports it as the IPv4 client it names.
fn parse_ipv6(text: &str) -> Result<Ipv6Addr, Malformed> {
    let bad = || malformed(format!("PROXY v1: bad IPv6 address {text:?}"));
    let allowed = text
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    // INET6_ADDRSTRLEN without its NUL: the longest text form.
    if !allowed || text.len() > 45 {
        return Err(bad());
    }
    text.parse().map_err(|_| bad())
}

fn parse_v2(input: &[u8]) -> Result<Parsed, Malformed> {
    let start = input.len().min(V2_SIGNATURE.len());
    if input[..start] != V2_SIGNATURE[..start] {
        return Err(malformed(
            "no PROXY protocol header (bad version 2 signature)",
        ));
    }
    let Some(fixed) = input.get(..V2_FIXED_LEN) else {
        // The version byte may already be there: refuse a wrong one early.
        if let Some(&version_command) = input.get(12) {
            check_version_command(version_command)?;
        }
        return Ok(Parsed::Incomplete);
    };
    let local = check_version_command(fixed[12])?;
    let family_transport = fixed[13];
    let body_len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let len = V2_FIXED_LEN + body_len;
    if len > MAX_HEADER_LEN {
        return Err(malformed(format!(
            "PROXY v2: a {len}-byte header is longer than the {MAX_HEADER_LEN} bytes accepted"
        )));
    }
    // LOCAL: the balancer's own connection (a health check). The family
    // and whatever the block holds are ignored, as the specification asks.
    let address_len = if local {
        None
    } else {
        Some(address_len(family_transport)?)
    };
    // A length too short for the addresses is refused now, not after the
    // rest of the header has been waited for.
    if let Some(needed) = address_len.filter(|&needed| body_len < needed) {
        return Err(malformed(format!(
            "PROXY v2: {body_len} bytes of addresses for family and transport \
             0x{family_transport:02x}, which needs {needed}"
        )));
    }
    let Some(body) = input.get(V2_FIXED_LEN..len) else {
        return Ok(Parsed::Incomplete);
    };
    let client = match address_len {
        None => None,
        Some(address_len) => client_of(family_transport, address_len, body)?,
    };
    Ok(Parsed::Complete {
        header: Header { client },
        len,
    })
}

/// The size of the address block of a PROXY command's family and
/// transport: only the combinations the specification defines.
fn address_len(family_transport: u8) -> Result<usize, Malformed> {
    match family_transport {
        0x00 => Ok(0),
        0x11 | 0x12 => Ok(12),
        0x21 | 0x22 => Ok(36),
        0x31 | 0x32 => Ok(216),
        _ => Err(malformed(format!(
            "PROXY v2: unknown address family and transport 0x{family_transport:02x}"
        ))),
    }
}

/// The client a PROXY command's block names. Only TCP over IPv4 or IPv6
/// names one; other families keep the transport address. After an
/// AF_UNSPEC block nothing is parsed (its addresses have no known size);
/// otherwise the TLVs after the addresses are checked and skipped.
fn client_of(
    family_transport: u8,
    address_len: usize,
    body: &[u8],
) -> Result<Option<SocketAddr>, Malformed> {
    if family_transport == 0x00 {
        return Ok(None);
    }
    // parse_v2 refuses a shorter body before waiting for it; checked here
    // too, so no change there can turn peer bytes into a panic.
    let (addresses, tlvs) = body
        .split_at_checked(address_len)
        .ok_or_else(|| malformed("PROXY v2: the address block is shorter than its family needs"))?;
    check_tlvs(tlvs)?;
    let client = match family_transport {
        0x11 => {
            let source = <[u8; 4]>::try_from(&addresses[..4]).expect("4 bytes");
            let port = u16::from_be_bytes([addresses[8], addresses[9]]);
            Some(SocketAddr::new(Ipv4Addr::from(source).into(), port))
        }
        0x21 => {
            let source = <[u8; 16]>::try_from(&addresses[..16]).expect("16 bytes");
            let port = u16::from_be_bytes([addresses[32], addresses[33]]);
            Some(SocketAddr::new(Ipv6Addr::from(source).into(), port))
        }
        _ => None,
    };
    Ok(client)
}

/// True for LOCAL, false for PROXY; anything else is refused.
fn check_version_command(byte: u8) -> Result<bool, Malformed> {
    match (byte >> 4, byte & 0x0F) {
        (0x2, 0x0) => Ok(true),
        (0x2, 0x1) => Ok(false),
        (0x2, command) => Err(malformed(format!(
            "PROXY v2: unknown command 0x{command:x} (LOCAL or PROXY)"
        ))),
        (version, _) => Err(malformed(format!(
            "PROXY v2: unsupported version {version} (only 2)"
        ))),
    }
}

/// Type-length-value records, back to back up to the header's end: they are
/// skipped, but must be framed correctly.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), Malformed> {
    while !tlvs.is_empty() {
        let [kind, high, low, rest @ ..] = tlvs else {
            return Err(malformed(format!(
                "PROXY v2: {} stray bytes after the last TLV",
                tlvs.len()
            )));
        };
        let value_len = usize::from(u16::from_be_bytes([*high, *low]));
        if rest.len() < value_len {
            return Err(malformed(format!(
                "PROXY v2: TLV of type 0x{kind:02x} with {value_len} bytes runs past the header"
            )));
        }
        tlvs = &rest[value_len..];
    }
    Ok(())
}

/// Why no valid header was received.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The handshake deadline passed first.
    Timeout,
    /// The bytes received are not a header.
    Malformed(Malformed),
    /// The peer closed the connection after this many bytes.
    Closed(usize),
    Io(io::Error),
}

impl Failure {
    /// The error and text ERROR_OCCURRED reports: SOCKET_TIMEOUT when
    /// nothing valid came in time, SSL_HANDSHAKE_FAILED for anything else
    /// (the peer sent no valid header).
    pub(crate) fn describe(&self, timeout_ms: i32) -> (SocketError, String) {
        match self {
            Failure::Timeout => (
                SocketError::SocketTimeout,
                format!("no complete PROXY protocol header within {timeout_ms} ms"),
            ),
            Failure::Malformed(Malformed(text)) => (
                SocketError::SslHandshakeFailed,
                format!("bad PROXY protocol header: {text}"),
            ),
            Failure::Closed(0) => (
                SocketError::SslHandshakeFailed,
                "the peer closed the connection before sending a PROXY protocol header".to_string(),
            ),
            Failure::Closed(n) => (
                SocketError::SslHandshakeFailed,
                format!(
                    "the peer closed the connection after {n} bytes of a PROXY protocol header"
                ),
            ),
            Failure::Io(err) => (
                SocketError::SslHandshakeFailed,
                format!(
                    "reading the PROXY protocol header failed: {}",
                    crate::error::os_reason(err)
                ),
            ),
        }
    }
}

impl From<crate::handshake::WaitFailed> for Failure {
    fn from(failed: crate::handshake::WaitFailed) -> Self {
        match failed {
            crate::handshake::WaitFailed::Expired => Failure::Timeout,
            crate::handshake::WaitFailed::Io(e) => Failure::Io(e),
        }
    }
}

/// Receives the header that starts `connection`, within `deadline`.
///
/// Bytes are received into a buffer on the stack, as many as one receive
/// gives, so a header and the ClientHello behind it (which a balancer sends
/// in one packet) cost one system call. What follows the header is left in
/// the connection's receive buffer, which the handshake reads first: no
/// byte of the TLS stream is lost or read twice. Reading exactly (a byte at
/// a time up to a version 1 CRLF) would cost a system call per byte; peeking
/// cannot wait for the rest of a split header without spinning. A header
/// split across TCP segments is put together from several receives, each
/// bounded by the deadline. On failure, bytes received behind a bad header
/// are dropped with the connection: nothing is handed to TLS.
pub(crate) fn receive(
    connection: &Connection,
    deadline: HandshakeDeadline,
) -> Result<Header, Failure> {
    let mut buffer = [0u8; MAX_HEADER_LEN];
    let mut filled = 0;
    loop {
        let received = rustix::net::recv(
            connection.stream(),
            &mut buffer[filled..],
            RecvFlags::DONTWAIT,
        );
        match received {
            Ok((0, _)) => return Err(Failure::Closed(filled)),
            Ok((n, _)) => filled += n,
            Err(Errno::AGAIN) => {
                deadline.wait_for(connection.stream(), PollFlags::IN)?;
                continue;
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(Failure::Io(e.into())),
        }
        match parse(&buffer[..filled]).map_err(Failure::Malformed)? {
            Parsed::Complete { header, len } => {
                connection.keep_for_handshake(&buffer[len..filled]);
                return Ok(header);
            }
            // Every header fits the buffer: a full one is complete or refused.
            Parsed::Incomplete if filled == buffer.len() => {
                return Err(Failure::Malformed(malformed("the header does not end")))
            }
            Parsed::Incomplete => {}
        }
    }
}

#[cfg(test)]
mod tests;
