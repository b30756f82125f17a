//! The record layer as the server checks it before the engine sees a
//! datagram: each record's framing, and whether its kind and epoch can be
//! genuine at all.
//!
//! RFC 6347 4.1.2.7 asks that invalid records be discarded silently. The
//! engine (rtc-dtls) rejects a whole datagram whose framing is off with an
//! error, and answers some plaintext records that can only be forged with a
//! fatal alert; both would let anyone who knows a client's address and port
//! end its session. Here those records never reach the engine.

/// Length of a DTLS record header.
pub(crate) const HEADER_LEN: usize = 13;
/// RFC 6347 4.1 / RFC 5246 6.2.3: a record body is at most 2^14 + 2048 bytes.
const MAX_BODY_LEN: usize = 16384 + 2048;

pub(crate) const CHANGE_CIPHER_SPEC: u8 = 20;
pub(crate) const ALERT: u8 = 21;
pub(crate) const HANDSHAKE: u8 = 22;
pub(crate) const APPLICATION_DATA: u8 = 23;

/// Length of a handshake message's (fragment's) header in DTLS.
const HANDSHAKE_HEADER_LEN: usize = 12;

/// Alert descriptions the server reads or rewrites.
pub(crate) const ALERT_INTERNAL_ERROR: u8 = 80;
pub(crate) const ALERT_UNKNOWN_PSK_IDENTITY: u8 = 115;

/// One well-framed record of a datagram.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Record<'a> {
    pub content_type: u8,
    pub epoch: u16,
    /// Header and body, as received.
    pub bytes: &'a [u8],
}

impl Record<'_> {
    pub(crate) fn body(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// The description of an unencrypted alert record (level and
    /// description only; an encrypted one is longer). The engine's copy of a
    /// session that checks records sends its alerts unencrypted in epoch 1.
    pub(crate) fn plaintext_alert(&self) -> Option<u8> {
        if self.content_type != ALERT || self.body().len() != 2 {
            return None;
        }
        Some(self.body()[1])
    }

    /// Whether a record of this kind and epoch can come from a genuine
    /// client of this server (which never renegotiates, so epochs are 0
    /// and 1). Application data is never sent unencrypted, and the one
    /// ChangeCipherSpec is sent in epoch 0: the engine takes one in epoch 1
    /// (which it does not decrypt) for a change to epoch 2, after which it
    /// drops every genuine record.
    pub(crate) fn plausible(&self) -> bool {
        match self.epoch {
            0 => self.content_type != APPLICATION_DATA,
            1 => self.content_type != CHANGE_CIPHER_SPEC,
            _ => false,
        }
    }
}

/// Whether an unencrypted handshake record's body is one or more non-empty
/// fragments, each within its message and the record, of messages numbered
/// at most `max_message_seq`. Only such records can be part of a genuine
/// client's last flight; the engine keeps every fragment it is given until
/// its message is complete, which for any other would be forever.
pub(crate) fn fragments_within(body: &[u8], max_message_seq: u16) -> bool {
    let mut rest = body;
    while !rest.is_empty() {
        let Some(header) = rest.get(..HANDSHAKE_HEADER_LEN) else {
            return false;
        };
        let be24 = |b: &[u8]| b.iter().fold(0usize, |n, &x| (n << 8) | usize::from(x));
        let length = be24(&header[1..4]);
        let message_seq = u16::from_be_bytes([header[4], header[5]]);
        let offset = be24(&header[6..9]);
        let fragment_len = be24(&header[9..12]);
        if fragment_len == 0
            || offset + fragment_len > length
            || message_seq > max_message_seq
            || HANDSHAKE_HEADER_LEN + fragment_len > rest.len()
        {
            return false;
        }
        rest = &rest[HANDSHAKE_HEADER_LEN + fragment_len..];
    }
    !body.is_empty()
}

/// The well-framed records at the start of `datagram`. Framing that fails
/// (too short for a header, an unknown content type, not DTLS, an empty
/// body, or a length past the end of the datagram or the protocol's limit)
/// ends the list: nothing after it can be delimited.
pub(crate) fn split(datagram: &[u8]) -> Vec<Record<'_>> {
    let mut records = Vec::new();
    let mut rest = datagram;
    while let Some(header) = rest.get(..HEADER_LEN) {
        let content_type = header[0];
        let known_type = (CHANGE_CIPHER_SPEC..=APPLICATION_DATA).contains(&content_type);
        // DTLS 1.0 (0xfeff, used in ClientHellos) or 1.2 (0xfefd).
        let dtls = header[1] == 0xfe && (header[2] == 0xff || header[2] == 0xfd);
        let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
        if !known_type || !dtls || len == 0 || len > MAX_BODY_LEN || HEADER_LEN + len > rest.len() {
            break;
        }
        let (bytes, tail) = rest.split_at(HEADER_LEN + len);
        records.push(Record {
            content_type,
            epoch: u16::from_be_bytes([header[3], header[4]]),
            bytes,
        });
        rest = tail;
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(content_type: u8, epoch: u16, body: &[u8]) -> Vec<u8> {
        let mut out = vec![content_type, 0xfe, 0xfd];
        out.extend_from_slice(&epoch.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn good_records_are_split_at_their_boundaries() {
        let mut datagram = record(HANDSHAKE, 0, &[1; 30]);
        datagram.extend(record(CHANGE_CIPHER_SPEC, 0, &[1]));
        datagram.extend(record(HANDSHAKE, 1, &[9; 40]));
        let records = split(&datagram);
        assert_eq!(records.len(), 3);
        assert_eq!(records[1].content_type, CHANGE_CIPHER_SPEC);
        assert_eq!(records[2].epoch, 1);
        assert_eq!(records[2].body(), &[9; 40]);
    }

    #[test]
    fn broken_framing_ends_the_list() {
        assert!(split(&[0x17]).is_empty());
        assert!(split(&record(APPLICATION_DATA, 1, &[])).is_empty());
        assert!(split(&record(99, 1, &[1; 8])).is_empty());
        let mut tls = record(APPLICATION_DATA, 1, &[1; 8]);
        tls[1] = 3;
        assert!(split(&tls).is_empty());
        let mut long = record(APPLICATION_DATA, 1, &[1; 8]);
        long[12] = 9;
        assert!(split(&long).is_empty());
        let mut good_then_bad = record(ALERT, 0, &[2, 40]);
        good_then_bad.push(0x16);
        let records = split(&good_then_bad);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].plaintext_alert(), Some(40));
    }

    #[test]
    fn only_epochs_0_and_1_no_plaintext_data_and_no_epoch_1_change_cipher_spec_are_plausible() {
        let data0 = record(APPLICATION_DATA, 0, &[1; 8]);
        let data2 = record(APPLICATION_DATA, 2, &[1; 8]);
        let data1 = record(APPLICATION_DATA, 1, &[1; 8]);
        let alert0 = record(ALERT, 0, &[2, 40]);
        let ccs0 = record(CHANGE_CIPHER_SPEC, 0, &[1]);
        let ccs1 = record(CHANGE_CIPHER_SPEC, 1, &[1]);
        assert!(split(&ccs0)[0].plausible());
        assert!(!split(&ccs1)[0].plausible());
        assert!(!split(&data0)[0].plausible());
        assert!(!split(&data2)[0].plausible());
        assert!(split(&data1)[0].plausible());
        assert!(split(&alert0)[0].plausible());
    }

    fn fragment(message_seq: u16, length: usize, offset: usize, data: &[u8]) -> Vec<u8> {
        let mut out = vec![16]; // client_key_exchange
        out.extend_from_slice(&(length as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&message_seq.to_be_bytes());
        out.extend_from_slice(&(offset as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn only_nonempty_fragments_of_the_last_flight_are_within() {
        let whole = fragment(2, 5, 0, &[1; 5]);
        assert!(fragments_within(&whole, 2));
        assert!(!fragments_within(&whole, 1), "a later message");
        let mut two = fragment(2, 8, 0, &[1; 4]);
        two.extend(fragment(2, 8, 4, &[2; 4]));
        assert!(fragments_within(&two, 2));
        assert!(!fragments_within(&fragment(2, 0, 0, &[]), 2), "empty");
        assert!(
            !fragments_within(&fragment(2, 5, 3, &[1; 4]), 2),
            "past its message"
        );
        let mut cut = whole.clone();
        cut.pop();
        assert!(!fragments_within(&cut, 2), "past the record");
        assert!(!fragments_within(&whole[..7], 2), "a broken header");
        assert!(!fragments_within(&[], 2));
    }
}
