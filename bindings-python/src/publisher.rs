//! The publisher: confirmed publishes from any Python thread, with the GIL released while the
//! broker confirms.

use crate::convert::options;
use crate::errors::IntoPyResult;
use crate::pending;
use cleats_core::Message;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

#[pyclass(module = "cleats._engine", frozen)]
pub struct Publisher {
    inner: cleats_core::Publisher,
}

#[pymethods]
impl Publisher {
    /// A publisher for the global options (connects on the first publish).
    #[new]
    #[pyo3(signature = (options = None))]
    fn new(options: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let global = self::options(options)?;
        Ok(Publisher {
            inner: cleats_core::Publisher::new(&global).py_err()?,
        })
    }

    /// Publishes `body` with Sneakers/Bunny publish options (`to_queue` or `routing_key`,
    /// `exchange`, `headers`, `persistent`, `content_type`, ...) and waits for the confirm.
    #[pyo3(signature = (body, options = None))]
    fn publish(
        &self,
        py: Python<'_>,
        body: &[u8],
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let message = Message::from_options(body, &self::options(options)?).py_err()?;
        pending::wait(py, self.inner.begin_publish(message).py_err()?)
    }

    /// Publishes every body with the same options, then waits once for all the confirms: the
    /// broker confirms a batch in a few frames instead of one round trip per message. Raises
    /// the first failure after every message was attempted.
    #[pyo3(signature = (bodies, options = None))]
    fn publish_batch(
        &self,
        py: Python<'_>,
        bodies: Vec<Bound<'_, PyBytes>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let template = Message::from_options(Vec::new(), &self::options(options)?).py_err()?;
        let messages = bodies
            .into_iter()
            .map(|body| Message {
                body: body.as_bytes().to_vec(),
                ..template.clone()
            })
            .collect();
        pending::wait(py, self.inner.begin_publish_all(messages).py_err()?)
    }

    /// Closes the connection; a later publish opens a new one.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let publisher = self.inner.clone();
        py.detach(move || publisher.close()).py_err()
    }
}
