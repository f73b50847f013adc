//! Running CI/CD pipelines (see `crate::cicd`): the queue, and each run's steps.
//!
//! A run: `fetch` (git, on this node), `test` and `build` (the commands with `/bin/sh -c` in a
//! container of the build image, the checkout bind-mounted at `/workspace`, the pipeline's
//! limits, no network), `image` (the output directory as a new layer on the base image, named
//! `hivemind.local/cicd/<pipeline>:<commit>`), `deploy` (the app's spec with the new image and
//! the pipeline's strategy, waited on until its rollout ends). A failed step stops the run
//! with its exit code and the end of its log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Node, NodeError};
use crate::cicd::{
    PipelineRun, PipelineSpec, RunStatus, StepRecord, StepStatus, git, log_tail, new_run_id,
};
use crate::command::{Admission, Outcome};
use crate::model::{AppSpec, RolloutPhase, ValidationError};
use crate::runtime::{BindMount, ContainerSpec, TaskState};
use crate::state::{PIPELINE_RUNS, PIPELINES, now_millis, now_secs};

/// Where the checkout is mounted in build containers.
const WORKSPACE: &str = "/workspace";
/// How often a running step's container is looked at.
const POLL_STEP: Duration = Duration::from_millis(300);
/// How often a running step's log so far is written to its run record (`cicd logs` while it
/// runs).
const LOG_EVERY: Duration = Duration::from_secs(5);

/// What this node is doing for pipelines.
#[derive(Debug, Default)]
pub(super) struct PipelineWork {
    /// Pipelines with a run executing here.
    running: HashSet<String>,
    /// When each polled pipeline's branch was last looked at.
    polled: HashMap<String, Instant>,
}

impl Node {
    fn work(&self) -> std::sync::MutexGuard<'_, PipelineWork> {
        self.pipeline_work.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pipelines(&self) -> Result<Vec<PipelineSpec>, NodeError> {
        Ok(self.store.values(PIPELINES)?)
    }

    pub fn pipeline(&self, name: &str) -> Result<PipelineSpec, NodeError> {
        self.store
            .value(PIPELINES, name)?
            .ok_or_else(|| NodeError::NotFound {
                kind: "pipeline",
                name: name.to_string(),
            })
    }

    /// The pipeline's runs, oldest first.
    pub fn pipeline_runs(&self, name: &str) -> Result<Vec<PipelineRun>, NodeError> {
        let mut runs: Vec<PipelineRun> = self
            .store
            .values(PIPELINE_RUNS)?
            .into_iter()
            .filter(|r| r.pipeline == name)
            .collect();
        runs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(runs)
    }

    /// The key webhook deliveries of the pipeline are signed with; `None` when it has none.
    pub async fn webhook_key(&self, spec: &PipelineSpec) -> Result<Option<Vec<u8>>, NodeError> {
        match &spec.webhook_secret {
            Some(secret) => Ok(Some(self.secret_value(secret).await?.0.as_bytes().to_vec())),
            None => Ok(None),
        }
    }

    /// `create` (it must not exist) or replaces (it must) a pipeline.
    pub(super) async fn put_pipeline(
        &self,
        spec: PipelineSpec,
        create: bool,
    ) -> Result<Outcome, NodeError> {
        spec.validate()?;
        let exists = self.store.value(PIPELINES, &spec.name)?.is_some();
        if create && exists {
            return Err(NodeError::Conflict(format!(
                "pipeline {} exists: change it with `cicd configure-pipeline`",
                spec.name
            )));
        }
        if !create && !exists {
            return Err(NodeError::NotFound {
                kind: "pipeline",
                name: spec.name,
            });
        }
        for secret in [&spec.token_secret, &spec.webhook_secret]
            .into_iter()
            .flatten()
        {
            self.secret_record(secret)?;
        }
        self.write(PIPELINES, &spec.name, Some(&spec)).await?;
        Ok(Outcome::PipelineSet {
            name: spec.name,
            created: create,
        })
    }

    /// Deletes a pipeline with its runs; a run executing goes on to its end.
    pub(super) async fn delete_pipeline(&self, name: String) -> Result<Outcome, NodeError> {
        self.pipeline(&name)?;
        for run in self.pipeline_runs(&name)? {
            self.write::<PipelineRun>(PIPELINE_RUNS, &run.key(), None)
                .await?;
        }
        self.write::<PipelineSpec>(PIPELINES, &name, None).await?;
        Ok(Outcome::Deleted {
            kind: "pipeline",
            name,
        })
    }

    /// Queues a run; the pipeline's owner starts it when the runs before it ended.
    pub(super) async fn trigger_pipeline(
        &self,
        name: String,
        trigger: &str,
        commit: Option<String>,
    ) -> Result<Outcome, NodeError> {
        self.pipeline(&name)?;
        let runs = self.pipeline_runs(&name)?;
        let run = PipelineRun {
            pipeline: name.clone(),
            id: new_run_id(now_millis()),
            number: runs.iter().map(|r| r.number).max().unwrap_or(0) + 1,
            trigger: trigger.to_string(),
            status: RunStatus::Queued,
            node: None,
            commit,
            image: None,
            steps: Vec::new(),
            queued_at: now_secs(),
            started_at: None,
            finished_at: None,
            error: None,
        };
        run.validate()?;
        self.write(PIPELINE_RUNS, &run.key(), Some(&run)).await?;
        self.prune_runs(&runs).await?;
        Ok(Outcome::RunQueued(Box::new(run)))
    }

    /// Drops the oldest finished runs beyond [`crate::cicd::KEPT_RUNS`] (`runs` is oldest first,
    /// without the one just queued).
    async fn prune_runs(&self, runs: &[PipelineRun]) -> Result<(), NodeError> {
        let excess = (runs.len() + 1).saturating_sub(crate::cicd::KEPT_RUNS);
        for run in runs.iter().filter(|r| r.status.finished()).take(excess) {
            self.write::<PipelineRun>(PIPELINE_RUNS, &run.key(), None)
                .await?;
        }
        Ok(())
    }

    /// One turn of the pipelines this node owns: runs left by a node that went (or by this one
    /// before a restart) fail; the oldest queued run starts when none runs; polled branches are
    /// looked at when due.
    pub async fn reconcile_pipelines(self: &Arc<Self>) -> Result<(), NodeError> {
        let live: HashSet<String> = self.live_ids().into_iter().collect();
        for spec in self.pipelines()? {
            if !self.owns(&format!("pipeline:{}", spec.name)) {
                continue;
            }
            let executing = self.work().running.contains(&spec.name);
            let runs = self.pipeline_runs(&spec.name)?;
            for run in runs.iter().filter(|r| r.status == RunStatus::Running) {
                let node = run.node.clone().unwrap_or_default();
                let orphaned = if node == self.id {
                    !executing
                } else {
                    !live.contains(&node)
                };
                if orphaned {
                    let mut run = run.clone();
                    run.status = RunStatus::Failed;
                    run.finished_at = Some(now_secs());
                    run.error = Some(format!(
                        "interrupted: node {node} stopped while it ran; trigger it again"
                    ));
                    self.write(PIPELINE_RUNS, &run.key(), Some(&run)).await?;
                }
            }
            let busy = executing
                || runs
                    .iter()
                    .any(|r| r.status == RunStatus::Running && r.node.as_deref() != Some(&self.id));
            if busy {
                continue;
            }
            if let Some(next) = runs.iter().find(|r| r.status == RunStatus::Queued) {
                self.work().running.insert(spec.name.clone());
                let node = self.clone();
                let (spec, run) = (spec.clone(), next.clone());
                tokio::spawn(async move {
                    let name = spec.name.clone();
                    node.execute_run(spec, run).await;
                    node.work().running.remove(&name);
                    node.wake();
                });
            } else if spec.poll_secs > 0 {
                let due = {
                    let mut work = self.work();
                    let due = work.polled.get(&spec.name).is_none_or(|at| {
                        at.elapsed() >= Duration::from_secs(spec.poll_secs.into())
                    });
                    if due {
                        work.polled.insert(spec.name.clone(), Instant::now());
                    }
                    due
                };
                if due {
                    let last = runs.iter().rev().find_map(|r| r.commit.clone());
                    let node = self.clone();
                    tokio::spawn(async move { node.poll_branch(spec, last).await });
                }
            }
        }
        Ok(())
    }

    /// Queues a run when the branch moved past the last commit a run saw.
    async fn poll_branch(&self, spec: PipelineSpec, last: Option<String>) {
        let token = match self.pipeline_token(&spec).await {
            Ok(token) => token,
            Err(e) => {
                tracing::warn!(pipeline = %spec.name, error = %e, "polling: no token");
                return;
            }
        };
        match git::head(&spec.repository, &spec.branch, token.as_deref()).await {
            Ok(head) if last.as_deref() != Some(head.as_str()) => {
                tracing::info!(pipeline = %spec.name, commit = %head, "the branch moved: queuing a run");
                if let Err(e) = self
                    .trigger_pipeline(spec.name.clone(), "poll", Some(head))
                    .await
                {
                    tracing::warn!(pipeline = %spec.name, error = %e, "polling: queuing failed");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(pipeline = %spec.name, error = %e, "polling the branch failed")
            }
        }
    }

    async fn pipeline_token(&self, spec: &PipelineSpec) -> Result<Option<String>, NodeError> {
        let Some(secret) = &spec.token_secret else {
            return Ok(None);
        };
        let value = self.secret_value(secret).await?.0;
        let token = String::from_utf8(value.as_bytes().to_vec()).map_err(|_| {
            NodeError::Invalid(ValidationError::new(
                "token_secret",
                format!("secret {secret} is not text"),
            ))
        })?;
        Ok(Some(token.trim().to_string()))
    }

    /// Writes the run's record, unless its pipeline was deleted meanwhile (its runs went with
    /// it).
    async fn save_run(&self, run: &PipelineRun) {
        if matches!(self.store.value(PIPELINES, &run.pipeline), Ok(None)) {
            return;
        }
        if let Err(e) = self.write(PIPELINE_RUNS, &run.key(), Some(run)).await {
            tracing::warn!(pipeline = %run.pipeline, run = run.number, error = %e, "saving the run failed");
        }
    }

    /// Runs every step, recording each in the run's record as it goes.
    async fn execute_run(&self, spec: PipelineSpec, mut run: PipelineRun) {
        run.status = RunStatus::Running;
        run.node = Some(self.id.clone());
        run.started_at = Some(now_secs());
        self.save_run(&run).await;
        tracing::info!(pipeline = %spec.name, run = run.number, "pipeline run started");
        let dir = self
            .data_dir
            .join("pipelines")
            .join(&spec.name)
            .join(&run.id);
        let result = self.run_steps(&spec, &mut run, &dir).await;
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::debug!(dir = %dir.display(), error = %e, "removing the checkout");
        }
        run.finished_at = Some(now_secs());
        match result {
            Ok(()) => run.status = RunStatus::Succeeded,
            Err(e) => {
                run.status = RunStatus::Failed;
                run.error = Some(e);
            }
        }
        tracing::info!(pipeline = %spec.name, run = run.number, status = run.status.as_str(), error = ?run.error, "pipeline run ended");
        self.save_run(&run).await;
    }

    /// Begins step `name` in the record.
    async fn begin_step(&self, run: &mut PipelineRun, name: &str) {
        run.steps.push(StepRecord {
            name: name.to_string(),
            status: StepStatus::Running,
            exit_code: None,
            started_at: now_secs(),
            finished_at: None,
            log: String::new(),
        });
        self.save_run(run).await;
    }

    /// Ends the last step with its status, exit code and log.
    async fn end_step(
        &self,
        run: &mut PipelineRun,
        status: StepStatus,
        exit_code: Option<i64>,
        log: &str,
    ) {
        if let Some(step) = run.steps.last_mut() {
            step.status = status;
            step.exit_code = exit_code;
            step.finished_at = Some(now_secs());
            step.log = log_tail(log);
        }
        self.save_run(run).await;
    }

    async fn skip_step(&self, run: &mut PipelineRun, name: &str, why: &str) {
        self.begin_step(run, name).await;
        self.end_step(run, StepStatus::Skipped, None, why).await;
    }

    async fn run_steps(
        &self,
        spec: &PipelineSpec,
        run: &mut PipelineRun,
        dir: &Path,
    ) -> Result<(), String> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let src = dir.join("src");

        self.begin_step(run, "fetch").await;
        let fetched = match self.pipeline_token(spec).await {
            Ok(token) => git::fetch(&spec.repository, &spec.branch, token.as_deref(), &src)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("the repository token: {e}")),
        };
        let commit = match fetched {
            Ok(commit) => commit,
            Err(e) => {
                self.end_step(run, StepStatus::Failed, None, &e).await;
                return Err(format!("fetch failed: {e}"));
            }
        };
        let mut log = format!("{} of {} at {commit}", spec.branch, spec.repository);
        if let Some(announced) = run.commit.as_ref().filter(|c| **c != commit) {
            log.push_str(&format!(
                "\n(the trigger announced {announced}; the branch has moved on since)"
            ));
        }
        run.commit = Some(commit.clone());
        self.end_step(run, StepStatus::Succeeded, None, &log).await;

        for (name, command) in [("test", &spec.test_command), ("build", &spec.build_command)] {
            let Some(command) = command else {
                self.skip_step(run, name, &format!("no {name} command"))
                    .await;
                continue;
            };
            self.begin_step(run, name).await;
            let (code, log) = match self
                .run_command(spec, run, name, command, &src, &commit, dir)
                .await
            {
                Ok(done) => done,
                Err(e) => {
                    self.end_step(run, StepStatus::Failed, None, &e).await;
                    return Err(format!("{name} step: {e}"));
                }
            };
            match code {
                Some(0) => {
                    self.end_step(run, StepStatus::Succeeded, Some(0), &log)
                        .await
                }
                Some(code) => {
                    self.end_step(run, StepStatus::Failed, Some(code.into()), &log)
                        .await;
                    return Err(format!("{name} step: `{command}` exited with code {code}"));
                }
                None => {
                    self.end_step(run, StepStatus::Failed, None, &log).await;
                    return Err(format!(
                        "{name} step: `{command}` ran longer than {}s and was stopped",
                        spec.step_timeout_secs
                    ));
                }
            }
        }

        let Some(base) = &spec.base_image else {
            self.skip_step(
                run,
                "image",
                "no base image: set --base-image and --output-dir to build one",
            )
            .await;
            self.skip_step(run, "deploy", "no image built").await;
            return Ok(());
        };
        self.begin_step(run, "image").await;
        let reference = spec.image_name(&commit);
        let image = match self
            .build_image(spec, base, &src, &commit, &reference)
            .await
        {
            Ok(log) => {
                self.end_step(run, StepStatus::Succeeded, None, &log).await;
                reference
            }
            Err(e) => {
                self.end_step(run, StepStatus::Failed, None, &e).await;
                return Err(format!("image step: {e}"));
            }
        };
        run.image = Some(image.clone());

        self.begin_step(run, "deploy").await;
        match self.deploy_build(spec, &image).await {
            Ok(log) => {
                self.end_step(run, StepStatus::Succeeded, None, &log).await;
                Ok(())
            }
            Err(e) => {
                self.end_step(run, StepStatus::Failed, None, &e).await;
                Err(format!("deploy step: {e}"))
            }
        }
    }

    /// Runs `command` with `/bin/sh -c` in a build container; its exit code (`None`: stopped
    /// at the timeout) and its output.
    #[allow(clippy::too_many_arguments)]
    async fn run_command(
        &self,
        spec: &PipelineSpec,
        run: &mut PipelineRun,
        step: &str,
        command: &str,
        src: &Path,
        commit: &str,
        dir: &Path,
    ) -> Result<(Option<u32>, String), String> {
        let reference = spec
            .command_image()
            .ok_or("the pipeline has no build image")?;
        let image = self
            .runtime
            .ensure_image(reference, &|_| {})
            .await
            .map_err(|e| format!("the build image {reference}: {e}"))?;
        let id = format!("cicd-{}-{}-{step}", spec.name, &run.id[13..]);
        let log_path = dir.join(format!("{step}.log"));
        let env = BTreeMap::from([
            ("CI".to_string(), "true".to_string()),
            ("HIVEMIND_PIPELINE".to_string(), spec.name.clone()),
            ("HIVEMIND_RUN".to_string(), run.number.to_string()),
            ("HIVEMIND_COMMIT".to_string(), commit.to_string()),
            ("HIVEMIND_BRANCH".to_string(), spec.branch.clone()),
        ]);
        let container = ContainerSpec {
            id: id.clone(),
            app: format!("cicd-{}", spec.name),
            image,
            env,
            mounts: vec![BindMount {
                source: src.to_path_buf(),
                destination: WORKSPACE.to_string(),
                readonly: false,
            }],
            resources: spec.resources,
            netns: None,
            hostname: format!("cicd-{}", spec.name),
            log_path: log_path.clone(),
            command: Some(vec!["/bin/sh".into(), "-c".into(), command.to_string()]),
            working_dir: Some(WORKSPACE.to_string()),
        };
        self.runtime
            .run(&container)
            .await
            .map_err(|e| format!("starting the build container: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(spec.step_timeout_secs.into());
        let mut logged = Instant::now();
        let code = loop {
            if logged.elapsed() >= LOG_EVERY {
                logged = Instant::now();
                let so_far = log_tail(&log_text(&log_path));
                if let Some(step) = run.steps.last_mut()
                    && step.log != so_far
                {
                    step.log = so_far;
                    self.save_run(run).await;
                }
            }
            let state = self
                .runtime
                .list()
                .await
                .map_err(|e| e.to_string())?
                .get(&id)
                .copied();
            match state {
                Some(TaskState::Exited { code }) => break Some(code),
                Some(TaskState::Running { .. }) | Some(TaskState::Stopped) => {}
                None | Some(TaskState::NoTask) => break Some(u32::MAX),
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(POLL_STEP).await;
        };
        if let Err(e) = self.runtime.remove(&id, Duration::from_secs(5)).await {
            tracing::warn!(container = %id, error = %e, "removing the build container");
        }
        let log = read_log(&log_path).await;
        if code == Some(u32::MAX) {
            return Err(format!("the build container went away\n{log}"));
        }
        Ok((code, log))
    }

    /// The output directory as a layer on the base image.
    async fn build_image(
        &self,
        spec: &PipelineSpec,
        base: &str,
        src: &Path,
        commit: &str,
        reference: &str,
    ) -> Result<String, String> {
        let output: PathBuf = match &spec.output_dir {
            Some(dir) => src.join(dir),
            None => {
                let _ = std::fs::remove_dir_all(src.join(".git"));
                src.to_path_buf()
            }
        };
        self.runtime
            .ensure_image(base, &|_| {})
            .await
            .map_err(|e| format!("the base image {base}: {e}"))?;
        let layer = crate::image::build::LayerSource {
            dir: output,
            dest: spec.output_path.clone(),
            created_by: format!("hivemind cicd {} {commit}", spec.name),
            labels: BTreeMap::from([
                (
                    "org.opencontainers.image.revision".to_string(),
                    commit.to_string(),
                ),
                (
                    "org.opencontainers.image.source".to_string(),
                    spec.repository.clone(),
                ),
            ]),
        };
        let image = self
            .runtime
            .add_image_layer(base, &layer, reference)
            .await
            .map_err(|e| e.to_string())?;
        let mut log = format!(
            "{} on {base} at {}: {reference} ({})",
            spec.output_dir.as_deref().unwrap_or("the checkout"),
            spec.output_path,
            image.digest
        );
        if spec.push_to.is_some() {
            let digest = self
                .runtime
                .push_image(reference, reference)
                .await
                .map_err(|e| format!("pushing {reference}: {e}"))?;
            log.push_str(&format!("\npushed to {reference} ({digest})"));
        }
        Ok(log)
    }

    /// Deploys `image` to the pipeline's app and waits for its rollout to end.
    async fn deploy_build(&self, spec: &PipelineSpec, image: &str) -> Result<String, String> {
        let current = self.store.app(&spec.app).map_err(|e| e.to_string())?;
        let mut app = match &current {
            Some(record) => record.spec.clone(),
            None => AppSpec {
                name: spec.app.clone(),
                image: String::new(),
                service: None,
                replicas: 1,
                resources: Default::default(),
                volumes: Vec::new(),
                env: Default::default(),
                ports: Vec::new(),
                labels: BTreeMap::from([("app".to_string(), spec.app.clone())]),
                node: None,
                health: Default::default(),
                placement: Default::default(),
                constraints: Default::default(),
                secrets: Vec::new(),
                secret_env: Default::default(),
                publish: Vec::new(),
                publish_mode: Default::default(),
                strategy: Default::default(),
            },
        };
        app.image = image.to_string();
        if let Some(strategy) = &spec.strategy {
            app.strategy = strategy.clone();
        }
        let outcome = self
            .execute(crate::command::Command::Deploy(
                Box::new(app),
                Admission::default(),
            ))
            .await
            .map_err(|e| e.to_string())?;
        let created = matches!(outcome, Outcome::Deployed { created: true, .. });
        let deadline = Instant::now() + Duration::from_secs(spec.step_timeout_secs.into());
        loop {
            let record = self
                .store
                .app(&spec.app)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("app {} was deleted meanwhile", spec.app))?;
            if record.spec.image != image {
                return Err(format!(
                    "app {} was deployed with {} meanwhile",
                    spec.app, record.spec.image
                ));
            }
            let rollout = record
                .rollout
                .as_ref()
                .filter(|r| r.to_generation == record.generation);
            match rollout.map(|r| (r.phase, r.message.clone())) {
                Some((RolloutPhase::Complete, _)) => {
                    return Ok(format!(
                        "{} now runs {image} ({} strategy, complete)",
                        spec.app, record.spec.strategy.name
                    ));
                }
                Some((RolloutPhase::Failed | RolloutPhase::RolledBack, message)) => {
                    return Err(format!(
                        "the rollout of {image} to {} did not complete: {}",
                        spec.app,
                        message.unwrap_or_default()
                    ));
                }
                Some(_) => {}
                None => {
                    let ready = self.ready_replicas(&spec.app, record.generation)?;
                    if ready >= record.spec.replicas {
                        let verb = if created { "created" } else { "updated" };
                        return Ok(format!(
                            "{} {verb}: {ready} replica(s) of {image} ready",
                            spec.app
                        ));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not get ready on {image} within {}s",
                    spec.app, spec.step_timeout_secs
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn ready_replicas(&self, app: &str, generation: u64) -> Result<u32, String> {
        Ok(self
            .store
            .values::<crate::state::EndpointRecord>(crate::state::ENDPOINTS)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|e| e.app == app && e.generation == generation && e.ready)
            .count() as u32)
    }
}

/// A step's output as the log driver wrote it (CRI lines), as text; its end when long. The
/// driver may still be writing the last lines when the task has exited: the file is read once
/// it stops growing (1 s at most).
async fn read_log(path: &Path) -> String {
    let size = || std::fs::metadata(path).map_or(0, |m| m.len());
    let mut last = size();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = size();
        if now == last {
            break;
        }
        last = now;
    }
    log_text(path)
}

/// A step's output so far, as text (its end when long).
fn log_text(path: &Path) -> String {
    let mut text = String::new();
    for file in [crate::logfile::rotated(path), path.to_path_buf()] {
        let data = std::fs::read(&file).unwrap_or_default();
        for line in String::from_utf8_lossy(&data).lines() {
            let line = crate::logfile::parse(line);
            text.push_str(line.text);
            text.push('\n');
        }
    }
    let start = text.len().saturating_sub(crate::cicd::LOG_TAIL * 2);
    let mut start = start;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text.split_off(start)
}
