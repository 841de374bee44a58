//! The engine of one process: its workers, the consuming connection, recovery, and the
//! graceful stop.
//!
//! A supervisor task owns the connection. It opens a *session* (connection, one channel per
//! worker, topology, qos, consumers); when the session is lost it reconnects with capped backoff
//! and opens a new one, whose delivery tags carry a new generation. Stop cancels consumers,
//! requeues what was never handed out, waits for work in progress until the deadline, requeues
//! what is still unfinished and closes everything.

use crate::config::{merge_layers, EngineConfig, Options, WorkerConfig};
use crate::connection::{backoff, connect, watch_events};
use crate::consumer::{ChannelTask, Ended};
use crate::error::{Error, Result};
use crate::lock;
use crate::pool::Pool;
use crate::runtime::{self, Pending, ProcessGuard};
use crate::source::Source;
use crate::topology;
use crate::transport::Wire;
use crate::worker::{Command, SessionLink, Worker};
use lapin::options::{BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::Connection;
use std::mem::ManuallyDrop;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// Where the engine is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Workers may be added.
    Idle,
    /// Consuming through the broker at this (redacted) URI. `generation` is 0 on the first
    /// connection and grows with every reconnection attempt after a loss.
    Connected {
        broker: String,
        generation: u64,
    },
    /// The connection was lost; reconnecting.
    Recovering {
        attempt: u32,
        last_error: String,
    },
    Stopped,
}

/// What a graceful stop did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Work in progress finished before the deadline.
    pub drained: bool,
    /// Messages received but not finished, put back on their queues.
    pub requeued: usize,
}

/// A broker that accepts the connection but never answers must not hang start or recovery.
const SESSION_SETUP_TIMEOUT: Duration = Duration::from_secs(30);

struct StopRequest {
    deadline: Instant,
    reply: oneshot::Sender<StopReport>,
}

/// The engine of this process. Cheap to clone; every method may be called from any thread of
/// the process that created it.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    guard: ProcessGuard,
    global: Options,
    /// Dropping the sender (the last `Engine` handle gone) stops the supervisor.
    stop_tx: Mutex<Option<mpsc::Sender<StopRequest>>>,
    /// Not dropped in a forked child: it holds the parent's sockets and runtime objects.
    shared: ManuallyDrop<Arc<Shared>>,
}

/// What the supervisor task shares with the handles.
struct Shared {
    config: EngineConfig,
    workers: Mutex<Vec<Worker>>,
    shared_pool: Mutex<Option<Pool>>,
    status: watch::Sender<Status>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("brokers", &self.inner.shared.config.connection.brokers)
            .field("status", &self.status())
            .finish()
    }
}

impl Engine {
    /// An engine for the global options layer (the `configure` hash). Validates it; connects
    /// only on [`Engine::start`].
    pub fn new(global: &Options) -> Result<Self> {
        let merged = merge_layers(&[global]);
        let config = EngineConfig::from_options(&merged)?;
        // Before the host starts the work threads (malloc_arenas.rs).
        crate::malloc_arenas::cap_for_workers();
        Ok(Engine {
            inner: Arc::new(EngineInner {
                guard: ProcessGuard::new(),
                global: global.clone(),
                stop_tx: Mutex::new(None),
                shared: ManuallyDrop::new(Arc::new(Shared {
                    config,
                    workers: Mutex::new(Vec::new()),
                    shared_pool: Mutex::new(None),
                    status: watch::Sender::new(Status::Idle),
                })),
            }),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.shared.config
    }

    pub fn status(&self) -> Status {
        self.inner.shared.status.borrow().clone()
    }

    pub fn workers(&self) -> Vec<Worker> {
        lock(&self.inner.shared.workers).clone()
    }

    /// The distinct pools of the workers: one per worker, or one for all with `share_threads`.
    pub fn pools(&self) -> Vec<Pool> {
        distinct_pools(&lock(&self.inner.shared.workers))
    }

    /// Adds a worker named `name` (its class) consuming `queue`, with its own options layer
    /// (`from_queue` options) over the global one.
    pub fn add_worker(&self, name: &str, queue: &str, options: &Options) -> Result<Worker> {
        self.inner.guard.check()?;
        if *self.inner.shared.status.borrow() != Status::Idle || lock(&self.inner.stop_tx).is_some()
        {
            return Err(Error::state(
                "workers can only be added before the engine starts",
            ));
        }
        if lock(&self.inner.shared.workers)
            .iter()
            .any(|w| w.name() == name)
        {
            return Err(Error::option(
                "worker",
                format!("a worker named {name} was already added: names identify metrics and logs"),
            ));
        }
        let config =
            WorkerConfig::resolve(name, queue, &merge_layers(&[&self.inner.global, options]))?;
        if config.connection != self.inner.shared.config.connection {
            return Err(Error::option(
                "amqp",
                format!("worker {name} sets its own amqp/vhost/heartbeat; cleats consumes over one connection per process, so set them globally"),
            ));
        }
        let pool = if config.share_threads {
            lock(&self.inner.shared.shared_pool)
                .get_or_insert_with(|| {
                    let threads = merge_layers(&[&self.inner.global])["threads"]
                        .as_u64()
                        .unwrap_or(10) as usize;
                    // The broker bounds each consumer by its prefetch; the sum is not known yet.
                    Pool::new(threads, None)
                })
                .clone()
        } else {
            Pool::new(config.threads, Some(usize::from(config.prefetch)))
        };
        pool.serve(name);
        let worker = Worker::new(config, pool);
        lock(&self.inner.shared.workers).push(worker.clone());
        Ok(worker)
    }

    /// Connects, declares the topology and starts consuming. Returns once consuming, or with
    /// the first error (refused connection, bad credentials, a queue declared differently...),
    /// after which it may be called again. Once started, connection losses are recovered in the
    /// background.
    pub fn start(&self) -> Result<()> {
        self.begin_start()?.wait_done()
    }

    /// [`Engine::start`] as a [`Pending`] operation, for hosts that must stay interruptible.
    pub fn begin_start(&self) -> Result<Pending<()>> {
        self.inner.guard.check()?;
        if lock(&self.inner.shared.workers).is_empty() {
            return Err(Error::state(
                "no workers to run: add at least one before starting",
            ));
        }
        let (stop_tx, stop_rx) = mpsc::channel(1);
        {
            let mut slot = lock(&self.inner.stop_tx);
            if slot.is_some() {
                return Err(Error::state("the engine was already started"));
            }
            *slot = Some(stop_tx);
        }
        let (first_tx, first_rx) = oneshot::channel();
        let shared = Arc::clone(&self.inner.shared);
        runtime::handle().spawn(supervise(shared, stop_rx, first_tx));
        let inner = Arc::downgrade(&self.inner);
        Ok(Pending::spawn(async move {
            let started = first_rx
                .await
                .unwrap_or_else(|_| Err(Error::state("the engine stopped while starting")));
            if started.is_err() {
                // Nothing runs: `start` may be called again (e.g. once the broker is up).
                if let Some(inner) = inner.upgrade() {
                    *lock(&inner.stop_tx) = None;
                }
            }
            started
        }))
    }

    /// Graceful stop: waits up to `timeout` (default: the `stop_timeout` option) for work in
    /// progress; everything received and not finished goes back on its queue.
    pub fn stop(&self, timeout: Option<Duration>) -> Result<StopReport> {
        self.begin_stop(timeout)?.wait_done()
    }

    /// [`Engine::stop`] as a [`Pending`] operation. Deliveries stop being handed out at once.
    pub fn begin_stop(&self, timeout: Option<Duration>) -> Result<Pending<StopReport>> {
        self.inner.guard.check()?;
        for pool in self.pools() {
            pool.begin_stop();
        }
        let timeout = timeout.unwrap_or(self.inner.shared.config.stop_timeout);
        let tx = lock(&self.inner.stop_tx).clone();
        let status = self.inner.shared.status.clone();
        Ok(Pending::spawn(async move {
            let nothing_running = StopReport {
                drained: true,
                requeued: 0,
            };
            let Some(tx) = tx else {
                status.send_replace(Status::Stopped);
                return Ok(nothing_running);
            };
            let (reply, rx) = oneshot::channel();
            let request = StopRequest {
                deadline: Instant::now() + timeout,
                reply,
            };
            if tx.send(request).await.is_err() {
                return Ok(nothing_running); // already stopped
            }
            rx.await
                .map_err(|_| Error::state("the engine's supervisor ended during stop"))
        }))
    }

    /// Waits until the engine's status satisfies `done`, at most `timeout`.
    pub fn wait_for_status(
        &self,
        timeout: Duration,
        done: impl Fn(&Status) -> bool,
    ) -> Result<Status> {
        self.inner.guard.check()?;
        let mut rx = self.inner.shared.status.subscribe();
        runtime::block_on(async move {
            let found = tokio::time::timeout(timeout, rx.wait_for(|s| done(s))).await;
            match found {
                Ok(Ok(status)) => Ok(status.clone()),
                _ => Err(Error::Timeout {
                    operation: "waiting for the engine status".into(),
                    seconds: timeout.as_secs_f64(),
                }),
            }
        })
    }
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        // In a forked child the runtime and sockets belong to the parent: touch nothing.
        if self.guard.same_process() {
            // SAFETY: dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.shared) };
        } else if let Ok(slot) = self.stop_tx.get_mut() {
            std::mem::forget(slot.take());
        }
    }
}

fn distinct_pools(workers: &[Worker]) -> Vec<Pool> {
    let mut pools: Vec<Pool> = Vec::new();
    for w in workers {
        if !pools.iter().any(|p| p.same(w.pool())) {
            pools.push(w.pool().clone());
        }
    }
    pools
}

/// One connection generation: a connection, a channel task per worker.
struct Session {
    connection: Arc<Connection>,
    links: Vec<(Worker, Arc<SessionLink>)>,
    lost: mpsc::UnboundedReceiver<String>,
    broker: String,
}

async fn open_session(inner: &Shared, generation: u64) -> Result<Session> {
    let name = format!("cleats consumer (pid {})", std::process::id());
    let config = &inner.config.connection;
    // Shared by the connection's socket and the settlers of its channels (transport.rs).
    let wire = Wire::new().map_err(|e| Error::ConnectionFailed {
        broker: config
            .brokers
            .iter()
            .map(|b| b.redacted())
            .collect::<Vec<_>>()
            .join(", "),
        message: format!("no eventfd for the connection: {e}"),
    })?;
    let (connection, broker) = connect(config, &name, Some(&wire)).await?;
    let connection = Arc::new(connection);
    let (lost_tx, lost) = mpsc::unbounded_channel();
    watch_events(
        &connection,
        format!("consumer connection to {broker}"),
        Some(lost_tx.clone()),
    );
    let workers = lock(&inner.workers).clone();
    let mut links = Vec::new();
    let result: Result<()> = async {
        let channel_error = |e: lapin::Error| Error::from_lapin(&broker, &e);
        for worker in &workers {
            let config = worker.config();
            let channel = connection.create_channel().await.map_err(channel_error)?;
            for item in worker.declarations() {
                topology::declare(&channel, &item)
                    .await
                    .map_err(|e| Error::Channel {
                        message: format!("declaring {item:?} for worker {}: {e}", worker.name()),
                    })?;
            }
            if config.ack {
                channel
                    .basic_qos(config.prefetch, BasicQosOptions::default())
                    .await
                    .map_err(channel_error)?;
            }
            if matches!(config.handler, crate::config::HandlerKind::Maxretry(_)) {
                // Maxretry publishes to the error exchange before acking: confirmed, so a
                // message is never acked before its copy is safe.
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(channel_error)?;
            }
            // On plain TCP the socket's reader takes this channel's deliveries (inbound.rs).
            let inbox = wire.consume(channel.id());
            let consumer = channel
                .basic_consume(
                    config.queue.name.as_str().into(),
                    "".into(),
                    BasicConsumeOptions {
                        no_ack: !config.ack,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(channel_error)?;
            let (link, commands) = SessionLink::new(
                generation,
                connection.clone(),
                channel.clone(),
                worker.config().prefetch,
                wire.clone(),
            );
            let task = ChannelTask::new(
                worker.clone(),
                link.clone(),
                channel,
                consumer.tag(),
                commands,
            );
            let lost_tx = lost_tx.clone();
            tokio::spawn(async move {
                if let Ended::Lost(reason) = task.run().await {
                    let _ = lost_tx.send(reason);
                }
            });
            worker.pool().add_source(Source::new(
                worker.clone(),
                link.clone(),
                consumer,
                inbox,
                wire.clone(),
            ));
            links.push((worker.clone(), link));
        }
        Ok(())
    }
    .await;
    let session = Session {
        connection,
        links,
        lost,
        broker,
    };
    match result {
        Ok(()) => {
            for (worker, link) in &session.links {
                worker.set_link(Some(link.clone()));
            }
            Ok(session)
        }
        Err(e) => {
            session.abandon().await;
            Err(e)
        }
    }
}

impl Session {
    /// The connection is gone: every tag of this generation is void.
    async fn abandon(self) {
        for (worker, link) in &self.links {
            link.kill();
            worker.set_link(None);
        }
        // Deliveries of this connection still waiting in the pools would only take the room
        // the next connection's deliveries need.
        for pool in distinct_pools(
            &self
                .links
                .iter()
                .map(|(w, _)| w.clone())
                .collect::<Vec<_>>(),
        ) {
            pool.purge_stale();
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.connection.close(320, "cleats: recovering".into()),
        )
        .await;
    }

    async fn stop(self, inner: &Shared, deadline: Instant) -> StopReport {
        let short = Duration::from_secs(5);
        for (_, link) in &self.links {
            link.ask(Command::Cancel, short).await;
        }
        let workers = lock(&inner.workers).clone();
        let mut requeued = 0;
        for pool in distinct_pools(&workers) {
            requeued += pool.requeue_buffered();
        }
        // Work in progress: acknowledgements still owed (ack mode, including Maxretry's
        // republishing) and `work` still running (every mode, auto-ack included).
        let mut drained = true;
        for (_, link) in &self.links {
            let left = deadline.saturating_duration_since(Instant::now());
            drained &= link.ask(Command::WhenIdle, left).await.is_some();
        }
        while workers.iter().any(|w| w.in_progress() > 0) {
            if Instant::now() >= deadline {
                drained = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for (worker, link) in &self.links {
            let unfinished = link.ask(Command::Close, short).await.unwrap_or(0);
            if unfinished > 0 {
                log::warn!("{}: {unfinished} message(s) still in progress at the stop deadline were requeued", worker.name());
            }
            requeued += unfinished;
            worker.set_link(None);
        }
        let _ = tokio::time::timeout(short, self.connection.close(200, "cleats: stopping".into()))
            .await;
        log::info!("stopped consuming from {}", self.broker);
        StopReport { drained, requeued }
    }
}

async fn supervise(
    inner: Arc<Shared>,
    mut stop_rx: mpsc::Receiver<StopRequest>,
    first: oneshot::Sender<Result<()>>,
) {
    let mut first = Some(first);
    let mut attempt: u32 = 0;
    let mut generation: u64 = 0;
    let finish = |inner: &Shared, request: Option<StopRequest>, report: StopReport| {
        inner.status.send_replace(Status::Stopped);
        if let Some(r) = request {
            let _ = r.reply.send(report);
        }
    };
    loop {
        let opened = tokio::select! {
            s = tokio::time::timeout(SESSION_SETUP_TIMEOUT, open_session(&inner, generation)) => {
                s.unwrap_or_else(|_| Err(Error::Timeout {
                    operation: "connecting and declaring the topology".into(),
                    seconds: SESSION_SETUP_TIMEOUT.as_secs_f64(),
                }))
            }
            request = stop_rx.recv() => {
                return finish(&inner, request, StopReport { drained: true, requeued: 0 });
            }
        };
        let last_error = match opened {
            Ok(mut session) => {
                let queues: Vec<&str> = session
                    .links
                    .iter()
                    .map(|(w, _)| w.config().queue.name.as_str())
                    .collect();
                if first.is_some() {
                    log::info!(
                        "connected to {}; consuming {}",
                        session.broker,
                        queues.join(", ")
                    );
                } else {
                    log::info!(
                        "recovered: reconnected to {} and restored {} consumer(s): {}",
                        session.broker,
                        queues.len(),
                        queues.join(", ")
                    );
                }
                // Status first: `start` returning means `status()` says Connected.
                inner.status.send_replace(Status::Connected {
                    broker: session.broker.clone(),
                    generation,
                });
                if let Some(f) = first.take() {
                    let _ = f.send(Ok(()));
                }
                attempt = 0;
                tokio::select! {
                    reason = session.lost.recv() => {
                        let reason = reason.unwrap_or_else(|| "connection closed".into());
                        log::warn!("lost the connection to {}: {reason}; recovering", session.broker);
                        session.abandon().await;
                        reason
                    }
                    request = stop_rx.recv() => {
                        let report = match &request {
                            Some(r) => session.stop(&inner, r.deadline).await,
                            None => { session.abandon().await; StopReport::default() }
                        };
                        return finish(&inner, request, report);
                    }
                }
            }
            Err(e) => {
                if let Some(f) = first.take() {
                    inner.status.send_replace(Status::Stopped);
                    let _ = f.send(Err(e));
                    return;
                }
                e.to_string()
            }
        };
        generation += 1;
        let delay = backoff(attempt, inner.config.connection.recovery_interval);
        attempt += 1;
        log::warn!(
            "reconnecting in {:.1}s (attempt {attempt}): {last_error}",
            delay.as_secs_f64()
        );
        inner.status.send_replace(Status::Recovering {
            attempt,
            last_error,
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            request = stop_rx.recv() => return finish(&inner, request, StopReport { drained: true, requeued: 0 }),
        }
    }
}
