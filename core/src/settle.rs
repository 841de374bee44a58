//! Settlement: what a worker's `work` returned, the channel operations a handler turns it into,
//! and the per-channel bookkeeping that pipelines and coalesces acknowledgements.

use crate::delivery::Properties;
use std::collections::VecDeque;
use std::time::Duration;

/// What `work` returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ack,
    /// Reject without requeue (dead-letters, or retries under Maxretry).
    Reject,
    /// Reject with requeue (bypasses Maxretry's counting).
    Requeue,
    /// `work` raised.
    Error(ErrorInfo),
    /// Anything else: the message is left unsettled.
    Noop,
}

impl Outcome {
    /// Sneakers' name for the outcome (`handled.<name>` metrics).
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Ack => "ack",
            Outcome::Reject => "reject",
            Outcome::Requeue => "requeue",
            Outcome::Error(_) => "error",
            Outcome::Noop => "noop",
        }
    }
}

/// The exception `work` raised.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorInfo {
    pub class: String,
    pub message: String,
    pub backtrace: Vec<String>,
}

/// A channel operation for one delivery tag, as Bunny names them. Built-in handlers produce
/// them from outcomes; custom handlers in the host language send them directly.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Ack {
        tag: u64,
        multiple: bool,
    },
    Reject {
        tag: u64,
        requeue: bool,
    },
    Nack {
        tag: u64,
        multiple: bool,
        requeue: bool,
    },
    /// Nothing on the wire: the message stays unacknowledged.
    Noop {
        tag: u64,
    },
    /// Publish a copy (confirmed), then ack the original: Maxretry's error queue.
    RepublishThenAck {
        tag: u64,
        republish: Box<Republish>,
    },
}

impl Action {
    /// The delivery tag the action settles.
    pub fn tag(&self) -> u64 {
        match self {
            Action::Ack { tag, .. }
            | Action::Reject { tag, .. }
            | Action::Nack { tag, .. }
            | Action::Noop { tag }
            | Action::RepublishThenAck { tag, .. } => *tag,
        }
    }

    /// A custom handler's channel operation by Bunny's name: `ack` (`channel.acknowledge`),
    /// `reject` or `nack`.
    pub fn from_channel_operation(
        operation: &str,
        tag: u64,
        multiple: bool,
        requeue: bool,
    ) -> crate::Result<Action> {
        match operation {
            "ack" | "acknowledge" => Ok(Action::Ack { tag, multiple }),
            "reject" => Ok(Action::Reject { tag, requeue }),
            "nack" => Ok(Action::Nack {
                tag,
                multiple,
                requeue,
            }),
            other => Err(crate::Error::option(
                "operation",
                format!("unknown channel operation '{other}' (expected ack, reject or nack)"),
            )),
        }
    }

    /// The same action for another tag.
    pub(crate) fn with_tag(mut self, new: u64) -> Action {
        match &mut self {
            Action::Ack { tag, .. }
            | Action::Reject { tag, .. }
            | Action::Nack { tag, .. }
            | Action::Noop { tag }
            | Action::RepublishThenAck { tag, .. } => *tag = new,
        }
        self
    }
}

/// A message to publish on the consuming channel before acking the original.
#[derive(Debug, Clone, PartialEq)]
pub struct Republish {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub properties: Properties,
}

/// What [`crate::Delivery::settle`] reports back, for the binding's metrics forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// From hand-out to settle.
    pub elapsed: Duration,
}

/// A frame to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireOp {
    Ack {
        tag: u64,
        multiple: bool,
    },
    Reject {
        tag: u64,
        requeue: bool,
    },
    Nack {
        tag: u64,
        multiple: bool,
        requeue: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Delivered, work not finished.
    InFlight,
    /// Work finished with an ack, frame not sent yet.
    AckReady,
    /// Work finished with noop: unacknowledged until the channel closes.
    Noop,
    /// Settled; kept only so that positions stay sorted until the front is popped.
    Done,
}

/// The unsettled deliveries of one channel, in tag order.
///
/// Acks are sent in batches: every ack that arrives while the engine is busy is collected, then
/// [`AckTracker::flush_acks`] sends one `multiple = true` ack for the run of finished messages at
/// the front (every unsettled tag up to it is finished with an ack) and single acks for the rest.
/// A message whose work has not finished is never covered by a `multiple` ack.
#[derive(Debug, Default)]
pub(crate) struct AckTracker {
    slots: VecDeque<(u64, Slot)>,
    in_flight: usize,
    ack_ready: usize,
    done: usize,
}

impl AckTracker {
    pub(crate) fn delivered(&mut self, tag: u64) {
        debug_assert!(self.slots.back().is_none_or(|(t, _)| *t < tag));
        self.slots.push_back((tag, Slot::InFlight));
        self.in_flight += 1;
    }

    /// Deliveries whose work has not finished.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn position(&self, tag: u64) -> Option<usize> {
        self.slots.binary_search_by_key(&tag, |(t, _)| *t).ok()
    }

    fn set(&mut self, index: usize, slot: Slot) {
        let old = std::mem::replace(&mut self.slots[index].1, slot);
        match old {
            Slot::InFlight => self.in_flight -= 1,
            Slot::AckReady => self.ack_ready -= 1,
            Slot::Done => self.done -= 1,
            Slot::Noop => {}
        }
        match slot {
            Slot::InFlight => self.in_flight += 1,
            Slot::AckReady => self.ack_ready += 1,
            Slot::Done => self.done += 1,
            Slot::Noop => {}
        }
    }

    /// Applies an action; returns the frames to send now (acks wait for [`Self::flush_acks`]).
    /// An unknown tag (already settled, or from an older connection) yields nothing: sending it
    /// would make the broker close the channel.
    pub(crate) fn apply(&mut self, action: &Action, out: &mut Vec<WireOp>) -> bool {
        match *action {
            Action::Ack {
                tag,
                multiple: false,
            } => self.mark(tag, Slot::AckReady),
            Action::Noop { tag } => self.mark(tag, Slot::Noop),
            Action::Reject { tag, requeue } => {
                let known = self.mark(tag, Slot::Done);
                if known {
                    out.push(WireOp::Reject { tag, requeue });
                }
                known
            }
            Action::Nack {
                tag,
                multiple: false,
                requeue,
            } => {
                let known = self.mark(tag, Slot::Done);
                if known {
                    out.push(WireOp::Nack {
                        tag,
                        multiple: false,
                        requeue,
                    });
                }
                known
            }
            Action::Ack {
                tag,
                multiple: true,
            }
            | Action::Nack {
                tag,
                multiple: true,
                ..
            } => {
                // A custom handler settling everything up to `tag` at once.
                if self.position(tag).is_none() {
                    return false;
                }
                self.flush_acks(out);
                for i in 0..self.slots.len() {
                    if self.slots[i].0 <= tag && self.slots[i].1 != Slot::Done {
                        self.set(i, Slot::Done);
                    }
                }
                out.push(match *action {
                    Action::Nack { requeue, .. } => WireOp::Nack {
                        tag,
                        multiple: true,
                        requeue,
                    },
                    _ => WireOp::Ack {
                        tag,
                        multiple: true,
                    },
                });
                self.compact();
                true
            }
            // The engine resolves republishing first and applies the ack afterwards.
            Action::RepublishThenAck { tag, .. } => self.position(tag).is_some(),
        }
    }

    fn mark(&mut self, tag: u64, slot: Slot) -> bool {
        match self.position(tag) {
            Some(i) if matches!(self.slots[i].1, Slot::InFlight | Slot::Noop) => {
                self.set(i, slot);
                self.compact();
                true
            }
            _ => false,
        }
    }

    /// Sends the acks collected since the last flush.
    pub(crate) fn flush_acks(&mut self, out: &mut Vec<WireOp>) {
        self.flush_front(out);
        // Behind an unfinished message: one ack each.
        if self.ack_ready > 0 {
            for i in 0..self.slots.len() {
                if self.slots[i].1 == Slot::AckReady {
                    out.push(WireOp::Ack {
                        tag: self.slots[i].0,
                        multiple: false,
                    });
                    self.set(i, Slot::Done);
                }
            }
        }
        self.compact();
    }

    /// Sends the run of acks at the front (every unsettled tag up to its last is finished
    /// with an ack) as one `multiple` ack, and leaves acks behind an unfinished message for
    /// later: once that message is settled, one frame covers them too.
    pub(crate) fn flush_front(&mut self, out: &mut Vec<WireOp>) {
        let mut last = None;
        let mut count = 0;
        while let Some(&(tag, slot)) = self.slots.front() {
            match slot {
                Slot::AckReady => {
                    last = Some(tag);
                    count += 1;
                    self.ack_ready -= 1;
                }
                Slot::Done => self.done -= 1,
                _ => break,
            }
            self.slots.pop_front();
        }
        if let Some(tag) = last {
            out.push(WireOp::Ack {
                tag,
                multiple: count > 1,
            });
        }
    }

    /// Deliveries not settled on the wire yet: in work, acked but not sent, or left unacked
    /// (noop). The broker counts them all against the prefetch window.
    pub(crate) fn unsettled(&self) -> usize {
        self.slots.len() - self.done
    }

    /// Acks recorded and not sent yet.
    pub(crate) fn ack_ready(&self) -> usize {
        self.ack_ready
    }

    /// Tags whose work has not finished (for requeueing at a stop deadline); marks them done.
    pub(crate) fn take_in_flight(&mut self) -> Vec<u64> {
        let mut tags = Vec::new();
        for i in 0..self.slots.len() {
            if self.slots[i].1 == Slot::InFlight {
                tags.push(self.slots[i].0);
                self.set(i, Slot::Done);
            }
        }
        self.compact();
        tags
    }

    fn compact(&mut self) {
        while matches!(self.slots.front(), Some((_, Slot::Done))) {
            self.slots.pop_front();
            self.done -= 1;
        }
        // Done slots stuck behind a long-lived noop: drop them so memory stays bounded.
        if self.done > 64 && self.done * 2 > self.slots.len() {
            self.slots.retain(|(_, s)| *s != Slot::Done);
            self.done = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(n: u64) -> AckTracker {
        let mut t = AckTracker::default();
        for tag in 1..=n {
            t.delivered(tag);
        }
        t
    }

    fn ack(t: &mut AckTracker, tag: u64) -> bool {
        t.apply(
            &Action::Ack {
                tag,
                multiple: false,
            },
            &mut Vec::new(),
        )
    }

    #[test]
    fn flush_front_leaves_acks_behind_unfinished_work_for_one_later_frame() {
        let mut t = tracker(5);
        for tag in [1, 3, 4] {
            assert!(ack(&mut t, tag));
        }
        let mut out = Vec::new();
        t.flush_front(&mut out);
        assert_eq!(
            out,
            vec![WireOp::Ack {
                tag: 1,
                multiple: false
            }]
        );
        assert_eq!(t.ack_ready(), 2, "3 and 4 wait behind 2");
        assert!(ack(&mut t, 2));
        out.clear();
        t.flush_front(&mut out);
        assert_eq!(
            out,
            vec![WireOp::Ack {
                tag: 4,
                multiple: true
            }]
        );
        assert_eq!((t.ack_ready(), t.in_flight()), (0, 1));
    }

    #[test]
    fn contiguous_front_run_is_one_multiple_ack() {
        let mut t = tracker(4);
        for tag in [2, 1, 3] {
            assert!(ack(&mut t, tag));
        }
        let mut out = Vec::new();
        t.flush_acks(&mut out);
        assert_eq!(
            out,
            [WireOp::Ack {
                tag: 3,
                multiple: true
            }]
        );
        assert_eq!(t.in_flight(), 1);
    }

    #[test]
    fn never_covers_unfinished_work() {
        let mut t = tracker(4);
        ack(&mut t, 2);
        ack(&mut t, 3);
        let mut out = Vec::new();
        t.flush_acks(&mut out);
        // Tag 1 is still being worked on: 2 and 3 go one by one.
        assert_eq!(
            out,
            [
                WireOp::Ack {
                    tag: 2,
                    multiple: false
                },
                WireOp::Ack {
                    tag: 3,
                    multiple: false
                }
            ]
        );
        ack(&mut t, 1);
        out.clear();
        t.flush_acks(&mut out);
        assert_eq!(
            out,
            [WireOp::Ack {
                tag: 1,
                multiple: false
            }]
        );
    }

    #[test]
    fn noop_blocks_coalescing_and_stays_unacked() {
        let mut t = tracker(3);
        t.apply(&Action::Noop { tag: 1 }, &mut Vec::new());
        ack(&mut t, 2);
        ack(&mut t, 3);
        let mut out = Vec::new();
        t.flush_acks(&mut out);
        assert!(out.iter().all(|op| matches!(
            op,
            WireOp::Ack {
                multiple: false,
                ..
            }
        )));
        assert_eq!(out.len(), 2);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn rejects_go_out_at_once_and_unknown_tags_are_ignored() {
        let mut t = tracker(2);
        let mut out = Vec::new();
        assert!(t.apply(
            &Action::Reject {
                tag: 1,
                requeue: true
            },
            &mut out
        ));
        assert_eq!(
            out,
            [WireOp::Reject {
                tag: 1,
                requeue: true
            }]
        );
        assert!(!t.apply(
            &Action::Reject {
                tag: 1,
                requeue: true
            },
            &mut out
        ));
        assert!(!ack(&mut t, 99));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn take_in_flight_returns_unfinished_only() {
        let mut t = tracker(3);
        ack(&mut t, 2);
        assert_eq!(t.take_in_flight(), [1, 3]);
        let mut out = Vec::new();
        t.flush_acks(&mut out);
        assert_eq!(
            out,
            [WireOp::Ack {
                tag: 2,
                multiple: false
            }]
        );
    }

    #[test]
    fn memory_stays_bounded_behind_a_noop() {
        let mut t = tracker(1);
        t.apply(&Action::Noop { tag: 1 }, &mut Vec::new());
        for tag in 2..10_000 {
            t.delivered(tag);
            ack(&mut t, tag);
            t.flush_acks(&mut Vec::new());
        }
        assert!(t.slots.len() < 200, "{}", t.slots.len());
    }

    #[test]
    fn multiple_ack_from_a_custom_handler_settles_everything_below() {
        let mut t = tracker(3);
        let mut out = Vec::new();
        assert!(t.apply(
            &Action::Ack {
                tag: 2,
                multiple: true
            },
            &mut out
        ));
        assert_eq!(
            out,
            [WireOp::Ack {
                tag: 2,
                multiple: true
            }]
        );
        assert_eq!(t.in_flight(), 1);
    }
}
