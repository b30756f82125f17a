//! The NSS key log (the `SSLKEYLOGFILE` format Wireshark reads): one line
//! per TLS secret, so captured traffic can be decrypted while debugging.
//! Only a file the application names is written; the environment alone
//! never turns it on.

use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

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
    /// A regular file or a character device (`/dev/null`) only: opening a
    /// FIFO would wait for a reader, and a full pipe would then stall every
    /// handshake writing to it.
    pub(crate) fn open(path: &str) -> Result<Self> {
        let not_a_file = || {
            Error::invalid_argument(format!(
                "{path}: is not a regular file (the key log is written to a file)"
            ))
        };
        // Non-blocking so that opening a FIFO fails at once instead of
        // waiting for a reader (no effect on regular files and devices).
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| match std::fs::metadata(path) {
                Ok(meta) if meta.file_type().is_fifo() => not_a_file(),
                _ => Error::file(path, &e).context("cannot open the key log file"),
            })?;
        let kind = file
            .metadata()
            .map_err(|e| Error::file(path, &e).context("cannot open the key log file"))?
            .file_type();
        if !(kind.is_file() || kind.is_char_device()) {
            return Err(not_a_file());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_fifo_without_a_reader_is_refused_without_waiting() {
        let dir = std::env::temp_dir().join(format!("sslserver-keylog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("keys.fifo");
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let path = fifo.to_str().unwrap().to_string();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(KeyLogFile::open(&path).map(|_| ()));
        });
        let result = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("opening a FIFO with no reader must not block");
        let err = result.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        assert!(
            err.message().contains(fifo.to_str().unwrap()),
            "{}",
            err.message()
        );
    }
}
