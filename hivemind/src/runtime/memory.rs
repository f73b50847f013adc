//! A process-free runtime for `hivemind web --mock` and unit tests. It
//! records what it was asked and never stands in for containerd in an
//! end-to-end test.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::{ContainerRuntime, ContainerSpec, ExecOutput, ProgressFn, RuntimeError, TaskState};
use crate::image::{Progress, ResolvedImage, RunConfig, normalize_reference};

#[derive(Default)]
pub struct MemoryRuntime {
    containers: Mutex<BTreeMap<String, TaskState>>,
    next_pid: Mutex<u32>,
    exec: Mutex<ExecScript>,
}

/// What `exec` answers: queued results first, then the default.
#[derive(Default)]
struct ExecScript {
    queued: VecDeque<ExecOutput>,
    default: Option<ExecOutput>,
    calls: Vec<(String, Vec<String>)>,
}

/// Exit 0 with no output, when nothing else was configured.
fn exec_success() -> ExecOutput {
    ExecOutput {
        exit_code: Some(0),
        output: String::new(),
    }
}

impl MemoryRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks a running container as exited, as if its process died.
    pub fn exit(&self, id: &str, code: u32) {
        if let Ok(mut containers) = self.containers.lock()
            && let Some(state) = containers.get_mut(id)
        {
            *state = TaskState::Exited { code };
        }
    }

    /// What every later `exec` returns once the queued results are used up
    /// (initially exit 0 with no output).
    pub fn set_exec_result(&self, result: ExecOutput) {
        if let Ok(mut script) = self.exec.lock() {
            script.default = Some(result);
        }
    }

    /// Results the next `exec` calls return, in order.
    pub fn queue_exec_results(&self, results: impl IntoIterator<Item = ExecOutput>) {
        if let Ok(mut script) = self.exec.lock() {
            script.queued.extend(results);
        }
    }

    /// Every `exec` asked so far: (container id, command).
    pub fn exec_calls(&self) -> Vec<(String, Vec<String>)> {
        self.exec
            .lock()
            .map(|script| script.calls.clone())
            .unwrap_or_default()
    }

    fn resolve(reference: &str) -> Result<ResolvedImage, RuntimeError> {
        let name = normalize_reference(reference)?;
        Ok(ResolvedImage {
            digest: format!("sha256:{:064x}", name.len()),
            chain_id: format!("sha256:{:064x}", name.len() + 1),
            name,
            config: RunConfig {
                entrypoint: vec![],
                cmd: vec!["/bin/sh".into()],
                env: vec![],
                working_dir: None,
                user: None,
            },
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, TaskState>>, RuntimeError> {
        self.containers
            .lock()
            .map_err(|_| RuntimeError::Other("memory runtime lock poisoned".into()))
    }
}

#[async_trait]
impl ContainerRuntime for MemoryRuntime {
    async fn ensure_image(
        &self,
        reference: &str,
        progress: &ProgressFn,
    ) -> Result<ResolvedImage, RuntimeError> {
        let image = Self::resolve(reference)?;
        progress(Progress::Done {
            image: image.name.clone(),
            digest: image.digest.clone(),
        });
        Ok(image)
    }

    async fn pull_image(
        &self,
        reference: &str,
        progress: &ProgressFn,
    ) -> Result<ResolvedImage, RuntimeError> {
        self.ensure_image(reference, progress).await
    }

    async fn import_image(
        &self,
        path: &Path,
        _progress: &ProgressFn,
    ) -> Result<Vec<ResolvedImage>, RuntimeError> {
        Err(RuntimeError::Other(format!(
            "image import of {} needs containerd; the mock runtime has no content store",
            path.display()
        )))
    }

    async fn image_files(
        &self,
        reference: &str,
        _wanted: crate::image::files::Wanted,
    ) -> Result<crate::image::files::ImageFiles, RuntimeError> {
        Err(RuntimeError::Other(format!(
            "reading the files of {reference} needs containerd; the mock runtime has no image layers"
        )))
    }

    async fn add_image_layer(
        &self,
        base: &str,
        _layer: &crate::image::build::LayerSource,
        _reference: &str,
    ) -> Result<ResolvedImage, RuntimeError> {
        Err(RuntimeError::Other(format!(
            "building on {base} needs containerd; the mock runtime has no content store"
        )))
    }

    async fn push_image(&self, local: &str, _target: &str) -> Result<String, RuntimeError> {
        Err(RuntimeError::Other(format!(
            "pushing {local} needs containerd; the mock runtime has no content store"
        )))
    }

    async fn image_signatures(
        &self,
        reference: &str,
        _digest: &str,
    ) -> Result<Vec<crate::image::cosign::Signature>, RuntimeError> {
        Err(RuntimeError::Other(format!(
            "the signatures of {reference} are in its registry; the mock runtime has none"
        )))
    }

    async fn run(&self, spec: &ContainerSpec) -> Result<u32, RuntimeError> {
        let pid = {
            let mut next = self
                .next_pid
                .lock()
                .map_err(|_| RuntimeError::Other("memory runtime lock poisoned".into()))?;
            *next += 1;
            1000 + *next
        };
        let mut containers = self.lock()?;
        if let Some(TaskState::Running { pid }) = containers.get(&spec.id) {
            return Ok(*pid);
        }
        containers.insert(spec.id.clone(), TaskState::Running { pid });
        Ok(pid)
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<Option<u32>, RuntimeError> {
        let mut containers = self.lock()?;
        Ok(match containers.get_mut(id) {
            Some(state @ TaskState::Running { .. }) => {
                *state = TaskState::NoTask;
                Some(143)
            }
            Some(state) => {
                let code = match *state {
                    TaskState::Exited { code } => Some(code),
                    _ => None,
                };
                *state = TaskState::NoTask;
                code
            }
            None => None,
        })
    }

    async fn remove(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        self.lock()?.remove(id);
        Ok(())
    }

    async fn list(&self) -> Result<BTreeMap<String, TaskState>, RuntimeError> {
        Ok(self.lock()?.clone())
    }

    async fn exec(
        &self,
        id: &str,
        command: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        if command.is_empty() {
            return Err(RuntimeError::Other(format!("exec in {id}: empty command")));
        }
        if !matches!(self.lock()?.get(id), Some(TaskState::Running { .. })) {
            return Err(RuntimeError::Other(format!(
                "container {id} is not running"
            )));
        }
        let mut script = self
            .exec
            .lock()
            .map_err(|_| RuntimeError::Other("memory runtime lock poisoned".into()))?;
        script.calls.push((id.to_string(), command.to_vec()));
        Ok(match script.queued.pop_front() {
            Some(result) => result,
            None => script.default.clone().unwrap_or_else(exec_success),
        })
    }
}
