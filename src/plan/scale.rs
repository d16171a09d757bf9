//! Pure: how many workers a pool wants, from its consumer's pending messages.
//!
//! Up at once: `ceil(pending / targetPendingPerReplica)` within `[minReplicas,
//! maxReplicas]`, and at least 1 while pending is above `activationPending`. Down
//! only as far as the highest want of the last cooldown (the caller keeps that
//! window), so a dip does not cost workers that are needed again a moment later. To
//! 0 (with `minReplicas: 0`) once pending has stayed at or below
//! `activationPending` for the whole cooldown.
//!
//! Beside an HPA ([`beside_hpa`]) only the two steps an HPA cannot take are Jetway's:
//! 0 -> 1 when lag appears, and to 0 after the cooldown; between 1 and
//! `maxReplicas` the HPA decides alone.

use std::time::Duration;

use crate::api::workerpool::Autoscaling;

/// The cooldown when the spec names none.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);

/// What the scaler knows at one decision.
#[derive(Clone, Copy, Debug)]
pub struct ScaleInput {
    pub pending: u64,
    /// Replicas the pool has now.
    pub current: i32,
    /// The highest want of the last cooldown, before this one (0 if none).
    pub recent_high: i32,
    /// How long pending has been at or below activationPending (zero if it is above).
    pub quiet_for: Duration,
    /// Messages delivered and not yet acknowledged: work the pool is doing now.
    pub in_flight: u64,
}

/// Replicas, and why, as a PascalCase reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleDecision {
    pub replicas: i32,
    pub reason: &'static str,
}

impl ScaleDecision {
    fn new(replicas: i32, reason: &'static str) -> Self {
        Self { replicas, reason }
    }
}

/// What the pool wants for `input` under `policy`.
pub fn decide(policy: &Autoscaling, input: ScaleInput) -> ScaleDecision {
    let max = policy.max_replicas.max(1);
    let floor = policy.min_replicas.clamp(0, max);
    let per_replica = u64::try_from(policy.target_pending_per_replica).unwrap_or(1).max(1);
    let by_lag = i32::try_from(input.pending.div_ceil(per_replica)).unwrap_or(i32::MAX).min(max);
    let active = input.pending > u64::try_from(policy.activation_pending).unwrap_or(0);
    let cooldown = policy.cooldown.map_or(DEFAULT_COOLDOWN, |d| d.0);

    if !active && floor == 0 {
        return match input.current {
            0 => ScaleDecision::new(0, "Idle"),
            _ if input.quiet_for >= cooldown && input.in_flight == 0 => ScaleDecision::new(0, "IdleAfterCooldown"),
            current if input.in_flight > 0 => ScaleDecision::new(current.clamp(1, max), "WorkInFlight"),
            current => ScaleDecision::new(current.clamp(1, max), "CoolingDown"),
        };
    }
    let want = by_lag.clamp(floor.max(i32::from(active)), max);
    if want >= input.current {
        let reason = match (input.current, want == input.current) {
            (_, true) => "Steady",
            (0, false) => "Activated",
            _ => "PendingRose",
        };
        return ScaleDecision::new(want, reason);
    }
    let held = want.max(input.recent_high.min(input.current));
    ScaleDecision::new(held, if held < input.current { "PendingFell" } else { "Stabilizing" })
}

/// Beside an HPA: the step Jetway takes for `input`, or `None` where the HPA's
/// decision stands. An HPA holds a target at 0 replicas where it is (scaling
/// disabled) and never goes below 1, so waking and going to sleep are Jetway's.
pub fn beside_hpa(policy: &Autoscaling, input: ScaleInput) -> Option<ScaleDecision> {
    let floor = policy.min_replicas.clamp(0, policy.max_replicas.max(1));
    let active = input.pending > u64::try_from(policy.activation_pending).unwrap_or(0);
    let cooldown = policy.cooldown.map_or(DEFAULT_COOLDOWN, |d| d.0);
    match input.current {
        0 if active || floor > 0 => Some(ScaleDecision::new(floor.max(1), "Activated")),
        0 => Some(ScaleDecision::new(0, "Idle")),
        _ if floor == 0 && !active && input.quiet_for >= cooldown && input.in_flight == 0 => {
            Some(ScaleDecision::new(0, "IdleAfterCooldown"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::GoDuration;

    fn policy(min: i32, max: i32) -> Autoscaling {
        Autoscaling {
            min_replicas: min,
            max_replicas: max,
            target_pending_per_replica: 100,
            activation_pending: 0,
            cooldown: Some(GoDuration(Duration::from_secs(60))),
            behavior: None,
        }
    }

    fn input(pending: u64, current: i32) -> ScaleInput {
        ScaleInput { pending, current, recent_high: 0, quiet_for: Duration::ZERO, in_flight: 0 }
    }

    #[test]
    fn replicas_follow_pending_up_at_once_within_the_bounds() {
        let cases = [
            (0, 1, 1, "Steady"),
            (101, 1, 2, "PendingRose"),
            (950, 2, 10, "PendingRose"),
            (5_000, 3, 10, "PendingRose"),
        ];
        for (pending, current, replicas, reason) in cases {
            assert_eq!(
                decide(&policy(1, 10), input(pending, current)),
                ScaleDecision { replicas, reason },
                "{pending}"
            );
        }
    }

    #[test]
    fn an_idle_pool_at_zero_wakes_with_the_first_message_above_activation() {
        assert_eq!(decide(&policy(0, 10), input(1, 0)), ScaleDecision { replicas: 1, reason: "Activated" });
        let quiet = Autoscaling { activation_pending: 50, ..policy(0, 10) };
        assert_eq!(decide(&quiet, input(50, 0)).replicas, 0, "at activationPending it stays asleep");
        assert_eq!(decide(&quiet, input(51, 0)).replicas, 1);
    }

    #[test]
    fn a_quiet_pool_goes_to_zero_only_after_the_cooldown() {
        let quiet = |quiet_for| ScaleInput { quiet_for, ..input(0, 3) };
        assert_eq!(
            decide(&policy(0, 10), quiet(Duration::from_secs(59))),
            ScaleDecision { replicas: 3, reason: "CoolingDown" }
        );
        assert_eq!(
            decide(&policy(0, 10), quiet(Duration::from_secs(60))),
            ScaleDecision { replicas: 0, reason: "IdleAfterCooldown" }
        );
        assert_eq!(decide(&policy(2, 10), quiet(Duration::from_secs(600))).replicas, 2, "never below minReplicas");
    }

    #[test]
    fn scaling_down_holds_the_highest_want_of_the_cooldown() {
        let after_a_burst = ScaleInput { recent_high: 8, ..input(200, 8) };
        assert_eq!(decide(&policy(1, 10), after_a_burst), ScaleDecision { replicas: 8, reason: "Stabilizing" });
        let burst_over = ScaleInput { recent_high: 4, ..input(200, 8) };
        assert_eq!(decide(&policy(1, 10), burst_over), ScaleDecision { replicas: 4, reason: "PendingFell" });
    }

    #[test]
    fn beside_an_hpa_only_waking_and_sleeping_are_decided() {
        let woken = beside_hpa(&policy(0, 10), input(1, 0));
        assert_eq!(
            woken,
            Some(ScaleDecision { replicas: 1, reason: "Activated" }),
            "1, whatever the lag: the HPA goes on"
        );
        assert_eq!(beside_hpa(&policy(0, 10), input(5_000, 0)).map(|d| d.replicas), Some(1));
        assert_eq!(beside_hpa(&policy(0, 10), input(0, 0)), Some(ScaleDecision { replicas: 0, reason: "Idle" }));
        assert_eq!(beside_hpa(&policy(2, 10), input(0, 0)).map(|d| d.replicas), Some(2), "back to minReplicas");
        assert_eq!(beside_hpa(&policy(0, 10), input(900, 4)), None, "1..N is the HPA's");
        let quiet = |quiet_for| ScaleInput { quiet_for, ..input(0, 1) };
        assert_eq!(beside_hpa(&policy(0, 10), quiet(Duration::from_secs(59))), None);
        assert_eq!(
            beside_hpa(&policy(0, 10), quiet(Duration::from_secs(60))),
            Some(ScaleDecision { replicas: 0, reason: "IdleAfterCooldown" })
        );
        assert_eq!(beside_hpa(&policy(1, 10), quiet(Duration::from_secs(600))), None, "never below minReplicas");
    }

    #[test]
    fn work_in_flight_is_never_scaled_to_zero() {
        let busy = ScaleInput { quiet_for: Duration::from_secs(600), in_flight: 3, ..input(0, 2) };
        assert_eq!(decide(&policy(0, 10), busy), ScaleDecision::new(2, "WorkInFlight"));
        assert_eq!(beside_hpa(&policy(0, 10), busy), None, "the HPA's decision stands");
        let done = ScaleInput { in_flight: 0, ..busy };
        assert_eq!(decide(&policy(0, 10), done), ScaleDecision::new(0, "IdleAfterCooldown"));
        assert_eq!(beside_hpa(&policy(0, 10), done), Some(ScaleDecision::new(0, "IdleAfterCooldown")));
    }
}
