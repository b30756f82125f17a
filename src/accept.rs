//! The accept loop: one thread per listening session.
//!
//! It accepts only while the server may take another connection (not
//! paused, queue not full, handshakes below their bound), so excess clients
//! wait in the kernel's backlog rather than in memory. The listening socket
//! is non-blocking and watched with mio, so `close` can wake the thread, and
//! a readiness wake-up while accepting is paused costs nothing.

use std::io;
use std::net::TcpListener;
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
}

impl Acceptor {
    /// Watches `listener`; on failure gives it back untouched.
    pub(crate) fn new(
        listener: TcpListener,
    ) -> std::result::Result<(Acceptor, Waker), (Error, TcpListener)> {
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
            Ok((poll, waker)) => Ok((Acceptor { listener, poll }, Waker(waker))),
            Err(e) => Err((
                Error::new(
                    ErrorKind::Io,
                    format!("cannot watch the listening socket: {}", os_reason(&e)),
                ),
                listener,
            )),
        }
    }

    /// The listener back, blocking again, for a caller whose listen failed.
    pub(crate) fn into_listener(self) -> TcpListener {
        let _ = self.listener.set_nonblocking(false);
        self.listener
    }

    pub(crate) fn fd(&self) -> i32 {
        self.listener.as_raw_fd()
    }

    pub(crate) fn run(mut self, session: &Arc<Session>) {
        let mut events = Events::with_capacity(4);
        let mut backoff = MIN_BACKOFF;
        while session.wait_until_accepting() {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    backoff = MIN_BACKOFF;
                    // Accepted sockets must block: one thread per connection.
                    let started = stream
                        .set_nonblocking(false)
                        .map_err(|e| Error::new(ErrorKind::Io, os_reason(&e)))
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
