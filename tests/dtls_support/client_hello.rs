//! A DTLS client's first datagrams, made by hand: the ClientHello and the
//! cookie of the server's HelloVerifyRequest. Shared by the DTLS tests
//! (`tests/dtls_support`) and the `dtls_server` fuzz target
//! (`fuzz/src/dtls_live.rs` includes this file), so it uses only `core`.

const HANDSHAKE: u8 = 22;

/// A DTLS 1.2 ClientHello offering TLS_PSK_WITH_AES_128_GCM_SHA256 with the
/// extended master secret.
pub fn client_hello(random: [u8; 32], cookie: &[u8], record_seq: u64, message_seq: u16) -> Vec<u8> {
    let mut body = vec![0xfe, 0xfd];
    body.extend_from_slice(&random);
    body.push(0);
    body.push(cookie.len() as u8);
    body.extend_from_slice(cookie);
    body.extend_from_slice(&[0, 2, 0x00, 0xa8, 1, 0]);
    // extensions: extended_master_secret, empty
    body.extend_from_slice(&[0, 4, 0, 23, 0, 0]);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&message_seq.to_be_bytes());
    hs.extend_from_slice(&[0, 0, 0]);
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![HANDSHAKE, 0xfe, 0xfd, 0, 0];
    record.extend_from_slice(&record_seq.to_be_bytes()[2..]);
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

/// The handshake message type of the first record of a datagram.
pub fn handshake_type(datagram: &[u8]) -> Option<u8> {
    (datagram.first() == Some(&HANDSHAKE)).then(|| datagram.get(13).copied())?
}

/// The cookie of a HelloVerifyRequest (message type 3); `None` for any
/// other datagram. It follows the 13-byte record header, the 12-byte
/// message header, the 2-byte version and its own length byte.
pub fn hello_verify_cookie(datagram: &[u8]) -> Option<&[u8]> {
    if handshake_type(datagram) != Some(3) {
        return None;
    }
    let len = usize::from(*datagram.get(27)?);
    datagram.get(28..28 + len)
}
