//! The ceiling: how fast the engine drains a prefilled queue when `work` costs nothing (a Rust
//! closure that acks). What a binding adds is measured against this.
//!
//! `cargo run --release -p cleats-core --example ceiling -- [MESSAGES] [PREFETCH] [THREADS]`
//! Prints one JSON line: messages/s, CPU microseconds per message of this process (user+sys
//! from /proc, consuming only), and peak RSS.

use cleats_core::{runtime, Engine, Message, Options, Outcome, Publisher};
use serde_json::json;
use std::time::{Duration, Instant};

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// (name, user+sys CPU seconds) from a /proc `stat` file.
fn stat_cpu(path: &std::path::Path) -> (String, f64) {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let name = stat
        .split('(')
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or("?");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; 11 and 12 after the command name.
    (name.to_string(), (ticks(11) + ticks(12)) / 100.0)
}

/// (user+sys CPU seconds, peak RSS in KiB) of this process.
fn usage() -> (f64, u64) {
    let (_, cpu) = stat_cpu(std::path::Path::new("/proc/self/stat"));
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu, hwm)
}

/// CPU seconds per thread name of this process (tokio workers, lapin's I/O loop, work threads).
fn cpu_by_thread() -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let (name, cpu) = stat_cpu(&task.path().join("stat"));
        *by_name.entry(name).or_insert(0.0) += cpu;
    }
    by_name
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (messages, prefetch, threads) = (arg(1, 200_000), arg(2, 10), arg(3, 10));
    let amqp = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let queue = format!("cleats-bench-ceiling-{}", std::process::id());
    let global: Options = serde_json::from_value(json!({
        "amqp": amqp, "exchange": "", "prefetch": prefetch, "threads": threads,
        "queue_options": {"durable": false},
    }))?;

    let engine = Engine::new(&global)?;
    let worker = engine.add_worker("Ceiling", &queue, &Options::new())?;
    let publisher = Publisher::new(&global)?;
    let body = json!({"id": 0, "email": "someone@example.com", "kind": "welcome", "at": "2026-11-21T08:00:00Z"}).to_string();
    // The queue exists before the prefill; the engine consumes only once it is full.
    runtime::handle().block_on(async {
        let conn = lapin::Connection::connect(&amqp, Default::default()).await?;
        let channel = conn.create_channel().await?;
        channel
            .queue_declare(
                queue.as_str().into(),
                Default::default(),
                Default::default(),
            )
            .await?;
        conn.close(200, "declared".into()).await
    })?;
    for chunk in (0..messages).collect::<Vec<_>>().chunks(20_000) {
        let batch: Vec<Message> = chunk
            .iter()
            .map(|_| Message::new(queue.clone(), body.clone()))
            .collect();
        publisher.publish_all(&batch)?;
    }
    publisher.close()?;

    let (cpu0, _) = usage();
    let threads_before = cpu_by_thread();
    let started = Instant::now();
    engine.start()?;
    let threads_h = worker.pool().spawn_rust_threads(|_| Outcome::Ack);
    while worker.metrics().ended < messages {
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu1, rss_kib) = usage();
    if std::env::var_os("CEILING_THREADS").is_some() {
        let spent: Vec<(String, f64)> = cpu_by_thread()
            .into_iter()
            .map(|(name, after)| {
                let before = threads_before.get(&name).copied().unwrap_or(0.0);
                (name, ((after - before) * 100.0).round() / 100.0)
            })
            .filter(|(_, s)| *s > 0.0)
            .collect();
        eprintln!("CPU seconds by thread while consuming: {spent:?}");
    }
    engine.stop(Some(Duration::from_secs(5)))?;
    for t in threads_h {
        t.join().ok();
    }
    runtime::handle().block_on(async {
        let conn = lapin::Connection::connect(&amqp, Default::default()).await?;
        let channel = conn.create_channel().await?;
        channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await?;
        conn.close(200, "deleted".into()).await
    })?;
    println!(
        "{}",
        json!({
            "contender": "ceiling (engine, no-op Rust work)",
            "messages": messages, "prefetch": prefetch, "threads": threads,
            "msgs_per_s": (messages as f64 / elapsed).round(),
            "cpu_us_per_msg": ((cpu1 - cpu0) * 1e6 / messages as f64 * 10.0).round() / 10.0,
            "peak_rss_mib": (rss_kib as f64 / 1024.0 * 10.0).round() / 10.0,
        })
    );
    Ok(())
}
