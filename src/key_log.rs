//! The NSS key log (the `SSLKEYLOGFILE` format Wireshark reads): one line
//! per TLS secret, so captured traffic can be decrypted while debugging.
//! Only a file the application names is written; the environment alone
//! never turns it on.

use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// A key log file, opened for appending and shared by every connection of
/// the configurations that use it.
pub(crate) struct KeyLogFile {
    path: String,
    /// One writer at a time, one whole line per write: lines of
    /// connections on different threads never interleave.
    file: Mutex<File>,
}

impl fmt::Debug for KeyLogFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyLogFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl KeyLogFile {
    /// Opens (creating it readable by its owner only) `path` for appending.
    pub(crate) fn open(path: &str) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::file(path, &e).context("cannot open the key log file"))?;
        Ok(KeyLogFile {
            path: path.to_string(),
            file: Mutex::new(file),
        })
    }
}

impl rustls::KeyLog for KeyLogFile {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let mut line =
            String::with_capacity(label.len() + 2 * (client_random.len() + secret.len()) + 3);
        line.push_str(label);
        line.push(' ');
        for byte in client_random {
            let _ = write!(line, "{byte:02x}");
        }
        line.push(' ');
        for byte in secret {
            let _ = write!(line, "{byte:02x}");
        }
        line.push('\n');
        // A debugging aid must not fail a handshake: a full disk loses lines.
        let _ = self.file.lock().write_all(line.as_bytes());
    }
}
