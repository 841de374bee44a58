//! Per-worker counters and timings under Sneakers' names. The engine counts; bindings read the
//! names and forward each event to the user's metrics object from the thread that ran `work`.

use crate::settle::Outcome;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The outcomes of `work`, by the names metrics use.
pub const OUTCOME_NAMES: [&str; 5] = ["ack", "reject", "requeue", "error", "noop"];

/// `work.<Class>.started`, `work.<Class>.time`, `work.<Class>.handled.<outcome>`,
/// `work.<Class>.ended`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricNames {
    pub started: String,
    pub time: String,
    pub ended: String,
    handled: [String; 5],
}

impl MetricNames {
    pub fn new(worker: &str) -> Self {
        MetricNames {
            started: format!("work.{worker}.started"),
            time: format!("work.{worker}.time"),
            ended: format!("work.{worker}.ended"),
            handled: OUTCOME_NAMES.map(|o| format!("work.{worker}.handled.{o}")),
        }
    }

    pub fn handled(&self, outcome: &Outcome) -> &str {
        &self.handled[index(outcome)]
    }

    /// `work.<Class>.handled.<outcome>` by the outcome's name (`ack`, `reject`, `requeue`,
    /// `error`, `noop`).
    pub fn handled_by_name(&self, outcome: &str) -> Option<&str> {
        OUTCOME_NAMES
            .iter()
            .position(|o| *o == outcome)
            .map(|i| self.handled[i].as_str())
    }
}

fn index(outcome: &Outcome) -> usize {
    OUTCOME_NAMES
        .iter()
        .position(|o| *o == outcome.name())
        .expect("every outcome has a name")
}

/// Counters of one worker in this process.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    started: AtomicU64,
    ended: AtomicU64,
    handled: [AtomicU64; 5],
    time_total_us: AtomicU64,
    time_max_us: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub started: u64,
    pub ended: u64,
    pub ack: u64,
    pub reject: u64,
    pub requeue: u64,
    pub error: u64,
    pub noop: u64,
    pub time_total: Duration,
    pub time_max: Duration,
}

impl WorkerMetrics {
    pub(crate) fn started(&self) {
        self.started.fetch_add(1, Relaxed);
    }

    /// `handled` only counts with manual acks, as in Sneakers.
    pub(crate) fn finished(&self, outcome: Option<&Outcome>, elapsed: Duration) {
        if let Some(o) = outcome {
            self.handled[index(o)].fetch_add(1, Relaxed);
        }
        let us = elapsed.as_micros() as u64;
        self.time_total_us.fetch_add(us, Relaxed);
        self.time_max_us.fetch_max(us, Relaxed);
        self.ended.fetch_add(1, Relaxed);
    }

    pub(crate) fn in_progress(&self) -> u64 {
        // Two separate loads: saturate rather than trust their relative order.
        let ended = self.ended.load(Relaxed);
        self.started.load(Relaxed).saturating_sub(ended)
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let h = |i: usize| self.handled[i].load(Relaxed);
        MetricsSnapshot {
            started: self.started.load(Relaxed),
            ended: self.ended.load(Relaxed),
            ack: h(0),
            reject: h(1),
            requeue: h(2),
            error: h(3),
            noop: h(4),
            time_total: Duration::from_micros(self.time_total_us.load(Relaxed)),
            time_max: Duration::from_micros(self.time_max_us.load(Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sneakers_names() {
        let n = MetricNames::new("EmailWorker");
        assert_eq!(n.started, "work.EmailWorker.started");
        assert_eq!(n.time, "work.EmailWorker.time");
        assert_eq!(n.ended, "work.EmailWorker.ended");
        assert_eq!(
            n.handled(&Outcome::Requeue),
            "work.EmailWorker.handled.requeue"
        );
    }

    #[test]
    fn counts() {
        let m = WorkerMetrics::default();
        m.started();
        m.finished(Some(&Outcome::Ack), Duration::from_millis(2));
        m.started();
        m.finished(None, Duration::from_millis(5));
        let s = m.snapshot();
        assert_eq!((s.started, s.ended, s.ack), (2, 2, 1));
        assert_eq!(s.time_max, Duration::from_millis(5));
    }
}
