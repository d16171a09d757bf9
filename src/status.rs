//! Conditions in the kstatus shape: `Ready`, `Reconciling` and `Stalled`, each with a
//! reason and a message, and a `lastTransitionTime` that moves only when the
//! condition's status does. Pure: `now` is a parameter.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::condition::{READY, RECONCILING, STALLED};

/// Where an object stands after a reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// The server matches the spec.
    Ready { reason: &'static str, message: String },
    /// Not there yet, and trying: it will get there without a spec change.
    Progressing { reason: &'static str, message: String },
    /// Cannot get there until something changes (the spec, another object).
    Stalled { reason: &'static str, message: String },
}

impl Health {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Ready { reason, .. } | Self::Progressing { reason, .. } | Self::Stalled { reason, .. } => reason,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Ready { message, .. } | Self::Progressing { message, .. } | Self::Stalled { message, .. } => message,
        }
    }
}

/// The three conditions for `health`, keeping each previous `lastTransitionTime`
/// whose status did not change.
pub fn conditions(previous: &[Condition], health: &Health, generation: Option<i64>, now: &Time) -> Vec<Condition> {
    let (ready, reconciling, stalled) = match health {
        Health::Ready { .. } => (true, false, false),
        Health::Progressing { .. } => (false, true, false),
        Health::Stalled { .. } => (false, false, true),
    };
    let reason = health.reason();
    let message = health.message();
    [(READY, ready), (RECONCILING, reconciling), (STALLED, stalled)]
        .into_iter()
        .map(|(type_, is_true)| {
            let status = if is_true { "True" } else { "False" };
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            // Reconciling and Stalled say nothing when False, as kstatus expects.
            let (reason, message) = if type_ == READY || is_true { (reason, message) } else { (reason, "") };
            Condition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
                message: message.to_owned(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).expect("a time"))
    }

    fn find<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == type_).expect("the condition")
    }

    #[test]
    fn a_ready_object_has_ready_true_and_the_others_false() {
        let health = Health::Ready { reason: "InSync", message: "matches".into() };
        let conditions = conditions(&[], &health, Some(3), &at(10));
        assert_eq!(find(&conditions, READY).status, "True");
        assert_eq!(find(&conditions, RECONCILING).status, "False");
        assert_eq!(find(&conditions, STALLED).status, "False");
        assert!(conditions.iter().all(|c| c.observed_generation == Some(3)));
    }

    #[test]
    fn the_transition_time_stays_while_the_status_stays_and_moves_when_it_changes() {
        let ready = Health::Ready { reason: "InSync", message: "ok".into() };
        let first = conditions(&[], &ready, Some(1), &at(10));
        let again =
            conditions(&first, &Health::Ready { reason: "Updated", message: "changed".into() }, Some(2), &at(20));
        assert_eq!(find(&again, READY).last_transition_time, at(10), "still Ready: the time stays");
        assert_eq!(find(&again, READY).reason, "Updated");

        let stalled = Health::Stalled { reason: "ChangeRefused", message: "spec.storage".into() };
        let after = conditions(&again, &stalled, Some(3), &at(30));
        assert_eq!(find(&after, READY).last_transition_time, at(30));
        assert_eq!(find(&after, STALLED).status, "True");
        assert_eq!(find(&after, STALLED).message, "spec.storage");
        assert_eq!(find(&after, RECONCILING).last_transition_time, at(10), "Reconciling stayed False");
    }
}
