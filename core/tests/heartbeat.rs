//! Heartbeats run on the engine's runtime, never on the threads that run `work`: a message whose
//! work blocks its thread far longer than the heartbeat timeout is still acked on the same
//! connection.
mod common;
use cleats_core::{Engine, Message, Outcome, Publisher, Status};
use common::*;
use serde_json::json;
use std::time::Duration;

#[test]
fn long_work_does_not_starve_heartbeats() {
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
