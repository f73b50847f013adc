//! A node: the state, the runtime, the network and the data plane, and the
//! one place where [`Command`]s are carried out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cluster::{Clock, Cluster, RecordKey};
use crate::command::{Command, Outcome};
use crate::dataplane::{Dataplane, DataplaneError};
use crate::image::ImageError;
use crate::model::{ValidationError, validate_name};
use crate::network::{ContainerNetwork, NetworkConfig, NetworkError};
use crate::reconcile::Backoff;
use crate::runtime::{ContainerRuntime, RuntimeError};
use crate::state::{
    APPS, AppRecord, PLACEMENTS, Placement, Store, StoreError, VOLUMES, VolumeRecord, now_secs,
    to_value,
};

/// Everything that can go wrong carrying out a command.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{kind} {name} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Schedule(#[from] crate::scheduler::ScheduleError),
}

impl From<ImageError> for NodeError {
    fn from(e: ImageError) -> Self {
        Self::Runtime(RuntimeError::Image(e))
    }
}

/// How a node is put together.
pub struct NodeParts {
    pub node_id: String,
    pub node_name: String,
    /// Address of this node's API, as other nodes and clients reach it.
    pub address: String,
    pub data_dir: PathBuf,
    pub store: Arc<Store>,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub network: Arc<dyn ContainerNetwork>,
    pub net_config: NetworkConfig,
    pub dataplane: Option<Dataplane>,
    /// Human description of the runtime ("containerd at ...", "in-memory").
    pub runtime_name: String,
    /// Membership and replication; `None` for `web --mock`, where this node
    /// is alone and writes are versioned by a local clock.
    pub cluster: Option<Arc<Cluster>>,
    /// Range of service VIPs.
    pub service_cidr: crate::state::Subnet,
}

pub struct Node {
    pub id: String,
    pub name: String,
    pub address: String,
    pub data_dir: PathBuf,
    pub store: Arc<Store>,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub network: Arc<dyn ContainerNetwork>,
    pub net_config: NetworkConfig,
    pub dataplane: Option<Mutex<Dataplane>>,
    pub runtime_name: String,
    pub started_at: u64,
    /// SIGTERM-to-SIGKILL grace when stopping a container.
    pub stop_grace: Duration,
    pub cluster: Option<Arc<Cluster>>,
    pub service_cidr: crate::state::Subnet,
    /// Liveness and readiness checks of this node's containers.
    pub monitor: crate::health::Monitor,
    /// Rules last written to the data plane, per endpoint id.
    pub policy_cache: Mutex<HashMap<u32, crate::policy::EndpointRules>>,
    /// Flow events from the data plane, for `GET /api/flows`.
    pub flows: tokio::sync::broadcast::Sender<serde_json::Value>,
    pub recent_flows: Mutex<std::collections::VecDeque<serde_json::Value>>,
    /// Flow events the kernel could not hand over (ring buffer full).
    pub flows_lost: std::sync::atomic::AtomicU64,
    /// Versions local writes when there is no cluster.
    clock: Clock,
    /// Wakes the reconcile loop early (a command, a record from a peer, a
    /// membership change).
    pub wake: tokio::sync::Notify,
    pub(crate) app_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) backoff: Mutex<HashMap<String, Backoff>>,
}

impl Node {
    pub fn new(parts: NodeParts) -> Arc<Self> {
        Arc::new(Self {
            id: parts.node_id,
            name: parts.node_name,
            address: parts.address,
            data_dir: parts.data_dir,
            store: parts.store,
            runtime: parts.runtime.clone(),
            network: parts.network,
            net_config: parts.net_config,
            dataplane: parts.dataplane.map(Mutex::new),
            runtime_name: parts.runtime_name,
            cluster: parts.cluster,
            service_cidr: parts.service_cidr,
            monitor: crate::health::Monitor::new(parts.runtime.clone()),
            policy_cache: Mutex::new(HashMap::new()),
            flows: tokio::sync::broadcast::channel(4096).0,
            recent_flows: Mutex::new(std::collections::VecDeque::new()),
            flows_lost: std::sync::atomic::AtomicU64::new(0),
            clock: Clock::new(0),
            wake: tokio::sync::Notify::new(),
            started_at: now_secs(),
            stop_grace: Duration::from_secs(10),
            app_locks: Mutex::new(HashMap::new()),
            backoff: Mutex::new(HashMap::new()),
        })
    }

    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.data_dir.join("volumes").join(name).join("_data")
    }
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("containers").join(id)
    }
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.data_dir.join("logs").join(format!("{id}.log"))
    }

    /// The per-app lock: one reconcile of an app at a time.
    pub(crate) fn app_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.app_locks.lock() {
            Ok(locks) => locks,
            Err(poisoned) => poisoned.into_inner(),
        };
        locks.entry(name.to_string()).or_default().clone()
    }

    /// Writes a replicated record: through the cluster (versioned, pushed to
    /// peers) or, alone, with the local clock.
    pub async fn write<T: serde::Serialize>(
        &self,
        table: &str,
        key: &str,
        value: Option<&T>,
    ) -> Result<(), NodeError> {
        let value = value.map(to_value).transpose()?;
        let key = RecordKey::new(table, key);
        match &self.cluster {
            Some(cluster) => {
                cluster.write(key, value).await?;
            }
            None => {
                let record = crate::cluster::Record {
                    key,
                    version: self.clock.now(),
                    value,
                };
                self.store.merge_record(&record)?;
            }
        }
        Ok(())
    }

    /// Carries out one command.
    pub async fn execute(&self, command: Command) -> Result<Outcome, NodeError> {
        let outcome = self.execute_inner(command).await;
        self.wake.notify_one();
        outcome
    }

    async fn execute_inner(&self, command: Command) -> Result<Outcome, NodeError> {
        match command {
            Command::Deploy(spec) => {
                // Pull before anything is recorded: a bad image changes nothing.
                let image = self.runtime.ensure_image(&spec.image, &|_| {}).await?;
                let mut spec = *spec;
                spec.image = image.name;
                let existing = self.store.app(&spec.name)?;
                let created = existing.is_none();
                let record = match existing {
                    Some(mut old) => {
                        if old.spec != spec {
                            old.generation += 1;
                        }
                        old.spec = spec;
                        old.updated_at = now_secs();
                        old
                    }
                    None => AppRecord::new(spec),
                };
                let name = record.spec.name.clone();
                // Placement is checked before anything is written.
                let placement = self.placement_if_owner(&record.spec)?;
                for volume in &record.spec.volumes {
                    self.ensure_volume(&volume.name).await?;
                }
                self.write(APPS, &name, Some(&record)).await?;
                if let Some(placement) = placement {
                    self.write(PLACEMENTS, &name, Some(&placement)).await?;
                }
                self.reconcile_app(&name).await?;
                Ok(Outcome::Deployed {
                    containers: self.container_ids(&name)?,
                    app: name,
                    created,
                })
            }
            Command::Scale { name, replicas } => {
                let mut app = self.require_app(&name)?;
                app.spec.replicas = replicas;
                app.updated_at = now_secs();
                let placement = self.placement_if_owner(&app.spec)?;
                self.write(APPS, &name, Some(&app)).await?;
                if let Some(placement) = placement {
                    self.write(PLACEMENTS, &name, Some(&placement)).await?;
                }
                self.reconcile_app(&name).await?;
                Ok(Outcome::Scaled {
                    app: name,
                    replicas,
                })
            }
            Command::Restart { name } => {
                let mut app = self.require_app(&name)?;
                app.generation += 1;
                app.updated_at = now_secs();
                self.write(APPS, &name, Some(&app)).await?;
                self.reconcile_app(&name).await?;
                Ok(Outcome::Restarted {
                    containers: self.container_ids(&name)?,
                    app: name,
                })
            }
            Command::DeleteApp { name } => {
                self.require_app(&name)?;
                self.write::<AppRecord>(APPS, &name, None).await?;
                self.write::<Placement>(PLACEMENTS, &name, None).await?;
                self.reconcile_app(&name).await?;
                Ok(Outcome::Deleted { kind: "app", name })
            }
            Command::CreateVolume { name } => {
                validate_name("name", &name)?;
                if self.store.volume(&name)?.is_some() {
                    return Err(NodeError::Conflict(format!("volume {name} already exists")));
                }
                let volume = self.ensure_volume(&name).await?;
                Ok(Outcome::VolumeCreated {
                    name,
                    path: volume.path,
                })
            }
            Command::PutPolicy(policy) => {
                policy.validate()?;
                let name = policy.name.clone();
                self.write(crate::policy::POLICIES, &name, Some(&*policy))
                    .await?;
                Ok(Outcome::PolicySet { name })
            }
            Command::DeletePolicy { name } => {
                if self
                    .store
                    .value::<crate::policy::NetworkPolicy>(crate::policy::POLICIES, &name)?
                    .is_none()
                {
                    return Err(NodeError::NotFound {
                        kind: "network policy",
                        name,
                    });
                }
                self.write::<crate::policy::NetworkPolicy>(crate::policy::POLICIES, &name, None)
                    .await?;
                Ok(Outcome::Deleted {
                    kind: "network policy",
                    name,
                })
            }
            Command::DeleteVolume { name } => {
                if self.store.volume(&name)?.is_none() {
                    return Err(NodeError::NotFound {
                        kind: "volume",
                        name,
                    });
                }
                let users: Vec<String> = self
                    .store
                    .apps()?
                    .into_iter()
                    .filter(|app| app.spec.volumes.iter().any(|v| v.name == name))
                    .map(|app| app.spec.name)
                    .collect();
                if !users.is_empty() {
                    return Err(NodeError::Conflict(format!(
                        "volume {name} is used by app(s) {}; delete them first",
                        users.join(", ")
                    )));
                }
                let dir = self.data_dir.join("volumes").join(&name);
                remove_dir_if_exists(&dir)?;
                self.write::<VolumeRecord>(VOLUMES, &name, None).await?;
                Ok(Outcome::Deleted {
                    kind: "volume",
                    name,
                })
            }
        }
    }

    fn require_app(&self, name: &str) -> Result<AppRecord, NodeError> {
        self.store.app(name)?.ok_or_else(|| NodeError::NotFound {
            kind: "app",
            name: name.to_string(),
        })
    }

    fn container_ids(&self, app: &str) -> Result<Vec<String>, NodeError> {
        Ok(self
            .store
            .containers_of(app)?
            .into_iter()
            .map(|c| c.id)
            .collect())
    }

    /// Creates the volume's record unless it exists, and its directory on
    /// this node.
    pub(crate) async fn ensure_volume(&self, name: &str) -> Result<VolumeRecord, NodeError> {
        let path = self.volume_dir(name);
        std::fs::create_dir_all(&path)
            .map_err(|e| NodeError::Io(format!("create volume dir {}: {e}", path.display())))?;
        if let Some(volume) = self.store.volume(name)? {
            return Ok(volume);
        }
        let volume = VolumeRecord {
            name: name.to_string(),
            path: path.display().to_string(),
            created_at: now_secs(),
        };
        self.write(VOLUMES, name, Some(&volume)).await?;
        Ok(volume)
    }
}

pub(crate) fn remove_dir_if_exists(dir: &Path) -> Result<(), NodeError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NodeError::Io(format!("remove {}: {e}", dir.display()))),
    }
}
