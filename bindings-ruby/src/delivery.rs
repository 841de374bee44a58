//! `Cleats::Native::Delivery`: one message handed to a Ruby thread, settled from Ruby.

use crate::convert::{self, key};
use crate::errors::{config_error, state_error, to_ruby};
use cleats_core::{Delivery, ErrorInfo, Outcome};
use magnus::value::LazyId;
use magnus::{method, prelude::*, Error, RHash, RModule, RString, Ruby, Symbol};
use std::sync::{Mutex, MutexGuard};

#[magnus::wrap(class = "Cleats::Native::Delivery", free_immediately, size)]
pub struct RbDelivery {
    /// Taken out, and freed, once settled: Ruby frees this object only at its next GC, which
    /// can be thousands of messages later, and the delivery's memory (body, properties) should
    /// not wait for it. Nothing reads a settled delivery: the Bunny-style views made from it
    /// load their data before it is settled (`Sneakers::Worker::Processing`).
    delivery: Mutex<Option<Box<Delivery>>>,
}

impl RbDelivery {
    pub fn new(delivery: Delivery) -> Self {
        RbDelivery {
            delivery: Mutex::new(Some(Box::new(delivery))),
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<Box<Delivery>>> {
        // Nothing that runs under the lock can leave the slot half-changed.
        self.delivery.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `read` on the delivery; a settled one is gone.
    fn with<R>(&self, read: impl FnOnce(&Delivery) -> R) -> Result<R, Error> {
        match self.slot().as_deref() {
            Some(delivery) => Ok(read(delivery)),
            None => Err(state_error("the delivery was settled; its data is gone")),
        }
    }
}

pub fn define(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let class = native.define_class("Delivery", ruby.class_object())?;
    class.define_method("body", method!(RbDelivery::body, 0))?;
    class.define_method("worker_name", method!(RbDelivery::worker_name, 0))?;
    class.define_method("delivery_info", method!(RbDelivery::delivery_info, 0))?;
    class.define_method("properties", method!(RbDelivery::properties, 0))?;
    class.define_method("content_type", method!(RbDelivery::content_type, 0))?;
    class.define_method("content_encoding", method!(RbDelivery::content_encoding, 0))?;
    class.define_method("settle", method!(RbDelivery::settle, 4))?;
    class.define_method("settled?", method!(RbDelivery::is_settled, 0))?;
    Ok(())
}

impl RbDelivery {
    /// The raw body, as a binary string.
    fn body(ruby: &Ruby, rb_self: &Self) -> Result<RString, Error> {
        rb_self.with(|d| ruby.str_from_slice(&d.body))
    }

    fn worker_name(ruby: &Ruby, rb_self: &Self) -> Result<RString, Error> {
        rb_self.with(|d| ruby.str_new(d.worker().name()))
    }

    /// Bunny's delivery_info keys (symbols).
    fn delivery_info(ruby: &Ruby, rb_self: &Self) -> Result<RHash, Error> {
        static DELIVERY_TAG: LazyId = LazyId::new("delivery_tag");
        static ROUTING_KEY: LazyId = LazyId::new("routing_key");
        static EXCHANGE: LazyId = LazyId::new("exchange");
        static REDELIVERED: LazyId = LazyId::new("redelivered");
        static CONSUMER_TAG: LazyId = LazyId::new("consumer_tag");
        rb_self.with(|d| {
            let i = &d.info;
            let h = ruby.hash_new();
            h.aset(key(&DELIVERY_TAG), i.delivery_tag)?;
            h.aset(key(&ROUTING_KEY), i.routing_key.as_str())?;
            h.aset(key(&EXCHANGE), i.exchange.as_str())?;
            h.aset(key(&REDELIVERED), i.redelivered)?;
            h.aset(key(&CONSUMER_TAG), i.consumer_tag.as_str())?;
            Ok(h)
        })?
    }

    fn properties(ruby: &Ruby, rb_self: &Self) -> Result<RHash, Error> {
        rb_self.with(|d| convert::properties(ruby, &d.properties))?
    }

    /// The two properties decoding needs, without building `properties`.
    fn content_type(ruby: &Ruby, rb_self: &Self) -> Result<Option<RString>, Error> {
        rb_self.with(|d| {
            d.properties
                .content_type
                .as_deref()
                .map(|t| ruby.str_new(t))
        })
    }

    fn content_encoding(ruby: &Ruby, rb_self: &Self) -> Result<Option<RString>, Error> {
        rb_self.with(|d| {
            let encoding = d.properties.content_encoding.as_deref();
            encoding.map(|e| ruby.str_new(e))
        })
    }

    /// Settles with `outcome` (:ack, :reject, :requeue, :error, :noop); for :error the
    /// exception's class, message and backtrace. Returns the seconds since hand-out.
    fn settle(
        &self,
        outcome: Symbol,
        error_class: Option<String>,
        error_message: Option<String>,
        backtrace: Option<Vec<String>>,
    ) -> Result<f64, Error> {
        let outcome = match outcome.name()?.as_ref() {
            "ack" => Outcome::Ack,
            "reject" => Outcome::Reject,
            "requeue" => Outcome::Requeue,
            "noop" => Outcome::Noop,
            "error" => Outcome::Error(ErrorInfo {
                class: error_class.unwrap_or_default(),
                message: error_message.unwrap_or_default(),
                backtrace: backtrace.unwrap_or_default(),
            }),
            other => return Err(config_error(format!("unknown outcome {other}"))),
        };
        let mut slot = self.slot();
        let Some(delivery) = slot.as_deref() else {
            return Err(state_error("the delivery was already settled"));
        };
        let settled = delivery.settle(outcome).map_err(to_ruby)?;
        *slot = None;
        Ok(settled.elapsed.as_secs_f64())
    }

    fn is_settled(&self) -> bool {
        self.slot().is_none()
    }
}
