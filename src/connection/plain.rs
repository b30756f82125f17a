//! Plain TCP before a start call (UNENCRYPTED mode): the protocol's own
//! lines before STARTTLS.
//!
//! Plain bytes come through the same inbox as ciphertext does later, and a
//! read takes only what the application asks for. Whatever is left in the
//! inbox when the application starts encryption is therefore the beginning
//! of the TLS stream (a client may send its ClientHello right behind
//! STARTTLS), and never decrypted data: commands a man in the middle
//! pipelined behind STARTTLS reach the handshake, which refuses them.

use std::io::{self, Read};

use rustix::io::Errno;
use rustix::net::RecvFlags;

use super::{wait_readable, Connection, Input, Wait};
use crate::error::{Error, ErrorKind, Result};
use crate::types::{SocketError, SslMode};

impl Connection {
    /// Blocks until plain bytes arrive and reads up to `buf.len()` of them;
    /// `Ok(0)` when the peer closed the connection.
    pub(super) fn plain_read(&self, buf: &mut [u8]) -> Result<usize> {
        let mut inbox = self.inbox.lock();
        loop {
            // A start call may have begun while this thread waited: what
            // arrived since is the handshake's, never plain data.
            if self.mode() != SslMode::Unencrypted {
                return Err(encryption_started());
            }
            if !inbox.is_empty() {
                return Ok(inbox.take_into(buf));
            }
            if let Some(end) = self.io.lock().end_of_read() {
                return end;
            }
            let received = inbox.fill(&self.stream, RecvFlags::empty());
            self.plain_received(received);
        }
    }

    /// Plain bytes readable without blocking (0 while another thread reads).
    pub(super) fn plain_bytes_available(&self) -> usize {
        let Some(mut inbox) = self.inbox.try_lock() else {
            return 0;
        };
        if self.mode() != SslMode::Unencrypted {
            return 0;
        }
        if inbox.is_empty() && self.io.lock().input == Input::Open {
            let received = inbox.fill(&self.stream, RecvFlags::DONTWAIT);
            self.plain_received(received);
        }
        inbox.pending().len()
    }

    /// Waits until plain bytes are readable (true), or `wait` ends or the
    /// input does (false).
    pub(super) fn plain_wait_for_ready_read(&self, wait: Wait) -> bool {
        let Some(mut inbox) = self.lock_inbox(wait) else {
            return false;
        };
        loop {
            if self.mode() != SslMode::Unencrypted {
                return false;
            }
            if !inbox.is_empty() {
                return true;
            }
            if self.io.lock().input != Input::Open {
                return false;
            }
            let flags = match wait {
                Wait::Forever => RecvFlags::empty(),
                Wait::Until(deadline) => {
                    if !wait_readable(&self.stream, deadline) {
                        return false;
                    }
                    RecvFlags::DONTWAIT
                }
                Wait::Never => RecvFlags::DONTWAIT,
            };
            let received = inbox.fill(&self.stream, flags);
            if matches!(wait, Wait::Never) && received == Err(Errno::AGAIN) {
                return false;
            }
            self.plain_received(received);
        }
    }

    /// Sends all of `data` as it is; blocks until the kernel has it.
    pub(super) fn plain_write(&self, data: &[u8]) -> Result<usize> {
        let _sending = self.send.lock();
        if self.mode() != SslMode::Unencrypted {
            return Err(encryption_started());
        }
        {
            let io = self.io.lock();
            if io.output_closed || io.input == Input::Closed {
                return Err(Error::new(ErrorKind::Closed, "the connection is closed"));
            }
        }
        self.send_bytes(data)?;
        Ok(data.len())
    }

    /// Takes note of what a receive into the inbox ended with.
    pub(super) fn plain_received(&self, received: rustix::io::Result<usize>) {
        match received {
            Ok(0) => {
                let mut io = self.io.lock();
                if io.input == Input::Open {
                    // Without TLS there is no close_notify: the end of the
                    // stream is the peer's clean close.
                    io.input = Input::CloseNotify;
                    io.fail(
                        SocketError::RemoteHostClosed,
                        "the remote host closed the connection",
                    );
                }
            }
            Ok(_) | Err(Errno::INTR | Errno::AGAIN) => {}
            Err(e) => self.io.lock().input_failed(&e.into()),
        }
    }

    /// The handshake's input: first the bytes that arrived in plain text
    /// and were not read (the start of the TLS stream), then the socket.
    pub(crate) fn handshake_input(&self) -> HandshakeInput<'_> {
        HandshakeInput(self)
    }

    /// Puts bytes received ahead of the handshake (those behind a PROXY
    /// protocol header) where the handshake reads first. Called before the
    /// handshake, by the one thread receiving.
    pub(crate) fn keep_for_handshake(&self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.inbox.lock().hold(bytes.to_vec());
        }
    }

    /// The first byte of the handshake if it already arrived in plain text.
    pub(crate) fn buffered_handshake_byte(&self) -> Option<u8> {
        self.inbox.lock().pending().first().copied()
    }

    /// The first byte of the handshake: one already received, or else the
    /// first of what has arrived by now, received without waiting where the
    /// handshake reads first. `Ok(None)`: the peer closed; `WouldBlock`:
    /// nothing has arrived yet.
    pub(crate) fn first_handshake_byte(&self) -> io::Result<Option<u8>> {
        let mut inbox = self.inbox.lock();
        if inbox.is_empty() && inbox.fill(&self.stream, RecvFlags::DONTWAIT)? == 0 {
            return Ok(None);
        }
        Ok(inbox.pending().first().copied())
    }
}

/// See [`Connection::handshake_input`].
pub(crate) struct HandshakeInput<'a>(&'a Connection);

impl Read for HandshakeInput<'_> {
    /// Never waits (`WouldBlock` when nothing has arrived): the handshake
    /// waits for the socket itself, within its deadline, which spares it a
    /// socket timeout to set before each receive and to clear after.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Held while receiving too, so that no other thread receives from
        // the socket during the handshake.
        let mut inbox = self.0.inbox.lock();
        if !inbox.is_empty() {
            return Ok(inbox.take_into(buf));
        }
        Ok(rustix::net::recv(&self.0.stream, buf, RecvFlags::DONTWAIT)?.0)
    }
}

fn encryption_started() -> Error {
    Error::invalid_state("encryption has started on this socket")
}
