//! One tokio runtime per process, created on first use.
//!
//! A runtime does not survive `fork`: its threads stay in the parent. The child's first use
//! finds the recorded pid differs, forgets the parent's runtime without touching it (dropping it
//! would wait for threads that do not exist) and builds its own. Engines and publishers record
//! their pid too and refuse to be used from another process ([`Error::Forked`]).

use crate::error::{Error, Result};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::runtime::{Builder, Handle, Runtime};

struct ProcessRuntime {
    pid: u32,
    runtime: Runtime,
}

static RUNTIME: Mutex<Option<ProcessRuntime>> = Mutex::new(None);

/// Runtime threads (tokio's `TOKIO_WORKER_THREADS` overrides). One: the runtime's tasks (a
/// channel task per worker, timers, publishers) are short, and a delivery already crosses lapin's
/// I/O thread, which one thread per connection bounds anyway. A second worker mostly woke to
/// steal a task the first was about to run: with two, a Ruby worker at prefetch 10 spent ~40%
/// more CPU per message in the runtime's threads (~20% more in the whole process) and drained
/// ~10% slower (docs/performance.md).
const ENGINE_THREADS: usize = 1;

/// The runtime of this process.
pub fn handle() -> Handle {
    let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if let Some(existing) = slot.as_ref() {
        if existing.pid == pid {
            return existing.runtime.handle().clone();
        }
        // Inherited through fork: its threads are not ours to join.
        std::mem::forget(slot.take());
    }
    let mut builder = Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(ENGINE_THREADS);
    }
    let runtime = builder
        .thread_name("cleats-engine")
        .enable_all()
        .build()
        .expect("cleats: cannot start the tokio runtime");
    let handle = runtime.handle().clone();
    *slot = Some(ProcessRuntime { pid, runtime });
    handle
}

/// Runs `fut` to completion from a host (non-runtime) thread.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    handle().block_on(fut)
}

/// An operation running on the runtime. A host thread waits for it in short slices
/// ([`Pending::wait`]) and checks for interrupts in between, so Ctrl-C reaches it even while it
/// waits for a broker. Dropping it lets the operation finish in the background.
#[derive(Debug)]
pub struct Pending<T> {
    rx: tokio::sync::oneshot::Receiver<Result<T>>,
    guard: ProcessGuard,
}

impl<T: Send + 'static> Pending<T> {
    /// Runs `fut` on the runtime.
    pub(crate) fn spawn(fut: impl Future<Output = Result<T>> + Send + 'static) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel();
        handle().spawn(async move {
            let _ = tx.send(fut.await);
        });
        Pending {
            rx,
            guard: ProcessGuard::new(),
        }
    }

    /// Waits up to `timeout`; `None` while the operation is still running.
    pub fn wait(&mut self, timeout: Duration) -> Option<Result<T>> {
        if let Err(e) = self.guard.check() {
            return Some(Err(e));
        }
        let rx = &mut self.rx;
        match block_on(async { tokio::time::timeout(timeout, rx).await }) {
            Ok(Ok(result)) => Some(result),
            Ok(Err(_)) => Some(Err(Error::state(
                "the operation was abandoned by the engine",
            ))),
            Err(_) => None,
        }
    }

    /// Waits until the operation finishes.
    pub fn wait_done(mut self) -> Result<T> {
        loop {
            if let Some(result) = self.wait(Duration::from_secs(3600)) {
                return result;
            }
        }
    }
}

/// This process's id, without a `getpid` system call each time: hot paths (every `Pool::next`
/// and settlement) check it. A `pthread_atfork` child handler clears the cache, so a forked
/// child reads its own pid afresh. (Ruby's and Python's `fork` both go through libc's `fork`,
/// which runs the handler.)
fn current_pid() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
    use std::sync::Once;
    static CACHED: AtomicU32 = AtomicU32::new(0);
    static HANDLER: Once = Once::new();
    extern "C" fn forget_in_child() {
        CACHED.store(0, Relaxed);
    }
    HANDLER.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic (async-signal-safe).
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forget_in_child)) };
        assert_eq!(rc, 0, "pthread_atfork failed");
    });
    match CACHED.load(Relaxed) {
        0 => {
            let pid = std::process::id();
            CACHED.store(pid, Relaxed);
            pid
        }
        pid => pid,
    }
}

/// Identifies the process an object was created in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessGuard {
    pid: u32,
}

impl ProcessGuard {
    pub(crate) fn new() -> Self {
        ProcessGuard { pid: current_pid() }
    }

    pub(crate) fn check(&self) -> Result<()> {
        let now = current_pid();
        if now == self.pid {
            Ok(())
        } else {
            Err(Error::Forked {
                created_in: self.pid,
                used_in: now,
            })
        }
    }

    pub(crate) fn same_process(&self) -> bool {
        self.pid == current_pid()
    }
}
