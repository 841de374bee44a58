//! Operations a host waits for in slices (to stay interruptible), and worker name uniqueness.
mod common;
use cleats_core::{Engine, Error, Message, Publisher};
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// Waits in 10 ms slices, as a binding does between interrupt checks; counts the slices.
fn wait_in_slices<T: Send + 'static>(
    mut pending: cleats_core::Pending<T>,
) -> (cleats_core::Result<T>, u32) {
    let mut slices = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(result) = pending.wait(Duration::from_millis(10)) {
            return (result, slices);
        }
        slices += 1;
        assert!(Instant::now() < deadline, "the operation never finished");
    }
}

#[test]
fn start_publish_and_stop_can_be_waited_for_in_slices() {
    init_logging();
    let q = unique("pending");
    let global = options(json!({"exchange": "", "publish_timeout": 3}));
    let engine = Engine::new(&global).unwrap();
    let worker = engine.add_worker("Pending", &q, &global).unwrap();
    let (started, _) = wait_in_slices(engine.begin_start().unwrap());
    started.unwrap();

    let publisher = Publisher::new(&global).unwrap();
    let (sent, _) = wait_in_slices(
        publisher
            .begin_publish(Message::new(q.clone(), "x"))
            .unwrap(),
    );
    sent.unwrap();
    let d = next(worker.pool(), Duration::from_secs(5)).expect("the published message");
    d.settle(cleats_core::Outcome::Ack).unwrap();

    let (report, _) = wait_in_slices(engine.begin_stop(Some(Duration::from_secs(5))).unwrap());
    assert!(report.unwrap().drained);
    Broker::connect().delete_queue(&q);
}

#[test]
fn a_publish_to_an_absent_broker_keeps_returning_control_until_its_timeout() {
    let global = options(json!({"amqp": "amqp://guest:guest@127.0.0.1:1", "publish_timeout": 1}));
    let publisher = Publisher::new(&global).unwrap();
    let (sent, slices) = wait_in_slices(publisher.begin_publish(Message::new("q", "x")).unwrap());
    assert!(matches!(sent, Err(Error::Timeout { .. })), "{sent:?}");
    // The host got control back many times while the publisher retried: it could have
    // checked for Ctrl-C each time.
    assert!(slices >= 10, "{slices}");
}

#[test]
fn worker_names_are_unique() {
    let global = options(json!({}));
    let engine = Engine::new(&global).unwrap();
    engine.add_worker("Same", &unique("a"), &global).unwrap();
    let err = engine
        .add_worker("Same", &unique("b"), &global)
        .unwrap_err();
    assert!(err.to_string().contains("`worker`"), "{err}");
}
