//! Opening a connection: each broker of the list in turn (cluster failover), with the
//! negotiated heartbeat, and a watcher that logs `connection.blocked` and reports failures.

use crate::config::ConnectionConfig;
use crate::error::{Error, Result};
use crate::transport::{DirectKit, Wire};
use futures_util::StreamExt;
use lapin::types::LongString;
use lapin::{Connection, ConnectionProperties, Event};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Connects to the first broker that answers. Returns the connection and the broker's
/// redacted URI. With a `wire`, lapin's I/O thread waits on the socket itself while data
/// flows, and on plain TCP the settlers write their frames to it themselves (transport.rs).
pub(crate) async fn connect(
    config: &ConnectionConfig,
    name: &str,
    wire: Option<&Arc<Wire>>,
) -> Result<(Connection, String)> {
    let mut last = None;
    for broker in &config.brokers {
        let shown = broker.redacted();
        let uri = broker.to_lapin(&config.vhost, config.heartbeat);
        let timeout = Duration::from_millis(broker.connection_timeout_ms.unwrap_or(10_000) + 1_000);
        let open = async {
            match wire {
                Some(wire) => {
                    let kit = DirectKit::current(wire.clone(), !broker.tls);
                    let runtime = async_rs::Runtime::new(kit);
                    Connection::connect_uri_with_runtime(uri, properties(name), runtime).await
                }
                None => Connection::connect_uri(uri, properties(name)).await,
            }
        };
        match tokio::time::timeout(timeout, open).await {
            Ok(Ok(conn)) => return Ok((conn, shown)),
            Ok(Err(e)) => {
                let err = Error::from_lapin(&shown, &e);
                if config.brokers.len() > 1 {
                    log::warn!("{err}; trying the next broker");
                }
                last = Some(err);
            }
            Err(_) => {
                last = Some(Error::ConnectionFailed {
                    broker: shown,
                    message: format!("no answer within {}s", timeout.as_secs()),
                })
            }
        }
    }
    Err(last.expect("the broker list is never empty"))
}

fn properties(name: &str) -> ConnectionProperties {
    ConnectionProperties::default()
        .with_connection_name(LongString::from(name.as_bytes()))
        .with_client_property("product".into(), LongString::from("cleats".as_bytes()))
        .with_client_property(
            "version".into(),
            LongString::from(env!("CARGO_PKG_VERSION").as_bytes()),
        )
}

/// Logs blocked/unblocked and sends connection errors to `lost` (when given).
pub(crate) fn watch_events(
    conn: &Connection,
    label: String,
    lost: Option<mpsc::UnboundedSender<String>>,
) {
    let mut events = conn.events_listener();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Event::ConnectionBlocked(reason) => {
                    log::warn!("{label}: the broker blocked the connection: {reason} (publishing pauses until it unblocks)")
                }
                Event::ConnectionUnblocked => {
                    log::info!("{label}: the broker unblocked the connection")
                }
                Event::Error(e) => {
                    if let Some(lost) = &lost {
                        let _ = lost.send(format!("connection error: {e}"));
                    }
                    return;
                }
                _ => {}
            }
        }
    });
}

/// Capped exponential backoff: 100 ms, 200 ms, 400 ms... up to `cap`.
pub(crate) fn backoff(attempt: u32, cap: Duration) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(16))).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped() {
        let cap = Duration::from_secs(5);
        assert_eq!(backoff(0, cap), Duration::from_millis(100));
        assert_eq!(backoff(3, cap), Duration::from_millis(800));
        assert_eq!(backoff(30, cap), cap);
    }
}
