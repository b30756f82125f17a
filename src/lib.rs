//! libsslserver: Qt's QSslServer as a C library, on rustls.
//!
//! A server accepts TCP connections, performs each TLS handshake on a
//! library thread within one deadline, and queues only the connections
//! whose handshake completed; from then on the application's threads do a
//! connection's I/O. Qt's signals become callbacks.
//!
//! The modules below `ffi` are safe Rust and usable from Rust directly; `ffi`
//! is the thin C layer the header `include/sslserver.h` is generated from.

mod accept;
pub mod client;
pub mod config;
pub mod connection;
pub mod dtls;
pub mod error;
pub mod events;
pub mod ffi;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod handshake;
mod key_log;
mod notification;
mod ocsp;
mod proxy_protocol;
pub mod server;
mod sni;
mod suites;
mod tickets;
mod tls;
mod trust;
pub mod types;
pub mod upgrade;
mod verify;
mod workers;

pub use client::{connect, connect_encrypted, start_client_encryption};
pub use config::{SslErrorsCallback, TlsConfig};
pub use connection::{Connection, SessionInfo};
pub use error::{Error, ErrorKind, Result};
pub use events::{Callback, Event, SslError};
pub use server::{Server, WaitOutcome};
pub use types::*;
pub use upgrade::start_server_encryption;
