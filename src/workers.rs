//! The threads that run handshakes.
//!
//! A thread that has finished with one connection waits a little for the
//! next instead of exiting. Starting and ending a thread costs more system
//! calls than the socket work of a whole TLS handshake (bench/analysis.md:
//! 34 of 62 per connection), and a reused thread keeps its allocator and
//! aws-lc state warm. Idle threads exit after `IDLE_TIMEOUT`, so a burst of
//! connections leaves no lasting cost.
//!
//! Once encrypted, a connection needs no library thread (see
//! `connection.rs`), so the pool holds about as many threads as there are
//! handshakes in flight. It is shared by every server in the process.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, ThreadId};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

/// Connection threads run C callbacks, so they get more than the minimum,
/// but far less than the 8 MiB default: only touched pages cost memory.
const THREAD_STACK_SIZE: usize = 256 * 1024;

/// How long a thread with no connection waits for one before it exits.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// The pool's threads, as `ps -L` and debuggers show them.
const THREAD_NAME: &str = "sslserver-conn";

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    jobs: Sender<Job>,
    waiting: Receiver<Job>,
    /// Threads waiting for a job that no `run` has claimed yet. Invariant:
    /// threads in `worker`'s wait = `idle` + jobs in the channel, so every
    /// job sent finds a thread.
    idle: AtomicUsize,
}

impl Pool {
    fn new() -> Pool {
        let (jobs, waiting) = crossbeam_channel::unbounded();
        Pool {
            jobs,
            waiting,
            idle: AtomicUsize::new(0),
        }
    }

    fn shared() -> &'static Pool {
        static HANDSHAKES: OnceLock<Pool> = OnceLock::new();
        HANDSHAKES.get_or_init(Pool::new)
    }

    /// Runs `job` on an idle thread of this pool, or on a new one.
    fn run(&'static self, job: Job) -> io::Result<()> {
        if self.claim_idle() {
            // The pool holds a receiver, so the channel never disconnects.
            let _ = self.jobs.send(job);
            return Ok(());
        }
        let waiting = self.waiting.clone();
        thread::Builder::new()
            .name(THREAD_NAME.into())
            .stack_size(THREAD_STACK_SIZE)
            .spawn(move || self.worker(job, waiting))
            .map(drop)
    }

    fn worker(&self, first: Job, waiting: Receiver<Job>) {
        let mut job = first;
        loop {
            job();
            self.idle.fetch_add(1, Ordering::AcqRel);
            job = loop {
                match waiting.recv_timeout(IDLE_TIMEOUT) {
                    Ok(next) => break next,
                    // Leave only if no `run` has counted on this thread; if
                    // one has, its job is on the way.
                    Err(_) if self.claim_idle() => return,
                    Err(_) => {}
                }
            };
        }
    }

    /// Takes one idle thread for a job (false if there is none).
    fn claim_idle(&self) -> bool {
        self.idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Whether a connection thread is working for one connection, so that
/// closing and freeing can wait until its work (and its callbacks) are over.
#[derive(Default)]
pub(crate) struct WorkState {
    state: Mutex<Work>,
    changed: Condvar,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
struct Work {
    stage: Stage,
    /// The thread doing the work is inside a close called from one of its
    /// callbacks (see `server::callback_thread`).
    closing: bool,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Stage {
    #[default]
    None,
    /// Handed to the pool, not started yet.
    Scheduled,
    Running(ThreadId),
}

impl WorkState {
    /// Runs `job` on a pool thread; `wait` waits for it to end.
    pub(crate) fn start(self: &Arc<Self>, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
        self.set_stage(Stage::Scheduled);
        let work = self.clone();
        let started = Pool::shared().run(Box::new(move || {
            work.set_stage(Stage::Running(thread::current().id()));
            // Marks the work over even if the job panics.
            let _finished = Finished(&work);
            job();
        }));
        if started.is_err() {
            self.set_stage(Stage::None);
        }
        started
    }

    /// Waits for the work to end, unless called from the thread doing it (a
    /// callback closing its own server or connection) or, if
    /// `skip_closing`, while that thread is inside a close called from its
    /// callback.
    pub(crate) fn wait(&self, skip_closing: bool) {
        let me = thread::current().id();
        let mut state = self.state.lock();
        loop {
            let busy = match state.stage {
                Stage::None => false,
                Stage::Scheduled => true,
                Stage::Running(id) => id != me && !(skip_closing && state.closing),
            };
            if !busy {
                return;
            }
            self.changed.wait(&mut state);
        }
    }

    /// Marks the working thread as inside (or out of) a close called from
    /// one of its callbacks.
    pub(crate) fn set_closing(&self, closing: bool) {
        self.state.lock().closing = closing;
        self.changed.notify_all();
    }

    fn set_stage(&self, stage: Stage) {
        self.state.lock().stage = stage;
        self.changed.notify_all();
    }
}

/// Marks the work over when dropped.
struct Finished<'a>(&'a WorkState);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.set_stage(Stage::None);
    }
}
