//! Alert records around the engine: which alert ended a session, and the
//! unencrypted alerts the server takes out of or rewrites in what the
//! engine sends (see `engine.rs` for why).

use bytes::BytesMut;

use super::records;

/// Which fatal alert ended a session: the peer's, if the datagram that
/// failed is a plaintext alert, else the one the engine answered with.
pub(super) fn explain_alert(received: &[u8], sent: &[BytesMut]) -> String {
    if let Some(code) = plaintext_alert(received) {
        return format!("the peer sent a fatal alert: {}", alert_name(code));
    }
    match sent.iter().find_map(|d| plaintext_alert(d)) {
        Some(code) => format!("sent a fatal alert: {}", alert_name(code)),
        None => "the session ended with a fatal alert".to_string(),
    }
}

/// The description of the first unencrypted alert record in `datagram`.
pub(super) fn plaintext_alert(datagram: &[u8]) -> Option<u8> {
    records::split(datagram)
        .iter()
        .find_map(records::Record::plaintext_alert)
}

/// Removes the unencrypted alert records with `description` from the
/// datagrams to send (dropping datagrams left empty); the first as a
/// datagram of its own.
pub(super) fn take_alert(datagrams: &mut Vec<BytesMut>, description: u8) -> Option<BytesMut> {
    let mut taken = None;
    for datagram in datagrams.iter_mut() {
        let mut rest = BytesMut::new();
        for record in records::split(datagram) {
            if record.plaintext_alert() == Some(description) {
                taken.get_or_insert_with(|| BytesMut::from(record.bytes));
            } else {
                rest.extend_from_slice(record.bytes);
            }
        }
        *datagram = rest;
    }
    datagrams.retain(|d| !d.is_empty());
    taken
}

/// Changes the description of the unencrypted alert records `from` into
/// `to` in the datagrams to send.
pub(super) fn rewrite_alert(datagrams: &mut [BytesMut], from: u8, to: u8) {
    for datagram in datagrams.iter_mut() {
        let mut offset = 0;
        let spans: Vec<(usize, bool)> = records::split(datagram)
            .iter()
            .map(|r| (r.bytes.len(), r.plaintext_alert() == Some(from)))
            .collect();
        for (len, matches) in spans {
            if matches {
                datagram[offset + records::HEADER_LEN + 1] = to;
            }
            offset += len;
        }
    }
}

fn alert_name(code: u8) -> String {
    let name = match code {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        47 => "illegal_parameter",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        90 => "user_canceled",
        110 => "unsupported_extension",
        115 => "unknown_psk_identity",
        other => return format!("alert {other}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(sequence: u8, description: u8) -> Vec<u8> {
        let mut out = vec![21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, sequence, 0, 2, 2];
        out.push(description);
        out
    }

    fn handshake() -> Vec<u8> {
        let mut out = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 9, 0, 3];
        out.extend_from_slice(&[14, 0, 0]);
        out
    }

    #[test]
    fn an_alert_is_taken_out_and_the_rest_kept() {
        let mut both = handshake();
        both.extend(alert(1, 115));
        let mut datagrams = vec![
            BytesMut::from(&both[..]),
            BytesMut::from(&alert(2, 115)[..]),
        ];
        let taken = take_alert(&mut datagrams, 115).unwrap();
        assert_eq!(&taken[..], &alert(1, 115)[..]);
        assert_eq!(datagrams.len(), 1, "the datagram left empty is dropped");
        assert_eq!(&datagrams[0][..], &handshake()[..]);
        assert!(take_alert(&mut datagrams, 115).is_none());
    }

    #[test]
    fn an_alert_is_rewritten_in_place() {
        let mut both = handshake();
        both.extend(alert(1, 80));
        let mut datagrams = vec![BytesMut::from(&both[..])];
        rewrite_alert(&mut datagrams, 80, 115);
        assert_eq!(plaintext_alert(&datagrams[0]), Some(115));
        assert_eq!(&datagrams[0][..16], &handshake()[..]);
    }

    #[test]
    fn the_peer_alert_explains_first() {
        let sent = [BytesMut::from(&alert(1, 40)[..])];
        assert_eq!(
            explain_alert(&alert(3, 20), &sent),
            "the peer sent a fatal alert: bad_record_mac"
        );
        assert_eq!(
            explain_alert(&handshake(), &sent),
            "sent a fatal alert: handshake_failure"
        );
    }
}
