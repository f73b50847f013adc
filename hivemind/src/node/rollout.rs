//! Driving rollouts. The app's owner moves each progressing rollout on once per reconcile pass
//! (`crate::rollout` decides how); any node carries out the operator's pause, resume, abort and
//! promote.
//! Everything a rollout is lives in the app's replicated record, so a restarted daemon, or the
//! next owner after the driving node is lost, goes on where it stood.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::apps::lock;
use super::{Node, NodeError};
use crate::command::{Outcome, RolloutAction};
use crate::model::{HttpFigures, Rollout, RolloutPhase};
use crate::rollout::{Decision, Observed};
use crate::state::Row as _;
use crate::state::{
    APPS, AppRecord, ContainerStatus, ENDPOINTS, EndpointRecord, INGRESS_FIGURES,
    IngressFiguresRecord, PLACEMENTS, now_millis, now_secs,
};

/// What the app's owner saw of one container's readiness during a rollout.
#[derive(Debug, Default)]
pub(super) struct Readiness {
    /// Since when it has been ready (none while it is not).
    since: Option<Instant>,
    /// Times it stopped being ready while it ran.
    lost: u64,
}

impl Node {
    /// What the cluster shows of `app`'s update to its current generation: a new container
    /// counts as available once the owner has seen it ready for `min_ready_secs`. A
    /// container's failures are its restarts, the TCP resets it sent, the SYNs it left
    /// unanswered, and the times the owner saw it lose its readiness while it ran.
    pub(super) fn observe_rollout(&self, app: &AppRecord) -> Result<Observed, NodeError> {
        let endpoints: Vec<EndpointRecord> = self.store.values(ENDPOINTS)?;
        let min_ready = Duration::from_secs(u64::from(app.spec.strategy.min_ready_secs));
        let now = Instant::now();
        let mut since = lock(&self.ready_since);
        let mut observed = Observed {
            replicas: app.spec.replicas,
            ..Default::default()
        };
        for endpoint in endpoints.iter().filter(|e| e.app == app.spec.name) {
            let running = endpoint.status == ContainerStatus::Running;
            let seen = since.entry(endpoint.container.clone()).or_default();
            if endpoint.ready && running {
                seen.since.get_or_insert(now);
            } else if seen.since.take().is_some() && running {
                seen.lost += 1;
            }
            let failures = u64::from(endpoint.restarts)
                + endpoint.resets
                + endpoint.unanswered_syns
                + seen.lost;
            if endpoint.generation != app.generation {
                observed.old_total += 1;
                observed.old_failures += failures;
                continue;
            }
            observed.new_total += 1;
            observed.new_failures += failures;
            if seen
                .since
                .is_some_and(|first| now.duration_since(first) >= min_ready)
            {
                observed.new_available += 1;
            }
        }
        drop(since);
        if let Some((new, old)) = self.ingress_step_figures(app)? {
            observed.http_new = new;
            observed.http_old = old;
        }
        Ok(observed)
    }

    /// What every node's HTTP ingress sent the new generation of `app` and older ones since its
    /// rollout's current step began; none unless a rollout whose analysis reads them is active.
    pub fn ingress_step_figures(
        &self,
        app: &AppRecord,
    ) -> Result<Option<(HttpFigures, HttpFigures)>, NodeError> {
        let Some(rollout) = app
            .active_rollout()
            .filter(|r| crate::rollout::ANALYSES_HTTP.contains(&r.strategy.as_str()))
        else {
            return Ok(None);
        };
        let (mut new, mut old) = (HttpFigures::default(), HttpFigures::default());
        for record in self.store.values::<IngressFiguresRecord>(INGRESS_FIGURES)? {
            if let Some(step) = record
                .apps
                .get(&app.spec.name)
                .filter(|f| f.generation == rollout.to_generation && f.step == rollout.step)
            {
                new.add(&step.new);
                old.add(&step.old);
            }
        }
        Ok(Some((new, old)))
    }

    /// Starts a rollout in `record` (a new generation of the app `before` was) unless the app
    /// has no container yet.
    pub(super) fn begin_rollout(
        &self,
        record: &mut AppRecord,
        before: &AppRecord,
    ) -> Result<(), NodeError> {
        let observed = self.observe_rollout(record)?;
        if observed.old_total == 0 && observed.new_total == 0 {
            record.rollout = None;
            return Ok(());
        }
        record.rollout = Some(crate::rollout::begin(
            &record.spec.strategy,
            before.generation,
            before.spec.clone(),
            record.generation,
            &observed,
            now_millis(),
        ));
        Ok(())
    }

    /// Moves on the progressing rollouts of the apps this node owns.
    pub async fn reconcile_rollouts(&self) -> Result<(), NodeError> {
        let apps = self.store.apps()?;
        for app in &apps {
            let Some(rollout) = app
                .rollout
                .as_ref()
                .filter(|r| r.phase == RolloutPhase::Progressing)
            else {
                continue;
            };
            if !self.owns(&app.spec.name) {
                continue;
            }
            let observed = self.observe_rollout(app)?;
            match crate::rollout::advance(rollout, &app.spec.strategy, &observed, now_millis()) {
                Decision::Keep => {}
                Decision::Update(next) => {
                    if next.phase != rollout.phase {
                        tracing::info!(
                            app = %app.spec.name,
                            generation = app.generation,
                            phase = next.phase.as_str(),
                            message = next.message.as_deref().unwrap_or(""),
                            "rollout"
                        );
                    } else if next.quotas != rollout.quotas {
                        tracing::info!(app = %app.spec.name, quotas = ?next.quotas, "rollout step");
                    }
                    let mut record = app.clone();
                    record.rollout = Some(next);
                    self.write_app_if_unchanged(app, &record, true).await?;
                }
                Decision::RollBack(reason) => {
                    self.roll_back(app, format!("rolled back: {reason}"), true)
                        .await?;
                }
            }
        }
        // Forget containers that are gone.
        let known: BTreeSet<String> = self
            .store
            .values::<EndpointRecord>(ENDPOINTS)?
            .into_iter()
            .map(|e| e.container)
            .collect();
        lock(&self.ready_since).retain(|id, _| known.contains(id));
        Ok(())
    }

    /// Writes `record` unless the app changed since `read` was read. A `derived` change (the
    /// driver's, not the operator's) is written just after the version read: an operator's
    /// change made meanwhile on another node (a deploy, a pause) wins over it wherever the two
    /// meet, and the driver derives its step again from that.
    async fn write_app_if_unchanged(
        &self,
        read: &AppRecord,
        record: &AppRecord,
        derived: bool,
    ) -> Result<bool, NodeError> {
        let name = &record.spec.name;
        let Some(stored) = self.store.record(&APPS.key(name.as_str()))? else {
            return Ok(false);
        };
        let current: Option<AppRecord> = stored
            .value
            .clone()
            .and_then(|v| serde_json::from_value(v).ok());
        if current.as_ref() != Some(read) {
            return Ok(false);
        }
        let version = derived.then(|| stored.version.just_after());
        self.write_at(APPS, name, Some(record), version).await?;
        Ok(true)
    }

    /// Returns `app` to the generation its rollout replaced: that generation's containers
    /// still run and serve at once; the rollout's new ones go once the old ones are back to
    /// full strength on each node.
    pub(super) async fn roll_back(
        &self,
        app: &AppRecord,
        message: String,
        derived: bool,
    ) -> Result<(), NodeError> {
        let Some(rollout) = app.active_rollout() else {
            return Err(NodeError::Conflict(format!(
                "app {} has no rollout in progress",
                app.spec.name
            )));
        };
        let mut record = app.clone();
        let spec = rollout.from_spec.going_back_from(&app.spec);
        let name = spec.name.clone();
        tracing::warn!(app = %name, from = app.generation, to = rollout.from_generation, %message, "rollout going back");
        record.spec = spec;
        record.generation = rollout.from_generation;
        record.updated_at = now_secs();
        record.rollout = Some(Rollout {
            phase: RolloutPhase::RolledBack,
            quotas: None,
            message: Some(message),
            ..rollout.clone()
        });
        record.check(&name)?;
        let placement = self.placement_if_owner(&record.spec)?;
        if !self.write_app_if_unchanged(app, &record, derived).await? {
            return Err(NodeError::Conflict(format!(
                "app {name} changed while going back; look at its rollout status again"
            )));
        }
        if let Some(placement) = placement {
            self.write(PLACEMENTS, &name, Some(&placement)).await?;
        }
        let from = self
            .revisions(&name)?
            .iter()
            .rev()
            .find(|r| super::same_revision(&r.spec, &record.spec))
            .map(|r| r.revision);
        self.record_revision(&record.spec, from).await?;
        self.wake();
        Ok(())
    }

    /// `rollout pause|resume|abort|promote`.
    pub(super) async fn control_rollout(
        &self,
        name: &str,
        action: RolloutAction,
    ) -> Result<Outcome, NodeError> {
        let app = self.require_app(name)?;
        let Some(rollout) = app.rollout.clone() else {
            return Err(NodeError::Conflict(format!(
                "app {name} has had no rollout since it was created"
            )));
        };
        let phase = rollout.phase;
        let refuse = || {
            NodeError::Conflict(format!(
                "the rollout of app {name} to generation {} is {}: nothing to {}",
                rollout.to_generation,
                phase.as_str(),
                action.as_str()
            ))
        };
        match action {
            RolloutAction::Promote => {
                if !rollout.is_active() {
                    return Err(refuse());
                }
                let observed = self.observe_rollout(&app)?;
                let next =
                    crate::rollout::promote(&rollout, &app.spec.strategy, &observed, now_millis())
                        .map_err(NodeError::Conflict)?;
                let mut record = app.clone();
                record.rollout = Some(next);
                if !self.write_app_if_unchanged(&app, &record, false).await? {
                    return Err(NodeError::Conflict(format!(
                        "app {name} changed meanwhile; try again"
                    )));
                }
            }
            RolloutAction::Abort => {
                if !rollout.is_active() {
                    return Err(refuse());
                }
                self.roll_back(&app, "aborted by the operator".to_string(), false)
                    .await?;
            }
            RolloutAction::Pause | RolloutAction::Resume => {
                let (from, to) = match action {
                    RolloutAction::Pause => {
                        (&[RolloutPhase::Progressing][..], RolloutPhase::Paused)
                    }
                    _ => (
                        &[RolloutPhase::Paused, RolloutPhase::Failed][..],
                        RolloutPhase::Progressing,
                    ),
                };
                if !from.contains(&phase) {
                    return Err(refuse());
                }
                let mut record = app.clone();
                let now = now_millis();
                record.rollout = Some(Rollout {
                    phase: to,
                    // The deadline counts from the resume.
                    progressed_ms: now,
                    message: None,
                    ..rollout
                });
                if !self.write_app_if_unchanged(&app, &record, false).await? {
                    return Err(NodeError::Conflict(format!(
                        "app {name} changed meanwhile; try again"
                    )));
                }
            }
        }
        self.wake();
        Ok(Outcome::RolloutChanged {
            app: name.to_string(),
            action,
        })
    }
}
