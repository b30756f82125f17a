//! Which callback thread the current thread is, and close called from a
//! callback.
//!
//! `close` returns only when no callback of the server can run any more, and
//! it may be called from any callback, of this server or of another. Taken
//! strictly, that deadlocks: when A's callback closes B while B's callback
//! closes A, each close waits for the other callback, which waits in the
//! other close. So a close called from a callback (of any server) does not
//! wait for callback threads that are themselves inside a close called from
//! their callback: such a thread can only finish the callback it is in,
//! since every server it closes fires no new event. A close called from
//! outside any callback still waits for every callback, those included.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use super::Session;
use crate::connection::Connection;

std::thread_local! {
    /// Set for the life of a library thread that runs callbacks.
    static CURRENT: RefCell<Option<CallbackThread>> = const { RefCell::new(None) };
}

/// A library thread that runs a session's callbacks.
#[derive(Clone)]
pub(super) struct CallbackThread {
    session: Weak<Session>,
    /// The connection whose thread this is; `None` for the accept thread.
    connection: Option<(u64, Arc<Connection>)>,
}

impl CallbackThread {
    /// Records the current thread as `session`'s accept thread, or as the
    /// thread of connection `id`, until the returned guard is dropped.
    pub(super) fn enter(
        session: &Arc<Session>,
        connection: Option<(u64, Arc<Connection>)>,
    ) -> CallbackThreadGuard {
        let thread = CallbackThread {
            session: Arc::downgrade(session),
            connection,
        };
        CURRENT.set(Some(thread));
        CallbackThreadGuard(())
    }

    /// Whether the current thread runs callbacks (of any session).
    pub(super) fn is_current() -> bool {
        CURRENT.with_borrow(Option::is_some)
    }

    /// The connection id of the current thread, if it is one of `session`'s
    /// connection threads.
    pub(super) fn own_connection(session: &Session) -> Option<u64> {
        CURRENT.with_borrow(|current| {
            let current = current.as_ref()?;
            if !std::ptr::eq(current.session.as_ptr(), session) {
                return None;
            }
            current.connection.as_ref().map(|(id, _)| *id)
        })
    }

    fn is_marked(&self) -> bool {
        let Some(session) = self.session.upgrade() else {
            return false;
        };
        let state = session.state.lock();
        match &self.connection {
            Some((id, _)) => state.closing_callbacks.contains(id),
            None => state.accept_thread_closing,
        }
    }

    /// Marks or unmarks this thread, in its session and on its connection,
    /// as inside a close called from its callback, and wakes the closers
    /// waiting for it so they look again.
    fn mark_closing(&self, closing: bool) {
        let Some(session) = self.session.upgrade() else {
            return;
        };
        {
            let mut state = session.state.lock();
            match &self.connection {
                Some((id, _)) if closing => {
                    state.closing_callbacks.insert(*id);
                }
                Some((id, _)) => {
                    state.closing_callbacks.remove(id);
                }
                None => state.accept_thread_closing = closing,
            }
            session.changed.notify_all();
        }
        if let Some((_, connection)) = &self.connection {
            connection.set_closing_from_callback(closing);
        }
    }
}

/// Clears the current thread's record when dropped.
pub(super) struct CallbackThreadGuard(());

impl Drop for CallbackThreadGuard {
    fn drop(&mut self) {
        CURRENT.set(None);
    }
}

/// Held for the length of a `close` call: if the caller is a callback
/// thread, it is marked as closing from its callback meanwhile.
pub(super) struct CloseFromCallback(Option<CallbackThread>);

impl CloseFromCallback {
    pub(super) fn enter() -> Self {
        // A close nested in another (a callback cannot fire during a close,
        // but a Drop can run one) leaves the mark to the outer one.
        let thread = CURRENT.with_borrow(Clone::clone).filter(|t| !t.is_marked());
        if let Some(thread) = &thread {
            thread.mark_closing(true);
        }
        CloseFromCallback(thread)
    }
}

impl Drop for CloseFromCallback {
    fn drop(&mut self) {
        if let Some(thread) = &self.0 {
            thread.mark_closing(false);
        }
    }
}
