//! The Maxretry handler against a real broker: the retry round trip through `Q-retry` and
//! `Q-retry-requeue`, the error queue and its `retry_info` header, requeues that bypass counting,
//! the topology it declares (custom names and quorum queues included) and earlier retry history.
mod common;
use cleats_core::config::HandlerKind;
use cleats_core::{
    Delivery, Engine, ErrorInfo, FieldValue, Message, Options, Outcome, Publisher, Table, Worker,
};
use common::*;
use lapin::options::ExchangeDeleteOptions;
use lapin::types::AMQPValue;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(10);

/// What a work thread saw of one delivery.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    exchange: String,
    routing_key: String,
    redelivered: bool,
    headers: Table,
}

/// The names Maxretry uses for one worker.
#[derive(Debug, Clone)]
struct Names {
    queue: String,
    exchange: String,
    retry: String,
    error: String,
    requeue: String,
}

/// A started engine with one Maxretry worker. Dropping it stops the engine and deletes every
/// queue and exchange the test created, also when the test fails.
struct Fixture {
    names: Names,
    opts: Options,
    engine: Engine,
    worker: Worker,
    threads: Vec<JoinHandle<()>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stopped: bool,
}

impl Fixture {
    /// Starts an engine for queue `unique(name)` on exchange `unique(name-ex)`, with
    /// `handler: maxretry` and `extra` merged over the test options.
    fn start(name: &str, extra: Value) -> Fixture {
        init_logging();
        let queue = unique(name);
        let exchange = unique(&format!("{name}-ex"));
        let mut layer = json!({"exchange": exchange, "handler": "maxretry"});
        cleats_core::config::deep_merge(
            layer.as_object_mut().unwrap(),
            extra.as_object().expect("an object"),
        );
        let opts = options(layer);
        let engine = Engine::new(&opts).unwrap();
        let worker = engine
            .add_worker("MaxretryWorker", &queue, &Options::new())
            .unwrap();
        let HandlerKind::Maxretry(m) = &worker.config().handler else {
            panic!(
                "handler maxretry expected, got {:?}",
                worker.config().handler
            )
        };
        let names = Names {
            queue,
            exchange,
            retry: m.retry_exchange.clone(),
            error: m.error_exchange.clone(),
            requeue: m.requeue_exchange.clone(),
        };
        let fixture = Fixture {
            names,
            opts,
            engine,
            worker,
            threads: Vec::new(),
            seen: Arc::new(Mutex::new(Vec::new())),
            stopped: false,
        };
        fixture.engine.start().expect("engine starts");
        fixture
    }

    /// Runs the pool's threads: each delivery is recorded, then settled with
    /// `outcome(index of the delivery, delivery)`.
    fn work(&mut self, outcome: impl Fn(usize, &Delivery) -> Outcome + Send + Sync + 'static) {
        let seen = self.seen.clone();
        self.threads = run_pool(self.worker.pool(), move |d| {
            let index = {
                let mut seen = seen.lock().unwrap();
                seen.push(Seen {
                    at: Instant::now(),
                    exchange: d.info.exchange.clone(),
                    routing_key: d.info.routing_key.clone(),
                    redelivered: d.info.redelivered,
                    headers: d.headers(),
                });
                seen.len() - 1
            };
            outcome(index, d)
        });
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn publish(&self, message: &Message) {
        let publisher = Publisher::new(&self.opts).unwrap();
        publisher.publish(message).expect("publish");
        publisher.close().unwrap();
    }

    fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            let report = stop(&self.engine, Duration::from_secs(5));
            assert!(report.drained, "{report:?}");
            for t in self.threads.drain(..) {
                t.join().unwrap();
            }
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            let _ = self.engine.stop(Some(Duration::from_secs(5)));
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
        let n = &self.names;
        delete_all(
            &[&n.queue, &n.retry, &n.error],
            &[&n.exchange, &n.retry, &n.error, &n.requeue],
        );
    }
}

/// Deletes queues and exchanges, each on its own channel so one failure does not stop the rest.
fn delete_all(queues: &[&str], exchanges: &[&str]) {
    let b = Broker::connect();
    for q in queues {
        b.delete_queue(q);
    }
    cleats_core::runtime::handle().block_on(async {
        for e in exchanges {
            if let Ok(ch) = b.conn.create_channel().await {
                let _ = ch
                    .exchange_delete((*e).into(), ExchangeDeleteOptions::default())
                    .await;
                let _ = ch.close(200, "done".into()).await;
            }
        }
        let _ = b.conn.close(200, "done".into()).await;
    });
}

fn backtrace(lines: usize) -> Vec<String> {
    (0..lines)
        .map(|i| format!("/app/workers/order_worker.rb:{}:in `step_{i}'", 10 + i))
        .collect()
}

fn boom() -> Outcome {
    Outcome::Error(ErrorInfo {
        class: "RuntimeError".into(),
        message: "boom".into(),
        backtrace: backtrace(15),
    })
}

fn amqp_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(i) => json!(i),
        AMQPValue::ShortShortUInt(i) => json!(i),
        AMQPValue::ShortInt(i) => json!(i),
        AMQPValue::ShortUInt(i) => json!(i),
        AMQPValue::LongInt(i) => json!(i),
        AMQPValue::LongUInt(i) => json!(i),
        AMQPValue::LongLongInt(i) => json!(i),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_to_json).collect()),
        AMQPValue::FieldTable(t) => Value::Object(
            t.inner()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), amqp_to_json(v)))
                .collect(),
        ),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::DecimalValue(d) => json!(d.value),
        AMQPValue::Void => Value::Null,
    }
}

/// Headers of a message taken with basic.get, as JSON.
fn headers_json(m: &lapin::message::BasicGetMessage) -> Value {
    m.delivery
        .properties
        .headers()
        .as_ref()
        .map(|t| amqp_to_json(&AMQPValue::FieldTable(t.clone())))
        .unwrap_or(Value::Null)
}

/// The parsed `retry_info` header (a JSON text) of a message from the error queue.
fn retry_info(m: &lapin::message::BasicGetMessage) -> Value {
    let headers = headers_json(m);
    let text = headers["retry_info"]
        .as_str()
        .unwrap_or_else(|| panic!("no retry_info text header in {headers}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("retry_info is not JSON ({e}): {text}"))
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SSZ`, or None when `s` has another form.
fn parse_iso8601_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The `x-death` entry for `queue` (and `reason`) in a header table, if any.
fn death<'a>(headers: &'a Table, queue: &str, reason: &str) -> Option<&'a Table> {
    headers
        .get("x-death")?
        .as_array()?
        .iter()
        .filter_map(FieldValue::as_table)
        .find(|d| {
            d.get("queue").and_then(FieldValue::as_str) == Some(queue)
                && d.get("reason").and_then(FieldValue::as_str) == Some(reason)
        })
}

/// Publishes one message that always fails with `outcome`, and checks the retry path: it is
/// delivered 1 + 2 times (each retry after the TTL, back through the requeue exchange), then
/// lands in the error queue. Returns the error queue's message.
fn fail_three_times(name: &str, outcome: Outcome) -> lapin::message::BasicGetMessage {
    let mut f = Fixture::start(
        name,
        json!({"retry_timeout": 100, "retry_max_times": 2, "routing_key": "orders.created"}),
    );
    f.work(move |_, _| outcome.clone());
    let sent = Message::from_options(
        br#"{"order": 42}"#.to_vec(),
        json!({"routing_key": "orders.created", "content_type": "application/json",
               "headers": {"tenant": "acme"}, "message_id": "m-1"})
        .as_object()
        .unwrap(),
    )
    .unwrap();
    f.publish(&sent);
    let b = Broker::connect();
    let n = f.names.clone();
    assert!(
        wait_until(WAIT, || b.ready(&n.error) == 1),
        "the message never reached {}; deliveries: {:#?}",
        n.error,
        f.seen()
    );
    // Nothing more may arrive once the message is in the error queue.
    std::thread::sleep(Duration::from_millis(400));
    f.stop();
    let seen = f.seen();
    assert_eq!(seen.len(), 3, "1 + retry_max_times deliveries: {seen:#?}");
    for s in &seen {
        assert_eq!(s.routing_key, "orders.created");
    }
    assert_eq!(seen[0].exchange, n.exchange);
    assert!(death(&seen[0].headers, &n.queue, "rejected").is_none());
    for (i, s) in seen.iter().enumerate().skip(1) {
        // Back through Q-retry (expired there) and Q-retry-requeue.
        assert_eq!(s.exchange, n.requeue, "delivery {i}: {s:#?}");
        let rejected = death(&s.headers, &n.queue, "rejected")
            .unwrap_or_else(|| panic!("delivery {i} has no x-death for {}: {s:#?}", n.queue));
        assert_eq!(rejected.get("count"), Some(&FieldValue::Int(i as i64)));
        assert!(
            death(&s.headers, &n.retry, "expired").is_some(),
            "delivery {i} did not expire in {}: {s:#?}",
            n.retry
        );
        let waited = s.at - seen[i - 1].at;
        assert!(
            waited >= Duration::from_millis(90),
            "retry {i} came back after {waited:?}, before the 100 ms TTL"
        );
    }
    assert_eq!(b.ready(&n.queue), 0);
    assert_eq!(b.ready(&n.retry), 0);
    let m = b.get(&n.error).expect("the message in the error queue");
    assert_eq!(m.delivery.data, br#"{"order": 42}"#);
    assert_eq!(m.delivery.routing_key.as_str(), "orders.created");
    assert_eq!(m.delivery.exchange.as_str(), n.error);
    assert_eq!(b.ready(&n.error), 0);
    m
}

/// Checks the fields every `retry_info` entry has.
fn check_common_entry(info: &Value, attempts: u64) {
    assert_eq!(info["num_attempts"], json!(attempts), "{info:#}");
    let failed_at = info["failed_at"].as_str().expect("failed_at text");
    let at = parse_iso8601_utc(failed_at)
        .unwrap_or_else(|| panic!("failed_at {failed_at:?} is not ISO 8601 UTC"));
    assert!(
        (now_secs() - at).abs() < 120,
        "failed_at {failed_at} is not now"
    );
    let props = info["properties"].as_object().expect("properties object");
    assert_eq!(props["content_type"], "application/json", "{info:#}");
    assert_eq!(props["message_id"], "m-1", "{info:#}");
    assert_eq!(props["headers"]["tenant"], "acme", "{info:#}");
    assert!(
        props["headers"]["x-death"].is_array(),
        "properties.headers keep the x-death of the failed delivery: {info:#}"
    );
}

#[test]
fn error_outcome_retries_then_lands_in_the_error_queue() {
    let m = fail_three_times("mr-error", boom());
    let info = retry_info(&m);
    assert!(
        info.is_object(),
        "one failure round: an object, got {info:#}"
    );
    assert_eq!(info["error"], "boom");
    assert_eq!(info["error_class"], "RuntimeError");
    assert_eq!(info["error_message"], "boom");
    assert_eq!(info["backtrace"], json!(backtrace(10)), "first 10 lines");
    check_common_entry(&info, 3);
}

#[test]
fn reject_outcome_takes_the_same_path() {
    let m = fail_three_times("mr-reject", Outcome::Reject);
    let info = retry_info(&m);
    assert_eq!(info["error"], "reject");
    for key in ["error_class", "error_message", "backtrace"] {
        assert!(info.get(key).is_none(), "{key} in {info:#}");
    }
    check_common_entry(&info, 3);
}

#[test]
fn requeue_bypasses_retry_counting() {
    let mut f = Fixture::start(
        "mr-requeue",
        json!({"retry_timeout": 100, "retry_max_times": 2}),
    );
    f.work(|i, _| {
        if i < 4 {
            Outcome::Requeue
        } else {
            Outcome::Ack
        }
    });
    let q = f.names.queue.clone();
    f.publish(&Message::new(q.clone(), "again"));
    assert!(wait_until(WAIT, || f.seen().len() >= 5), "{:#?}", f.seen());
    std::thread::sleep(Duration::from_millis(400));
    f.stop();
    let seen = f.seen();
    assert_eq!(seen.len(), 5, "4 requeues then an ack: {seen:#?}");
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s.exchange, f.names.exchange, "never dead-lettered: {s:#?}");
        assert!(!s.headers.contains_key("x-death"), "{s:#?}");
        assert_eq!(s.redelivered, i > 0);
    }
    let b = Broker::connect();
    assert_eq!(b.ready(&f.names.error), 0, "a requeue is not a failure");
    assert_eq!(b.ready(&f.names.retry), 0);
    assert_eq!(b.ready(&q), 0);
}

/// The rows of a `rabbitmqctl --formatter json -q list_...` command.
fn list_json(args: &[&str]) -> Vec<Value> {
    let out = rabbitmqctl(&[&["--formatter", "json", "-q"], args].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {} said {out}", args[0]))
}

/// One row per queue of `rabbitmqctl --formatter json list_queues name arguments type`,
/// with the arguments as a JSON object.
fn list_queues() -> Vec<(String, Value, String)> {
    list_json(&["list_queues", "name", "arguments", "type"])
        .into_iter()
        .map(|r| {
            let args = match &r["arguments"] {
                Value::Object(o) => Value::Object(o.clone()),
                // RabbitMQ 3.x: [["key", "type", value], ...] (or [] when there are none).
                Value::Array(rows) => Value::Object(
                    rows.iter()
                        .filter_map(|row| {
                            let row = row.as_array()?;
                            Some((row.first()?.as_str()?.to_string(), row.last()?.clone()))
                        })
                        .collect(),
                ),
                _ => json!({}),
            };
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                args,
                r["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn list_exchanges() -> Vec<(String, String)> {
    let out = rabbitmqctl(&[
        "--formatter",
        "json",
        "-q",
        "list_exchanges",
        "name",
        "type",
    ]);
    let rows: Vec<Value> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: list_exchanges said {out}"));
    rows.iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// (source, destination, routing key) of every binding.
fn list_bindings() -> Vec<(String, String, String)> {
    list_json(&[
        "list_bindings",
        "source_name",
        "destination_name",
        "routing_key",
    ])
    .iter()
    .map(|r| {
        let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
        (s("source_name"), s("destination_name"), s("routing_key"))
    })
    .collect()
}

/// Checks the topology Maxretry declared for `n` against rabbitmqctl.
fn check_topology(n: &Names, retry_timeout: u64) {
    let exchanges = list_exchanges();
    for e in [&n.retry, &n.error, &n.requeue] {
        let kind = exchanges.iter().find(|(name, _)| name == e).map(|x| &x.1);
        assert_eq!(kind.map(String::as_str), Some("topic"), "exchange {e}");
    }
    let queues = list_queues();
    let args = |q: &str| {
        queues
            .iter()
            .find(|(name, _, _)| name == q)
            .map(|x| x.1.clone())
            .unwrap_or_else(|| panic!("queue {q} missing"))
    };
    let retry = args(&n.retry);
    assert_eq!(retry["x-dead-letter-exchange"], json!(n.requeue), "{retry}");
    assert_eq!(retry["x-message-ttl"], json!(retry_timeout), "{retry}");
    args(&n.error);
    let q = args(&n.queue);
    assert_eq!(q["x-dead-letter-exchange"], json!(n.retry), "{q}");
    let bindings = list_bindings();
    for (source, dest) in [
        (&n.retry, &n.retry),
        (&n.error, &n.error),
        (&n.requeue, &n.queue),
    ] {
        assert!(
            bindings
                .iter()
                .any(|(s, d, k)| s == source && d == dest && k == "#"),
            "{dest} is not bound to {source} with #"
        );
    }
}

#[test]
fn declares_the_retry_topology() {
    let f = Fixture::start(
        "mr-topo",
        json!({"retry_timeout": 1500, "retry_max_times": 2}),
    );
    let n = &f.names;
    assert_eq!(n.retry, format!("{}-retry", n.queue));
    assert_eq!(n.error, format!("{}-error", n.queue));
    assert_eq!(n.requeue, format!("{}-retry-requeue", n.queue));
    check_topology(n, 1500);
}

#[test]
fn custom_exchange_names_are_honoured() {
    let retry = unique("mr-custom-r");
    let error = unique("mr-custom-e");
    let requeue = unique("mr-custom-rq");
    let mut f = Fixture::start(
        "mr-custom",
        json!({"retry_timeout": 100, "retry_max_times": 1, "retry_exchange": retry,
               "retry_error_exchange": error, "retry_requeue_exchange": requeue}),
    );
    assert_eq!(
        (&f.names.retry, &f.names.error, &f.names.requeue),
        (&retry, &error, &requeue)
    );
    check_topology(&f.names, 100);
    // The round trip uses them.
    f.work(|_, _| Outcome::Reject);
    f.publish(&Message::new(f.names.queue.clone(), "custom"));
    let b = Broker::connect();
    assert!(wait_until(WAIT, || b.ready(&error) == 1), "{:#?}", f.seen());
    f.stop();
    let seen = f.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[1].exchange, requeue);
    assert_eq!(b.get(&error).unwrap().delivery.data, b"custom");
    for q in [
        format!("{}-retry", f.names.queue),
        format!("{}-error", f.names.queue),
    ] {
        assert!(
            !list_queues().iter().any(|(name, _, _)| *name == q),
            "{q} declared although a custom name was given"
        );
    }
}

#[test]
fn quorum_queues_make_quorum_retry_and_error_queues() {
    let mut f = Fixture::start(
        "mr-quorum",
        json!({"retry_timeout": 100, "retry_max_times": 1,
               "queue_options": {"durable": true, "arguments": {"x-queue-type": "quorum"}}}),
    );
    let n = f.names.clone();
    let queues = list_queues();
    for q in [&n.queue, &n.retry, &n.error] {
        let kind = queues.iter().find(|(name, _, _)| name == q).map(|x| &x.2);
        assert_eq!(kind.map(String::as_str), Some("quorum"), "queue {q}");
    }
    // And the retry path works through quorum queues.
    f.work(|_, _| boom());
    f.publish(&Message::new(n.queue.clone(), "quorum"));
    let b = Broker::connect();
    assert!(
        wait_until(WAIT, || b.ready(&n.error) == 1),
        "{:#?}",
        f.seen()
    );
    f.stop();
    assert_eq!(f.seen().len(), 2, "{:#?}", f.seen());
    let m = b.get(&n.error).unwrap();
    assert_eq!(m.delivery.data, b"quorum");
    assert_eq!(retry_info(&m)["num_attempts"], 2);
}

/// An `x-death` table entry as RabbitMQ writes it.
fn x_death(queue: &str, reason: &str, exchange: &str, count: i64) -> FieldValue {
    let mut t = Table::new();
    t.insert("count".into(), FieldValue::Int(count));
    t.insert("queue".into(), FieldValue::Str(queue.into()));
    t.insert("reason".into(), FieldValue::Str(reason.into()));
    t.insert("exchange".into(), FieldValue::Str(exchange.into()));
    t.insert(
        "routing-keys".into(),
        FieldValue::Array(vec![FieldValue::Str("orders.created".into())]),
    );
    t.insert("time".into(), FieldValue::Timestamp(now_secs() as u64));
    FieldValue::Table(t)
}

#[test]
fn earlier_retry_info_is_kept_as_a_list_newest_first() {
    let mut f = Fixture::start(
        "mr-history",
        json!({"retry_timeout": 100, "retry_max_times": 2, "routing_key": "orders.created"}),
    );
    let n = f.names.clone();
    f.work(|_, _| boom());
    let earlier = json!({"error": "earlier", "error_class": "IOError", "num_attempts": 3,
                         "failed_at": "2026-01-02T03:04:05Z", "properties": {}});
    let older = json!({"error": "oldest", "num_attempts": 3,
                       "failed_at": "2025-01-02T03:04:05Z", "properties": {}});
    let deaths = FieldValue::Array(vec![
        x_death(&n.retry, "expired", &n.retry, 2),
        x_death(&n.queue, "rejected", &n.exchange, 2),
    ]);
    let publish = |body: &str, info: &Value| {
        let mut m = Message::new("orders.created", body.as_bytes().to_vec())
            .with_header("retry_info", FieldValue::Str(info.to_string()))
            .with_header("x-death", deaths.clone());
        m.properties.content_type = Some("application/json".into());
        f.publish(&m);
    };
    // One earlier round (an object), and two earlier rounds (already a list).
    publish("one-round", &earlier);
    publish("two-rounds", &json!([earlier, older]));
    let b = Broker::connect();
    assert!(
        wait_until(WAIT, || b.ready(&n.error) == 2),
        "{:#?}",
        f.seen()
    );
    std::thread::sleep(Duration::from_millis(300));
    f.stop();
    assert_eq!(
        f.seen().len(),
        2,
        "straight to the error queue: {:#?}",
        f.seen()
    );
    for _ in 0..2 {
        let m = b.get(&n.error).unwrap();
        let info = retry_info(&m);
        let list = info
            .as_array()
            .unwrap_or_else(|| panic!("a list: {info:#}"));
        let newest = &list[0];
        assert_eq!(newest["error"], "boom", "{info:#}");
        assert_eq!(newest["num_attempts"], 3, "{info:#}");
        assert!(parse_iso8601_utc(newest["failed_at"].as_str().unwrap()).is_some());
        let headers = &newest["properties"]["headers"];
        assert!(headers.get("retry_info").is_none(), "nested: {info:#}");
        assert!(headers["x-death"].is_array(), "{info:#}");
        let history = match &m.delivery.data[..] {
            b"one-round" => vec![earlier.clone()],
            b"two-rounds" => vec![earlier.clone(), older.clone()],
            other => panic!("unexpected body {:?}", String::from_utf8_lossy(other)),
        };
        assert_eq!(
            list[1..],
            history,
            "earlier entries kept in order: {info:#}"
        );
    }
}

#[test]
fn many_concurrent_failures_all_reach_the_error_queue() {
    let mut f = Fixture::start(
        "mr-many",
        json!({"retry_timeout": 100, "retry_max_times": 1, "prefetch": 20, "threads": 8}),
    );
    let n = f.names.clone();
    f.work(|i, _| if i % 2 == 0 { Outcome::Reject } else { boom() });
    let publisher = Publisher::new(&f.opts).unwrap();
    let messages: Vec<Message> = (0..200)
        .map(|i| Message::new(n.queue.clone(), format!("m{i}")))
        .collect();
    publisher.publish_all(&messages).unwrap();
    publisher.close().unwrap();
    let b = Broker::connect();
    assert!(
        wait_until(WAIT, || b.ready(&n.error) == 200),
        "{} of 200 in the error queue",
        b.ready(&n.error)
    );
    std::thread::sleep(Duration::from_millis(300));
    f.stop();
    assert_eq!(f.seen().len(), 400, "each message twice");
    assert_eq!(b.ready(&n.queue), 0);
    assert_eq!(b.ready(&n.retry), 0);
    let mut bodies: Vec<Vec<u8>> = (0..200)
        .map(|_| b.get(&n.error).unwrap().delivery.data)
        .collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 200, "every message once");
}

/// The copy in the error queue is where failed messages wait for a human: it must not inherit
/// the original's per-message TTL and vanish (Sneakers publishes it with only the routing key
/// and the retry_info header).
#[test]
fn error_queue_copy_does_not_expire_with_the_original_ttl() {
    let mut f = Fixture::start(
        "mr-ttl",
        json!({"retry_timeout": 100, "retry_max_times": 0}),
    );
    let n = f.names.clone();
    f.work(|_, _| boom());
    let m = Message::from_options(
        b"keep me".to_vec(),
        json!({"to_queue": n.queue, "expiration": "1000"})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    f.publish(&m);
    let b = Broker::connect();
    assert!(
        wait_until(WAIT, || b.ready(&n.error) == 1),
        "{:#?}",
        f.seen()
    );
    f.stop();
    std::thread::sleep(Duration::from_millis(1500));
    let m = b
        .get(&n.error)
        .expect("the failed message is still in the error queue after the original's TTL");
    assert_eq!(m.delivery.data, b"keep me");
    assert_eq!(retry_info(&m)["num_attempts"], 1);
}
