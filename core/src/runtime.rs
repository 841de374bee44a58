//! One tokio runtime per process, created on first use.
//!
//! A runtime does not survive `fork`: its threads stay in the parent. The child's first use
//! finds the recorded pid differs, forgets the parent's runtime without touching it (dropping it
//! would wait for threads that do not exist) and builds its own. Engines and publishers record
//! their pid too and refuse to be used from another process ([`Error::Forked`]).

use crate::error::{Error, Result};
use std::future::Future;
use std::sync::Mutex;
use tokio::runtime::{Builder, Handle, Runtime};

struct ProcessRuntime {
    pid: u32,
    runtime: Runtime,
}

static RUNTIME: Mutex<Option<ProcessRuntime>> = Mutex::new(None);

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
    let runtime = Builder::new_multi_thread()
        .worker_threads(2)
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

/// Identifies the process an object was created in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessGuard {
    pid: u32,
}

impl ProcessGuard {
    pub(crate) fn new() -> Self {
        ProcessGuard {
            pid: std::process::id(),
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        let now = std::process::id();
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
        self.pid == std::process::id()
    }
}
