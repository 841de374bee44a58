//! A worker's consumer as its pool sees it: host threads take deliveries themselves, in
//! [`Pool::next`](crate::pool::Pool::next), so no engine thread stands between the I/O thread
//! and the thread that runs `work`. (Through the channel task, waking the task's thread for
//! every burst of deliveries took as much CPU as the rest of the engine.) On plain TCP they come
//! from the channel's [`Inbox`], which the socket's reader fills (inbound.rs); with TLS from
//! lapin's consumer, which otherwise only reports the consumer's end.

use crate::delivery::{Delivery, DeliveryInfo, Properties};
use crate::inbound::{Decoded, Inbox, Received};
use crate::transport::Wire;
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
    /// Where the deliveries come on plain TCP (lapin's consumer then only ends).
    inbox: Option<Arc<Inbox>>,
    /// The connection, whose socket idle host threads may wait on (reader.rs).
    wire: Arc<Wire>,
    /// Taken from the inbox, not decoded yet (kept for its capacity).
    received: Vec<Received>,
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
    pub(crate) fn new(
        worker: Worker,
        link: Arc<SessionLink>,
        consumer: Consumer,
        inbox: Option<Arc<Inbox>>,
        wire: Arc<Wire>,
    ) -> Self {
        Source {
            consumer_tag: consumer.tag().as_str().to_string(),
            consumer,
            inbox,
            wire,
            received: Vec::new(),
            worker,
            link,
        }
    }

    pub(crate) fn worker(&self) -> &Worker {
        &self.worker
    }

    /// The connection this source's deliveries come over.
    pub(crate) fn wire(&self) -> &Arc<Wire> {
        &self.wire
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
        if let Some(inbox) = &self.inbox {
            if !self.link.is_alive() {
                return Taken::Ended;
            }
            let limited = inbox.take(cx, limit, &mut self.received);
            let mut received = std::mem::take(&mut self.received);
            for r in received.drain(..) {
                match r.decode() {
                    Ok(d) => out.push(self.accept(d)),
                    // Nothing can settle it, and the window stays short of it: start over on a
                    // new connection (the broker requeues what this one holds).
                    Err(e) => {
                        self.link.send(Command::Lost(format!(
                            "consumer of '{}': {e}",
                            self.worker.config().queue.name
                        )));
                        return Taken::Ended;
                    }
                }
                taken += 1;
            }
            self.received = received;
            if limited {
                return Taken::Limited;
            }
            // The inbox is empty (its waker registered): the consumer may have ended.
        }
        while taken < limit {
            if !self.link.is_alive() {
                return Taken::Ended;
            }
            match Pin::new(&mut self.consumer).poll_next(cx) {
                Poll::Pending => return Taken::Waiting,
                Poll::Ready(Some(Ok(d))) => {
                    out.push(self.accept(Decoded {
                        delivery_tag: d.delivery_tag,
                        redelivered: d.redelivered,
                        exchange: d.exchange.as_str().to_string(),
                        routing_key: d.routing_key.as_str().to_string(),
                        properties: Properties::from_lapin(&d.properties),
                        body: d.data,
                    }));
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

    /// Records a delivery for settlement and gives it its versioned tag.
    fn accept(&self, d: Decoded) -> Delivery {
        if self.worker.config().ack {
            self.link.settler.delivered(d.delivery_tag);
        }
        let info = DeliveryInfo {
            delivery_tag: versioned_tag(self.link.generation, d.delivery_tag),
            routing_key: d.routing_key,
            exchange: d.exchange,
            redelivered: d.redelivered,
            consumer_tag: self.consumer_tag.clone(),
        };
        Delivery::new(
            info,
            d.properties,
            d.body,
            self.worker.clone(),
            self.link.clone(),
        )
    }
}
