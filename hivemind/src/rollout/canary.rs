//! `canary`: the new version takes a share of the service's connections, split by weight in
//! the eBPF service map (per connection, to 0.1%), independent of how many replicas each side
//! runs. Each step's share holds for `interval_secs`; all along the step an analysis compares
//! the canary's failures (TCP resets it sent, SYNs it left unanswered, readiness lost,
//! restarts) with the stable version's and, where the HTTP ingress carries the traffic, its
//! rate of 5xx answers and its mean latency; a canary that fails goes back. The share never exceeds what the ready canary replicas can take: each
//! replica takes at most 1/replicas of the traffic.

use super::{DeploymentStrategy, Observed, Position, Step};
use crate::model::{Quotas, StrategySpec, ValidationError};

pub struct Canary;

/// Failures of the canary within one step that fail it, when the stable version (per replica)
/// had fewer than half as many.
pub const FAILURES_TO_FAIL: u64 = 3;

/// Requests through the HTTP ingress each version needs within a step before their latencies
/// are compared.
pub const MIN_HTTP_REQUESTS: u64 = 20;

/// A canary whose mean time to an answer through the ingress is twice the stable version's and
/// at least this many milliseconds more fails.
pub const SLOWER_BY_MS: f64 = 100.0;

/// The HTTP half of the analysis, from what every node's ingress sent each version in the
/// step: why the canary fails it, if it does. Its failed requests (5xx answers, and requests
/// its containers did not answer) fail it from [`FAILURES_TO_FAIL`] on when their rate is more
/// than twice the stable version's; its latency, as [`SLOWER_BY_MS`] says.
fn http_verdict(observed: &Observed) -> Option<String> {
    let (canary, stable) = (&observed.http_new, &observed.http_old);
    let rate =
        |f: &crate::model::HttpFigures| f.server_errors as f64 * 100.0 / f.requests.max(1) as f64;
    if canary.server_errors >= FAILURES_TO_FAIL
        && u128::from(canary.server_errors) * u128::from(stable.requests.max(1))
            > 2 * u128::from(stable.server_errors) * u128::from(canary.requests)
    {
        return Some(format!(
            "{} of {} requests through the HTTP ingress failed (5xx or no answer, {:.1}%) against {} of {} of the stable version ({:.1}%)",
            canary.server_errors,
            canary.requests,
            rate(canary),
            stable.server_errors,
            stable.requests,
            rate(stable)
        ));
    }
    if canary.requests < MIN_HTTP_REQUESTS || stable.requests < MIN_HTTP_REQUESTS {
        return None;
    }
    let (slow, usual) = (canary.mean_latency_ms()?, stable.mean_latency_ms()?);
    (slow > 2.0 * usual && slow - usual >= SLOWER_BY_MS).then(|| {
        format!(
            "its {} requests through the HTTP ingress took {slow:.0} ms on average against {usual:.0} ms for the stable version's {}",
            canary.requests, stable.requests
        )
    })
}

impl Canary {
    /// Replicas the canary runs for a share (permille) of the traffic: enough to take it.
    fn replicas_for(share: u32, replicas: u32) -> u32 {
        (u64::from(share) * u64::from(replicas))
            .div_ceil(1000)
            .clamp(1, u64::from(replicas.max(1))) as u32
    }

    /// The stable version keeps full strength until the last step; then its replicas go as
    /// the new ones become available.
    fn quotas(share: u32, observed: &Observed, current: Option<Quotas>) -> Quotas {
        let replicas = observed.replicas;
        if share < 1000 {
            return Quotas {
                new: Self::replicas_for(share, replicas),
                old: replicas,
            };
        }
        let old = replicas.saturating_sub(observed.new_available);
        Quotas {
            new: replicas,
            old: current.map_or(old, |q| q.old.min(old)),
        }
    }

    /// The new version's weight: the step's share as far as the ready canary replicas can take
    /// it; none at the last step (every replica weighs the same).
    fn weight(share: u32, observed: &Observed) -> Option<u32> {
        (share < 1000).then(|| Self::effective(share, observed))
    }

    /// Whether the step's whole share is in effect (its interval runs only then).
    fn full(share: u32, weight: Option<u32>) -> bool {
        weight.is_none_or(|w| w >= share)
    }

    /// The share the ready canary replicas can take, capped by the step's.
    fn effective(step_share: u32, observed: &Observed) -> u32 {
        if observed.replicas == 0 {
            return step_share;
        }
        let capacity = u64::from(observed.new_available) * 1000 / u64::from(observed.replicas);
        step_share.min(capacity as u32)
    }

    fn position(spec: &StrategySpec, step: u32, observed: &Observed, now_ms: u64) -> Position {
        let share = spec.steps.get(step as usize).copied().unwrap_or(1000);
        let weight = Self::weight(share, observed);
        Position {
            quotas: Some(Self::quotas(share, observed, None)),
            weight,
            step,
            step_started_ms: if Self::full(share, weight) { now_ms } else { 0 },
            failures_at_step: observed.new_failures,
            stable_failures_at_step: observed.old_failures,
        }
    }
}

impl DeploymentStrategy for Canary {
    fn name(&self) -> &'static str {
        "canary"
    }

    fn check(&self, spec: &StrategySpec) -> Result<(), ValidationError> {
        super::refuse_unused(
            spec,
            self.name(),
            &["max_unavailable", "max_surge", "blue_green"],
        )?;
        if spec.steps.is_empty() {
            return Err(ValidationError::new(
                "strategy.steps",
                "a canary needs --percentage or --steps",
            ));
        }
        Ok(())
    }

    fn start(&self, spec: &StrategySpec, observed: &Observed, now_ms: u64) -> Position {
        Self::position(spec, 0, observed, now_ms)
    }

    fn step(&self, spec: &StrategySpec, at: &Position, observed: &Observed, now_ms: u64) -> Step {
        let share = spec.steps.get(at.step as usize).copied().unwrap_or(1000);
        // The analysis: the canary's failures in this step against the stable version's,
        // per replica.
        let canary = observed.new_failures.saturating_sub(at.failures_at_step);
        let stable = observed
            .old_failures
            .saturating_sub(at.stable_failures_at_step);
        let (n_new, n_old) = (
            u64::from(observed.new_total.max(1)),
            u64::from(observed.old_total.max(1)),
        );
        // Every signal that fails the canary is named, not only the first one checked: which
        // of them crosses its threshold first is a matter of timing.
        let mut why = Vec::new();
        if canary >= FAILURES_TO_FAIL && canary * n_old > 2 * stable * n_new {
            why.push(format!(
                "{canary} failures (TCP resets it sent, SYNs it left unanswered, readiness lost, restarts) against {stable} of the stable version"
            ));
        }
        why.extend(http_verdict(observed));
        if !why.is_empty() {
            return Step::Fail(format!(
                "the canary failed its analysis at {}%: {}",
                permille(share),
                why.join("; ")
            ));
        }
        if share >= 1000 {
            return if observed.new_available >= observed.replicas && observed.old_total == 0 {
                Step::Complete
            } else {
                keep_weight(at, share, observed, now_ms)
            };
        }
        // The interval counts from when the step's whole share is in effect.
        let held = now_ms.saturating_sub(at.step_started_ms);
        if at.step_started_ms != 0
            && Self::full(share, Self::weight(share, observed))
            && held >= u64::from(spec.interval_secs) * 1000
        {
            return Step::Move(Self::position(spec, at.step + 1, observed, now_ms));
        }
        keep_weight(at, share, observed, now_ms)
    }

    fn promote(
        &self,
        spec: &StrategySpec,
        at: &Position,
        observed: &Observed,
        now_ms: u64,
    ) -> Result<Position, String> {
        let last = spec.steps.len().saturating_sub(1) as u32;
        if at.step >= last {
            return Err("the canary is at its last step already".to_string());
        }
        Ok(Self::position(spec, last, observed, now_ms))
    }

    fn on_failure(&self, _: &StrategySpec) -> super::OnFailure {
        // A canary that fails its analysis always goes back: that is what it is for.
        super::OnFailure::RollBack
    }
}

/// The same step, its weight following the ready canary replicas (and at the last step, the
/// old replicas going as new ones become available); its interval starts again whenever the
/// whole share comes into effect.
fn keep_weight(at: &Position, share: u32, observed: &Observed, now_ms: u64) -> Step {
    let weight = Canary::weight(share, observed);
    let step_started_ms = match (Canary::full(share, weight), at.step_started_ms) {
        (false, _) => 0,
        (true, 0) => now_ms,
        (true, since) => since,
    };
    let next = Position {
        weight,
        quotas: Some(Canary::quotas(share, observed, at.quotas)),
        step_started_ms,
        ..*at
    };
    if next == *at {
        Step::Wait
    } else {
        Step::Move(next)
    }
}

/// `125` permille as `12.5`.
pub fn permille(p: u32) -> String {
    if p.is_multiple_of(10) {
        format!("{}", p / 10)
    } else {
        format!("{}.{}", p / 10, p % 10)
    }
}
