//! The engine's log lines, delivered to the host language by pulling, like messages: no Rust
//! thread may call Ruby or Python, so [`install`] makes the `log` facade queue records, and a
//! host thread forwards them to the app's logger with [`next_record`] (lock released while it
//! waits).

use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// One log line of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// "ERROR", "WARN", "INFO", "DEBUG" or "TRACE".
    pub level: &'static str,
    /// The module that logged, e.g. `cleats_core::engine`.
    pub target: String,
    pub message: String,
}

/// Records waiting beyond this are dropped (and counted): a host that stopped forwarding must
/// not make the engine grow without bound.
const CAPACITY: usize = 10_000;

struct Queue {
    tx: Sender<LogRecord>,
    rx: Receiver<LogRecord>,
    dropped: AtomicU64,
}

static QUEUE: OnceLock<Queue> = OnceLock::new();

struct Forwarder;

impl log::Log for Forwarder {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target().starts_with("cleats")
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if let Some(q) = QUEUE.get() {
            let line = LogRecord {
                level: record.level().as_str(),
                target: record.target().to_string(),
                message: record.args().to_string(),
            };
            if q.tx.try_send(line).is_err() {
                q.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn flush(&self) {}
}

/// Routes the engine's `log` records (at `level` and above) to the queue read by
/// [`next_record`]. Returns false if another logger was installed first (for example by a Rust
/// program embedding the engine); the level is updated either way.
pub fn install(level: log::LevelFilter) -> bool {
    QUEUE.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::bounded(CAPACITY);
        Queue {
            tx,
            rx,
            dropped: AtomicU64::new(0),
        }
    });
    static LOGGER: Forwarder = Forwarder;
    let installed = log::set_logger(&LOGGER).is_ok();
    log::set_max_level(level);
    installed
}

/// Waits up to `timeout` for the next record. `None` on timeout (or before [`install`]).
pub fn next_record(timeout: Duration) -> Option<LogRecord> {
    let q = QUEUE.get()?;
    let dropped = q.dropped.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        return Some(LogRecord {
            level: "WARN",
            target: "cleats_core::logging".into(),
            message: format!("{dropped} engine log line(s) dropped: nobody was reading them"),
        });
    }
    q.rx.recv_timeout(timeout).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_pulled_in_order() {
        assert!(install(log::LevelFilter::Info));
        log::info!(target: "cleats_core::engine", "first");
        log::debug!(target: "cleats_core::engine", "filtered out");
        log::warn!(target: "cleats_core::engine", "second {}", 2);
        log::info!(target: "lapin", "not ours");
        let a = next_record(Duration::from_millis(10)).unwrap();
        let b = next_record(Duration::from_millis(10)).unwrap();
        assert_eq!((a.level, a.message.as_str()), ("INFO", "first"));
        assert_eq!((b.level, b.message.as_str()), ("WARN", "second 2"));
        assert_eq!(next_record(Duration::from_millis(10)), None);
    }
}
