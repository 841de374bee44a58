//! One channel's settlements, shared by the host threads and the channel task: whoever settles a
//! message queues its frame, under one lock, so frames leave in the tracker's order.
//!
//! Host threads settle here directly instead of waking the channel task: at a small prefetch,
//! waking that task (and its thread) took as much CPU per message as everything else the engine
//! does. The task still runs the timer that sends a started batch of acks, closes the channel,
//! and is told when it must act.

use crate::ack_pacing::AckPacing;
use crate::settle::{AckTracker, Action, WireOp};
use crate::transport::Wire;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use lapin::Channel;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use tokio::sync::Notify;

#[derive(Debug)]
pub(crate) struct Settler {
    channel: Channel,
    /// The connection's socket (transport.rs): settlement frames go to it directly on plain
    /// TCP; otherwise through lapin, after which the I/O thread is nudged.
    wire: Arc<Wire>,
    state: Mutex<State>,
    /// A quarter of the window: a batch this long goes out at once, unless the pacing finds
    /// that a whole window's work is done within a round trip (ack_pacing.rs).
    ack_batch: usize,
    /// The channel's prefetch: how many unacked messages the broker sends before it waits.
    window: usize,
    /// Tells the channel task to look at [`Settler::wants`].
    pub(crate) signal: Notify,
}

#[derive(Debug, Default)]
struct State {
    tracker: AckTracker,
    pacing: AckPacing,
    wire: Vec<WireOp>,
    /// `wire` encoded as AMQP frames (kept for its capacity).
    frames: Vec<u8>,
    /// The channel task's ack timer is running (or asked to start): it will come for unsent
    /// acks.
    timer_running: bool,
    /// A host thread asked the channel task to start the timer.
    timer_requested: bool,
    /// The channel task waits for every delivery to be settled (a stop).
    idle_wanted: bool,
    /// The first frame that could not even be queued (the channel is closed).
    failed: Option<String>,
}

/// What the channel task should do after [`Settler::signal`].
#[derive(Debug)]
pub(crate) struct Wants {
    pub(crate) start_timer: bool,
    pub(crate) idle: bool,
    pub(crate) failed: Option<String>,
}

impl Settler {
    pub(crate) fn new(channel: Channel, prefetch: u16, wire: Arc<Wire>) -> Self {
        Settler {
            channel,
            wire,
            state: Mutex::new(State::default()),
            ack_batch: usize::from(prefetch / 4).max(1),
            // 0 is "no limit": the window is never full.
            window: if prefetch == 0 {
                usize::MAX
            } else {
                usize::from(prefetch)
            },
            signal: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change keeps the tracker consistent before anything can panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a delivery that will be settled (manual acks), in tag order.
    pub(crate) fn delivered(&self, tag: u64) {
        let mut s = self.lock();
        s.tracker.delivered(tag);
        s.pacing.delivered(Instant::now);
    }

    /// Applies a settlement by wire tag and queues the frames it calls for. Plain acks wait
    /// for a batch: once a batch of them is ready (a quarter of the window, or all of it,
    /// [`AckPacing::batch`]), the run at the front goes out as one
    /// `multiple` ack; everything else goes when the channel task's timer fires
    /// ([`ACK_DELAY`](crate::consumer::ACK_DELAY) at most after the first), or sooner when a
    /// host thread runs out of deliveries with the window full
    /// ([`Settler::flush_for_idle_thread`]); a batch that starts while the timer is stopped
    /// signals the task to start it.
    /// Returns false for a tag that is not (or no longer) awaiting settlement.
    pub(crate) fn apply(&self, action: &Action) -> bool {
        let mut state = self.lock();
        let s = &mut *state;
        let known = s.tracker.apply(action, &mut s.wire);
        if known {
            s.pacing.settled(Instant::now(), s.tracker.in_flight() > 0);
        }
        let mut signal = false;
        if s.idle_wanted {
            s.tracker.flush_acks(&mut s.wire);
        } else if s.tracker.ack_ready() >= s.pacing.batch(self.ack_batch, self.window) {
            // Acks behind unfinished work wait (for the timer, at most), so that they go out
            // in one `multiple` frame once that work is settled, not in a frame each: with
            // many threads the run at the front is often broken by a message still in work.
            self.send_acks(s, true);
        }
        if s.tracker.ack_ready() > 0 && !s.timer_running {
            s.timer_running = true;
            s.timer_requested = true;
            signal = true;
        }
        self.queue_frames(s);
        signal |= s.failed.is_some() || (s.idle_wanted && s.tracker.in_flight() == 0);
        drop(state);
        if signal {
            self.signal.notify_one();
        }
        known
    }

    /// A host thread ran out of deliveries: the acks held back go now rather than at the timer
    /// if they keep the broker from sending more (the messages in work and the acks held fill
    /// the prefetch window), or if they are a batch of a quarter of the window. The process has
    /// nothing else to do, so the broker had better refill it: at a small prefetch the pipe
    /// runs dry while a whole window's batch fills (prefetch 10: +15-20% msg/s, and less CPU
    /// for the broker, sending them here). Fewer acks than that wait for more, and go out in
    /// fewer frames: at a large prefetch, where an idle moment comes after every read, sending
    /// all of them each time cost 10% of the rate.
    pub(crate) fn flush_for_idle_thread(&self) {
        let mut state = self.lock();
        let s = &mut *state;
        let held = s.tracker.ack_ready();
        if send_at_idle(held, s.tracker.in_flight(), self.ack_batch, self.window) {
            self.send_acks(s, false);
            self.queue_frames(s);
        }
    }

    /// The channel task's ack timer fired: sends the batch. Returns whether the timer should
    /// run on: while that batch was something and work is still out (more acks will follow).
    pub(crate) fn timer_fired(&self) -> bool {
        let mut state = self.lock();
        let s = &mut *state;
        let sent = s.tracker.ack_ready() > 0;
        self.send_acks(s, false);
        self.queue_frames(s);
        s.timer_running = sent && s.tracker.in_flight() > 0;
        s.timer_running
    }

    /// What the channel task was signalled for.
    pub(crate) fn wants(&self) -> Wants {
        let mut s = self.lock();
        Wants {
            start_timer: std::mem::take(&mut s.timer_requested),
            idle: s.idle_wanted && s.tracker.in_flight() == 0,
            failed: s.failed.take(),
        }
    }

    /// From now on every ack goes out at once and the task hears when nothing is in flight;
    /// returns whether that is already so.
    pub(crate) fn want_idle(&self) -> bool {
        let mut state = self.lock();
        let s = &mut *state;
        s.idle_wanted = true;
        s.tracker.flush_acks(&mut s.wire);
        self.queue_frames(s);
        s.tracker.in_flight() == 0
    }

    /// Sends every ack, then requeues the messages still being worked on (a stop deadline);
    /// returns how many were requeued. Their late settlements will find nothing to settle.
    pub(crate) fn requeue_unfinished(&self) -> usize {
        let mut state = self.lock();
        let s = &mut *state;
        s.tracker.flush_acks(&mut s.wire);
        let unfinished = s.tracker.take_in_flight();
        s.wire.extend(unfinished.iter().map(|&tag| WireOp::Nack {
            tag,
            multiple: false,
            requeue: true,
        }));
        self.queue_frames(s);
        unfinished.len()
    }

    /// Collects the acks that are ready: the run at the front (`front_only`) or all of them.
    /// When they leave with every message of the window in the process, the next delivery is
    /// the broker's answer: the round trip that [`AckPacing`] weighs the batch size against.
    fn send_acks(&self, s: &mut State, front_only: bool) {
        let window_full = s.tracker.unsettled() >= self.window;
        let before = s.wire.len();
        if front_only {
            s.tracker.flush_front(&mut s.wire);
        } else {
            s.tracker.flush_acks(&mut s.wire);
        }
        if window_full && s.wire.len() > before {
            s.pacing.acked_full_window(Instant::now());
        }
    }

    /// Sends the collected frames, in order. On plain TCP, while the channel is open, they go
    /// to the socket from this thread ([`Wire::send_frames`]): no I/O thread wakes for them.
    /// Otherwise they go through lapin's I/O loop (see [`Settler::queue_with_lapin`]).
    fn queue_frames(&self, s: &mut State) {
        if s.wire.is_empty() {
            return;
        }
        if self.channel.status().connected() {
            s.frames.clear();
            for op in &s.wire {
                encode(self.channel.id(), op, &mut s.frames);
            }
            if self.wire.send_frames(&s.frames) {
                s.wire.clear();
                return;
            }
        }
        self.queue_with_lapin(s);
    }

    /// Hands the collected frames to lapin's I/O loop, which writes them in order. Each
    /// operation is polled once, which queues its frame, and dropped: awaiting it would need a
    /// task to wake once more per frame, and the result says nothing new (a frame that cannot
    /// be written fails the connection, which recovery handles, and closing the channel waits
    /// for its close-ok, which the broker sends only after every earlier frame). An operation
    /// refused before it was queued (the channel is closed) is recorded for the channel task.
    fn queue_with_lapin(&self, s: &mut State) {
        let mut cx = Context::from_waker(Waker::noop());
        for op in s.wire.drain(..) {
            let queued = match op {
                WireOp::Ack { tag, multiple } => poll_once(
                    &mut cx,
                    self.channel.basic_ack(tag, BasicAckOptions { multiple }),
                ),
                WireOp::Reject { tag, requeue } => poll_once(
                    &mut cx,
                    self.channel
                        .basic_reject(tag, BasicRejectOptions { requeue }),
                ),
                WireOp::Nack {
                    tag,
                    multiple,
                    requeue,
                } => poll_once(
                    &mut cx,
                    self.channel
                        .basic_nack(tag, BasicNackOptions { multiple, requeue }),
                ),
            };
            if let Err(e) = queued {
                s.failed.get_or_insert_with(|| e.to_string());
            }
        }
        self.wire.nudge();
    }
}

/// Whether `held` acks go when a host thread runs out of deliveries, with `in_flight` messages
/// in work ([`Settler::flush_for_idle_thread`]).
fn send_at_idle(held: usize, in_flight: usize, quarter: usize, window: usize) -> bool {
    held > 0 && (held >= quarter || in_flight + held >= window)
}

/// Appends `op` as an AMQP 0-9-1 method frame on `channel`: basic.ack (class 60, method 80),
/// basic.reject (90) or basic.nack (120), each a 64-bit delivery tag and one byte of flags.
fn encode(channel: u16, op: &WireOp, out: &mut Vec<u8>) {
    let (method, tag, flags) = match *op {
        WireOp::Ack { tag, multiple } => (80u16, tag, u8::from(multiple)),
        WireOp::Reject { tag, requeue } => (90, tag, u8::from(requeue)),
        WireOp::Nack {
            tag,
            multiple,
            requeue,
        } => (120, tag, u8::from(multiple) | u8::from(requeue) << 1),
    };
    out.push(1); // a method frame
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&13u32.to_be_bytes()); // class, method, tag, flags
    out.extend_from_slice(&60u16.to_be_bytes());
    out.extend_from_slice(&method.to_be_bytes());
    out.extend_from_slice(&tag.to_be_bytes());
    out.push(flags);
    out.push(0xCE); // frame end
}

/// Polls a channel operation once: `Err` only when it failed before its frame was queued.
fn poll_once<F: Future<Output = lapin::Result<()>>>(
    cx: &mut Context<'_>,
    op: F,
) -> lapin::Result<()> {
    let mut op = std::pin::pin!(op);
    match op.as_mut().poll(cx) {
        Poll::Ready(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::send_at_idle;

    #[test]
    fn an_idle_thread_sends_a_quarter_of_the_window_or_what_fills_it() {
        // Prefetch 10 (quarter 2): two held acks go, one waits while the window has room.
        assert!(send_at_idle(2, 0, 2, 10));
        assert!(!send_at_idle(1, 0, 2, 10));
        // One held ack behind nine messages in work: the broker sends nothing until it has it.
        assert!(send_at_idle(1, 9, 2, 10));
        // Prefetch 500: 124 acks wait for more, 125 go.
        assert!(!send_at_idle(124, 300, 125, 500));
        assert!(send_at_idle(125, 0, 125, 500));
        assert!(!send_at_idle(0, 10, 2, 10), "nothing to send");
    }
}
