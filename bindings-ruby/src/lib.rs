//! Ruby binding of the cleats engine (magnus): it only translates between core types and Ruby
//! values. The Sneakers API itself is written in Ruby under `lib/`; this extension is loaded as
//! `cleats_ext` and defines `Cleats::Native` plus the exception classes.
//!
//! Every call that may wait (pulling a delivery, starting, stopping, publishing, declaring,
//! reading engine log lines) runs with the GVL released (see `gvl.rs`), and no Rust thread ever
//! calls Ruby.

mod convert;
mod delivery;
mod engine;
mod errors;
mod gvl;
mod options;
mod publisher;

use magnus::{function, prelude::*, Error, Ruby};

#[magnus::init(name = "cleats_ext")]
fn init(ruby: &Ruby) -> Result<(), Error> {
    let cleats = ruby.define_module("Cleats")?;
    errors::define(ruby, cleats)?;
    let native = cleats.define_module("Native")?;
    options::define(native)?;
    engine::define(ruby, native)?;
    delivery::define(ruby, native)?;
    publisher::define(ruby, native)?;
    native.define_singleton_method("install_logging", function!(install_logging, 1))?;
    native.define_singleton_method("next_log_record", function!(next_log_record, 1))?;
    Ok(())
}

/// Routes the engine's log lines (at `level` and above) to the queue `next_log_record` reads.
fn install_logging(level: String) -> bool {
    let filter = level.parse().unwrap_or(log::LevelFilter::Info);
    cleats_core::logging::install(filter)
}

/// The next engine log line as `[level, target, message]`, or nil after `timeout` seconds.
fn next_log_record(timeout: f64) -> Result<Option<(String, String, String)>, Error> {
    let wait = std::time::Duration::from_secs_f64(timeout.clamp(0.0, 0.5));
    match gvl::without_gvl(|| cleats_core::logging::next_record(wait)) {
        Some(Some(r)) => Ok(Some((r.level.to_string(), r.target, r.message))),
        Some(None) | None => {
            gvl::check_interrupts()?;
            Ok(None)
        }
    }
}
