//! The library's error type: what went wrong, as a kind the C API turns into
//! an `sslserver_result`, and a message a person can act on.

use std::fmt;
use std::io;

/// What kind of failure an [`Error`] is. Each kind is one `sslserver_result`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    InvalidState,
    Unsupported,
    Io,
    Certificate,
    PrivateKey,
    AddressInUse,
    AddressNotAvailable,
    Timeout,
    Closed,
    Tls,
    /// A non-blocking call could do nothing now; poll and call again.
    WouldBlock,
}

/// A failed operation: its kind and a human-readable message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidState, message)
    }

    /// A non-blocking call that could do nothing without waiting.
    pub fn would_block(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::WouldBlock, message)
    }

    pub fn certificate(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Certificate, message)
    }

    pub fn private_key(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PrivateKey, message)
    }

    /// A file that could not be read, as `path: reason` (the form `perror` users know).
    pub fn file(path: &str, err: &io::Error) -> Self {
        Self::new(ErrorKind::Io, format!("{path}: {}", os_reason(err)))
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `context: ` in front of its message.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The OS's text for an I/O error without Rust's " (os error N)" suffix,
/// so messages read like the C library's `strerror`.
pub fn os_reason(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}
