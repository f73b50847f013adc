//! The container runtime seam: a trait with the containerd implementation
//! (the real one) and an in-memory one for `web --mock` and unit tests.
//!
//! Invariant: only `runtime::containerd` and `image` talk to containerd.

pub mod cgroup;
pub mod containerd;
pub mod memory;
mod seccomp;
mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::image::{ImageError, Progress, ResolvedImage};
use crate::model::Resources;

pub use spec::oci_spec_json;

/// Called with each pull step; the CLI shows them as progress.
pub type ProgressFn = dyn Fn(Progress) + Send + Sync;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("containerd {operation} for container {id}: {status}")]
    Containerd {
        operation: &'static str,
        id: String,
        status: Box<tonic::Status>,
    },
    #[error("container {id} did not stop within {seconds}s of SIGKILL")]
    StopTimeout { id: String, seconds: u64 },
    #[error("container {0} has no snapshot mounts")]
    NoMounts(String),
    #[error("{0}")]
    Other(String),
}

impl RuntimeError {
    pub(crate) fn containerd(operation: &'static str, id: &str, status: tonic::Status) -> Self {
        Self::Containerd {
            operation,
            id: id.to_string(),
            status: Box::new(status),
        }
    }
}

/// A host path bind-mounted into a container.
#[derive(Debug, Clone, PartialEq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
}

/// Everything needed to run one container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub id: String,
    pub app: String,
    pub image: ResolvedImage,
    /// The user's variables; they override the image's.
    pub env: BTreeMap<String, String>,
    pub mounts: Vec<BindMount>,
    pub resources: Resources,
    /// Network namespace to join; `None` runs in a fresh, unconnected one.
    pub netns: Option<PathBuf>,
    pub hostname: String,
    /// stdout and stderr are appended here by the containerd shim.
    pub log_path: PathBuf,
    /// Instead of the image's entrypoint and cmd.
    pub command: Option<Vec<String>>,
    /// Instead of the image's working directory.
    pub working_dir: Option<String>,
}

/// What containerd says about a container's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TaskState {
    Running {
        pid: u32,
    },
    Exited {
        code: u32,
    },
    /// Created or paused: present but not running.
    Stopped,
    /// The container exists with no task.
    NoTask,
}

/// What a command run inside a container with [`ContainerRuntime::exec`]
/// left behind.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecOutput {
    /// `None` when the command outlived its timeout and was killed.
    pub exit_code: Option<u32>,
    /// stdout and stderr together, at most [`EXEC_OUTPUT_LIMIT`] bytes
    /// (the first ones; invalid UTF-8 replaced). Each stream keeps its
    /// order; how the two interleave is not preserved.
    pub output: String,
}

/// Bytes of exec output kept, as Docker keeps for health check logs.
pub const EXEC_OUTPUT_LIMIT: usize = 4096;

/// Resource usage read from the runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    pub memory_bytes: Option<u64>,
    pub cpu_nanos: Option<u64>,
}

#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Returns the local image, pulling it first when it is missing.
    async fn ensure_image(
        &self,
        reference: &str,
        progress: &ProgressFn,
    ) -> Result<ResolvedImage, RuntimeError>;

    /// Pulls the image even when a copy is present (to pick up a moved tag).
    async fn pull_image(
        &self,
        reference: &str,
        progress: &ProgressFn,
    ) -> Result<ResolvedImage, RuntimeError>;

    /// Imports an OCI archive.
    async fn import_image(
        &self,
        path: &Path,
        progress: &ProgressFn,
    ) -> Result<Vec<ResolvedImage>, RuntimeError>;

    /// Files of a local image as its root filesystem shows them, the ones `wanted` keeps (by
    /// path without the leading `/`), read from its layers without running it.
    async fn image_files(
        &self,
        reference: &str,
        wanted: crate::image::files::Wanted,
    ) -> Result<crate::image::files::ImageFiles, RuntimeError>;

    /// Records `reference` as the local image `base` with the files of `layer.dir` as one
    /// more layer (a build's output).
    async fn add_image_layer(
        &self,
        base: &str,
        layer: &crate::image::build::LayerSource,
        reference: &str,
    ) -> Result<ResolvedImage, RuntimeError>;

    /// Pushes the local image `local` to the registry of `target` (with a tag); the manifest's
    /// digest.
    async fn push_image(&self, local: &str, target: &str) -> Result<String, RuntimeError>;

    /// The cosign signatures the image's registry holds for `digest`.
    async fn image_signatures(
        &self,
        reference: &str,
        digest: &str,
    ) -> Result<Vec<crate::image::cosign::Signature>, RuntimeError>;

    /// Creates the container if needed and starts a new task for it (a dead
    /// task of the same container is removed first). Returns the pid.
    async fn run(&self, spec: &ContainerSpec) -> Result<u32, RuntimeError>;

    /// SIGTERM, then SIGKILL after `grace`; removes the task. Returns the exit
    /// code when there was a task.
    async fn stop(&self, id: &str, grace: Duration) -> Result<Option<u32>, RuntimeError>;

    /// Stops the container and removes it with its snapshot. Succeeds when it
    /// is already gone.
    async fn remove(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;

    /// Every container of Hivemind in the runtime, with its task's state.
    async fn list(&self) -> Result<BTreeMap<String, TaskState>, RuntimeError>;

    /// Runs `command` inside the running container `id` (a new process in
    /// its namespaces, as `docker exec`), waits at most `timeout`, returns
    /// the exit code (`None` on timeout, after killing it) and up to 4 KiB
    /// of combined output.
    async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError>;
}
