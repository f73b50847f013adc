//! `simple`: every node starts its new replicas at once and removes its old ones when they are
//! all ready there; a version that never becomes ready leaves the old one serving.

use super::{DeploymentStrategy, Observed, Position, Step};
use crate::model::{StrategySpec, ValidationError};

pub struct Simple;

impl DeploymentStrategy for Simple {
    fn name(&self) -> &'static str {
        "simple"
    }

    fn check(&self, spec: &StrategySpec) -> Result<(), ValidationError> {
        super::refuse_unused(
            spec,
            self.name(),
            &["max_unavailable", "max_surge", "steps", "blue_green"],
        )
    }

    fn start(&self, _: &StrategySpec, _: &Observed, _: u64) -> Position {
        Position::default()
    }

    fn step(&self, _: &StrategySpec, _: &Position, observed: &Observed, _: u64) -> Step {
        if observed.new_available >= observed.replicas && observed.old_total == 0 {
            Step::Complete
        } else {
            Step::Wait
        }
    }
}
