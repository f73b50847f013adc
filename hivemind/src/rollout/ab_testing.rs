//! `ab-testing`: two or more variants of the app, each with its own image, served side by side
//! behind the one service. Each variant takes its share of the clients (by percentage, to 0.1%)
//! and each client stays with one variant: the load balancer picks a new connection's slot by a
//! hash of the client's address alone, and lays each variant's slots out in one run (see
//! `affinity_slots` in the data plane), so the same client lands on the same variant on every
//! node, whatever the variants' replicas do. Each variant runs enough replicas to take its
//! share. The rollout brings the variants up beside the version they replace, which goes once
//! every variant replica is available; the test then runs until the operator promotes one
//! variant (`rollout promote --variant`), which deploys it as the app's one version.

use super::{DeploymentStrategy, Observed, Position, Step};
use crate::model::{Quotas, StrategySpec, ValidationError, Variant};

pub struct AbTesting;

/// The steps: the variants come up beside the old version; the old version goes.
const STARTING: u32 = 0;
const REPLACING: u32 = 1;

/// Replicas each variant runs out of `replicas`: enough to take its share (at least one, at
/// most all).
pub fn variant_replicas(replicas: u32, variants: &[Variant]) -> Vec<u32> {
    variants
        .iter()
        .map(|v| {
            if replicas == 0 {
                return 0;
            }
            (u64::from(v.share) * u64::from(replicas))
                .div_ceil(1000)
                .clamp(1, u64::from(replicas)) as u32
        })
        .collect()
}

/// How many replicas of each variant `node` runs. The placement lists one node per replica;
/// the variants take its entries in turn, each going on where the one before it stopped
/// (wrapping), so that they spread over the nodes rather than pile up on the first.
pub fn variant_local(placement: &[String], node: &str, counts: &[u32]) -> Vec<usize> {
    let len = placement.len();
    let mut offset = 0;
    counts
        .iter()
        .map(|&count| {
            let here = (0..count as usize)
                .filter(|k| len > 0 && placement[(offset + k) % len] == node)
                .count();
            offset += count as usize;
            here
        })
        .collect()
}

impl AbTesting {
    fn total(spec: &StrategySpec, observed: &Observed) -> u32 {
        variant_replicas(observed.replicas, &spec.variants)
            .iter()
            .sum()
    }
}

impl DeploymentStrategy for AbTesting {
    fn name(&self) -> &'static str {
        crate::model::AB_TESTING
    }

    fn check(&self, spec: &StrategySpec) -> Result<(), ValidationError> {
        super::refuse_unused(
            spec,
            self.name(),
            &["max_unavailable", "max_surge", "steps", "blue_green"],
        )?;
        if spec.variants.len() < 2 {
            return Err(ValidationError::new(
                "strategy.variants",
                "an A/B test needs at least two --variant \"name=..,image=..,percentage=..\"",
            ));
        }
        Ok(())
    }

    fn start(&self, spec: &StrategySpec, observed: &Observed, _: u64) -> Position {
        Position {
            quotas: Some(Quotas {
                new: Self::total(spec, observed),
                old: observed.replicas,
            }),
            step: STARTING,
            ..Position::default()
        }
    }

    fn step(&self, spec: &StrategySpec, at: &Position, observed: &Observed, now_ms: u64) -> Step {
        let total = Self::total(spec, observed);
        match at.step {
            STARTING if observed.new_available >= total => Step::Move(Position {
                quotas: Some(Quotas { new: total, old: 0 }),
                step: REPLACING,
                step_started_ms: now_ms,
                ..*at
            }),
            REPLACING if observed.old_total == 0 => Step::Complete,
            _ => Step::Wait,
        }
    }

    fn promote(
        &self,
        _: &StrategySpec,
        _: &Position,
        _: &Observed,
        _: u64,
    ) -> Result<Position, String> {
        Err("an A/B test is promoted one variant at a time: rollout promote --variant NAME".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variants(shares: &[u32]) -> Vec<Variant> {
        shares
            .iter()
            .enumerate()
            .map(|(i, &share)| Variant {
                name: format!("v{i}"),
                image: format!("web:v{i}"),
                share,
            })
            .collect()
    }

    #[test]
    fn each_variant_runs_enough_replicas_for_its_share_spread_over_the_nodes() {
        assert_eq!(variant_replicas(4, &variants(&[500, 500])), [2, 2]);
        assert_eq!(variant_replicas(4, &variants(&[900, 100])), [4, 1]);
        assert_eq!(variant_replicas(1, &variants(&[500, 500])), [1, 1]);
        assert_eq!(variant_replicas(0, &variants(&[500, 500])), [0, 0]);
        let placement: Vec<String> = ["a", "b", "c"].map(String::from).into();
        assert_eq!(variant_local(&placement, "a", &[2, 2]), [1, 1]);
        assert_eq!(variant_local(&placement, "b", &[2, 2]), [1, 0]);
        assert_eq!(variant_local(&placement, "c", &[2, 2]), [0, 1]);
        assert_eq!(variant_local(&[], "a", &[1, 1]), [0, 0]);
    }

    #[test]
    fn the_old_version_goes_once_every_variant_replica_is_available() {
        let spec = StrategySpec {
            name: "ab-testing".into(),
            variants: variants(&[500, 500]),
            ..Default::default()
        };
        assert!(super::super::check_strategy(&spec).is_ok());
        let mut observed = Observed {
            replicas: 2,
            old_total: 2,
            ..Default::default()
        };
        let at = AbTesting.start(&spec, &observed, 0);
        assert_eq!(at.quotas, Some(Quotas { new: 2, old: 2 }));
        observed.new_total = 2;
        observed.new_available = 1;
        assert_eq!(AbTesting.step(&spec, &at, &observed, 1), Step::Wait);
        observed.new_available = 2;
        let Step::Move(at) = AbTesting.step(&spec, &at, &observed, 2) else {
            panic!("no move");
        };
        assert_eq!(at.quotas, Some(Quotas { new: 2, old: 0 }));
        assert_eq!(AbTesting.step(&spec, &at, &observed, 3), Step::Wait);
        observed.old_total = 0;
        assert_eq!(AbTesting.step(&spec, &at, &observed, 4), Step::Complete);
        // One variant is no test.
        let one = StrategySpec {
            variants: variants(&[1000]),
            ..spec
        };
        let error = super::super::check_strategy(&one).unwrap_err().to_string();
        assert!(error.contains("at least two"), "{error}");
    }
}
