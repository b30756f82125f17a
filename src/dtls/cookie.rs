//! The stateless cookie exchange in front of the peer table (RFC 6347
//! §4.2.1, what Qt's `QDtlsClientVerifier` does).
//!
//! A ClientHello from an address the server holds no session for is answered
//! with a HelloVerifyRequest whose cookie is the time it was made and an HMAC
//! over that time, the peer's address and port and the ClientHello's stable
//! fields (version, random, session id, cipher suites, compression methods),
//! keyed with a server secret. Nothing is stored: the server recognises the
//! cookie when the ClientHello comes back with it. The time tells a cookie
//! made before an address's current session began, which only a replay of an
//! earlier session's ClientHello can carry (RFC 6347 4.2.8: such a replay
//! must not end the session). A spoofed source address never sees the cookie, so it can
//! make the server send one small datagram per ClientHello and nothing more.
//!
//! The secret rotates; the previous one stays valid for one more period, so
//! a cookie is accepted for between one and two periods after it was made.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The cookie length. It is also the length of the engine's own cookies (see
/// `engine.rs`, which relies on it).
pub(crate) const COOKIE_LEN: usize = 20;
/// Size of the server secret.
pub(crate) const SECRET_LEN: usize = 32;
/// The cookie's first bytes: when it was made, in ms since the jar was
/// created (48 bits: 8,000 years). The rest is the MAC (112 bits).
const ISSUED_LEN: usize = 6;

const RECORD_HEADER_LEN: usize = 13;
const HANDSHAKE_HEADER_LEN: usize = 12;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const HANDSHAKE_HELLO_VERIFY_REQUEST: u8 = 3;
/// DTLS 1.0 on the wire: RFC 6347 §4.2.1 asks a DTLS 1.2 server to use it in
/// the HelloVerifyRequest whatever version is negotiated later.
const DTLS_1_0: [u8; 2] = [0xfe, 0xff];
/// Largest record sequence number (48 bits).
const MAX_RECORD_SEQ: u64 = (1 << 48) - 1;

/// The first record of a datagram, as far as the cookie check needs it.
#[derive(Debug)]
pub(crate) struct RecordHeader {
    pub content_type: u8,
    pub epoch: u16,
    pub sequence: u64,
}

/// Reads the header of the first record in `datagram`, if it has one.
pub(crate) fn first_record(datagram: &[u8]) -> Option<RecordHeader> {
    let header = datagram.get(..RECORD_HEADER_LEN)?;
    Some(RecordHeader {
        content_type: header[0],
        epoch: u16::from_be_bytes([header[3], header[4]]),
        sequence: be48(&header[5..11]),
    })
}

fn be48(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |n, &b| (n << 8) | u64::from(b))
}

fn be24(bytes: &[u8]) -> usize {
    bytes.iter().fold(0, |n, &b| (n << 8) | usize::from(b))
}

fn put_be24(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_be_bytes()[1..]);
}

/// A ClientHello that is the first record of a datagram, in one unfragmented
/// epoch-0 record (as every client sends it: a ClientHello is small).
#[derive(Debug)]
pub(crate) struct ClientHello<'a> {
    /// The record's sequence number.
    pub record_sequence: u64,
    /// The handshake message_seq (0 before the cookie, 1 after).
    pub message_sequence: u16,
    /// The record's version field, as sent.
    record_version: [u8; 2],
    /// The handshake message, header included.
    message: &'a [u8],
    /// Where the body's fields are, as offsets into `message`.
    random: Range<usize>,
    /// Version, random and session id (with its length byte).
    stable_head: Range<usize>,
    /// The cookie's length byte and the cookie.
    cookie_vector: Range<usize>,
    /// Cipher suites and compression methods, with their length fields.
    stable_tail: Range<usize>,
}

impl<'a> ClientHello<'a> {
    /// Parses `datagram`'s first record as a ClientHello; `None` if it is
    /// anything else or malformed.
    pub(crate) fn parse(datagram: &'a [u8]) -> Option<Self> {
        let record = first_record(datagram)?;
        if record.content_type != CONTENT_HANDSHAKE || record.epoch != 0 {
            return None;
        }
        let header = &datagram[..RECORD_HEADER_LEN];
        let record_len = usize::from(u16::from_be_bytes([header[11], header[12]]));
        let payload = datagram.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + record_len)?;
        let hs = payload.get(..HANDSHAKE_HEADER_LEN)?;
        if hs[0] != HANDSHAKE_CLIENT_HELLO {
            return None;
        }
        let length = be24(&hs[1..4]);
        let message_sequence = u16::from_be_bytes([hs[4], hs[5]]);
        let fragment_offset = be24(&hs[6..9]);
        let fragment_length = be24(&hs[9..12]);
        if fragment_offset != 0 || fragment_length != length {
            return None;
        }
        let message = payload.get(..HANDSHAKE_HEADER_LEN + length)?;
        // Walk the body: version(2) random(32) session_id<0..32>
        // cookie<0..255> cipher_suites<2..2^16-2> compression<1..255> ...
        let mut at = HANDSHAKE_HEADER_LEN;
        let start = at;
        at += 2;
        let random = at..at + 32;
        at += 32;
        let session_len = usize::from(*message.get(at)?);
        if session_len > 32 {
            return None;
        }
        at += 1 + session_len;
        let stable_head = start..at;
        let cookie_len = usize::from(*message.get(at)?);
        let cookie_vector = at..at + 1 + cookie_len;
        at += 1 + cookie_len;
        let suites_len = usize::from(u16::from_be_bytes([
            *message.get(at)?,
            *message.get(at + 1)?,
        ]));
        if suites_len < 2 || suites_len % 2 != 0 {
            return None;
        }
        let tail_start = at;
        at += 2 + suites_len;
        let compression_len = usize::from(*message.get(at)?);
        if compression_len < 1 {
            return None;
        }
        at += 1 + compression_len;
        if at > message.len() {
            return None;
        }
        Some(ClientHello {
            record_sequence: record.sequence,
            message_sequence,
            record_version: [header[1], header[2]],
            message,
            random,
            stable_head,
            cookie_vector,
            stable_tail: tail_start..at,
        })
    }

    pub(crate) fn cookie(&self) -> &'a [u8] {
        &self.message[self.cookie_vector.start + 1..self.cookie_vector.end]
    }

    pub(crate) fn random(&self) -> &'a [u8] {
        &self.message[self.random.clone()]
    }

    /// This ClientHello as the client sent it before the cookie exchange:
    /// the same message without the cookie, message_seq 0, in an epoch-0
    /// record numbered `record_sequence`. The DTLS engine is shown this
    /// first, so that its own state machine makes the same exchange (see
    /// `engine.rs`).
    pub(crate) fn without_cookie(&self, record_sequence: u64) -> Vec<u8> {
        let body_len = self.message.len() - HANDSHAKE_HEADER_LEN - self.cookie().len();
        let mut out = Vec::with_capacity(RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN + body_len);
        out.push(CONTENT_HANDSHAKE);
        out.extend_from_slice(&self.record_version);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(record_sequence & MAX_RECORD_SEQ).to_be_bytes()[2..]);
        out.extend_from_slice(&((HANDSHAKE_HEADER_LEN + body_len) as u16).to_be_bytes());
        out.push(HANDSHAKE_CLIENT_HELLO);
        put_be24(&mut out, body_len);
        out.extend_from_slice(&[0, 0]);
        put_be24(&mut out, 0);
        put_be24(&mut out, body_len);
        out.extend_from_slice(&self.message[HANDSHAKE_HEADER_LEN..self.cookie_vector.start]);
        out.push(0);
        out.extend_from_slice(&self.message[self.cookie_vector.end..]);
        out
    }
}

/// A HelloVerifyRequest datagram carrying `cookie`, answering a ClientHello
/// in the record numbered `record_sequence` (RFC 6347 §4.2.1: the reply
/// reuses that number).
pub(crate) fn hello_verify_request(record_sequence: u64, cookie: &[u8]) -> Vec<u8> {
    let body_len = 2 + 1 + cookie.len();
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN + body_len);
    out.push(CONTENT_HANDSHAKE);
    out.extend_from_slice(&DTLS_1_0);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(record_sequence & MAX_RECORD_SEQ).to_be_bytes()[2..]);
    out.extend_from_slice(&((HANDSHAKE_HEADER_LEN + body_len) as u16).to_be_bytes());
    out.push(HANDSHAKE_HELLO_VERIFY_REQUEST);
    put_be24(&mut out, body_len);
    out.extend_from_slice(&[0, 0]);
    put_be24(&mut out, 0);
    put_be24(&mut out, body_len);
    out.extend_from_slice(&DTLS_1_0);
    out.push(cookie.len() as u8);
    out.extend_from_slice(cookie);
    out
}

/// The cookie inside a HelloVerifyRequest datagram, if that is what it is.
pub(crate) fn hello_verify_cookie(datagram: &[u8]) -> Option<&[u8]> {
    let record = first_record(datagram)?;
    if record.content_type != CONTENT_HANDSHAKE || record.epoch != 0 {
        return None;
    }
    let hs = datagram.get(RECORD_HEADER_LEN..)?;
    if *hs.first()? != HANDSHAKE_HELLO_VERIFY_REQUEST {
        return None;
    }
    let body = hs.get(HANDSHAKE_HEADER_LEN..)?;
    let len = usize::from(*body.get(2)?);
    body.get(3..3 + len)
}

/// The server secrets: the current one and the one before it.
pub(crate) struct CookieJar {
    /// What cookie times count from.
    created: Instant,
    current: [u8; SECRET_LEN],
    previous: Option<[u8; SECRET_LEN]>,
    rotated_at: Instant,
    period: Duration,
}

impl CookieJar {
    pub(crate) fn new(secret: [u8; SECRET_LEN], now: Instant, period: Duration) -> Self {
        CookieJar {
            created: now,
            current: secret,
            previous: None,
            rotated_at: now,
            period,
        }
    }

    /// When the secret next needs to rotate.
    pub(crate) fn next_rotation(&self) -> Instant {
        self.rotated_at + self.period
    }

    /// Rotates if a period has passed: `fresh` makes the new secret. After
    /// two idle periods the old secret is dropped too.
    pub(crate) fn rotate_if_due(&mut self, now: Instant, fresh: impl FnOnce() -> [u8; SECRET_LEN]) {
        let age = now.saturating_duration_since(self.rotated_at);
        if age < self.period {
            return;
        }
        self.previous = if age < self.period * 2 {
            Some(self.current)
        } else {
            None
        };
        self.current = fresh();
        self.rotated_at = now;
    }

    /// `at` as a cookie time: ms since the jar was created.
    pub(crate) fn time(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.created).as_millis())
            .unwrap_or(u64::MAX)
            .min(MAX_ISSUED)
    }

    /// The cookie for `hello` from `peer`, made `now`, under the current
    /// secret.
    pub(crate) fn cookie(
        &self,
        peer: SocketAddr,
        hello: &ClientHello<'_>,
        now: Instant,
    ) -> [u8; COOKIE_LEN] {
        compute(&self.current, self.time(now), peer, hello)
    }

    /// When the cookie in `hello` was made (see `time`), if it is one this
    /// server made for `peer` with the current or the previous secret.
    pub(crate) fn verify(&self, peer: SocketAddr, hello: &ClientHello<'_>) -> Option<u64> {
        let cookie = hello.cookie();
        if cookie.len() != COOKIE_LEN {
            return None;
        }
        let issued = be48(&cookie[..ISSUED_LEN]);
        let matches = |secret: &[u8; SECRET_LEN]| {
            constant_time_eq(&compute(secret, issued, peer, hello), cookie)
        };
        (matches(&self.current) || self.previous.as_ref().is_some_and(matches)).then_some(issued)
    }
}

/// The largest cookie time (48 bits).
const MAX_ISSUED: u64 = (1 << 48) - 1;

fn compute(
    secret: &[u8; SECRET_LEN],
    issued: u64,
    peer: SocketAddr,
    hello: &ClientHello<'_>,
) -> [u8; COOKIE_LEN] {
    let issued = &issued.to_be_bytes()[8 - ISSUED_LEN..];
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(issued);
    match peer.ip() {
        IpAddr::V4(ip) => {
            mac.update(&[4]);
            mac.update(&ip.octets());
        }
        IpAddr::V6(ip) => {
            mac.update(&[6]);
            mac.update(&ip.octets());
        }
    }
    mac.update(&peer.port().to_be_bytes());
    mac.update(&hello.message[hello.stable_head.clone()]);
    mac.update(&hello.message[hello.stable_tail.clone()]);
    let tag = mac.finalize().into_bytes();
    let mut cookie = [0; COOKIE_LEN];
    cookie[..ISSUED_LEN].copy_from_slice(issued);
    cookie[ISSUED_LEN..].copy_from_slice(&tag[..COOKIE_LEN - ISSUED_LEN]);
    cookie
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A ClientHello datagram for the tests: PSK-AES128-GCM-SHA256, the given
/// random and cookie, in record `record_sequence` with message_seq
/// `message_sequence`.
#[cfg(test)]
fn client_hello_datagram(
    random: [u8; 32],
    cookie: &[u8],
    record_sequence: u64,
    message_sequence: u16,
) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[0xfe, 0xfd]); // DTLS 1.2
    body.extend_from_slice(&random);
    body.push(0); // no session id
    body.push(cookie.len() as u8);
    body.extend_from_slice(cookie);
    body.extend_from_slice(&[0, 2, 0x00, 0xa8]); // TLS_PSK_WITH_AES_128_GCM_SHA256
    body.extend_from_slice(&[1, 0]); // null compression
                                     // extensions: extended_master_secret (23), empty
    body.extend_from_slice(&[0, 4, 0, 23, 0, 0]);
    let mut out = Vec::new();
    out.push(CONTENT_HANDSHAKE);
    out.extend_from_slice(&[0xfe, 0xfd]);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(record_sequence & MAX_RECORD_SEQ).to_be_bytes()[2..]);
    out.extend_from_slice(&((HANDSHAKE_HEADER_LEN + body.len()) as u16).to_be_bytes());
    out.push(HANDSHAKE_CLIENT_HELLO);
    put_be24(&mut out, body.len());
    out.extend_from_slice(&message_sequence.to_be_bytes());
    put_be24(&mut out, 0);
    put_be24(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn parses_what_it_builds() {
        let datagram = client_hello_datagram([7; 32], b"abc", 5, 1);
        let hello = ClientHello::parse(&datagram).unwrap();
        assert_eq!(hello.record_sequence, 5);
        assert_eq!(hello.message_sequence, 1);
        assert_eq!(hello.cookie(), b"abc");
        assert_eq!(hello.random(), &[7; 32]);
    }

    #[test]
    fn rejects_truncated_and_other_records() {
        let datagram = client_hello_datagram([7; 32], b"", 0, 0);
        for n in 0..datagram.len() {
            assert!(
                ClientHello::parse(&datagram[..n]).is_none(),
                "prefix of {n} bytes"
            );
        }
        let mut alert = datagram.clone();
        alert[0] = 21;
        assert!(ClientHello::parse(&alert).is_none());
        let mut epoch1 = datagram;
        epoch1[4] = 1;
        assert!(ClientHello::parse(&epoch1).is_none());
    }

    #[test]
    fn removing_the_cookie_gives_the_first_hello() {
        let first = client_hello_datagram([9; 32], b"", 3, 0);
        let second = client_hello_datagram([9; 32], &[1; COOKIE_LEN], 4, 1);
        let hello = ClientHello::parse(&second).unwrap();
        assert_eq!(hello.without_cookie(3), first);
    }

    #[test]
    fn cookie_binds_address_port_and_hello() {
        let jar = CookieJar::new([1; SECRET_LEN], Instant::now(), Duration::from_secs(60));
        let first = client_hello_datagram([9; 32], b"", 0, 0);
        let cookie = jar.cookie(
            peer(1000),
            &ClientHello::parse(&first).unwrap(),
            Instant::now(),
        );
        let second = client_hello_datagram([9; 32], &cookie, 1, 1);
        let hello = ClientHello::parse(&second).unwrap();
        assert!(jar.verify(peer(1000), &hello).is_some());
        assert!(jar.verify(peer(1001), &hello).is_none());
        assert!(jar
            .verify(SocketAddr::from(([127, 0, 0, 2], 1000)), &hello)
            .is_none());
        let other_random = client_hello_datagram([8; 32], &cookie, 1, 1);
        assert!(jar
            .verify(peer(1000), &ClientHello::parse(&other_random).unwrap())
            .is_none());
    }

    #[test]
    fn cookie_carries_when_it_was_made_and_the_time_cannot_be_changed() {
        let start = Instant::now();
        let jar = CookieJar::new([1; SECRET_LEN], start, Duration::from_secs(60));
        let first = client_hello_datagram([9; 32], b"", 0, 0);
        let made = start + Duration::from_millis(1234);
        let cookie = jar.cookie(peer(1), &ClientHello::parse(&first).unwrap(), made);
        let second = client_hello_datagram([9; 32], &cookie, 1, 1);
        assert_eq!(
            jar.verify(peer(1), &ClientHello::parse(&second).unwrap()),
            Some(1234)
        );
        assert_eq!(jar.time(made), 1234);
        let mut later = cookie;
        later[ISSUED_LEN - 1] ^= 0x40;
        let forged = client_hello_datagram([9; 32], &later, 1, 1);
        assert!(jar
            .verify(peer(1), &ClientHello::parse(&forged).unwrap())
            .is_none());
    }

    #[test]
    fn previous_secret_stays_valid_for_one_rotation() {
        let start = Instant::now();
        let period = Duration::from_secs(10);
        let mut jar = CookieJar::new([1; SECRET_LEN], start, period);
        let first = client_hello_datagram([9; 32], b"", 0, 0);
        let cookie = jar.cookie(peer(1), &ClientHello::parse(&first).unwrap(), start);
        let second = client_hello_datagram([9; 32], &cookie, 1, 1);
        let hello = ClientHello::parse(&second).unwrap();
        jar.rotate_if_due(start + period / 2, || [2; SECRET_LEN]);
        assert!(jar.verify(peer(1), &hello).is_some(), "not yet rotated");
        jar.rotate_if_due(start + period, || [2; SECRET_LEN]);
        assert!(
            jar.verify(peer(1), &hello).is_some(),
            "previous secret still valid"
        );
        jar.rotate_if_due(start + period * 2, || [3; SECRET_LEN]);
        assert!(
            jar.verify(peer(1), &hello).is_none(),
            "two rotations later it is not"
        );
    }

    #[test]
    fn long_idle_drops_both_secrets() {
        let start = Instant::now();
        let period = Duration::from_secs(10);
        let mut jar = CookieJar::new([1; SECRET_LEN], start, period);
        let first = client_hello_datagram([9; 32], b"", 0, 0);
        let cookie = jar.cookie(peer(1), &ClientHello::parse(&first).unwrap(), start);
        let second = client_hello_datagram([9; 32], &cookie, 1, 1);
        jar.rotate_if_due(start + period * 3, || [2; SECRET_LEN]);
        assert!(jar
            .verify(peer(1), &ClientHello::parse(&second).unwrap())
            .is_none());
    }

    #[test]
    fn hello_verify_request_round_trips() {
        let hvr = hello_verify_request(42, &[5; COOKIE_LEN]);
        assert_eq!(hello_verify_cookie(&hvr), Some(&[5; COOKIE_LEN][..]));
        assert_eq!(first_record(&hvr).unwrap().sequence, 42);
    }
}
