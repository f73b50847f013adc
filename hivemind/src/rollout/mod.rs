//! Deployment strategies: how a redeploy replaces an app's containers across the cluster.
//!
//! A strategy is one [`DeploymentStrategy`] in [`STRATEGIES`], found by name. It plans: from
//! what the cluster shows ([`Observed`]) it picks the next [`Quotas`] (how many replicas of the
//! new generation and of older ones may run), or says the update is complete. [`advance`] wraps
//! a strategy with what every rollout shares: progress tracking, the progress deadline, and
//! the choice between holding a failed rollout and rolling it back. The app's owner calls it
//! in its reconcile pass and writes the result into the app's record; every node then runs its
//! share of each quota ([`local_quotas`]).

mod ab_testing;
mod blue_green;
mod canary;
mod rolling;
mod simple;

use crate::model::{HttpFigures, Quotas, Rollout, RolloutPhase, StrategySpec, ValidationError};

pub use ab_testing::{AbTesting, variant_local, variant_replicas};
pub use blue_green::BlueGreen;
pub use canary::{Canary, FAILURES_TO_FAIL, MIN_HTTP_REQUESTS, SLOWER_BY_MS, permille};
pub use rolling::RollingUpdate;
pub use simple::Simple;

/// What the cluster shows of an app under update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// Replicas wanted.
    pub replicas: u32,
    /// Containers of the new generation, in any state.
    pub new_total: u32,
    /// Of those, the ones ready for at least the strategy's `min_ready_secs`.
    pub new_available: u32,
    /// Containers of older generations still there.
    pub old_total: u32,
    /// Failures the data plane and the nodes counted for the new generation's containers (TCP
    /// resets they sent, restarts), and for older ones: running totals.
    pub new_failures: u64,
    pub old_failures: u64,
    /// What the HTTP ingress of every node sent to the new generation's containers and to
    /// older ones since the rollout's current step began (nothing when no request went through
    /// the ingress, or the strategy does not read it: see [`ANALYSES_HTTP`]).
    pub http_new: HttpFigures,
    pub http_old: HttpFigures,
}

/// Where a rollout stands, as a strategy moves it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// How many replicas of each generation the cluster may run; `None`: every node replaces
    /// its own replicas once their successors are ready there.
    pub quotas: Option<Quotas>,
    /// The new generation's share of the traffic in permille; `None`: by replica count.
    pub weight: Option<u32>,
    /// A stepped strategy's step and since when it holds (ms since the epoch).
    pub step: u32,
    pub step_started_ms: u64,
    /// [`Observed::new_failures`] and [`Observed::old_failures`] when the step began.
    pub failures_at_step: u64,
    pub stable_failures_at_step: u64,
}

/// A strategy's next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to change yet.
    Wait,
    /// A new position for the nodes to follow.
    Move(Position),
    /// Every replica runs the new generation, available, and no old one is left.
    Complete,
    /// The strategy's analysis failed the new version, for this reason.
    Fail(String),
}

/// What a failed rollout does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Stays where it is (for the operator to resume, undo or abort).
    Hold,
    /// Goes back to the generation it replaced.
    RollBack,
}

/// One way of replacing an app's containers. A new strategy is one file implementing this,
/// listed in [`STRATEGIES`].
pub trait DeploymentStrategy: Send + Sync {
    /// The name `--strategy` takes.
    fn name(&self) -> &'static str;

    /// Refuses flags this strategy has no use for, rather than ignoring them.
    fn check(&self, spec: &StrategySpec) -> Result<(), ValidationError>;

    /// Where a rollout starts at `now_ms`.
    fn start(&self, spec: &StrategySpec, observed: &Observed, now_ms: u64) -> Position;

    /// The next step from where the rollout stands and what the cluster shows.
    fn step(&self, spec: &StrategySpec, at: &Position, observed: &Observed, now_ms: u64) -> Step;

    /// Where `rollout promote` takes a rollout at `at`, or why it cannot be promoted.
    fn promote(
        &self,
        spec: &StrategySpec,
        at: &Position,
        observed: &Observed,
        now_ms: u64,
    ) -> Result<Position, String> {
        let _ = (spec, at, observed, now_ms);
        Err(format!(
            "a {} rollout has no steps to skip (pause, resume or abort it)",
            self.name()
        ))
    }

    /// What a rollout that made no progress within its deadline does.
    fn on_failure(&self, spec: &StrategySpec) -> OnFailure {
        if spec.auto_rollback {
            OnFailure::RollBack
        } else {
            OnFailure::Hold
        }
    }
}

/// Every strategy, by name.
pub static STRATEGIES: &[&dyn DeploymentStrategy] =
    &[&Simple, &RollingUpdate, &Canary, &BlueGreen, &AbTesting];

/// Strategies whose analysis reads the containers' failures (the nodes publish TCP resets in
/// the endpoint records only while one of these runs, or while an app serves an A/B test's
/// variants, whose figures its status shows).
pub const ANALYSED: &[&str] = &["canary", "blue-green"];

/// Strategies whose analysis also reads what the HTTP ingress saw of each version (the nodes
/// publish their ingress figures only while one of these runs).
pub const ANALYSES_HTTP: &[&str] = &["canary"];

/// Refuses the flags of `spec` that `strategy` has no use for (by field name).
fn refuse_unused(
    spec: &StrategySpec,
    strategy: &str,
    unused: &[&str],
) -> Result<(), ValidationError> {
    for field in unused {
        let set = match *field {
            "max_unavailable" => spec.max_unavailable.is_some(),
            "max_surge" => spec.max_surge.is_some(),
            "steps" => !spec.steps.is_empty(),
            "blue_green" => {
                spec.verification_secs != crate::model::DEFAULT_BLUE_GREEN_S
                    || spec.scale_down_delay_secs != crate::model::DEFAULT_BLUE_GREEN_S
                    || spec.manual_promotion
            }
            _ => false,
        };
        if set {
            let owner = match *field {
                "steps" => "canary",
                "blue_green" => "blue-green",
                _ => "rolling-update",
            };
            return Err(ValidationError::new(
                format!("strategy.{field}"),
                format!("applies to --strategy {owner} only, not {strategy}"),
            ));
        }
    }
    Ok(())
}

/// The strategy called `name`.
pub fn strategy(name: &str) -> Option<&'static dyn DeploymentStrategy> {
    STRATEGIES.iter().copied().find(|s| s.name() == name)
}

/// Checks a spec's strategy: a registered name, and only flags it uses.
pub fn check_strategy(spec: &StrategySpec) -> Result<(), ValidationError> {
    let names: Vec<&str> = STRATEGIES.iter().map(|s| s.name()).collect();
    let Some(strategy) = strategy(&spec.name) else {
        return Err(ValidationError::new(
            "strategy",
            format!(
                "{:?} is not a strategy: use {}",
                spec.name,
                names.join(" or ")
            ),
        ));
    };
    if !spec.variants.is_empty() && strategy.name() != crate::model::AB_TESTING
        || spec.duration_secs.is_some() && strategy.name() != crate::model::AB_TESTING
    {
        return Err(ValidationError::new(
            "strategy.variants",
            format!(
                "--variant and --duration apply to --strategy ab-testing only, not {}",
                spec.name
            ),
        ));
    }
    strategy.check(spec)
}

/// Starts a rollout from generation `from_generation` (running `from_spec`) to
/// `to_generation` at `now_ms`.
pub fn begin(
    spec: &StrategySpec,
    from_generation: u64,
    from_spec: crate::model::AppSpec,
    to_generation: u64,
    observed: &Observed,
    now_ms: u64,
) -> Rollout {
    let position = strategy(&spec.name)
        .map(|s| s.start(spec, observed, now_ms))
        .unwrap_or_default();
    let mut rollout = Rollout {
        strategy: spec.name.clone(),
        from_generation,
        from_spec: Box::new(from_spec),
        to_generation,
        quotas: None,
        phase: RolloutPhase::Progressing,
        started_ms: now_ms,
        progressed_ms: now_ms,
        best_available: observed.new_available,
        fewest_old: observed.old_total,
        message: None,
        weight: None,
        step: 0,
        step_started_ms: 0,
        failures_at_step: 0,
        stable_failures_at_step: 0,
    };
    set_position(&mut rollout, &position);
    rollout
}

/// Where `rollout` stands.
pub fn position(rollout: &Rollout) -> Position {
    Position {
        quotas: rollout.quotas,
        weight: rollout.weight,
        step: rollout.step,
        step_started_ms: rollout.step_started_ms,
        failures_at_step: rollout.failures_at_step,
        stable_failures_at_step: rollout.stable_failures_at_step,
    }
}

fn set_position(rollout: &mut Rollout, position: &Position) {
    rollout.quotas = position.quotas;
    rollout.weight = position.weight;
    rollout.step = position.step;
    rollout.step_started_ms = position.step_started_ms;
    rollout.failures_at_step = position.failures_at_step;
    rollout.stable_failures_at_step = position.stable_failures_at_step;
}

/// `rollout promote`: the rollout moved to its strategy's last step, or why it cannot be.
pub fn promote(
    rollout: &Rollout,
    spec: &StrategySpec,
    observed: &Observed,
    now_ms: u64,
) -> Result<Rollout, String> {
    let strategy =
        strategy(&rollout.strategy).ok_or_else(|| format!("no strategy {:?}", rollout.strategy))?;
    let position = strategy.promote(spec, &position(rollout), observed, now_ms)?;
    let mut next = rollout.clone();
    set_position(&mut next, &position);
    next.phase = RolloutPhase::Progressing;
    next.progressed_ms = now_ms;
    next.message = None;
    Ok(next)
}

/// What the driver does with a rollout.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing changed.
    Keep,
    /// Write this rollout into the app's record.
    Update(Rollout),
    /// Go back to the generation it replaced, for this reason.
    RollBack(String),
}

/// Moves a progressing rollout on by one step at `now_ms`.
pub fn advance(
    rollout: &Rollout,
    spec: &StrategySpec,
    observed: &Observed,
    now_ms: u64,
) -> Decision {
    if rollout.phase != RolloutPhase::Progressing {
        return Decision::Keep;
    }
    let Some(strategy) = strategy(&rollout.strategy) else {
        return Decision::Keep;
    };
    let mut next = rollout.clone();
    if observed.new_available > next.best_available || observed.old_total < next.fewest_old {
        next.progressed_ms = now_ms;
        next.best_available = next.best_available.max(observed.new_available);
        next.fewest_old = next.fewest_old.min(observed.old_total);
    }
    let mut failure = None;
    match strategy.step(spec, &position(rollout), observed, now_ms) {
        Step::Complete => {
            next.phase = RolloutPhase::Complete;
            set_position(&mut next, &Position::default());
            next.message = None;
            return Decision::Update(next);
        }
        Step::Move(position) => {
            // A new step is progress too.
            if position.step != rollout.step {
                next.progressed_ms = now_ms;
            }
            set_position(&mut next, &position);
        }
        Step::Wait => {}
        Step::Fail(reason) => failure = Some(reason),
    }
    let stalled_ms = now_ms.saturating_sub(next.progressed_ms);
    if failure.is_none() && stalled_ms > u64::from(spec.progress_deadline_secs) * 1000 {
        failure = Some(format!(
            "no progress for {} s (the progress deadline): {} of {} new replicas available, {} old left",
            spec.progress_deadline_secs,
            observed.new_available,
            observed.replicas,
            observed.old_total
        ));
    }
    if let Some(reason) = failure {
        match strategy.on_failure(spec) {
            OnFailure::RollBack => return Decision::RollBack(reason),
            OnFailure::Hold => {
                next.phase = RolloutPhase::Failed;
                next.message = Some(reason);
            }
        }
    }
    if next == *rollout {
        Decision::Keep
    } else {
        Decision::Update(next)
    }
}

/// How many replicas of the new and of older generations `node` runs under `quotas`. The
/// placement lists one node per replica; the new generation takes its first `new` entries,
/// older ones its last `old` (with a surge, some entries take both).
pub fn local_quotas(placement: &[String], node: &str, quotas: Quotas) -> (usize, usize) {
    let len = placement.len();
    let new = (quotas.new as usize).min(len);
    let old = (quotas.old as usize).min(len);
    let here = |slots: &[String]| slots.iter().filter(|n| *n == node).count();
    (here(&placement[..new]), here(&placement[len - old..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Amount;

    fn rolling(unavailable: u32, surge: u32) -> StrategySpec {
        StrategySpec {
            name: "rolling-update".into(),
            max_unavailable: Some(Amount::Count(unavailable)),
            max_surge: Some(Amount::Count(surge)),
            progress_deadline_secs: 30,
            ..Default::default()
        }
    }

    fn spec() -> crate::model::AppSpec {
        crate::contract::DeployRequest {
            image: "busybox".into(),
            name: "web".into(),
            ..Default::default()
        }
        .validate()
        .expect("valid")
    }

    #[test]
    fn unknown_strategies_and_foreign_flags_are_refused_by_name() {
        let mut spec = StrategySpec::default();
        assert!(check_strategy(&spec).is_ok());
        spec.name = "ab-testing".into();
        let error = check_strategy(&spec).unwrap_err().to_string();
        assert!(error.contains("at least two"), "{error}");
        spec.name = "yolo".into();
        let error = check_strategy(&spec).unwrap_err().to_string();
        assert!(
            error.contains("simple or rolling-update or canary or blue-green or ab-testing"),
            "{error}"
        );
        let with_duration = StrategySpec {
            duration_secs: Some(60),
            ..Default::default()
        };
        let error = check_strategy(&with_duration).unwrap_err().to_string();
        assert!(error.contains("ab-testing only"), "{error}");
        // Simple has no batches.
        let mut simple = rolling(1, 1);
        simple.name = "simple".into();
        let error = check_strategy(&simple).unwrap_err().to_string();
        assert!(error.contains("max_unavailable"), "{error}");
    }

    #[test]
    fn the_new_generation_takes_the_first_slots_and_the_old_the_last() {
        let placement: Vec<String> = ["a", "b", "c", "a", "b", "c"].map(String::from).into();
        let q = |new, old| Quotas { new, old };
        assert_eq!(local_quotas(&placement, "a", q(2, 5)), (1, 1));
        assert_eq!(local_quotas(&placement, "b", q(2, 5)), (1, 2));
        assert_eq!(local_quotas(&placement, "c", q(2, 5)), (0, 2));
        assert_eq!(local_quotas(&placement, "a", q(6, 0)), (2, 0));
        // Quotas above the placement (a scale-down mid-update) are clipped.
        assert_eq!(local_quotas(&placement, "c", q(9, 9)), (2, 2));
    }

    /// Plays a rolling update of 6 replicas where every started replica becomes available at
    /// the next step: availability never drops below 5 and the total never exceeds 7.
    #[test]
    fn a_rolling_update_keeps_within_unavailable_and_surge() {
        let strategy = rolling(1, 1);
        let mut observed = Observed {
            replicas: 6,
            old_total: 6,
            ..Default::default()
        };
        let mut rollout = begin(&strategy, 1, spec(), 2, &observed, 0);
        assert_eq!(rollout.quotas, Some(Quotas { new: 2, old: 5 }));
        let mut now = 0;
        for _ in 0..20 {
            let q = rollout.quotas.expect("quotas while progressing");
            assert!(q.new + q.old <= 7, "surge: {q:?}");
            // What the nodes did: the old ones went, the new ones started and became
            // available.
            observed.old_total = q.old;
            observed.new_total = q.new;
            assert!(observed.new_available + q.old >= 5, "availability: {q:?}");
            observed.new_available = q.new;
            now += 1000;
            match advance(&rollout, &strategy, &observed, now) {
                Decision::Update(next) => rollout = next,
                other => panic!("{other:?}"),
            }
            if rollout.phase == RolloutPhase::Complete {
                break;
            }
        }
        assert_eq!(rollout.phase, RolloutPhase::Complete);
        assert_eq!(rollout.quotas, None);
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let strategy = StrategySpec {
            name: "rolling-update".into(),
            ..Default::default()
        };
        // 25% of 6: surge 2, unavailable 1.
        let observed = Observed {
            replicas: 6,
            old_total: 6,
            ..Default::default()
        };
        let rollout = begin(&strategy, 1, spec(), 2, &observed, 0);
        assert_eq!(rollout.quotas, Some(Quotas { new: 3, old: 5 }));
        // 25% of 1 rounds unavailable to 0 and surge to 1: a new one first, then the old goes.
        let observed = Observed {
            replicas: 1,
            old_total: 1,
            ..Default::default()
        };
        let rollout = begin(&strategy, 1, spec(), 2, &observed, 0);
        assert_eq!(rollout.quotas, Some(Quotas { new: 1, old: 1 }));
    }

    #[test]
    fn a_stalled_rollout_fails_at_its_deadline_and_rolls_back_when_asked() {
        let mut strategy = rolling(1, 1);
        let observed = Observed {
            replicas: 6,
            new_total: 2,
            old_total: 5,
            ..Default::default()
        };
        let rollout = begin(&strategy, 1, spec(), 2, &observed, 0);
        assert_eq!(
            advance(&rollout, &strategy, &observed, 30_000),
            Decision::Keep
        );
        let Decision::Update(failed) = advance(&rollout, &strategy, &observed, 30_001) else {
            panic!("no failure at the deadline");
        };
        assert_eq!(failed.phase, RolloutPhase::Failed);
        assert!(failed.message.as_deref().unwrap_or("").contains("0 of 6"));
        // A failed rollout stays where it is.
        assert_eq!(
            advance(&failed, &strategy, &observed, 90_000),
            Decision::Keep
        );
        strategy.auto_rollback = true;
        assert!(matches!(
            advance(&rollout, &strategy, &observed, 30_001),
            Decision::RollBack(_)
        ));
        // Progress moves the deadline.
        let better = Observed {
            new_available: 1,
            ..observed
        };
        let Decision::Update(moved) = advance(&rollout, &strategy, &better, 29_000) else {
            panic!("no update");
        };
        assert_eq!(moved.progressed_ms, 29_000);
        assert_eq!(advance(&moved, &strategy, &better, 50_000), Decision::Keep);
    }

    fn canary(steps: &[u32]) -> StrategySpec {
        StrategySpec {
            name: "canary".into(),
            steps: steps.to_vec(),
            interval_secs: 10,
            ..Default::default()
        }
    }

    /// A 10% canary of 9 replicas: one canary replica beside the 9 stable ones, no traffic until
    /// it is ready, then 10% by weight; after the interval 50% (capped by what the ready canary
    /// replicas can take), then the last step replaces the stable ones as the new ones become
    /// available.
    #[test]
    fn a_canary_steps_its_weight_within_what_its_ready_replicas_take() {
        let strategy = canary(&[100, 500, 1000]);
        assert!(check_strategy(&strategy).is_ok());
        let mut observed = Observed {
            replicas: 9,
            old_total: 9,
            ..Default::default()
        };
        let mut rollout = begin(&strategy, 1, spec(), 2, &observed, 0);
        assert_eq!(rollout.quotas, Some(Quotas { new: 1, old: 9 }));
        assert_eq!(rollout.weight, Some(0), "not ready: no traffic");
        let step = |rollout: &mut Rollout, observed: &Observed, now: u64| {
            if let Decision::Update(next) = advance(rollout, &strategy, observed, now) {
                *rollout = next;
            }
        };
        observed.new_total = 1;
        observed.new_available = 1;
        step(&mut rollout, &observed, 1_000);
        assert_eq!(rollout.weight, Some(100));
        // The interval holds the step.
        step(&mut rollout, &observed, 9_000);
        assert_eq!((rollout.step, rollout.weight), (0, Some(100)));
        step(&mut rollout, &observed, 11_000);
        assert_eq!(rollout.step, 1);
        assert_eq!(rollout.quotas, Some(Quotas { new: 5, old: 9 }));
        assert_eq!(
            rollout.weight,
            Some(111),
            "1 ready canary of 9 takes 11.1% at most"
        );
        observed.new_total = 5;
        observed.new_available = 5;
        step(&mut rollout, &observed, 12_000);
        assert_eq!(rollout.weight, Some(500));
        step(&mut rollout, &observed, 23_000);
        assert_eq!(rollout.step, 2);
        assert_eq!(rollout.weight, None, "the last step weighs replicas alike");
        assert_eq!(rollout.quotas, Some(Quotas { new: 9, old: 4 }));
        observed.new_total = 9;
        observed.new_available = 9;
        step(&mut rollout, &observed, 24_000);
        assert_eq!(rollout.quotas, Some(Quotas { new: 9, old: 0 }));
        observed.old_total = 0;
        step(&mut rollout, &observed, 25_000);
        assert_eq!(rollout.phase, RolloutPhase::Complete);
    }

    #[test]
    fn a_canary_that_fails_more_than_the_stable_version_goes_back() {
        let strategy = canary(&[100, 1000]);
        let mut observed = Observed {
            replicas: 9,
            old_total: 9,
            new_total: 1,
            new_available: 1,
            old_failures: 4,
            ..Default::default()
        };
        let rollout = begin(&strategy, 1, spec(), 2, &observed, 0);
        // Failures counted before the step began do not count.
        observed.new_failures = 2;
        assert!(!matches!(
            advance(&rollout, &strategy, &observed, 1_000),
            Decision::RollBack(_)
        ));
        observed.new_failures = 3;
        let Decision::RollBack(reason) = advance(&rollout, &strategy, &observed, 1_000) else {
            panic!("no rollback");
        };
        assert!(reason.contains("analysis at 10%"), "{reason}");
        // As many failures per replica as the stable version had: not the canary's fault.
        observed.old_failures = 4 + 9 * 3;
        assert!(!matches!(
            advance(&rollout, &strategy, &observed, 1_000),
            Decision::RollBack(_)
        ));
    }

    /// Through the HTTP ingress: a canary failing more than twice as many of its requests as
    /// the stable version (from 3 on), or answering twice as slowly and 100 ms slower, goes
    /// back; fewer requests, or a stable version as bad, keep it.
    #[test]
    fn a_canary_failing_or_slow_through_the_ingress_goes_back() {
        let strategy = canary(&[200, 1000]);
        let mut observed = Observed {
            replicas: 6,
            old_total: 6,
            new_total: 2,
            new_available: 2,
            ..Default::default()
        };
        let rollout = begin(&strategy, 1, spec(), 2, &observed, 0);
        let figures = |requests, server_errors, mean_ms: u64| HttpFigures {
            requests,
            server_errors,
            latency_us: requests * mean_ms * 1000,
        };
        let verdict = |observed: &Observed| match advance(&rollout, &strategy, observed, 1_000) {
            Decision::RollBack(reason) => Some(reason),
            _ => None,
        };
        observed.http_old = figures(400, 4, 5);
        observed.http_new = figures(100, 2, 5);
        assert_eq!(verdict(&observed), None, "2 failures are not enough");
        observed.http_new = figures(100, 3, 5);
        let reason = verdict(&observed).expect("3% against 1%");
        assert!(
            reason.contains("analysis at 20%")
                && reason.contains("3 of 100 requests through the HTTP ingress failed")
                && reason.contains("4 of 400 of the stable version (1.0%)"),
            "{reason}"
        );
        observed.http_old = figures(400, 8, 5);
        assert_eq!(
            verdict(&observed),
            None,
            "2% against 3% is not twice as bad"
        );
        // Latency: twice as slow, and by 100 ms.
        observed.http_old = figures(400, 0, 120);
        observed.http_new = figures(100, 0, 230);
        assert_eq!(
            verdict(&observed),
            None,
            "110 ms slower but not twice as slow"
        );
        observed.http_new = figures(100, 0, 250);
        let reason = verdict(&observed).expect("250 ms against 120 ms");
        assert!(
            reason.contains("took 250 ms on average against 120 ms"),
            "{reason}"
        );
        observed.http_old = figures(400, 0, 2);
        observed.http_new = figures(100, 0, 90);
        assert_eq!(
            verdict(&observed),
            None,
            "45 times as slow, but 88 ms slower"
        );
        observed.http_new = figures(MIN_HTTP_REQUESTS - 1, 0, 2_000);
        assert_eq!(verdict(&observed), None, "too few requests to compare");
        // Both halves failing at once: the reason names both.
        observed.http_old = figures(400, 4, 5);
        observed.http_new = figures(100, 30, 5);
        observed.new_failures = 6;
        let reason = verdict(&observed).expect("TCP and HTTP failures");
        assert!(
            reason.contains("6 failures (TCP resets")
                && reason.contains("; 30 of 100 requests through the HTTP ingress failed"),
            "{reason}"
        );
    }

    /// Blue-green: green at full strength beside blue with no VIP traffic; after verification
    /// the VIP's weight flips to green; blue goes after the scale-down delay.
    #[test]
    fn blue_green_verifies_switches_at_once_and_scales_down_later() {
        let strategy = StrategySpec {
            name: "blue-green".into(),
            verification_secs: 10,
            scale_down_delay_secs: 60,
            ..Default::default()
        };
        assert!(check_strategy(&strategy).is_ok());
        let mut observed = Observed {
            replicas: 3,
            old_total: 3,
            ..Default::default()
        };
        let mut rollout = begin(&strategy, 1, spec(), 2, &observed, 0);
        assert_eq!(rollout.quotas, Some(Quotas { new: 3, old: 3 }));
        assert_eq!(rollout.weight, Some(0), "the VIP is blue's");
        let step = |rollout: &mut Rollout, observed: &Observed, now: u64| {
            if let Decision::Update(next) = advance(rollout, &strategy, observed, now) {
                *rollout = next;
            }
        };
        // Two of three green: verification has not begun.
        observed.new_total = 3;
        observed.new_available = 2;
        step(&mut rollout, &observed, 5_000);
        assert_eq!(rollout.step_started_ms, 0);
        observed.new_available = 3;
        step(&mut rollout, &observed, 6_000);
        step(&mut rollout, &observed, 15_000);
        assert_eq!(rollout.weight, Some(0), "still verifying");
        step(&mut rollout, &observed, 16_000);
        assert_eq!(rollout.weight, Some(1000), "switched");
        assert_eq!(rollout.quotas, Some(Quotas { new: 3, old: 3 }), "blue kept");
        step(&mut rollout, &observed, 75_000);
        assert_eq!(rollout.quotas, Some(Quotas { new: 3, old: 3 }));
        step(&mut rollout, &observed, 76_000);
        assert_eq!(rollout.quotas, Some(Quotas { new: 3, old: 0 }), "blue goes");
        observed.old_total = 0;
        step(&mut rollout, &observed, 77_000);
        assert_eq!(rollout.phase, RolloutPhase::Complete);
        // With manual promotion it waits for `rollout promote`, which needs all of green.
        let manual = StrategySpec {
            manual_promotion: true,
            ..strategy.clone()
        };
        let mut observed = Observed {
            replicas: 3,
            old_total: 3,
            new_total: 3,
            new_available: 2,
            ..Default::default()
        };
        let rollout = begin(&manual, 1, spec(), 2, &observed, 0);
        let error = promote(&rollout, &manual, &observed, 1_000).unwrap_err();
        assert!(error.contains("2 of 3"), "{error}");
        observed.new_available = 3;
        let promoted = promote(&rollout, &manual, &observed, 1_000).expect("promoted");
        assert_eq!(promoted.weight, Some(1000));
    }

    #[test]
    fn simple_completes_when_every_new_replica_is_available_and_the_old_are_gone() {
        let strategy = StrategySpec::default();
        let mut observed = Observed {
            replicas: 2,
            new_total: 2,
            new_available: 2,
            old_total: 2,
            ..Default::default()
        };
        let rollout = begin(&strategy, 1, spec(), 2, &observed, 0);
        assert_eq!(rollout.quotas, None);
        assert_eq!(advance(&rollout, &strategy, &observed, 1), Decision::Keep);
        observed.old_total = 0;
        let Decision::Update(done) = advance(&rollout, &strategy, &observed, 2) else {
            panic!("not complete");
        };
        assert_eq!(done.phase, RolloutPhase::Complete);
    }
}
