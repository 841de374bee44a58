//! The task that owns one worker's channel: it receives deliveries and hands them to the pool,
//! records them for acknowledgement, applies settlements in batches, and cancels and closes the
//! channel on stop. All frames for the channel leave from here, so ordering is the channel's.

use crate::delivery::Delivery;
use crate::settle::{AckTracker, Action, WireOp};
use crate::worker::{split_tag, versioned_tag, Command, SessionLink, Worker};
use futures_util::stream::{FuturesUnordered, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicNackOptions, BasicPublishOptions, BasicRejectOptions,
};
use lapin::{Channel, Confirmation, Consumer};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};

/// How long a started batch of acks waits for more before it goes out anyway (see
/// [`SessionLink::defer_ack`](crate::worker::SessionLink::defer_ack)).
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(2);

/// Why the task ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// Closed on request (graceful stop).
    Closed,
    /// The channel or connection failed: recovery should take over.
    Lost(String),
}

enum Sent {
    Done,
    /// A republish was confirmed: ack the original now.
    AckAfterRepublish(u64),
    /// The broker refused the republish: put the original back.
    RepublishRefused(u64),
}

type PendingOp = Pin<Box<dyn Future<Output = Result<Sent, lapin::Error>> + Send>>;

pub(crate) struct ChannelTask {
    pub(crate) worker: Worker,
    pub(crate) link: Arc<SessionLink>,
    pub(crate) channel: Channel,
    pub(crate) consumer: Consumer,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    tracker: AckTracker,
    pending: FuturesUnordered<PendingOp>,
    idle_waiters: Vec<oneshot::Sender<()>>,
    consuming: bool,
    cancelled: bool,
    wire: Vec<WireOp>,
    /// Armed while a batch of deferred acks waits.
    ack_timer: Pin<Box<Sleep>>,
    ack_timer_armed: bool,
    acks: Vec<u64>,
}

impl ChannelTask {
    pub(crate) fn new(
        worker: Worker,
        link: Arc<SessionLink>,
        channel: Channel,
        consumer: Consumer,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        ChannelTask {
            worker,
            link,
            channel,
            consumer,
            commands,
            tracker: AckTracker::default(),
            pending: FuturesUnordered::new(),
            idle_waiters: Vec::new(),
            consuming: true,
            cancelled: false,
            wire: Vec::new(),
            ack_timer: Box::pin(tokio::time::sleep(ACK_DELAY)),
            ack_timer_armed: false,
            acks: Vec::new(),
        }
    }

    pub(crate) async fn run(mut self) -> Ended {
        let ended = self.run_loop().await;
        self.link.kill();
        ended
    }

    async fn run_loop(&mut self) -> Ended {
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => {
                    let Some(command) = command else { return Ended::Closed };
                    // Acks a thread deferred before it sent this command come first.
                    self.take_deferred_acks();
                    if let Some(reply) = self.handle(command).await {
                        return self.close(reply).await;
                    }
                    // Everything settled meanwhile goes out in this batch.
                    while let Ok(command) = self.commands.try_recv() {
                        if let Some(reply) = self.handle(command).await {
                            return self.close(reply).await;
                        }
                    }
                    self.tracker.flush_acks(&mut self.wire);
                    self.send_wire();
                }
                () = self.link.ack_signal.notified() => {
                    if self.link.deferred_ack_count() >= self.link.ack_batch {
                        self.send_deferred_acks();
                    } else {
                        self.start_ack_timer();
                    }
                }
                () = &mut self.ack_timer, if self.ack_timer_armed => self.ack_timer_fired(),
                Some(result) = self.pending.next(), if !self.pending.is_empty() => {
                    if let Err(reason) = self.finished(result) {
                        return Ended::Lost(reason);
                    }
                }
                next = self.consumer.next(), if self.consuming => match next {
                    Some(Ok(delivery)) => self.deliver(delivery).await,
                    Some(Err(e)) => return Ended::Lost(format!("consumer of '{}' failed: {e}", self.queue())),
                    None if self.cancelled => self.consuming = false,
                    None => return Ended::Lost(format!(
                        "the broker cancelled the consumer of '{}' (queue deleted?)", self.queue()
                    )),
                },
            }
            if !self.idle_waiters.is_empty() {
                self.send_deferred_acks();
            }
            if self.tracker.in_flight() == 0 {
                for waiter in self.idle_waiters.drain(..) {
                    let _ = waiter.send(());
                }
            }
        }
    }

    fn queue(&self) -> &str {
        &self.worker.config().queue.name
    }

    async fn deliver(&mut self, d: lapin::message::Delivery) {
        let ack = self.worker.config().ack;
        let wire_tag = d.delivery_tag;
        if ack {
            self.tracker.delivered(wire_tag);
            // Its ack will come: with the timer running, the host thread need not wake us for it.
            self.start_ack_timer();
        }
        if self.cancelled && ack {
            // Arrived after basic.cancel: nobody will work on it.
            self.apply(Action::Nack {
                tag: wire_tag,
                multiple: false,
                requeue: true,
            });
            self.send_wire();
            return;
        }
        let tag = self.consumer.tag();
        let mut delivery = Delivery::new(d, tag.as_str(), self.worker.clone(), self.link.clone());
        delivery.info.delivery_tag = versioned_tag(self.link.generation, wire_tag);
        self.worker.pool().push(delivery).await;
    }

    /// Returns the reply channel when the command asks to close.
    async fn handle(&mut self, command: Command) -> Option<oneshot::Sender<usize>> {
        match command {
            Command::Apply(action) => self.apply_versioned(action),
            Command::Cancel(reply) => {
                if !self.cancelled {
                    self.cancelled = true;
                    let tag = self.consumer.tag();
                    if let Err(e) = self
                        .channel
                        .basic_cancel(tag, BasicCancelOptions::default())
                        .await
                    {
                        log::warn!("{}: basic.cancel failed: {e}", self.queue());
                        self.consuming = false;
                    }
                }
                let _ = reply.send(());
            }
            Command::WhenIdle(reply) => self.idle_waiters.push(reply),
            Command::Close(reply) => return Some(reply),
        }
        None
    }

    /// Applies an action whose tag carries the connection generation; one from an older
    /// connection means nothing here.
    fn apply_versioned(&mut self, action: Action) {
        let (generation, wire_tag) = split_tag(action.tag());
        if generation == self.link.generation {
            self.apply(action.with_tag(wire_tag));
        }
    }

    /// Applies the acks host threads deferred (frames follow with the next flush); returns how
    /// many there were.
    fn take_deferred_acks(&mut self) -> usize {
        let mut acks = std::mem::take(&mut self.acks);
        self.link.take_deferred_acks(&mut acks);
        let taken = acks.len();
        for tag in acks.drain(..) {
            self.apply_versioned(Action::Ack {
                tag,
                multiple: false,
            });
        }
        self.acks = acks;
        taken
    }

    /// Sends the deferred acks now; returns how many there were.
    fn send_deferred_acks(&mut self) -> usize {
        let taken = self.take_deferred_acks();
        self.tracker.flush_acks(&mut self.wire);
        self.send_wire();
        taken
    }

    /// Starts the timer that sends a started batch of acks, unless it is running.
    fn start_ack_timer(&mut self) {
        if !self.ack_timer_armed {
            self.ack_timer.as_mut().reset(Instant::now() + ACK_DELAY);
            self.ack_timer_armed = true;
            self.link.ack_timer_started();
        }
    }

    /// Sends what the host threads deferred; the timer runs on while that was something and
    /// more work is out (more acks will follow), and stops once a round finds nothing.
    fn ack_timer_fired(&mut self) {
        self.ack_timer_armed = false;
        let sent = self.send_deferred_acks();
        if (sent > 0 && self.tracker.in_flight() > 0) || !self.link.ack_timer_may_stop() {
            self.start_ack_timer();
        }
    }

    fn apply(&mut self, action: Action) {
        if let Action::RepublishThenAck { tag, republish } = action {
            if !self.tracker.apply(
                &Action::RepublishThenAck {
                    tag,
                    republish: republish.clone(),
                },
                &mut self.wire,
            ) {
                return;
            }
            let channel = self.channel.clone();
            self.pending.push(Box::pin(async move {
                let confirm = channel
                    .basic_publish(
                        republish.exchange.as_str().into(),
                        republish.routing_key.as_str().into(),
                        BasicPublishOptions::default(),
                        &republish.body,
                        republish.properties.to_lapin(),
                    )
                    .await?
                    .await?;
                Ok(match confirm {
                    Confirmation::Nack(_) => Sent::RepublishRefused(tag),
                    _ => Sent::AckAfterRepublish(tag),
                })
            }));
            return;
        }
        if !self.tracker.apply(&action, &mut self.wire) {
            log::debug!(
                "{}: {action:?} for a message already settled; ignored",
                self.queue()
            );
        }
    }

    fn finished(&mut self, result: Result<Sent, lapin::Error>) -> Result<(), String> {
        match result {
            Ok(Sent::Done) => {}
            Ok(Sent::AckAfterRepublish(tag)) => {
                self.apply(Action::Ack {
                    tag,
                    multiple: false,
                });
                self.tracker.flush_acks(&mut self.wire);
                self.send_wire();
            }
            Ok(Sent::RepublishRefused(tag)) => {
                log::error!(
                    "{}: the broker refused the message for the error queue; requeueing it",
                    self.queue()
                );
                self.apply(Action::Nack {
                    tag,
                    multiple: false,
                    requeue: true,
                });
                self.send_wire();
            }
            Err(e) => return Err(format!("channel of '{}' failed: {e}", self.queue())),
        }
        Ok(())
    }

    /// Queues the collected frames for lapin's I/O loop, which writes them in order. Each
    /// operation is polled once, here, which queues its frame; one still waiting for the write
    /// is dropped, not awaited. Awaiting woke this task once more for every ack frame, and the
    /// result says nothing new: a frame that cannot be written fails the connection, which the
    /// consumer reports, and `close` waits for the channel's close-ok, which the broker sends
    /// only after every earlier frame.
    fn send_wire(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        for op in self.wire.drain(..) {
            let channel = self.channel.clone();
            let mut sent: PendingOp = Box::pin(async move {
                match op {
                    WireOp::Ack { tag, multiple } => {
                        channel.basic_ack(tag, BasicAckOptions { multiple }).await?
                    }
                    WireOp::Reject { tag, requeue } => {
                        channel
                            .basic_reject(tag, BasicRejectOptions { requeue })
                            .await?
                    }
                    WireOp::Nack {
                        tag,
                        multiple,
                        requeue,
                    } => {
                        channel
                            .basic_nack(tag, BasicNackOptions { multiple, requeue })
                            .await?
                    }
                }
                Ok(Sent::Done)
            });
            if let Poll::Ready(Err(e)) = sent.as_mut().poll(&mut cx) {
                // Not even queued (the channel is closed): report it from the loop.
                self.pending.push(Box::pin(async move { Err(e) }));
            }
        }
    }

    /// Requeues work still in progress, waits for the frames in flight, closes the channel.
    async fn close(&mut self, reply: oneshot::Sender<usize>) -> Ended {
        self.take_deferred_acks();
        self.tracker.flush_acks(&mut self.wire);
        let unfinished = self.tracker.take_in_flight();
        for tag in &unfinished {
            self.wire.push(WireOp::Nack {
                tag: *tag,
                multiple: false,
                requeue: true,
            });
        }
        self.send_wire();
        let flush = async {
            while let Some(result) = self.pending.next().await {
                if let Err(e) = result {
                    log::warn!("{}: while closing: {e}", self.worker.config().queue.name);
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), flush).await;
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.channel.close(200, "cleats: stopping".into()),
        )
        .await;
        let _ = reply.send(unfinished.len());
        Ended::Closed
    }
}
