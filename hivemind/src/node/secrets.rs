//! Secrets on a node: sealing what users create, opening what containers
//! need, and keeping running containers' secret files at the current
//! version.

use std::collections::BTreeMap;

use super::{Node, NodeError, lock};
use crate::cluster::Key;
use crate::command::Outcome;
use crate::model::AppSpec;
use crate::runtime::BindMount;
use crate::secrets::{SecretValue, open, seal};
use crate::state::{ContainerRecord, SECRETS, SecretRecord, now_secs};

/// What a container gets of its app's secrets.
pub(super) struct ContainerSecrets {
    pub mounts: Vec<BindMount>,
    pub env: BTreeMap<String, String>,
}

impl Node {
    /// The key secrets are wrapped with: held here, else asked of a member.
    pub(super) async fn secrets_key(&self) -> Result<Key, NodeError> {
        if let Some(key) = self.secrets_key.get() {
            return Ok(key);
        }
        match &self.cluster {
            Some(cluster) => Ok(cluster.secrets_key().await?),
            None => Err(NodeError::Conflict(
                "this node has no secrets key".to_string(),
            )),
        }
    }

    pub(super) fn secret_record(&self, name: &str) -> Result<SecretRecord, NodeError> {
        self.store
            .value(SECRETS, name)?
            .ok_or_else(|| NodeError::NotFound {
                kind: "secret",
                name: name.to_string(),
            })
    }

    /// Creates a secret (`create`) or rotates it to a new version.
    pub(super) async fn put_secret(
        &self,
        name: String,
        value: SecretValue,
        create: bool,
    ) -> Result<Outcome, NodeError> {
        let existing: Option<SecretRecord> = self.store.value(SECRETS, &name)?;
        let (version, created_at) = match (&existing, create) {
            (Some(_), true) => {
                return Err(NodeError::Conflict(format!(
                    "secret {name} already exists: rotate it to change its value"
                )));
            }
            (None, false) => {
                return Err(NodeError::NotFound {
                    kind: "secret",
                    name,
                });
            }
            (None, true) => (1, now_secs()),
            (Some(old), false) => (old.version + 1, old.created_at),
        };
        let kek = self.secrets_key().await?;
        let record = seal(&kek, &name, version, &value, created_at, now_secs());
        self.write(SECRETS, &name, Some(&record)).await?;
        tracing::info!(secret = %name, version, "secret stored");
        Ok(Outcome::SecretSet {
            name,
            version,
            created: create,
        })
    }

    pub(super) async fn delete_secret(&self, name: String) -> Result<Outcome, NodeError> {
        self.secret_record(&name)?;
        let users = self.secret_users(&name)?;
        if !users.is_empty() {
            return Err(NodeError::Conflict(format!(
                "secret {name} is used by app(s) {}; change or delete them first",
                users.join(", ")
            )));
        }
        self.write::<SecretRecord>(SECRETS, &name, None).await?;
        Ok(Outcome::Deleted {
            kind: "secret",
            name,
        })
    }

    /// The apps that use secret `name`.
    pub fn secret_users(&self, name: &str) -> Result<Vec<String>, NodeError> {
        Ok(self
            .store
            .apps()?
            .into_iter()
            .filter(|app| app.spec.secret_names().contains(name))
            .map(|app| app.spec.name)
            .collect())
    }

    /// Checks that every secret `spec` uses exists.
    pub(super) fn require_secrets(&self, spec: &AppSpec) -> Result<(), NodeError> {
        for name in spec.secret_names() {
            self.secret_record(name)?;
        }
        Ok(())
    }

    /// Opens a secret's current version.
    pub(super) async fn secret_value(&self, name: &str) -> Result<(SecretValue, u32), NodeError> {
        let record = self.secret_record(name)?;
        let kek = self.secrets_key().await?;
        Ok((open(&kek, &record)?, record.version))
    }

    /// Writes the secret files of a container about to start and reads the
    /// variables it takes from secrets.
    pub(super) async fn container_secrets(
        &self,
        spec: &AppSpec,
        container: &str,
    ) -> Result<ContainerSecrets, NodeError> {
        let mut out = ContainerSecrets {
            mounts: Vec::new(),
            env: BTreeMap::new(),
        };
        let mut written = BTreeMap::new();
        for (index, mount) in spec.secrets.iter().enumerate() {
            let (value, version) = self.secret_value(&mount.name).await?;
            let path = self.secret_files.write(container, index, &value)?;
            written.insert(index, version);
            out.mounts.push(BindMount {
                source: path,
                destination: mount.path.clone(),
                readonly: true,
            });
        }
        for (variable, name) in &spec.secret_env {
            let (value, _) = self.secret_value(name).await?;
            out.env.insert(variable.clone(), value.to_env(name)?);
        }
        lock(&self.secret_versions).insert(container.to_string(), written);
        Ok(out)
    }

    /// Brings the secret files of this node's containers to the secrets'
    /// current versions, in place: a rotation reaches running containers
    /// without a restart. Variables from secrets keep the value they
    /// started with.
    pub(super) async fn refresh_secret_files(&self, containers: &[ContainerRecord]) {
        let secrets: BTreeMap<String, SecretRecord> = match self.store.values(SECRETS) {
            Ok(rows) => rows
                .into_iter()
                .map(|r: SecretRecord| (r.name.clone(), r))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "reading secrets failed");
                return;
            }
        };
        for container in containers {
            let Ok(Some(app)) = self.store.app(&container.app) else {
                continue;
            };
            for (index, mount) in app.spec.secrets.iter().enumerate() {
                let Some(record) = secrets.get(&mount.name) else {
                    continue;
                };
                let current = lock(&self.secret_versions)
                    .get(&container.id)
                    .and_then(|w| w.get(&index).copied());
                if current == Some(record.version) {
                    continue;
                }
                let result = async {
                    let kek = self.secrets_key().await?;
                    let value = open(&kek, record)?;
                    self.secret_files.write(&container.id, index, &value)?;
                    Ok::<(), NodeError>(())
                }
                .await;
                match result {
                    Ok(()) => {
                        lock(&self.secret_versions)
                            .entry(container.id.clone())
                            .or_default()
                            .insert(index, record.version);
                        if current.is_some() {
                            tracing::info!(container = %container.id, secret = %mount.name, version = record.version, "secret file updated");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(container = %container.id, secret = %mount.name, error = %e, "updating a secret file failed")
                    }
                }
            }
        }
    }

    /// Removes a container's secret files.
    pub(super) fn remove_container_secrets(&self, container: &str) -> Result<(), NodeError> {
        lock(&self.secret_versions).remove(container);
        Ok(self.secret_files.remove(container)?)
    }

    /// Removes secret files left by containers this node no longer has.
    pub(super) fn sweep_secret_files(&self, containers: &[ContainerRecord]) {
        for id in self.secret_files.containers() {
            if !containers.iter().any(|c| c.id == id)
                && let Err(e) = self.remove_container_secrets(&id)
            {
                tracing::warn!(container = %id, error = %e, "removing stale secret files failed");
            }
        }
    }
}
