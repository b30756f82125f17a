//! One `listen` call's lifetime: the accept thread, the handshakes in
//! flight, the queue of handshaken connections, and a close that returns
//! only when no thread of the session can run a callback any more.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::callback_thread::CallbackThread;
use super::Common;
use crate::accept;
use crate::connection::Connection;
use crate::error::{os_reason, Error, ErrorKind, Result};
use crate::events::EventSink;
use crate::handshake::{self, HandshakeDeadline};
use crate::tls::ServerTls;
use crate::types::{EventKind, ProxyProtocol, SslMode};

/// What the session's lock protects.
pub(crate) struct SessionState {
    /// Handshaken connections, oldest first.
    pub(super) queue: std::collections::VecDeque<Arc<Connection>>,
    /// Connections whose thread is still in the handshake (or waiting for a
    /// queue slot), by id.
    pub(super) handshakes: HashMap<u64, Arc<Connection>>,
    /// Connection threads (by connection id) that may still run a callback:
    /// from before their thread starts until their last callback returned.
    /// close waits for this to empty, also after a connection left the
    /// queue, since its thread may still be inside the pending callback.
    pub(super) running: std::collections::HashSet<u64>,
    /// Connection threads inside a close (of this server or another)
    /// called from their callback. A closer that is a callback itself does
    /// not wait for these, or two callbacks closing at once would wait for
    /// each other forever (see `callback_thread`).
    pub(super) closing_callbacks: std::collections::HashSet<u64>,
    /// The accept thread is inside a close called from its callback.
    pub(super) accept_thread_closing: bool,
    /// The accept thread has not finished yet.
    pub(super) accepting: bool,
    pub(super) next_id: u64,
}

/// One `listen` call's lifetime.
pub(crate) struct Session {
    pub(crate) common: Arc<Common>,
    pub(crate) state: Mutex<SessionState>,
    /// Queue, handshakes, settings, pause or closing changed.
    pub(crate) changed: Condvar,
    pub(super) closing: Arc<AtomicBool>,
    pub(super) events: EventSink,
    pub(super) waker: accept::Waker,
    pub(super) accept_thread: Mutex<Option<JoinHandle<()>>>,
    /// Kept after the handle is taken, so any closer can tell whether it
    /// runs on the accept thread (a callback there must not wait for itself).
    pub(super) accept_thread_id: Mutex<Option<std::thread::ThreadId>>,
    pub(super) fd: i32,
    pub(super) local: SocketAddr,
    /// Every connection is accepted on `local` (a listener bound to one
    /// address, not transparent), so no connection needs asking.
    local_is_exact: bool,
    /// The listener has socket timeouts (an adopted one may), which
    /// accepted sockets inherit and the library's blocking calls must not.
    inherits_timeouts: bool,
}

impl Session {
    pub(super) fn start(
        common: Arc<Common>,
        listener: TcpListener,
    ) -> std::result::Result<Arc<Session>, (Error, TcpListener)> {
        let local = match listener.local_addr() {
            Ok(local) => local,
            Err(e) => {
                let error = Error::new(
                    ErrorKind::Io,
                    format!("not a bound socket: {}", os_reason(&e)),
                );
                return Err((error, listener));
            }
        };
        let socket = socket2::SockRef::from(&listener);
        // A transparent (TPROXY) listener accepts connections to any
        // address, whatever it is bound to.
        let transparent = match local {
            SocketAddr::V4(_) => socket.ip_transparent_v4(),
            SocketAddr::V6(_) => socket.ip_transparent_v6(),
        };
        let local_is_exact = !local.ip().is_unspecified() && transparent.is_ok_and(|t| !t);
        let inherits_timeouts = !matches!(
            (socket.read_timeout(), socket.write_timeout()),
            (Ok(None), Ok(None))
        );
        let (acceptor, waker) = accept::Acceptor::new(listener)?;
        let closing = Arc::new(AtomicBool::new(false));
        let session = Arc::new(Session {
            events: EventSink::new(common.callbacks.clone(), closing.clone()),
            common,
            state: Mutex::new(SessionState {
                queue: Default::default(),
                handshakes: HashMap::new(),
                running: Default::default(),
                closing_callbacks: Default::default(),
                accept_thread_closing: false,
                accepting: true,
                next_id: 0,
            }),
            changed: Condvar::new(),
            closing,
            fd: acceptor.fd(),
            waker,
            accept_thread: Mutex::new(None),
            accept_thread_id: Mutex::new(None),
            local,
            local_is_exact,
            inherits_timeouts,
        });
        // The acceptor waits in a slot so a failed spawn can hand the
        // listener back to the caller.
        let slot = Arc::new(Mutex::new(Some(acceptor)));
        let (for_thread, slot_for_thread) = (session.clone(), slot.clone());
        let spawned = std::thread::Builder::new()
            .name("sslserver-accept".into())
            .spawn(move || {
                // Cleared however the thread ends (a panicking callback of
                // the Rust API included), or close would wait forever.
                let _finished = AcceptThreadFinished(&for_thread);
                let _thread = CallbackThread::enter(&for_thread, None);
                let acceptor = slot_for_thread.lock().take();
                if let Some(acceptor) = acceptor {
                    acceptor.run(&for_thread);
                }
            });
        match spawned {
            Ok(handle) => {
                *session.accept_thread_id.lock() = Some(handle.thread().id());
                *session.accept_thread.lock() = Some(handle);
                Ok(session)
            }
            Err(e) => {
                session.closing.store(true, Ordering::Release);
                let acceptor = slot.lock().take().expect("the thread never started");
                let error = Error::new(
                    ErrorKind::Io,
                    format!("cannot start the accept thread: {e}"),
                );
                Err((error, acceptor.into_listener()))
            }
        }
    }

    pub(crate) fn events(&self) -> &EventSink {
        &self.events
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub(crate) fn wake(&self) {
        let _state = self.state.lock();
        self.changed.notify_all();
    }

    /// Blocks the accept thread while accepting is paused, the queue is full
    /// or too many handshakes are in flight. False once the session closes.
    pub(crate) fn wait_until_accepting(&self) -> bool {
        let mut state = self.state.lock();
        loop {
            if self.is_closing() {
                return false;
            }
            let queue_full =
                state.queue.len() >= self.common.max_pending.load(Ordering::Relaxed) as usize;
            let busy = state.handshakes.len()
                >= self.common.max_handshakes.load(Ordering::Relaxed) as usize;
            if !queue_full && !busy && !self.common.paused.load(Ordering::Acquire) {
                return true;
            }
            self.changed.wait(&mut state);
        }
    }

    /// Sleeps for `delay` unless the session closes first (false).
    pub(crate) fn sleep(&self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        let mut state = self.state.lock();
        while !self.is_closing() {
            if self.changed.wait_until(&mut state, until).timed_out() {
                break;
            }
        }
        !self.is_closing()
    }

    /// Starts the thread of a freshly accepted connection.
    pub(crate) fn start_connection(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Result<()> {
        if self.inherits_timeouts {
            let _ = stream.set_read_timeout(None);
            let _ = stream.set_write_timeout(None);
        }
        // Only a wildcard (or transparent) listener needs asking which
        // address took the connection: a system call per connection.
        let local = if self.local_is_exact {
            self.local
        } else {
            stream.local_addr().unwrap_or(self.local)
        };
        let connection = Connection::new(stream, peer, local, SslMode::Server, None);
        let id = {
            let mut state = self.state.lock();
            state.next_id += 1;
            let id = state.next_id;
            state.handshakes.insert(id, connection.clone());
            state.running.insert(id);
            id
        };
        // The deadline counts from accept, not from when the thread first runs.
        let timeout_ms = self.common.handshake_timeout_ms.load(Ordering::Relaxed);
        let deadline = HandshakeDeadline::starting_now(timeout_ms);
        // The certificate in force at accept, so a rotation never applies to
        // a connection accepted before it.
        let tls = self.common.tls.lock().clone();
        let proxy = ProxyProtocol::from_raw(self.common.proxy_protocol.load(Ordering::Relaxed))
            .unwrap_or_default();
        let session = self.clone();
        let for_thread = connection.clone();
        let started = connection.start_handshake(move || {
            // A bug in one connection must not leak its handshake slot or
            // leave its client hanging.
            let thread = CallbackThread::enter(&session, Some((id, for_thread.clone())));
            let served = catch_unwind(AssertUnwindSafe(|| {
                session.serve(id, for_thread.clone(), tls, proxy, deadline)
            }));
            drop(thread);
            if served.is_err() {
                for_thread.abort();
                session.forget(id);
            }
            session.state.lock().running.remove(&id);
            session.changed.notify_all();
        });
        started.map_err(|e| {
            let mut state = self.state.lock();
            state.handshakes.remove(&id);
            state.running.remove(&id);
            drop(state);
            connection.abort();
            Error::new(
                ErrorKind::Io,
                format!("cannot start a thread for {}: {e}", connection.peer_addr()),
            )
        })
    }

    /// The handshake thread: PROXY protocol header, handshake, queue,
    /// PENDING_CONNECTION_AVAILABLE.
    pub(super) fn serve(
        &self,
        id: u64,
        connection: Arc<Connection>,
        tls: Option<Arc<ServerTls>>,
        proxy: ProxyProtocol,
        deadline: HandshakeDeadline,
    ) {
        let handshaken = match tls {
            Some(tls) => handshake::perform(&connection, &tls, &self.events, proxy, deadline),
            None => None,
        };
        let Some(tls) = handshaken else {
            self.forget(id);
            return;
        };
        let server_name = handshake::requested_server_name(&tls);
        connection.install(tls, server_name);
        if !self.enqueue(id, &connection) {
            connection.release();
            return;
        }
        self.events.emit(EventKind::PendingConnectionAvailable, || {
            crate::events::Event::new(EventKind::PendingConnectionAvailable, Some(&connection))
                .describe(format!(
                    "encrypted connection from {} is ready",
                    connection.peer_addr()
                ))
        });
    }

    pub(super) fn forget(&self, id: u64) {
        self.state.lock().handshakes.remove(&id);
        self.changed.notify_all();
    }

    /// Waits for a free queue slot and queues the connection; false if the
    /// session closed first.
    pub(super) fn enqueue(&self, id: u64, connection: &Arc<Connection>) -> bool {
        let mut state = self.state.lock();
        loop {
            if self.is_closing() {
                state.handshakes.remove(&id);
                return false;
            }
            if state.queue.len() < self.common.max_pending.load(Ordering::Relaxed) as usize {
                break;
            }
            self.changed.wait(&mut state);
        }
        state.handshakes.remove(&id);
        state.queue.push_back(connection.clone());
        self.queue_changed(&state);
        self.changed.notify_all();
        true
    }

    /// Makes the notification descriptor (if there is one) follow the
    /// queue; call with the state lock held, after changing the queue.
    pub(super) fn queue_changed(&self, state: &SessionState) {
        if let Some(notification) = self.common.notification.get() {
            notification.set_ready(!state.queue.is_empty());
        }
    }

    /// Returns once no thread of this session runs a callback or touches
    /// the server any more, however many threads call it at once. A callback
    /// closing its own server does not wait for itself; a closer that is a
    /// callback does not wait for callbacks that are closing a server too
    /// (see `callback_thread`).
    pub(super) fn close(&self) {
        let in_callback = CallbackThread::is_current();
        {
            let _state = self.state.lock();
            self.closing.store(true, Ordering::Release);
            self.changed.notify_all();
        }
        self.waker.wake();
        if !self.on_accept_thread() {
            self.wait_for_accept_thread(in_callback);
        }
        // The accept thread is gone (or closing from its callback, which
        // accepts nothing more), so every connection it started is in one of
        // these two sets, with its thread handle stored.
        let (handshakes, queued) = {
            let mut state = self.state.lock();
            let handshakes: Vec<_> = state.handshakes.drain().map(|(_, c)| c).collect();
            let queued: Vec<_> = state.queue.drain(..).collect();
            self.queue_changed(&state);
            (handshakes, queued)
        };
        for connection in &handshakes {
            connection.abort();
        }
        for connection in &queued {
            connection.release();
        }
        for connection in handshakes.iter().chain(&queued) {
            connection.wait_for_work(in_callback);
        }
        self.wait_for_callbacks();
    }

    /// For a session closed before: waits for its threads as `close` does
    /// (they were told to stop then).
    pub(super) fn wait_for_threads(&self) {
        if !self.on_accept_thread() {
            self.wait_for_accept_thread(CallbackThread::is_current());
        }
        self.wait_for_callbacks();
    }

    fn on_accept_thread(&self) -> bool {
        *self.accept_thread_id.lock() == Some(std::thread::current().id())
    }

    /// Waits until the accept thread has ended and joins it; a closer that
    /// is a callback stops waiting once the accept thread is inside a close
    /// called from its own callback (a later closer joins it, from
    /// `Server::close`'s retired sessions).
    fn wait_for_accept_thread(&self, skip_closing: bool) {
        {
            let mut state = self.state.lock();
            while state.accepting && !(skip_closing && state.accept_thread_closing) {
                self.changed.wait(&mut state);
            }
            if state.accepting {
                return;
            }
        }
        self.join_accept_thread();
    }

    /// Joins the accept thread once it has ended, unless another closer
    /// has joined it already.
    pub(super) fn join_accept_thread(&self) {
        let accept_thread = self.accept_thread.lock().take();
        if let Some(handle) = accept_thread {
            let _ = handle.join();
        }
    }

    /// Waits until no connection thread of this session may run a callback,
    /// apart from the caller's own and, for a caller that is a callback,
    /// those closing a server from their callback.
    pub(super) fn wait_for_callbacks(&self) {
        let own = CallbackThread::own_connection(self);
        let skip_closing = CallbackThread::is_current();
        let mut state = self.state.lock();
        while state
            .running
            .iter()
            .any(|id| Some(*id) != own && !(skip_closing && state.closing_callbacks.contains(id)))
        {
            self.changed.wait(&mut state);
        }
    }

    /// No connection thread of this session is left.
    pub(super) fn is_finished(&self) -> bool {
        let state = self.state.lock();
        state.running.is_empty() && !state.accepting
    }
}

/// Marks the accept thread finished when it ends.
struct AcceptThreadFinished<'a>(&'a Session);

impl Drop for AcceptThreadFinished<'_> {
    fn drop(&mut self) {
        self.0.state.lock().accepting = false;
        self.0.changed.notify_all();
    }
}
