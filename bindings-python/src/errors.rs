//! The one place where core errors become Python exceptions. The classes live in
//! `cleats/errors.py` (so that `ConfigError` can also be a `ValueError`, `ConnectionError` also
//! the builtin one, ...); this maps each variant to one of them, keeping the core's message.

use cleats_core::Error;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// The name of the `cleats.errors` class for a core error.
fn class_name(error: &Error) -> &'static str {
    match error {
        Error::InvalidOption { .. } => "ConfigError",
        Error::ConnectionFailed { .. } => "ConnectionError",
        Error::AuthenticationFailed { .. } => "AuthenticationError",
        Error::Channel { .. } => "ChannelError",
        Error::PublishNacked { .. } => "PublishNackedError",
        Error::Unroutable { .. } => "UnroutableError",
        Error::Timeout { .. } => "TimeoutError",
        Error::Forked { .. } => "ForkError",
        Error::InvalidState { .. } => "StateError",
    }
}

/// Converts a core error into the matching `cleats` exception.
pub fn to_py(error: Error) -> PyErr {
    let message = error.to_string();
    Python::attach(|py| {
        let class = py
            .import("cleats.errors")
            .and_then(|m| m.getattr(class_name(&error)));
        match class.and_then(|c| c.call1((message.clone(),))) {
            Ok(instance) => PyErr::from_value(instance),
            // Only when the Python half of the package is missing or broken.
            Err(_) => PyRuntimeError::new_err(message),
        }
    })
}

/// `?` on a core result inside a binding function.
pub trait IntoPyResult<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for cleats_core::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
