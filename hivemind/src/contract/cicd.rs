//! /api/cicd/pipelines: CI/CD pipelines and their runs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::MemoryValue;
use crate::cicd::{
    DEFAULT_OUTPUT_PATH, DEFAULT_STEP_TIMEOUT, PipelineRun, PipelineSpec, RunStatus, StepRecord,
};
use crate::model::{Resources, ValidationError, parse_memory};

/// What a pipeline does: the body of `POST /api/cicd/pipelines` (`name` and `repository`
/// required) and of a change (`.../config`: every field optional, an empty string clears an
/// optional one; the name is the path's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    /// The pipeline's name (to create; a change may repeat it, not alter it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `file:///path`, `http://` or `https://` URL of the git repository (required to create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The branch each run builds (default `main`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Run with `/bin/sh -c` in the checkout (mounted at `/workspace`), after the tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_command: Option<String>,
    /// The image the commands run in (the base image when not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_image: Option<String>,
    /// The image the output is layered on, which each successful run deploys; without one a
    /// run stops after the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
    /// The checkout's directory that becomes the image's new layer (the whole checkout, without
    /// `.git`, when not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dir: Option<String>,
    /// Where the output lands in the image (default `/app`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_path: Option<String>,
    /// The app each run deploys (default: the pipeline's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// A registry repository the image is pushed to (tagged with the commit) so every node can
    /// pull it; without one it stays on the node that built it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_to: Option<String>,
    /// A secret holding the token for a private repository (sent as HTTP basic auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    /// A secret holding the key webhook deliveries must be signed with (HMAC-SHA256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// Seconds between looks at the branch for a new commit (10 to 86400; 0 turns it off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<u32>,
    /// CPUs of the build containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory of the build containers, e.g. `2G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryValue>,
    /// Seconds a step may run before it is stopped and fails (default 1800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_timeout: Option<u32>,
}

/// An optional text: absent keeps, empty clears, else sets.
fn change(field: &mut Option<String>, value: &Option<String>) {
    if let Some(value) = value {
        let value = value.trim();
        *field = (!value.is_empty()).then(|| value.to_string());
    }
}

impl PipelineSettings {
    /// Applies the change to `spec` (then checked as a whole).
    pub fn apply(&self, spec: &mut PipelineSpec) -> Result<(), ValidationError> {
        if let Some(name) = &self.name
            && name.trim() != spec.name
        {
            return Err(ValidationError::new(
                "name",
                format!("a pipeline keeps its name ({})", spec.name),
            ));
        }
        if let Some(repository) = &self.repository {
            spec.repository = repository.trim().to_string();
        }
        if let Some(branch) = &self.branch {
            spec.branch = branch.trim().to_string();
        }
        change(&mut spec.build_command, &self.build_command);
        change(&mut spec.test_command, &self.test_command);
        change(&mut spec.build_image, &self.build_image);
        change(&mut spec.base_image, &self.base_image);
        change(&mut spec.output_dir, &self.output_dir);
        change(&mut spec.push_to, &self.push_to);
        change(&mut spec.token_secret, &self.token_secret);
        change(&mut spec.webhook_secret, &self.webhook_secret);
        if let Some(path) = &self.output_path {
            spec.output_path = path.trim().to_string();
        }
        if let Some(app) = &self.app {
            spec.app = app.trim().to_string();
        }
        if let Some(poll) = self.poll_interval {
            spec.poll_secs = poll;
        }
        if let Some(cpu) = self.cpu {
            if !(0.01..=1024.0).contains(&cpu) {
                return Err(ValidationError::new("cpu", "must be 0.01 to 1024"));
            }
            spec.resources.cpu = Some(cpu);
        }
        match &self.memory {
            Some(MemoryValue::Bytes(bytes)) => spec.resources.memory = Some(*bytes),
            Some(MemoryValue::Text(text)) => {
                spec.resources.memory = Some(parse_memory("memory", text)?)
            }
            None => {}
        }
        if let Some(timeout) = self.step_timeout {
            spec.step_timeout_secs = timeout;
        }
        spec.validate()
    }
}

impl PipelineSettings {
    /// A new pipeline: these settings on the defaults.
    pub fn create(&self, now: u64) -> Result<PipelineSpec, ValidationError> {
        let name = self
            .name
            .as_deref()
            .map(str::trim)
            .ok_or_else(|| ValidationError::new("name", "must be given"))?;
        let mut spec = PipelineSpec {
            name: name.to_string(),
            repository: String::new(),
            branch: "main".to_string(),
            app: name.to_string(),
            build_command: None,
            test_command: None,
            build_image: None,
            base_image: None,
            output_dir: None,
            output_path: DEFAULT_OUTPUT_PATH.to_string(),
            push_to: None,
            strategy: None,
            token_secret: None,
            webhook_secret: None,
            poll_secs: 0,
            resources: Resources::default(),
            step_timeout_secs: DEFAULT_STEP_TIMEOUT,
            created_at: now,
        };
        if self.repository.is_none() {
            return Err(ValidationError::new(
                "repository",
                "must be given: the git repository's URL",
            ));
        }
        self.apply(&mut spec)?;
        Ok(spec)
    }
}

/// A pipeline, with where its runs stand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PipelineView {
    pub name: String,
    pub repository: String,
    pub branch: String,
    pub app: String,
    pub build_command: Option<String>,
    pub test_command: Option<String>,
    pub build_image: Option<String>,
    pub base_image: Option<String>,
    pub output_dir: Option<String>,
    pub output_path: String,
    pub push_to: Option<String>,
    /// The deploy's strategy (as `app deploy --strategy` takes it); `null`: the app's own.
    #[schema(value_type = Option<Object>)]
    pub strategy: Option<serde_json::Value>,
    pub token_secret: Option<String>,
    pub webhook_secret: Option<String>,
    /// Seconds between looks at the branch; 0: no polling.
    pub poll_interval: u32,
    pub resources: Resources,
    pub step_timeout: u32,
    pub created_at: u64,
    /// Runs waiting for the one before them.
    pub queued: u32,
    /// The newest run.
    pub last_run: Option<RunView>,
}

impl PipelineView {
    pub fn new(spec: PipelineSpec, runs: &[PipelineRun]) -> Self {
        Self {
            queued: runs
                .iter()
                .filter(|r| r.status == RunStatus::Queued)
                .count() as u32,
            last_run: runs.last().cloned().map(RunView::from),
            strategy: spec
                .strategy
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok()),
            name: spec.name,
            repository: spec.repository,
            branch: spec.branch,
            app: spec.app,
            build_command: spec.build_command,
            test_command: spec.test_command,
            build_image: spec.build_image,
            base_image: spec.base_image,
            output_dir: spec.output_dir,
            output_path: spec.output_path,
            push_to: spec.push_to,
            token_secret: spec.token_secret,
            webhook_secret: spec.webhook_secret,
            poll_interval: spec.poll_secs,
            resources: spec.resources,
            step_timeout: spec.step_timeout_secs,
            created_at: spec.created_at,
        }
    }
}

/// One run of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    pub pipeline: String,
    /// Runs are numbered from 1 as they are triggered.
    pub number: u64,
    pub id: String,
    /// `cli`, `webhook` or `poll`.
    pub trigger: String,
    pub status: RunStatus,
    /// The node that runs (or ran) it.
    pub node: Option<String>,
    pub commit: Option<String>,
    /// The image it built.
    pub image: Option<String>,
    /// `fetch`, `test`, `build`, `image`, `deploy`, each with its status, exit code and the
    /// end of its log.
    pub steps: Vec<StepRecord>,
    pub queued_at: u64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

impl From<PipelineRun> for RunView {
    fn from(run: PipelineRun) -> Self {
        Self {
            pipeline: run.pipeline,
            number: run.number,
            id: run.id,
            trigger: run.trigger,
            status: run.status,
            node: run.node,
            commit: run.commit,
            image: run.image,
            steps: run.steps,
            queued_at: run.queued_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            error: run.error,
        }
    }
}

/// What a webhook delivery did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookAnswer {
    /// Whether it queued a run.
    pub queued: bool,
    /// The run queued.
    pub run: Option<u64>,
    pub message: String,
}
