//! The task that owns one worker's channel: it runs the timer that sends a started batch of
//! acks, republishes for Maxretry, and cancels and closes the channel on stop. Host threads take
//! the deliveries ([`Source`](crate::source::Source)) and settle them (through the channel's
//! [`Settler`](crate::settler::Settler)) themselves; this task hears of them only when it must
//! act.

use crate::settle::{Action, Republish};
use crate::worker::{split_tag, Command, SessionLink, Worker};
use futures_util::stream::{FuturesUnordered, StreamExt};
use lapin::options::{BasicCancelOptions, BasicPublishOptions};
use lapin::types::ShortString;
use lapin::{Channel, Confirmation};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};

/// How long a started batch of acks waits for more before it goes out anyway (see
/// [`Settler::apply`](crate::settler::Settler::apply)).
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
    /// A republish was confirmed: ack the original now.
    AckAfterRepublish(u64),
    /// The broker refused the republish: put the original back.
    RepublishRefused(u64),
}

/// What the loop does after a command.
enum Flow {
    Continue,
    /// Close the channel, then reply with the number of messages requeued.
    Close(oneshot::Sender<usize>),
    Lost(String),
}

type PendingOp = Pin<Box<dyn Future<Output = Result<Sent, lapin::Error>> + Send>>;

pub(crate) struct ChannelTask {
    pub(crate) worker: Worker,
    pub(crate) link: Arc<SessionLink>,
    pub(crate) channel: Channel,
    consumer_tag: ShortString,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    /// Republishes waiting for their confirm (Maxretry).
    pending: FuturesUnordered<PendingOp>,
    idle_waiters: Vec<oneshot::Sender<()>>,
    /// Armed while acks wait for a batch (see [`Settler::apply`](crate::settler::Settler::apply)).
    ack_timer: Pin<Box<Sleep>>,
    ack_timer_armed: bool,
}

impl ChannelTask {
    pub(crate) fn new(
        worker: Worker,
        link: Arc<SessionLink>,
        channel: Channel,
        consumer_tag: ShortString,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        ChannelTask {
            worker,
            link,
            channel,
            consumer_tag,
            commands,
            pending: FuturesUnordered::new(),
            idle_waiters: Vec::new(),
            ack_timer: Box::pin(tokio::time::sleep(ACK_DELAY)),
            ack_timer_armed: false,
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
                    match self.handle(command).await {
                        Flow::Continue => {}
                        Flow::Close(reply) => return self.close(reply).await,
                        Flow::Lost(reason) => return Ended::Lost(reason),
                    }
                }
                () = self.link.settler.signal.notified() => {
                    let wants = self.link.settler.wants();
                    if let Some(reason) = wants.failed {
                        return self.channel_failed(reason);
                    }
                    if wants.start_timer {
                        self.arm_ack_timer();
                    }
                    if wants.idle {
                        for waiter in self.idle_waiters.drain(..) {
                            let _ = waiter.send(());
                        }
                    }
                }
                () = &mut self.ack_timer, if self.ack_timer_armed => {
                    self.ack_timer_armed = false;
                    if self.link.settler.timer_fired() {
                        self.arm_ack_timer();
                    }
                }
                Some(result) = self.pending.next(), if !self.pending.is_empty() => {
                    if let Err(e) = self.finished(result) {
                        return self.channel_failed(e.to_string());
                    }
                }
            }
        }
    }

    fn queue(&self) -> &str {
        &self.worker.config().queue.name
    }

    fn arm_ack_timer(&mut self) {
        self.ack_timer.as_mut().reset(Instant::now() + ACK_DELAY);
        self.ack_timer_armed = true;
    }

    async fn handle(&mut self, command: Command) -> Flow {
        match command {
            Command::Republish { tag, republish } => self.republish(tag, republish),
            Command::Cancel(reply) => {
                if !self.link.is_cancelled() {
                    self.link.set_cancelled();
                    if let Err(e) = self
                        .channel
                        .basic_cancel(self.consumer_tag.clone(), BasicCancelOptions::default())
                        .await
                    {
                        log::warn!("{}: basic.cancel failed: {e}", self.queue());
                    }
                }
                let _ = reply.send(());
            }
            Command::WhenIdle(reply) => {
                if self.link.settler.want_idle() {
                    let _ = reply.send(());
                } else {
                    self.idle_waiters.push(reply);
                }
            }
            Command::Close(reply) => return Flow::Close(reply),
            Command::Lost(reason) => return Flow::Lost(reason),
        }
        Flow::Continue
    }

    /// Publishes the copy, and acks the original once the broker confirmed the copy.
    fn republish(&mut self, tag: u64, republish: Box<Republish>) {
        let (generation, tag) = split_tag(tag);
        if generation != self.link.generation {
            return;
        }
        let known = self.link.settler.apply(&Action::RepublishThenAck {
            tag,
            republish: republish.clone(),
        });
        if !known {
            log::debug!(
                "{}: republish of {tag}, already settled; ignored",
                self.queue()
            );
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
    }

    fn channel_failed(&self, reason: String) -> Ended {
        Ended::Lost(format!("channel of '{}' failed: {reason}", self.queue()))
    }

    fn finished(&mut self, result: Result<Sent, lapin::Error>) -> Result<(), lapin::Error> {
        match result {
            Ok(Sent::AckAfterRepublish(tag)) => {
                self.link.settler.apply(&Action::Ack {
                    tag,
                    multiple: false,
                });
            }
            Ok(Sent::RepublishRefused(tag)) => {
                log::error!(
                    "{}: the broker refused the message for the error queue; requeueing it",
                    self.queue()
                );
                self.link.settler.apply(&Action::Nack {
                    tag,
                    multiple: false,
                    requeue: true,
                });
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Requeues work still in progress, waits for the frames in flight, closes the channel.
    async fn close(&mut self, reply: oneshot::Sender<usize>) -> Ended {
        let unfinished = self.link.settler.requeue_unfinished();
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
        let _ = reply.send(unfinished);
        Ended::Closed
    }
}
