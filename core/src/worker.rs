//! A worker: one queue, its validated settings, its pool, its metrics, and the link to the
//! channel currently consuming it.

use crate::config::WorkerConfig;
use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::handlers;
use crate::metrics::{MetricNames, MetricsSnapshot, WorkerMetrics};
use crate::pool::Pool;
use crate::runtime::{self, ProcessGuard};
use crate::settle::{Action, Outcome, Settled};
use crate::topology::{self, Declaration};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};

/// Delivery tags handed to host code carry the connection generation in their high bits, as
/// Bunny's versioned delivery tags do: a tag from a lost connection can never settle a message
/// of the new one.
const TAG_BITS: u32 = 48;

pub(crate) fn versioned_tag(generation: u64, wire_tag: u64) -> u64 {
    (generation << TAG_BITS) | wire_tag
}

pub(crate) fn split_tag(tag: u64) -> (u64, u64) {
    (tag >> TAG_BITS, tag & ((1 << TAG_BITS) - 1))
}

/// A handle on one worker (cheap to clone, usable from any thread).
#[derive(Debug, Clone)]
pub struct Worker {
    inner: Arc<WorkerInner>,
}

#[derive(Debug)]
struct WorkerInner {
    guard: ProcessGuard,
    config: WorkerConfig,
    names: MetricNames,
    metrics: WorkerMetrics,
    pool: Pool,
    link: Mutex<Option<Arc<SessionLink>>>,
    /// Declarations asked for by a custom handler, declared again after every reconnection.
    extra: Mutex<Vec<Declaration>>,
}

impl Worker {
    pub(crate) fn new(config: WorkerConfig, pool: Pool) -> Self {
        Worker {
            inner: Arc::new(WorkerInner {
                guard: ProcessGuard::new(),
                names: MetricNames::new(&config.name),
                config,
                metrics: WorkerMetrics::default(),
                pool,
                link: Mutex::new(None),
                extra: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.inner.config
    }

    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    pub fn metric_names(&self) -> &MetricNames {
        &self.inner.names
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// Messages handed to host threads and not settled yet.
    pub fn in_progress(&self) -> u64 {
        self.inner.metrics.in_progress()
    }

    pub(crate) fn counters(&self) -> &WorkerMetrics {
        &self.inner.metrics
    }

    pub(crate) fn settle(&self, delivery: &Delivery, outcome: Outcome) -> Result<Settled> {
        self.inner.guard.check()?;
        let elapsed = delivery.started.elapsed();
        if self.inner.config.ack {
            match handlers::action(&self.inner.config.handler, delivery, &outcome) {
                Action::Ack {
                    tag,
                    multiple: false,
                } => delivery.link.defer_ack(tag),
                action => delivery.link.send(Command::Apply(action)),
            }
            self.inner.metrics.finished(Some(&outcome), elapsed);
        } else {
            self.inner.metrics.finished(None, elapsed);
        }
        Ok(Settled { elapsed })
    }

    /// Sends a channel operation, as a custom handler's `channel.acknowledge/reject/nack` does.
    /// A tag from a connection that has since been lost is ignored: the broker has requeued
    /// that message already.
    pub fn apply(&self, action: Action) -> Result<()> {
        self.inner.guard.check()?;
        match self.current_link() {
            Some(link) if link.generation == split_tag(action.tag()).0 => {
                link.send(Command::Apply(action));
            }
            _ => log::debug!(
                "{}: ignoring {action:?}: its connection is gone and the broker has requeued the message",
                self.name()
            ),
        }
        Ok(())
    }

    /// Declares an exchange, queue or binding now (when connected) and again after every
    /// reconnection: what a custom handler's `channel.exchange/queue` and `queue.bind` do.
    pub fn declare(&self, declaration: Declaration) -> Result<()> {
        self.inner.guard.check()?;
        if let Some(link) = self.current_link() {
            let conn = link.connection.clone();
            let item = declaration.clone();
            runtime::block_on(async move {
                let channel = conn.create_channel().await.map_err(|e| Error::Channel {
                    message: e.to_string(),
                })?;
                topology::declare(&channel, &item)
                    .await
                    .map_err(|e| Error::Channel {
                        message: e.to_string(),
                    })?;
                let _ = channel.close(200, "declared".into()).await;
                Ok::<_, Error>(())
            })?;
        }
        self.inner
            .extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(declaration);
        Ok(())
    }

    pub(crate) fn declarations(&self) -> Vec<Declaration> {
        let mut all = topology::for_worker(&self.inner.config);
        all.extend(
            self.inner
                .extra
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        all
    }

    fn current_link(&self) -> Option<Arc<SessionLink>> {
        self.inner
            .link
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_link(&self, link: Option<Arc<SessionLink>>) {
        *self.inner.link.lock().unwrap_or_else(|e| e.into_inner()) = link;
    }
}

/// Plain acks waiting for the channel task, and whether its timer will come for them.
#[derive(Debug, Default)]
struct DeferredAcks {
    tags: Vec<u64>,
    timer_running: bool,
}

/// A message for a worker's channel task.
#[derive(Debug)]
pub(crate) enum Command {
    Apply(Action),
    /// basic.cancel; replies once the broker confirmed.
    Cancel(oneshot::Sender<()>),
    /// Replies when no handed-out message is still being worked on.
    WhenIdle(oneshot::Sender<()>),
    /// Requeue unfinished work, flush, close the channel; replies with the number requeued.
    Close(oneshot::Sender<usize>),
}

/// The tie between deliveries of one connection generation and the task that owns their
/// channel. Once the connection is lost the link is dead and its tags mean nothing.
#[derive(Debug)]
pub(crate) struct SessionLink {
    pub(crate) generation: u64,
    commands: mpsc::UnboundedSender<Command>,
    alive: AtomicBool,
    pub(crate) connection: Arc<lapin::Connection>,
    /// Plain acks, waiting to go out as a batch (see [`SessionLink::defer_ack`]).
    deferred_acks: Mutex<DeferredAcks>,
    /// A batch this long goes out at once.
    pub(crate) ack_batch: usize,
    /// Tells the channel task that a batch filled up, or started while its ack timer was stopped.
    pub(crate) ack_signal: Notify,
}

impl SessionLink {
    pub(crate) fn new(
        generation: u64,
        connection: Arc<lapin::Connection>,
        prefetch: u16,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let link = SessionLink {
            generation,
            commands: tx,
            alive: AtomicBool::new(true),
            connection,
            deferred_acks: Mutex::new(DeferredAcks::default()),
            // A quarter of the window: the broker keeps three quarters to deliver into while a
            // batch fills.
            ack_batch: usize::from(prefetch / 4).max(1),
            ack_signal: Notify::new(),
        };
        (Arc::new(link), rx)
    }

    /// Queues a plain ack, waking the channel task only when it has to act. Waking that task and
    /// writing a frame for every ack cost more CPU than the rest of the hand-off (futex calls and
    /// a syscall per message, in the engine and in the broker); batched, the task sends one
    /// `multiple` ack for many messages. The task is woken when a batch reaches `ack_batch`, and
    /// when one starts while its timer is not running (the timer sends a started batch within
    /// [`ACK_DELAY`](crate::consumer::ACK_DELAY)). The task keeps that timer running while
    /// messages it handed out are being worked on, so at a small prefetch (a batch of two) a
    /// batch costs one wake-up, not two.
    pub(crate) fn defer_ack(&self, tag: u64) {
        let wake = {
            let mut deferred = self.lock_deferred();
            deferred.tags.push(tag);
            let len = deferred.tags.len();
            len == self.ack_batch || (len == 1 && !deferred.timer_running)
        };
        if wake {
            self.ack_signal.notify_one();
        }
    }

    fn lock_deferred(&self) -> MutexGuard<'_, DeferredAcks> {
        self.deferred_acks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the deferred acks into `into` (which should be empty).
    pub(crate) fn take_deferred_acks(&self, into: &mut Vec<u64>) {
        std::mem::swap(&mut self.lock_deferred().tags, into);
    }

    pub(crate) fn deferred_ack_count(&self) -> usize {
        self.lock_deferred().tags.len()
    }

    /// The channel task's ack timer is running: a batch that starts needs no wake-up.
    pub(crate) fn ack_timer_started(&self) {
        self.lock_deferred().timer_running = true;
    }

    /// The channel task lets its ack timer stop, unless acks arrived meanwhile (then false:
    /// the host threads did not wake the task for them, so the timer must run on).
    pub(crate) fn ack_timer_may_stop(&self) -> bool {
        let mut deferred = self.lock_deferred();
        if deferred.tags.is_empty() {
            deferred.timer_running = false;
            true
        } else {
            false
        }
    }

    pub(crate) fn send(&self, command: Command) {
        if self.commands.send(command).is_err() {
            log::debug!("settlement after the channel closed: the broker has requeued the message");
        }
    }

    pub(crate) fn send_requeue(&self, tag: u64) {
        self.send(Command::Apply(Action::Nack {
            tag,
            multiple: false,
            requeue: true,
        }));
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    pub(crate) fn kill(&self) {
        self.alive.store(false, Ordering::Release);
    }

    /// Sends a command carrying a reply channel and waits for the reply, at most `timeout`.
    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
        timeout: Duration,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).ok()?;
        tokio::time::timeout(timeout, rx).await.ok()?.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_tags_round_trip() {
        assert_eq!(versioned_tag(0, 17), 17);
        assert_eq!(split_tag(versioned_tag(3, 17)), (3, 17));
    }
}
