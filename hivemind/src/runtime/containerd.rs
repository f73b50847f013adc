//! The real runtime: containerd over its gRPC socket.
//!
//! A container is a containerd container (spec + snapshot) plus a task (the
//! runc process). stdout and stderr go to a log file through the shim's
//! `file://` IO, so logs survive a daemon restart without fifos.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest, GetContainerRequest, GetRequest,
    KillRequest, ListContainersRequest, ListTasksRequest, StartRequest, WaitRequest,
};
use containerd_client::types::v1::Status;
use tonic::Code;

use super::{
    ContainerRuntime, ContainerSpec, EXEC_OUTPUT_LIMIT, ExecOutput, ProgressFn, RuntimeError,
    TaskState,
};
use crate::containerd::{Containerd, SNAPSHOTTER};
use crate::image::{ImageStore, ResolvedImage};

const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// Label on every container Hivemind creates.
pub const LABEL_APP: &str = "hivemind.app";
/// How long to wait for a task to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

pub struct ContainerdRuntime {
    cd: Containerd,
    images: ImageStore,
    /// The executable containerd's shim runs as the log driver (`hivemind log-driver`); `None`:
    /// the shim writes the output to the file as it comes (no times, no rotation).
    log_driver: Option<PathBuf>,
}

impl ContainerdRuntime {
    pub fn new(cd: Containerd, insecure_registries: Vec<String>) -> Self {
        let images = ImageStore::new(cd.clone(), insecure_registries);
        Self {
            cd,
            images,
            log_driver: None,
        }
    }

    /// Container output goes through `exe log-driver` (see `logfile`).
    pub fn with_log_driver(mut self, exe: PathBuf) -> Self {
        self.log_driver = Some(exe);
        self
    }

    fn containers(&self) -> ContainersClient<tonic::transport::Channel> {
        ContainersClient::new(self.cd.channel.clone())
    }
    fn tasks(&self) -> TasksClient<tonic::transport::Channel> {
        TasksClient::new(self.cd.channel.clone())
    }
    fn snapshots(&self) -> SnapshotsClient<tonic::transport::Channel> {
        SnapshotsClient::new(self.cd.channel.clone())
    }

    /// Prepares the container's snapshot, then the container that references it, every
    /// request under `session`'s lease.
    async fn create_leased(
        &self,
        session: &crate::image::content::Session,
        spec: &ContainerSpec,
    ) -> Result<(), RuntimeError> {
        let id = &spec.id;
        // The snapshot first: the container record points at it.
        let prepare = PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: id.clone(),
            parent: spec.image.chain_id.clone(),
            labels: HashMap::new(),
        };
        match self.snapshots().prepare(session.request(prepare)).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::AlreadyExists => {}
            Err(status) => return Err(RuntimeError::containerd("prepare snapshot", id, status)),
        }
        let spec_json = super::oci_spec_json(spec);
        let container = Container {
            id: id.clone(),
            labels: HashMap::from([(LABEL_APP.to_string(), spec.app.clone())]),
            image: spec.image.name.clone(),
            runtime: Some(Runtime {
                name: RUNC_RUNTIME.to_string(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.to_string(),
                value: spec_json.to_string().into_bytes(),
            }),
            snapshotter: SNAPSHOTTER.to_string(),
            snapshot_key: id.clone(),
            ..Default::default()
        };
        let request = CreateContainerRequest {
            container: Some(container),
        };
        match self.containers().create(session.request(request)).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => Ok(()),
            Err(status) => Err(RuntimeError::containerd("create container", id, status)),
        }
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        // Snapshot and container under one lease: between the two, nothing else references
        // the fresh snapshot, and a garbage collection (after any delete) would remove it.
        let session = crate::image::content::Session::begin(&self.cd).await?;
        let result = self.create_leased(&session, spec).await;
        session.end().await;
        result
    }

    async fn task_state(&self, id: &str) -> Result<Option<TaskState>, RuntimeError> {
        let request = GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        };
        match self.tasks().get(self.cd.request(request)).await {
            Ok(response) => Ok(response.into_inner().process.map(|p| process_state(&p))),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(RuntimeError::containerd("get task", id, status)),
        }
    }

    async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError> {
        let request = KillRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
            signal,
            all: true,
        };
        match self.tasks().kill(self.cd.request(request)).await {
            Ok(_) => Ok(()),
            Err(status) if matches!(status.code(), Code::NotFound | Code::FailedPrecondition) => {
                Ok(())
            }
            Err(status) => Err(RuntimeError::containerd("kill task", id, status)),
        }
    }

    /// Waits for the task to exit; `None` when `limit` passed first.
    async fn wait_exit(&self, id: &str, limit: Duration) -> Result<Option<u32>, RuntimeError> {
        let request = WaitRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        };
        let mut tasks = self.tasks();
        match tokio::time::timeout(limit, tasks.wait(self.cd.request(request))).await {
            Err(_) => Ok(None),
            Ok(Ok(response)) => Ok(Some(response.into_inner().exit_status)),
            Ok(Err(status)) if status.code() == Code::NotFound => Ok(Some(0)),
            Ok(Err(status)) => Err(RuntimeError::containerd("wait task", id, status)),
        }
    }

    /// The process part of the container's runtime spec (env, cwd, user,
    /// capabilities) with `command` as its args: what an exec runs.
    async fn exec_process_spec(
        &self,
        id: &str,
        command: &[String],
    ) -> Result<serde_json::Value, RuntimeError> {
        let container = self
            .containers()
            .get(self.cd.request(GetContainerRequest { id: id.to_string() }))
            .await
            .map_err(|status| RuntimeError::containerd("get container", id, status))?
            .into_inner()
            .container
            .ok_or_else(|| RuntimeError::Other(format!("container {id}: no record returned")))?;
        let spec = container
            .spec
            .ok_or_else(|| RuntimeError::Other(format!("container {id} has no runtime spec")))?;
        let spec: serde_json::Value = serde_json::from_slice(&spec.value)
            .map_err(|e| RuntimeError::Other(format!("container {id}: runtime spec: {e}")))?;
        let mut process = spec
            .get("process")
            .cloned()
            .filter(serde_json::Value::is_object)
            .ok_or_else(|| RuntimeError::Other(format!("container {id}: spec has no process")))?;
        process["args"] = serde_json::json!(command);
        process["terminal"] = serde_json::Value::Bool(false);
        Ok(process)
    }

    /// Starts the created exec process and waits for it under `timeout`;
    /// kills it (and what it forked) when the timeout passes first.
    async fn start_and_wait_exec(
        &self,
        id: &str,
        exec_id: &str,
        timeout: Duration,
    ) -> Result<Option<u32>, RuntimeError> {
        let start = StartRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        };
        let pid = self
            .tasks()
            .start(self.cd.request(start))
            .await
            .map_err(|status| RuntimeError::containerd("start exec", id, status))?
            .into_inner()
            .pid;
        let wait = WaitRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        };
        let mut tasks = self.tasks();
        match tokio::time::timeout(timeout, tasks.wait(self.cd.request(wait.clone()))).await {
            Ok(Ok(response)) => return Ok(Some(response.into_inner().exit_status)),
            Ok(Err(status)) => return Err(RuntimeError::containerd("wait exec", id, status)),
            Err(_) => {}
        }
        tracing::info!(container = %id, exec = %exec_id, pid, timeout_ms = timeout.as_millis() as u64, "exec timed out, killing it");
        // SIGKILL on the exec reaches only its first process; a shell's
        // children would keep running (and keep the output pipe open).
        // They are listed before the kill (then they are init's children)
        // and killed after it (before, the shell would run on).
        let forked = descendants_in_container(pid);
        let kill = KillRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            signal: libc::SIGKILL as u32,
            all: false,
        };
        match self.tasks().kill(self.cd.request(kill)).await {
            Ok(_) => {}
            Err(status) if matches!(status.code(), Code::NotFound | Code::FailedPrecondition) => {}
            Err(status) => return Err(RuntimeError::containerd("kill exec", id, status)),
        }
        sigkill(&forked);
        match tokio::time::timeout(KILL_WAIT, tasks.wait(self.cd.request(wait))).await {
            Ok(Ok(_)) => Ok(None),
            Ok(Err(status)) if status.code() == Code::NotFound => Ok(None),
            Ok(Err(status)) => Err(RuntimeError::containerd("wait exec", id, status)),
            Err(_) => Err(RuntimeError::StopTimeout {
                id: format!("{id} (exec {exec_id})"),
                seconds: KILL_WAIT.as_secs(),
            }),
        }
    }

    async fn delete_process(&self, id: &str, exec_id: &str) -> Result<(), RuntimeError> {
        let request = DeleteProcessRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        };
        match self.tasks().delete_process(self.cd.request(request)).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(RuntimeError::containerd("delete exec", id, status)),
        }
    }

    async fn delete_task(&self, id: &str) -> Result<Option<u32>, RuntimeError> {
        let request = DeleteTaskRequest {
            container_id: id.to_string(),
        };
        match self.tasks().delete(self.cd.request(request)).await {
            Ok(response) => Ok(Some(response.into_inner().exit_status)),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(RuntimeError::containerd("delete task", id, status)),
        }
    }
}

/// A fresh exec id: unique per daemon process, valid as a containerd
/// identifier.
fn next_exec_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "hm-exec-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where the shim writes an exec's output: a `file://` IO path, read and
/// removed once the exec is deleted. The shim runs in containerd's mount
/// namespace, so this must be a path both see (no private /tmp).
fn exec_output_path(id: &str, exec_id: &str) -> PathBuf {
    std::env::temp_dir()
        .join("hivemind-exec")
        .join(format!("{id}.{exec_id}.out"))
}

/// Reads the first [`EXEC_OUTPUT_LIMIT`] bytes of an exec's output file and
/// removes it. A missing file is empty output (the command printed nothing).
async fn take_exec_output(path: &Path) -> String {
    // The shim copies stdout and stderr on their own and may still be writing the last of one
    // after the delete returned: wait until the file stops growing (50 ms apart, 1 s at most).
    let size = || std::fs::metadata(path).map_or(0, |m| m.len());
    let mut last = size();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = size();
        if now == last {
            break;
        }
        last = now;
    }
    let mut bytes = Vec::new();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = file.take(EXEC_OUTPUT_LIMIT as u64).read_to_end(&mut bytes);
    }
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove exec output");
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Every descendant of host pid `pid` that lives in the same pid namespace
/// as `pid` itself, when that is not ours: only processes inside the
/// container are listed, even if the daemon runs in another pid namespace
/// than the shim. Best effort: /proc races are ignored.
fn descendants_in_container(pid: u32) -> Vec<nix::unistd::Pid> {
    let ns_of = |p: u32| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let Some(container_ns) = ns_of(pid) else {
        return Vec::new();
    };
    if std::fs::read_link("/proc/self/ns/pid").ok().as_ref() == Some(&container_ns) {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(child);
        }
    }
    let mut found = Vec::new();
    let mut stack = children.remove(&pid).unwrap_or_default();
    while let Some(child) = stack.pop() {
        stack.extend(children.remove(&child).unwrap_or_default());
        if ns_of(child).as_ref() != Some(&container_ns) {
            continue;
        }
        if let Ok(raw) = i32::try_from(child) {
            found.push(nix::unistd::Pid::from_raw(raw));
        }
    }
    found
}

fn sigkill(pids: &[nix::unistd::Pid]) {
    for pid in pids {
        let _ = nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGKILL);
    }
}

fn process_state(process: &containerd_client::types::v1::Process) -> TaskState {
    match Status::try_from(process.status).unwrap_or(Status::Unknown) {
        Status::Running | Status::Pausing => TaskState::Running { pid: process.pid },
        Status::Stopped => TaskState::Exited {
            code: process.exit_status,
        },
        Status::Created | Status::Paused | Status::Unknown => TaskState::Stopped,
    }
}

#[async_trait]
impl ContainerRuntime for ContainerdRuntime {
    async fn ensure_image(
        &self,
        reference: &str,
        progress: &ProgressFn,
    ) -> Result<ResolvedImage, RuntimeError> {
        Ok(self.images.ensure(reference, progress).await?)
    }

    async fn pull_image(
        &self,
        reference: &str,
        progress: &ProgressFn,
    ) -> Result<ResolvedImage, RuntimeError> {
        Ok(self.images.pull(reference, progress).await?)
    }

    async fn import_image(
        &self,
        path: &Path,
        progress: &ProgressFn,
    ) -> Result<Vec<ResolvedImage>, RuntimeError> {
        Ok(self.images.import_archive(path, progress).await?)
    }

    async fn image_files(
        &self,
        reference: &str,
        wanted: crate::image::files::Wanted,
    ) -> Result<crate::image::files::ImageFiles, RuntimeError> {
        Ok(self.images.files(reference, wanted).await?)
    }

    async fn add_image_layer(
        &self,
        base: &str,
        layer: &crate::image::build::LayerSource,
        reference: &str,
    ) -> Result<ResolvedImage, RuntimeError> {
        Ok(self
            .images
            .add_layer(base, layer, reference, &|_| {})
            .await?)
    }

    async fn push_image(&self, local: &str, target: &str) -> Result<String, RuntimeError> {
        Ok(self.images.push(local, target).await?)
    }

    async fn image_signatures(
        &self,
        reference: &str,
        digest: &str,
    ) -> Result<Vec<crate::image::cosign::Signature>, RuntimeError> {
        Ok(self.images.cosign_signatures(reference, digest).await?)
    }

    async fn run(&self, spec: &ContainerSpec) -> Result<u32, RuntimeError> {
        let id = &spec.id;
        self.create_container(spec).await?;
        match self.task_state(id).await? {
            Some(TaskState::Running { pid }) => return Ok(pid),
            Some(_) => {
                self.delete_task(id).await?;
            }
            None => {}
        }
        let mounts = self
            .snapshots()
            .mounts(self.cd.request(MountsRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: id.clone(),
            }))
            .await
            .map_err(|status| RuntimeError::containerd("snapshot mounts", id, status))?
            .into_inner()
            .mounts;
        if mounts.is_empty() {
            return Err(RuntimeError::NoMounts(id.clone()));
        }
        if let Some(dir) = spec.log_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| RuntimeError::Other(format!("create {}: {e}", dir.display())))?;
        }
        let log_uri = match &self.log_driver {
            Some(exe) => crate::logfile::driver_uri(exe, &spec.log_path),
            None => format!("file://{}", spec.log_path.display()),
        };
        let create = CreateTaskRequest {
            container_id: id.clone(),
            rootfs: mounts,
            stdout: log_uri.clone(),
            stderr: log_uri,
            ..Default::default()
        };
        self.tasks()
            .create(self.cd.request(create))
            .await
            .map_err(|status| RuntimeError::containerd("create task", id, status))?;
        let start = StartRequest {
            container_id: id.clone(),
            exec_id: String::new(),
        };
        match self.tasks().start(self.cd.request(start)).await {
            Ok(response) => Ok(response.into_inner().pid),
            Err(status) => {
                // Leave no created-but-dead task behind.
                let _ = self.delete_task(id).await;
                Err(RuntimeError::containerd("start task", id, status))
            }
        }
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<Option<u32>, RuntimeError> {
        match self.task_state(id).await? {
            None => return Ok(None),
            Some(TaskState::Running { .. }) => {
                self.kill(id, libc::SIGTERM as u32).await?;
                if self.wait_exit(id, grace).await?.is_none() {
                    tracing::info!(container = %id, grace_s = grace.as_secs(), "no exit after SIGTERM, sending SIGKILL");
                    self.kill(id, libc::SIGKILL as u32).await?;
                    if self.wait_exit(id, KILL_WAIT).await?.is_none() {
                        return Err(RuntimeError::StopTimeout {
                            id: id.to_string(),
                            seconds: KILL_WAIT.as_secs(),
                        });
                    }
                }
            }
            Some(_) => {}
        }
        self.delete_task(id).await
    }

    async fn remove(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        self.stop(id, grace).await?;
        let request = DeleteContainerRequest { id: id.to_string() };
        match self.containers().delete(self.cd.request(request)).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::NotFound => {}
            Err(status) => return Err(RuntimeError::containerd("delete container", id, status)),
        }
        let request = RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: id.to_string(),
        };
        match self.snapshots().remove(self.cd.request(request)).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(RuntimeError::containerd("remove snapshot", id, status)),
        }
    }

    async fn list(&self) -> Result<BTreeMap<String, TaskState>, RuntimeError> {
        let containers = self
            .containers()
            .list(self.cd.request(ListContainersRequest { filters: vec![] }))
            .await
            .map_err(|status| RuntimeError::containerd("list containers", "*", status))?
            .into_inner()
            .containers;
        let tasks = self
            .tasks()
            .list(self.cd.request(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(|status| RuntimeError::containerd("list tasks", "*", status))?
            .into_inner()
            .tasks;
        let tasks: HashMap<String, TaskState> = tasks
            .iter()
            .map(|p| (p.id.clone(), process_state(p)))
            .collect();
        Ok(containers
            .into_iter()
            .filter(|c| c.labels.contains_key(LABEL_APP))
            .map(|c| {
                let state = tasks.get(&c.id).copied().unwrap_or(TaskState::NoTask);
                (c.id, state)
            })
            .collect())
    }

    async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        if command.is_empty() {
            return Err(RuntimeError::Other(format!("exec in {id}: empty command")));
        }
        let process = self.exec_process_spec(id, command).await?;
        let exec_id = next_exec_id();
        let output_path = exec_output_path(id, &exec_id);
        if let Some(dir) = output_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| RuntimeError::Other(format!("create {}: {e}", dir.display())))?;
        }
        let uri = format!("file://{}", output_path.display());
        let request = ExecProcessRequest {
            container_id: id.to_string(),
            stdin: String::new(),
            stdout: uri.clone(),
            stderr: uri,
            terminal: false,
            spec: Some(prost_types::Any {
                type_url: PROCESS_TYPE_URL.to_string(),
                value: process.to_string().into_bytes(),
            }),
            exec_id: exec_id.clone(),
        };
        if let Err(status) = self.tasks().exec(self.cd.request(request)).await {
            let _ = std::fs::remove_file(&output_path);
            return Err(RuntimeError::containerd("exec", id, status));
        }
        let waited = self.start_and_wait_exec(id, &exec_id, timeout).await;
        // Deleting the exec also waits (briefly) for the shim to finish
        // copying its output into the file.
        let deleted = self.delete_process(id, &exec_id).await;
        let output = take_exec_output(&output_path).await;
        let exit_code = waited?;
        deleted?;
        tracing::debug!(container = %id, exec = %exec_id, exit_code = ?exit_code, "exec finished");
        Ok(ExecOutput { exit_code, output })
    }
}
