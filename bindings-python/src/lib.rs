//! `cleats._engine`: the Python binding of cleats-core. Translation only: option dicts to the
//! core's options, core errors to `cleats.errors` classes, deliveries to Python objects. The
//! worker model itself (classes, registries, CLI) is Python, under `python/cleats/`.

mod convert;
mod delivery;
mod engine;
mod errors;
mod pending;
mod pool;
mod publisher;
mod worker;

use crate::convert::{dict_to_options, options_to_dict};
use crate::errors::IntoPyResult;
use cleats_core::config;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::time::Duration;

/// The engine's options and their defaults (Sneakers' names), as a fresh dict.
#[pyfunction]
fn defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    options_to_dict(py, &config::defaults())
}

/// Every option name the engine knows.
#[pyfunction]
fn known_options() -> Vec<&'static str> {
    config::known_options()
}

/// The real option closest to a mistyped one, or None.
#[pyfunction]
fn closest_option(key: &str) -> Option<&'static str> {
    config::closest_option(key)
}

/// Defaults, then each layer, merged deeply (deprecated keys mapped).
#[pyfunction]
fn merge_layers<'py>(
    py: Python<'py>,
    layers: Vec<Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let layers = layers
        .iter()
        .map(|d| dict_to_options(d, ""))
        .collect::<PyResult<Vec<_>>>()?;
    let refs: Vec<&config::Options> = layers.iter().collect();
    options_to_dict(py, &config::merge_layers(&refs))
}

/// Validates the options of a worker (global layer, then its own) without connecting; raises
/// `cleats.ConfigError` naming the bad option.
#[pyfunction]
#[pyo3(signature = (name, queue, global_options, worker_options))]
fn validate_worker(
    name: &str,
    queue: &str,
    global_options: &Bound<'_, PyDict>,
    worker_options: &Bound<'_, PyDict>,
) -> PyResult<()> {
    let global = dict_to_options(global_options, "")?;
    let own = dict_to_options(worker_options, "")?;
    let merged = config::merge_layers(&[&global, &own]);
    config::WorkerConfig::resolve(name, queue, &merged).py_err()?;
    Ok(())
}

/// The options with the passwords of `amqp` URIs shown as `***`.
#[pyfunction]
fn redacted<'py>(py: Python<'py>, options: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
    options_to_dict(py, &config::redacted(&dict_to_options(options, "")?))
}

/// Routes the engine's log records at `level` ("error".."trace") and above to the queue read by
/// `next_log_record`.
#[pyfunction]
fn install_logging(level: &str) -> bool {
    let filter = level.parse().unwrap_or(log::LevelFilter::Info);
    cleats_core::logging::install(filter)
}

/// Waits up to `timeout` seconds (GIL released) for the engine's next log record:
/// `(level, target, message)` or None.
#[pyfunction]
#[pyo3(signature = (timeout = 0.1))]
fn next_log_record(py: Python<'_>, timeout: f64) -> Option<(&'static str, String, String)> {
    let timeout = Duration::from_secs_f64(timeout.max(0.0));
    py.detach(move || cleats_core::logging::next_record(timeout))
        .map(|r| (r.level, r.target, r.message))
}

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<engine::Engine>()?;
    m.add_class::<worker::Worker>()?;
    m.add_class::<pool::Pool>()?;
    m.add_class::<delivery::Delivery>()?;
    m.add_class::<publisher::Publisher>()?;
    m.add_function(wrap_pyfunction!(defaults, m)?)?;
    m.add_function(wrap_pyfunction!(known_options, m)?)?;
    m.add_function(wrap_pyfunction!(closest_option, m)?)?;
    m.add_function(wrap_pyfunction!(merge_layers, m)?)?;
    m.add_function(wrap_pyfunction!(validate_worker, m)?)?;
    m.add_function(wrap_pyfunction!(redacted, m)?)?;
    m.add_function(wrap_pyfunction!(install_logging, m)?)?;
    m.add_function(wrap_pyfunction!(next_log_record, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
