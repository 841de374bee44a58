//! A worker handle: its settings, metric names and counters, and the channel operations a
//! custom handler sends (`Worker::apply`, `Worker::declare`).

use crate::convert::options;
use crate::errors::IntoPyResult;
use crate::pool::Pool;
use cleats_core::config::{ExchangeConfig, QueueConfig};
use cleats_core::fields::table_from_json;
use cleats_core::{Action, Declaration, HandlerKind, Options};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::Value;

#[pyclass(module = "cleats._engine", frozen)]
pub struct Worker {
    inner: cleats_core::Worker,
}

impl Worker {
    pub(crate) fn new(inner: cleats_core::Worker) -> Self {
        Worker { inner }
    }
}

fn arguments(dict: Option<&Bound<'_, PyDict>>, option: &str) -> PyResult<cleats_core::Table> {
    let opts: Options = options(dict)?;
    table_from_json(&Value::Object(opts), option).py_err()
}

#[pymethods]
impl Worker {
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    #[getter]
    fn queue(&self) -> &str {
        &self.inner.config().queue.name
    }

    #[getter]
    fn exchange(&self) -> &str {
        &self.inner.config().exchange.name
    }

    #[getter]
    fn routing_keys(&self) -> Vec<String> {
        self.inner.config().routing_keys.clone()
    }

    #[getter]
    fn ack(&self) -> bool {
        self.inner.config().ack
    }

    #[getter]
    fn prefetch(&self) -> u16 {
        self.inner.config().prefetch
    }

    /// "oneshot", "maxretry" or "custom".
    #[getter]
    fn handler(&self) -> &'static str {
        match self.inner.config().handler {
            HandlerKind::Oneshot => "oneshot",
            HandlerKind::Maxretry(_) => "maxretry",
            HandlerKind::Custom => "custom",
        }
    }

    #[getter]
    fn pool(&self) -> Pool {
        Pool {
            inner: self.inner.pool().clone(),
        }
    }

    /// Messages handed out and not settled yet.
    #[getter]
    fn in_progress(&self) -> u64 {
        self.inner.in_progress()
    }

    /// Sneakers' metric names: started, time, ended, and handled.<outcome>.
    fn metric_names<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let n = self.inner.metric_names();
        let d = PyDict::new(py);
        d.set_item("started", &n.started)?;
        d.set_item("time", &n.time)?;
        d.set_item("ended", &n.ended)?;
        for outcome in cleats_core::metrics::OUTCOME_NAMES {
            d.set_item(format!("handled.{outcome}"), n.handled_by_name(outcome))?;
        }
        Ok(d)
    }

    /// The engine's counters for this worker in this process.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.metrics();
        let d = PyDict::new(py);
        for (k, v) in [
            ("started", s.started),
            ("ended", s.ended),
            ("ack", s.ack),
            ("reject", s.reject),
            ("requeue", s.requeue),
            ("error", s.error),
            ("noop", s.noop),
        ] {
            d.set_item(k, v)?;
        }
        d.set_item("time_total", s.time_total.as_secs_f64())?;
        d.set_item("time_max", s.time_max.as_secs_f64())?;
        Ok(d)
    }

    /// A channel operation on a delivery tag: "ack", "reject" or "nack" (Bunny's
    /// `channel.acknowledge / reject / nack`). Tags of a lost connection are ignored.
    #[pyo3(signature = (operation, tag, multiple = false, requeue = false))]
    fn apply(&self, operation: &str, tag: u64, multiple: bool, requeue: bool) -> PyResult<()> {
        let action = Action::from_channel_operation(operation, tag, multiple, requeue).py_err()?;
        self.inner.apply(action).py_err()
    }

    /// Declares an exchange now and after every reconnection.
    #[pyo3(signature = (name, kind = "direct", durable = true, auto_delete = false, arguments = None))]
    fn declare_exchange(
        &self,
        py: Python<'_>,
        name: &str,
        kind: &str,
        durable: bool,
        auto_delete: bool,
        arguments: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let declaration = Declaration::Exchange(ExchangeConfig {
            name: name.to_string(),
            kind: kind.to_string(),
            durable,
            auto_delete,
            arguments: self::arguments(arguments, "arguments")?,
        });
        self.declare(py, declaration)
    }

    /// Declares a queue now and after every reconnection.
    #[pyo3(signature = (name, durable = true, auto_delete = false, exclusive = false, arguments = None))]
    fn declare_queue(
        &self,
        py: Python<'_>,
        name: &str,
        durable: bool,
        auto_delete: bool,
        exclusive: bool,
        arguments: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let declaration = Declaration::Queue(QueueConfig {
            name: name.to_string(),
            durable,
            auto_delete,
            exclusive,
            arguments: self::arguments(arguments, "arguments")?,
        });
        self.declare(py, declaration)
    }

    /// Binds a queue to an exchange now and after every reconnection.
    #[pyo3(signature = (queue, exchange, routing_key = "", arguments = None))]
    fn bind(
        &self,
        py: Python<'_>,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let declaration = Declaration::Bind {
            queue: queue.to_string(),
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            arguments: self::arguments(arguments, "arguments")?,
        };
        self.declare(py, declaration)
    }

    fn __repr__(&self) -> String {
        format!(
            "<cleats._engine.Worker {} queue={}>",
            self.inner.name(),
            self.inner.config().queue.name
        )
    }
}

impl Worker {
    fn declare(&self, py: Python<'_>, declaration: Declaration) -> PyResult<()> {
        let worker = self.inner.clone();
        py.detach(move || worker.declare(declaration)).py_err()
    }
}
