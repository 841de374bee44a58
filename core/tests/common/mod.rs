//! Shared helpers for the integration tests. Every test talks to the real broker at `AMQP_URL`
//! (default amqp://guest:guest@127.0.0.1:5672/%2f) and fails loudly when there is none.
#![allow(dead_code)]

use cleats_core::{runtime, Engine, Next, Options, Outcome, Pool};
use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn init_logging() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .is_test(true)
        .try_init();
}

/// A name no other test (or earlier run) uses.
pub fn unique(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "cleats-test-{name}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Options for tests: the test broker, non-durable queues, `extra` merged over them.
pub fn options(extra: Value) -> Options {
    let mut base = json!({
        "amqp": amqp_url(),
        "queue_options": {"durable": false},
        "exchange_options": {"durable": false},
        "network_recovery_interval": 0.5,
    })
    .as_object()
    .unwrap()
    .clone();
    cleats_core::config::deep_merge(&mut base, extra.as_object().expect("an object"));
    base
}

/// A plain lapin connection to inspect and prepare the broker, independent of the engine.
pub struct Broker {
    pub conn: Connection,
    pub channel: lapin::Channel,
}

impl Broker {
    pub fn connect() -> Broker {
        runtime::handle().block_on(async {
            let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
                .await
                .expect("RabbitMQ must answer at AMQP_URL for the integration tests");
            let channel = conn.create_channel().await.unwrap();
            Broker { conn, channel }
        })
    }

    /// Ready messages in `queue` (passive declare).
    pub fn ready(&self, queue: &str) -> u32 {
        runtime::handle().block_on(async {
            self.channel
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("queue exists")
                .message_count()
        })
    }

    /// Takes one message off `queue` (auto-acked), if any.
    pub fn get(&self, queue: &str) -> Option<lapin::message::BasicGetMessage> {
        runtime::handle().block_on(async {
            self.channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get")
        })
    }

    pub fn declare_queue(&self, queue: &str, args: FieldTable) {
        runtime::handle().block_on(async {
            self.channel
                .queue_declare(queue.into(), QueueDeclareOptions::default(), args)
                .await
                .expect("declare queue");
        })
    }

    pub fn purge(&self, queue: &str) {
        runtime::handle().block_on(async {
            let _ = self
                .channel
                .queue_purge(queue.into(), QueuePurgeOptions::default())
                .await;
        })
    }

    pub fn delete_queue(&self, queue: &str) {
        runtime::handle().block_on(async {
            let _ = self
                .channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await;
        })
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `threads` host-like threads on `pool` until the engine stops.
pub fn run_pool(
    pool: &Pool,
    work: impl Fn(&cleats_core::Delivery) -> Outcome + Send + Sync + 'static,
) -> Vec<JoinHandle<()>> {
    pool.spawn_rust_threads(work)
}

/// Pulls one delivery from the pool, waiting up to `timeout`.
pub fn next(pool: &Pool, timeout: Duration) -> Option<cleats_core::Delivery> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match pool.next(Duration::from_millis(100)).expect("next") {
            Next::Delivery(d) => return Some(d),
            Next::Timeout => continue,
            Next::Stopped => return None,
        }
    }
    None
}

/// Runs `rabbitmqctl` with `args`, panicking with its output if it fails.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl must be installed for the fault tests");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Stops an engine, failing the test if it takes unreasonably long.
pub fn stop(engine: &Engine, timeout: Duration) -> cleats_core::StopReport {
    engine.stop(Some(timeout)).expect("stop")
}
