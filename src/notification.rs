//! The server's notification descriptor (`sslserver_notification_descriptor`):
//! an eventfd that is readable exactly while the queue of handshaken
//! connections is not empty, so an event loop can poll for new connections
//! beside its sockets instead of blocking in `wait_for_new_connection`.
//!
//! The queue's lock is held around every `set_ready`, so the descriptor
//! follows the queue without a window in which the two disagree for long:
//! readable from the push that fills the queue to the take that empties it.

use std::os::fd::{AsRawFd, OwnedFd};

use rustix::event::{eventfd, EventfdFlags};
use rustix::io::Errno;

use crate::error::{Error, ErrorKind, Result};

pub(crate) struct QueueNotification {
    fd: OwnedFd,
    /// Whether the eventfd's counter is non-zero (readable); only changed
    /// under the queue's lock.
    ready: std::sync::atomic::AtomicBool,
}

impl QueueNotification {
    pub(crate) fn new() -> Result<Self> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot create the notification descriptor: {e}"),
            )
        })?;
        Ok(QueueNotification {
            fd,
            ready: Default::default(),
        })
    }

    pub(crate) fn descriptor(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Makes the descriptor readable (`true`) or not; call with the queue's
    /// lock held.
    pub(crate) fn set_ready(&self, ready: bool) {
        use std::sync::atomic::Ordering;
        if self.ready.swap(ready, Ordering::AcqRel) == ready {
            return;
        }
        let mut counter = [0u8; 8];
        if ready {
            counter = 1u64.to_ne_bytes();
            // Only a counter at its maximum refuses, and it is 0 or 1 here.
            while rustix::io::write(&self.fd, &counter) == Err(Errno::INTR) {}
        } else {
            // Reading resets the counter to 0: the descriptor is quiet.
            while rustix::io::read(&self.fd, &mut counter) == Err(Errno::INTR) {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::{PollFd, PollFlags, Timespec};

    fn readable(n: &QueueNotification) -> bool {
        let mut fds = [PollFd::new(&n.fd, PollFlags::IN)];
        let zero = Timespec::default();
        rustix::event::poll(&mut fds, Some(&zero)).unwrap() == 1
    }

    #[test]
    fn the_descriptor_is_readable_exactly_while_set_ready() {
        let n = QueueNotification::new().unwrap();
        assert!(!readable(&n));
        n.set_ready(true);
        n.set_ready(true);
        assert!(readable(&n));
        n.set_ready(false);
        assert!(!readable(&n), "one clear must undo any number of sets");
        n.set_ready(false);
        assert!(!readable(&n));
        n.set_ready(true);
        assert!(readable(&n));
    }
}
