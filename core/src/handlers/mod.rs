//! Handlers turn what `work` returned into channel operations, as Sneakers' handler classes do.
//! Oneshot and Maxretry live here; a custom handler lives in the host language and sends
//! [`Action`]s itself through [`crate::Worker::apply`].

pub mod maxretry;
pub mod oneshot;

use crate::config::HandlerKind;
use crate::delivery::Delivery;
use crate::settle::{Action, Outcome};

/// The actions the worker's handler takes for `outcome`.
pub(crate) fn actions(
    kind: &HandlerKind,
    delivery: &Delivery,
    outcome: &Outcome,
) -> Option<Action> {
    match kind {
        HandlerKind::Oneshot => Some(oneshot::action(delivery.info.delivery_tag, outcome)),
        HandlerKind::Maxretry(config) => Some(maxretry::action(config, delivery, outcome)),
        // The host's handler object settles through `Worker::apply`.
        HandlerKind::Custom => None,
    }
}
