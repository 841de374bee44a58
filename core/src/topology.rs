//! Declaring exchanges, queues and bindings: a worker's own, its handler's, and any a custom
//! handler asked for. Everything is declared again on every (re)connection.

use crate::config::{ExchangeConfig, HandlerKind, QueueConfig, WorkerConfig};
use crate::fields::{table_to_amqp, Table};
use crate::handlers::maxretry;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::{Channel, ExchangeKind};

/// One thing to declare.
#[derive(Debug, Clone, PartialEq)]
pub enum Declaration {
    Exchange(ExchangeConfig),
    Queue(QueueConfig),
    Bind {
        queue: String,
        exchange: String,
        routing_key: String,
        arguments: Table,
    },
}

/// A worker's topology, in declaration order: its exchange, the handler's topology, its queue
/// and its bindings. The default exchange (`""`) is neither declared nor bound to.
pub(crate) fn for_worker(config: &WorkerConfig) -> Vec<Declaration> {
    let mut out = Vec::new();
    let exchange = &config.exchange;
    if !exchange.is_default() {
        out.push(Declaration::Exchange(exchange.clone()));
    }
    if let HandlerKind::Maxretry(m) = &config.handler {
        // The requeue exchange must exist before Q is bound to it, but Q must exist first too:
        // declare Q, then the handler's topology (which ends with Q's binding).
        out.push(Declaration::Queue(config.queue.clone()));
        out.extend(maxretry::topology(m, &config.queue.name));
    } else {
        out.push(Declaration::Queue(config.queue.clone()));
    }
    if config.bind && !exchange.is_default() {
        for key in &config.routing_keys {
            out.push(Declaration::Bind {
                queue: config.queue.name.clone(),
                exchange: exchange.name.clone(),
                routing_key: key.clone(),
                arguments: config.bind_arguments.clone(),
            });
        }
    }
    out
}

pub(crate) fn exchange_kind(kind: &str) -> ExchangeKind {
    match kind {
        "direct" => ExchangeKind::Direct,
        "topic" => ExchangeKind::Topic,
        "fanout" => ExchangeKind::Fanout,
        "headers" => ExchangeKind::Headers,
        other => ExchangeKind::Custom(other.to_string()),
    }
}

pub(crate) async fn declare(channel: &Channel, item: &Declaration) -> lapin::Result<()> {
    match item {
        Declaration::Exchange(e) => {
            channel
                .exchange_declare(
                    e.name.as_str().into(),
                    exchange_kind(&e.kind),
                    ExchangeDeclareOptions {
                        durable: e.durable,
                        auto_delete: e.auto_delete,
                        ..Default::default()
                    },
                    table_to_amqp(&e.arguments),
                )
                .await
        }
        Declaration::Queue(q) => channel
            .queue_declare(
                q.name.as_str().into(),
                QueueDeclareOptions {
                    durable: q.durable,
                    auto_delete: q.auto_delete,
                    exclusive: q.exclusive,
                    ..Default::default()
                },
                table_to_amqp(&q.arguments),
            )
            .await
            .map(|_| ()),
        Declaration::Bind {
            queue,
            exchange,
            routing_key,
            arguments,
        } => {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    table_to_amqp(arguments),
                )
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::merge_layers;
    use serde_json::json;

    fn worker(layer: serde_json::Value) -> WorkerConfig {
        let layer = layer.as_object().unwrap().clone();
        WorkerConfig::resolve("W", "q", &merge_layers(&[&layer])).unwrap()
    }

    #[test]
    fn binds_each_routing_key() {
        let d = for_worker(&worker(
            json!({"routing_key": ["a", "b"], "exchange": "ex"}),
        ));
        let keys: Vec<_> = d
            .iter()
            .filter_map(|d| match d {
                Declaration::Bind { routing_key, .. } => Some(routing_key.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(keys, ["a", "b"]);
    }

    #[test]
    fn default_exchange_and_bind_false_mean_no_binding() {
        for layer in [json!({"exchange": ""}), json!({"bind": false})] {
            let d = for_worker(&worker(layer));
            assert!(!d.iter().any(|d| matches!(d, Declaration::Bind { .. })));
        }
        assert!(!for_worker(&worker(json!({"exchange": ""})))
            .iter()
            .any(|d| matches!(d, Declaration::Exchange(_))));
    }
}
