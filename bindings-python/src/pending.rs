//! Waiting for an engine operation (start, stop, publish) the way `Pool.next` waits for a
//! delivery: GIL released, in slices, `check_signals` between them, so Ctrl-C interrupts a
//! start against a broker that never answers or a publish during a long recovery.

use crate::errors::IntoPyResult;
use cleats_core::Pending;
use pyo3::prelude::*;
use std::time::Duration;

const SLICE: Duration = Duration::from_millis(100);

pub(crate) fn wait<T: Send + 'static>(py: Python<'_>, mut pending: Pending<T>) -> PyResult<T> {
    loop {
        let pending_ref = &mut pending;
        if let Some(result) = py.detach(move || pending_ref.wait(SLICE)) {
            return result.py_err();
        }
        py.check_signals()?;
    }
}
