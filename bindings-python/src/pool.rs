//! `Pool.next`: the one place a Python thread waits for the engine. The wait runs with the GIL
//! released in slices of at most 100 ms; between slices the thread takes the GIL back and runs
//! `check_signals`, so Ctrl-C and signal handlers stay prompt. Nothing Python is touched while
//! detached.

use crate::delivery::Delivery;
use crate::errors::IntoPyResult;
use cleats_core::Next;
use pyo3::prelude::*;
use pyo3::types::PyBool;
use std::time::{Duration, Instant};

/// Longest stretch a thread waits without checking for signals.
const SLICE: Duration = Duration::from_millis(100);

/// The hand-off queue of one worker (or of every worker with `share_threads`).
#[pyclass(module = "cleats._engine", frozen)]
pub struct Pool {
    pub(crate) inner: cleats_core::Pool,
}

#[pymethods]
impl Pool {
    /// How many Python threads should pull from this pool.
    #[getter]
    fn threads(&self) -> usize {
        self.inner.threads()
    }

    /// The workers whose deliveries this pool hands out (several with `share_threads`).
    #[getter]
    fn worker_names(&self) -> Vec<String> {
        self.inner.worker_names()
    }

    /// Waits up to `timeout` seconds for a delivery: a `Delivery`, `None` when nothing came in
    /// time, `False` once the engine is stopping (leave the loop).
    #[pyo3(signature = (timeout = 0.1))]
    fn next(&self, py: Python<'_>, timeout: f64) -> PyResult<Py<PyAny>> {
        // A delivery already waiting is taken without releasing the GIL: detaching and
        // reattaching wakes other Python threads and costs context switches for nothing.
        if let Next::Delivery(d) = self.inner.next(Duration::ZERO).py_err()? {
            return Ok(Py::new(py, Delivery::new(d))?.into_any());
        }
        let deadline = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
        loop {
            let slice = deadline
                .saturating_duration_since(Instant::now())
                .min(SLICE);
            let pool = self.inner.clone();
            let next = py.detach(move || pool.next(slice)).py_err()?;
            match next {
                Next::Delivery(d) => {
                    return Ok(Py::new(py, Delivery::new(d))?.into_any());
                }
                Next::Stopped => return Ok(PyBool::new(py, false).to_owned().into_any().unbind()),
                Next::Timeout => {
                    py.check_signals()?;
                    if Instant::now() >= deadline {
                        return Ok(py.None());
                    }
                }
            }
        }
    }
}
