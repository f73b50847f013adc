//! CI/CD pipelines: a branch of a git repository, tested and built in containers on
//! containerd, its output turned into an image and deployed to an app with the pipeline's
//! strategy. This module holds what a pipeline and a run are, and the parts that need no node:
//! fetching with git ([`git`]) and checking webhook deliveries ([`webhook`]). The node runs
//! them (`node::cicd`).
//!
//! Both are replicated rows: a pipeline under its name, each run under
//! `<pipeline>/<run id>`. Any node takes a trigger (it writes a queued run); the pipeline's
//! owner (rendezvous over the live members) runs the queue in order, one run at a time.

pub mod git;
pub mod webhook;

use serde::{Deserialize, Serialize};

use crate::model::{Resources, StrategySpec, ValidationError, validate_name};

/// Where a run's output goes in the image unless the pipeline says otherwise.
pub const DEFAULT_OUTPUT_PATH: &str = "/app";
/// Seconds a step may take unless the pipeline says otherwise.
pub const DEFAULT_STEP_TIMEOUT: u32 = 1800;
/// Bytes of a step's log kept in its run record (its end).
pub const LOG_TAIL: usize = 8 << 10;
/// Runs kept per pipeline; the oldest finished ones go first.
pub const KEPT_RUNS: usize = 20;
/// The longest command accepted.
const MAX_COMMAND: usize = 8 << 10;

/// A pipeline, as `cicd create-pipeline` and `configure-pipeline` left it: key `<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineSpec {
    pub name: String,
    /// `file://`, `http://` or `https://` URL of the git repository.
    pub repository: String,
    pub branch: String,
    /// The app each successful run deploys (the pipeline's name unless set).
    pub app: String,
    /// Run with `/bin/sh -c` in the checkout, in the build image, after the tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_command: Option<String>,
    /// The image the commands run in (the base image unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_image: Option<String>,
    /// The image the output is layered on; none: the run stops after the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
    /// The directory of the checkout that becomes the new layer (the whole checkout unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dir: Option<String>,
    /// Where the output lands in the image.
    pub output_path: String,
    /// A registry repository (`registry/repo`) the image is pushed to, tagged with the commit,
    /// so that every node can pull it; none: it stays in this node's containerd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_to: Option<String>,
    /// How the deploy replaces the app's containers (the app's own strategy unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<StrategySpec>,
    /// A secret holding the token for a private repository (sent as HTTP basic auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    /// A secret holding the key webhook deliveries are signed with (HMAC-SHA256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// Seconds between checks of the branch for a new commit; 0: no polling.
    #[serde(default)]
    pub poll_secs: u32,
    /// Limits of the build containers.
    #[serde(default)]
    pub resources: Resources,
    /// Seconds a step may run before it is stopped and fails.
    pub step_timeout_secs: u32,
    pub created_at: u64,
}

impl PipelineSpec {
    /// The rules of a stored pipeline (the same for a user's input and a peer's record).
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name("name", &self.name)?;
        validate_name("app", &self.app)?;
        git::validate_repository(&self.repository)
            .map_err(|e| ValidationError::new("repository", e))?;
        git::validate_branch(&self.branch).map_err(|e| ValidationError::new("branch", e))?;
        for (field, command) in [
            ("build_command", &self.build_command),
            ("test_command", &self.test_command),
        ] {
            if let Some(command) = command
                && (command.trim().is_empty() || command.len() > MAX_COMMAND)
            {
                return Err(ValidationError::new(
                    field,
                    format!("must be 1 to {MAX_COMMAND} bytes"),
                ));
            }
        }
        for (field, image) in [
            ("build_image", &self.build_image),
            ("base_image", &self.base_image),
        ] {
            if let Some(image) = image {
                crate::image::normalize_reference(image)
                    .map_err(|e| ValidationError::new(field, e.to_string()))?;
            }
        }
        if (self.build_command.is_some() || self.test_command.is_some())
            && self.build_image.is_none()
            && self.base_image.is_none()
        {
            return Err(ValidationError::new(
                "build_image",
                "the commands need an image to run in: set --build-image (or --base-image)",
            ));
        }
        if let Some(repository) = &self.push_to {
            let tagged = format!("{repository}:tag");
            let name = crate::image::normalize_reference(&tagged)
                .map_err(|e| ValidationError::new("push_to", e.to_string()))?;
            if repository.contains(['@', ' ']) || !name.ends_with(":tag") {
                return Err(ValidationError::new(
                    "push_to",
                    "must be a repository without a tag or digest, e.g. registry.example.com/team/site",
                ));
            }
        }
        if let Some(dir) = &self.output_dir {
            relative_path(dir).map_err(|e| ValidationError::new("output_dir", e))?;
        }
        if !self.output_path.starts_with('/')
            || self.output_path.split('/').any(|c| c == "..")
            || self.output_path.len() > 512
        {
            return Err(ValidationError::new(
                "output_path",
                "must be an absolute path in the image, without '..'",
            ));
        }
        for (field, secret) in [
            ("token_secret", &self.token_secret),
            ("webhook_secret", &self.webhook_secret),
        ] {
            if let Some(secret) = secret {
                validate_name(field, secret)?;
            }
        }
        if self.step_timeout_secs == 0 || self.step_timeout_secs > 86_400 {
            return Err(ValidationError::new(
                "step_timeout",
                "must be 1 to 86400 seconds",
            ));
        }
        if self.poll_secs != 0 && !(10..=86_400).contains(&self.poll_secs) {
            return Err(ValidationError::new(
                "poll_interval",
                "must be 0 (off) or 10 to 86400 seconds",
            ));
        }
        if let Some(strategy) = &self.strategy {
            crate::rollout::check_strategy(strategy)?;
        }
        Ok(())
    }

    /// The name the run's image gets: in the registry it is pushed to, else local to the node.
    pub fn image_name(&self, commit: &str) -> String {
        let tag = &commit[..commit.len().min(12)];
        match &self.push_to {
            Some(repository) => format!("{repository}:{tag}"),
            None => format!("hivemind.local/cicd/{}:{tag}", self.name),
        }
    }

    /// The image the test and build commands run in.
    pub fn command_image(&self) -> Option<&str> {
        self.build_image.as_deref().or(self.base_image.as_deref())
    }
}

/// A path inside the checkout: relative, no `..`.
fn relative_path(path: &str) -> Result<(), String> {
    if path.is_empty()
        || path.starts_with('/')
        || path.split('/').any(|c| c == "..")
        || path.len() > 512
        || path.chars().any(char::is_control)
    {
        return Err(format!(
            "{path:?} must be a path inside the checkout: relative, without '..'"
        ));
    }
    Ok(())
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl RunStatus {
    pub fn finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Running,
    Succeeded,
    Failed,
    /// Not needed by this pipeline (no test command, no base image).
    Skipped,
}

/// One step of a run: `fetch`, `test`, `build`, `image`, `deploy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepRecord {
    pub name: String,
    pub status: StepStatus,
    /// The command's exit code (test and build), when it ended by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    pub started_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// The end of its output (at most [`LOG_TAIL`] bytes).
    #[serde(default)]
    pub log: String,
}

/// One run of a pipeline: key `<pipeline>/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRun {
    pub pipeline: String,
    /// Sortable: the trigger's time in milliseconds, then 4 random hex digits.
    pub id: String,
    /// The pipeline's runs are numbered from 1 as they are triggered.
    pub number: u64,
    /// `cli` (the API), `webhook` or `poll`.
    pub trigger: String,
    pub status: RunStatus,
    /// The node that runs (or ran) it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The commit fetched (or, from a webhook, the commit it announced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The image built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    pub queued_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PipelineRun {
    pub fn key(&self) -> String {
        run_key(&self.pipeline, &self.id)
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name("pipeline", &self.pipeline)?;
        if self.id.len() != 18
            || !self.id[..13].bytes().all(|b| b.is_ascii_digit())
            || !self.id[13..].bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(ValidationError::new(
                "id",
                "must be 13 digits of milliseconds and 5 hex digits",
            ));
        }
        if !["cli", "webhook", "poll"].contains(&self.trigger.as_str()) {
            return Err(ValidationError::new(
                "trigger",
                "must be cli, webhook or poll",
            ));
        }
        if let Some(commit) = &self.commit
            && !git::is_commit(commit)
        {
            return Err(ValidationError::new("commit", "must be 40 hex digits"));
        }
        if self.steps.len() > 8 {
            return Err(ValidationError::new("steps", "at most 8"));
        }
        for step in &self.steps {
            if step.name.len() > 32 || step.log.len() > LOG_TAIL + 256 {
                return Err(ValidationError::new(
                    "steps",
                    format!("a step's name is at most 32 bytes and its log {LOG_TAIL}"),
                ));
            }
        }
        Ok(())
    }
}

pub fn run_key(pipeline: &str, id: &str) -> String {
    format!("{pipeline}/{id}")
}

/// A new run id: now in milliseconds, and random hex so two triggers in the same
/// millisecond on two nodes differ.
pub fn new_run_id(now_ms: u64) -> String {
    format!("{now_ms:013}{:05x}", rand::random::<u32>() & 0xf_ffff)
}

/// The end of `text`, at most [`LOG_TAIL`] bytes, cut at a character boundary.
pub fn log_tail(text: &str) -> String {
    if text.len() <= LOG_TAIL {
        return text.to_string();
    }
    let mut start = text.len() - LOG_TAIL;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[…]{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PipelineSpec {
        PipelineSpec {
            name: "web".into(),
            repository: "https://git.example.com/team/web.git".into(),
            branch: "main".into(),
            app: "web".into(),
            build_command: Some("make".into()),
            test_command: None,
            build_image: Some("debian:12".into()),
            base_image: None,
            output_dir: Some("dist".into()),
            output_path: DEFAULT_OUTPUT_PATH.into(),
            push_to: None,
            strategy: None,
            token_secret: None,
            webhook_secret: None,
            poll_secs: 0,
            resources: Resources::default(),
            step_timeout_secs: DEFAULT_STEP_TIMEOUT,
            created_at: 1,
        }
    }

    #[test]
    fn a_pipeline_names_what_is_wrong() {
        assert!(spec().validate().is_ok());
        type Breaks = fn(&mut PipelineSpec);
        let broken: [(&str, Breaks); 7] = [
            ("repository", |s| s.repository = "ext::sh -c id".into()),
            ("branch", |s| s.branch = "-evil".into()),
            ("output_dir", |s| s.output_dir = Some("../etc".into())),
            ("output_path", |s| s.output_path = "app".into()),
            ("build_image", |s| s.build_image = None),
            ("step_timeout", |s| s.step_timeout_secs = 0),
            ("poll_interval", |s| s.poll_secs = 3),
        ];
        for (field, breaks) in broken {
            let mut s = spec();
            breaks(&mut s);
            let error = s.validate().expect_err(field);
            assert_eq!(error.field, field, "{error}");
        }
    }

    #[test]
    fn run_ids_sort_by_time_and_tails_keep_the_end() {
        let a = new_run_id(1_000);
        let b = new_run_id(2_000);
        assert!(a < b && a.len() == 18);
        let text = "é".repeat(LOG_TAIL);
        let tail = log_tail(&text);
        assert!(tail.starts_with("[…]") && tail.ends_with('é'));
        assert!(tail.len() <= LOG_TAIL + "[…]".len());
    }
}
