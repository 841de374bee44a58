//! The demo: publishes messages with confirms, then runs a worker pool that consumes them from a
//! real RabbitMQ through the engine, and prints what was processed.
//!
//! `scripts/demo.sh [COUNT]` (default 5000). Every 100th message is rejected to show the error
//! path; everything else is acked.

use cleats_core::{Engine, Message, Next, Options, Outcome, Publisher};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let count: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(5000);
    let amqp = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let global: Options = serde_json::from_value(json!({
        "amqp": amqp, "exchange": "cleats-demo", "prefetch": 100, "threads": 4,
        "queue_options": {"durable": false, "auto_delete": true}
    }))?;

    let engine = Engine::new(&global)?;
    let worker = engine.add_worker("DemoWorker", "cleats.demo", &Options::new())?;
    engine.start()?; // declares the exchange, the queue and its binding, then consumes
    println!("consuming 'cleats.demo' through {:?}", engine.status());

    let publisher = Publisher::new(&global)?;
    let started = Instant::now();
    let messages: Vec<Message> = (0..count)
        .map(|i| {
            let body = json!({"id": i, "email": format!("user{i}@example.com"), "kind": "welcome"});
            Message::new("cleats.demo", body.to_string())
        })
        .collect();
    publisher.publish_all(&messages)?;
    println!(
        "published {count} messages with confirms in {:.2}s",
        started.elapsed().as_secs_f64()
    );

    let processed = Arc::new(AtomicU64::new(0));
    let seen = processed.clone();
    let threads = worker.pool().spawn_rust_threads(move |d| {
        let body: serde_json::Value = serde_json::from_slice(&d.body).unwrap_or_default();
        let n = seen.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(1000) {
            println!("  processed {n} (last: {})", body["email"]);
        }
        match body["id"].as_u64() {
            Some(id) if id.is_multiple_of(100) => Outcome::Reject,
            Some(_) => Outcome::Ack,
            None => Outcome::Error(Default::default()),
        }
    });

    let deadline = Instant::now() + Duration::from_secs(120);
    while processed.load(Ordering::Relaxed) < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    let report = engine.stop(Some(Duration::from_secs(5)))?;
    for t in threads {
        t.join().expect("work thread");
    }
    let m = worker.metrics();
    println!(
        "processed {} messages in {:.2}s ({:.0} msg/s end to end): ack {}, reject {}, error {}; stop: {:?}",
        m.ended,
        elapsed.as_secs_f64(),
        m.ended as f64 / elapsed.as_secs_f64(),
        m.ack,
        m.reject,
        m.error,
        report
    );
    if m.ended < count {
        return Err(format!("only {} of {count} messages were processed", m.ended).into());
    }
    // Pool::next is also what host threads call; show that it reports the stop.
    assert!(matches!(
        worker.pool().next(Duration::from_millis(1))?,
        Next::Stopped
    ));
    Ok(())
}
