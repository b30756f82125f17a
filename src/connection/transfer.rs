//! Reading and writing an encrypted connection: the blocking calls, and
//! the receiving, flushing and end-of-input rules the non-blocking and
//! plain paths share with them.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};

use super::inbox::Inbox;
use super::{Connection, Input, Io, PLAINTEXT_LIMIT, RELEASE_FLUSH_TIMEOUT, WRITE_BATCH};
use crate::error::{Error, ErrorKind, Result};
use crate::types::SslMode;

/// How long `Connection::receive` may wait for the socket.
#[derive(Clone, Copy)]
pub(super) enum Wait {
    Never,
    Until(Instant),
    Forever,
}

impl Connection {
    /// Decrypted bytes ready to read without blocking: what was decrypted
    /// before, or else what has arrived on the socket by now.
    pub fn bytes_available(&self) -> usize {
        if self.mode() == SslMode::Unencrypted {
            return self.plain_bytes_available();
        }
        self.receive(Wait::Never);
        self.io.lock().plaintext
    }

    /// Blocks until at least one byte is available and reads it; `Ok(0)`
    /// means the peer closed cleanly (close_notify).
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Err(Error::invalid_argument("the buffer length must not be 0"));
        }
        if !self.is_blocking() {
            return self.read_nonblocking(buf);
        }
        if self.mode() == SslMode::Unencrypted {
            return self.plain_read(buf);
        }
        loop {
            if let Some(outcome) = self.read_available(buf) {
                return outcome;
            }
            self.receive(Wait::Forever);
        }
    }

    /// What a read returns without receiving: plaintext already decrypted,
    /// or the end of input; `None` while more may come. Reports the tickets
    /// taken in meanwhile: reads report them, never a getter that happened
    /// to take them in.
    pub(super) fn read_available(&self, buf: &mut [u8]) -> Option<Result<usize>> {
        let (outcome, tickets) = {
            let mut io = self.io.lock();
            if io.tls.is_none() {
                return Some(Err(Error::invalid_state(
                    "the TLS handshake has not completed",
                )));
            }
            let outcome = if io.plaintext > 0 {
                Some(Ok(take_plaintext(&mut io, buf)))
            } else {
                io.end_of_read()
            };
            (outcome, io.tickets > 0)
        };
        if tickets {
            self.report_tickets();
        }
        outcome
    }

    /// Waits until plaintext is available (true), or the timeout passes or no
    /// more data can come (false). `None` waits forever.
    pub fn wait_for_ready_read(&self, timeout: Option<Duration>) -> bool {
        let wait = match timeout {
            None => Wait::Forever,
            Some(timeout) => Wait::Until(Instant::now() + timeout),
        };
        if self.mode() == SslMode::Unencrypted {
            return self.plain_wait_for_ready_read(wait);
        }
        loop {
            let (ready, tickets) = {
                let io = self.io.lock();
                let ready = if io.plaintext > 0 {
                    Some(true)
                } else if io.input != Input::Open || io.tls.is_none() {
                    Some(false)
                } else {
                    None
                };
                (ready, io.tickets > 0)
            };
            if tickets {
                self.report_tickets();
            }
            if let Some(ready) = ready {
                return ready;
            }
            let received = self.receive(wait);
            let expired = matches!(wait, Wait::Until(deadline) if Instant::now() >= deadline);
            if !received || expired {
                return self.io.lock().plaintext > 0;
            }
        }
    }

    /// Brings in input: the ciphertext left in the inbox, or else what the
    /// socket delivers within `wait`, decrypted. False if `wait` ended with
    /// nothing received; true if there may be news (plaintext, the end of
    /// input), which the caller looks for under the I/O lock. A waiting
    /// receive returns as soon as there is plaintext; `Wait::Never` adds what
    /// has arrived to what there is.
    pub(super) fn receive(&self, wait: Wait) -> bool {
        let Some(mut inbox) = self.lock_inbox(wait) else {
            return false;
        };
        {
            // Another thread may have received while this one waited for the
            // inbox; during the handshake the socket is the handshake's.
            let io = self.io.lock();
            let enough = match wait {
                Wait::Never => io.plaintext > PLAINTEXT_LIMIT,
                Wait::Until(_) | Wait::Forever => io.plaintext > 0,
            };
            if enough || io.input != Input::Open || io.tls.is_none() {
                return true;
            }
        }
        let received = if inbox.is_empty() {
            if let Wait::Until(deadline) = wait {
                if !wait_readable(&self.stream, deadline) {
                    return false;
                }
            }
            // A blocking receive rather than a poll and then a receive: one
            // system call per wait (a poll first cost 8% of echo throughput).
            let flags = match wait {
                Wait::Forever => RecvFlags::empty(),
                Wait::Until(_) | Wait::Never => RecvFlags::DONTWAIT,
            };
            Some(inbox.fill(&self.stream, flags))
        } else {
            None
        };
        let mut io = self.io.lock();
        match received {
            Some(Ok(0)) => io.end_of_input(),
            Some(Ok(_)) | None => io.take_in(&mut inbox),
            // Interrupted, or readable with nothing to read: look again.
            Some(Err(Errno::INTR | Errno::AGAIN)) => return !matches!(wait, Wait::Never),
            Some(Err(e)) => io.input_failed(&e.into()),
        }
        if io.input != Input::Open {
            // Nothing more will be read.
            inbox.release();
        }
        drop(inbox);
        self.send_replies(io);
        true
    }

    /// The inbox, waiting for it as long as `wait` allows: whoever holds it
    /// is the one thread receiving.
    pub(super) fn lock_inbox(&self, wait: Wait) -> Option<MutexGuard<'_, Inbox>> {
        match wait {
            Wait::Forever => Some(self.inbox.lock()),
            Wait::Until(deadline) => self.inbox.try_lock_until(deadline),
            Wait::Never => self.inbox.try_lock(),
        }
    }

    /// Sends what rustls queued while taking input (a fatal alert after a
    /// TLS error, a warning refusing renegotiation) without waiting: a
    /// reading thread must not block on a peer that does not read. What the
    /// kernel does not take now leaves with the next write or the close; if
    /// a writer holds the send lock, it sends these after its own records.
    pub(super) fn send_replies(&self, mut io: MutexGuard<'_, Io>) {
        if io.outgoing.is_empty() || io.output_closed {
            return;
        }
        let Some(_sending) = self.send.try_lock() else {
            return;
        };
        let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
        if let Ok(n) = rustix::net::send(&self.stream, &io.outgoing, flags) {
            io.outgoing.drain(..n);
        }
    }

    /// Encrypts and sends all of `data`; blocks until the kernel has it.
    pub fn write(&self, data: &[u8]) -> Result<usize> {
        if !self.is_blocking() {
            return self.write_nonblocking(data);
        }
        if self.mode() == SslMode::Unencrypted {
            return self.plain_write(data);
        }
        let send = self.send.lock();
        let mut offset = 0;
        while offset < data.len() {
            let batch = {
                let mut io = self.io.lock();
                check_writable(&io)?;
                let end = data.len().min(offset + WRITE_BATCH);
                io.encrypt(&data[offset..end])?;
                offset = end;
                std::mem::take(&mut io.outgoing)
            };
            self.send_bytes(&batch)?;
        }
        self.flush_outgoing(send)?;
        Ok(data.len())
    }

    /// Sends close_notify and shuts down the write side; idempotent. Waits
    /// for writes in progress on other threads.
    ///
    /// In non-blocking mode it queues close_notify behind what is queued and
    /// sends what the kernel takes now; `flush` sends the rest and then
    /// shuts the write side down.
    pub fn disconnect_from_host(&self) -> Result<()> {
        if !self.is_blocking() {
            return self.disconnect_nonblocking();
        }
        self.disconnect(self.send.lock())
    }

    pub(super) fn disconnect(&self, send: MutexGuard<'_, ()>) -> Result<()> {
        let queued = {
            let mut io = self.io.lock();
            // A close_notify queued before (by a non-blocking disconnect)
            // may still be waiting to leave, behind data.
            io.queue_close_notify() || !io.outgoing.is_empty()
        };
        if !queued {
            return Ok(());
        }
        let flushed = self.flush_outgoing(send);
        let _ = self.stream.shutdown(Shutdown::Write);
        flushed
    }

    /// Closes at once, discarding unsent data; wakes every blocked call.
    pub fn abort(&self) {
        {
            let mut io = self.io.lock();
            if io.input == Input::Open {
                io.input = Input::Closed;
            }
            io.output_closed = true;
        }
        // Wakes a thread blocked receiving or sending on the socket.
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// The application lets go of the connection (`sslsocket_free`): a
    /// graceful close if it is still open.
    ///
    /// It never blocks for long: if another thread is in the middle of a
    /// write, or the peer stops reading, the connection is closed without
    /// close_notify rather than waiting.
    pub fn release(&self) {
        if self.session.get().is_some() {
            if let Some(send) = self.send.try_lock() {
                // Usually the kernel takes it all at once, and no socket
                // timeout needs setting. Only a blocking socket waits for
                // the rest; an event loop's socket never waits.
                let all_left = self.release_without_waiting();
                if !all_left && self.is_blocking() {
                    let _ = self.stream.set_write_timeout(Some(RELEASE_FLUSH_TIMEOUT));
                    let _ = self.disconnect(send);
                }
            }
        }
        self.abort();
    }

    /// Sends everything queued in `Io::outgoing`, then releases the send lock
    /// while still holding the I/O lock, so nothing queued meanwhile is left
    /// behind without a sender.
    pub(super) fn flush_outgoing(&self, send: MutexGuard<'_, ()>) -> Result<()> {
        loop {
            let batch = {
                let mut io = self.io.lock();
                if io.outgoing.is_empty() {
                    drop(send);
                    return Ok(());
                }
                std::mem::take(&mut io.outgoing)
            };
            self.send_bytes(&batch)?;
        }
    }

    pub(super) fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        // std sends with MSG_NOSIGNAL, so a closed peer is an error, not SIGPIPE.
        (&self.stream)
            .write_all(bytes)
            .map_err(|e| self.io.lock().sending_failed(&e))
    }
}

/// Waits until the socket has input, its end or an error (true), or until
/// `deadline` (false).
pub(super) fn wait_readable(stream: &TcpStream, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    // Only a timeout beyond i64 seconds fails to convert: that is forever.
    let timeout = Timespec::try_from(left).ok();
    let mut fds = [PollFd::new(stream, PollFlags::IN)];
    // An interrupted poll counts as ready: the caller looks and waits again.
    !matches!(rustix::event::poll(&mut fds, timeout.as_ref()), Ok(0))
}

pub(super) fn check_writable(io: &Io) -> Result<()> {
    if io.tls.is_none() {
        return Err(Error::invalid_state("the TLS handshake has not completed"));
    }
    if io.output_closed || io.input == Input::Closed {
        return Err(Error::new(ErrorKind::Closed, "the connection is closed"));
    }
    Ok(())
}

pub(super) fn take_plaintext(io: &mut Io, buf: &mut [u8]) -> usize {
    let n = if io.salvaged.is_empty() {
        let tls = io.tls.as_mut().expect("plaintext comes from rustls");
        tls.reader().read(buf).unwrap_or(0)
    } else {
        let n = buf.len().min(io.salvaged.len());
        buf[..n].copy_from_slice(&io.salvaged[..n]);
        io.salvaged.drain(..n);
        n
    };
    io.plaintext -= n;
    io.end_if_closed();
    n
}
