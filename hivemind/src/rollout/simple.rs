//! `simple`: every node starts its new replicas at once and removes its old ones when they are
//! all ready there; a version that never becomes ready leaves the old one serving.

use super::{DeploymentStrategy, Observed, Step};
use crate::model::{Quotas, StrategySpec, ValidationError};

pub struct Simple;

impl DeploymentStrategy for Simple {
    fn name(&self) -> &'static str {
        "simple"
    }

    fn check(&self, spec: &StrategySpec) -> Result<(), ValidationError> {
        for (field, set) in [
            ("strategy.max_unavailable", spec.max_unavailable.is_some()),
            ("strategy.max_surge", spec.max_surge.is_some()),
        ] {
            if set {
                return Err(ValidationError::new(
                    field,
                    "applies to --strategy rolling-update only",
                ));
            }
        }
        Ok(())
    }

    fn start(&self, _: &StrategySpec, _: &Observed) -> Option<Quotas> {
        None
    }

    fn step(&self, _: &StrategySpec, _: Option<Quotas>, observed: &Observed) -> Step {
        if observed.new_available >= observed.replicas && observed.old_total == 0 {
            Step::Complete
        } else {
            Step::Wait
        }
    }
}
