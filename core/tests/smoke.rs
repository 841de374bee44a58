mod common;
use cleats_core::{Engine, Message, Outcome, Publisher};
use common::*;
use serde_json::json;
use std::time::Duration;

#[test]
fn harness_round_trip() {
    init_logging();
    let q = unique("smoke");
    let global = options(json!({"exchange": ""}));
    let engine = Engine::new(&global).unwrap();
    let w = engine.add_worker("Smoke", &q, &global).unwrap();
    engine.start().unwrap();
    Publisher::new(&global)
        .unwrap()
        .publish(&Message::new(q.clone(), "hi"))
        .unwrap();
    let d = next(w.pool(), Duration::from_secs(5)).expect("a delivery");
    assert_eq!(d.body, b"hi");
    d.settle(Outcome::Ack).unwrap();
    stop(&engine, Duration::from_secs(5));
    let b = Broker::connect();
    assert_eq!(b.ready(&q), 0);
    b.delete_queue(&q);
}
