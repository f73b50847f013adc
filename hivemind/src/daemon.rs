//! A node: the state, the runtime, the network and the data plane, and the
//! one place where [`Command`]s are carried out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::command::{Command, Outcome};
use crate::dataplane::{Dataplane, DataplaneError};
use crate::image::ImageError;
use crate::model::{ValidationError, validate_name};
use crate::network::{ContainerNetwork, NetworkConfig, NetworkError};
use crate::reconcile::Backoff;
use crate::runtime::{ContainerRuntime, RuntimeError};
use crate::state::{AppRecord, Store, StoreError, VolumeRecord, now_secs};

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
    pub store: Store,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub network: Arc<dyn ContainerNetwork>,
    pub net_config: NetworkConfig,
    pub dataplane: Option<Dataplane>,
    /// Human description of the runtime ("containerd at ...", "in-memory").
    pub runtime_name: String,
}

pub struct Node {
    pub id: String,
    pub name: String,
    pub address: String,
    pub data_dir: PathBuf,
    pub store: Store,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub network: Arc<dyn ContainerNetwork>,
    pub net_config: NetworkConfig,
    pub dataplane: Option<Mutex<Dataplane>>,
    pub runtime_name: String,
    pub started_at: u64,
    /// SIGTERM-to-SIGKILL grace when stopping a container.
    pub stop_grace: Duration,
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
            runtime: parts.runtime,
            network: parts.network,
            net_config: parts.net_config,
            dataplane: parts.dataplane.map(Mutex::new),
            runtime_name: parts.runtime_name,
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

    /// Carries out one command.
    pub async fn execute(&self, command: Command) -> Result<Outcome, NodeError> {
        match command {
            Command::Deploy(spec) => {
                // Pull before anything is recorded: a bad image changes nothing.
                let image = self.runtime.ensure_image(&spec.image, &|_| {}).await?;
                let mut spec = spec;
                spec.image = image.name;
                for volume in &spec.volumes {
                    self.ensure_volume(&volume.name)?;
                }
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
                self.store.put_app(&record)?;
                let name = record.spec.name.clone();
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
                self.store.put_app(&app)?;
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
                self.store.put_app(&app)?;
                self.reconcile_app(&name).await?;
                Ok(Outcome::Restarted {
                    containers: self.container_ids(&name)?,
                    app: name,
                })
            }
            Command::DeleteApp { name } => {
                self.require_app(&name)?;
                self.store.delete_app(&name)?;
                self.reconcile_app(&name).await?;
                Ok(Outcome::Deleted { kind: "app", name })
            }
            Command::CreateVolume { name } => {
                validate_name("name", &name)?;
                if self.store.volume(&name)?.is_some() {
                    return Err(NodeError::Conflict(format!("volume {name} already exists")));
                }
                let volume = self.ensure_volume(&name)?;
                Ok(Outcome::VolumeCreated {
                    name,
                    path: volume.path,
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
                self.store.delete_volume(&name)?;
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

    /// Creates the volume's directory and record unless they exist.
    fn ensure_volume(&self, name: &str) -> Result<VolumeRecord, NodeError> {
        if let Some(volume) = self.store.volume(name)? {
            std::fs::create_dir_all(&volume.path)
                .map_err(|e| NodeError::Io(format!("create volume dir {}: {e}", volume.path)))?;
            return Ok(volume);
        }
        let path = self.volume_dir(name);
        std::fs::create_dir_all(&path)
            .map_err(|e| NodeError::Io(format!("create volume dir {}: {e}", path.display())))?;
        let volume = VolumeRecord {
            name: name.to_string(),
            path: path.display().to_string(),
            created_at: now_secs(),
        };
        self.store.put_volume(&volume)?;
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
