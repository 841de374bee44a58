//! Options: Sneakers' option names and defaults, defined once here and read by every binding.
//!
//! Options travel as a JSON-like tree ([`Options`]) so that bindings only translate their own
//! hashes / dicts. Layers (defaults, global `configure`, per-worker `from_queue`) are merged deeply,
//! deprecated keys are mapped, and [`WorkerConfig::resolve`] validates the result into typed
//! settings, failing with an error that names the offending option.

use crate::error::{Error, Result};
use crate::fields::{table_from_json, FieldValue, Table};
use crate::uri::{redact_uri_text, BrokerUri};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// An options tree: string keys, JSON-like values.
pub type Options = Map<String, Value>;

/// Sneakers' defaults, plus the few options cleats adds (marked below). Values that are host
/// objects in Sneakers (handler class, error reporters, log device) are given by name; each
/// binding resolves the names to its own objects.
pub fn defaults() -> Options {
    let amqp = std::env::var("RABBITMQ_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@localhost:5672".to_string());
    let value = json!({
        "amqp": amqp,
        "vhost": null, // null: taken from the amqp URI, else "/"
        "heartbeat": 30,
        "amqp_heartbeat": 30,
        "prefetch": 10,
        "threads": 10,
        "share_threads": false,
        "ack": true,
        "workers": 4,
        "start_worker_delay": 0.2,
        "exchange": "sneakers",
        "exchange_options": {"type": "direct", "durable": true, "auto_delete": false, "arguments": {}},
        "queue_options": {"durable": true, "auto_delete": false, "exclusive": false, "arguments": {}},
        "hooks": {},
        "handler": "oneshot",
        "metrics": null,
        "error_reporters": ["default_logger"],
        "log": "STDOUT",
        "log_level": "debug",
        "log_rotate_age": 5,
        "log_rotate_size": 1_048_576,
        "pid_path": "sneakers.pid",
        "daemonize": false,
        "runner_config_file": null,
        "connection": null,
        // cleats: seconds a graceful stop waits for work in progress before requeueing it.
        "stop_timeout": 30,
        // cleats (Bunny's name): upper bound, in seconds, of the reconnection backoff.
        "network_recovery_interval": 5.0,
        // cleats: publisher confirms, awaited in batches.
        "publisher_confirms": true,
        // cleats: seconds a publish may wait for the broker (including during recovery).
        "publish_timeout": 30
    });
    match value {
        Value::Object(map) => map,
        _ => unreachable!("defaults are an object"),
    }
}

/// Per-worker options (`from_queue name, opts`) that have no global default.
const WORKER_KEYS: &[&str] = &[
    "routing_key",
    "bind",
    "bind_arguments",
    "content_type",
    "content_encoding",
    "retry_timeout",
    "retry_max_times",
    "retry_exchange",
    "retry_error_exchange",
    "retry_requeue_exchange",
    "retry_routing_key",
    "retry_queue_arguments",
    "queue_name",
    "env",
    "timeout_job_after",
];

/// Deprecated top-level keys and the places they map to (`parent.child`). Bindings whose
/// configuration holds host objects map with this table on their side.
pub const DEPRECATED: &[(&str, &[&str])] = &[
    ("exchange_type", &["exchange_options.type"]),
    ("exchange_arguments", &["exchange_options.arguments"]),
    (
        "durable",
        &["exchange_options.durable", "queue_options.durable"],
    ),
    ("arguments", &["queue_options.arguments"]),
];

/// Every option name cleats knows, top level.
pub fn known_options() -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = [
        "amqp",
        "vhost",
        "heartbeat",
        "amqp_heartbeat",
        "prefetch",
        "threads",
        "share_threads",
        "ack",
        "workers",
        "start_worker_delay",
        "exchange",
        "exchange_options",
        "queue_options",
        "hooks",
        "handler",
        "metrics",
        "error_reporters",
        "log",
        "log_level",
        "log_rotate_age",
        "log_rotate_size",
        "pid_path",
        "daemonize",
        "runner_config_file",
        "connection",
        "stop_timeout",
        "network_recovery_interval",
        "publisher_confirms",
        "publish_timeout",
    ]
    .to_vec();
    keys.extend_from_slice(WORKER_KEYS);
    keys.extend(DEPRECATED.iter().map(|(k, _)| *k));
    keys
}

/// Merges `over` into `base`: nested objects merge, any other value replaces.
pub fn deep_merge(base: &mut Options, over: &Options) {
    for (key, value) in over {
        match (base.get_mut(key), value) {
            (Some(Value::Object(b)), Value::Object(o)) => deep_merge(b, o),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Rewrites deprecated keys into their modern places (the deprecated key itself is dropped).
pub fn map_deprecated(opts: &Options) -> Options {
    let mut out = opts.clone();
    for (old, targets) in DEPRECATED {
        if let Some(value) = out.remove(*old) {
            for target in *targets {
                let (parent, child) = target.split_once('.').expect("dotted target");
                let entry = out
                    .entry(parent.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                entry
                    .as_object_mut()
                    .expect("object")
                    .insert(child.to_string(), value.clone());
            }
        }
    }
    out
}

/// Defaults, then each layer (deprecated keys mapped first), merged deeply in order.
pub fn merge_layers(layers: &[&Options]) -> Options {
    let mut merged = defaults();
    for layer in layers {
        deep_merge(&mut merged, &map_deprecated(layer));
    }
    merged
}

/// Keys of `opts` cleats does not know, each with the closest real option when one is near.
pub fn unknown_options(opts: &Options) -> Vec<(String, Option<&'static str>)> {
    let known = known_options();
    opts.keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| (k.clone(), closest_option(k)))
        .collect()
}

/// The known option closest to `key`: one contained in it (`worker_prefetch` -> `prefetch`),
/// else the nearest by edit distance when that is small.
pub fn closest_option(key: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    let known = known_options();
    if let Some(hit) = known
        .iter()
        .filter(|k| k.len() >= 4 && (key.contains(*k) || k.contains(key.as_str())))
        .max_by_key(|k| k.len())
    {
        return Some(hit);
    }
    known
        .iter()
        .map(|k| (edit_distance(&key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A copy of `opts` whose `amqp` URIs show `***` for the password (for `inspect`/`repr`).
pub fn redacted(opts: &Options) -> Options {
    let mut out = opts.clone();
    match out.get_mut("amqp") {
        Some(Value::String(s)) => *s = redact_uri_text(s),
        Some(Value::Array(list)) => {
            for item in list {
                if let Value::String(s) = item {
                    *s = redact_uri_text(s);
                }
            }
        }
        _ => {}
    }
    out
}

// ---- typed, validated settings -------------------------------------------------------------

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionConfig {
    /// Tried in order on every (re)connection.
    pub brokers: Vec<BrokerUri>,
    pub vhost: String,
    /// Seconds; 0 disables heartbeats.
    pub heartbeat: u16,
    /// Upper bound of the reconnection backoff.
    pub recovery_interval: Duration,
}

impl ConnectionConfig {
    pub fn from_options(opts: &Options) -> Result<Self> {
        let uris = string_list(opts, "amqp")?.ok_or_else(|| Error::option("amqp", "missing"))?;
        let brokers = BrokerUri::parse_list(&uris, "amqp")?;
        let vhost = match opts.get("vhost") {
            None | Some(Value::Null) => brokers[0].vhost.clone(),
            Some(Value::String(v)) if !v.is_empty() => v.clone(),
            Some(other) => {
                return Err(Error::option(
                    "vhost",
                    format!("expected a vhost name, got {other}"),
                ))
            }
        };
        let heartbeat = int(opts, "heartbeat", 0, u64::from(u16::MAX))? as u16;
        let recovery_interval = seconds(opts, "network_recovery_interval", 0.01)?;
        Ok(ConnectionConfig {
            brokers,
            vhost,
            heartbeat,
            recovery_interval,
        })
    }
}

/// An exchange to declare.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeConfig {
    /// `""` is the default exchange: never declared, never bound to.
    pub name: String,
    /// direct, topic, fanout, headers, or a plugin type (`x-...`).
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub arguments: Table,
}

impl ExchangeConfig {
    pub fn from_options(opts: &Options) -> Result<Self> {
        let name = string(opts, "exchange")?;
        let eo = object(opts, "exchange_options")?;
        let kind = match eo.get("type") {
            None | Some(Value::Null) => "direct".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(Error::option(
                    "exchange_options.type",
                    format!("expected a name, got {other}"),
                ))
            }
        };
        if !matches!(kind.as_str(), "direct" | "topic" | "fanout" | "headers")
            && !kind.starts_with("x-")
        {
            return Err(Error::option(
                "exchange_options.type",
                format!("unknown exchange type '{kind}' (expected direct, topic, fanout, headers or a plugin type x-...)"),
            ));
        }
        Ok(ExchangeConfig {
            name,
            kind,
            durable: flag(&eo, "durable", true, "exchange_options.durable")?,
            auto_delete: flag(&eo, "auto_delete", false, "exchange_options.auto_delete")?,
            arguments: table_from_json(
                eo.get("arguments").unwrap_or(&Value::Null),
                "exchange_options.arguments",
            )?,
        })
    }

    pub fn is_default(&self) -> bool {
        self.name.is_empty()
    }
}

/// A queue to declare.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    pub name: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub exclusive: bool,
    pub arguments: Table,
}

impl QueueConfig {
    fn from_options(name: &str, opts: &Options) -> Result<Self> {
        let qo = object(opts, "queue_options")?;
        Ok(QueueConfig {
            name: name.to_string(),
            durable: flag(&qo, "durable", true, "queue_options.durable")?,
            auto_delete: flag(&qo, "auto_delete", false, "queue_options.auto_delete")?,
            exclusive: flag(&qo, "exclusive", false, "queue_options.exclusive")?,
            arguments: table_from_json(
                qo.get("arguments").unwrap_or(&Value::Null),
                "queue_options.arguments",
            )?,
        })
    }
}

/// Settings of the Maxretry handler for one queue (see SNEAKERS_COMPAT.md).
#[derive(Debug, Clone, PartialEq)]
pub struct MaxretryConfig {
    pub retry_exchange: String,
    pub error_exchange: String,
    pub requeue_exchange: String,
    /// Milliseconds a failed message waits in the retry queue.
    pub retry_timeout_ms: u64,
    /// Attempts after the first one that may still be retried.
    pub max_retries: u64,
    pub retry_routing_key: String,
    /// Arguments of the retry and error queues.
    pub queue_arguments: Table,
    pub durable: bool,
}

/// Which handler settles a worker's messages.
#[derive(Debug, Clone, PartialEq)]
pub enum HandlerKind {
    Oneshot,
    Maxretry(MaxretryConfig),
    /// The host language supplies the handler object and settles through the worker's channel
    /// operations; the engine applies no policy of its own.
    Custom,
}

/// Everything the engine needs to run one worker (one queue), validated.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// The worker's name (its class name): used in metrics and logs.
    pub name: String,
    pub queue: QueueConfig,
    pub exchange: ExchangeConfig,
    pub routing_keys: Vec<String>,
    pub bind: bool,
    pub bind_arguments: Table,
    pub prefetch: u16,
    pub threads: usize,
    pub share_threads: bool,
    /// Manual acknowledgements; false means auto-ack on delivery.
    pub ack: bool,
    pub handler: HandlerKind,
    pub connection: ConnectionConfig,
}

impl WorkerConfig {
    /// Validates merged options (see [`merge_layers`]) for the worker `name` consuming `queue`.
    pub fn resolve(name: &str, queue: &str, opts: &Options) -> Result<Self> {
        if queue.is_empty() {
            return Err(Error::option(
                "queue",
                format!("worker {name} has no queue name"),
            ));
        }
        let connection = ConnectionConfig::from_options(opts)?;
        let exchange = ExchangeConfig::from_options(opts)?;
        let mut queue_cfg = QueueConfig::from_options(queue, opts)?;
        let routing_keys =
            string_list(opts, "routing_key")?.unwrap_or_else(|| vec![queue.to_string()]);
        let handler = match opts.get("handler") {
            None | Some(Value::Null) => "oneshot".to_string(),
            Some(Value::String(s)) => s.rsplit("::").next().unwrap_or(s).to_ascii_lowercase(),
            Some(other) => {
                return Err(Error::option(
                    "handler",
                    format!("expected a handler name, got {other}"),
                ))
            }
        };
        let handler = match handler.as_str() {
            "oneshot" => HandlerKind::Oneshot,
            "custom" => HandlerKind::Custom,
            "maxretry" => {
                let m = maxretry(queue, opts, &queue_cfg)?;
                // Maxretry's configure_queue: failed messages dead-letter to the retry exchange.
                queue_cfg.arguments.insert(
                    "x-dead-letter-exchange".into(),
                    FieldValue::Str(m.retry_exchange.clone()),
                );
                HandlerKind::Maxretry(m)
            }
            other => {
                return Err(Error::option(
                    "handler",
                    format!("unknown handler '{other}' (expected oneshot, maxretry or custom)"),
                ))
            }
        };
        let config = WorkerConfig {
            name: name.to_string(),
            queue: queue_cfg,
            exchange,
            routing_keys,
            bind: flag(opts, "bind", true, "bind")?,
            bind_arguments: table_from_json(
                opts.get("bind_arguments").unwrap_or(&Value::Null),
                "bind_arguments",
            )?,
            prefetch: int(opts, "prefetch", 1, u64::from(u16::MAX))? as u16,
            threads: int(opts, "threads", 1, 10_000)? as usize,
            share_threads: flag(opts, "share_threads", false, "share_threads")?,
            ack: flag(opts, "ack", true, "ack")?,
            handler,
            connection,
        };
        // The other numeric options are read by the runners; validate them here all the same.
        int(opts, "workers", 1, 10_000)?;
        int(opts, "amqp_heartbeat", 0, 1_000_000)?;
        seconds(opts, "start_worker_delay", 0.0)?;
        EngineConfig::from_options(opts)?;
        Ok(config)
    }
}

fn maxretry(queue: &str, opts: &Options, queue_cfg: &QueueConfig) -> Result<MaxretryConfig> {
    let name_or = |key: &str, suffix: &str| -> Result<String> {
        match opts.get(key) {
            None | Some(Value::Null) => Ok(format!("{queue}{suffix}")),
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(other) => Err(Error::option(
                key,
                format!("expected an exchange name, got {other}"),
            )),
        }
    };
    let queue_arguments = match opts.get("retry_queue_arguments") {
        None | Some(Value::Null) => {
            // Quorum (or stream...) queues: the retry and error queues take Q's type.
            let mut t = Table::new();
            if let Some(kind) = queue_cfg.arguments.get("x-queue-type") {
                t.insert("x-queue-type".into(), kind.clone());
            }
            t
        }
        Some(v) => table_from_json(v, "retry_queue_arguments")?,
    };
    Ok(MaxretryConfig {
        retry_exchange: name_or("retry_exchange", "-retry")?,
        error_exchange: name_or("retry_error_exchange", "-error")?,
        requeue_exchange: name_or("retry_requeue_exchange", "-retry-requeue")?,
        retry_timeout_ms: optional_int(opts, "retry_timeout", 0, u64::from(u32::MAX))?
            .unwrap_or(60_000),
        max_retries: optional_int(opts, "retry_max_times", 0, u64::from(u32::MAX))?.unwrap_or(5),
        retry_routing_key: match opts.get("retry_routing_key") {
            None | Some(Value::Null) => "#".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(Error::option(
                    "retry_routing_key",
                    format!("expected a string, got {other}"),
                ))
            }
        },
        queue_arguments,
        durable: queue_cfg.durable,
    })
}

/// Process-wide engine settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    pub connection: ConnectionConfig,
    /// How long a graceful stop waits for work in progress.
    pub stop_timeout: Duration,
}

impl EngineConfig {
    pub fn from_options(opts: &Options) -> Result<Self> {
        Ok(EngineConfig {
            connection: ConnectionConfig::from_options(opts)?,
            stop_timeout: seconds(opts, "stop_timeout", 0.0)?,
        })
    }
}

/// Publisher settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PublisherConfig {
    pub connection: ConnectionConfig,
    /// Where messages go unless a publish names another exchange.
    pub exchange: ExchangeConfig,
    pub confirms: bool,
    /// How long one publish may wait for the broker, recovery included.
    pub timeout: Duration,
}

impl PublisherConfig {
    pub fn from_options(opts: &Options) -> Result<Self> {
        Ok(PublisherConfig {
            connection: ConnectionConfig::from_options(opts)?,
            exchange: ExchangeConfig::from_options(opts)?,
            confirms: flag(opts, "publisher_confirms", true, "publisher_confirms")?,
            timeout: seconds(opts, "publish_timeout", 0.001)?,
        })
    }
}

// ---- readers: each error names the option --------------------------------------------------

fn redact_value(v: &Value) -> String {
    match v {
        Value::String(s) => redact_uri_text(s),
        other => other.to_string(),
    }
}

/// A string or a list of strings; `None` when absent.
fn string_list(opts: &Options, key: &str) -> Result<Option<Vec<String>>> {
    match opts.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(Error::option(key, format!("expected strings, got {other}"))),
            })
            .collect::<Result<_>>()
            .map(Some),
        Some(other) => Err(Error::option(
            key,
            format!(
                "expected a string or a list of strings, got {}",
                redact_value(other)
            ),
        )),
    }
}

fn optional_int(opts: &Options, key: &str, min: u64, max: u64) -> Result<Option<u64>> {
    match opts.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let n = v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| Error::option(key, format!("expected a whole number, got {v}")))?;
            if n < min || n > max {
                return Err(Error::option(
                    key,
                    format!("{n} is out of range (must be between {min} and {max})"),
                ));
            }
            Ok(Some(n))
        }
    }
}

fn int(opts: &Options, key: &str, min: u64, max: u64) -> Result<u64> {
    optional_int(opts, key, min, max)?.ok_or_else(|| Error::option(key, "missing"))
}

fn seconds(opts: &Options, key: &str, min: f64) -> Result<Duration> {
    let v = opts.get(key).ok_or_else(|| Error::option(key, "missing"))?;
    let s = v
        .as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        .ok_or_else(|| Error::option(key, format!("expected a number of seconds, got {v}")))?;
    if !s.is_finite() || s < min {
        return Err(Error::option(
            key,
            format!("{s} is out of range (must be at least {min} seconds)"),
        ));
    }
    Ok(Duration::from_secs_f64(s))
}

fn flag(opts: &Options, key: &str, default: bool, name: &str) -> Result<bool> {
    match opts.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(Error::option(
            name,
            format!("expected true or false, got {other}"),
        )),
    }
}

fn string(opts: &Options, key: &str) -> Result<String> {
    match opts.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(Error::option(key, format!("expected a name, got {other}"))),
    }
}

fn object(opts: &Options, key: &str) -> Result<Options> {
    match opts.get(key) {
        None | Some(Value::Null) => Ok(Options::new()),
        Some(Value::Object(o)) => Ok(o.clone()),
        Some(other) => Err(Error::option(
            key,
            format!("expected a table of options, got {other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Options {
        v.as_object().unwrap().clone()
    }

    fn resolve(layer: Value) -> Result<WorkerConfig> {
        let layer = obj(layer);
        WorkerConfig::resolve("W", "q", &merge_layers(&[&layer]))
    }

    #[test]
    fn defaults_match_sneakers() {
        let d = defaults();
        assert_eq!(d["prefetch"], 10);
        assert_eq!(d["threads"], 10);
        assert_eq!(d["workers"], 4);
        assert_eq!(d["heartbeat"], 30);
        assert_eq!(d["exchange"], "sneakers");
        assert_eq!(d["exchange_options"]["type"], "direct");
        assert_eq!(d["queue_options"]["durable"], true);
        assert_eq!(d["start_worker_delay"], 0.2);
        assert_eq!(d["pid_path"], "sneakers.pid");
        let w = WorkerConfig::resolve("W", "q", &merge_layers(&[])).unwrap();
        assert_eq!(w.routing_keys, ["q"]);
        assert!(w.ack && w.bind);
        assert_eq!(w.handler, HandlerKind::Oneshot);
    }

    #[test]
    fn layers_merge_deeply_in_order() {
        let global =
            obj(json!({"prefetch": 50, "queue_options": {"arguments": {"x-max-priority": 10}}}));
        let worker = obj(json!({"prefetch": 5, "queue_options": {"durable": false}}));
        let m = merge_layers(&[&global, &worker]);
        assert_eq!(m["prefetch"], 5);
        assert_eq!(m["queue_options"]["durable"], false);
        assert_eq!(m["queue_options"]["exclusive"], false);
        assert_eq!(m["queue_options"]["arguments"]["x-max-priority"], 10);
    }

    #[test]
    fn deprecated_keys_map() {
        let m = merge_layers(&[&obj(json!({
            "exchange_type": "topic", "exchange_arguments": {"a": 1},
            "durable": false, "arguments": {"x-queue-type": "quorum"}
        }))]);
        assert_eq!(m["exchange_options"]["type"], "topic");
        assert_eq!(m["exchange_options"]["arguments"]["a"], 1);
        assert_eq!(m["exchange_options"]["durable"], false);
        assert_eq!(m["queue_options"]["durable"], false);
        assert_eq!(m["queue_options"]["arguments"]["x-queue-type"], "quorum");
        assert!(!m.contains_key("durable"));
    }

    #[test]
    fn bad_values_name_the_option() {
        let cases = [
            (json!({"prefetch": 0}), "`prefetch`"),
            (json!({"threads": 0}), "`threads`"),
            (json!({"prefetch": "many"}), "`prefetch`"),
            (json!({"amqp": "amqp://u:pw@:5672"}), "`amqp`"),
            (json!({"amqp": "redis://localhost"}), "`amqp`"),
            (
                json!({"exchange_options": {"type": "directt"}}),
                "`exchange_options.type`",
            ),
            (json!({"handler": "Sneakers::Handlers::Nope"}), "`handler`"),
            (json!({"heartbeat": -1}), "`heartbeat`"),
            (json!({"ack": "yes"}), "`ack`"),
            (json!({"routing_key": 5}), "`routing_key`"),
            (
                json!({"queue_options": {"arguments": [1]}}),
                "`queue_options.arguments`",
            ),
            (json!({"stop_timeout": -2}), "`stop_timeout`"),
            (json!({"workers": 0}), "`workers`"),
        ];
        for (layer, name) in cases {
            let err = resolve(layer.clone()).unwrap_err().to_string();
            assert!(err.contains(name), "{layer} -> {err}");
        }
    }

    #[test]
    fn vhost_comes_from_uri_unless_given() {
        assert_eq!(
            resolve(json!({"amqp": "amqp://h/v%2F1"}))
                .unwrap()
                .connection
                .vhost,
            "v/1"
        );
        assert_eq!(
            resolve(json!({"amqp": "amqp://h/v", "vhost": "other"}))
                .unwrap()
                .connection
                .vhost,
            "other"
        );
        assert_eq!(
            resolve(json!({"amqp": "amqp://h"}))
                .unwrap()
                .connection
                .vhost,
            "/"
        );
    }

    #[test]
    fn maxretry_topology_names_and_quorum_inheritance() {
        let w = resolve(json!({"handler": "Sneakers::Handlers::Maxretry",
            "queue_options": {"arguments": {"x-queue-type": "quorum"}}, "retry_timeout": 100}))
        .unwrap();
        let HandlerKind::Maxretry(m) = &w.handler else {
            panic!()
        };
        assert_eq!(m.retry_exchange, "q-retry");
        assert_eq!(m.error_exchange, "q-error");
        assert_eq!(m.requeue_exchange, "q-retry-requeue");
        assert_eq!(m.retry_timeout_ms, 100);
        assert_eq!(m.max_retries, 5);
        assert_eq!(
            m.queue_arguments["x-queue-type"],
            FieldValue::Str("quorum".into())
        );
        assert_eq!(
            w.queue.arguments["x-dead-letter-exchange"],
            FieldValue::Str("q-retry".into())
        );
    }

    #[test]
    fn unknown_keys_suggest_the_real_one() {
        assert_eq!(closest_option("worker_prefetch"), Some("prefetch"));
        assert_eq!(closest_option("treads"), Some("threads"));
        assert_eq!(closest_option("zzzzzzzzzz"), None);
        let u = unknown_options(&obj(json!({"prefetch": 1, "worker_prefetch": 2})));
        assert_eq!(u, vec![("worker_prefetch".to_string(), Some("prefetch"))]);
    }

    #[test]
    fn inspect_redacts_passwords() {
        let r = redacted(&obj(json!({"amqp": "amqp://u:secret@h"})));
        assert_eq!(r["amqp"], "amqp://u:***@h");
    }
}
