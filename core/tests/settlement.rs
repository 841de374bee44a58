//! Settlement, properties, prefetch, topology and option errors, each observed on the real
//! broker: what a Sneakers user relies on when `work` returns `ack!`, `reject!`, `requeue!`,
//! raises, or returns anything else.
mod common;

use cleats_core::{
    Action, Engine, Error, ErrorInfo, FieldValue, Message, Options, Outcome, Publisher, Table,
};
use common::*;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions};
use lapin::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use lapin::{BasicProperties, Confirmation};
use serde_json::json;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
/// How long we watch for something that must *not* happen.
const QUIET: Duration = Duration::from_millis(400);
const STOP: Duration = Duration::from_secs(5);

// ---- helpers -------------------------------------------------------------------------------

/// A broker connection for one test, and everything the test created: on drop (also when the
/// test panics) its engines are stopped, then its queues and exchanges deleted.
struct Fixture {
    broker: Broker,
    /// A channel in confirm mode, so a raw publish has reached its queues when it returns.
    confirm: lapin::Channel,
    queues: RefCell<Vec<String>>,
    exchanges: RefCell<Vec<String>>,
    engines: RefCell<Vec<Engine>>,
}

impl Fixture {
    fn new() -> Fixture {
        init_logging();
        let broker = Broker::connect();
        let confirm = cleats_core::runtime::handle().block_on(async {
            let ch = broker.conn.create_channel().await.expect("channel");
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .expect("confirm.select");
            ch
        });
        Fixture {
            broker,
            confirm,
            queues: RefCell::new(Vec::new()),
            exchanges: RefCell::new(Vec::new()),
            engines: RefCell::new(Vec::new()),
        }
    }

    /// A unique queue name, deleted at the end.
    fn queue(&self, name: &str) -> String {
        let q = unique(name);
        self.queues.borrow_mut().push(q.clone());
        q
    }

    /// A unique exchange name, deleted at the end.
    fn exchange(&self, name: &str) -> String {
        let x = unique(name);
        self.exchanges.borrow_mut().push(x.clone());
        x
    }

    /// An engine on `global`, stopped at the end if the test did not stop it.
    fn engine(&self, global: &Options) -> Engine {
        let engine = Engine::new(global).expect("engine");
        self.engines.borrow_mut().push(engine.clone());
        engine
    }

    /// Declares a plain non-durable queue (as `options()` makes the engine declare it) so that
    /// messages can wait in it before the engine starts.
    fn declare(&self, queue: &str) {
        self.broker.declare_queue(queue, FieldTable::default());
    }

    /// Publishes with raw lapin and waits for the broker's confirm.
    fn publish_raw(&self, exchange: &str, routing_key: &str, body: &[u8], props: BasicProperties) {
        let confirm = cleats_core::runtime::handle().block_on(async {
            self.confirm
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    body,
                    props,
                )
                .await
                .expect("basic.publish")
                .await
                .expect("confirm")
        });
        assert!(
            matches!(confirm, Confirmation::Ack(None)),
            "publish not confirmed: {confirm:?}"
        );
    }

    /// Publishes `body` to `queue` through the default exchange.
    fn send(&self, queue: &str, body: &str) {
        self.publish_raw("", queue, body.as_bytes(), BasicProperties::default());
    }

    fn ready(&self, queue: &str) -> u32 {
        self.broker.ready(queue)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for engine in self.engines.borrow().iter() {
            let _ = engine.stop(Some(Duration::from_secs(2)));
        }
        let queues = self.queues.borrow().clone();
        let exchanges = self.exchanges.borrow().clone();
        cleats_core::runtime::handle().block_on(async {
            // A fresh channel: the test may have had the shared one closed by the broker.
            let Ok(ch) = self.broker.conn.create_channel().await else {
                return;
            };
            for q in &queues {
                let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
            }
            for x in &exchanges {
                let _ = ch
                    .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
            let _ = self.broker.conn.close(200, "test done".into()).await;
        });
    }
}

/// One column of `rabbitmqctl list_queues` for `queue`.
fn queue_column(queue: &str, column: &str) -> String {
    let out = rabbitmqctl(&["list_queues", "-q", "--no-table-headers", "name", column]);
    out.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(queue)).then(|| fields.next().unwrap_or("").to_string())
        })
        .next()
        .unwrap_or_else(|| panic!("rabbitmqctl does not list queue {queue}:\n{out}"))
}

/// Messages delivered and not yet acknowledged, as the broker counts them.
fn unacked(queue: &str) -> u64 {
    queue_column(queue, "messages_unacknowledged")
        .parse()
        .expect("a count")
}

fn obj(v: serde_json::Value) -> Options {
    v.as_object().expect("an object").clone()
}

fn body(d: &cleats_core::Delivery) -> String {
    String::from_utf8_lossy(&d.body).into_owned()
}

fn expect_next(pool: &cleats_core::Pool) -> cleats_core::Delivery {
    next(pool, WAIT).expect("a delivery within 10 s")
}

fn table(entries: Vec<(&str, FieldValue)>) -> Table {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn amqp_table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(k.into(), v);
    }
    t
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes()))
}

fn dlx_args(dlq: &str) -> serde_json::Value {
    json!({"queue_options": {"arguments": {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dlq,
    }}})
}

/// Waits for a message on `queue` (taken off it) and returns its body and headers.
fn get_within(f: &Fixture, queue: &str, timeout: Duration) -> Option<(String, Table)> {
    let mut found = None;
    wait_until(timeout, || {
        found = f.broker.get(queue).map(|m| {
            let headers = m
                .delivery
                .properties
                .headers()
                .as_ref()
                .map(|h| {
                    h.inner()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_string(), from_amqp(v)))
                        .collect()
                })
                .unwrap_or_default();
            (
                String::from_utf8_lossy(&m.delivery.data).into_owned(),
                headers,
            )
        });
        found.is_some()
    });
    found
}

/// Enough of a conversion to read `x-death` off a message taken with basic.get.
fn from_amqp(v: &AMQPValue) -> FieldValue {
    match v {
        AMQPValue::LongString(s) => FieldValue::Str(String::from_utf8_lossy(s.as_bytes()).into()),
        AMQPValue::ShortString(s) => FieldValue::Str(s.as_str().into()),
        AMQPValue::LongLongInt(i) => FieldValue::Int(*i),
        AMQPValue::LongInt(i) => FieldValue::Int((*i).into()),
        AMQPValue::Timestamp(t) => FieldValue::Timestamp(*t),
        AMQPValue::FieldArray(a) => FieldValue::Array(a.as_slice().iter().map(from_amqp).collect()),
        AMQPValue::FieldTable(t) => FieldValue::Table(
            t.inner()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), from_amqp(v)))
                .collect(),
        ),
        _ => FieldValue::Void,
    }
}

/// The `reason` of the first `x-death` entry of a dead-lettered message.
fn death_reason(headers: &Table) -> Option<String> {
    let deaths = headers.get("x-death")?.as_array()?;
    let first = deaths.first()?.as_table()?;
    first.get("reason")?.as_str().map(str::to_string)
}

// ---- 1. properties -------------------------------------------------------------------------

#[test]
fn every_property_and_header_type_round_trips_from_raw_lapin() {
    let f = Fixture::new();
    let q = f.queue("props");
    let x = f.exchange("props-x");
    let global = options(json!({"exchange": x, "routing_key": "props.key"}));
    let engine = f.engine(&global);
    let w = engine.add_worker("PropsWorker", &q, &global).unwrap();
    engine.start().unwrap();

    let death = amqp_table(vec![
        ("count", AMQPValue::LongLongInt(2)),
        ("queue", long("orders")),
        ("reason", long("rejected")),
        ("time", AMQPValue::Timestamp(1_700_000_001)),
        (
            "routing-keys",
            AMQPValue::FieldArray(FieldArray::from(vec![long("a"), long("b")])),
        ),
    ]);
    let headers = amqp_table(vec![
        ("str", long("text é")),
        ("i8", AMQPValue::ShortShortInt(-8)),
        ("u8", AMQPValue::ShortShortUInt(200)),
        ("i16", AMQPValue::ShortInt(-300)),
        ("u16", AMQPValue::ShortUInt(60_000)),
        ("i32", AMQPValue::LongInt(-70_000)),
        ("u32", AMQPValue::LongUInt(4_000_000_000)),
        ("i64", AMQPValue::LongLongInt(-9_000_000_000_000)),
        ("f32", AMQPValue::Float(1.5)),
        ("f64", AMQPValue::Double(-2.25)),
        ("yes", AMQPValue::Boolean(true)),
        ("no", AMQPValue::Boolean(false)),
        (
            "bytes",
            AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 0xfe, 0xff])),
        ),
        (
            "binary-long-string",
            AMQPValue::LongString(LongString::from(vec![0xffu8, 0x00, 0xc3])),
        ),
        ("ts", AMQPValue::Timestamp(1_700_000_000)),
        (
            "dec",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 12_345,
            }),
        ),
        ("nothing", AMQPValue::Void),
        (
            "nested",
            AMQPValue::FieldTable(amqp_table(vec![
                ("level", AMQPValue::LongInt(1)),
                (
                    "deeper",
                    AMQPValue::FieldTable(amqp_table(vec![("leaf", long("x"))])),
                ),
                (
                    "mixed",
                    AMQPValue::FieldArray(FieldArray::from(vec![
                        AMQPValue::LongInt(1),
                        long("two"),
                        AMQPValue::Boolean(true),
                    ])),
                ),
            ])),
        ),
        (
            "deaths",
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::FieldTable(death.clone()),
                AMQPValue::FieldTable(death),
            ])),
        ),
        ("empty-table", AMQPValue::FieldTable(FieldTable::default())),
        (
            "empty-array",
            AMQPValue::FieldArray(FieldArray::from(Vec::<AMQPValue>::new())),
        ),
    ]);
    let props = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_content_encoding(ShortString::from("gzip"))
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id(ShortString::from("corr-1"))
        .with_reply_to(ShortString::from("replies"))
        .with_expiration(ShortString::from("60000"))
        .with_message_id(ShortString::from("msg-1"))
        .with_timestamp(1_699_999_999)
        .with_type(ShortString::from("order.created"))
        .with_app_id(ShortString::from("billing"))
        .with_user_id(ShortString::from("guest"))
        .with_headers(headers);
    let payload = b"\x00binary\xff body\x00".to_vec();
    f.publish_raw(&x, "props.key", &payload, props);

    let d = expect_next(w.pool());
    assert_eq!(d.body, payload);
    assert_eq!(d.info.routing_key, "props.key");
    assert_eq!(d.info.exchange, x);
    assert!(!d.info.redelivered);
    assert!(!d.info.consumer_tag.is_empty());
    assert!(d.info.delivery_tag > 0);

    let p = &d.properties;
    assert_eq!(p.content_type.as_deref(), Some("application/json"));
    assert_eq!(p.content_encoding.as_deref(), Some("gzip"));
    assert_eq!(p.delivery_mode, Some(2));
    assert_eq!(p.priority, Some(7));
    assert_eq!(p.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(p.reply_to.as_deref(), Some("replies"));
    assert_eq!(p.expiration.as_deref(), Some("60000"));
    assert_eq!(p.message_id.as_deref(), Some("msg-1"));
    assert_eq!(p.timestamp, Some(1_699_999_999));
    assert_eq!(p.kind.as_deref(), Some("order.created"));
    assert_eq!(p.app_id.as_deref(), Some("billing"));
    assert_eq!(p.user_id.as_deref(), Some("guest"));
    assert_eq!(p.cluster_id, None);

    use FieldValue as F;
    let death = F::Table(table(vec![
        ("count", F::Int(2)),
        ("queue", F::Str("orders".into())),
        ("reason", F::Str("rejected".into())),
        ("time", F::Timestamp(1_700_000_001)),
        (
            "routing-keys",
            F::Array(vec![F::Str("a".into()), F::Str("b".into())]),
        ),
    ]));
    let expected = table(vec![
        ("str", F::Str("text é".into())),
        ("i8", F::Int(-8)),
        ("u8", F::Int(200)),
        ("i16", F::Int(-300)),
        ("u16", F::Int(60_000)),
        ("i32", F::Int(-70_000)),
        ("u32", F::Int(4_000_000_000)),
        ("i64", F::Int(-9_000_000_000_000)),
        ("f32", F::Float(1.5)),
        ("f64", F::Float(-2.25)),
        ("yes", F::Bool(true)),
        ("no", F::Bool(false)),
        ("bytes", F::Bytes(vec![0, 1, 0xfe, 0xff])),
        ("binary-long-string", F::Bytes(vec![0xff, 0x00, 0xc3])),
        ("ts", F::Timestamp(1_700_000_000)),
        (
            "dec",
            F::Decimal {
                scale: 2,
                value: 12_345,
            },
        ),
        ("nothing", F::Void),
        (
            "nested",
            F::Table(table(vec![
                ("level", F::Int(1)),
                (
                    "deeper",
                    F::Table(table(vec![("leaf", F::Str("x".into()))])),
                ),
                (
                    "mixed",
                    F::Array(vec![F::Int(1), F::Str("two".into()), F::Bool(true)]),
                ),
            ])),
        ),
        ("deaths", F::Array(vec![death.clone(), death])),
        ("empty-table", F::Table(Table::new())),
        ("empty-array", F::Array(vec![])),
    ]);
    let got = d.headers();
    for (k, v) in &expected {
        assert_eq!(got.get(k), Some(v), "header {k}");
    }
    assert_eq!(got, expected);
    assert_eq!(p.headers.as_ref(), Some(&expected));
    d.settle(Outcome::Ack).unwrap();

    // A message with no properties at all: everything is None, headers() is empty.
    f.publish_raw(&x, "props.key", b"", BasicProperties::default());
    let d = expect_next(w.pool());
    assert!(d.body.is_empty());
    assert_eq!(d.properties, cleats_core::Properties::default());
    assert!(d.headers().is_empty());
    d.settle(Outcome::Ack).unwrap();

    stop(&engine, STOP);
    assert_eq!(f.ready(&q), 0);
}

#[test]
fn publisher_messages_arrive_with_their_properties_and_headers() {
    let f = Fixture::new();
    let q = f.queue("pubprops");
    let x = f.exchange("pubprops-x");
    let global = options(json!({"exchange": x}));
    let engine = f.engine(&global);
    let w = engine.add_worker("PubPropsWorker", &q, &global).unwrap();
    engine.start().unwrap();
    let publisher = Publisher::new(&global).unwrap();

    use FieldValue as F;
    let headers = table(vec![
        ("str", F::Str("value".into())),
        ("int", F::Int(-42)),
        ("big", F::Int(i64::MAX)),
        ("float", F::Float(0.125)),
        ("bool", F::Bool(true)),
        ("bytes", F::Bytes(vec![0, 0xff])),
        ("ts", F::Timestamp(1_600_000_000)),
        (
            "nested",
            F::Table(table(vec![(
                "list",
                F::Array(vec![F::Table(table(vec![("count", F::Int(1))]))]),
            )])),
        ),
    ]);
    let props = cleats_core::Properties {
        content_type: Some("text/plain".into()),
        content_encoding: Some("identity".into()),
        headers: Some(headers.clone()),
        delivery_mode: Some(1),
        priority: Some(3),
        correlation_id: Some("c-9".into()),
        reply_to: Some("replies".into()),
        expiration: Some("120000".into()),
        message_id: Some("m-9".into()),
        timestamp: Some(1_650_000_000),
        kind: Some("typed".into()),
        user_id: Some("guest".into()),
        app_id: Some("cleats-tests".into()),
        cluster_id: None,
    };
    let message = Message {
        exchange: None,
        routing_key: q.clone(),
        body: b"from the publisher".to_vec(),
        properties: props.clone(),
        mandatory: true,
    }
    .with_header("added", F::Str("later".into()));
    publisher.publish(&message).unwrap();

    let d = expect_next(w.pool());
    assert_eq!(d.body, b"from the publisher");
    assert_eq!(d.info.exchange, x);
    assert_eq!(d.info.routing_key, q);
    let mut expected_headers = headers;
    expected_headers.insert("added".into(), F::Str("later".into()));
    let expected = cleats_core::Properties {
        headers: Some(expected_headers),
        ..props
    };
    assert_eq!(d.properties, expected);
    d.settle(Outcome::Ack).unwrap();

    // Sneakers-style publish options (`Sneakers.publish(msg, opts)`).
    let message = Message::from_options(
        "opts",
        &obj(json!({
            "to_queue": q, "persistence": true, "headers": {"a": {"b": [1, "two"]}},
            "priority": 4, "type": "welcome", "expiration": 30000, "content_type": "application/json",
            "correlation_id": "c-1", "message_id": "m-1", "app_id": "app", "timestamp": 1_500_000_000u64
        })),
    )
    .unwrap();
    publisher.publish(&message).unwrap();
    let d = expect_next(w.pool());
    assert_eq!(d.body, b"opts");
    assert_eq!(d.properties.delivery_mode, Some(2));
    assert_eq!(d.properties.priority, Some(4));
    assert_eq!(d.properties.kind.as_deref(), Some("welcome"));
    assert_eq!(d.properties.expiration.as_deref(), Some("30000"));
    assert_eq!(
        d.properties.content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(d.properties.correlation_id.as_deref(), Some("c-1"));
    assert_eq!(d.properties.message_id.as_deref(), Some("m-1"));
    assert_eq!(d.properties.app_id.as_deref(), Some("app"));
    assert_eq!(d.properties.timestamp, Some(1_500_000_000));
    assert_eq!(
        d.headers(),
        table(vec![(
            "a",
            F::Table(table(vec![(
                "b",
                F::Array(vec![F::Int(1), F::Str("two".into())])
            )]))
        )])
    );
    d.settle(Outcome::Ack).unwrap();

    publisher.close().unwrap();
    stop(&engine, STOP);
    assert_eq!(f.ready(&q), 0);
}

// ---- 2. ack, reject, requeue, error, noop ----------------------------------------------------

#[test]
fn ack_removes_the_message_for_good() {
    let f = Fixture::new();
    let q = f.queue("ack");
    let global = options(json!({"exchange": ""}));
    let engine = f.engine(&global);
    let w = engine.add_worker("AckWorker", &q, &global).unwrap();
    engine.start().unwrap();
    f.send(&q, "one");
    let d = expect_next(w.pool());
    assert_eq!(body(&d), "one");
    d.settle(Outcome::Ack).unwrap();
    assert!(
        wait_until(WAIT, || unacked(&q) == 0),
        "the ack reached the broker"
    );
    assert_eq!(f.ready(&q), 0);
    assert!(next(w.pool(), QUIET).is_none(), "not delivered again");
    let report = stop(&engine, STOP);
    assert!(report.drained);
    assert_eq!(f.ready(&q), 0, "still gone after the stop");
    assert!(f.broker.get(&q).is_none());
}

/// Three messages on a fresh queue, taken by a started engine whose ack batch (prefetch 400 / 4)
/// they cannot fill.
fn three_taken_under_a_batch_of_100(
    f: &Fixture,
    label: &str,
) -> (
    String,
    Engine,
    cleats_core::Worker,
    Vec<cleats_core::Delivery>,
) {
    let q = f.queue(label);
    f.declare(&q);
    for i in 0..3 {
        f.send(&q, &format!("m{i}"));
    }
    let global = options(json!({"exchange": "", "prefetch": 400}));
    let engine = f.engine(&global);
    let w = engine.add_worker("AckBatchWorker", &q, &global).unwrap();
    engine.start().unwrap();
    let taken = (0..3).map(|_| expect_next(w.pool())).collect();
    (q, engine, w, taken)
}

/// Acks are sent in batches of a quarter of the prefetch window; a batch that does not fill up
/// (here 3 acks against a batch of 100) must still reach the broker, without any further
/// delivery or command to carry it.
#[test]
fn acks_short_of_a_batch_still_reach_the_broker() {
    let f = Fixture::new();
    let (q, engine, w, taken) = three_taken_under_a_batch_of_100(&f, "ack-batch");
    assert_eq!(unacked(&q), 3);
    for d in &taken {
        d.settle(Outcome::Ack).unwrap();
    }
    assert!(
        wait_until(WAIT, || unacked(&q) == 0),
        "the acks reached the broker while the engine runs"
    );
    assert_eq!(f.ready(&q), 0);
    assert!(next(w.pool(), QUIET).is_none(), "not delivered again");
    stop(&engine, STOP);
    assert_eq!(f.ready(&q), 0);
}

/// An ack that waits for its batch is sent by the channel task's timer, which a host thread
/// starts only when it is not running (the timer runs on while acks keep coming): an ack settled
/// while the timer runs, and one settled after the timer found nothing and stopped (the host
/// thread must start it again), must each reach the broker with no other traffic to carry them.
#[test]
fn acks_reach_the_broker_whether_or_not_the_ack_timer_runs() {
    let f = Fixture::new();
    let (q, engine, _w, mut taken) = three_taken_under_a_batch_of_100(&f, "ack-timer");
    taken.remove(0).settle(Outcome::Ack).unwrap();
    assert!(
        wait_until(WAIT, || unacked(&q) == 2),
        "the first ack went out: {}",
        unacked(&q)
    );
    taken.remove(0).settle(Outcome::Ack).unwrap();
    assert!(
        wait_until(WAIT, || unacked(&q) == 1),
        "the second ack went out: {}",
        unacked(&q)
    );
    std::thread::sleep(Duration::from_millis(50));
    taken.remove(0).settle(Outcome::Ack).unwrap();
    assert!(
        wait_until(WAIT, || unacked(&q) == 0),
        "the last ack went out: {}",
        unacked(&q)
    );
    stop(&engine, STOP);
    assert_eq!(f.ready(&q), 0);
}

/// A channel operation sent after an ack applies after it, even though the ack waits to go out
/// in a batch: a `multiple` nack must not cover a message already acked.
#[test]
fn an_ack_waiting_for_its_batch_is_not_covered_by_a_later_multiple_nack() {
    let f = Fixture::new();
    let q = f.queue("ack-then-nack");
    f.declare(&q);
    for name in ["acked", "nacked1", "nacked2"] {
        f.send(&q, name);
    }
    let global = options(json!({"exchange": "", "prefetch": 400}));
    let engine = f.engine(&global);
    let w = engine.add_worker("AckThenNackWorker", &q, &global).unwrap();
    engine.start().unwrap();
    let taken: Vec<_> = (0..3).map(|_| expect_next(w.pool())).collect();
    assert_eq!(body(&taken[0]), "acked");
    taken[0].settle(Outcome::Ack).unwrap();
    w.apply(Action::Nack {
        tag: taken[2].info.delivery_tag,
        multiple: true,
        requeue: true,
    })
    .unwrap();
    let mut again: Vec<String> = (0..2).map(|_| body(&expect_next(w.pool()))).collect();
    again.sort();
    assert_eq!(again, ["nacked1", "nacked2"]);
    assert!(
        next(w.pool(), QUIET).is_none(),
        "the acked message stays acked"
    );
    stop(&engine, STOP);
}

/// Reject (and error) under Oneshot: rejected without requeue, so the queue's dead-letter
/// exchange gets it and the queue does not.
fn dead_letters(outcome: Outcome, label: &str) {
    let f = Fixture::new();
    let q = f.queue(label);
    let dlq = f.queue(&format!("{label}-dlq"));
    f.declare(&dlq);
    let mut global = options(json!({"exchange": ""}));
    cleats_core::config::deep_merge(&mut global, &obj(dlx_args(&dlq)));
    let engine = f.engine(&global);
    let w = engine.add_worker("DeadLetterWorker", &q, &global).unwrap();
    engine.start().unwrap();
    f.send(&q, "doomed");
    let d = expect_next(w.pool());
    d.settle(outcome).unwrap();
    let (dead, headers) = get_within(&f, &dlq, WAIT).expect("the message was dead-lettered");
    assert_eq!(dead, "doomed");
    assert_eq!(death_reason(&headers).as_deref(), Some("rejected"));
    assert!(next(w.pool(), QUIET).is_none(), "not requeued");
    assert_eq!(f.ready(&q), 0);
    stop(&engine, STOP);
    assert_eq!(f.ready(&q), 0, "not requeued by the stop either");
    assert_eq!(f.ready(&dlq), 0, "exactly one copy was dead-lettered");
}

#[test]
fn reject_dead_letters_and_does_not_requeue() {
    dead_letters(Outcome::Reject, "reject");
}

#[test]
fn error_dead_letters_like_reject() {
    dead_letters(
        Outcome::Error(ErrorInfo {
            class: "RuntimeError".into(),
            message: "boom".into(),
            backtrace: vec!["worker.rb:1:in `work'".into()],
        }),
        "error",
    );
}

#[test]
fn requeue_redelivers_with_the_redelivered_flag() {
    let f = Fixture::new();
    let q = f.queue("requeue");
    let global = options(json!({"exchange": ""}));
    let engine = f.engine(&global);
    let w = engine.add_worker("RequeueWorker", &q, &global).unwrap();
    engine.start().unwrap();
    f.send(&q, "again");
    let d = expect_next(w.pool());
    assert!(!d.info.redelivered);
    d.settle(Outcome::Requeue).unwrap();
    let d2 = expect_next(w.pool());
    assert_eq!(body(&d2), "again");
    assert!(
        d2.info.redelivered,
        "a requeued message comes back redelivered"
    );
    d2.settle(Outcome::Ack).unwrap();
    assert!(next(w.pool(), QUIET).is_none());
    stop(&engine, STOP);
    assert_eq!(f.ready(&q), 0);
    let m = w.metrics();
    assert_eq!((m.started, m.requeue, m.ack), (2, 1, 1));
}

#[test]
fn noop_leaves_the_message_unacked_until_the_channel_closes() {
    let f = Fixture::new();
    let q = f.queue("noop");
    let global = options(json!({"exchange": ""}));
    let engine = f.engine(&global);
    let w = engine.add_worker("NoopWorker", &q, &global).unwrap();
    engine.start().unwrap();
    f.send(&q, "left alone");
    let d = expect_next(w.pool());
    d.settle(Outcome::Noop).unwrap();
    std::thread::sleep(QUIET);
    assert_eq!(
        f.ready(&q),
        0,
        "not back in the queue while the engine runs"
    );
    assert_eq!(unacked(&q), 1, "still unacknowledged on the broker");
    assert!(next(w.pool(), QUIET).is_none());
    let report = stop(&engine, STOP);
    assert!(report.drained, "a noop is finished work: {report:?}");
    assert!(
        wait_until(WAIT, || f.ready(&q) == 1),
        "back in the queue after the stop"
    );
    let m = f.broker.get(&q).expect("the message");
    assert_eq!(m.delivery.data, b"left alone");
    assert!(m.delivery.redelivered);
}

// ---- 3. prefetch -----------------------------------------------------------------------------

#[test]
fn prefetch_bounds_work_in_progress() {
    const PREFETCH: usize = 5;
    const TOTAL: usize = 60;
    let f = Fixture::new();
    let q = f.queue("prefetch");
    f.declare(&q);
    for i in 0..TOTAL {
        f.send(&q, &format!("m{i}"));
    }
    let global = options(json!({"exchange": "", "prefetch": PREFETCH, "threads": 20}));
    let engine = f.engine(&global);
    let w = engine.add_worker("PrefetchWorker", &q, &global).unwrap();
    assert_eq!(w.pool().threads(), 20);
    engine.start().unwrap();

    let in_progress = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(AtomicBool::new(false));
    let threads = {
        let (in_progress, max, done, gate) =
            (in_progress.clone(), max.clone(), done.clone(), gate.clone());
        run_pool(w.pool(), move |_d| {
            let now = in_progress.fetch_add(1, SeqCst) + 1;
            max.fetch_max(now, SeqCst);
            while !gate.load(SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(30));
            in_progress.fetch_sub(1, SeqCst);
            done.fetch_add(1, SeqCst);
            Outcome::Ack
        })
    };
    // Hold the first deliveries: with 20 idle threads and 60 messages waiting, only the
    // prefetch window may be in progress.
    assert!(
        wait_until(WAIT, || in_progress.load(SeqCst) == PREFETCH),
        "the prefetch window fills: {}",
        in_progress.load(SeqCst)
    );
    std::thread::sleep(QUIET);
    assert_eq!(in_progress.load(SeqCst), PREFETCH);
    let held = unacked(&q);
    assert!(
        held <= PREFETCH as u64,
        "broker shows {held} unacked with prefetch {PREFETCH}"
    );
    assert_eq!(f.ready(&q) as usize, TOTAL - PREFETCH);

    // Release, and sample the broker's view while the rest is worked off.
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (samples, done, q) = (samples.clone(), done.clone(), q.clone());
        std::thread::spawn(move || {
            while done.load(SeqCst) < TOTAL {
                let n = unacked(&q);
                samples.lock().unwrap().push(n);
            }
        })
    };
    gate.store(true, SeqCst);
    assert!(
        wait_until(Duration::from_secs(20), || done.load(SeqCst) == TOTAL),
        "all {TOTAL} done: {}",
        done.load(SeqCst)
    );
    sampler.join().unwrap();
    let max = max.load(SeqCst);
    assert_eq!(
        max, PREFETCH,
        "work in progress peaked at {max}, prefetch is {PREFETCH}"
    );
    let samples = samples.lock().unwrap().clone();
    assert!(
        samples.iter().all(|n| *n <= PREFETCH as u64),
        "unacked samples {samples:?}"
    );

    stop(&engine, STOP);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(f.ready(&q), 0);
    let m = w.metrics();
    assert_eq!((m.started, m.ended, m.ack), (60, 60, 60));
}

/// The pool leaves a delivery to a thread busy with short work rather than wake a sleeper; when
/// that work runs long for once, the delivery still reaches an idle thread soon, not at the end
/// of its 60-second wait for a message.
#[test]
fn a_delivery_behind_work_that_runs_long_reaches_an_idle_thread() {
    const QUICK: usize = 200;
    let f = Fixture::new();
    let q = f.queue("behind-long-work");
    f.declare(&q);
    let global = options(json!({"exchange": "", "prefetch": 10, "threads": 2}));
    let engine = f.engine(&global);
    let w = engine
        .add_worker("BehindLongWorkWorker", &q, &global)
        .unwrap();
    engine.start().unwrap();

    let slow_started = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let settled = Arc::new(Mutex::new(Vec::new()));
    let hosts: Vec<_> = (0..2)
        .map(|_| {
            let pool = w.pool().clone();
            let (slow_started, release, settled) =
                (slow_started.clone(), release.clone(), settled.clone());
            std::thread::spawn(move || loop {
                // Long waits: only the pool's own wake-up brings an idle thread back in time.
                match pool.next(Duration::from_secs(60)).unwrap() {
                    cleats_core::Next::Delivery(d) => {
                        if body(&d) == "slow" {
                            slow_started.store(true, SeqCst);
                            let waited =
                                wait_until(Duration::from_secs(30), || release.load(SeqCst));
                            assert!(waited, "released");
                        }
                        d.settle(Outcome::Ack).unwrap();
                        settled.lock().unwrap().push(body(&d));
                    }
                    cleats_core::Next::Timeout => {}
                    cleats_core::Next::Stopped => return,
                }
            })
        })
        .collect();
    // Short work first, so the pool expects the next one to be short too.
    for i in 0..QUICK {
        f.send(&q, &format!("quick{i}"));
    }
    assert!(wait_until(WAIT, || settled.lock().unwrap().len() == QUICK));
    f.send(&q, "slow");
    assert!(wait_until(WAIT, || slow_started.load(SeqCst)));
    f.send(&q, "after");
    let reached = wait_until(WAIT, || {
        settled.lock().unwrap().iter().any(|b| b == "after")
    });
    release.store(true, SeqCst);
    assert!(
        reached,
        "the delivery behind the long work reached the idle thread"
    );

    stop(&engine, STOP);
    for h in hosts {
        h.join().unwrap();
    }
    assert_eq!(settled.lock().unwrap().len(), QUICK + 2);
}

// ---- 4. auto-ack ---------------------------------------------------------------------------

#[test]
fn auto_ack_consumes_without_settling_on_the_wire() {
    let f = Fixture::new();
    let q = f.queue("autoack");
    let dlq = f.queue("autoack-dlq");
    f.declare(&dlq);
    let mut global = options(json!({"exchange": "", "ack": false}));
    cleats_core::config::deep_merge(&mut global, &obj(dlx_args(&dlq)));
    let engine = f.engine(&global);
    let w = engine.add_worker("AutoAckWorker", &q, &global).unwrap();
    assert!(!w.config().ack);
    engine.start().unwrap();
    let outcomes = [
        Outcome::Ack,
        Outcome::Reject,
        Outcome::Requeue,
        Outcome::Error(ErrorInfo::default()),
        Outcome::Noop,
    ];
    for i in 0..outcomes.len() {
        f.send(&q, &format!("auto{i}"));
    }
    let deliveries: Vec<_> = (0..outcomes.len()).map(|_| expect_next(w.pool())).collect();
    // Received and not settled: the broker already considers them acknowledged.
    assert_eq!(unacked(&q), 0);
    assert_eq!(f.ready(&q), 0);
    for (d, outcome) in deliveries.iter().zip(outcomes) {
        d.settle(outcome).unwrap();
    }
    assert!(
        next(w.pool(), QUIET).is_none(),
        "requeue does nothing with auto-ack"
    );
    assert!(
        f.broker.get(&dlq).is_none(),
        "reject/error do nothing with auto-ack"
    );
    let m = w.metrics();
    assert_eq!((m.started, m.ended), (5, 5));
    assert_eq!(
        (m.ack, m.reject, m.requeue, m.error, m.noop),
        (0, 0, 0, 0, 0),
        "handled.* only counts when acking"
    );
    stop(&engine, STOP);
    assert_eq!(f.ready(&q), 0, "nothing comes back after the stop");
}

// ---- 5. topology ---------------------------------------------------------------------------

#[test]
fn routing_key_list_binds_every_key() {
    let f = Fixture::new();
    let q = f.queue("keys");
    let x = f.exchange("keys-x");
    let keys = ["alpha", "beta.one", "gamma"];
    let global = options(json!({"exchange": x, "routing_key": keys}));
    let engine = f.engine(&global);
    let w = engine.add_worker("KeysWorker", &q, &global).unwrap();
    engine.start().unwrap();
    let publisher = Publisher::new(&global).unwrap();
    for key in keys {
        let mut m = Message::new(key, key);
        m.mandatory = true;
        publisher.publish(&m).unwrap();
    }
    let mut got: Vec<(String, String)> = (0..keys.len())
        .map(|_| {
            let d = expect_next(w.pool());
            d.settle(Outcome::Ack).unwrap();
            (d.info.routing_key.clone(), body(&d))
        })
        .collect();
    got.sort();
    let expected: Vec<(String, String)> = keys
        .iter()
        .map(|k| (k.to_string(), k.to_string()))
        .collect();
    assert_eq!(got, expected);
    // The queue name is not bound when keys are given.
    let mut m = Message::new(q.clone(), "by name");
    m.mandatory = true;
    assert!(matches!(
        publisher.publish(&m),
        Err(Error::Unroutable { .. })
    ));
    publisher.close().unwrap();
    stop(&engine, STOP);
    assert_eq!(f.ready(&q), 0);
}

#[test]
fn bind_false_binds_nothing() {
    let f = Fixture::new();
    let q = f.queue("nobind");
    let x = f.exchange("nobind-x");
    let global = options(json!({"exchange": x, "bind": false}));
    let engine = f.engine(&global);
    let w = engine.add_worker("NoBindWorker", &q, &global).unwrap();
    engine.start().unwrap();
    let publisher = Publisher::new(&global).unwrap();
    let mut m = Message::new(q.clone(), "unrouted");
    m.mandatory = true;
    match publisher.publish(&m) {
        Err(Error::Unroutable {
            exchange,
            routing_key,
            reply_code,
            ..
        }) => {
            assert_eq!(exchange, x);
            assert_eq!(routing_key, q);
            assert_eq!(reply_code, 312);
        }
        other => panic!("expected Unroutable, got {other:?}"),
    }
    // Without mandatory the broker drops it; the queue (which exists) stays empty.
    publisher
        .publish(&Message::new(q.clone(), "dropped"))
        .unwrap();
    assert_eq!(f.ready(&q), 0);
    assert!(next(w.pool(), QUIET).is_none());
    // Still consuming: the default exchange reaches it.
    f.send(&q, "direct");
    let d = expect_next(w.pool());
    assert_eq!(body(&d), "direct");
    d.settle(Outcome::Ack).unwrap();
    publisher.close().unwrap();
    stop(&engine, STOP);
    assert_eq!(f.ready(&q), 0);
}

#[test]
fn default_exchange_routes_by_queue_name() {
    let f = Fixture::new();
    let q = f.queue("defaultx");
    let global = options(json!({"exchange": ""}));
    let engine = f.engine(&global);
    let w = engine
        .add_worker("DefaultExchangeWorker", &q, &global)
        .unwrap();
    engine.start().unwrap();
    let publisher = Publisher::new(&global).unwrap();
    let mut m = Message::new(q.clone(), "via default");
    m.mandatory = true;
    publisher.publish(&m).unwrap();
    let d = expect_next(w.pool());
    assert_eq!(body(&d), "via default");
    assert_eq!(d.info.exchange, "");
    assert_eq!(d.info.routing_key, q);
    d.settle(Outcome::Ack).unwrap();
    publisher.close().unwrap();
    stop(&engine, STOP);
    assert_eq!(f.ready(&q), 0);
}

#[test]
fn topic_exchange_with_a_pattern() {
    let f = Fixture::new();
    let q = f.queue("topic");
    let x = f.exchange("topic-x");
    let global = options(json!({
        "exchange": x, "exchange_options": {"type": "topic"}, "routing_key": "orders.*.created"
    }));
    let engine = f.engine(&global);
    let w = engine.add_worker("TopicWorker", &q, &global).unwrap();
    engine.start().unwrap();
    // Publishes through the default exchange config, naming the topic exchange per message.
    let publisher = Publisher::new(&options(json!({"exchange": ""}))).unwrap();
    for key in ["orders.eu.created", "orders.us.created"] {
        let mut m = Message::new(key, key);
        m.exchange = Some(x.clone());
        m.mandatory = true;
        publisher.publish(&m).unwrap();
    }
    for key in ["orders.eu.deleted", "orders.created", "orders.eu.x.created"] {
        let mut m = Message::new(key, key);
        m.exchange = Some(x.clone());
        m.mandatory = true;
        assert!(
            matches!(publisher.publish(&m), Err(Error::Unroutable { .. })),
            "{key} must not match orders.*.created"
        );
    }
    let mut got: Vec<String> = (0..2)
        .map(|_| {
            let d = expect_next(w.pool());
            d.settle(Outcome::Ack).unwrap();
            d.info.routing_key.clone()
        })
        .collect();
    got.sort();
    assert_eq!(got, ["orders.eu.created", "orders.us.created"]);
    assert!(next(w.pool(), QUIET).is_none());
    publisher.close().unwrap();
    stop(&engine, STOP);
    assert_eq!(f.ready(&q), 0);
}

#[test]
fn quorum_queue_through_queue_arguments() {
    let f = Fixture::new();
    let q = f.queue("quorum");
    let global = options(json!({
        "exchange": "",
        "queue_options": {"durable": true, "arguments": {"x-queue-type": "quorum"}}
    }));
    let engine = f.engine(&global);
    let w = engine.add_worker("QuorumWorker", &q, &global).unwrap();
    engine.start().unwrap();
    assert_eq!(queue_column(&q, "type"), "quorum");
    f.send(&q, "q1");
    f.send(&q, "q2");
    let d1 = expect_next(w.pool());
    d1.settle(Outcome::Requeue).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let d = expect_next(w.pool());
        seen.push(body(&d));
        d.settle(Outcome::Ack).unwrap();
    }
    seen.sort();
    assert_eq!(seen, ["q1", "q2"]);
    assert!(next(w.pool(), QUIET).is_none());
    stop(&engine, STOP);
    assert_eq!(f.ready(&q), 0);
}

// ---- 6. share_threads ----------------------------------------------------------------------

#[test]
fn share_threads_uses_one_pool_for_all_workers() {
    let f = Fixture::new();
    let q1 = f.queue("shared-a");
    let q2 = f.queue("shared-b");
    let global = options(json!({"exchange": "", "share_threads": true, "threads": 3}));
    let engine = f.engine(&global);
    let w1 = engine.add_worker("SharedA", &q1, &global).unwrap();
    let w2 = engine.add_worker("SharedB", &q2, &global).unwrap();
    assert_eq!(engine.pools().len(), 1);
    assert_eq!(engine.pools()[0].threads(), 3);
    engine.start().unwrap();
    for i in 0..3 {
        f.send(&q1, &format!("a{i}"));
        f.send(&q2, &format!("b{i}"));
    }
    let pool = engine.pools()[0].clone();
    let mut got = Vec::new();
    for _ in 0..6 {
        let d = expect_next(&pool);
        let expected_worker = if body(&d).starts_with('a') {
            "SharedA"
        } else {
            "SharedB"
        };
        assert_eq!(d.worker().name(), expected_worker, "{}", body(&d));
        got.push(body(&d));
        d.settle(Outcome::Ack).unwrap();
    }
    got.sort();
    assert_eq!(got, ["a0", "a1", "a2", "b0", "b1", "b2"]);
    // Each worker's own handle reaches the same pool.
    let d = {
        f.send(&q2, "via w1's pool");
        expect_next(w1.pool())
    };
    assert_eq!(d.worker().name(), "SharedB");
    d.settle(Outcome::Ack).unwrap();
    stop(&engine, STOP);
    assert_eq!(f.ready(&q1), 0);
    assert_eq!(f.ready(&q2), 0);
    assert_eq!(w1.metrics().ack, 3);
    assert_eq!(w2.metrics().ack, 4);
}

// ---- 7. metrics ----------------------------------------------------------------------------

#[test]
fn metrics_count_what_happened() {
    let f = Fixture::new();
    let q = f.queue("metrics");
    let dlq = f.queue("metrics-dlq");
    f.declare(&dlq);
    let mut global = options(json!({"exchange": ""}));
    cleats_core::config::deep_merge(&mut global, &obj(dlx_args(&dlq)));
    let engine = f.engine(&global);
    let w = engine.add_worker("MetricsWorker", &q, &global).unwrap();

    let names = w.metric_names();
    assert_eq!(names.started, "work.MetricsWorker.started");
    assert_eq!(names.time, "work.MetricsWorker.time");
    assert_eq!(names.ended, "work.MetricsWorker.ended");
    for (outcome, name) in [
        (Outcome::Ack, "ack"),
        (Outcome::Reject, "reject"),
        (Outcome::Requeue, "requeue"),
        (Outcome::Error(ErrorInfo::default()), "error"),
        (Outcome::Noop, "noop"),
    ] {
        assert_eq!(
            names.handled(&outcome),
            format!("work.MetricsWorker.handled.{name}")
        );
    }
    assert_eq!(w.metrics(), Default::default());

    engine.start().unwrap();
    const ACKS: u64 = 4;
    const REJECTS: u64 = 3;
    for i in 0..ACKS {
        f.send(&q, &format!("ack{i}"));
    }
    for i in 0..REJECTS {
        f.send(&q, &format!("reject{i}"));
    }
    for i in 0..ACKS + REJECTS {
        let d = expect_next(w.pool());
        let m = w.metrics();
        assert_eq!(
            (m.started, m.ended),
            (i + 1, i),
            "started counts at hand-out"
        );
        let outcome = if body(&d).starts_with("ack") {
            Outcome::Ack
        } else {
            Outcome::Reject
        };
        d.settle(outcome).unwrap();
    }
    let m = w.metrics();
    assert_eq!(m.started, ACKS + REJECTS);
    assert_eq!(m.ended, ACKS + REJECTS);
    assert_eq!(m.ack, ACKS);
    assert_eq!(m.reject, REJECTS);
    assert_eq!((m.requeue, m.error, m.noop), (0, 0, 0));
    assert!(m.time_max <= m.time_total);
    stop(&engine, STOP);
    assert_eq!(f.ready(&q), 0);
    assert_eq!(f.ready(&dlq) as u64, REJECTS);
}

// ---- 8. settling twice -----------------------------------------------------------------------

#[test]
fn settling_twice_is_an_error_and_the_channel_survives() {
    let f = Fixture::new();
    let q = f.queue("twice");
    let global = options(json!({"exchange": ""}));
    let engine = f.engine(&global);
    let w = engine.add_worker("TwiceWorker", &q, &global).unwrap();
    engine.start().unwrap();
    f.send(&q, "first");
    let d = expect_next(w.pool());
    d.settle(Outcome::Ack).unwrap();
    for again in [Outcome::Ack, Outcome::Reject, Outcome::Requeue] {
        match d.settle(again) {
            Err(Error::InvalidState { message }) => {
                assert!(message.contains("already settled"), "{message}")
            }
            other => panic!("a second settle must fail, got {other:?}"),
        }
    }
    // The same tag through the channel operations: ignored, not sent (the broker would close
    // the channel with PRECONDITION_FAILED for an unknown delivery tag).
    w.apply(Action::Ack {
        tag: d.info.delivery_tag,
        multiple: false,
    })
    .unwrap();
    w.apply(Action::Reject {
        tag: d.info.delivery_tag,
        requeue: true,
    })
    .unwrap();
    let m = w.metrics();
    assert_eq!((m.ended, m.ack, m.reject), (1, 1, 0), "counted once");

    // Later messages still flow on the same channel, and their acks work.
    for i in 0..3 {
        f.send(&q, &format!("later{i}"));
    }
    for _ in 0..3 {
        let d = expect_next(w.pool());
        assert!(body(&d).starts_with("later"));
        assert!(
            !d.info.redelivered,
            "the channel was not closed and reopened"
        );
        d.settle(Outcome::Ack).unwrap();
    }
    assert!(
        wait_until(WAIT, || unacked(&q) == 0),
        "acks after the double settle reached the broker"
    );
    assert!(matches!(
        engine.status(),
        cleats_core::Status::Connected { .. }
    ));
    stop(&engine, STOP);
    assert_eq!(f.ready(&q), 0);
}

#[test]
fn out_of_order_settlements_never_ack_a_noop() {
    let f = Fixture::new();
    let q = f.queue("order");
    let dlq = f.queue("order-dlq");
    f.declare(&dlq);
    let mut global = options(json!({"exchange": "", "prefetch": 10}));
    cleats_core::config::deep_merge(&mut global, &obj(dlx_args(&dlq)));
    let engine = f.engine(&global);
    let w = engine.add_worker("OrderWorker", &q, &global).unwrap();
    engine.start().unwrap();
    for i in 0..10 {
        f.send(&q, &format!("m{i}"));
    }
    let deliveries: Vec<_> = (0..10).map(|_| expect_next(w.pool())).collect();
    // Finish in a scrambled order: m3 is a noop, m6 is rejected, the rest acked.
    for i in [9, 0, 5, 3, 1, 8, 2, 6, 7, 4] {
        let d = &deliveries[i];
        assert_eq!(body(d), format!("m{i}"));
        let outcome = match i {
            3 => Outcome::Noop,
            6 => Outcome::Reject,
            _ => Outcome::Ack,
        };
        d.settle(outcome).unwrap();
    }
    let (dead, _) = get_within(&f, &dlq, WAIT).expect("m6 dead-lettered");
    assert_eq!(dead, "m6");
    assert!(
        wait_until(WAIT, || unacked(&q) == 1),
        "only the noop stays unacked: {}",
        unacked(&q)
    );
    stop(&engine, STOP);
    assert!(wait_until(WAIT, || f.ready(&q) == 1));
    let back = f.broker.get(&q).expect("the noop message");
    assert_eq!(back.delivery.data, b"m3");
    assert!(f.broker.get(&dlq).is_none());
}

// ---- 9. custom handler ---------------------------------------------------------------------

#[test]
fn custom_handler_settles_only_through_channel_operations() {
    let f = Fixture::new();
    let q = f.queue("custom");
    let dlq = f.queue("custom-dlq");
    f.declare(&dlq);
    let mut global = options(json!({"exchange": "", "handler": "custom"}));
    cleats_core::config::deep_merge(&mut global, &obj(dlx_args(&dlq)));
    let engine = f.engine(&global);
    let w = engine.add_worker("CustomWorker", &q, &global).unwrap();
    assert_eq!(w.config().handler, cleats_core::HandlerKind::Custom);
    engine.start().unwrap();

    f.send(&q, "to-ack");
    f.send(&q, "to-reject");
    let a = expect_next(w.pool());
    let r = expect_next(w.pool());
    assert_eq!(
        (body(&a).as_str(), body(&r).as_str()),
        ("to-ack", "to-reject")
    );
    // settle(Outcome) records the metrics and sends nothing: the handler object settles.
    a.settle(Outcome::Ack).unwrap();
    r.settle(Outcome::Reject).unwrap();
    std::thread::sleep(QUIET);
    assert_eq!(unacked(&q), 2, "settle sent nothing under a custom handler");
    assert!(f.broker.get(&dlq).is_none());

    w.apply(Action::Ack {
        tag: a.info.delivery_tag,
        multiple: false,
    })
    .unwrap();
    w.apply(Action::Reject {
        tag: r.info.delivery_tag,
        requeue: false,
    })
    .unwrap();
    let (dead, _) = get_within(&f, &dlq, WAIT).expect("the rejected message was dead-lettered");
    assert_eq!(dead, "to-reject");
    assert!(wait_until(WAIT, || unacked(&q) == 0));

    // A multiple ack on the highest tag settles everything below it.
    for i in 0..4 {
        f.send(&q, &format!("batch{i}"));
    }
    let batch: Vec<_> = (0..4).map(|_| expect_next(w.pool())).collect();
    for d in &batch {
        d.settle(Outcome::Ack).unwrap();
    }
    let highest = batch.iter().map(|d| d.info.delivery_tag).max().unwrap();
    assert_eq!(highest, batch.last().unwrap().info.delivery_tag);
    w.apply(Action::Ack {
        tag: highest,
        multiple: true,
    })
    .unwrap();
    assert!(
        wait_until(WAIT, || unacked(&q) == 0),
        "one multiple ack covered the batch"
    );
    let report = stop(&engine, STOP);
    assert!(report.drained, "{report:?}");
    assert_eq!(report.requeued, 0);
    assert_eq!(f.ready(&q), 0, "nothing requeued at the stop");
    assert!(f.broker.get(&dlq).is_none(), "only the rejected one");
    let m = w.metrics();
    assert_eq!((m.started, m.ended, m.ack, m.reject), (6, 6, 5, 1));
}

/// Sneakers custom handlers often do nothing in `noop` (and some ack later, in batches): once
/// `work` returned and the delivery is settled, the work is finished. A graceful stop must not
/// wait for it until the deadline nor report it as unfinished work; the broker puts the
/// unacknowledged message back when the channel closes, as it does for Oneshot's noop.
#[test]
fn custom_handler_settled_but_unacked_is_not_work_in_progress() {
    let f = Fixture::new();
    let q = f.queue("custom-noop");
    let global = options(json!({"exchange": "", "handler": "custom"}));
    let engine = f.engine(&global);
    let w = engine.add_worker("CustomNoopWorker", &q, &global).unwrap();
    engine.start().unwrap();
    f.send(&q, "handler did nothing");
    let d = expect_next(w.pool());
    d.settle(Outcome::Noop).unwrap();
    let report = stop(&engine, Duration::from_secs(3));
    assert!(
        wait_until(WAIT, || f.ready(&q) == 1),
        "the unacknowledged message is back in the queue"
    );
    assert_eq!(
        report,
        cleats_core::StopReport {
            drained: true,
            requeued: 0
        },
        "work had finished (settled) before the stop; nothing was in progress"
    );
}

// ---- 10. bad input -------------------------------------------------------------------------

#[test]
fn bad_worker_options_name_the_option() {
    let global = options(json!({"exchange": ""}));
    let engine = Engine::new(&global).unwrap();
    let q = unique("never-declared");
    let cases = [
        (json!({"prefetch": 0}), "prefetch"),
        (json!({"threads": 0}), "threads"),
        (
            json!({"exchange_options": {"type": "fanoutt"}}),
            "exchange_options.type",
        ),
        (json!({"amqp": "amqp://guest:Sup3rSecretPw@:5672/"}), "amqp"),
        (
            json!({"amqp": "http://guest:Sup3rSecretPw@127.0.0.1:5672/"}),
            "amqp",
        ),
    ];
    for (layer, option) in cases {
        let err = engine
            .add_worker("BadWorker", &q, &obj(layer.clone()))
            .expect_err(&format!("{layer} must be refused"));
        match &err {
            Error::InvalidOption { option: o, .. } => assert_eq!(o, option, "{layer}"),
            other => panic!("{layer}: expected InvalidOption, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(&format!("`{option}`")), "{layer}: {text}");
        assert!(!text.contains("Sup3rSecretPw"), "password leaked: {text}");
    }
    assert!(engine.workers().is_empty(), "no worker was added");
    // The same through the global layer.
    let err = Engine::new(&options(
        json!({"amqp": "amqp://guest:Sup3rSecretPw@:5672/"}),
    ))
    .unwrap_err();
    assert!(matches!(&err, Error::InvalidOption { option, .. } if option == "amqp"));
    assert!(!err.to_string().contains("Sup3rSecretPw"));
}

#[test]
fn wrong_password_is_an_authentication_error() {
    init_logging();
    for password in ["wrong", "Wr0ngPassw0rd-zz"] {
        let global = options(json!({
            "exchange": "", "amqp": format!("amqp://guest:{password}@127.0.0.1:5672")
        }));
        let engine = Engine::new(&global).unwrap();
        engine
            .add_worker("AuthWorker", &unique("auth"), &global)
            .unwrap();
        let err = engine.start().expect_err("a wrong password must fail");
        let text = err.to_string();
        assert!(
            matches!(err, Error::AuthenticationFailed { .. }),
            "expected AuthenticationFailed, got {err:?}"
        );
        assert!(!text.contains(password), "password leaked: {text}");
        assert!(!format!("{err:?}").contains(password), "password leaked");
        assert_eq!(engine.status(), cleats_core::Status::Stopped);
    }
}

#[test]
fn closed_port_is_a_connection_error() {
    init_logging();
    let global = options(json!({
        "exchange": "", "amqp": "amqp://guest:ClosedP0rtSecret@127.0.0.1:1"
    }));
    let engine = Engine::new(&global).unwrap();
    engine
        .add_worker("PortWorker", &unique("port"), &global)
        .unwrap();
    let err = engine.start().expect_err("nothing listens on port 1");
    let text = err.to_string();
    assert!(
        matches!(err, Error::ConnectionFailed { .. }),
        "expected ConnectionFailed, got {err:?}"
    );
    assert!(err.is_transient());
    assert!(
        !text.contains("ClosedP0rtSecret"),
        "password leaked: {text}"
    );
    assert!(!format!("{err:?}").contains("ClosedP0rtSecret"));
    assert!(text.contains("127.0.0.1"), "names the broker: {text}");
}

#[test]
fn bodies_larger_than_a_frame_arrive_whole() {
    // frame_max defaults to 32 KiB: these bodies travel in several body frames each way.
    let f = Fixture::new();
    let q = f.queue("bigbody");
    let global = options(json!({"exchange": ""}));
    let engine = f.engine(&global);
    let w = engine.add_worker("BigBodyWorker", &q, &global).unwrap();
    engine.start().unwrap();
    let publisher = Publisher::new(&global).unwrap();
    let bodies: Vec<Vec<u8>> = [32 * 1024 - 8, 32 * 1024, 100_000, 3 * 1024 * 1024 + 7]
        .iter()
        .map(|&n| (0..n).map(|i| (i % 251) as u8).collect())
        .collect();
    for body in &bodies {
        publisher
            .publish(&Message::new(q.clone(), body.clone()))
            .unwrap();
    }
    for body in &bodies {
        let d = expect_next(w.pool());
        assert_eq!(d.body.len(), body.len());
        assert!(
            d.body == *body,
            "a {}-byte body came back changed",
            body.len()
        );
        d.settle(Outcome::Ack).unwrap();
    }
}
