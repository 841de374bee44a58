//! Sneakers::Handlers::Maxretry: failed messages wait `retry_timeout` in `Q-retry` (dead-lettered
//! there by Q's `x-dead-letter-exchange`), come back through `Q-retry-requeue`, and after
//! `retry_max_times` retries go to `Q-error` with a `retry_info` header.

use crate::config::{ExchangeConfig, MaxretryConfig, QueueConfig};
use crate::delivery::{Delivery, Properties};
use crate::fields::{table_to_json, FieldValue, Table};
use crate::settle::{Action, ErrorInfo, Outcome, Republish};
use crate::topology::Declaration;
use serde_json::{json, Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) fn action(config: &MaxretryConfig, delivery: &Delivery, outcome: &Outcome) -> Action {
    let tag = delivery.info.delivery_tag;
    let reason = match outcome {
        Outcome::Ack => {
            return Action::Ack {
                tag,
                multiple: false,
            }
        }
        Outcome::Requeue => return Action::Reject { tag, requeue: true },
        Outcome::Noop => return Action::Noop { tag },
        Outcome::Reject => Reason::Reject,
        Outcome::Error(e) => Reason::Error(e),
    };
    let queue = &delivery.worker().config().queue.name;
    let headers = delivery.headers();
    let attempts = failure_count(&headers, queue) + 1;
    if attempts <= config.max_retries {
        // Dead-lettered to the retry exchange; back after the TTL.
        return Action::Reject {
            tag,
            requeue: false,
        };
    }
    let info = retry_info(&reason, attempts, &delivery.properties);
    let mut headers = Table::new();
    headers.insert("retry_info".into(), FieldValue::Str(info.to_string()));
    Action::RepublishThenAck {
        tag,
        republish: Box::new(Republish {
            exchange: config.error_exchange.clone(),
            routing_key: delivery.info.routing_key.clone(),
            body: delivery.body.clone(),
            // The original's properties, but never its per-message TTL: the copy in the error
            // queue must stay until someone looks at it.
            properties: Properties {
                headers: Some(headers),
                expiration: None,
                ..delivery.properties.clone()
            },
        }),
    }
}

enum Reason<'a> {
    Reject,
    Error(&'a ErrorInfo),
}

/// Failures so far: the sum of `count` over the `x-death` entries of `queue` (older brokers
/// add one entry per death, without `count`).
pub fn failure_count(headers: &Table, queue: &str) -> u64 {
    let Some(deaths) = headers.get("x-death").and_then(FieldValue::as_array) else {
        return 0;
    };
    let ours: Vec<&Table> = deaths
        .iter()
        .filter_map(FieldValue::as_table)
        .filter(|d| d.get("queue").and_then(FieldValue::as_str) == Some(queue))
        .collect();
    if ours.first().is_some_and(|d| d.contains_key("count")) {
        ours.iter()
            .map(|d| {
                d.get("count")
                    .and_then(FieldValue::as_int)
                    .unwrap_or(0)
                    .max(0) as u64
            })
            .sum()
    } else {
        ours.len() as u64
    }
}

/// The `retry_info` JSON: this failure first, earlier `retry_info` entries kept after it.
fn retry_info(reason: &Reason, attempts: u64, properties: &Properties) -> Value {
    let mut props = properties_json(properties);
    let previous = properties
        .headers
        .as_ref()
        .and_then(|h| h.get("retry_info"))
        .map(|v| match v.as_str().map(serde_json::from_str::<Value>) {
            Some(Ok(Value::Array(list))) => list,
            Some(Ok(one @ Value::Object(_))) => vec![one],
            _ => vec![json!({"error": "Failed to parse retry info"})],
        });
    if previous.is_some() {
        if let Some(Value::Object(h)) = props.get_mut("headers") {
            h.remove("retry_info"); // earlier entries are kept in the list, not nested
        }
    }
    let mut data = Map::new();
    data.insert(
        "error".into(),
        Value::String(match reason {
            Reason::Reject => "reject".into(),
            Reason::Error(e) => e.message.clone(),
        }),
    );
    data.insert("num_attempts".into(), json!(attempts));
    data.insert("failed_at".into(), Value::String(iso8601_now()));
    data.insert("properties".into(), Value::Object(props));
    if let Reason::Error(e) = reason {
        data.insert("error_class".into(), Value::String(e.class.clone()));
        data.insert("error_message".into(), Value::String(e.message.clone()));
        if !e.backtrace.is_empty() {
            data.insert(
                "backtrace".into(),
                json!(e.backtrace.iter().take(10).collect::<Vec<_>>()),
            );
        }
    }
    match previous {
        None => Value::Object(data),
        Some(mut list) => {
            list.insert(0, Value::Object(data));
            Value::Array(list)
        }
    }
}

/// Bunny's `properties.to_hash`: only the properties that are set.
fn properties_json(p: &Properties) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    };
    put("content_type", p.content_type.clone().map(Value::String));
    put(
        "content_encoding",
        p.content_encoding.clone().map(Value::String),
    );
    put("headers", p.headers.as_ref().map(table_to_json));
    put("delivery_mode", p.delivery_mode.map(|v| json!(v)));
    put("priority", p.priority.map(|v| json!(v)));
    put(
        "correlation_id",
        p.correlation_id.clone().map(Value::String),
    );
    put("reply_to", p.reply_to.clone().map(Value::String));
    put("expiration", p.expiration.clone().map(Value::String));
    put("message_id", p.message_id.clone().map(Value::String));
    put("timestamp", p.timestamp.map(|v| json!(v)));
    put("type", p.kind.clone().map(Value::String));
    put("user_id", p.user_id.clone().map(Value::String));
    put("app_id", p.app_id.clone().map(Value::String));
    m
}

/// `Time.now.utc.iso8601`, e.g. `2026-11-21T08:10:00Z`.
fn iso8601_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    iso8601(secs)
}

fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The retry and error exchanges and queues, and Q's binding to the requeue exchange.
pub(crate) fn topology(config: &MaxretryConfig, queue: &str) -> Vec<Declaration> {
    let exchange = |name: &str| {
        Declaration::Exchange(ExchangeConfig {
            name: name.to_string(),
            kind: "topic".into(),
            durable: config.durable,
            auto_delete: false,
            arguments: Table::new(),
        })
    };
    let queue_with = |name: &str, extra: Table| {
        let mut arguments = config.queue_arguments.clone();
        arguments.extend(extra);
        Declaration::Queue(QueueConfig {
            name: name.to_string(),
            durable: config.durable,
            auto_delete: false,
            exclusive: false,
            arguments,
        })
    };
    let bind = |queue: &str, exchange: &str, key: &str| Declaration::Bind {
        queue: queue.to_string(),
        exchange: exchange.to_string(),
        routing_key: key.to_string(),
        arguments: Table::new(),
    };
    let mut retry_args = Table::new();
    retry_args.insert(
        "x-dead-letter-exchange".into(),
        FieldValue::Str(config.requeue_exchange.clone()),
    );
    retry_args.insert(
        "x-message-ttl".into(),
        FieldValue::Int(config.retry_timeout_ms as i64),
    );
    vec![
        exchange(&config.retry_exchange),
        exchange(&config.error_exchange),
        exchange(&config.requeue_exchange),
        queue_with(&config.retry_exchange, retry_args),
        bind(&config.retry_exchange, &config.retry_exchange, "#"),
        queue_with(&config.error_exchange, Table::new()),
        bind(&config.error_exchange, &config.error_exchange, "#"),
        bind(queue, &config.requeue_exchange, &config.retry_routing_key),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn death(queue: &str, count: Option<i64>) -> FieldValue {
        let mut t = Table::new();
        t.insert("queue".into(), FieldValue::Str(queue.into()));
        if let Some(c) = count {
            t.insert("count".into(), FieldValue::Int(c));
        }
        FieldValue::Table(t)
    }

    #[test]
    fn counts_only_deaths_of_this_queue() {
        let mut h = Table::new();
        assert_eq!(failure_count(&h, "q"), 0);
        h.insert(
            "x-death".into(),
            FieldValue::Array(vec![
                death("q", Some(2)),
                death("q-retry", Some(2)),
                death("q", Some(1)),
            ]),
        );
        assert_eq!(failure_count(&h, "q"), 3);
        h.insert(
            "x-death".into(),
            FieldValue::Array(vec![death("q", None), death("q", None)]),
        );
        assert_eq!(failure_count(&h, "q"), 2);
    }

    #[test]
    fn retry_info_keeps_history_without_nesting() {
        let e = ErrorInfo {
            class: "RuntimeError".into(),
            message: "boom".into(),
            backtrace: (0..20).map(|i| format!("line {i}")).collect(),
        };
        let first = retry_info(&Reason::Error(&e), 6, &Properties::default());
        assert_eq!(first["error"], "boom");
        assert_eq!(first["error_class"], "RuntimeError");
        assert_eq!(first["num_attempts"], 6);
        assert_eq!(first["backtrace"].as_array().unwrap().len(), 10);
        let mut headers = Table::new();
        headers.insert("retry_info".into(), FieldValue::Str(first.to_string()));
        let props = Properties {
            headers: Some(headers),
            ..Default::default()
        };
        let second = retry_info(&Reason::Reject, 7, &props);
        let list = second.as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["error"], "reject");
        assert!(list[0]["properties"]["headers"].get("retry_info").is_none());
        assert_eq!(list[1]["error"], "boom");
    }

    #[test]
    fn formats_utc_times() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_795_246_200), "2026-11-21T07:30:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }
}
