//! `rolling-update`: batches across the cluster, as Kubernetes's Deployment does. At most
//! `max_surge` replicas above the wanted count run at once, and at least the wanted count less
//! `max_unavailable` are available: old replicas go only as new ones become available.

use super::{DeploymentStrategy, Observed, Position, Step};
use crate::model::{Amount, Quotas, StrategySpec, ValidationError};

/// Kubernetes's default for both bounds.
const DEFAULT_BOUND: Amount = Amount::Percent(25);

pub struct RollingUpdate;

impl RollingUpdate {
    /// (surge, unavailable) for `replicas`: surge rounds up, unavailable down, and when both
    /// come to 0 one replica may be unavailable, so that the update can start.
    fn bounds(spec: &StrategySpec, replicas: u32) -> (u32, u32) {
        let surge = spec.max_surge.unwrap_or(DEFAULT_BOUND).of(replicas, true);
        let unavailable = spec
            .max_unavailable
            .unwrap_or(DEFAULT_BOUND)
            .of(replicas, false)
            .min(replicas);
        if surge == 0 && unavailable == 0 {
            (0, 1)
        } else {
            (surge, unavailable)
        }
    }
}

impl DeploymentStrategy for RollingUpdate {
    fn name(&self) -> &'static str {
        "rolling-update"
    }

    fn check(&self, spec: &StrategySpec) -> Result<(), ValidationError> {
        super::refuse_unused(spec, self.name(), &["steps", "blue_green"])
    }

    fn start(&self, spec: &StrategySpec, observed: &Observed, now_ms: u64) -> Position {
        let first = Position {
            quotas: Some(Quotas {
                new: 0,
                old: observed.old_total.min(observed.replicas),
            }),
            ..Position::default()
        };
        match self.step(spec, &first, observed, now_ms) {
            Step::Move(position) => position,
            Step::Wait | Step::Complete | Step::Fail(_) => first,
        }
    }

    fn step(&self, spec: &StrategySpec, at: &Position, observed: &Observed, _: u64) -> Step {
        let quotas = at.quotas;
        let replicas = observed.replicas;
        let (surge, unavailable) = Self::bounds(spec, replicas);
        let current = quotas.unwrap_or(Quotas {
            new: 0,
            old: observed.old_total.min(replicas),
        });
        // Old replicas go as far as the available new ones allow, never coming back.
        let min_available = replicas - unavailable;
        let old = current
            .old
            .min(replicas)
            .min(min_available.saturating_sub(observed.new_available));
        // New ones fill what the surge leaves.
        let new = current
            .new
            .max((replicas + surge).saturating_sub(old))
            .min(replicas);
        if observed.new_available >= replicas && old == 0 && observed.old_total == 0 {
            return Step::Complete;
        }
        let next = Quotas { new, old };
        if quotas == Some(next) {
            Step::Wait
        } else {
            Step::Move(Position {
                quotas: Some(next),
                ..*at
            })
        }
    }
}
