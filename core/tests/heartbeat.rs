//! Heartbeats run on the engine's runtime, never on the threads that run `work`: a message whose
//! work blocks its thread far longer than the heartbeat timeout is still acked on the same
//! connection.
mod common;
use cleats_core::{Engine, Message, Outcome, Publisher, Status};
use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One test at a time: the first finds its connection among the process's own.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn long_work_does_not_starve_heartbeats() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    init_logging();
    let q = unique("heartbeat");
    let global = options(json!({"exchange": "", "heartbeat": 1, "threads": 1, "prefetch": 1}));
    let engine = Engine::new(&global).unwrap();
    let worker = engine.add_worker("Slow", &q, &global).unwrap();
    engine.start().unwrap();
    let connected = engine.status();
    Publisher::new(&global)
        .unwrap()
        .publish(&Message::new(q.clone(), "slow"))
        .unwrap();

    // The broker agreed to a 1 s heartbeat on our consumer connection.
    let me = format!("cleats consumer (pid {})", std::process::id());
    let listing = rabbitmqctl(&[
        "list_connections",
        "client_properties",
        "timeout",
        "--no-table-headers",
    ]);
    let ours: Vec<&str> = listing.lines().filter(|l| l.contains(&me)).collect();
    assert_eq!(ours.len(), 1, "{listing}");
    assert!(ours[0].trim_end().ends_with("\t1"), "{}", ours[0]);

    let d = next(worker.pool(), Duration::from_secs(5)).expect("a delivery");
    // Four missed heartbeats would make the broker close the connection (timeout = 2 x 1 s).
    std::thread::sleep(Duration::from_secs(4));
    d.settle(Outcome::Ack).unwrap();

    // Same connection, no recovery happened, and the ack reached the broker.
    assert_eq!(engine.status(), connected);
    assert!(matches!(connected, Status::Connected { .. }));
    let report = stop(&engine, Duration::from_secs(5));
    assert!(report.drained);
    assert_eq!(report.requeued, 0);
    let broker = Broker::connect();
    assert_eq!(
        broker.ready(&q),
        0,
        "the ack was lost: the message is back on the queue"
    );
    broker.delete_queue(&q);
}

/// On plain TCP cleats reads the deliveries itself and lapin never sees them (inbound.rs). While
/// the broker sends nothing but deliveries it sends no heartbeats either, so lapin must be shown
/// that the broker is alive, or it closes the connection after two heartbeat intervals.
#[test]
fn a_steady_flow_of_deliveries_keeps_the_connection() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    init_logging();
    let q = unique("heartbeat-flow");
    let global = options(json!({"exchange": "", "heartbeat": 1, "threads": 2, "prefetch": 10}));
    let engine = Engine::new(&global).unwrap();
    let worker = engine.add_worker("Flow", &q, &global).unwrap();
    engine.start().unwrap();
    let connected = engine.status();
    let done = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    let threads = run_pool(worker.pool(), move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Outcome::Ack
    });

    // A message every 2 ms for 5 s: the broker always has a delivery to send well within an
    // interval, and the connection outlives lapin's limit (2 s) more than twice.
    let publisher = Publisher::new(&global).unwrap();
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(5) {
        publisher.publish(&Message::new(q.clone(), "tick")).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        wait_until(Duration::from_secs(10), || done.load(Ordering::SeqCst)
            >= sent),
        "{} of {sent} worked on",
        done.load(Ordering::SeqCst)
    );
    assert_eq!(engine.status(), connected, "the connection was replaced");
    let report = stop(&engine, Duration::from_secs(5));
    for t in threads {
        t.join().unwrap();
    }
    assert!(report.drained);
    assert_eq!(
        done.load(Ordering::SeqCst),
        sent,
        "a message was worked on twice"
    );
    let broker = Broker::connect();
    assert_eq!(broker.ready(&q), 0, "an ack was lost");
    broker.delete_queue(&q);
}
