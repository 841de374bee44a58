//! cleats-core: the engine behind cleats' Ruby and Python workers.
//!
//! It owns everything that is the same in every language: options and their Sneakers defaults,
//! the connections (heartbeats, recovery, failover), topology, consuming with prefetch, the
//! hand-off to host threads, settlement with pipelined and coalesced acks, the Oneshot and
//! Maxretry handlers, publishing with confirms, the graceful stop and the metrics.
//!
//! ```no_run
//! use cleats_core::{Engine, Next, Options, Outcome};
//! use std::time::Duration;
//!
//! let global: Options = serde_json::from_str(r#"{"amqp": "amqp://guest:guest@127.0.0.1:5672"}"#).unwrap();
//! let engine = Engine::new(&global)?;
//! let worker = engine.add_worker("EmailWorker", "emails", &Options::new())?;
//! engine.start()?;
//! // A host thread (with the GVL/GIL released while waiting):
//! loop {
//!     match worker.pool().next(Duration::from_millis(100))? {
//!         Next::Delivery(d) => { d.settle(Outcome::Ack)?; }
//!         Next::Timeout => continue, // check for interrupts here
//!         Next::Stopped => break,
//!     }
//! }
//! # Ok::<(), cleats_core::Error>(())
//! ```
//!
//! No Rust thread ever calls into the host language: host threads pull with [`Pool::next`] and
//! push back with [`Delivery::settle`].

mod ack_pacing;
pub mod config;
mod connection;
mod consumer;
pub mod delivery;
pub mod engine;
pub mod error;
pub mod fields;
pub mod handlers;
mod inbound;
pub mod logging;
pub mod malloc_arenas;
pub mod metrics;
pub mod pool;
pub mod publisher;
mod reader;
pub mod runtime;
pub mod settle;
mod settler;
mod source;
pub mod topology;
mod transport;
pub mod uri;
pub mod worker;

/// Locks `m`, also when a thread panicked holding it: every lock in the engine guards state that
/// is left consistent before anything can panic.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub use config::{HandlerKind, Options, WorkerConfig};
pub use delivery::{Delivery, DeliveryInfo, Properties};
pub use engine::{Engine, Status, StopReport};
pub use error::{Error, Result};
pub use fields::{FieldValue, Table};
pub use metrics::{MetricNames, MetricsSnapshot};
pub use pool::{Next, Pool};
pub use publisher::{Message, Publisher};
pub use runtime::Pending;
pub use settle::{Action, ErrorInfo, Outcome, Settled};
pub use topology::Declaration;
pub use uri::BrokerUri;
pub use worker::Worker;
