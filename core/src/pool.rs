//! The hand-off between the engine and host threads: a bounded queue of deliveries that host
//! threads pull from with a timeout, so every wait is short and interruptible.
//!
//! A pool belongs to one worker, or to every worker of a process with `share_threads`. Its
//! `threads` is how many host threads should pull from it.

use crate::delivery::Delivery;
use crate::error::Result;
use crate::runtime::ProcessGuard;
use crate::settle::Outcome;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::Notify;

/// Gives back a delivery nobody will work on: requeued with manual acks (returns true);
/// with auto-ack the broker already forgot it, so it is lost, as `ack: false` accepts.
fn drop_unprocessed(delivery: Delivery) -> bool {
    if delivery.is_stale() {
        return false; // already back on the queue
    }
    if delivery.worker().config().ack {
        delivery.requeue_unprocessed();
        true
    } else {
        log::warn!(
            "{}: an auto-acked message (ack: false) received but not worked on before the stop is lost",
            delivery.worker().name()
        );
        false
    }
}

/// What [`Pool::next`] found.
#[derive(Debug)]
pub enum Next {
    Delivery(Box<Delivery>),
    /// Nothing arrived in time: check for interrupts, then call again.
    Timeout,
    /// The engine is stopping: finish and leave the loop.
    Stopped,
}

/// A hand-off queue and the number of host threads that serve it.
#[derive(Debug, Clone)]
pub struct Pool {
    inner: Arc<PoolShared>,
}

#[derive(Debug)]
struct PoolShared {
    tx: Sender<Delivery>,
    rx: Receiver<Delivery>,
    threads: usize,
    stopping: AtomicBool,
    /// Set by a producer waiting for room (auto-ack consumers, which the broker does not bound).
    producer_waiting: AtomicBool,
    space: Notify,
    guard: ProcessGuard,
}

impl Pool {
    /// `capacity: None` is unbounded (a shared pool, whose bound is the sum of its workers'
    /// prefetch as enforced by the broker).
    pub(crate) fn new(threads: usize, capacity: Option<usize>) -> Self {
        let (tx, rx) = match capacity {
            Some(n) => crossbeam_channel::bounded(n.max(1)),
            None => crossbeam_channel::unbounded(),
        };
        Pool {
            inner: Arc::new(PoolShared {
                tx,
                rx,
                threads,
                stopping: AtomicBool::new(false),
                producer_waiting: AtomicBool::new(false),
                space: Notify::new(),
                guard: ProcessGuard::new(),
            }),
        }
    }

    /// How many host threads should pull from this pool.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    pub(crate) fn same(&self, other: &Pool) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Waits up to `timeout` for the next delivery. Call it with the GVL/GIL released; it
    /// touches no host object.
    pub fn next(&self, timeout: Duration) -> Result<Next> {
        let p = &self.inner;
        p.guard.check()?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if p.stopping.load(SeqCst) {
                return Ok(Next::Stopped);
            }
            match p.rx.recv_deadline(deadline) {
                Ok(mut delivery) => {
                    if p.producer_waiting.swap(false, SeqCst) {
                        p.space.notify_waiters();
                    }
                    if delivery.is_stale() {
                        continue; // its connection is gone; the broker redelivers it
                    }
                    if p.stopping.load(SeqCst) {
                        drop_unprocessed(delivery);
                        return Ok(Next::Stopped);
                    }
                    delivery.mark_started();
                    delivery.worker().counters().started();
                    return Ok(Next::Delivery(Box::new(delivery)));
                }
                Err(RecvTimeoutError::Timeout) => return Ok(Next::Timeout),
                Err(RecvTimeoutError::Disconnected) => return Ok(Next::Stopped),
            }
        }
    }

    /// Hands a delivery to the host threads; waits for room only when the queue is full, which
    /// only auto-ack consumers can cause.
    pub(crate) async fn push(&self, mut delivery: Delivery) {
        let p = &self.inner;
        loop {
            match p.tx.try_send(delivery) {
                Ok(()) => return,
                Err(TrySendError::Full(back)) => {
                    delivery = back;
                    if p.stopping.load(SeqCst) {
                        // Nobody will take it any more.
                        drop_unprocessed(delivery);
                        return;
                    }
                    let notified = p.space.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    p.producer_waiting.store(true, SeqCst);
                    if !p.tx.is_full() || p.stopping.load(SeqCst) {
                        continue;
                    }
                    notified.await;
                }
                Err(TrySendError::Disconnected(_)) => unreachable!("the pool holds a receiver"),
            }
        }
    }

    /// Stop handing out deliveries (and wake a producer waiting for room).
    pub(crate) fn begin_stop(&self) {
        self.inner.stopping.store(true, SeqCst);
        self.inner.space.notify_waiters();
    }

    /// Requeues what was received but never handed out; returns how many went back.
    pub(crate) fn requeue_buffered(&self) -> usize {
        let mut n = 0;
        while let Ok(d) = self.inner.rx.try_recv() {
            n += usize::from(drop_unprocessed(d));
        }
        self.inner.space.notify_waiters();
        n
    }

    /// Drops deliveries of lost connections (the broker redelivers them), keeping the rest in
    /// order.
    pub(crate) fn purge_stale(&self) {
        let live: Vec<Delivery> = self.inner.rx.try_iter().filter(|d| !d.is_stale()).collect();
        for d in live {
            if let Err(e) = self.inner.tx.try_send(d) {
                drop_unprocessed(e.into_inner());
            }
        }
        self.inner.space.notify_waiters();
    }

    /// Runs `threads` Rust threads that loop next -> `work` -> settle until the engine stops:
    /// the pool for Rust workers (the demo, the benchmark ceiling). Host languages run their own
    /// threads on [`Pool::next`] instead.
    pub fn spawn_rust_threads<F>(&self, work: F) -> Vec<JoinHandle<()>>
    where
        F: Fn(&Delivery) -> Outcome + Send + Sync + 'static,
    {
        let work = Arc::new(work);
        (0..self.threads())
            .map(|i| {
                let pool = self.clone();
                let work = work.clone();
                std::thread::Builder::new()
                    .name(format!("cleats-work-{i}"))
                    .spawn(move || loop {
                        match pool.next(Duration::from_millis(100)) {
                            Ok(Next::Delivery(d)) => {
                                let outcome = work(&d);
                                if let Err(e) = d.settle(outcome) {
                                    log::error!("settling failed: {e}");
                                }
                            }
                            Ok(Next::Timeout) => {}
                            Ok(Next::Stopped) | Err(_) => return,
                        }
                    })
                    .expect("spawn a work thread")
            })
            .collect()
    }
}
