//! The publisher against a real broker: confirmed bulk and concurrent publishing, message
//! properties, mandatory returns, refused publishes, connection errors and the lazily declared
//! exchange.
mod common;
use cleats_core::{runtime, Engine, Error, FieldValue, Message, Options, Outcome, Publisher};
use common::*;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// Queues and exchanges a test created, deleted when it ends (also when it fails).
#[derive(Default)]
struct Cleanup {
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl Cleanup {
    /// Declares a fresh non-durable queue and remembers it.
    fn queue(&mut self, name: &str) -> String {
        let q = unique(name);
        Broker::connect().declare_queue(&q, FieldTable::default());
        self.queues.push(q.clone());
        q
    }

    fn exchange(&mut self, name: &str) -> String {
        let e = unique(name);
        self.exchanges.push(e.clone());
        e
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let b = Broker::connect();
        for q in &self.queues {
            b.delete_queue(q);
        }
        runtime::handle().block_on(async {
            for e in &self.exchanges {
                if let Ok(ch) = b.conn.create_channel().await {
                    let _ = ch
                        .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
                        .await;
                    let _ = ch.close(200, "done".into()).await;
                }
            }
            let _ = b.conn.close(200, "done".into()).await;
        });
    }
}

/// Stops the engine when the test ends, before [`Cleanup`] deletes its queue (declare it after
/// the `Cleanup`): a running engine would declare the deleted queue again.
struct StopOnDrop(Engine);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.stop(Some(Duration::from_secs(5)));
    }
}

fn obj(v: Value) -> Options {
    v.as_object().expect("an object").clone()
}

/// Consumes (auto-ack) until `expected` bodies arrived or `timeout` passed.
fn consume_bodies(queue: &str, expected: usize, timeout: Duration) -> Vec<Vec<u8>> {
    runtime::handle().block_on(async {
        let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut bodies = Vec::with_capacity(expected);
        while bodies.len() < expected {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(Ok(d))) => bodies.push(d.data),
                _ => break,
            }
        }
        let _ = conn.close(200, "done".into()).await;
        bodies
    })
}

/// Whether an exchange exists (passive declare on a throwaway channel).
fn exchange_exists(name: &str) -> bool {
    let b = Broker::connect();
    runtime::handle().block_on(async {
        let ch = b.conn.create_channel().await.unwrap();
        let found = ch
            .exchange_declare(
                name.into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .is_ok();
        let _ = b.conn.close(200, "done".into()).await;
        found
    })
}

/// Publishes to `queue` through the default exchange and checks the message arrives.
fn assert_still_publishes(publisher: &Publisher, queue: &str, body: &str) {
    let b = Broker::connect();
    let before = b.ready(queue);
    let started = Instant::now();
    publisher
        .publish(&Message::new(queue, body))
        .expect("the publisher keeps working");
    assert!(started.elapsed() < WAIT);
    assert!(wait_until(WAIT, || b.ready(queue) == before + 1));
}

/// The test options, publishing to the default exchange.
fn default_exchange(extra: Value) -> Options {
    let mut layer = json!({"exchange": ""});
    cleats_core::config::deep_merge(layer.as_object_mut().unwrap(), &obj(extra));
    options(layer)
}

#[test]
fn ten_thousand_confirmed_messages_all_arrive() {
    init_logging();
    let mut c = Cleanup::default();
    let q = c.queue("pub-bulk");
    let publisher = Publisher::new(&default_exchange(json!({}))).unwrap();
    let messages: Vec<Message> = (0..10_000)
        .map(|i| Message::new(q.clone(), format!("message {i}")))
        .collect();
    publisher.publish_all(&messages).expect("all confirmed");
    let b = Broker::connect();
    // Confirmed means enqueued: the count is exact at once.
    assert_eq!(b.ready(&q), 10_000);
    let bodies = consume_bodies(&q, 10_000, Duration::from_secs(20));
    assert_eq!(bodies.len(), 10_000);
    let distinct: HashSet<Vec<u8>> = bodies.into_iter().collect();
    assert_eq!(distinct.len(), 10_000);
    assert!(distinct.contains(b"message 9999".as_slice()));
    assert_eq!(b.ready(&q), 0, "nothing extra");
    publisher.close().unwrap();
}

#[test]
fn eight_threads_share_one_publisher() {
    init_logging();
    let mut c = Cleanup::default();
    let q = c.queue("pub-threads");
    let publisher = Publisher::new(&default_exchange(json!({}))).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let publisher = publisher.clone();
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    publisher
                        .publish(&Message::new(q.clone(), format!("t{t}-m{i}")))
                        .unwrap_or_else(|e| panic!("thread {t} message {i}: {e}"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let b = Broker::connect();
    assert_eq!(b.ready(&q), 4000);
    let bodies: HashSet<Vec<u8>> = consume_bodies(&q, 4000, Duration::from_secs(20))
        .into_iter()
        .collect();
    assert_eq!(bodies.len(), 4000);
    publisher.close().unwrap();
}

#[test]
fn message_options_become_properties() {
    init_logging();
    let mut c = Cleanup::default();
    let q = unique("pub-props");
    c.queues.push(q.clone());
    let opts = default_exchange(json!({}));
    let engine = StopOnDrop(Engine::new(&opts).unwrap());
    let worker = engine.0.add_worker("PropsWorker", &q, &opts).unwrap();
    engine.0.start().unwrap();
    let message = Message::from_options(
        br#"{"id": 7}"#.to_vec(),
        &obj(json!({
            "to_queue": q,
            "headers": {"tenant": "acme", "n": 5, "ok": true, "ratio": 1.5,
                        "nested": {"list": [1, "two", {"three": 3}], "deeper": {"x": "y"}}},
            "persistent": true,
            "priority": 7,
            "correlation_id": "corr-1",
            "type": "order.created",
            "app_id": "shop",
            "expiration": 60000,
            "message_id": "msg-1",
            "reply_to": "replies",
            "content_type": "application/json",
            "content_encoding": "identity",
            "timestamp": 1_700_000_000u64,
            "user_id": "guest",
        })),
    )
    .unwrap();
    assert_eq!(message.routing_key, q);
    let publisher = Publisher::new(&opts).unwrap();
    publisher.publish(&message).unwrap();
    let d = next(worker.pool(), WAIT).expect("the message");
    d.settle(Outcome::Ack).unwrap();
    stop(&engine.0, Duration::from_secs(5));
    assert_eq!(d.body, br#"{"id": 7}"#);
    assert_eq!(d.info.routing_key, q);
    let p = &d.properties;
    assert_eq!(p.delivery_mode, Some(2));
    assert_eq!(p.priority, Some(7));
    assert_eq!(p.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(p.kind.as_deref(), Some("order.created"));
    assert_eq!(p.app_id.as_deref(), Some("shop"));
    assert_eq!(p.expiration.as_deref(), Some("60000"));
    let headers = p.headers.as_ref().expect("headers");
    assert_eq!(headers["tenant"], FieldValue::Str("acme".into()));
    let nested = headers["nested"].as_table().expect("a nested table");
    assert_eq!(
        nested["list"],
        FieldValue::Array(vec![
            FieldValue::Int(1),
            FieldValue::Str("two".into()),
            FieldValue::Table([("three".to_string(), FieldValue::Int(3))].into()),
        ])
    );
    // Everything else too: what was sent is what arrives.
    assert_eq!(*p, message.properties);

    // The same through a plain basic.get, as any other client sees it.
    publisher.publish(&message).unwrap();
    let b = Broker::connect();
    assert!(wait_until(WAIT, || b.ready(&q) == 1));
    let m = b.get(&q).unwrap();
    let raw = &m.delivery.properties;
    assert_eq!(*raw.delivery_mode(), Some(2));
    assert_eq!(*raw.priority(), Some(7));
    assert_eq!(
        raw.kind().as_ref().map(|s| s.as_str()),
        Some("order.created")
    );
    assert_eq!(raw.app_id().as_ref().map(|s| s.as_str()), Some("shop"));
    assert_eq!(raw.expiration().as_ref().map(|s| s.as_str()), Some("60000"));
    assert_eq!(
        raw.correlation_id().as_ref().map(|s| s.as_str()),
        Some("corr-1")
    );
    assert!(raw.headers().as_ref().unwrap().contains_key("nested"));
    publisher.close().unwrap();
}

#[test]
fn mandatory_unroutable_message_is_returned() {
    init_logging();
    let mut c = Cleanup::default();
    let q = c.queue("pub-mandatory");
    let publisher = Publisher::new(&default_exchange(json!({}))).unwrap();
    let nowhere = unique("pub-nowhere");
    let message = Message::from_options(
        b"lost".to_vec(),
        &obj(json!({"to_queue": nowhere, "mandatory": true})),
    )
    .unwrap();
    let started = Instant::now();
    let err = publisher.publish(&message).unwrap_err();
    assert!(started.elapsed() < WAIT, "took {:?}", started.elapsed());
    match &err {
        Error::Unroutable {
            exchange,
            routing_key,
            reply_code,
            ..
        } => {
            assert_eq!(exchange, "");
            assert_eq!(routing_key, &nowhere);
            assert_eq!(*reply_code, 312, "NO_ROUTE");
        }
        other => panic!("expected Unroutable, got {other:?}"),
    }
    // Without mandatory the broker drops it silently, as in Bunny.
    publisher
        .publish(&Message::new(nowhere, "dropped"))
        .unwrap();
    assert_still_publishes(&publisher, &q, "after the return");
    // A mandatory message that can be routed is fine.
    let routable = Message::from_options(
        b"ok".to_vec(),
        &obj(json!({"to_queue": q, "mandatory": true})),
    )
    .unwrap();
    publisher.publish(&routable).unwrap();
    assert_eq!(Broker::connect().ready(&q), 2);
    publisher.close().unwrap();
}

#[test]
fn missing_exchange_fails_promptly_and_the_publisher_recovers() {
    init_logging();
    let mut c = Cleanup::default();
    let q = c.queue("pub-noexchange");
    let publisher = Publisher::new(&default_exchange(json!({"publish_timeout": 30}))).unwrap();
    assert_still_publishes(&publisher, &q, "before");
    let missing = unique("pub-missing-ex");
    let mut message = Message::new("anything", "x");
    message.exchange = Some(missing.clone());
    for round in 0..2 {
        let started = Instant::now();
        let err = publisher.publish(&message).unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(err, Error::Channel { .. }),
            "round {round}: expected a channel error, got {err:?} after {took:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "round {round}: took {took:?}"
        );
        assert!(err.to_string().contains("NOT_FOUND"), "{err}");
        assert_still_publishes(&publisher, &q, "after");
    }
    assert!(!exchange_exists(&missing));
    publisher.close().unwrap();
}

#[test]
fn bad_amqp_option_is_an_invalid_option() {
    for amqp in [
        json!("redis://localhost"),
        json!(42),
        json!("amqp://u:p@:5672"),
    ] {
        let err = Publisher::new(&options(json!({"amqp": amqp}))).unwrap_err();
        match &err {
            Error::InvalidOption { option, .. } => assert_eq!(option, "amqp", "{err}"),
            other => panic!("{amqp}: expected InvalidOption, got {other:?}"),
        }
        assert!(err.to_string().contains("`amqp`"), "{err}");
    }
}

#[test]
fn wrong_password_is_an_authentication_failure() {
    init_logging();
    let url = amqp_url().replacen("guest:guest@", "guest:wrong-password@", 1);
    assert_ne!(
        url,
        amqp_url(),
        "AMQP_URL must carry guest:guest for this test"
    );
    let publisher = Publisher::new(&options(json!({"amqp": url, "exchange": ""}))).unwrap();
    let started = Instant::now();
    let err = publisher.publish(&Message::new("q", "x")).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, Error::AuthenticationFailed { .. }),
        "got {err:?} after {took:?}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}: retried");
    assert!(!err.to_string().contains("wrong-password"), "{err}");
}

#[test]
fn publishing_without_confirms_works() {
    init_logging();
    let mut c = Cleanup::default();
    let q = c.queue("pub-noconfirm");
    let publisher =
        Publisher::new(&default_exchange(json!({"publisher_confirms": false}))).unwrap();
    assert!(!publisher.config().confirms);
    let messages: Vec<Message> = (0..100)
        .map(|i| Message::new(q.clone(), format!("m{i}")))
        .collect();
    publisher.publish_all(&messages).unwrap();
    publisher.publish(&Message::new(q.clone(), "last")).unwrap();
    let b = Broker::connect();
    assert!(
        wait_until(WAIT, || b.ready(&q) == 101),
        "{} of 101",
        b.ready(&q)
    );
    publisher.close().unwrap();
}

#[test]
fn configured_exchange_is_declared_on_first_publish() {
    init_logging();
    let mut c = Cleanup::default();
    let exchange = c.exchange("pub-lazy-ex");
    let q = c.queue("pub-lazy");
    let opts = options(json!({"exchange": exchange,
                              "exchange_options": {"type": "topic", "durable": false}}));
    let publisher = Publisher::new(&opts).unwrap();
    assert!(!exchange_exists(&exchange), "declared before any publish");
    // The first publish declares it (nothing is bound yet: the message is dropped).
    let first = Message::from_options(b"first".to_vec(), &obj(json!({"to_queue": "orders.first"})))
        .unwrap();
    publisher.publish(&first).unwrap();
    assert!(
        exchange_exists(&exchange),
        "not declared by the first publish"
    );
    let out = rabbitmqctl(&["-q", "list_exchanges", "name", "type", "durable"]);
    assert!(
        out.lines()
            .any(|l| l.split('\t').collect::<Vec<_>>() == [exchange.as_str(), "topic", "false"]),
        "{exchange} is not a transient topic exchange: {out}"
    );
    let b = Broker::connect();
    runtime::handle()
        .block_on(b.channel.queue_bind(
            q.as_str().into(),
            exchange.as_str().into(),
            "orders.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ))
        .unwrap();
    for key in ["orders.created", "orders.paid", "users.created"] {
        let m =
            Message::from_options(key.as_bytes().to_vec(), &obj(json!({"to_queue": key}))).unwrap();
        publisher.publish(&m).unwrap();
    }
    assert_eq!(b.ready(&q), 2);
    let m = b.get(&q).unwrap();
    assert_eq!(m.delivery.exchange.as_str(), exchange);
    assert_eq!(m.delivery.routing_key.as_str(), "orders.created");
    assert_eq!(m.delivery.data, b"orders.created");
    publisher.close().unwrap();
}

/// Threads publishing mandatory messages at the same time share one channel; each must get the
/// fate of its own message back, not a neighbour's return.
#[test]
fn concurrent_mandatory_publishes_each_get_their_own_result() {
    init_logging();
    let mut c = Cleanup::default();
    let q = c.queue("pub-mandatory-mix");
    let nowhere = unique("pub-nowhere-mix");
    let publisher = Publisher::new(&default_exchange(json!({}))).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let publisher = publisher.clone();
            let key = if t % 2 == 0 {
                q.clone()
            } else {
                nowhere.clone()
            };
            std::thread::spawn(move || {
                (0..100)
                    .map(|i| {
                        let m = Message::from_options(
                            format!("t{t}-m{i}").into_bytes(),
                            &obj(json!({"to_queue": key, "mandatory": true})),
                        )
                        .unwrap();
                        (key.clone(), publisher.publish(&m))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut wrong = Vec::new();
    for t in threads {
        for (key, result) in t.join().unwrap() {
            let ok = match &result {
                Ok(()) => key == q,
                Err(Error::Unroutable { routing_key, .. }) => key == nowhere && *routing_key == key,
                Err(_) => false,
            };
            if !ok {
                wrong.push(format!("to {key}: {result:?}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 800 results belong to another message, e.g. {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(4)]
    );
    assert_eq!(Broker::connect().ready(&q), 400);
    publisher.close().unwrap();
}

/// The configured exchange exists with another type: declaring it can never succeed, so the
/// publish must fail with the broker's reason at once, not be retried until publish_timeout.
#[test]
fn exchange_declared_differently_fails_promptly() {
    init_logging();
    let mut c = Cleanup::default();
    let exchange = c.exchange("pub-mismatch-ex");
    let b = Broker::connect();
    runtime::handle()
        .block_on(b.channel.exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ))
        .unwrap();
    let opts = options(json!({"exchange": exchange, "publish_timeout": 8,
                              "exchange_options": {"type": "direct", "durable": false}}));
    let publisher = Publisher::new(&opts).unwrap();
    let started = Instant::now();
    let err = publisher.publish(&Message::new("k", "x")).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, Error::Channel { .. }),
        "expected a channel error, got {err:?} after {took:?}"
    );
    assert!(err.to_string().contains("PRECONDITION_FAILED"), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}: retried");
}

/// A publish refused by the broker closes the channel; the publisher opens a new link, and
/// the old connection must be closed, not left open on the broker.
#[test]
fn refused_publishes_leak_no_connections() {
    init_logging();
    let vhost = unique("pub-vhost");
    rabbitmqctl(&["add_vhost", &vhost]);
    struct DropVhost(String);
    impl Drop for DropVhost {
        fn drop(&mut self) {
            let _ = std::process::Command::new("rabbitmqctl")
                .args(["delete_vhost", &self.0])
                .output();
        }
    }
    let _guard = DropVhost(vhost.clone());
    rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
    let publisher = Publisher::new(&options(json!({"exchange": "", "vhost": vhost}))).unwrap();
    publisher.publish(&Message::new("nobody", "x")).unwrap();
    let mut missing = Message::new("k", "x");
    missing.exchange = Some(unique("pub-missing-ex"));
    for _ in 0..3 {
        assert!(publisher.publish(&missing).is_err());
        publisher.publish(&Message::new("nobody", "x")).unwrap();
    }
    let count = || {
        rabbitmqctl(&["-q", "list_connections", "vhost"])
            .lines()
            .filter(|l| l.trim() == vhost)
            .count()
    };
    let settled = wait_until(Duration::from_secs(5), || count() <= 1);
    assert!(
        settled,
        "{} connections open in the publisher's vhost, 1 expected",
        count()
    );
    publisher.close().unwrap();
}
