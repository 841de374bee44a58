//! The engine of one process, as Python sees it. Calls that wait for the broker (start, stop)
//! run with the GIL released, so Python work threads keep running (stop drains them), and stay
//! interruptible by Ctrl-C.

use crate::convert::options;
use crate::errors::IntoPyResult;
use crate::pending;
use crate::pool::Pool;
use crate::worker::Worker;
use cleats_core::Status;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::time::Duration;

#[pyclass(module = "cleats._engine", frozen)]
pub struct Engine {
    inner: cleats_core::Engine,
}

#[pymethods]
impl Engine {
    /// An engine for the global options (the `configure` dict). Validates; never connects.
    #[new]
    #[pyo3(signature = (options = None))]
    fn new(options: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let global = self::options(options)?;
        Ok(Engine {
            inner: cleats_core::Engine::new(&global).py_err()?,
        })
    }

    /// Adds a worker (its class name) consuming `queue` with its own options layer.
    #[pyo3(signature = (name, queue, options = None))]
    fn add_worker(
        &self,
        name: &str,
        queue: &str,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Worker> {
        let layer = self::options(options)?;
        Ok(Worker::new(
            self.inner.add_worker(name, queue, &layer).py_err()?,
        ))
    }

    /// Connects, declares and starts consuming; raises the first error.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        pending::wait(py, self.inner.begin_start().py_err()?)
    }

    /// Graceful stop: waits up to `timeout` seconds (default: `stop_timeout`) for work in
    /// progress, requeues the rest. Returns `(drained, requeued)`.
    #[pyo3(signature = (timeout = None))]
    fn stop(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<(bool, usize)> {
        let timeout = timeout.map(|s| Duration::from_secs_f64(s.max(0.0)));
        let report = pending::wait(py, self.inner.begin_stop(timeout).py_err()?)?;
        Ok((report.drained, report.requeued))
    }

    /// "idle", "connected", "recovering" or "stopped".
    #[getter]
    fn status(&self) -> &'static str {
        match self.inner.status() {
            Status::Idle => "idle",
            Status::Connected { .. } => "connected",
            Status::Recovering { .. } => "recovering",
            Status::Stopped => "stopped",
        }
    }

    /// Seconds a graceful stop waits by default.
    #[getter]
    fn stop_timeout(&self) -> f64 {
        self.inner.config().stop_timeout.as_secs_f64()
    }

    fn workers(&self) -> Vec<Worker> {
        self.inner.workers().into_iter().map(Worker::new).collect()
    }

    /// The distinct pools: one per worker, or one shared with `share_threads`.
    fn pools(&self) -> Vec<Pool> {
        self.inner
            .pools()
            .into_iter()
            .map(|inner| Pool { inner })
            .collect()
    }
}
