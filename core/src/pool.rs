//! The hand-off between the engine and host threads: host threads take deliveries from their
//! workers' consumers ([`Source`]) into a bounded queue and pull from it with a timeout, so every
//! wait is short and interruptible. A thread that finds the queue empty takes what its sources
//! have received; one that finds nothing sleeps: on the connection's socket, if no other thread
//! waits there (reader.rs), otherwise parked, to be woken by whichever thread reads more.
//!
//! A pool belongs to one worker, or to every worker of a process with `share_threads`. Its
//! `threads` is how many host threads should pull from it.

use crate::delivery::Delivery;
use crate::error::Result;
use crate::lock;
use crate::reader::Alarm;
use crate::runtime::{self, ProcessGuard};
use crate::settle::Outcome;
use crate::source::{Source, Taken};
use crate::transport::Wire;
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};
use std::task::{Context, Waker};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Gives back a delivery nobody will work on: requeued with manual acks (returns true);
/// with auto-ack the broker already forgot it, so it is lost, as `ack: false` accepts.
fn drop_unprocessed(delivery: Delivery) -> bool {
    if delivery.is_stale() {
        return false; // already back on the queue
    }
    if delivery.worker().config().ack {
        delivery.requeue_unprocessed();
        true
    } else {
        log::warn!(
            "{}: an auto-acked message (ack: false) received but not worked on before the stop is lost",
            delivery.worker().name()
        );
        false
    }
}

fn lock_names(p: &PoolShared) -> MutexGuard<'_, Vec<String>> {
    lock(&p.worker_names)
}

/// What [`Pool::next`] found.
// The delivery travels by value and the binding decides how to hold it: moved into its host
// object (one allocation per message, not two), or boxed to be freed as soon as it is settled.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Next {
    Delivery(Delivery),
    /// Nothing arrived in time: check for interrupts, then call again.
    Timeout,
    /// The engine is stopping: finish and leave the loop.
    Stopped,
}

/// A hand-off queue and the number of host threads that serve it.
#[derive(Debug, Clone)]
pub struct Pool {
    inner: Arc<PoolShared>,
}

#[derive(Debug)]
struct PoolShared {
    state: Mutex<State>,
    /// The workers whose deliveries it hands out, in the order they were added.
    worker_names: Mutex<Vec<String>>,
    /// The consumers of the current connection, one per worker. Locked while a thread takes
    /// deliveries from them, never while `state` is held (lapin calls `waker` with its
    /// consumer's lock held, and `waker` takes `state`).
    sources: Mutex<Vec<Source>>,
    /// Registered with every source: the thread that reads a delivery for one calls it.
    waker: Waker,
    /// The connection of the newest source: a thread with nothing to do waits on its socket.
    wire: Mutex<Option<Arc<Wire>>>,
    /// `None`: unbounded.
    capacity: Option<usize>,
    threads: usize,
    stopping: AtomicBool,
    guard: ProcessGuard,
    /// Starts the pool's busy check (one task, started on first use, so arming it allocates
    /// nothing).
    busy_check: Arc<Notify>,
    busy_checker: Once,
}

/// How a sleeper is woken.
#[derive(Debug)]
enum Waiter {
    /// Parked.
    Thread(Thread),
    /// Waiting on the connection's socket (reader.rs).
    Socket(Alarm),
}

impl Waiter {
    fn wake(self) {
        match self {
            Waiter::Thread(thread) => thread.unpark(),
            Waiter::Socket(alarm) => alarm.ring(),
        }
    }
}

/// Wakes the pool when a delivery arrives for one of its sources.
struct SourceWaker(Weak<PoolShared>);

impl std::task::Wake for SourceWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(inner) = self.0.upgrade() {
            Pool { inner }.source_ready();
        }
    }
}

impl Drop for PoolShared {
    fn drop(&mut self) {
        // Lets the busy check's task see the pool is gone and end.
        self.busy_check.notify_one();
    }
}

/// The queue and the threads asleep on it. Waking a host thread costs two context switches
/// and, in Ruby, a GVL hand-off, so a delivery wakes at most one sleeper, only when no thread
/// already woken will take it, and the sleeper woken is the one that first waited on a pool (in
/// practice the first-started thread): the same few threads do the work while the rest sleep.
/// (A plain channel woke a thread per delivery and spun with `sched_yield` before sleeping: half
/// of the per-message CPU of a no-op worker. Waking the thread that slept last instead let the
/// working set drift over all threads, and with it glibc's per-thread malloc arenas: each grew
/// to a full garbage cycle of a Ruby worker, +7 MiB of RSS with 10 threads.)
///
/// Nor is a sleeper woken while threads busy with short work will be back for the delivery
/// sooner: a thread that finishes a 10 µs `work` takes the next message for less than it costs
/// to wake another (with 10 threads at prefetch 10, a third of the CPU per message went to
/// those wake-ups). Busy threads keep at most [`BACKLOG_PER_BUSY_THREAD`] of expected work
/// queued each, and only work shorter than that; beyond it, or when none of them came back
/// within [`BUSY_CHECK`] (a `work` that ran long this time), sleepers are woken as before.
#[derive(Debug)]
struct State {
    queue: VecDeque<Delivery>,
    /// Asleep in `next`: (park id, the thread's rank, how to wake it).
    sleepers: Vec<(u64, u64, Waiter)>,
    /// Taken off `sleepers` and unparked, but not yet back at the queue.
    waking: usize,
    next_sleeper_id: u64,
    /// Threads that took a delivery and have not asked for the next one yet.
    busy: usize,
    /// Moving average of how long a thread takes from a delivery to its next call, in ns.
    work_ns: u64,
    /// Deliveries handed out so far: the busy check's sign that busy threads come back.
    handed_out: u64,
    /// A busy check is scheduled.
    check_armed: bool,
    /// Lapin may hold deliveries nobody has taken yet: the next thread at the queue takes them.
    source_ready: bool,
}

/// How much queued work (at the average work time) each busy thread may have waiting for it
/// before a sleeper is woken instead; work that takes longer than this wakes a sleeper
/// whatever the backlog. Under a GVL/GIL a woken thread cannot run beside the busy one, only
/// take a delivery and wait for the lock: at 100 us, a window of ten 10 us Ruby jobs sat on
/// the threshold and woke a thread every third window (docs/performance.md).
const BACKLOG_PER_BUSY_THREAD: Duration = Duration::from_micros(300);
/// How soon deliveries left to busy threads are looked at again: if no busy thread came back
/// meanwhile, sleepers are woken for them.
const BUSY_CHECK: Duration = Duration::from_millis(1);
/// The average work time assumed before any work was seen: long, so nothing waits at first.
const INITIAL_WORK: Duration = Duration::from_millis(1);

/// Whether `unclaimed` deliveries may wait for the `coming` threads (busy, or waking) rather
/// than wake a sleeper, with `work_ns` the average work time (see [`BACKLOG_PER_BUSY_THREAD`]).
fn leave_to_busy(unclaimed: usize, coming: usize, work_ns: u64) -> bool {
    let allowance = BACKLOG_PER_BUSY_THREAD.as_nanos() as u64;
    // A long job is never left waiting for a busy thread: the first of them to come back may
    // be a whole job away, where a wake-up costs tens of microseconds.
    work_ns <= allowance && unclaimed as u64 * work_ns <= coming as u64 * allowance
}

/// What a new or remaining delivery calls for.
enum Wake {
    /// Wake this sleeper (after unlocking, or it wakes into a held lock).
    Sleeper(Waiter),
    /// Left to busy threads: make sure a busy check is scheduled.
    Check,
    Nobody,
}

impl State {
    fn new() -> Self {
        State {
            queue: VecDeque::new(),
            sleepers: Vec::new(),
            waking: 0,
            next_sleeper_id: 0,
            busy: 0,
            work_ns: INITIAL_WORK.as_nanos() as u64,
            handed_out: 0,
            check_armed: false,
            source_ready: false,
        }
    }

    /// Deliveries (counting lapin's as one) that no thread awake will come for.
    fn unclaimed(&self) -> usize {
        (self.queue.len() + usize::from(self.source_ready)).saturating_sub(self.waking)
    }

    /// Whether a sleeper should be woken for the queue, which then takes it off the list.
    fn wake(&mut self) -> Wake {
        let unclaimed = self.unclaimed();
        if unclaimed == 0 || self.sleepers.is_empty() {
            return Wake::Nobody;
        }
        // Threads waking take their delivery, then help with the rest like busy ones.
        if leave_to_busy(unclaimed, self.busy + self.waking, self.work_ns) {
            return if self.check_armed {
                Wake::Nobody
            } else {
                self.check_armed = true;
                Wake::Check
            };
        }
        self.wake_one().map_or(Wake::Nobody, Wake::Sleeper)
    }

    /// The sleeper of lowest rank, taken off the list and counted as waking.
    fn wake_one(&mut self) -> Option<Waiter> {
        let first = (0..self.sleepers.len()).min_by_key(|&i| self.sleepers[i].1)?;
        let (_, _, waiter) = self.sleepers.swap_remove(first);
        self.waking += 1;
        Some(waiter)
    }

    /// Back from a sleep: either a waker took the sleeper `id` off the list (and counted it as
    /// waking) or the sleep timed out or ended early (and it is still listed).
    fn awake(&mut self, id: u64) {
        match self.sleepers.iter().position(|(s, _, _)| *s == id) {
            Some(i) => {
                self.sleepers.swap_remove(i);
            }
            None => self.waking -= 1,
        }
    }

    /// A thread came back for more after `took` with its last delivery.
    fn back_from_work(&mut self, took: Duration) {
        self.busy = self.busy.saturating_sub(1);
        let took = took.min(Duration::from_secs(1)).as_nanos() as u64;
        self.work_ns = (self.work_ns * 7 + took) / 8;
    }
}

/// Ranks threads by their first wait on any pool.
static NEXT_THREAD_RANK: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's rank: sleepers of lower rank are woken first.
    static THREAD_RANK: u64 = NEXT_THREAD_RANK.fetch_add(1, SeqCst);
    /// The pool (by address) this thread last took a delivery from, and when.
    static HANDED_OUT: Cell<Option<(usize, Instant)>> = const { Cell::new(None) };
}

impl Pool {
    /// `capacity: None` is unbounded (a shared pool, whose bound is the sum of its workers'
    /// prefetch as enforced by the broker).
    pub(crate) fn new(threads: usize, capacity: Option<usize>) -> Self {
        Pool {
            inner: Arc::new_cyclic(|pool| PoolShared {
                state: Mutex::new(State::new()),
                worker_names: Mutex::new(Vec::new()),
                sources: Mutex::new(Vec::new()),
                waker: Waker::from(Arc::new(SourceWaker(pool.clone()))),
                wire: Mutex::new(None),
                capacity: capacity.map(|n| n.max(1)),
                threads,
                stopping: AtomicBool::new(false),
                guard: ProcessGuard::new(),
                busy_check: Arc::new(Notify::new()),
                busy_checker: Once::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The lock guards no invariant a panicking holder could break half-way.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many host threads should pull from this pool.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// The workers whose deliveries this pool hands out: one, or several with `share_threads`.
    pub fn worker_names(&self) -> Vec<String> {
        lock_names(&self.inner).clone()
    }

    pub(crate) fn serve(&self, worker_name: &str) {
        lock_names(&self.inner).push(worker_name.to_string());
    }

    pub(crate) fn same(&self, other: &Pool) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Waits up to `timeout` for the next delivery. Call it with the GVL/GIL released; it
    /// touches no host object.
    pub fn next(&self, timeout: Duration) -> Result<Next> {
        let p = &self.inner;
        p.guard.check()?;
        let deadline = Instant::now() + timeout;
        let back = HANDED_OUT.with(|h| match h.get() {
            Some((pool, at)) if pool == self.id() => {
                h.set(None);
                Some(at.elapsed())
            }
            _ => None,
        });
        let mut state = self.state();
        if let Some(took) = back {
            state.back_from_work(took);
        }
        let mut asleep: Option<u64> = None;
        loop {
            if let Some(id) = asleep.take() {
                state.awake(id);
            }
            if p.stopping.load(SeqCst) {
                return Ok(Next::Stopped);
            }
            if state.queue.is_empty() || state.source_ready {
                state.source_ready = false;
                // Counted as waking: this thread comes back to the queue, so lapin's waker need
                // not wake a sleeper for what arrives meanwhile.
                state.waking += 1;
                let room = p
                    .capacity
                    .map_or(usize::MAX, |cap| cap.saturating_sub(state.queue.len()));
                drop(state);
                let (taken, more) = self.take_from_sources(room);
                state = self.state();
                state.waking -= 1;
                if p.stopping.load(SeqCst) {
                    drop(state);
                    // The stop may have requeued the buffer already: nobody else will.
                    taken.into_iter().for_each(|d| {
                        drop_unprocessed(d);
                    });
                    return Ok(Next::Stopped);
                }
                state.queue.extend(taken);
                state.source_ready |= more;
            }
            if let Some(mut delivery) = state.queue.pop_front() {
                // This thread is busy from now on; another delivery waiting and nobody coming
                // for it: pass the baton.
                state.busy += 1;
                state.handed_out += 1;
                let baton = state.wake();
                drop(state);
                HANDED_OUT.with(|h| h.set(Some((self.id(), Instant::now()))));
                self.act(baton);
                if delivery.is_stale() {
                    // Its connection is gone; the broker redelivers it. This thread is back.
                    HANDED_OUT.with(|h| h.set(None));
                    state = self.state();
                    state.busy = state.busy.saturating_sub(1);
                    continue;
                }
                delivery.mark_started();
                delivery.worker().counters().started();
                return Ok(Next::Delivery(delivery));
            }
            if state.source_ready {
                continue; // arrived while this thread looked
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Next::Timeout);
            }
            let id = state.next_sleeper_id;
            state.next_sleeper_id += 1;
            // Nothing to take: wait on the connection's socket unless another thread does. The
            // next burst then wakes this thread alone, not lapin's I/O thread and then this one
            // (reader.rs).
            let watch = lock(&p.wire).as_ref().and_then(|wire| wire.watch());
            let waiter = match &watch {
                Some(watch) => Waiter::Socket(watch.alarm()),
                None => Waiter::Thread(std::thread::current()),
            };
            state.sleepers.push((id, THREAD_RANK.with(|r| *r), waiter));
            asleep = Some(id);
            drop(state);
            let Some(watch) = watch else {
                std::thread::park_timeout(deadline - now);
                state = self.state();
                continue;
            };
            let woken = watch.wait(deadline - now);
            state = self.state();
            if woken {
                // Off the list and counted as coming to the queue, so that what this thread
                // reads wakes no other thread for it.
                state.awake(id);
                asleep = None;
                state.waking += 1;
                drop(state);
                watch.read();
                drop(watch);
                state = self.state();
                state.waking -= 1;
            }
        }
    }

    /// Serves `source` from now on, in place of the worker's consumer of an earlier connection.
    pub(crate) fn add_source(&self, source: Source) {
        *lock(&self.inner.wire) = Some(source.wire().clone());
        {
            let mut sources = self.lock_sources();
            sources.retain(|s| s.worker().name() != source.worker().name());
            sources.push(source);
        }
        // Someone must take its first deliveries (and register the waker with it).
        self.source_ready();
    }

    fn lock_sources(&self) -> MutexGuard<'_, Vec<Source>> {
        self.inner.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes up to `limit` deliveries from the sources, registering the waker with each source
    /// left empty; true when a source may hold more (stopped at the limit). Call it without
    /// `state` held.
    fn take_from_sources(&self, limit: usize) -> (Vec<Delivery>, bool) {
        let mut taken = Vec::new();
        let mut more = false;
        let mut cx = Context::from_waker(&self.inner.waker);
        self.lock_sources().retain_mut(|source| {
            let before = taken.len();
            match source.take(&mut cx, limit - taken.len(), &mut taken) {
                Taken::Waiting => {
                    if taken.len() == before {
                        source.release_held_acks();
                    }
                    true
                }
                Taken::Limited => {
                    more = true;
                    true
                }
                Taken::Ended => false,
            }
        });
        (taken, more)
    }

    /// Lapin received a delivery (or a source was added): a thread must come for it.
    fn source_ready(&self) {
        let mut state = self.state();
        state.source_ready = true;
        let wake = state.wake();
        drop(state);
        self.act(wake);
    }

    fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    fn act(&self, wake: Wake) {
        match wake {
            Wake::Sleeper(waiter) => waiter.wake(),
            Wake::Check => self.schedule_busy_check(),
            Wake::Nobody => {}
        }
    }

    /// Every [`BUSY_CHECK`] while deliveries wait for busy threads: if none of those threads
    /// came back meanwhile (their `work` runs long this time), wakes sleepers for every waiting
    /// delivery.
    fn schedule_busy_check(&self) {
        let p = &self.inner;
        p.busy_checker.call_once(|| {
            let pool = Arc::downgrade(p);
            let start = p.busy_check.clone();
            runtime::handle().spawn(async move {
                loop {
                    start.notified().await;
                    let Some(inner) = pool.upgrade() else { return };
                    let mut seen = Pool { inner }.state().handed_out;
                    loop {
                        tokio::time::sleep(BUSY_CHECK).await;
                        let Some(inner) = pool.upgrade() else { return };
                        if !(Pool { inner }).busy_check(&mut seen) {
                            break;
                        }
                    }
                }
            });
        });
        p.busy_check.notify_one();
    }

    /// One look at deliveries left to busy threads; false once nothing is left to check.
    /// `seen`: the deliveries handed out at the previous look.
    fn busy_check(&self, seen: &mut u64) -> bool {
        let mut wake = Vec::new();
        let mut state = self.state();
        if state.unclaimed() > 0 && *seen == state.handed_out {
            while state.unclaimed() > 0 {
                let Some(thread) = state.wake_one() else {
                    break;
                };
                wake.push(thread);
            }
        }
        *seen = state.handed_out;
        if state.unclaimed() == 0 || state.sleepers.is_empty() {
            state.check_armed = false;
        }
        let armed = state.check_armed;
        drop(state);
        for waiter in wake {
            waiter.wake();
        }
        armed
    }

    /// Stop handing out deliveries.
    pub(crate) fn begin_stop(&self) {
        self.inner.stopping.store(true, SeqCst);
        let sleepers = {
            let mut state = self.state();
            state.waking += state.sleepers.len();
            std::mem::take(&mut state.sleepers)
        };
        for (_, _, waiter) in sleepers {
            waiter.wake();
        }
    }

    /// Requeues what was received but never handed out (in the queue or still in lapin's
    /// consumers); returns how many went back.
    pub(crate) fn requeue_buffered(&self) -> usize {
        let (in_lapin, _) = self.take_from_sources(usize::MAX);
        let buffered = std::mem::take(&mut self.state().queue);
        buffered
            .into_iter()
            .chain(in_lapin)
            .map(drop_unprocessed)
            .filter(|&b| b)
            .count()
    }

    /// Drops deliveries of lost connections (the broker redelivers them), keeping the rest in
    /// order.
    pub(crate) fn purge_stale(&self) {
        self.lock_sources().retain(|s| s.is_alive());
        self.state().queue.retain(|d| !d.is_stale());
    }

    /// Runs `threads` Rust threads that loop next -> `work` -> settle until the engine stops:
    /// the pool for Rust workers (the demo, the benchmark ceiling). Host languages run their own
    /// threads on [`Pool::next`] instead.
    pub fn spawn_rust_threads<F>(&self, work: F) -> Vec<JoinHandle<()>>
    where
        F: Fn(&Delivery) -> Outcome + Send + Sync + 'static,
    {
        let work = Arc::new(work);
        (0..self.threads())
            .map(|i| {
                let pool = self.clone();
                let work = work.clone();
                std::thread::Builder::new()
                    .name(format!("cleats-work-{i}"))
                    .spawn(move || loop {
                        match pool.next(Duration::from_millis(100)) {
                            Ok(Next::Delivery(d)) => {
                                let outcome = work(&d);
                                if let Err(e) = d.settle(outcome) {
                                    log::error!("settling failed: {e}");
                                }
                            }
                            Ok(Next::Timeout) => {}
                            Ok(Next::Stopped) | Err(_) => return,
                        }
                    })
                    .expect("spawn a work thread")
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1_000;

    #[test]
    fn short_work_is_left_to_busy_threads_up_to_their_allowance() {
        // A window of ten Ruby jobs of 20 us: one thread gets through the nine queued sooner
        // than another could be woken and take the GVL.
        assert!(leave_to_busy(9, 1, 20 * US));
        assert!(!leave_to_busy(20, 1, 20 * US), "400 us for one thread");
        assert!(leave_to_busy(20, 2, 20 * US));
    }

    #[test]
    fn long_work_wakes_a_sleeper_whatever_the_backlog() {
        // One delivery queued behind ten busy threads with 2 ms jobs: 2 ms of backlog is within
        // ten allowances, but the first thread back may be a whole job away.
        assert!(!leave_to_busy(1, 10, 2_000 * US));
        assert!(leave_to_busy(1, 10, 300 * US));
    }
}
