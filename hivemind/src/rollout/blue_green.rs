//! `blue-green`: the new version (green) runs at full strength beside the old one (blue),
//! reachable on a preview VIP and `preview.<app>.hivemind.local`, while the service's VIP
//! serves only blue (green's backends weigh 0). Once every green replica is available and has
//! served the preview for `verification_secs` without failing (or on `rollout promote` with
//! `manual_promotion`), one change of the app's record makes every node give the VIP's slots
//! to green alone. Blue stays for `scale_down_delay_secs`, so that an undo is instant, then
//! goes.

use super::{DeploymentStrategy, FAILURES_TO_FAIL, Observed, Position, Step};
use crate::model::{Quotas, StrategySpec, ValidationError};

pub struct BlueGreen;

/// The steps: green comes up and is verified behind the preview; the VIP is green's with
/// blue kept; blue goes.
const VERIFY: u32 = 0;
const SWITCHED: u32 = 1;
const SCALING_DOWN: u32 = 2;

impl BlueGreen {
    fn switched(at: &Position, observed: &Observed, now_ms: u64) -> Position {
        Position {
            quotas: Some(Quotas {
                new: observed.replicas,
                old: observed.replicas,
            }),
            weight: Some(1000),
            step: SWITCHED,
            step_started_ms: now_ms,
            ..*at
        }
    }
}

impl DeploymentStrategy for BlueGreen {
    fn name(&self) -> &'static str {
        "blue-green"
    }

    fn check(&self, spec: &StrategySpec) -> Result<(), ValidationError> {
        super::refuse_unused(
            spec,
            self.name(),
            &["max_unavailable", "max_surge", "steps"],
        )
    }

    fn start(&self, _: &StrategySpec, observed: &Observed, _: u64) -> Position {
        Position {
            quotas: Some(Quotas {
                new: observed.replicas,
                old: observed.replicas,
            }),
            // The VIP stays blue's: green's backends get no slot.
            weight: Some(0),
            step: VERIFY,
            step_started_ms: 0,
            failures_at_step: observed.new_failures,
            stable_failures_at_step: observed.old_failures,
        }
    }

    fn step(&self, spec: &StrategySpec, at: &Position, observed: &Observed, now_ms: u64) -> Step {
        let all_green = observed.new_available >= observed.replicas;
        match at.step {
            VERIFY => {
                let failures = observed.new_failures.saturating_sub(at.failures_at_step);
                if failures >= FAILURES_TO_FAIL {
                    return Step::Fail(format!(
                        "the new version failed its verification: {failures} failures (TCP resets it sent, SYNs it left unanswered, readiness lost, restarts)"
                    ));
                }
                match (all_green, at.step_started_ms) {
                    // Verification runs while every green replica is available.
                    (false, 0) => Step::Wait,
                    (false, _) => Step::Move(Position {
                        step_started_ms: 0,
                        ..*at
                    }),
                    (true, 0) => Step::Move(Position {
                        step_started_ms: now_ms,
                        ..*at
                    }),
                    (true, since) => {
                        let verified = now_ms.saturating_sub(since)
                            >= u64::from(spec.verification_secs) * 1000;
                        if verified && !spec.manual_promotion {
                            Step::Move(Self::switched(at, observed, now_ms))
                        } else {
                            Step::Wait
                        }
                    }
                }
            }
            SWITCHED => {
                let delay = u64::from(spec.scale_down_delay_secs) * 1000;
                if now_ms.saturating_sub(at.step_started_ms) < delay {
                    return Step::Wait;
                }
                Step::Move(Position {
                    quotas: Some(Quotas {
                        new: observed.replicas,
                        old: 0,
                    }),
                    step: SCALING_DOWN,
                    step_started_ms: now_ms,
                    ..*at
                })
            }
            _ if all_green && observed.old_total == 0 => Step::Complete,
            _ => Step::Wait,
        }
    }

    fn promote(
        &self,
        _: &StrategySpec,
        at: &Position,
        observed: &Observed,
        now_ms: u64,
    ) -> Result<Position, String> {
        if at.step != VERIFY {
            return Err("the new version has the VIP already".to_string());
        }
        // Only a whole green takes the VIP.
        if observed.new_available < observed.replicas {
            return Err(format!(
                "{} of {} new replicas are available: the switch waits for all",
                observed.new_available, observed.replicas
            ));
        }
        Ok(Self::switched(at, observed, now_ms))
    }
}
