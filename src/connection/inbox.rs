//! The receive buffer: ciphertext (or, before a start call, plain bytes)
//! received from the socket and not yet taken. Whoever holds its lock is the
//! one thread receiving.

use std::net::TcpStream;

use rustix::net::RecvFlags;

use super::{MAX_FRAGMENT, RECORD_OVERHEAD};

/// While data streams in, one receive takes up to two full records.
const RECEIVE_SIZE: usize = 2 * (MAX_FRAGMENT + RECORD_OVERHEAD);
/// After a small receive, the next one (often a thread parked on a quiet
/// connection) takes a buffer of one page.
const SMALL_RECEIVE_SIZE: usize = 4096;

/// Bytes received from the socket that nobody has taken yet.
#[derive(Default)]
pub(super) struct Inbox {
    bytes: Vec<u8>,
    taken: usize,
    /// The buffer for the next receive: large while data streams in.
    streaming: bool,
}

impl Inbox {
    pub(super) fn pending(&self) -> &[u8] {
        &self.bytes[self.taken..]
    }

    pub(super) fn is_empty(&self) -> bool {
        self.taken == self.bytes.len()
    }

    /// Receives into a fresh buffer; `Ok(0)` is the end of the stream.
    pub(super) fn fill(
        &mut self,
        stream: &TcpStream,
        flags: RecvFlags,
    ) -> rustix::io::Result<usize> {
        let size = if self.streaming {
            RECEIVE_SIZE
        } else {
            SMALL_RECEIVE_SIZE
        };
        self.bytes = Vec::with_capacity(size);
        self.taken = 0;
        // Receives into the spare capacity: nothing is zeroed first.
        let spare = rustix::buffer::spare_capacity(&mut self.bytes);
        let received = rustix::net::recv(stream, spare, flags).map(|(n, _)| n);
        match received {
            Ok(n) if n > 0 => self.streaming = 2 * n >= size,
            _ => self.release(),
        }
        received
    }

    /// Takes `bytes` received by other means as pending, behind nothing:
    /// the inbox must be empty.
    pub(super) fn hold(&mut self, bytes: Vec<u8>) {
        debug_assert!(self.is_empty(), "bytes held behind pending ones");
        self.bytes = bytes;
        self.taken = 0;
    }

    /// Moves up to `buf.len()` pending bytes into `buf`.
    pub(super) fn take_into(&mut self, buf: &mut [u8]) -> usize {
        let pending = self.pending();
        let n = pending.len().min(buf.len());
        buf[..n].copy_from_slice(&pending[..n]);
        self.consume(n);
        n
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.taken += n;
        if self.is_empty() {
            self.release();
        }
    }

    /// An idle connection keeps no receive buffer.
    pub(super) fn release(&mut self) {
        self.bytes = Vec::new();
        self.taken = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;
    use std::io::Write;
    use std::net::TcpListener;

    fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn the_inbox_keeps_a_buffer_only_while_it_holds_bytes() {
        let (mut client, server) = socket_pair();
        let mut inbox = Inbox::default();
        assert_eq!(inbox.fill(&server, RecvFlags::DONTWAIT), Err(Errno::AGAIN));
        assert_eq!(inbox.bytes.capacity(), 0, "an empty receive keeps a buffer");

        client.write_all(b"0123456789").unwrap();
        assert_eq!(inbox.fill(&server, RecvFlags::empty()), Ok(10));
        assert!(
            inbox.bytes.capacity() <= SMALL_RECEIVE_SIZE,
            "a quiet connection got a large buffer"
        );
        assert_eq!(inbox.pending(), b"0123456789");
        inbox.consume(4);
        assert_eq!(inbox.pending(), b"456789");
        inbox.consume(6);
        assert!(inbox.is_empty());
        assert_eq!(
            inbox.bytes.capacity(),
            0,
            "a drained inbox keeps its buffer"
        );

        let writer = std::thread::spawn(move || {
            client.write_all(&[7u8; 3 * RECEIVE_SIZE]).unwrap();
            client
        });
        let (mut received, mut largest) = (0, 0);
        while received < 3 * RECEIVE_SIZE {
            let n = inbox.fill(&server, RecvFlags::empty()).unwrap();
            largest = largest.max(inbox.bytes.capacity());
            received += n;
            inbox.consume(n);
        }
        assert!(
            largest >= RECEIVE_SIZE,
            "a stream is received in small pieces"
        );
        assert_eq!(
            inbox.bytes.capacity(),
            0,
            "a drained inbox keeps its buffer"
        );

        drop(writer.join().unwrap());
        assert_eq!(inbox.fill(&server, RecvFlags::empty()), Ok(0));
        assert_eq!(
            inbox.bytes.capacity(),
            0,
            "the end of the stream keeps a buffer"
        );
    }
}
