//! The one mapping from core errors to Ruby exception classes, defined once here:
//! `Cleats::Error < StandardError` and its subclasses, `Cleats::ConfigError < ArgumentError`.
//! (lib/sneakers/errors.rb aliases them under `Sneakers::`.)

use cleats_core::Error as CoreError;
use magnus::value::Lazy;
use magnus::{prelude::*, Error, ExceptionClass, RModule, Ruby};

fn class(ruby: &Ruby, name: &str) -> ExceptionClass {
    let cleats: RModule = ruby.class_object().const_get("Cleats").expect("Cleats");
    cleats.const_get(name).expect("cleats error class")
}

static CONFIG: Lazy<ExceptionClass> = Lazy::new(|r| class(r, "ConfigError"));
static CONNECTION: Lazy<ExceptionClass> = Lazy::new(|r| class(r, "ConnectionError"));
static AUTHENTICATION: Lazy<ExceptionClass> = Lazy::new(|r| class(r, "AuthenticationError"));
static CHANNEL: Lazy<ExceptionClass> = Lazy::new(|r| class(r, "ChannelError"));
static PUBLISH: Lazy<ExceptionClass> = Lazy::new(|r| class(r, "PublishError"));
static UNROUTABLE: Lazy<ExceptionClass> = Lazy::new(|r| class(r, "UnroutableError"));
static TIMEOUT: Lazy<ExceptionClass> = Lazy::new(|r| class(r, "TimeoutError"));
static FORK: Lazy<ExceptionClass> = Lazy::new(|r| class(r, "ForkError"));
static STATE: Lazy<ExceptionClass> = Lazy::new(|r| class(r, "StateError"));

pub fn define(ruby: &Ruby, cleats: RModule) -> Result<(), Error> {
    let base = cleats.define_error("Error", ruby.exception_standard_error())?;
    cleats.define_error("ConfigError", ruby.exception_arg_error())?;
    let connection = cleats.define_error("ConnectionError", base)?;
    cleats.define_error("AuthenticationError", connection)?;
    cleats.define_error("ChannelError", base)?;
    let publish = cleats.define_error("PublishError", base)?;
    cleats.define_error("UnroutableError", publish)?;
    cleats.define_error("TimeoutError", base)?;
    cleats.define_error("ForkError", base)?;
    cleats.define_error("StateError", base)?;
    Ok(())
}

/// The Ruby exception for a core error; the message is core's, unchanged.
pub fn to_ruby(error: CoreError) -> Error {
    let ruby = Ruby::get().expect("called from a Ruby thread");
    let class = match &error {
        CoreError::InvalidOption { .. } => &CONFIG,
        CoreError::ConnectionFailed { .. } => &CONNECTION,
        CoreError::AuthenticationFailed { .. } => &AUTHENTICATION,
        CoreError::Channel { .. } => &CHANNEL,
        CoreError::PublishNacked { .. } => &PUBLISH,
        CoreError::Unroutable { .. } => &UNROUTABLE,
        CoreError::Timeout { .. } => &TIMEOUT,
        CoreError::Forked { .. } => &FORK,
        CoreError::InvalidState { .. } => &STATE,
    };
    Error::new(ruby.get_inner(class), error.to_string())
}

/// A call the object's state no longer allows (a delivery used after it was settled).
pub fn state_error(message: &str) -> Error {
    let ruby = Ruby::get().expect("called from a Ruby thread");
    Error::new(ruby.get_inner(&STATE), message.to_string())
}

/// For options that do not even parse (a binding bug or a value JSON cannot carry).
pub fn config_error(message: String) -> Error {
    let ruby = Ruby::get().expect("called from a Ruby thread");
    Error::new(ruby.get_inner(&CONFIG), message)
}
