//! The state a connection's I/O lock protects: the rustls connection, the
//! encrypted records not yet sent, and why input ended. Every change of
//! that state goes through these methods, so blocking, non-blocking and
//! plain paths agree on what a read returns and what an error means.

use std::io::{self, Read, Write};

use super::inbox::Inbox;
use super::{MAX_FRAGMENT, PLAINTEXT_LIMIT, RECORD_OVERHEAD};
use crate::error::{os_reason, Error, ErrorKind, Result};
use crate::types::SocketError;

/// Why no more data will come in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Input {
    Open,
    /// The peer sent close_notify: a clean end.
    CloseNotify,
    /// The peer closed TCP without close_notify (the data may be truncated).
    Eof,
    /// The peer reset the connection.
    Reset,
    /// A TLS protocol error, or a socket error other than a reset.
    Failed,
    /// Closed on this side (abort, free, server shutdown).
    Closed,
}

/// The state the lock protects.
pub(super) struct Io {
    /// `None` until the handshake completes (the handshake owns it until then).
    pub(super) tls: Option<rustls::Connection>,
    /// Encrypted records produced but not yet sent, in order.
    pub(super) outgoing: Vec<u8>,
    /// Decrypted bytes waiting in rustls for the application.
    pub(super) plaintext: usize,
    /// close_notify arrived; input ends once `plaintext` is consumed.
    pub(super) peer_closed: bool,
    /// Plaintext decrypted before a TLS error, taken out of rustls when the
    /// error came; read before the error is reported.
    pub(super) salvaged: Vec<u8>,
    pub(super) input: Input,
    /// close_notify sent or the write side failed.
    pub(super) output_closed: bool,
    pub(super) error: SocketError,
    pub(super) error_text: String,
    /// TLS 1.3 session tickets received (client mode) and not yet reported.
    pub(super) tickets: usize,
}

impl Io {
    pub(super) fn collect_outgoing(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            while tls.wants_write() {
                // Writing into a Vec cannot fail.
                let _ = tls.write_tls(&mut self.outgoing);
            }
        }
    }

    /// Takes in the result of `process_new_packets`. On an error, what was
    /// decrypted before the bad record stays readable: it is authentic.
    pub(super) fn absorb(&mut self, state: std::result::Result<rustls::IoState, rustls::Error>) {
        self.tickets += crate::client::take_tickets_received();
        match state {
            Ok(state) => {
                self.plaintext = state.plaintext_bytes_to_read();
                self.peer_closed = state.peer_has_closed();
                self.end_if_closed();
            }
            Err(e) => {
                if let Some(tls) = self.tls.as_mut() {
                    // Stops at the end of the buffered plaintext (WouldBlock).
                    let _ = tls.reader().read_to_end(&mut self.salvaged);
                }
                self.plaintext = self.salvaged.len();
                self.input = Input::Failed;
                self.fail(SocketError::SslInternal, format!("TLS error: {e}"));
            }
        }
    }

    /// After close_notify, input ends when the last plaintext is consumed.
    pub(super) fn end_if_closed(&mut self) {
        if self.peer_closed && self.plaintext == 0 && self.input == Input::Open {
            self.input = Input::CloseNotify;
            self.fail(
                SocketError::RemoteHostClosed,
                "the remote host closed the connection",
            );
        }
    }

    /// Queues close_notify and closes the output; false if it was closed.
    pub(super) fn queue_close_notify(&mut self) -> bool {
        if self.output_closed {
            return false;
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
        }
        self.collect_outgoing();
        self.output_closed = true;
        true
    }

    /// Encrypts all of `data` into `outgoing`, behind what is queued there.
    pub(super) fn encrypt(&mut self, data: &[u8]) -> Result<()> {
        let Some(tls) = self.tls.as_mut() else {
            return Err(Error::invalid_state("the TLS handshake has not completed"));
        };
        // One allocation for the records, not a growing copy.
        let records = data.len().div_ceil(MAX_FRAGMENT);
        self.outgoing
            .reserve(data.len() + records * RECORD_OVERHEAD);
        let mut offset = 0;
        while offset < data.len() {
            let n = tls
                .writer()
                .write(&data[offset..])
                .map_err(|e| Error::new(ErrorKind::Tls, e.to_string()))?;
            if n == 0 {
                return Err(Error::new(ErrorKind::Tls, "rustls accepted no plaintext"));
            }
            offset += n;
            while tls.wants_write() {
                let _ = tls.write_tls(&mut self.outgoing);
            }
        }
        Ok(())
    }

    /// The write side failed with `err`: nothing more can be sent, and what
    /// is queued never will be.
    pub(super) fn sending_failed(&mut self, err: &io::Error) -> Error {
        self.output_closed = true;
        self.outgoing = Vec::new();
        let (error, kind) = match err.kind() {
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted => {
                (SocketError::RemoteHostClosed, ErrorKind::Closed)
            }
            _ => (SocketError::Network, ErrorKind::Io),
        };
        let text = os_reason(err);
        self.fail(error, text.clone());
        Error::new(kind, text)
    }

    pub(super) fn fail(&mut self, error: SocketError, text: impl Into<String>) {
        self.error = error;
        self.error_text = text.into();
    }

    /// Hands received ciphertext to rustls and decrypts it, while rustls has
    /// room for the plaintext; what does not fit stays in the inbox.
    pub(super) fn take_in(&mut self, inbox: &mut Inbox) {
        while self.input == Input::Open && self.plaintext <= PLAINTEXT_LIMIT && !inbox.is_empty() {
            let Some(tls) = self.tls.as_mut() else {
                return;
            };
            match tls.read_tls(&mut inbox.pending()) {
                // rustls takes nothing after the peer's close_notify.
                Ok(0) => inbox.consume(inbox.pending().len()),
                Ok(n) => inbox.consume(n),
                Err(e) => {
                    self.input = Input::Failed;
                    self.fail(SocketError::SslInternal, format!("TLS error: {e}"));
                    return;
                }
            }
            let state = tls.process_new_packets();
            self.absorb(state);
        }
        self.collect_outgoing();
    }

    /// What `read` returns once no plaintext is left: `None` while input may
    /// still come.
    pub(super) fn end_of_read(&self) -> Option<Result<usize>> {
        let end = match self.input {
            Input::Open => return None,
            Input::CloseNotify => Ok(0),
            Input::Eof => Err(Error::new(
                ErrorKind::Closed,
                "the peer closed the connection without close_notify",
            )),
            Input::Reset => Err(Error::new(ErrorKind::Closed, self.error_text.clone())),
            Input::Failed if self.error == SocketError::SslInternal => {
                Err(Error::new(ErrorKind::Tls, self.error_text.clone()))
            }
            Input::Failed => Err(Error::new(ErrorKind::Io, self.error_text.clone())),
            Input::Closed => Err(Error::new(ErrorKind::Closed, "the connection is closed")),
        };
        Some(end)
    }

    pub(super) fn end_of_input(&mut self) {
        if self.input != Input::Open {
            return;
        }
        self.input = if self.peer_closed {
            Input::CloseNotify
        } else {
            Input::Eof
        };
        self.fail(
            SocketError::RemoteHostClosed,
            "the remote host closed the connection",
        );
    }

    pub(super) fn input_failed(&mut self, err: &io::Error) {
        if self.input != Input::Open {
            return;
        }
        let reset = matches!(
            err.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
        );
        if reset {
            self.input = Input::Reset;
            self.fail(
                SocketError::RemoteHostClosed,
                format!("the peer reset the connection ({})", os_reason(err)),
            );
        } else {
            self.input = Input::Failed;
            self.fail(SocketError::Network, os_reason(err));
        }
    }
}
