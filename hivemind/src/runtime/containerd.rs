//! The real runtime: containerd over its gRPC socket.
//!
//! A container is a containerd container (spec + snapshot) plus a task (the
//! runc process). stdout and stderr go to a log file through the shim's
//! `file://` IO, so logs survive a daemon restart without fifos.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
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
    DeleteTaskRequest, GetRequest, KillRequest, ListContainersRequest, ListTasksRequest,
    StartRequest, WaitRequest,
};
use containerd_client::types::v1::Status;
use tonic::Code;

use super::{ContainerRuntime, ContainerSpec, ProgressFn, RuntimeError, TaskState};
use crate::containerd::{Containerd, SNAPSHOTTER};
use crate::image::{ImageStore, ResolvedImage};

const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Label on every container Hivemind creates.
pub const LABEL_APP: &str = "hivemind.app";
/// How long to wait for a task to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

pub struct ContainerdRuntime {
    cd: Containerd,
    images: ImageStore,
}

impl ContainerdRuntime {
    pub fn new(cd: Containerd, insecure_registries: Vec<String>) -> Self {
        let images = ImageStore::new(cd.clone(), insecure_registries);
        Self { cd, images }
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

    async fn create_container(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let id = &spec.id;
        // The snapshot first: the container record points at it.
        let prepare = PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: id.clone(),
            parent: spec.image.chain_id.clone(),
            labels: HashMap::new(),
        };
        match self.snapshots().prepare(self.cd.request(prepare)).await {
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
        match self.containers().create(self.cd.request(request)).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => Ok(()),
            Err(status) => Err(RuntimeError::containerd("create container", id, status)),
        }
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
        let log_uri = format!("file://{}", spec.log_path.display());
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
}
