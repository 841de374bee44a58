//! The publisher: thread-safe, one connection and channel shared by every caller, connected on
//! first use, publisher confirms on by default. Concurrent publishes share the channel, so their
//! confirms arrive in batches; a publish during connection loss waits for a new connection
//! (within `publish_timeout`) and is sent again, so delivery is at least once.

use crate::config::{merge_layers, Options, PublisherConfig};
use crate::connection::{backoff, connect, watch_events};
use crate::delivery::Properties;
use crate::error::{Error, Result};
use crate::fields::{FieldValue, Table};
use crate::runtime::{self, Pending, ProcessGuard};
use crate::topology::{self, Declaration};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation, Connection};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// One message to publish.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    /// `None`: the publisher's configured exchange.
    pub exchange: Option<String>,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub properties: Properties,
    /// Ask the broker to return the message when no queue is bound for it
    /// (reported as [`Error::Unroutable`]).
    pub mandatory: bool,
}

impl Message {
    pub fn new(routing_key: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Message {
            routing_key: routing_key.into(),
            body: body.into(),
            ..Default::default()
        }
    }

    /// Builds a message from Sneakers/Bunny publish options: `to_queue` or `routing_key`,
    /// `exchange`, `headers`, `persistent`/`persistence`, `expiration`, `priority`,
    /// `correlation_id`, `reply_to`, `message_id`, `type`, `app_id`, `user_id`, `timestamp`,
    /// `content_type`, `content_encoding`, `mandatory`.
    pub fn from_options(body: impl Into<Vec<u8>>, opts: &Options) -> Result<Self> {
        let text = |key: &str| -> Result<Option<String>> {
            match opts.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Number(n)) if key == "expiration" => Ok(Some(n.to_string())),
                Some(other) => Err(Error::option(
                    key,
                    format!("expected a string, got {other}"),
                )),
            }
        };
        let routing_key = text("to_queue")?
            .or(text("routing_key")?)
            .unwrap_or_default();
        let persistent = match opts.get("persistent").or(opts.get("persistence")) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                return Err(Error::option(
                    "persistent",
                    format!("expected true or false, got {other}"),
                ))
            }
        };
        let small = |key: &str| -> Result<Option<u8>> {
            match opts.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| u8::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| {
                        Error::option(key, format!("expected a number from 0 to 255, got {v}"))
                    }),
            }
        };
        let headers = match opts.get("headers") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => match FieldValue::from_json(v) {
                FieldValue::Table(t) => Some(t),
                _ => None,
            },
            Some(other) => {
                return Err(Error::option(
                    "headers",
                    format!("expected a table, got {other}"),
                ))
            }
        };
        let timestamp = match opts.get("timestamp") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                Error::option(
                    "timestamp",
                    format!("expected seconds since the epoch, got {v}"),
                )
            })?),
        };
        let mandatory = matches!(opts.get("mandatory"), Some(Value::Bool(true)));
        Ok(Message {
            exchange: text("exchange")?,
            routing_key,
            body: body.into(),
            mandatory,
            properties: Properties {
                content_type: text("content_type")?,
                content_encoding: text("content_encoding")?,
                headers,
                delivery_mode: persistent
                    .map(|p| if p { 2 } else { 1 })
                    .or(small("delivery_mode")?),
                priority: small("priority")?,
                correlation_id: text("correlation_id")?,
                reply_to: text("reply_to")?,
                expiration: text("expiration")?,
                message_id: text("message_id")?,
                timestamp,
                kind: text("type")?,
                user_id: text("user_id")?,
                app_id: text("app_id")?,
                cluster_id: None,
            },
        })
    }

    /// Adds one header.
    pub fn with_header(mut self, key: impl Into<String>, value: FieldValue) -> Self {
        self.properties
            .headers
            .get_or_insert_with(Table::new)
            .insert(key.into(), value);
        self
    }
}

/// A shareable publisher (clones share the connection).
#[derive(Debug, Clone)]
pub struct Publisher {
    inner: Arc<PublisherInner>,
}

#[derive(Debug)]
struct PublisherInner {
    guard: ProcessGuard,
    config: PublisherConfig,
    link: Mutex<Option<Link>>,
    /// One mandatory message in flight at a time: `basic.return` carries no delivery tag, so a
    /// return can only be matched to its message when nothing else is pending on its channel.
    mandatory_turn: Mutex<()>,
}

#[derive(Debug, Clone)]
struct Link {
    connection: Arc<Connection>,
    channel: Channel,
    /// For `mandatory` messages only (see `mandatory_turn`).
    mandatory: Channel,
}

enum Failure {
    /// The message itself was refused: do not send it again.
    Final(Error),
    /// The connection or channel failed: reconnect and send again.
    Retry(Error),
}

impl Publisher {
    /// A publisher for the global options layer (the `configure` hash, plus publisher options).
    pub fn new(options: &Options) -> Result<Self> {
        Ok(Self::with_config(PublisherConfig::from_options(
            &merge_layers(&[options]),
        )?))
    }

    pub fn with_config(config: PublisherConfig) -> Self {
        Publisher {
            inner: Arc::new(PublisherInner {
                guard: ProcessGuard::new(),
                config,
                link: Mutex::new(None),
                mandatory_turn: Mutex::new(()),
            }),
        }
    }

    pub fn config(&self) -> &PublisherConfig {
        &self.inner.config
    }

    /// Publishes and waits for the broker's confirm (when confirms are on).
    pub fn publish(&self, message: &Message) -> Result<()> {
        self.inner.guard.check()?;
        runtime::block_on(self.publish_async(message))
    }

    /// [`Publisher::publish`] as a [`Pending`] operation, for hosts that must stay
    /// interruptible while the broker is slow or away.
    pub fn begin_publish(&self, message: Message) -> Result<Pending<()>> {
        self.inner.guard.check()?;
        let publisher = self.clone();
        Ok(Pending::spawn(async move {
            publisher.publish_async(&message).await
        }))
    }

    /// Publishes every message without waiting in between, then waits for all confirms.
    /// Returns the first error, after every message was attempted.
    pub fn publish_all(&self, messages: &[Message]) -> Result<()> {
        self.inner.guard.check()?;
        runtime::block_on(self.publish_all_async(messages))
    }

    /// [`Publisher::publish_all`] as a [`Pending`] operation (a host's batch publish).
    pub fn begin_publish_all(&self, messages: Vec<Message>) -> Result<Pending<()>> {
        self.inner.guard.check()?;
        let publisher = self.clone();
        Ok(Pending::spawn(async move {
            publisher.publish_all_async(&messages).await
        }))
    }

    async fn publish_all_async(&self, messages: &[Message]) -> Result<()> {
        let results =
            futures_util::future::join_all(messages.iter().map(|m| self.publish_async(m))).await;
        results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
    }

    /// The async form of [`Publisher::publish`], for callers on the engine's runtime.
    pub async fn publish_async(&self, message: &Message) -> Result<()> {
        let timeout = self.inner.config.timeout;
        let deadline = Instant::now() + timeout;
        let mut attempt = 0;
        loop {
            let error = match self.link().await {
                Ok(link) => {
                    let sent = if message.mandatory {
                        let _turn = self.inner.mandatory_turn.lock().await;
                        self.try_publish(&link.mandatory, message).await
                    } else {
                        self.try_publish(&link.channel, message).await
                    };
                    match sent {
                        Ok(()) => return Ok(()),
                        Err(Failure::Final(e)) => return Err(e),
                        Err(Failure::Retry(e)) => {
                            self.forget(&link).await;
                            e
                        }
                    }
                }
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Retry(e)) => e,
            };
            let delay = backoff(attempt, self.inner.config.connection.recovery_interval);
            attempt += 1;
            if Instant::now() + delay > deadline {
                return Err(Error::Timeout {
                    operation: format!(
                        "publishing to exchange '{}' with routing key '{}' (last error: {error})",
                        self.exchange_of(message),
                        message.routing_key
                    ),
                    seconds: timeout.as_secs_f64(),
                });
            }
            log::warn!(
                "publish failed ({error}); retrying in {:.1}s",
                delay.as_secs_f64()
            );
            tokio::time::sleep(delay).await;
        }
    }

    fn exchange_of<'a>(&'a self, message: &'a Message) -> &'a str {
        message
            .exchange
            .as_deref()
            .unwrap_or(&self.inner.config.exchange.name)
    }

    async fn try_publish(&self, channel: &Channel, message: &Message) -> Result<(), Failure> {
        let exchange = self.exchange_of(message);
        let classify = |e: lapin::Error| {
            if e.is_amqp_soft_error() {
                // The broker closed the channel because of this message (e.g. no such
                // exchange): sending it again would fail the same way.
                Failure::Final(Error::Channel {
                    message: e.to_string(),
                })
            } else {
                Failure::Retry(Error::Channel {
                    message: e.to_string(),
                })
            }
        };
        let confirm = channel
            .basic_publish(
                exchange.into(),
                message.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: message.mandatory,
                    immediate: false,
                },
                &message.body,
                message.properties.to_lapin(),
            )
            .await
            .map_err(classify)?
            .await
            .map_err(classify)?;
        match confirm {
            Confirmation::Ack(Some(returned)) => Err(Failure::Final(Error::Unroutable {
                exchange: returned.delivery.exchange.as_str().to_string(),
                routing_key: returned.delivery.routing_key.as_str().to_string(),
                reply_code: returned.reply_code,
                reply_text: returned.reply_text.as_str().to_string(),
            })),
            Confirmation::Nack(_) => Err(Failure::Final(Error::PublishNacked {
                exchange: exchange.to_string(),
                routing_key: message.routing_key.clone(),
            })),
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        }
    }

    async fn link(&self) -> Result<Link, Failure> {
        let mut slot = self.inner.link.lock().await;
        if let Some(link) = slot.as_ref() {
            if link.channel.status().connected() && link.mandatory.status().connected() {
                return Ok(link.clone());
            }
        }
        let config = &self.inner.config;
        let name = format!("cleats publisher (pid {})", std::process::id());
        let (connection, broker) = connect(&config.connection, &name, None)
            .await
            .map_err(|e| match e {
                Error::AuthenticationFailed { .. } => Failure::Final(e),
                e => Failure::Retry(e),
            })?;
        watch_events(
            &connection,
            format!("publisher connection to {broker}"),
            None,
        );
        let connection = Arc::new(connection);
        let opened = async {
            let channel = connection.create_channel().await?;
            let mandatory = connection.create_channel().await?;
            if config.confirms {
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                mandatory
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
            }
            if !config.exchange.is_default() {
                let exchange = Declaration::Exchange(config.exchange.clone());
                topology::declare(&channel, &exchange).await?;
            }
            Ok::<_, lapin::Error>((channel, mandatory))
        };
        match opened.await {
            Ok((channel, mandatory)) => {
                let link = Link {
                    connection,
                    channel,
                    mandatory,
                };
                *slot = Some(link.clone());
                Ok(link)
            }
            Err(e) => {
                close_in_background(connection);
                let error = Error::Channel {
                    message: format!(
                        "opening the publisher's channel on {broker} (exchange '{}'): {e}",
                        config.exchange.name
                    ),
                };
                // A declaration the broker refuses (e.g. the exchange exists with another
                // type) fails the same way every time: report it now.
                Err(if e.is_amqp_soft_error() {
                    Failure::Final(error)
                } else {
                    Failure::Retry(error)
                })
            }
        }
    }

    /// Drops a failed link (unless another caller already replaced it).
    async fn forget(&self, failed: &Link) {
        let mut slot = self.inner.link.lock().await;
        if slot
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(&l.connection, &failed.connection))
        {
            if let Some(old) = slot.take() {
                close_in_background(old.connection);
            }
        }
    }

    /// Closes the connection (a later publish opens a new one).
    pub fn close(&self) -> Result<()> {
        self.inner.guard.check()?;
        runtime::block_on(async {
            if let Some(link) = self.inner.link.lock().await.take() {
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    link.connection.close(200, "cleats: closing".into()),
                )
                .await;
            }
        });
        Ok(())
    }
}

fn close_in_background(connection: Arc<Connection>) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            connection.close(200, "cleats: reconnecting".into()),
        )
        .await;
    });
}

impl Drop for PublisherInner {
    fn drop(&mut self) {
        if !self.guard.same_process() {
            // The parent's connection: leave it alone.
            std::mem::forget(std::mem::take(self.link.get_mut()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_become_properties() {
        let opts = json!({"to_queue": "emails", "persistence": true, "headers": {"a": {"b": [1, 2]}},
            "priority": 5, "type": "welcome", "expiration": 60000, "mandatory": true});
        let m = Message::from_options(b"{}".to_vec(), opts.as_object().unwrap()).unwrap();
        assert_eq!(m.routing_key, "emails");
        assert_eq!(m.properties.delivery_mode, Some(2));
        assert_eq!(m.properties.priority, Some(5));
        assert_eq!(m.properties.kind.as_deref(), Some("welcome"));
        assert_eq!(m.properties.expiration.as_deref(), Some("60000"));
        assert!(m.mandatory);
        let h = m.properties.headers.unwrap();
        assert!(matches!(h["a"], FieldValue::Table(_)));
        let bad = Message::from_options(vec![], json!({"priority": 300}).as_object().unwrap());
        assert!(bad.unwrap_err().to_string().contains("`priority`"));
    }
}
