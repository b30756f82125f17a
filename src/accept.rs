//! The accept loop: one thread per listening session.
//!
//! It accepts only while the server may take another connection (not
//! paused, queue not full, handshakes below their bound), so excess clients
//! wait in the kernel's backlog rather than in memory. The listening socket
//! is non-blocking and watched with mio, so `close` can wake the thread, and
//! a readiness wake-up while accepting is paused costs nothing.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::error::{os_reason, Error, ErrorKind};
use crate::events::Event;
use crate::server::Session;
use crate::types::{EventKind, SocketError};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// After a failed accept (EMFILE, ENOMEM...) the loop sleeps this long,
/// doubling up to `MAX_BACKOFF`, instead of spinning on the same error.
const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Wakes the accept thread (used by `close`).
pub(crate) struct Waker(mio::Waker);

impl Waker {
    pub(crate) fn wake(&self) {
        let _ = self.0.wake();
    }
}

pub(crate) struct Acceptor {
    listener: TcpListener,
    poll: Poll,
    /// Nagle's algorithm is off on the listener, and Linux copies that to
    /// every accepted socket: no `setsockopt` per connection.
    nodelay_inherited: bool,
    /// What the listener came with, given back when the library lets go of
    /// it: an adopted descriptor may have other copies (systemd's, a
    /// parent's) that share its options and its O_NONBLOCK.
    came_with: ListenerOptions,
}

struct ListenerOptions {
    nonblocking: Option<bool>,
    nodelay: Option<bool>,
}

impl Acceptor {
    /// Watches `listener`; on failure gives it back untouched.
    pub(crate) fn new(
        listener: TcpListener,
    ) -> std::result::Result<(Acceptor, Waker), (Error, TcpListener)> {
        let socket = socket2::SockRef::from(&listener);
        let nonblocking = socket.nonblocking().ok();
        let setup = || -> io::Result<(Poll, mio::Waker)> {
            let poll = Poll::new()?;
            poll.registry().register(
                &mut SourceFd(&listener.as_raw_fd()),
                LISTENER,
                Interest::READABLE,
            )?;
            let waker = mio::Waker::new(poll.registry(), WAKER)?;
            listener.set_nonblocking(true)?;
            Ok((poll, waker))
        };
        match setup() {
            Ok((poll, waker)) => {
                // Last, so a failed setup leaves the listener as it came.
                let nodelay = socket.tcp_nodelay().ok();
                let nodelay_inherited = cfg!(target_os = "linux")
                    && (nodelay == Some(true) || socket.set_tcp_nodelay(true).is_ok());
                let acceptor = Acceptor {
                    listener,
                    poll,
                    nodelay_inherited,
                    came_with: ListenerOptions {
                        nonblocking,
                        nodelay,
                    },
                };
                Ok((acceptor, Waker(waker)))
            }
            Err(e) => Err((
                Error::new(
                    ErrorKind::Io,
                    format!("cannot watch the listening socket: {}", os_reason(&e)),
                ),
                listener,
            )),
        }
    }

    /// The listener back, as it came, for a caller whose listen failed.
    pub(crate) fn into_listener(self) -> TcpListener {
        self.give_back_options();
        self.listener
    }

    fn give_back_options(&self) {
        if self.came_with.nonblocking == Some(false) {
            let _ = self.listener.set_nonblocking(false);
        }
        if self.came_with.nodelay == Some(false) {
            let _ = socket2::SockRef::from(&self.listener).set_tcp_nodelay(false);
        }
    }

    /// Makes an accepted socket what a connection thread expects: blocking
    /// (one thread per connection), with Nagle's algorithm off (records go
    /// out whole per write, so Nagle only adds latency). On Linux an
    /// accepted socket never inherits the listener's O_NONBLOCK (accept(2))
    /// and does inherit its TCP_NODELAY, so neither needs a system call.
    fn prepare(&self, stream: &TcpStream) -> Result<(), Error> {
        if !cfg!(target_os = "linux") {
            stream
                .set_nonblocking(false)
                .map_err(|e| Error::new(ErrorKind::Io, os_reason(&e)))?;
        }
        if !self.nodelay_inherited {
            let _ = stream.set_nodelay(true);
        }
        Ok(())
    }

    pub(crate) fn fd(&self) -> i32 {
        self.listener.as_raw_fd()
    }

    /// Accepts until the session closes, then closes the listener with the
    /// options it came with.
    pub(crate) fn run(mut self, session: &Arc<Session>) {
        self.accept_until_closed(session);
        self.give_back_options();
    }

    fn accept_until_closed(&mut self, session: &Arc<Session>) {
        let mut events = Events::with_capacity(4);
        let mut backoff = MIN_BACKOFF;
        while session.wait_until_accepting() {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    backoff = MIN_BACKOFF;
                    let started = self
                        .prepare(&stream)
                        .and_then(|()| session.start_connection(stream, peer));
                    if let Err(e) = started {
                        report(session, SocketError::SocketResource, e.message());
                        if !session.sleep(backoff) {
                            return;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Edge-triggered: wait for the next connection (or close).
                    if let Err(e) = self.poll.poll(&mut events, None) {
                        if e.kind() != io::ErrorKind::Interrupted {
                            report(session, SocketError::Unknown, &os_reason(&e));
                            if !session.sleep(backoff) {
                                return;
                            }
                        }
                    }
                }
                Err(e) if is_transient(&e) => {}
                Err(e) => {
                    let error = match e.raw_os_error() {
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                            SocketError::SocketResource
                        }
                        Some(libc::EACCES | libc::EPERM) => SocketError::SocketAccess,
                        _ => SocketError::Unknown,
                    };
                    report(session, error, &format!("accept failed: {}", os_reason(&e)));
                    if !session.sleep(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Failures that concern one aborted client, not the listener.
fn is_transient(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Interrupted
        || matches!(
            err.raw_os_error(),
            Some(libc::ECONNABORTED | libc::EPROTO | libc::ECONNRESET)
        )
}

fn report(session: &Session, error: SocketError, text: &str) {
    session.common.set_error(error, text);
    session.events().emit(EventKind::AcceptError, || {
        Event::new(EventKind::AcceptError, None)
            .socket_error(error)
            .describe(text)
    });
}
