//! `Cleats::Native::Publisher`: the engine's confirmed publisher.

use crate::errors::to_ruby;
use crate::gvl::{blocking, wait_pending};
use crate::options::parse;
use cleats_core::{Message, Publisher};
use magnus::{function, method, prelude::*, Error, RArray, RModule, RString, Ruby};

#[magnus::wrap(class = "Cleats::Native::Publisher", free_immediately, size)]
pub struct RbPublisher(Publisher);

pub fn define(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let class = native.define_class("Publisher", ruby.class_object())?;
    class.define_singleton_method("new", function!(RbPublisher::new, 1))?;
    class.define_method("publish", method!(RbPublisher::publish, 2))?;
    class.define_method("publish_batch", method!(RbPublisher::publish_batch, 2))?;
    class.define_method("close", method!(RbPublisher::close, 0))?;
    Ok(())
}

impl RbPublisher {
    fn new(options: String) -> Result<Self, Error> {
        Publisher::new(&parse(&options)?)
            .map(RbPublisher)
            .map_err(to_ruby)
    }

    /// Publishes `body` with Bunny-style options (JSON) and waits for the confirm, GVL released
    /// and interrupts checked every 100 ms.
    fn publish(&self, body: RString, options: String) -> Result<(), Error> {
        // SAFETY: copied at once, with the GVL held, before any Ruby code can run.
        let bytes = unsafe { body.as_slice() }.to_vec();
        let message = Message::from_options(bytes, &parse(&options)?).map_err(to_ruby)?;
        let pending = self.0.begin_publish(message).map_err(to_ruby)?;
        wait_pending(pending)?.map_err(to_ruby)
    }

    /// Publishes every body with the same options (JSON), then waits once for all the confirms:
    /// the broker confirms a batch in a few frames instead of one round trip per message.
    /// Raises the first failure after every message was attempted.
    fn publish_batch(&self, bodies: RArray, options: String) -> Result<(), Error> {
        let template = Message::from_options(Vec::new(), &parse(&options)?).map_err(to_ruby)?;
        let mut messages = Vec::with_capacity(bodies.len());
        for body in bodies.into_iter() {
            let body = RString::try_convert(body)?;
            messages.push(Message {
                // SAFETY: copied at once, with the GVL held, before any Ruby code can run.
                body: unsafe { body.as_slice() }.to_vec(),
                ..template.clone()
            });
        }
        let pending = self.0.begin_publish_all(messages).map_err(to_ruby)?;
        wait_pending(pending)?.map_err(to_ruby)
    }

    fn close(&self) -> Result<(), Error> {
        blocking(|| self.0.close())?.map_err(to_ruby)
    }
}
