//! Session tickets every process of a fleet can read: the ticket keys come
//! from files in nginx's `ssl_session_ticket_key` format, so every server
//! given the same files seals and opens tickets the same way, and a client
//! resumes on whichever process the balancer picks.
//!
//! The key file format is nginx's (so the same tooling makes and rotates
//! keys: `openssl rand 80 > ticket.key`); the ticket format is this
//! library's own. A ticket is
//!
//! ```text
//! key name (16 bytes) || nonce (12 bytes) || AES-256-GCM-SIV(issued || session state) || tag (16 bytes)
//! ```
//!
//! with the key name as additional authenticated data and `issued` the
//! time the ticket was sealed (seconds since the Unix epoch, 8 bytes big
//! endian). The first key seals new tickets; any key opens a ticket
//! carrying its name, while it is younger than its lifetime.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM_SIV, NONCE_LEN};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

use crate::error::{Error, Result};

/// The size of a key's name at the start of a key file and of a ticket.
const NAME_LEN: usize = 16;
/// The sizes nginx accepts: name + 16-byte AES key + 16-byte HMAC key, or
/// name + 32-byte HMAC key + 32-byte AES key.
const KEY_FILE_SIZES: [usize; 2] = [48, 80];
const TAG_LEN: usize = 16;

/// How long a ticket resumes a session, in seconds: 12 hours, rustls's own
/// choice for its built-in ticketer. It is the hint sent to clients and
/// also enforced here: key files are rotated by hand, often rarely, and
/// without a time in the ticket a stolen ticket (with, in TLS 1.2, the
/// session's master secret) would resume for as long as its key stays.
pub(crate) const TICKET_LIFETIME_SECS: u32 = 12 * 60 * 60;

/// How far in the future a ticket's time may be: the clocks of the
/// servers of a fleet differ a little.
const CLOCK_SKEW_SECS: u64 = 5 * 60;

/// The size of the time sealed in front of the session state.
const ISSUED_LEN: usize = 8;

/// Labels the derived key with its use, so the same file given to nginx
/// (which uses the two secrets for AES-CBC and HMAC) and to this library
/// never yields the same key for two purposes.
const KEY_DERIVATION_INFO: &[u8] = b"libsslserver session ticket key v2 (AES-256-GCM-SIV)";

/// The ticket keys of a configuration, first key first.
pub(crate) struct FileTicketer {
    keys: Vec<TicketKey>,
    random: SystemRandom,
}

struct TicketKey {
    name: [u8; NAME_LEN],
    aead: LessSafeKey,
}

impl fmt::Debug for FileTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys; the count is enough to tell configurations apart.
        f.debug_struct("FileTicketer")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl FileTicketer {
    /// Reads the key files at `paths` (at least one), first path = the
    /// key that seals new tickets.
    pub(crate) fn from_files(paths: &[String]) -> Result<Self> {
        if paths.is_empty() {
            return Err(Error::invalid_argument("no session ticket key file given"));
        }
        let mut keys: Vec<TicketKey> = Vec::with_capacity(paths.len());
        for path in paths {
            let key = TicketKey::from_bytes(&read_key_file(path)?)?;
            if let Some(earlier) = keys.iter().position(|k| k.name == key.name) {
                return Err(Error::invalid_argument(format!(
                    "{path}: its key name (the first 16 bytes) is also the name of {}; \
                     each ticket key needs its own name",
                    paths[earlier]
                )));
            }
            keys.push(key);
        }
        Ok(FileTicketer {
            keys,
            random: SystemRandom::new(),
        })
    }

    /// The name of the key that seals new tickets.
    #[cfg(test)]
    fn sealing_key_name(&self) -> [u8; NAME_LEN] {
        self.keys[0].name
    }
}

impl TicketKey {
    /// One key from the bytes of a 48- or 80-byte key file.
    ///
    /// Why HKDF to one AES-256-GCM-SIV key rather than nginx's AES-CBC +
    /// HMAC: the ticket format is ours, and an AEAD from the provider
    /// already in use is one primitive to get right instead of two composed
    /// by hand. Why GCM-SIV rather than GCM: the nonces are random, drawn by
    /// every server of the fleet for one key that lives as long as its file
    /// does; with GCM a single repeat leaks the XOR of two sessions and the
    /// authentication key (so tickets could be forged), with GCM-SIV it
    /// only shows whether two sealed sessions were identical.
    /// Deriving from both secrets keeps all the file's randomness (a 48-byte
    /// file still gives a 256-bit key) and, with the name as salt and a
    /// label as info, the key is tied to this one use.
    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (name, secrets) = bytes.split_at(NAME_LEN);
        let name: [u8; NAME_LEN] = name
            .try_into()
            .map_err(|_| Error::invalid_argument("a ticket key file is too short"))?;
        let prk = Salt::new(HKDF_SHA256, &name).extract(secrets);
        let okm = prk
            .expand(&[KEY_DERIVATION_INFO], &AES_256_GCM_SIV)
            .map_err(|_| Error::invalid_argument("cannot derive a session ticket key"))?;
        Ok(TicketKey {
            name,
            aead: LessSafeKey::new(UnboundKey::from(okm)),
        })
    }
}

/// The bytes of one key file; its size is checked before more than one
/// byte beyond the largest valid size is read, so a device or a huge file
/// given by mistake is refused without waiting or filling memory.
fn read_key_file(path: &str) -> Result<Vec<u8>> {
    let wrong_size = |size: &str| {
        Error::invalid_argument(format!(
            "{path}: a session ticket key file must be 48 or 80 bytes (nginx's \
             ssl_session_ticket_key format, e.g. from `openssl rand 80`), not {size}"
        ))
    };
    // Non-blocking: opening a FIFO without a writer must not hang the call.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::file(path, &e))?;
    let kind = file
        .metadata()
        .map_err(|e| Error::file(path, &e))?
        .file_type();
    if kind.is_dir() {
        return Err(Error::invalid_argument(format!(
            "{path}: is a directory, not a session ticket key file"
        )));
    }
    if kind.is_fifo() || kind.is_socket() {
        return Err(Error::invalid_argument(format!(
            "{path}: is not a regular file (session ticket keys are read from files)"
        )));
    }
    let largest = KEY_FILE_SIZES[KEY_FILE_SIZES.len() - 1];
    let mut bytes = Vec::with_capacity(largest + 1);
    file.take(largest as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::file(path, &e))?;
    if bytes.len() > largest {
        return Err(wrong_size("larger"));
    }
    if !KEY_FILE_SIZES.contains(&bytes.len()) {
        return Err(wrong_size(&format!("{} bytes", bytes.len())));
    }
    Ok(bytes)
}

impl ProducesTickets for FileTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME_SECS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal_at(plain, now_secs())
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        self.open_at(ticket, now_secs())
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl FileTicketer {
    /// A ticket for `plain` sealed at time `now` (seconds since the epoch).
    fn seal_at(&self, plain: &[u8], now: u64) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        self.seal_with_nonce(plain, now, nonce)
    }

    fn seal_with_nonce(&self, plain: &[u8], now: u64, nonce: [u8; NONCE_LEN]) -> Option<Vec<u8>> {
        let key = self.keys.first()?;
        // name || nonce || sealed(issued time || session) || tag, sealed
        // where it lies in the one buffer.
        let mut ticket =
            Vec::with_capacity(NAME_LEN + NONCE_LEN + ISSUED_LEN + plain.len() + TAG_LEN);
        ticket.extend_from_slice(&key.name);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(&now.to_be_bytes());
        ticket.extend_from_slice(plain);
        let tag = key
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&key.name),
                &mut ticket[NAME_LEN + NONCE_LEN..],
            )
            .ok()?;
        ticket.extend_from_slice(tag.as_ref());
        Some(ticket)
    }

    /// The session state in `ticket` if one of the keys opens it and it is
    /// neither older than its lifetime nor too far in the future at `now`.
    fn open_at(&self, ticket: &[u8], now: u64) -> Option<Vec<u8>> {
        if ticket.len() < NAME_LEN + NONCE_LEN + ISSUED_LEN + TAG_LEN {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        // Key names are not secret: they are sent in every ticket.
        let key = self.keys.iter().find(|k| k.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut in_out = sealed.to_vec();
        let plain_len = key
            .aead
            .open_in_place(nonce, Aad::from(&key.name), &mut in_out)
            .ok()?
            .len();
        let issued = u64::from_be_bytes(in_out.get(..ISSUED_LEN)?.try_into().ok()?);
        let fresh = issued <= now.saturating_add(CLOCK_SKEW_SECS)
            && now.saturating_sub(issued) <= u64::from(TICKET_LIFETIME_SECS);
        // The session state, in the buffer it was opened in.
        in_out.truncate(plain_len);
        in_out.drain(..ISSUED_LEN);
        fresh.then_some(in_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(name: &str, bytes: &[u8]) -> String {
        let dir = std::env::temp_dir().join(format!("sslserver-tickets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn random_key(size: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; size];
        SystemRandom::new().fill(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn the_same_files_open_each_others_tickets() {
        for size in KEY_FILE_SIZES {
            let path = key_file(&format!("same-{size}"), &random_key(size));
            let one = FileTicketer::from_files(std::slice::from_ref(&path)).unwrap();
            let two = FileTicketer::from_files(&[path]).unwrap();
            let ticket = one.encrypt(b"session state").unwrap();
            assert_eq!(two.decrypt(&ticket).as_deref(), Some(&b"session state"[..]));
        }
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let (a, b) = (random_key(80), random_key(48));
        let (a_path, b_path) = (key_file("rot-a", &a), key_file("rot-b", &b));
        let old = FileTicketer::from_files(std::slice::from_ref(&a_path)).unwrap();
        let rotated = FileTicketer::from_files(&[b_path.clone(), a_path]).unwrap();
        let only_new = FileTicketer::from_files(&[b_path]).unwrap();
        let old_ticket = old.encrypt(b"old").unwrap();
        let new_ticket = rotated.encrypt(b"new").unwrap();
        assert_eq!(&new_ticket[..NAME_LEN], &b[..NAME_LEN]);
        assert_eq!(rotated.sealing_key_name(), b[..NAME_LEN]);
        assert_eq!(rotated.decrypt(&old_ticket).as_deref(), Some(&b"old"[..]));
        assert_eq!(only_new.decrypt(&new_ticket).as_deref(), Some(&b"new"[..]));
        assert_eq!(only_new.decrypt(&old_ticket), None);
    }

    #[test]
    fn tampered_truncated_and_foreign_tickets_are_refused() {
        let path = key_file("tamper", &random_key(80));
        let ticketer = FileTicketer::from_files(&[path]).unwrap();
        let ticket = ticketer.encrypt(b"state").unwrap();
        for at in [0, NAME_LEN, NAME_LEN + NONCE_LEN, ticket.len() - 1] {
            let mut bad = ticket.clone();
            bad[at] ^= 1;
            assert_eq!(ticketer.decrypt(&bad), None, "byte {at} flipped");
        }
        for len in 0..ticket.len() {
            assert_eq!(ticketer.decrypt(&ticket[..len]), None, "{len} bytes");
        }
        let other = FileTicketer::from_files(&[key_file("other", &random_key(80))]).unwrap();
        assert_eq!(other.decrypt(&ticket), None);
    }

    #[test]
    fn tickets_older_than_their_lifetime_are_refused() {
        let path = key_file("expiry", &random_key(80));
        let ticketer = FileTicketer::from_files(&[path]).unwrap();
        let issued = 1_700_000_000;
        let ticket = ticketer.seal_at(b"state", issued).unwrap();
        let lifetime = u64::from(TICKET_LIFETIME_SECS);
        for age in [0, 1, lifetime - 1, lifetime] {
            assert_eq!(
                ticketer.open_at(&ticket, issued + age).as_deref(),
                Some(&b"state"[..]),
                "{age} s old"
            );
        }
        for age in [lifetime + 1, 30 * 24 * 60 * 60] {
            assert_eq!(ticketer.open_at(&ticket, issued + age), None, "{age} s old");
        }
        // Another server's clock may be a little behind: a ticket from
        // slightly in the future opens, one from far in the future not.
        assert!(ticketer.open_at(&ticket, issued - 60).is_some());
        assert_eq!(ticketer.open_at(&ticket, issued - lifetime), None);
    }

    #[test]
    fn a_repeated_nonce_does_not_expose_the_sealed_sessions() {
        // Every server of a fleet draws nonces for the same key, for as
        // long as the files stay: a repeat must not leak the XOR of two
        // sessions (nor, with it, the means to forge tickets).
        let path = key_file("nonce", &random_key(80));
        let ticketer = FileTicketer::from_files(&[path]).unwrap();
        let nonce = [7u8; NONCE_LEN];
        let (one, two) = (random_key(64), random_key(64));
        let sealed_one = ticketer.seal_with_nonce(&one, 1, nonce).unwrap();
        let sealed_two = ticketer.seal_with_nonce(&two, 1, nonce).unwrap();
        let body = NAME_LEN + NONCE_LEN + ISSUED_LEN..NAME_LEN + NONCE_LEN + ISSUED_LEN + 64;
        let xor_sealed: Vec<u8> = sealed_one[body.clone()]
            .iter()
            .zip(&sealed_two[body])
            .map(|(a, b)| a ^ b)
            .collect();
        let xor_plain: Vec<u8> = one.iter().zip(&two).map(|(a, b)| a ^ b).collect();
        assert_ne!(xor_sealed, xor_plain);
        assert_eq!(ticketer.open_at(&sealed_one, 1).unwrap(), one);
    }

    #[test]
    fn two_files_with_one_name_are_refused() {
        let a = random_key(80);
        let mut b = random_key(80);
        b[..NAME_LEN].copy_from_slice(&a[..NAME_LEN]);
        let (a_path, b_path) = (key_file("dup-a", &a), key_file("dup-b", &b));
        let err = FileTicketer::from_files(&[a_path.clone(), b_path.clone()]).unwrap_err();
        assert!(err.message().contains(&b_path), "{}", err.message());
        assert!(err.message().contains(&a_path), "{}", err.message());
    }
}
