//! `Cleats::Native::Engine`, `::Worker` and `::Pool`: thin wrappers over the core types.

use crate::delivery::RbDelivery;
use crate::errors::{state_error, to_ruby};
use crate::gvl::{blocking, check_interrupts, wait_pending, without_gvl};
use crate::options::parse;
use cleats_core::config::{ExchangeConfig, QueueConfig};
use cleats_core::fields::table_from_json;
use cleats_core::{Action, Declaration, Engine, Next, Pool, Status, Worker};
use magnus::{function, method, prelude::*, Error, IntoValue, RArray, RHash, RModule, Ruby, Value};
use std::time::Duration;

#[magnus::wrap(class = "Cleats::Native::Engine", free_immediately, size)]
pub struct RbEngine(Engine);

#[magnus::wrap(class = "Cleats::Native::Worker", free_immediately, size)]
pub struct RbWorker(Worker);

#[magnus::wrap(class = "Cleats::Native::Pool", free_immediately, size)]
pub struct RbPool(Pool);

pub fn define(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let engine = native.define_class("Engine", ruby.class_object())?;
    engine.define_singleton_method("new", function!(RbEngine::new, 1))?;
    engine.define_method("add_worker", method!(RbEngine::add_worker, 3))?;
    engine.define_method("start", method!(RbEngine::start, 0))?;
    engine.define_method("stop", method!(RbEngine::stop, 1))?;
    engine.define_method("status", method!(RbEngine::status, 0))?;
    engine.define_method("pools", method!(RbEngine::pools, 0))?;

    let worker = native.define_class("Worker", ruby.class_object())?;
    worker.define_method("name", method!(RbWorker::name, 0))?;
    worker.define_method("pool", method!(RbWorker::pool, 0))?;
    worker.define_method("metric_names", method!(RbWorker::metric_names, 0))?;
    worker.define_method("apply", method!(RbWorker::apply, 4))?;
    worker.define_method("declare_exchange", method!(RbWorker::declare_exchange, 2))?;
    worker.define_method("declare_queue", method!(RbWorker::declare_queue, 2))?;
    worker.define_method("bind", method!(RbWorker::bind, 4))?;
    worker.define_method("in_progress", method!(RbWorker::in_progress, 0))?;

    let pool = native.define_class("Pool", ruby.class_object())?;
    pool.define_method("next", method!(RbPool::next, 2))?;
    pool.define_method("threads", method!(RbPool::threads, 0))?;
    pool.define_method("worker_names", method!(RbPool::worker_names, 0))?;
    Ok(())
}

impl RbEngine {
    fn new(global: String) -> Result<Self, Error> {
        Engine::new(&parse(&global)?).map(RbEngine).map_err(to_ruby)
    }

    fn add_worker(&self, name: String, queue: String, options: String) -> Result<RbWorker, Error> {
        self.0
            .add_worker(&name, &queue, &parse(&options)?)
            .map(RbWorker)
            .map_err(to_ruby)
    }

    /// Connects, declares and consumes; the GVL is released while it waits for the broker, and
    /// interrupts are checked every 100 ms.
    fn start(&self) -> Result<(), Error> {
        let pending = self.0.begin_start().map_err(to_ruby)?;
        wait_pending(pending)?.map_err(to_ruby)
    }

    /// Graceful stop: `[drained, requeued]`. The GVL is released, so the Ruby threads running
    /// `work` can finish what they hold.
    fn stop(&self, timeout: Option<f64>) -> Result<(bool, usize), Error> {
        let timeout = timeout.map(|s| Duration::from_secs_f64(s.max(0.0)));
        let pending = self.0.begin_stop(timeout).map_err(to_ruby)?;
        let report = wait_pending(pending)?.map_err(to_ruby)?;
        Ok((report.drained, report.requeued))
    }

    fn status(&self) -> String {
        match self.0.status() {
            Status::Idle => "idle".into(),
            Status::Connected { .. } => "connected".into(),
            Status::Recovering { .. } => "recovering".into(),
            Status::Stopped => "stopped".into(),
        }
    }

    /// The distinct pools (one per worker, or one for all with `share_threads`).
    fn pools(ruby: &Ruby, rb_self: &Self) -> Result<RArray, Error> {
        let list = ruby.ary_new();
        for pool in rb_self.0.pools() {
            list.push(RbPool(pool))?;
        }
        Ok(list)
    }
}

impl RbWorker {
    fn name(&self) -> String {
        self.0.name().to_string()
    }

    fn pool(&self) -> RbPool {
        RbPool(self.0.pool().clone())
    }

    fn in_progress(&self) -> u64 {
        self.0.in_progress()
    }

    /// `{started:, time:, ended:, handled: {ack:, reject:, requeue:, error:, noop:}}`.
    fn metric_names(ruby: &Ruby, rb_self: &Self) -> Result<RHash, Error> {
        let names = rb_self.0.metric_names();
        let h = ruby.hash_new();
        h.aset(ruby.to_symbol("started"), names.started.as_str())?;
        h.aset(ruby.to_symbol("time"), names.time.as_str())?;
        h.aset(ruby.to_symbol("ended"), names.ended.as_str())?;
        let handled = ruby.hash_new();
        for outcome in cleats_core::metrics::OUTCOME_NAMES {
            handled.aset(ruby.to_symbol(outcome), names.handled_by_name(outcome))?;
        }
        h.aset(ruby.to_symbol("handled"), handled)?;
        Ok(h)
    }

    /// A custom handler's channel operation: `op` is "ack", "reject" or "nack".
    fn apply(&self, op: String, tag: u64, multiple: bool, requeue: bool) -> Result<(), Error> {
        let action =
            Action::from_channel_operation(&op, tag, multiple, requeue).map_err(to_ruby)?;
        self.0.apply(action).map_err(to_ruby)
    }

    /// `opts` as Bunny's `channel.exchange(name, opts)`: type, durable, auto_delete, arguments.
    fn declare_exchange(&self, name: String, opts: String) -> Result<(), Error> {
        let mut layer = cleats_core::Options::new();
        layer.insert("exchange".into(), name.into());
        layer.insert("exchange_options".into(), parse(&opts)?.into());
        let exchange = ExchangeConfig::from_options(&layer).map_err(to_ruby)?;
        self.declare(Declaration::Exchange(exchange))
    }

    /// `opts` as Bunny's `channel.queue(name, opts)`: durable, auto_delete, exclusive, arguments.
    fn declare_queue(&self, name: String, opts: String) -> Result<(), Error> {
        let opts = parse(&opts)?;
        let flag =
            |k: &str, default: bool| opts.get(k).and_then(|v| v.as_bool()).unwrap_or(default);
        let arguments = opts.get("arguments").cloned().unwrap_or_default();
        let queue = QueueConfig {
            name,
            durable: flag("durable", false),
            auto_delete: flag("auto_delete", false),
            exclusive: flag("exclusive", false),
            arguments: table_from_json(&arguments, "arguments").map_err(to_ruby)?,
        };
        self.declare(Declaration::Queue(queue))
    }

    fn bind(
        &self,
        queue: String,
        exchange: String,
        key: String,
        args: String,
    ) -> Result<(), Error> {
        let arguments = serde_json::Value::Object(parse(&args)?);
        self.declare(Declaration::Bind {
            queue,
            exchange,
            routing_key: key,
            arguments: table_from_json(&arguments, "arguments").map_err(to_ruby)?,
        })
    }

    fn declare(&self, declaration: Declaration) -> Result<(), Error> {
        let worker = &self.0;
        blocking(|| worker.declare(declaration.clone()))?.map_err(to_ruby)
    }
}

impl RbPool {
    fn threads(&self) -> usize {
        self.0.threads()
    }

    /// The workers whose deliveries it hands out: one, or several with `share_threads`.
    fn worker_names(&self) -> Vec<String> {
        self.0.worker_names()
    }

    /// The next delivery, `:timeout` after `timeout` seconds (interrupts checked), or nil once
    /// the engine stops. The wait runs without the GVL. A delivery is also stored in `held[0]`
    /// before it is returned: an interrupt that comes before the caller has it in a variable
    /// would otherwise leave it unreachable and unsettled; the caller's `ensure` finds it there.
    fn next(ruby: &Ruby, rb_self: &Self, timeout: f64, held: RArray) -> Result<Value, Error> {
        if held.is_frozen() {
            // Checked before a delivery is taken: storing it must not fail afterwards.
            return Err(state_error("Pool#next: the held array is frozen"));
        }
        let wait = Duration::from_secs_f64(timeout.clamp(0.0, 0.1));
        // A delivery already waiting is taken without giving up the GVL: releasing and
        // retaking it wakes other Ruby threads and costs context switches for nothing.
        let ready = match rb_self.0.next(Duration::ZERO) {
            Ok(Next::Timeout) => None,
            other => Some(other),
        };
        match ready.or_else(|| without_gvl(|| rb_self.0.next(wait))) {
            // A delivery is returned before any interrupt check: it must reach Ruby (and be
            // settled there), never be dropped on the way.
            Some(Ok(Next::Delivery(d))) => {
                let delivery = RbDelivery::new(d).into_value_with(ruby);
                held.store(0, delivery)?;
                Ok(delivery)
            }
            Some(Ok(Next::Stopped)) => Ok(ruby.qnil().as_value()),
            Some(Err(e)) => Err(to_ruby(e)),
            Some(Ok(Next::Timeout)) | None => {
                check_interrupts()?;
                Ok(ruby.to_symbol("timeout").as_value())
            }
        }
    }
}
