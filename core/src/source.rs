//! A worker's consumer as its pool sees it: host threads take deliveries from lapin's consumer
//! themselves, in [`Pool::next`](crate::pool::Pool::next), so no engine thread stands between
//! lapin's I/O loop and the thread that runs `work`. (Through the channel task, waking the
//! task's thread for every burst of deliveries took as much CPU as the rest of the engine.)

use crate::delivery::Delivery;
use crate::worker::{versioned_tag, Command, SessionLink, Worker};
use futures_util::Stream;
use lapin::Consumer;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

#[derive(Debug)]
pub(crate) struct Source {
    /// A clone of the channel task's consumer: same deliveries, its own wake-up registration.
    consumer: Consumer,
    consumer_tag: String,
    worker: Worker,
    link: Arc<SessionLink>,
}

/// What is left of a source after [`Source::take`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Nothing more for now: the waker will be woken when something arrives.
    Waiting,
    /// Stopped at the limit: more may be there already (the waker is not registered).
    Limited,
    /// The consumer ended or its connection is gone: drop the source.
    Ended,
}

impl Source {
    pub(crate) fn new(worker: Worker, link: Arc<SessionLink>, consumer: Consumer) -> Self {
        Source {
            consumer_tag: consumer.tag().as_str().to_string(),
            consumer,
            worker,
            link,
        }
    }

    pub(crate) fn worker(&self) -> &Worker {
        &self.worker
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.link.is_alive()
    }

    /// Takes up to `limit` deliveries into `out`, recording each for settlement. The end of
    /// the consumer (unless a stop cancelled it) or an error is reported to the channel task.
    pub(crate) fn take(
        &mut self,
        cx: &mut Context<'_>,
        limit: usize,
        out: &mut Vec<Delivery>,
    ) -> Taken {
        let mut taken = 0;
        while taken < limit {
            if !self.link.is_alive() {
                return Taken::Ended;
            }
            match Pin::new(&mut self.consumer).poll_next(cx) {
                Poll::Pending => return Taken::Waiting,
                Poll::Ready(Some(Ok(d))) => {
                    out.push(self.accept(d));
                    taken += 1;
                }
                Poll::Ready(Some(Err(e))) => {
                    self.link.send(Command::Lost(format!(
                        "consumer of '{}' failed: {e}",
                        self.worker.config().queue.name
                    )));
                    return Taken::Ended;
                }
                Poll::Ready(None) => {
                    if !self.link.is_cancelled() {
                        self.link.send(Command::Lost(format!(
                            "the broker cancelled the consumer of '{}' (queue deleted?)",
                            self.worker.config().queue.name
                        )));
                    }
                    return Taken::Ended;
                }
            }
        }
        Taken::Limited
    }

    /// Called by a host thread that found nothing to take: the settler sends the acks it holds
    /// back if they keep the broker from sending more. At a small prefetch with uneven work the
    /// window is soon all acks waiting behind unfinished work, and threads would idle until the
    /// ack timer.
    pub(crate) fn release_held_acks(&self) {
        if self.worker.config().ack {
            self.link.settler.flush_for_idle_thread();
        }
    }

    fn accept(&self, d: lapin::message::Delivery) -> Delivery {
        let wire_tag = d.delivery_tag;
        if self.worker.config().ack {
            self.link.settler.delivered(wire_tag);
        }
        let mut delivery = Delivery::new(
            d,
            &self.consumer_tag,
            self.worker.clone(),
            self.link.clone(),
        );
        delivery.info.delivery_tag = versioned_tag(self.link.generation, wire_tag);
        delivery
    }
}
