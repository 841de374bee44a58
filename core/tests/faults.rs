//! Fault injection against the real broker: connections closed under the engine, a broker
//! restart, a publisher losing its connection, graceful stops with and without time to finish,
//! fork, cluster failover and a consumer cancelled by the broker.
//!
//! These tests disturb the shared broker (they close every connection of the vhost, stop the
//! RabbitMQ app...), so they run one at a time (`SERIAL`) and each one leaves the broker running
//! and accepting connections when it ends, even when it fails ([`Fixture`]'s `Drop`).

mod common;

use cleats_core::{
    runtime, BrokerUri, Delivery, Engine, Error, Message, Next, Options, Outcome, Pool, Publisher,
    Status,
};
use common::*;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---- serialization and broker restoration --------------------------------------------------

/// Every test of this file takes it first: they disturb the broker for each other.
static SERIAL: Mutex<()> = Mutex::new(());

/// Held for the whole test. On drop (pass or panic) it makes sure the broker runs and accepts
/// connections again, then deletes the queues and exchanges the test created.
struct Fixture {
    queues: Vec<String>,
    exchanges: Vec<String>,
    _serial: MutexGuard<'static, ()>,
}

impl Fixture {
    fn new() -> Fixture {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        init_logging();
        ensure_broker_running();
        Fixture {
            queues: Vec::new(),
            exchanges: Vec::new(),
            _serial: serial,
        }
    }

    /// A unique queue name, deleted when the test ends.
    fn queue(&mut self, name: &str) -> String {
        let q = unique(name);
        self.queues.push(q.clone());
        q
    }

    /// A unique exchange name, deleted when the test ends.
    fn exchange(&mut self, name: &str) -> String {
        let x = unique(name);
        self.exchanges.push(x.clone());
        x
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        ensure_broker_running();
        delete_all(&self.queues, &self.exchanges);
    }
}

/// A fresh AMQP connection to the test broker, or the reason there is none.
fn try_connect() -> Result<Connection, String> {
    runtime::handle().block_on(async {
        match tokio::time::timeout(
            Duration::from_secs(5),
            Connection::connect(&amqp_url(), ConnectionProperties::default()),
        )
        .await
        {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 5s".into()),
        }
    })
}

fn broker_answers() -> bool {
    match try_connect() {
        Ok(conn) => {
            runtime::handle().block_on(async {
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    conn.close(200, "cleats fault tests: probe".into()),
                )
                .await;
            });
            true
        }
        Err(_) => false,
    }
}

/// `rabbitmqctl args`, never panicking (for the restore path).
fn ctl_quiet(args: &[&str]) -> bool {
    std::process::Command::new("rabbitmqctl")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Starts the RabbitMQ app (or the whole node) again unless it already accepts connections.
fn ensure_broker_running() {
    if broker_answers() {
        return;
    }
    log::warn!("the broker does not accept connections: starting the RabbitMQ app again");
    // start_app fails at once when the node itself is down: then start the node.
    if ctl_quiet(&["start_app"]) {
        ctl_quiet(&["await_startup", "--timeout", "120"]);
        if wait_until(Duration::from_secs(30), broker_answers) {
            return;
        }
    }
    log::warn!("start_app did not bring the broker back: starting the node");
    let _ = std::process::Command::new("rabbitmq-server")
        .arg("-detached")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    ctl_quiet(&["await_startup", "--timeout", "120"]);
    if !wait_until(Duration::from_secs(60), broker_answers) {
        log::error!("could not bring the broker back");
    }
}

fn delete_all(queues: &[String], exchanges: &[String]) {
    if queues.is_empty() && exchanges.is_empty() {
        return;
    }
    let conn = match try_connect() {
        Ok(c) => c,
        Err(e) => {
            log::error!("cleanup: cannot connect ({e}); left {queues:?} {exchanges:?}");
            return;
        }
    };
    runtime::handle().block_on(async {
        let short = Duration::from_secs(5);
        for q in queues {
            if let Ok(Ok(ch)) = tokio::time::timeout(short, conn.create_channel()).await {
                let _ = tokio::time::timeout(
                    short,
                    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()),
                )
                .await;
                let _ = tokio::time::timeout(short, ch.close(200, "done".into())).await;
            }
        }
        for x in exchanges {
            if let Ok(Ok(ch)) = tokio::time::timeout(short, conn.create_channel()).await {
                let _ = tokio::time::timeout(
                    short,
                    ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default()),
                )
                .await;
                let _ = tokio::time::timeout(short, ch.close(200, "done".into())).await;
            }
        }
        let _ = tokio::time::timeout(short, conn.close(200, "cleanup".into())).await;
    });
}

// ---- observation helpers -------------------------------------------------------------------

/// Ready and unacknowledged counts of `queue`, as the queue itself reports them.
fn queue_counts(queue: &str) -> Option<(u64, u64)> {
    let out = rabbitmqctl(&[
        "list_queues",
        "-q",
        "--no-table-headers",
        "name",
        "messages_ready",
        "messages_unacknowledged",
    ]);
    out.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [name, ready, unacked] if *name == queue => {
                Some((ready.parse().ok()?, unacked.parse().ok()?))
            }
            _ => None,
        }
    })
}

/// Takes every message off `queue` (auto-acked) and returns the bodies.
fn drain(b: &Broker, queue: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    while let Some(m) = b.get(queue) {
        bodies.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    bodies
}

fn body(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.body).into_owned()
}

/// The connection generation a delivery tag carries (its high 16 bits).
fn generation(d: &Delivery) -> u64 {
    d.info.delivery_tag >> 48
}

/// Records every status the engine goes through, from a thread of its own.
struct StatusLog {
    seen: Arc<Mutex<Vec<Status>>>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StatusLog {
    fn start(engine: &Engine) -> StatusLog {
        let seen = Arc::new(Mutex::new(vec![engine.status()]));
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let (engine, seen, done) = (engine.clone(), seen.clone(), done.clone());
            std::thread::spawn(move || {
                let mut last = seen.lock().unwrap().last().cloned().unwrap();
                while !done.load(SeqCst) {
                    let current = last.clone();
                    if let Ok(s) =
                        engine.wait_for_status(Duration::from_millis(100), move |s| *s != current)
                    {
                        log::info!("engine status: {s:?}");
                        seen.lock().unwrap().push(s.clone());
                        last = s;
                    }
                }
            })
        };
        StatusLog {
            seen,
            done,
            thread: Some(thread),
        }
    }

    fn snapshot(&self) -> Vec<Status> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many times the engine went from another status to Recovering.
    fn recoveries(&self) -> usize {
        let seen = self.snapshot();
        let mut n = 0;
        let mut before_was_recovering = false;
        for s in &seen {
            let recovering = matches!(s, Status::Recovering { .. });
            if recovering && !before_was_recovering {
                n += 1;
            }
            before_was_recovering = recovering;
        }
        n
    }
}

impl Drop for StatusLog {
    fn drop(&mut self) {
        self.done.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn is_connected(s: &Status) -> bool {
    matches!(s, Status::Connected { .. })
}

/// Host-like threads on a pool: next -> work -> settle until the engine stops, recording the
/// bodies settled successfully and any error.
struct Hosts {
    handles: Vec<JoinHandle<()>>,
    settled: Arc<Mutex<Vec<String>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

fn hosts(pool: &Pool, work: impl Fn(&Delivery) -> Outcome + Send + Sync + 'static) -> Hosts {
    let work = Arc::new(work);
    let settled = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let handles = (0..pool.threads())
        .map(|i| {
            let (pool, work) = (pool.clone(), work.clone());
            let (settled, errors) = (settled.clone(), errors.clone());
            std::thread::Builder::new()
                .name(format!("fault-host-{i}"))
                .spawn(move || loop {
                    match pool.next(Duration::from_millis(50)) {
                        Ok(Next::Delivery(d)) => {
                            let outcome = work(&d);
                            match d.settle(outcome) {
                                Ok(_) => settled.lock().unwrap().push(body(&d)),
                                Err(e) => errors.lock().unwrap().push(format!("settle: {e}")),
                            }
                        }
                        Ok(Next::Timeout) => {}
                        Ok(Next::Stopped) => return,
                        Err(e) => {
                            errors.lock().unwrap().push(format!("next: {e}"));
                            return;
                        }
                    }
                })
                .expect("spawn a host thread")
        })
        .collect();
    Hosts {
        handles,
        settled,
        errors,
    }
}

impl Hosts {
    /// Waits up to `timeout` for every thread to leave its loop; false if one is still running.
    fn join(&mut self, timeout: Duration) -> bool {
        let finished = wait_until(timeout, || self.handles.iter().all(|h| h.is_finished()));
        if finished {
            for h in self.handles.drain(..) {
                let _ = h.join();
            }
        }
        finished
    }

    fn settled(&self) -> Vec<String> {
        self.settled.lock().unwrap().clone()
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

fn persistent(queue: &str, body: String) -> Message {
    let mut m = Message::new(queue, body);
    m.properties.delivery_mode = Some(2);
    m
}

// ---- 1. connections closed mid-stream -----------------------------------------------------

#[derive(Default)]
struct Processed {
    /// (id, redelivered, generation) in the order work started.
    log: Vec<(usize, bool, u64)>,
    ids: BTreeSet<usize>,
}

#[test]
fn close_all_connections_mid_stream_loses_nothing() {
    const N: usize = 2000;
    let mut fx = Fixture::new();
    let q = fx.queue("close-all");
    let global = options(json!({"exchange": "", "prefetch": 50, "threads": 4}));
    Broker::connect().declare_queue(&q, FieldTable::default());
    let publisher = Publisher::new(&global).unwrap();
    let messages: Vec<Message> = (0..N)
        .map(|i| Message::new(q.clone(), format!("m-{i}")))
        .collect();
    publisher.publish_all(&messages).unwrap();
    publisher.close().unwrap();

    let engine = Engine::new(&global).unwrap();
    let worker = engine.add_worker("CloseAll", &q, &global).unwrap();
    let processed = Arc::new(Mutex::new(Processed::default()));
    // Slowed down while a close is under way, so that it really lands mid-stream.
    let slow = Arc::new(AtomicBool::new(false));
    let mut hosts = {
        let (processed, slow) = (processed.clone(), slow.clone());
        hosts(worker.pool(), move |d| {
            let id: usize = body(d)
                .strip_prefix("m-")
                .and_then(|s| s.parse().ok())
                .expect("an id");
            {
                let mut p = processed.lock().unwrap();
                p.log.push((id, d.info.redelivered, generation(d)));
                p.ids.insert(id);
            }
            let pause = if slow.load(SeqCst) { 25 } else { 1 };
            std::thread::sleep(Duration::from_millis(pause));
            Outcome::Ack
        })
    };
    engine.start().unwrap();
    let statuses = StatusLog::start(&engine);
    let distinct = || processed.lock().unwrap().ids.len();

    for (round, threshold) in [(1, 400), (2, 1200)] {
        assert!(
            wait_until(Duration::from_secs(60), || distinct() >= threshold),
            "only {} of {N} ids processed before close #{round}",
            distinct()
        );
        slow.store(true, SeqCst);
        let recoveries = statuses.recoveries();
        let generation_before = match engine.status() {
            Status::Connected { generation, .. } => generation,
            other => panic!("not Connected before close #{round}: {other:?}"),
        };
        rabbitmqctl(&[
            "close_all_connections",
            "cleats fault test: connection loss",
        ]);
        let at_close = distinct();
        assert!(
            at_close < N,
            "test setup: close #{round} landed after the stream ended"
        );
        assert!(
            wait_until(Duration::from_secs(15), || statuses.recoveries()
                > recoveries),
            "the engine did not notice close #{round}; statuses: {:?}",
            statuses.snapshot()
        );
        let status = engine.wait_for_status(Duration::from_secs(30), |s| {
            matches!(s, Status::Connected { generation, .. } if *generation > generation_before)
        });
        assert!(
            status.is_ok(),
            "not Connected again after close #{round}: {:?}; statuses: {:?}",
            engine.status(),
            statuses.snapshot()
        );
        log::info!("close #{round} at {at_close} ids processed; recovered: {status:?}");
        slow.store(false, SeqCst);
    }

    assert!(
        wait_until(Duration::from_secs(60), || distinct() == N),
        "{} of {N} ids processed; missing: {:?}",
        distinct(),
        {
            let p = processed.lock().unwrap();
            (0..N)
                .filter(|i| !p.ids.contains(i))
                .take(20)
                .collect::<Vec<_>>()
        }
    );
    // Duplicates of the last moments may still be in flight: wait until the broker holds
    // nothing, ready or unacknowledged (everything processed was acked).
    let mut counts = None;
    assert!(
        wait_until(Duration::from_secs(30), || {
            counts = queue_counts(&q);
            counts == Some((0, 0))
        }),
        "the queue never drained: (ready, unacked) = {counts:?}"
    );
    let report = stop(&engine, Duration::from_secs(10));
    assert!(
        hosts.join(Duration::from_secs(10)),
        "host threads still running"
    );
    drop(statuses);
    assert_eq!(Broker::connect().ready(&q), 0, "messages back after stop");
    log::info!("stop: {report:?}");

    let p = processed.lock().unwrap();
    let mut per_id: HashMap<usize, Vec<(bool, u64)>> = HashMap::new();
    for (id, redelivered, generation) in &p.log {
        per_id
            .entry(*id)
            .or_default()
            .push((*redelivered, *generation));
    }
    let bad: Vec<_> = per_id
        .iter()
        .filter(|(_, seen)| seen.iter().filter(|(redelivered, _)| !redelivered).count() > 1)
        .take(10)
        .collect();
    assert!(
        bad.is_empty(),
        "ids processed more than once without the redelivered flag: {bad:?}"
    );
    let duplicates = per_id.values().filter(|v| v.len() > 1).count();
    // Work in progress at a close cannot be acked on the new connection: it comes back.
    assert!(
        duplicates > 0,
        "test setup: nothing was redelivered, so the redelivered check proved nothing"
    );
    let generations: BTreeSet<u64> = p.log.iter().map(|(_, _, g)| *g).collect();
    log::info!(
        "{} deliveries processed for {N} ids ({duplicates} ids twice or more), generations {generations:?}",
        p.log.len()
    );
    assert!(
        generations.len() >= 3,
        "deliveries should come from three connections, got generations {generations:?}"
    );
    assert!(hosts.errors().is_empty(), "{:?}", hosts.errors());
}

// ---- 2. broker restart --------------------------------------------------------------------

#[test]
fn broker_restart_is_recovered_with_topology_and_consumers() {
    let mut fx = Fixture::new();
    let q = fx.queue("restart");
    // A transient exchange: the restart deletes it and its binding to the durable queue, so
    // messages published afterwards arrive only if the engine declared both again.
    let x = fx.exchange("restart-x");
    let global = options(json!({
        "exchange": x,
        "queue_options": {"durable": true},
        "prefetch": 10,
        "threads": 8,
    }));
    let engine = Engine::new(&global).unwrap();
    let worker = engine.add_worker("Restart", &q, &global).unwrap();
    let gate_open = Arc::new(AtomicBool::new(false));
    let started = Arc::new(Mutex::new(Vec::<(String, bool)>::new()));
    let mut hosts = {
        let (gate_open, started) = (gate_open.clone(), started.clone());
        hosts(worker.pool(), move |d| {
            let b = body(d);
            started
                .lock()
                .unwrap()
                .push((b.clone(), d.info.redelivered));
            if b.starts_with("before-") && !d.info.redelivered {
                // Held across the restart: unacknowledged when the broker goes down.
                wait_until(Duration::from_secs(60), || gate_open.load(SeqCst));
            }
            Outcome::Ack
        })
    };
    engine.start().unwrap();
    let statuses = StatusLog::start(&engine);
    let expected_broker = BrokerUri::parse(&amqp_url(), "amqp").unwrap().redacted();
    assert_eq!(
        engine.wait_for_status(Duration::from_secs(2), is_connected),
        Ok(Status::Connected {
            broker: expected_broker.clone(),
            generation: 0,
        })
    );

    let publisher = Publisher::new(&global).unwrap();
    for i in 0..5 {
        publisher
            .publish(&persistent(&q, format!("before-{i}")))
            .unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(10), || started.lock().unwrap().len()
            >= 5),
        "the messages published before the restart were not delivered"
    );

    rabbitmqctl(&["stop_app"]);
    let recovering = engine.wait_for_status(Duration::from_secs(30), |s| {
        matches!(s, Status::Recovering { .. })
    });
    assert!(
        recovering.is_ok(),
        "not Recovering while the broker is down: {:?}",
        engine.status()
    );
    // The held work finishes while the broker is down: its acks can go nowhere.
    gate_open.store(true, SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);

    let connected = engine.wait_for_status(Duration::from_secs(60), is_connected);
    match &connected {
        Ok(Status::Connected { broker, generation }) => {
            assert_eq!(*broker, expected_broker);
            assert!(*generation > 0, "{connected:?}");
        }
        other => panic!(
            "not Connected after the restart: {other:?}; statuses: {:?}",
            statuses.snapshot()
        ),
    }
    for i in 0..10 {
        let mut m = persistent(&q, format!("after-{i}"));
        m.mandatory = true; // Unroutable unless the binding was declared again
        publisher
            .publish(&m)
            .unwrap_or_else(|e| panic!("publishing after the restart: {e}"));
    }
    let done = |started: &[(String, bool)]| {
        (0..10).all(|i| started.iter().any(|(b, _)| *b == format!("after-{i}")))
            && (0..5).all(|i| {
                started
                    .iter()
                    .filter(|(b, _)| *b == format!("before-{i}"))
                    .count()
                    >= 2
            })
    };
    assert!(
        wait_until(Duration::from_secs(20), || done(&started.lock().unwrap())),
        "after the restart not everything was consumed: {:?}; statuses: {:?}",
        started.lock().unwrap(),
        statuses.snapshot()
    );
    let mut counts = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            counts = queue_counts(&q);
            counts == Some((0, 0))
        }),
        "the queue never drained: (ready, unacked) = {counts:?}"
    );
    stop(&engine, Duration::from_secs(10));
    assert!(hosts.join(Duration::from_secs(10)));
    assert_eq!(Broker::connect().ready(&q), 0);
    assert!(hosts.errors().is_empty(), "{:?}", hosts.errors());
    let _ = publisher.close();
}

// ---- 3. publisher during connection loss --------------------------------------------------

#[test]
fn publisher_survives_connection_loss() {
    const N: usize = 2000;
    let mut fx = Fixture::new();
    let q = fx.queue("publish-loss");
    let global = options(json!({"exchange": ""}));
    Broker::connect().declare_queue(&q, FieldTable::default());
    let publisher = Publisher::new(&global).unwrap();
    let closed = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(0usize));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    {
        let (publisher, closed, sent, q) =
            (publisher.clone(), closed.clone(), sent.clone(), q.clone());
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            for i in 0..N {
                if let Err(e) = publisher.publish(&Message::new(q.clone(), format!("p-{i}"))) {
                    errors.push(format!("p-{i}: {e}"));
                }
                *sent.lock().unwrap() += 1;
                // Paced until the connections were closed, so the close lands mid-stream.
                if !closed.load(SeqCst) {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            let _ = done_tx.send(errors);
        });
    }
    assert!(wait_until(Duration::from_secs(30), || *sent
        .lock()
        .unwrap()
        >= 200));
    rabbitmqctl(&["close_all_connections", "cleats fault test: publisher"]);
    let at_close = *sent.lock().unwrap();
    closed.store(true, SeqCst);
    assert!(
        at_close < N,
        "test setup: the close landed after the last publish"
    );
    let errors = done_rx
        .recv_timeout(Duration::from_secs(90))
        .expect("the publishing thread hung");
    assert!(
        errors.is_empty(),
        "{} publishes failed, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let b = Broker::connect();
    let ready = b.ready(&q) as usize;
    assert!(ready >= N, "only {ready} of {N} messages in the queue");
    let bodies = drain(&b, &q);
    let ids: BTreeSet<&str> = bodies.iter().map(|s| s.as_str()).collect();
    let missing: Vec<usize> = (0..N)
        .filter(|i| !ids.contains(format!("p-{i}").as_str()))
        .collect();
    assert!(missing.is_empty(), "missing ids: {missing:?}");
    log::info!(
        "closed after {at_close} publishes; {} messages for {N} ids",
        bodies.len()
    );
    let _ = publisher.close();
}

// ---- 4 and 5. graceful stop -----------------------------------------------------------------

struct StopRun {
    engine: Engine,
    pool: Pool,
    queue: String,
    hosts: Hosts,
    /// (body, when its work started)
    started: Arc<Mutex<Vec<(String, Instant)>>>,
}

/// 40 messages, prefetch 10, 10 threads whose work sleeps `work`; returns once 10 are in
/// progress.
fn stop_run(fx: &mut Fixture, name: &str, work: Duration) -> StopRun {
    let queue = fx.queue(name);
    let global = options(json!({"exchange": "", "prefetch": 10, "threads": 10}));
    Broker::connect().declare_queue(&queue, FieldTable::default());
    let publisher = Publisher::new(&global).unwrap();
    let messages: Vec<Message> = (0..40)
        .map(|i| Message::new(queue.clone(), format!("s-{i}")))
        .collect();
    publisher.publish_all(&messages).unwrap();
    publisher.close().unwrap();
    let engine = Engine::new(&global).unwrap();
    let worker = engine.add_worker(name, &queue, &global).unwrap();
    let started = Arc::new(Mutex::new(Vec::new()));
    let hosts = {
        let started = started.clone();
        hosts(worker.pool(), move |d| {
            started.lock().unwrap().push((body(d), Instant::now()));
            std::thread::sleep(work);
            Outcome::Ack
        })
    };
    engine.start().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || started.lock().unwrap().len()
            >= 10),
        "10 messages never were in progress"
    );
    StopRun {
        engine,
        pool: worker.pool().clone(),
        queue,
        hosts,
        started,
    }
}

/// Calls `pool.next` from another thread until it says Stopped; returns when it did (None if
/// it never did, or handed out a delivery).
fn watch_for_stopped(pool: &Pool) -> JoinHandle<Result<Instant, String>> {
    let pool = pool.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match pool.next(Duration::from_millis(10)) {
                Ok(Next::Stopped) => return Ok(Instant::now()),
                Ok(Next::Timeout) => {}
                Ok(Next::Delivery(d)) => {
                    return Err(format!("next handed out {} during the stop", body(&d)))
                }
                Err(e) => return Err(format!("next failed: {e}")),
            }
        }
        Err("next never returned Stopped".into())
    })
}

fn assert_no_work_after(started: &[(String, Instant)], stop_began: Instant) {
    let late: Vec<&String> = started
        .iter()
        .filter(|(_, at)| *at >= stop_began)
        .map(|(b, _)| b)
        .collect();
    assert!(late.is_empty(), "work started after stop began: {late:?}");
}

#[test]
fn graceful_stop_lets_work_in_progress_finish() {
    let mut fx = Fixture::new();
    let mut run = stop_run(&mut fx, "stop-drained", Duration::from_millis(300));
    let watcher = watch_for_stopped(&run.pool);
    let stop_began = Instant::now();
    let report = stop(&run.engine, Duration::from_secs(10));
    let stop_ended = Instant::now();
    assert!(report.drained, "{report:?}");
    let stopped_at = watcher.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        stopped_at < stop_ended,
        "Pool::next said Stopped only after stop returned"
    );
    assert!(matches!(
        run.pool.next(Duration::from_millis(10)),
        Ok(Next::Stopped)
    ));
    assert!(
        run.hosts.join(Duration::from_secs(5)),
        "host threads did not leave"
    );
    assert_eq!(run.engine.status(), Status::Stopped);

    let started = run.started.lock().unwrap().clone();
    assert_no_work_after(&started, stop_began);
    let started_ids: BTreeSet<&String> = started.iter().map(|(b, _)| b).collect();
    assert_eq!(started_ids.len(), started.len(), "an id started twice");
    let settled = run.hosts.settled();
    let settled_ids: BTreeSet<&String> = settled.iter().collect();
    assert_eq!(settled_ids.len(), settled.len(), "an id settled twice");
    assert_eq!(
        settled_ids, started_ids,
        "every message whose work started finishes"
    );
    assert!(run.hosts.errors().is_empty(), "{:?}", run.hosts.errors());

    let b = Broker::connect();
    let ready = b.ready(&run.queue) as usize;
    assert_eq!(
        settled.len() + ready,
        40,
        "processed {} + ready {ready}",
        settled.len()
    );
    let left = drain(&b, &run.queue);
    let mut all: Vec<&String> = left.iter().chain(settled.iter()).collect();
    all.sort();
    let expected: Vec<String> = {
        let mut v: Vec<String> = (0..40).map(|i| format!("s-{i}")).collect();
        v.sort();
        v
    };
    assert_eq!(all, expected.iter().collect::<Vec<_>>());
    log::info!(
        "stop: {report:?}; {} processed, {} requeued",
        settled.len(),
        left.len()
    );
}

#[test]
fn graceful_stop_deadline_requeues_unfinished_work() {
    let mut fx = Fixture::new();
    let mut run = stop_run(&mut fx, "stop-deadline", Duration::from_secs(3));
    let watcher = watch_for_stopped(&run.pool);
    let stop_began = Instant::now();
    let report = stop(&run.engine, Duration::from_millis(500));
    let took = stop_began.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "stop waited {took:?} for work it should have abandoned at the deadline"
    );
    assert!(!report.drained, "{report:?}");
    assert!(report.requeued >= 10, "{report:?}");
    assert!(watcher.join().unwrap().is_ok());
    // The work finishes after the deadline; its acks must be ignored.
    assert!(
        run.hosts.join(Duration::from_secs(10)),
        "host threads did not leave"
    );
    let started = run.started.lock().unwrap().clone();
    assert_no_work_after(&started, stop_began);
    assert_eq!(started.len(), 10, "{started:?}");
    std::thread::sleep(Duration::from_millis(200));
    let b = Broker::connect();
    assert_eq!(b.ready(&run.queue), 40, "everything goes back on the queue");
    let mut left = drain(&b, &run.queue);
    left.sort();
    left.dedup();
    assert_eq!(left.len(), 40);
    log::info!("stop after {took:?}: {report:?}");
}

// ---- 6. fork ------------------------------------------------------------------------------

/// In the forked child: each bit of the exit code is one check that failed.
fn in_child(
    engine: &Engine,
    pool: &Pool,
    held: &Delivery,
    publisher: &Publisher,
    global: &Options,
    q: &str,
) -> ! {
    unsafe { libc::alarm(30) }; // a hang ends as SIGALRM, seen by the parent
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut code = 0;
        if !matches!(
            engine.stop(Some(Duration::from_secs(1))),
            Err(Error::Forked { .. })
        ) {
            code |= 1;
        }
        if !matches!(
            pool.next(Duration::from_millis(10)),
            Err(Error::Forked { .. })
        ) {
            code |= 2;
        }
        if !matches!(
            publisher.publish(&Message::new(q, "child-old-publisher")),
            Err(Error::Forked { .. })
        ) {
            code |= 4;
        }
        if !matches!(
            engine.wait_for_status(Duration::from_millis(10), |_| true),
            Err(Error::Forked { .. })
        ) {
            code |= 16;
        }
        if !matches!(held.settle(Outcome::Ack), Err(Error::Forked { .. })) {
            code |= 32;
        }
        let fresh = Publisher::new(global).and_then(|p| {
            p.publish(&Message::new(q, "from-child"))?;
            p.close()
        });
        if let Err(e) = fresh {
            eprintln!("child: a new publisher failed: {e}");
            code |= 8;
        }
        code
    }))
    .unwrap_or(64);
    unsafe { libc::_exit(code) }
}

/// Waits for `pid`; kills it after `timeout`. Returns a description of how it ended.
fn wait_child(pid: libc::pid_t, timeout: Duration) -> Result<i32, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) {
                return Ok(libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                return Err(format!(
                    "the child was killed by signal {}",
                    libc::WTERMSIG(status)
                ));
            }
            return Err(format!("the child ended with status {status}"));
        }
        if r < 0 {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
        if Instant::now() > deadline {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err("the child hung and was killed".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn forked_child_gets_forked_errors_and_can_publish_anew() {
    let mut fx = Fixture::new();
    let q = fx.queue("fork");
    let q_child = fx.queue("fork-child");
    let global = options(json!({"exchange": "", "threads": 2}));
    let b = Broker::connect();
    b.declare_queue(&q_child, FieldTable::default());
    let engine = Engine::new(&global).unwrap();
    let worker = engine.add_worker("Fork", &q, &global).unwrap();
    engine.start().unwrap();
    let publisher = Publisher::new(&global).unwrap();
    publisher
        .publish(&Message::new(q.clone(), "before-fork"))
        .unwrap();
    // Received before the fork, settled by the parent after it.
    let held = next(worker.pool(), Duration::from_secs(5)).expect("a delivery before fork");

    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        in_child(&engine, worker.pool(), &held, &publisher, &global, &q_child);
    }
    let ended = wait_child(pid, Duration::from_secs(40));
    let code = ended.unwrap_or_else(|e| panic!("{e}"));
    let failed: Vec<&str> = [
        (1, "engine.stop did not return Error::Forked"),
        (2, "pool.next did not return Error::Forked"),
        (4, "the parent's publisher did not return Error::Forked"),
        (16, "engine.wait_for_status did not return Error::Forked"),
        (32, "settling a delivery did not return Error::Forked"),
        (8, "a new Publisher could not publish from the child"),
        (64, "the child panicked"),
    ]
    .iter()
    .filter(|(bit, _)| code & bit != 0)
    .map(|(_, what)| *what)
    .collect();
    assert_eq!(code, 0, "child exit code {code}: {failed:?}");
    let from_child = b.get(&q_child).expect("the child's message");
    assert_eq!(from_child.delivery.data, b"from-child");
    assert!(
        b.get(&q).is_none(),
        "the child's old publisher must not publish"
    );

    // The parent is untouched.
    assert!(is_connected(&engine.status()), "{:?}", engine.status());
    assert_eq!(held.body, b"before-fork");
    held.settle(Outcome::Ack).unwrap();
    publisher
        .publish(&Message::new(q.clone(), "after-fork"))
        .unwrap();
    let d = next(worker.pool(), Duration::from_secs(5)).expect("a delivery after fork");
    assert_eq!(d.body, b"after-fork");
    d.settle(Outcome::Ack).unwrap();
    let report = stop(&engine, Duration::from_secs(5));
    assert!(report.drained);
    assert_eq!(b.ready(&q), 0);
    let _ = publisher.close();
}

// ---- 7. cluster failover ------------------------------------------------------------------

#[test]
fn failover_to_the_next_broker_of_the_list() {
    let mut fx = Fixture::new();
    let q = fx.queue("failover");
    let real = amqp_url();
    let global = options(json!({
        "exchange": "",
        "amqp": ["amqp://guest:guest@127.0.0.1:1/%2f", real],
    }));
    let engine = Engine::new(&global).unwrap();
    let worker = engine.add_worker("Failover", &q, &global).unwrap();
    engine
        .start()
        .expect("start fails over to the second broker");
    // Read through wait_for_status: that status() can still say Idle right after start
    // returns is what `status_is_connected_when_start_returns` shows.
    let status = engine.wait_for_status(Duration::from_secs(2), is_connected);
    let Ok(Status::Connected { broker, generation }) = status else {
        panic!("not connected: {status:?}")
    };
    assert_eq!(generation, 0);
    let real = BrokerUri::parse(&real, "amqp").unwrap();
    assert_eq!(broker, real.redacted());
    assert!(
        broker.contains(&format!("@{}:{}/", real.host, real.port)),
        "{broker}"
    );
    assert!(!broker.contains(":1/"), "{broker}");
    assert!(
        !broker.contains(&format!(":{}@", real.password())),
        "the password shows: {broker}"
    );
    assert!(broker.contains(":***@"), "{broker}");

    let publisher = Publisher::new(&global).unwrap();
    publisher
        .publish(&Message::new(q.clone(), "via-failover"))
        .unwrap();
    let d = next(worker.pool(), Duration::from_secs(5)).expect("a delivery");
    assert_eq!(d.body, b"via-failover");
    d.settle(Outcome::Ack).unwrap();
    stop(&engine, Duration::from_secs(5));
    assert_eq!(Broker::connect().ready(&q), 0);
    let _ = publisher.close();
}

// ---- 8. consumer cancelled by the broker --------------------------------------------------

#[test]
fn deleted_queue_is_declared_again_and_consumed() {
    let mut fx = Fixture::new();
    let q = fx.queue("deleted");
    let global = options(json!({"exchange": "", "threads": 2}));
    let engine = Engine::new(&global).unwrap();
    let worker = engine.add_worker("Deleted", &q, &global).unwrap();
    let mut hosts = hosts(worker.pool(), |_| Outcome::Ack);
    engine.start().unwrap();
    let statuses = StatusLog::start(&engine);
    let publisher = Publisher::new(&global).unwrap();
    publisher
        .publish(&Message::new(q.clone(), "first"))
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || hosts.settled().len() == 1));

    Broker::connect().delete_queue(&q);
    // Publish (mandatory: refused while there is no queue) until the queue is back.
    let mut last_error = None;
    let back = wait_until(Duration::from_secs(30), || {
        let mut m = Message::new(q.clone(), "after-delete-0");
        m.mandatory = true;
        match publisher.publish(&m) {
            Ok(()) => true,
            Err(e) => {
                last_error = Some(e);
                std::thread::sleep(Duration::from_millis(100));
                false
            }
        }
    });
    assert!(
        back,
        "the queue was not declared again: {last_error:?}; statuses: {:?}",
        statuses.snapshot()
    );
    for i in 1..5 {
        publisher
            .publish(&Message::new(q.clone(), format!("after-delete-{i}")))
            .unwrap();
    }
    let consumed = wait_until(Duration::from_secs(15), || {
        let settled = hosts.settled();
        (0..5).all(|i| settled.contains(&format!("after-delete-{i}")))
    });
    assert!(
        consumed,
        "messages published after the delete were not consumed: settled {:?}, queue {:?}; status {:?}; statuses {:?}",
        hosts.settled(),
        queue_counts(&q),
        engine.status(),
        statuses.snapshot()
    );
    assert!(engine
        .wait_for_status(Duration::from_secs(10), is_connected)
        .is_ok());
    stop(&engine, Duration::from_secs(5));
    assert!(hosts.join(Duration::from_secs(5)));
    drop(statuses);
    assert_eq!(Broker::connect().ready(&q), 0);
    assert!(hosts.errors().is_empty(), "{:?}", hosts.errors());
    let _ = publisher.close();
}

// ---- start and status -----------------------------------------------------------------------

/// `start` "returns once consuming": the status must say Connected by then. The supervisor
/// answers `start` before it publishes the status, so this races; 25 starts make it show.
#[test]
fn status_is_connected_when_start_returns() {
    let mut fx = Fixture::new();
    let global = options(json!({"exchange": ""}));
    for attempt in 1..=25 {
        let q = fx.queue("start-status");
        let engine = Engine::new(&global).unwrap();
        engine.add_worker("StartStatus", &q, &global).unwrap();
        engine.start().unwrap();
        let status = engine.status();
        stop(&engine, Duration::from_secs(5));
        assert!(
            is_connected(&status),
            "start {attempt}: start() returned Ok but status() is {status:?}"
        );
    }
}

// ---- auto-ack stop with a backlog ---------------------------------------------------------

/// `ack: false` has no qos: the broker sends the whole backlog, the pool's queue fills up to its
/// capacity and the rest waits in lapin's consumer. A graceful stop must still keep its deadline and report
/// what it did truthfully (auto-acked messages cannot be put back; work still running is not
/// drained).
#[test]
fn autoack_stop_with_a_backlog_keeps_its_deadline() {
    let mut fx = Fixture::new();
    let q = fx.queue("autoack-stop");
    let global = options(json!({"exchange": "", "ack": false, "prefetch": 5, "threads": 1}));
    Broker::connect().declare_queue(&q, FieldTable::default());
    let publisher = Publisher::new(&global).unwrap();
    let messages: Vec<Message> = (0..50)
        .map(|i| Message::new(q.clone(), format!("a-{i}")))
        .collect();
    publisher.publish_all(&messages).unwrap();
    publisher.close().unwrap();
    let engine = Engine::new(&global).unwrap();
    let worker = engine.add_worker("AutoAckStop", &q, &global).unwrap();
    let started = Arc::new(Mutex::new(Vec::new()));
    let mut hosts = {
        let started = started.clone();
        hosts(worker.pool(), move |d| {
            started.lock().unwrap().push(body(d));
            std::thread::sleep(Duration::from_secs(2));
            Outcome::Ack
        })
    };
    engine.start().unwrap();
    assert!(wait_until(Duration::from_secs(5), || !started
        .lock()
        .unwrap()
        .is_empty()));
    std::thread::sleep(Duration::from_millis(200)); // the backlog arrives, the pool fills

    let stop_began = Instant::now();
    let report = stop(&engine, Duration::from_millis(500));
    let took = stop_began.elapsed();
    let ready = Broker::connect().ready(&q) as usize;
    assert!(hosts.join(Duration::from_secs(10)));
    let mut wrong = Vec::new();
    if took > Duration::from_millis(2500) {
        wrong.push(format!("stop took {took:?} with a 500 ms deadline"));
    }
    if report.requeued > ready {
        wrong.push(format!(
            "stop reported {} requeued but the queue holds {ready}",
            report.requeued
        ));
    }
    if report.drained {
        wrong.push("stop reported drained while a 2 s job that started before it still ran".into());
    }
    assert!(wrong.is_empty(), "{report:?}: {wrong:?}");
}
