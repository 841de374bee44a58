//! What a host thread receives: the body, the delivery info and the message properties, as
//! owned Rust data, plus the ticket that settles it.

use crate::error::{Error, Result};
use crate::fields::{table_from_amqp, table_to_amqp, Table};
use crate::settle::{Outcome, Settled};
use crate::worker::{SessionLink, Worker};
use lapin::types::ShortString;
use lapin::BasicProperties;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// AMQP basic properties. `kind` is the `type` property.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub headers: Option<Table>,
    /// 1 = transient, 2 = persistent.
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub expiration: Option<String>,
    pub message_id: Option<String>,
    /// Seconds since the epoch.
    pub timestamp: Option<u64>,
    pub kind: Option<String>,
    pub user_id: Option<String>,
    pub app_id: Option<String>,
    pub cluster_id: Option<String>,
}

fn short(s: &Option<ShortString>) -> Option<String> {
    s.as_ref().map(|v| v.as_str().to_string())
}

impl Properties {
    pub(crate) fn from_lapin(p: &BasicProperties) -> Self {
        Properties {
            content_type: short(p.content_type()),
            content_encoding: short(p.content_encoding()),
            headers: p.headers().as_ref().map(table_from_amqp),
            delivery_mode: *p.delivery_mode(),
            priority: *p.priority(),
            correlation_id: short(p.correlation_id()),
            reply_to: short(p.reply_to()),
            expiration: short(p.expiration()),
            message_id: short(p.message_id()),
            timestamp: *p.timestamp(),
            kind: short(p.kind()),
            user_id: short(p.user_id()),
            app_id: short(p.app_id()),
            cluster_id: short(p.cluster_id()),
        }
    }

    pub(crate) fn to_lapin(&self) -> BasicProperties {
        let mut p = BasicProperties::default();
        let s = |v: &String| ShortString::from(v.as_str());
        if let Some(v) = &self.content_type {
            p = p.with_content_type(s(v));
        }
        if let Some(v) = &self.content_encoding {
            p = p.with_content_encoding(s(v));
        }
        if let Some(v) = &self.headers {
            p = p.with_headers(table_to_amqp(v));
        }
        if let Some(v) = self.delivery_mode {
            p = p.with_delivery_mode(v);
        }
        if let Some(v) = self.priority {
            p = p.with_priority(v);
        }
        if let Some(v) = &self.correlation_id {
            p = p.with_correlation_id(s(v));
        }
        if let Some(v) = &self.reply_to {
            p = p.with_reply_to(s(v));
        }
        if let Some(v) = &self.expiration {
            p = p.with_expiration(s(v));
        }
        if let Some(v) = &self.message_id {
            p = p.with_message_id(s(v));
        }
        if let Some(v) = self.timestamp {
            p = p.with_timestamp(v);
        }
        if let Some(v) = &self.kind {
            p = p.with_type(s(v));
        }
        if let Some(v) = &self.user_id {
            p = p.with_user_id(s(v));
        }
        if let Some(v) = &self.app_id {
            p = p.with_app_id(s(v));
        }
        if let Some(v) = &self.cluster_id {
            p = p.with_cluster_id(s(v));
        }
        p
    }
}

/// Where a message came from (Bunny's delivery_info).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryInfo {
    pub delivery_tag: u64,
    pub routing_key: String,
    pub exchange: String,
    pub redelivered: bool,
    pub consumer_tag: String,
}

/// One message handed to a host thread. Settle it exactly once with [`Delivery::settle`]
/// (auto-ack workers settle too: that records the metrics and does nothing on the wire).
#[derive(Debug)]
pub struct Delivery {
    pub body: Vec<u8>,
    pub info: DeliveryInfo,
    pub properties: Properties,
    pub(crate) worker: Worker,
    pub(crate) link: Arc<SessionLink>,
    pub(crate) started: Instant,
    settled: AtomicBool,
}

impl Delivery {
    pub(crate) fn new(
        info: DeliveryInfo,
        properties: Properties,
        body: Vec<u8>,
        worker: Worker,
        link: Arc<SessionLink>,
    ) -> Self {
        Delivery {
            info,
            properties,
            body,
            worker,
            link,
            started: Instant::now(),
            settled: AtomicBool::new(false),
        }
    }

    /// The worker (queue) this message was consumed for.
    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    /// Header table, empty when the message has none.
    pub fn headers(&self) -> Table {
        self.properties.headers.clone().unwrap_or_default()
    }

    /// Applies the worker's handler to `outcome` (ack, reject, requeue, error, noop) and records
    /// the metrics. Never waits for the broker: the acknowledgement is queued to the engine.
    pub fn settle(&self, outcome: Outcome) -> Result<Settled> {
        if self.settled.swap(true, Ordering::AcqRel) {
            return Err(Error::state(format!(
                "delivery {} of {} was already settled",
                self.info.delivery_tag,
                self.worker.name()
            )));
        }
        self.worker.settle(self, outcome)
    }

    pub(crate) fn mark_started(&mut self) {
        self.started = Instant::now();
    }

    /// True when the connection this message arrived on is gone: the broker has put it back on
    /// the queue (with acks on), so handing it out would process it twice.
    pub(crate) fn is_stale(&self) -> bool {
        self.worker.config().ack && !self.link.is_alive()
    }

    /// Settles without a handler, for the engine's own requeues during stop and recovery.
    pub(crate) fn requeue_unprocessed(&self) {
        if !self.settled.swap(true, Ordering::AcqRel) && self.worker.config().ack {
            self.link.requeue(self.info.delivery_tag);
        }
    }
}
