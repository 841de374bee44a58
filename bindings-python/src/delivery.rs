//! One message handed to a Python thread, and its settlement.

use crate::convert::{info_to_py, properties_to_py};
use crate::errors::IntoPyResult;
use cleats_core::{ErrorInfo, Outcome};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

#[pyclass(module = "cleats._engine", frozen)]
pub struct Delivery {
    inner: cleats_core::Delivery,
}

impl Delivery {
    pub(crate) fn new(inner: cleats_core::Delivery) -> Self {
        Delivery { inner }
    }
}

/// The outcome named by the Python side ("ack", "reject", "requeue", "noop", "error").
fn outcome(name: &str, error: Option<(String, String, Vec<String>)>) -> PyResult<Outcome> {
    Ok(match name {
        "ack" => Outcome::Ack,
        "reject" => Outcome::Reject,
        "requeue" => Outcome::Requeue,
        "noop" => Outcome::Noop,
        "error" => {
            let (class, message, backtrace) = error.unwrap_or_default();
            Outcome::Error(ErrorInfo {
                class,
                message,
                backtrace,
            })
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown outcome '{other}' (expected ack, reject, requeue, noop or error)"
            )))
        }
    })
}

#[pymethods]
impl Delivery {
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.body)
    }

    /// delivery_tag, routing_key, exchange, redelivered, consumer_tag.
    #[getter]
    fn delivery_info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        info_to_py(py, &self.inner.info)
    }

    /// The message properties (Bunny's metadata), headers as a dict.
    #[getter]
    fn properties<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        properties_to_py(py, &self.inner.properties)
    }

    /// The two properties every message's decoding needs, without building `properties`.
    #[getter]
    fn content_type(&self) -> Option<&str> {
        self.inner.properties.content_type.as_deref()
    }

    #[getter]
    fn content_encoding(&self) -> Option<&str> {
        self.inner.properties.content_encoding.as_deref()
    }

    #[getter]
    fn delivery_tag(&self) -> u64 {
        self.inner.info.delivery_tag
    }

    /// The name of the worker this message was consumed for.
    #[getter]
    fn worker_name(&self) -> &str {
        self.inner.worker().name()
    }

    /// Hands the outcome to the worker's handler (never waits for the broker). `error` is
    /// `(class, message, traceback lines)` for the "error" outcome. Returns the seconds from
    /// hand-out to settlement, for the `time` metric.
    #[pyo3(signature = (outcome_name, error = None))]
    fn settle(
        &self,
        outcome_name: &str,
        error: Option<(String, String, Vec<String>)>,
    ) -> PyResult<f64> {
        let settled = self.inner.settle(outcome(outcome_name, error)?).py_err()?;
        Ok(settled.elapsed.as_secs_f64())
    }
}
