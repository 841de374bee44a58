//! Handlers turn what `work` returned into channel operations, as Sneakers' handler classes do.
//! Oneshot and Maxretry live here; a custom handler lives in the host language and sends
//! [`Action`]s itself through [`crate::Worker::apply`].

pub mod maxretry;
pub mod oneshot;

use crate::config::HandlerKind;
use crate::delivery::Delivery;
use crate::settle::{Action, Outcome};

/// The action the worker's handler takes for `outcome`.
pub(crate) fn action(kind: &HandlerKind, delivery: &Delivery, outcome: &Outcome) -> Action {
    match kind {
        HandlerKind::Oneshot => oneshot::action(delivery.info.delivery_tag, outcome),
        HandlerKind::Maxretry(config) => maxretry::action(config, delivery, outcome),
        // The host's handler object settles through `Worker::apply`, before or after this; the
        // work itself is finished either way, so a graceful stop does not wait for it.
        HandlerKind::Custom => Action::Noop {
            tag: delivery.info.delivery_tag,
        },
    }
}
