//! DTLS 1.2 over UDP with pre-shared keys, certificates or both: Qt's DTLS
//! server example (`QDtls` + `QDtlsClientVerifier`) as a library.
//!
//! A [`DtlsServer`] owns a UDP socket and one thread that reads it
//! (`session`). A ClientHello from an address without a session gets a
//! stateless HelloVerifyRequest (`cookie`); only a ClientHello that returns
//! a valid cookie creates a peer (`peers`), within a per-address bound and a
//! byte budget until its handshake completes. The DTLS engine (`engine`,
//! rtc-dtls) runs the handshake with a key the application picks from the
//! client's PSK identity, or with an sslconfig's certificate
//! (`certificate`); records that do not authenticate are dropped before
//! they can end anything (`records`, `record_check`, `alerts`). Decrypted
//! datagrams, completed handshakes, closes and errors are reported as
//! [`DtlsEvent`]s (`events`), which also say how the session was
//! authenticated; [`DtlsServer::write`] sends an encrypted datagram to a
//! peer; [`DtlsServer::close`] sends close_notify to every peer.

mod alerts;
mod certificate;
mod cookie;
mod engine;
mod events;
mod peers;
mod record_check;
pub(crate) mod records;
mod server;
mod session;

pub use engine::PskCallback;
pub use events::{DtlsAuthentication, DtlsCallback, DtlsEvent, DtlsEventKind, DtlsStats};
pub use server::DtlsServer;
pub use server::{
    DTLSSERVER_DEFAULT_COOKIE_LIFETIME_MS, DTLSSERVER_DEFAULT_HANDSHAKE_BUDGET,
    DTLSSERVER_DEFAULT_HANDSHAKE_TIMEOUT_MS, DTLSSERVER_DEFAULT_IDLE_TIMEOUT_MS,
    DTLSSERVER_DEFAULT_MAX_HANDSHAKES_PER_ADDRESS, DTLSSERVER_DEFAULT_MAX_PEERS,
    DTLSSERVER_DEFAULT_MAX_PEERS_PER_ADDRESS, DTLSSERVER_MAX_DATAGRAM_PAYLOAD,
    DTLSSERVER_MIN_HANDSHAKE_BUDGET,
};
