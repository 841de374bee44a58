//! How many acks make a batch, judged from what one channel measures of its own traffic.
//!
//! Acks sent early let the broker refill the prefetch window while the process still works;
//! acks sent together cost the broker (and the process) one frame instead of several, and the
//! broker answers them with one burst of deliveries. Which is worth more depends on whether
//! the work the process holds outlasts a round trip to the broker. When a whole window's work
//! is done in less time than the broker takes to answer an ack (short jobs on a fast pool),
//! early acks cannot keep the threads busy anyway and only add frames: the batch is the whole
//! window. Otherwise it is a quarter of it, and the broker keeps three quarters to deliver
//! into while a batch fills.

use std::time::{Duration, Instant};

/// Weight of a new sample in the moving averages: about the last eight count.
const WEIGHT: f64 = 0.125;

#[derive(Debug, Default)]
pub(crate) struct AckPacing {
    /// From acks sent with the window full to the next delivery (ns, moving average): the
    /// round trip as this process sees it, the broker's work and the hand-over included.
    round_trip: Option<f64>,
    /// When acks left while every message of the window was in the process (none in transit,
    /// no credit left with the broker), so the next delivery is the broker's answer to them.
    full_window_acked_at: Option<Instant>,
    /// Time between two settlements while work was left in the process (ns, moving average):
    /// how fast the process works through what it holds.
    settle_gap: Option<f64>,
    /// The last settlement, and whether work was still in progress after it.
    last_settle: Option<(Instant, bool)>,
}

fn smooth(average: &mut Option<f64>, sample: Duration) {
    let x = sample.as_nanos() as f64;
    *average = Some(match *average {
        Some(a) => a + WEIGHT * (x - a),
        None => x,
    });
}

impl AckPacing {
    /// A message was settled at `now`; `work_left`: others are still in work. A gap that
    /// starts with nothing in work includes waiting for the broker, so it is not counted.
    pub(crate) fn settled(&mut self, now: Instant, work_left: bool) {
        if let Some((at, true)) = self.last_settle {
            smooth(&mut self.settle_gap, now.saturating_duration_since(at));
        }
        self.last_settle = Some((now, work_left));
    }

    /// Acks left at `now` while the whole window was in the process.
    pub(crate) fn acked_full_window(&mut self, now: Instant) {
        self.full_window_acked_at = Some(now);
    }

    /// A delivery reached a host thread; `now` is only read when it answers acks sent with the
    /// window full.
    pub(crate) fn delivered(&mut self, now: impl FnOnce() -> Instant) {
        if let Some(at) = self.full_window_acked_at.take() {
            smooth(&mut self.round_trip, now().saturating_duration_since(at));
        }
    }

    /// How many acks make a batch for a window of `window` messages: all of them when the
    /// process gets through a window faster than the broker answers, `quarter` otherwise (and
    /// until both have been measured).
    pub(crate) fn batch(&self, quarter: usize, window: usize) -> usize {
        match (self.settle_gap, self.round_trip) {
            (Some(gap), Some(round_trip)) if window as f64 * gap < round_trip => window,
            _ => quarter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    /// `n` settlements `gap` apart, with work left after each; then acks sent with the window
    /// full and a delivery `round_trip` later.
    fn measure(p: &mut AckPacing, t: &mut Instant, gap: Duration, round_trip: Duration) {
        for _ in 0..20 {
            *t += gap;
            p.settled(*t, true);
        }
        p.acked_full_window(*t);
        *t += round_trip;
        let at = *t;
        p.delivered(|| at);
    }

    #[test]
    fn a_quarter_until_both_the_work_and_the_round_trip_are_measured() {
        let mut p = AckPacing::default();
        assert_eq!(p.batch(2, 10), 2);
        let t = Instant::now();
        p.settled(t, true);
        p.settled(t + US, true);
        assert_eq!(p.batch(2, 10), 2, "no round trip measured yet");
        let mut p = AckPacing::default();
        p.acked_full_window(t);
        p.delivered(|| t + 300 * US);
        assert_eq!(p.batch(2, 10), 2, "no work measured yet");
    }

    #[test]
    fn the_whole_window_when_its_work_takes_less_than_a_round_trip() {
        let mut p = AckPacing::default();
        let mut t = Instant::now();
        // Ten 10 us jobs take 100 us; the broker answers in 300.
        measure(&mut p, &mut t, 10 * US, 300 * US);
        assert_eq!(p.batch(2, 10), 10);
        // Jobs of 100 us: the window takes 1 ms, so early acks keep the threads fed.
        measure(&mut p, &mut t, 100 * US, 300 * US);
        assert_eq!(p.batch(2, 10), 2);
        // Back to short jobs, and a broker that answers more slowly.
        measure(&mut p, &mut t, 10 * US, 2000 * US);
        assert_eq!(p.batch(2, 10), 10);
        // A large window is rarely done within a round trip.
        assert_eq!(p.batch(125, 500), 125);
    }

    #[test]
    fn waiting_for_the_broker_is_not_taken_for_work() {
        let mut p = AckPacing::default();
        let mut t = Instant::now();
        measure(&mut p, &mut t, 10 * US, 300 * US);
        // The last message of each window leaves nothing in work; the gap after it (the wait
        // for more deliveries) must not make the jobs look long.
        for _ in 0..50 {
            t += 10 * US;
            p.settled(t, false);
            t += 5000 * US;
            p.settled(t, true);
        }
        assert_eq!(p.batch(2, 10), 10);
    }

    #[test]
    fn only_a_delivery_after_acks_sent_with_the_window_full_measures_the_round_trip() {
        let mut p = AckPacing::default();
        let mut t = Instant::now();
        measure(&mut p, &mut t, 10 * US, 300 * US);
        // Deliveries that were already on their way say nothing of the round trip.
        for _ in 0..50 {
            t += US;
            let at = t;
            p.delivered(|| -> Instant { panic!("read the clock at {at:?} for nothing") });
        }
        assert_eq!(p.batch(2, 10), 10);
    }
}
