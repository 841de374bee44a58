//! Options cross the boundary as JSON text: Ruby's `JSON.generate` of the engine-facing part of
//! the configuration (the host objects, like the handler class or the logger, stay in Ruby).

use crate::errors::{config_error, to_ruby};
use cleats_core::config;
use cleats_core::Options;
use magnus::{function, prelude::*, Error, RModule};

pub fn parse(json: &str) -> Result<Options, Error> {
    serde_json::from_str(json).map_err(|e| config_error(format!("options are not a table: {e}")))
}

pub fn define(native: RModule) -> Result<(), Error> {
    native.define_singleton_method("defaults_json", function!(defaults_json, 0))?;
    native.define_singleton_method("known_options", function!(config::known_options, 0))?;
    native.define_singleton_method("closest_option", function!(closest_option, 1))?;
    native.define_singleton_method("redacted_json", function!(redacted_json, 1))?;
    native.define_singleton_method("vhost_of", function!(vhost_of, 1))?;
    native.define_singleton_method("deprecated_options", function!(deprecated_options, 0))?;
    Ok(())
}

/// The engine's deprecated keys: `[[old, ["parent.child", ...]], ...]`.
fn deprecated_options() -> Vec<(&'static str, Vec<&'static str>)> {
    config::DEPRECATED
        .iter()
        .map(|(old, targets)| (*old, targets.to_vec()))
        .collect()
}

/// Sneakers' defaults as the engine defines them.
fn defaults_json() -> String {
    serde_json::Value::Object(config::defaults()).to_string()
}

fn closest_option(key: String) -> Option<&'static str> {
    config::closest_option(&key)
}

fn redacted_json(json: String) -> Result<String, Error> {
    Ok(serde_json::Value::Object(config::redacted(&parse(&json)?)).to_string())
}

/// The vhost an amqp URI names ("/" when it names none), as the engine reads it.
fn vhost_of(uri: String) -> Result<String, Error> {
    cleats_core::BrokerUri::parse(&uri, "amqp")
        .map(|b| b.vhost)
        .map_err(to_ruby)
}
