//! The ceiling: how fast the engine drains a prefilled queue when `work` costs nothing (a Rust
//! closure that acks). What a binding adds is measured against this.
//!
//! `cargo run --release -p cleats-core --example ceiling -- [MESSAGES] [PREFETCH] [THREADS]`
//! Prints one JSON line: messages/s, CPU microseconds per message of this process (user+sys
//! from /proc, consuming only), and peak RSS.
//!
//! `... --example ceiling -- lapin MESSAGES PREFETCH [noack|multiple]`: raw lapin for reference
//! (see `RawAcks`).
//!
//! `... --example ceiling -- wire MESSAGES PREFETCH [multiple|each|noack]`: the broker's own
//! ceiling for a consumer at that prefetch, a minimal client on one socket (bench/wire.rs).
//!
//! `... --example ceiling -- publish MESSAGES BATCH [confirms|noconfirms]`: the publishing
//! ceiling, the engine's publisher sending batches of BATCH and waiting for each batch's
//! confirms (or, without confirms, the rate the broker takes messages in at all).

mod wire;

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

/// User+sys CPU seconds of the local broker, 0 when none runs here: the broker's CPU per message
/// is reported beside ours. The broker is the beam.smp started with `-s rabbit boot`; rabbitmqctl
/// runs in a beam.smp too, and taking one of those made a run's figure negative.
fn broker_cpu() -> f64 {
    let is_broker = |argv: &[u8]| {
        let argv: Vec<&[u8]> = argv.split(|&b| b == 0).collect();
        argv[0].ends_with(b"beam.smp")
            && argv
                .windows(3)
                .any(|w| w == [&b"-s"[..], &b"rabbit"[..], &b"boot"[..]])
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .find(|p| std::fs::read(p.path().join("cmdline")).is_ok_and(|a| is_broker(&a)))
        .map_or(0.0, |p| stat_cpu(&p.path().join("stat")).1)
}

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn declare_or_delete(amqp: &str, queue: &str, delete: bool) -> lapin::Result<()> {
    let conn = lapin::Connection::connect(amqp, Default::default()).await?;
    let channel = conn.create_channel().await?;
    if delete {
        channel
            .queue_delete(queue.into(), Default::default())
            .await?;
    } else {
        channel
            .queue_declare(queue.into(), Default::default(), Default::default())
            .await?;
    }
    conn.close(200, "done".into()).await
}

fn body() -> String {
    json!({"id": 0, "email": "someone@example.com", "kind": "welcome", "at": "2026-11-21T08:00:00Z"})
        .to_string()
}

fn publish_ceiling() -> Result<(), Box<dyn std::error::Error>> {
    let (messages, batch) = (arg(2, 100_000), arg(3, 100).max(1));
    let confirms = std::env::args().nth(4).as_deref() != Some("noconfirms");
    let amqp = amqp_url();
    let queue = format!("cleats-bench-ceiling-pub-{}", std::process::id());
    let global: Options = serde_json::from_value(json!({
        "amqp": amqp, "exchange": "", "publisher_confirms": confirms,
    }))?;
    runtime::handle().block_on(declare_or_delete(&amqp, &queue, false))?;
    let publisher = Publisher::new(&global)?;
    publisher.publish(&Message::new(queue.clone(), "connect"))?;
    let chunk: Vec<Message> = (0..batch)
        .map(|_| Message::new(queue.clone(), body()))
        .collect();
    let rounds = messages / batch;
    let (cpu0, _) = usage();
    let started = Instant::now();
    for _ in 0..rounds {
        publisher.publish_all(&chunk)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu1, rss_kib) = usage();
    publisher.close()?;
    runtime::handle().block_on(declare_or_delete(&amqp, &queue, true))?;
    let sent = rounds * batch;
    println!(
        "{}",
        json!({
            "contender": format!("publish ceiling (engine publisher, batches of {batch}, {})",
                if confirms { "confirmed" } else { "no confirms" }),
            "messages": sent, "batch": batch, "confirms": confirms,
            "msgs_per_s": (sent as f64 / elapsed).round(),
            "cpu_us_per_msg": ((cpu1 - cpu0) * 1e6 / sent as f64 * 10.0).round() / 10.0,
            "peak_rss_mib": (rss_kib as f64 / 1024.0 * 10.0).round() / 10.0,
        })
    );
    Ok(())
}

/// Declares `queue` and fills it with `messages` copies of the body, before any consumer runs.
fn prefill(global: &Options, queue: &str, messages: u64) -> Result<(), Box<dyn std::error::Error>> {
    runtime::handle().block_on(declare_or_delete(&amqp_url(), queue, false))?;
    let publisher = Publisher::new(global)?;
    let body = body();
    // Batches of 1,000: lapin scans every unconfirmed publish on each confirm, so huge batches
    // cost it quadratic time.
    for chunk in (0..messages).collect::<Vec<_>>().chunks(1_000) {
        let batch: Vec<Message> = chunk
            .iter()
            .map(|_| Message::new(queue, body.clone()))
            .collect();
        publisher.publish_all(&batch)?;
    }
    Ok(publisher.close()?)
}

/// How the raw lapin reference acknowledges.
#[derive(Clone, Copy, PartialEq)]
enum RawAcks {
    /// `delivery.ack().await` for every delivery: the idiomatic loop.
    Each,
    /// One `multiple` ack for every `n` deliveries: the least ack work the broker can get.
    Multiple(u64),
    /// A `no_ack` consumer: the broker pushes without waiting for acks (and ignores prefetch).
    None,
}

/// Raw lapin, for reference: one task consumes, no hand-off to other threads. Returns when
/// `messages` were received (and acked, unless `RawAcks::None`).
async fn consume_raw_lapin(
    queue: &str,
    messages: u64,
    prefetch: u64,
    acks: RawAcks,
) -> lapin::Result<()> {
    use futures_util::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    let conn = lapin::Connection::connect(&amqp_url(), Default::default()).await?;
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(prefetch as u16, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "raw".into(),
            BasicConsumeOptions {
                no_ack: acks == RawAcks::None,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    let mut received = 0;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        received += 1;
        let last = received == messages;
        match acks {
            RawAcks::Each => {
                delivery.ack(BasicAckOptions::default()).await?;
            }
            RawAcks::Multiple(n) if received % n == 0 || last => {
                delivery.ack(BasicAckOptions { multiple: true }).await?;
            }
            RawAcks::Multiple(_) | RawAcks::None => {}
        }
        if last {
            break;
        }
    }
    conn.close(200, "done".into()).await
}

/// Runs the minimal client of bench/wire.rs against the broker of `amqp`.
fn consume_wire(
    amqp: &str,
    queue: &str,
    messages: u64,
    prefetch: u64,
    acks: Option<wire::WireAcks>,
) -> Result<(), Box<dyn std::error::Error>> {
    let url = url::Url::parse(amqp)?;
    let addr = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5672)
    );
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .to_string()
    };
    let vhost = match url.path() {
        "" | "/" => "/".to_string(),
        path => decode(&path[1..]),
    };
    let (user, password) = (decode(url.username()), decode(url.password().unwrap_or("")));
    let login = wire::Login {
        addr: &addr,
        user: if user.is_empty() { "guest" } else { &user },
        password: if password.is_empty() {
            "guest"
        } else {
            &password
        },
        vhost: &vhost,
    };
    let prefetch = u16::try_from(prefetch).map_err(|_| "prefetch above 65535")?;
    Ok(wire::consume(&login, queue, messages, prefetch, acks)?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    if mode == "publish" {
        return publish_ceiling();
    }
    // `lapin MESSAGES PREFETCH [noack|multiple]`: raw lapin instead of the engine; `wire ...`
    // the minimal client.
    let wire = mode == "wire";
    let raw = mode == "lapin" || wire;
    let first = usize::from(raw) + 1;
    let (messages, prefetch, threads) =
        (arg(first, 200_000), arg(first + 1, 10), arg(first + 2, 10));
    let acks = match std::env::args().nth(4).as_deref() {
        Some("noack") if raw => RawAcks::None,
        Some("multiple") if raw => RawAcks::Multiple((prefetch / 4).max(1)),
        _ => RawAcks::Each,
    };
    let amqp = amqp_url();
    let queue = format!("cleats-bench-ceiling-{}", std::process::id());
    let global: Options = serde_json::from_value(json!({
        "amqp": amqp, "exchange": "", "prefetch": prefetch, "threads": threads,
        "queue_options": {"durable": false},
    }))?;
    prefill(&global, &queue, messages)?;

    let wire_acks = match std::env::args().nth(4).as_deref() {
        Some("noack") => None,
        Some("each") => Some(wire::WireAcks::Each),
        _ => Some(wire::WireAcks::Multiple),
    };
    let contender = match (wire, wire_acks, raw, acks) {
        (true, None, ..) => "broker with no acks (minimal client, no_ack consumer)",
        (true, Some(wire::WireAcks::Each), ..) => {
            "broker ceiling (minimal client, an ack per message)"
        }
        (true, Some(wire::WireAcks::Multiple), ..) => {
            "broker ceiling (minimal client, a multiple ack per read)"
        }
        (_, _, false, _) => "ceiling (engine, no-op Rust work)",
        (_, _, true, RawAcks::Each) => "raw lapin (one task, ack each delivery)",
        (_, _, true, RawAcks::Multiple(_)) => "raw lapin (one task, a multiple ack per prefetch/4)",
        (_, _, true, RawAcks::None) => "broker with no acks (raw lapin, no_ack consumer)",
    };
    let (cpu0, _) = usage();
    let broker0 = broker_cpu();
    let threads_before = cpu_by_thread();
    let started = Instant::now();
    let mut stop: Box<dyn FnOnce() -> Result<(), Box<dyn std::error::Error>>> = Box::new(|| Ok(()));
    if wire {
        consume_wire(&amqp, &queue, messages, prefetch, wire_acks)?;
    } else if raw {
        runtime::handle().block_on(consume_raw_lapin(&queue, messages, prefetch, acks))?;
    } else {
        let engine = Engine::new(&global)?;
        let worker = engine.add_worker("Ceiling", &queue, &Options::new())?;
        engine.start()?;
        let threads_h = worker.pool().spawn_rust_threads(|_| Outcome::Ack);
        while worker.metrics().ended < messages {
            std::thread::sleep(Duration::from_millis(5));
        }
        stop = Box::new(move || {
            engine.stop(Some(Duration::from_secs(5)))?;
            for t in threads_h {
                t.join().ok();
            }
            Ok(())
        });
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu1, rss_kib) = usage();
    let broker1 = broker_cpu();
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
    stop()?;
    runtime::handle().block_on(declare_or_delete(&amqp, &queue, true))?;
    println!(
        "{}",
        json!({
            "contender": contender,
            "messages": messages, "prefetch": prefetch, "threads": if raw { 1 } else { threads },
            "msgs_per_s": (messages as f64 / elapsed).round(),
            "cpu_us_per_msg": ((cpu1 - cpu0) * 1e6 / messages as f64 * 10.0).round() / 10.0,
            "broker_cpu_us_per_msg": ((broker1 - broker0) * 1e6 / messages as f64 * 10.0).round() / 10.0,
            "peak_rss_mib": (rss_kib as f64 / 1024.0 * 10.0).round() / 10.0,
        })
    );
    Ok(())
}
