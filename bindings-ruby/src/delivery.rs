//! `Cleats::Native::Delivery`: one message handed to a Ruby thread, settled from Ruby.

use crate::convert::{self, key};
use crate::errors::{config_error, to_ruby};
use cleats_core::{Delivery, ErrorInfo, Outcome};
use magnus::value::LazyId;
use magnus::{method, prelude::*, Error, RHash, RModule, RString, Ruby};
use std::sync::atomic::{AtomicBool, Ordering};

#[magnus::wrap(class = "Cleats::Native::Delivery", free_immediately, size)]
pub struct RbDelivery {
    delivery: Box<Delivery>,
    /// Lets the pulling thread check, without raising, that `work`'s path settled it.
    settled: AtomicBool,
}

impl RbDelivery {
    pub fn new(delivery: Box<Delivery>) -> Self {
        RbDelivery {
            delivery,
            settled: AtomicBool::new(false),
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
    fn body(ruby: &Ruby, rb_self: &Self) -> RString {
        ruby.str_from_slice(&rb_self.delivery.body)
    }

    fn worker_name(&self) -> String {
        self.delivery.worker().name().to_string()
    }

    /// Bunny's delivery_info keys (symbols).
    fn delivery_info(ruby: &Ruby, rb_self: &Self) -> Result<RHash, Error> {
        static DELIVERY_TAG: LazyId = LazyId::new("delivery_tag");
        static ROUTING_KEY: LazyId = LazyId::new("routing_key");
        static EXCHANGE: LazyId = LazyId::new("exchange");
        static REDELIVERED: LazyId = LazyId::new("redelivered");
        static CONSUMER_TAG: LazyId = LazyId::new("consumer_tag");
        let i = &rb_self.delivery.info;
        let h = ruby.hash_new();
        h.aset(key(&DELIVERY_TAG), i.delivery_tag)?;
        h.aset(key(&ROUTING_KEY), i.routing_key.as_str())?;
        h.aset(key(&EXCHANGE), i.exchange.as_str())?;
        h.aset(key(&REDELIVERED), i.redelivered)?;
        h.aset(key(&CONSUMER_TAG), i.consumer_tag.as_str())?;
        Ok(h)
    }

    fn properties(ruby: &Ruby, rb_self: &Self) -> Result<RHash, Error> {
        convert::properties(ruby, &rb_self.delivery.properties)
    }

    /// The two properties every message's decoding needs, without building `properties`.
    fn content_type(&self) -> Option<&str> {
        self.delivery.properties.content_type.as_deref()
    }

    fn content_encoding(&self) -> Option<&str> {
        self.delivery.properties.content_encoding.as_deref()
    }

    /// Settles with `outcome` ("ack", "reject", "requeue", "error", "noop"); for "error" the
    /// exception's class, message and backtrace. Returns the seconds since hand-out.
    fn settle(
        &self,
        outcome: String,
        error_class: Option<String>,
        error_message: Option<String>,
        backtrace: Option<Vec<String>>,
    ) -> Result<f64, Error> {
        let outcome = match outcome.as_str() {
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
        let settled = self.delivery.settle(outcome).map_err(to_ruby)?;
        self.settled.store(true, Ordering::Release);
        Ok(settled.elapsed.as_secs_f64())
    }

    fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }
}
