//! A worker: one queue, its validated settings, its pool, its metrics, and the link to the
//! channel currently consuming it.

use crate::config::WorkerConfig;
use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::handlers;
use crate::metrics::{MetricNames, MetricsSnapshot, WorkerMetrics};
use crate::pool::Pool;
use crate::runtime::{self, ProcessGuard};
use crate::settle::{Action, Outcome, Republish, Settled};
use crate::settler::Settler;
use crate::topology::{self, Declaration};
use crate::transport::Wire;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

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
            delivery.link.apply(handlers::action(
                &self.inner.config.handler,
                delivery,
                &outcome,
            ));
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
        // The link ignores a tag of another connection itself.
        match self.current_link() {
            Some(link) => link.apply(action),
            None => log::debug!(
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

/// A message for a worker's channel task.
#[derive(Debug)]
pub(crate) enum Command {
    /// A Maxretry republish-then-ack (the only settlement that waits for the broker), by
    /// versioned tag.
    Republish { tag: u64, republish: Box<Republish> },
    /// basic.cancel; replies once the broker confirmed.
    Cancel(oneshot::Sender<()>),
    /// Replies when no handed-out message is still being worked on.
    WhenIdle(oneshot::Sender<()>),
    /// Requeue unfinished work, flush, close the channel; replies with the number requeued.
    Close(oneshot::Sender<usize>),
    /// The consumer failed or the broker cancelled it (seen by the host thread taking
    /// deliveries): recovery should take over.
    Lost(String),
}

/// The tie between deliveries of one connection generation and the channel that consumes
/// them. Once the connection is lost the link is dead and its tags mean nothing.
#[derive(Debug)]
pub(crate) struct SessionLink {
    pub(crate) generation: u64,
    commands: mpsc::UnboundedSender<Command>,
    alive: AtomicBool,
    /// basic.cancel was sent (a stop): the end of the consumer is expected, not a loss.
    cancelled: AtomicBool,
    pub(crate) connection: Arc<lapin::Connection>,
    pub(crate) settler: Settler,
}

impl SessionLink {
    pub(crate) fn new(
        generation: u64,
        connection: Arc<lapin::Connection>,
        channel: lapin::Channel,
        prefetch: u16,
        wire: Arc<Wire>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let link = SessionLink {
            generation,
            commands: tx,
            alive: AtomicBool::new(true),
            cancelled: AtomicBool::new(false),
            connection,
            settler: Settler::new(channel, prefetch, wire),
        };
        (Arc::new(link), rx)
    }

    /// Settles by versioned tag, from the calling thread: frames are queued here and now,
    /// except a republish, which the channel task sends and acks once confirmed. A tag of an
    /// older connection, or of a message already settled, is ignored: the broker has requeued
    /// the one, and the other would make it close the channel.
    pub(crate) fn apply(&self, action: Action) {
        if let Action::RepublishThenAck { tag, republish } = action {
            return self.send(Command::Republish { tag, republish });
        }
        let (generation, wire_tag) = split_tag(action.tag());
        if generation != self.generation || !self.is_alive() {
            log::debug!("ignoring {action:?}: its connection is gone and the broker has requeued the message");
            return;
        }
        let action = action.with_tag(wire_tag);
        if !self.settler.apply(&action) {
            log::debug!("{action:?} for a message already settled; ignored");
        }
    }

    pub(crate) fn send(&self, command: Command) {
        if self.commands.send(command).is_err() {
            log::debug!("settlement after the channel closed: the broker has requeued the message");
        }
    }

    pub(crate) fn requeue(&self, tag: u64) {
        self.apply(Action::Nack {
            tag,
            multiple: false,
            requeue: true,
        });
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    pub(crate) fn set_cancelled(&self) {
        self.cancelled.store(true, Ordering::Release);
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
