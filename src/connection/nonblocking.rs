//! Non-blocking mode (`sslsocket_set_blocking(s, false)`), for event loops
//! that poll many sockets on one thread.
//!
//! The kernel socket itself stays blocking: every call of this mode passes
//! MSG_DONTWAIT instead, so a handshake on a library thread, a blocking call
//! after switching back, and `sslsocket_free`'s bounded flush all keep
//! working, and switching modes is only a flag.
//!
//! A read takes the plaintext already decrypted, or else performs one
//! receive that does not wait. A write encrypts into `Io::outgoing`, at most
//! `QUEUE_LIMIT` bytes of ciphertext per socket, and sends what the kernel
//! takes; the rest waits there for the next write or `flush`. Records the
//! reader's replies (a KeyUpdate, an alert) join the same queue, so
//! everything leaves in order.

use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use std::net::Shutdown;
use std::sync::atomic::Ordering;

use super::{check_writable, Connection, Input, Io, Wait};
use super::{MAX_FRAGMENT, RECORD_OVERHEAD};
use crate::error::{Error, ErrorKind, Result};
use crate::types::SslMode;

/// MSG_MORE where the system has it; elsewhere the FIN is a segment of its own.
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_MORE: SendFlags = SendFlags::MORE;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_MORE: SendFlags = SendFlags::empty();

/// The bound on a socket's queued ciphertext in non-blocking mode: a write
/// takes no more plaintext than fits under it (but always at least one
/// record's worth when nothing is queued).
pub(crate) const QUEUE_LIMIT: usize = 256 * 1024;

impl Connection {
    /// Blocking (the default) or non-blocking reads and writes.
    pub fn set_blocking(&self, blocking: bool) {
        self.blocking.store(blocking, Ordering::Release);
    }

    pub fn is_blocking(&self) -> bool {
        self.blocking.load(Ordering::Acquire)
    }

    /// Encrypted bytes are queued, waiting for the socket to take them.
    pub fn wants_write(&self) -> bool {
        !self.io.lock().outgoing.is_empty()
    }

    /// Sends what is queued. Non-blocking: WOULD_BLOCK if the kernel did not
    /// take all of it (or another thread is sending). Blocking: waits until
    /// the kernel has it.
    pub fn flush(&self) -> Result<()> {
        if self.is_blocking() {
            let flushed = self.flush_outgoing(self.send.lock());
            self.shut_down_if_closed();
            return flushed;
        }
        let Some(_sending) = self.send.try_lock() else {
            return Err(Error::would_block(
                "another thread is sending on this socket",
            ));
        };
        let mut io = self.io.lock();
        if io.outgoing.is_empty() {
            drop(io);
            self.shut_down_if_closed();
            return Ok(());
        }
        // A non-blocking disconnect's close_notify is the last thing queued.
        let all_left = if io.output_closed {
            self.send_queued_and_shut_down(&mut io)?
        } else {
            self.send_queued(&mut io)?
        };
        if all_left {
            Ok(())
        } else {
            Err(Error::would_block(format!(
                "{} encrypted bytes are still queued; poll for POLLOUT",
                io.outgoing.len()
            )))
        }
    }

    /// Plaintext already decrypted, or what one receive that does not wait
    /// brings; WOULD_BLOCK when that is none.
    pub(super) fn read_nonblocking(&self, buf: &mut [u8]) -> Result<usize> {
        if self.mode() == SslMode::Unencrypted {
            return self.plain_read_nonblocking(buf);
        }
        for attempt in 0..2 {
            if let Some(outcome) = self.read_available(buf) {
                return outcome;
            }
            if attempt == 0 {
                self.receive(Wait::Never);
            }
        }
        // Also the answer to a record without application data (a session
        // ticket, a KeyUpdate): it made the socket readable, yet is no close.
        Err(Error::would_block("no decrypted data is available yet"))
    }

    /// Encrypts as much of `data` as fits under `QUEUE_LIMIT` and sends what
    /// the kernel takes; WOULD_BLOCK only if it took nothing.
    pub(super) fn write_nonblocking(&self, data: &[u8]) -> Result<usize> {
        if self.mode() == SslMode::Unencrypted {
            return self.plain_write_nonblocking(data);
        }
        let Some(_sending) = self.send.try_lock() else {
            return Err(Error::would_block(
                "another thread is sending on this socket",
            ));
        };
        let mut io = self.io.lock();
        check_writable(&io)?;
        // What is queued goes first, which also makes room.
        self.send_queued(&mut io)?;
        let room = QUEUE_LIMIT.saturating_sub(io.outgoing.len());
        let mut budget = plaintext_fitting(room);
        if io.outgoing.is_empty() {
            budget = budget.max(MAX_FRAGMENT);
        }
        let taken = data.len().min(budget);
        if taken == 0 && !data.is_empty() {
            return Err(Error::would_block(format!(
                "{} encrypted bytes are queued; poll for POLLOUT or flush",
                io.outgoing.len()
            )));
        }
        io.encrypt(&data[..taken])?;
        self.send_queued(&mut io)?;
        Ok(taken)
    }

    /// Queues close_notify and sends what the kernel takes now; the write
    /// side is shut down once it all left (here or in `flush`).
    pub(super) fn disconnect_nonblocking(&self) -> Result<()> {
        let Some(_sending) = self.send.try_lock() else {
            return Err(Error::would_block(
                "another thread is sending on this socket",
            ));
        };
        let mut io = self.io.lock();
        if !io.queue_close_notify() {
            return Ok(());
        }
        self.send_queued_and_shut_down(&mut io)?;
        Ok(())
    }

    /// The first step of `sslsocket_free`, with the send lock held:
    /// close_notify behind what is queued, one attempt to send it all
    /// without waiting. False if some is left (a non-blocking socket loses
    /// it, as documented; a blocking one waits a little for it).
    pub(super) fn release_without_waiting(&self) -> bool {
        let mut io = self.io.lock();
        if !io.queue_close_notify() && io.outgoing.is_empty() {
            // Closed and flushed before.
            return true;
        }
        // After an error nothing more can leave: nothing is left to wait for.
        self.send_queued_and_shut_down(&mut io).unwrap_or(true)
    }

    /// Once the write side was closed here (a disconnect) and nothing is
    /// queued, the peer gets its end of stream. Shutting down twice is
    /// harmless.
    fn shut_down_if_closed(&self) {
        let io = self.io.lock();
        if io.output_closed && io.outgoing.is_empty() {
            let _ = self.stream.shutdown(Shutdown::Write);
        }
    }

    /// Sends `outgoing` without waiting, with the send lock held by the
    /// caller; true if all of it left. An emptied queue keeps no buffer, so
    /// idle connections cost no send memory.
    fn send_queued(&self, io: &mut Io) -> Result<bool> {
        self.send_queued_with(io, SendFlags::empty())
    }

    /// `send_queued` for a queue that ends with close_notify, which the end
    /// of stream follows once all has left: sent with MSG_MORE, so that the
    /// shutdown carries the last bytes and the FIN in one segment (one
    /// wake-up of the peer instead of two). MSG_MORE holds back only the
    /// last partial segment of a send that took everything, and the
    /// shutdown right after sends it; what a partial send leaves in the
    /// kernel goes out as the peer acknowledges, as without the flag.
    fn send_queued_and_shut_down(&self, io: &mut Io) -> Result<bool> {
        let all_left = self.send_queued_with(io, SEND_MORE)?;
        if all_left {
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Ok(all_left)
    }

    fn send_queued_with(&self, io: &mut Io, extra: SendFlags) -> Result<bool> {
        let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL | extra;
        while !io.outgoing.is_empty() {
            match rustix::net::send(&self.stream, &io.outgoing, flags) {
                Ok(n) => {
                    io.outgoing.drain(..n);
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return Ok(false),
                Err(e) => return Err(io.sending_failed(&e.into())),
            }
        }
        io.outgoing = Vec::new();
        Ok(true)
    }

    /// UNENCRYPTED mode: the bytes received and not read, or what one
    /// receive that does not wait brings.
    fn plain_read_nonblocking(&self, buf: &mut [u8]) -> Result<usize> {
        let Some(mut inbox) = self.inbox.try_lock() else {
            return Err(Error::would_block("another thread is reading this socket"));
        };
        // What arrives once a start call began is the handshake's.
        if self.mode() != SslMode::Unencrypted {
            return Err(Error::invalid_state(
                "encryption has started on this socket",
            ));
        }
        if inbox.is_empty() {
            if let Some(end) = self.io.lock().end_of_read() {
                return end;
            }
            let received = inbox.fill(&self.stream, RecvFlags::DONTWAIT);
            self.plain_received(received);
            if inbox.is_empty() {
                if let Some(end) = self.io.lock().end_of_read() {
                    return end;
                }
                return Err(Error::would_block("no data is available yet"));
            }
        }
        Ok(inbox.take_into(buf))
    }

    /// UNENCRYPTED mode: sends what the kernel takes now, nothing queued.
    fn plain_write_nonblocking(&self, data: &[u8]) -> Result<usize> {
        let Some(_sending) = self.send.try_lock() else {
            return Err(Error::would_block(
                "another thread is sending on this socket",
            ));
        };
        {
            let io = self.io.lock();
            if io.output_closed || io.input == Input::Closed {
                return Err(Error::new(ErrorKind::Closed, "the connection is closed"));
            }
        }
        if data.is_empty() {
            return Ok(0);
        }
        let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
        loop {
            match rustix::net::send(&self.stream, data, flags) {
                Ok(n) => return Ok(n),
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => {
                    return Err(Error::would_block(
                        "the socket's send buffer is full; poll for POLLOUT",
                    ))
                }
                Err(e) => return Err(self.io.lock().sending_failed(&e.into())),
            }
        }
    }
}

/// The most plaintext whose records fit in `room` bytes of ciphertext.
fn plaintext_fitting(room: usize) -> usize {
    let record = MAX_FRAGMENT + RECORD_OVERHEAD;
    let full = room / record;
    full * MAX_FRAGMENT + (room % record).saturating_sub(RECORD_OVERHEAD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;

    /// A server `Connection` whose TLS 1.3 handshake was done in memory, and
    /// the TCP stream of its peer (which never reads).
    fn handshaken() -> (Arc<Connection>, TcpStream) {
        let (connection, peer, _client) = handshaken_with_client();
        (connection, peer)
    }

    /// As `handshaken`, with the peer's TLS state, to read what was sent.
    pub(super) fn handshaken_with_client() -> (Arc<Connection>, TcpStream, rustls::ClientConnection)
    {
        let key_pair = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key_pair).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
        let server_config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client_config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut server = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
        while server.is_handshaking() || client.is_handshaking() {
            let mut flight = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut flight).unwrap();
            }
            server.read_tls(&mut flight.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            flight.clear();
            while server.wants_write() {
                server.write_tls(&mut flight).unwrap();
            }
            client.read_tls(&mut flight.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, from) = listener.accept().unwrap();
        let local = stream.local_addr().unwrap();
        let connection = Connection::new(stream, from, local, SslMode::Server, None);
        connection.install(rustls::Connection::Server(server), None);
        (connection, peer, client)
    }

    #[test]
    fn queued_ciphertext_stays_under_the_bound_and_fills_up_to_it() {
        let (connection, _peer) = handshaken();
        connection.set_blocking(false);
        let data = vec![0x5a; 1024 * 1024];
        let mut writes = 0;
        loop {
            match connection.write(&data) {
                Ok(n) => assert!(n > 0, "OK without taking anything"),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
                    break;
                }
            }
            let queued = connection.io.lock().outgoing.len();
            assert!(queued <= QUEUE_LIMIT, "{queued} bytes queued");
            writes += 1;
            assert!(writes < 1000, "the kernel and the queue never filled");
        }
        let queued = connection.io.lock().outgoing.len();
        assert!(
            queued > QUEUE_LIMIT - RECORD_OVERHEAD,
            "WOULD_BLOCK with room for more: {queued} bytes queued"
        );
        // A small write after WOULD_BLOCK is refused as well: the bound holds
        // for any size.
        assert_eq!(
            connection.write(b"x").unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        assert!(connection.wants_write());
    }

    #[test]
    fn the_plaintext_taken_never_encrypts_past_the_room() {
        assert_eq!(plaintext_fitting(0), 0);
        assert_eq!(plaintext_fitting(RECORD_OVERHEAD), 0);
        assert_eq!(plaintext_fitting(RECORD_OVERHEAD + 100), 100);
        let record = MAX_FRAGMENT + RECORD_OVERHEAD;
        assert_eq!(plaintext_fitting(3 * record), 3 * MAX_FRAGMENT);
        for room in [1000, record - 1, record + 1, 5 * record + 77, QUEUE_LIMIT] {
            let p = plaintext_fitting(room);
            assert!(
                p + p.div_ceil(MAX_FRAGMENT) * RECORD_OVERHEAD <= room,
                "{room}"
            );
        }
    }
}

/// Closing a socket that has ciphertext queued: what leaves, and when.
#[cfg(test)]
mod closing {
    use super::tests::handshaken_with_client;
    use super::*;
    use std::io::Read;
    use std::net::TcpStream;

    /// Reads everything until EOF, decrypting: (plaintext bytes, close_notify seen).
    fn drain(mut peer: TcpStream, mut client: rustls::ClientConnection) -> (usize, bool) {
        let mut raw = Vec::new();
        // Bounded, so a stream that never ends fails the test.
        peer.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let _ = peer.read_to_end(&mut raw);
        let mut slice = raw.as_slice();
        let mut plain = 0;
        let mut closed = false;
        while !slice.is_empty() {
            if client.read_tls(&mut slice).unwrap() == 0 {
                break;
            }
            let st = client.process_new_packets().unwrap();
            let mut buf = vec![0; st.plaintext_bytes_to_read()];
            client.reader().read_exact(&mut buf).unwrap();
            plain += buf.len();
            closed |= st.peer_has_closed();
        }
        (plain, closed)
    }

    fn fill(connection: &Connection) -> usize {
        let data = vec![0x5a; 1024 * 1024];
        let mut taken = 0;
        loop {
            match connection.write(&data) {
                Ok(n) => taken += n,
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::WouldBlock);
                    break;
                }
            }
        }
        taken
    }

    /// sslsocket_free of a non-blocking socket never waits for a peer that
    /// does not read (an event loop's thread must not stall).
    #[test]
    fn freeing_a_nonblocking_socket_never_waits() {
        let (connection, _peer, _client) = handshaken_with_client();
        connection.set_blocking(false);
        fill(&connection);
        let started = std::time::Instant::now();
        connection.release();
        let took = started.elapsed();
        // A blocking free waits up to 1 s for a stalled peer.
        assert!(took < std::time::Duration::from_millis(800), "{took:?}");
        // The same, without a clock: the waiting path arms a send timeout.
        assert_eq!(connection.stream().write_timeout().unwrap(), None);
    }

    /// A non-blocking disconnect queues close_notify behind the data; a
    /// blocking disconnect afterwards sends all of it and ends the stream.
    #[test]
    fn a_blocking_disconnect_after_a_nonblocking_one_sends_everything() {
        let (connection, peer, client) = handshaken_with_client();
        connection.set_blocking(false);
        let taken = fill(&connection);
        connection.disconnect_from_host().unwrap();
        assert!(connection.wants_write());
        let reader = std::thread::spawn(move || drain(peer, client));
        connection.set_blocking(true);
        connection.disconnect_from_host().unwrap();
        assert!(!connection.wants_write());
        assert_eq!(reader.join().unwrap(), (taken, true));
    }

    /// The same through a blocking flush, and then a free delivers the rest.
    #[test]
    fn a_blocking_flush_and_free_after_a_nonblocking_disconnect_end_the_stream() {
        for free in [false, true] {
            let (connection, peer, client) = handshaken_with_client();
            connection.set_blocking(false);
            let taken = fill(&connection);
            connection.disconnect_from_host().unwrap();
            let reader = std::thread::spawn(move || drain(peer, client));
            connection.set_blocking(true);
            if free {
                connection.release();
            } else {
                connection.flush().unwrap();
            }
            assert_eq!(reader.join().unwrap(), (taken, true), "free: {free}");
        }
    }
}
