//! Sneakers::Handlers::Oneshot: one attempt; errors and rejects are dropped (or dead-lettered).

use crate::settle::{Action, Outcome};

pub(crate) fn action(tag: u64, outcome: &Outcome) -> Action {
    match outcome {
        Outcome::Ack => Action::Ack {
            tag,
            multiple: false,
        },
        Outcome::Reject | Outcome::Error(_) => Action::Reject {
            tag,
            requeue: false,
        },
        Outcome::Requeue => Action::Reject { tag, requeue: true },
        Outcome::Noop => Action::Noop { tag },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_like_sneakers() {
        assert_eq!(
            action(1, &Outcome::Ack),
            Action::Ack {
                tag: 1,
                multiple: false
            }
        );
        assert_eq!(
            action(1, &Outcome::Reject),
            Action::Reject {
                tag: 1,
                requeue: false
            }
        );
        assert_eq!(
            action(1, &Outcome::Requeue),
            Action::Reject {
                tag: 1,
                requeue: true
            }
        );
        assert_eq!(
            action(1, &Outcome::Error(Default::default())),
            Action::Reject {
                tag: 1,
                requeue: false
            }
        );
        assert_eq!(action(1, &Outcome::Noop), Action::Noop { tag: 1 });
    }
}
