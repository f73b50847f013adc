//! Desired and observed state, as typed tables in redb under the data dir.
//!
//! Invariant: only this module opens the database. Values are JSON so that a
//! record can gain fields without a migration; keys are names or ids.

mod ipam;
mod records;
pub mod replicated;
mod tables;

use std::path::{Path, PathBuf};

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use ipam::Subnet;
pub use records::{
    AppRecord, AuditEntry, CLUSTER_DOMAIN, ContainerRecord, ContainerStatus, EndpointRecord,
    IngressFiguresRecord, JoinTokenRecord, NodeInfo, PREVIEW_LABEL, Placement, REVISION_LIMIT,
    RevisionRecord, SecretRecord, ServiceRecord, StepHttpFigures, TlsCertRecord, TokenRecord,
    TrustedKey, VolumeRecord, VulnDbEcosystem, VulnDbMeta, VulnRow, now_millis, now_secs,
};
pub use replicated::to_value;
pub use tables::{
    ACL_POLICIES, APPS, CLOUD_PROVIDERS, CLUSTER_SETTING, DASHBOARD_HISTORY, ENDPOINTS,
    HELM_RELEASES, HELM_REPOS, INGRESS_FIGURES, JOIN_TOKENS, LOG_SHIPPING, METRICS_LISTENER, NODES,
    PIPELINE_RUNS, PIPELINES, PLACEMENTS, POLICIES, REVISIONS, Row, SCAN_POLICY, SECRETS, SERVICES,
    SUBNETS, TABLE_NAMES, TLS_CERTS, TOKENS, TRACING_EXPORT, TRUSTED_KEYS, Table, VOLUMES, VULNDB,
    VULNDB_META, check_record, validate_tls_domain,
};

/// This node's containers (observed state, not replicated).
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
/// Allocated container addresses: IPv4 as u32 -> container id.
const IPAM: TableDefinition<u32, &str> = TableDefinition::new("ipam");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// This node's audit log: `<ms, 20 digits>-<seq>` -> AuditEntry.
const AUDIT: TableDefinition<&str, &[u8]> = TableDefinition::new("audit");
/// Audit entries kept per node; older ones go.
pub const AUDIT_KEEP: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("state database: {0}")]
    Database(String),
    #[error("corrupt record {key} in table {table}: {source}")]
    Corrupt {
        table: String,
        key: String,
        source: serde_json::Error,
    },
    #[error("no free address left in {0}")]
    SubnetFull(String),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Database(e.to_string())
            }
        }
    )*};
}
db_err!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The node's redb database.
pub struct Store {
    db: Database,
    /// Stored rows that no longer decode or pass their table's rules: skipped
    /// by every read, counted, and logged once per key.
    corrupt: replicated::CorruptRows,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let store = Self {
            db,
            corrupt: replicated::CorruptRows::default(),
        };
        // Create every table so that readers never see "table does not exist".
        let txn = store.db.begin_write()?;
        txn.open_table(replicated::REPLICATED)?;
        txn.open_table(CONTAINERS)?;
        txn.open_table(IPAM)?;
        txn.open_table(META)?;
        txn.open_table(AUDIT)?;
        txn.commit()?;
        Ok(store)
    }

    fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read()?;
        let table_handle = txn.open_table(table)?;
        match table_handle.get(key)? {
            Some(value) => decode(table.name(), key, value.value()).map(Some),
            None => Ok(None),
        }
    }

    fn list<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.db.begin_read()?;
        let table_handle = txn.open_table(table)?;
        let mut out = Vec::new();
        for entry in table_handle.iter()? {
            let (key, value) = entry?;
            out.push(decode(table.name(), key.value(), value.value())?);
        }
        Ok(out)
    }

    fn put<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Corrupt {
            table: "encode".to_string(),
            key: key.to_string(),
            source,
        })?;
        let txn = self.db.begin_write()?;
        txn.open_table(table)?.insert(key, bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    fn remove(&self, table: TableDefinition<&str, &[u8]>, key: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let existed = txn.open_table(table)?.remove(key)?.is_some();
        txn.commit()?;
        Ok(existed)
    }

    pub fn app(&self, name: &str) -> Result<Option<AppRecord>, StoreError> {
        self.value(APPS, name)
    }
    pub fn apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.values(APPS)
    }

    pub fn container(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        self.get(CONTAINERS, id)
    }
    pub fn containers(&self) -> Result<Vec<ContainerRecord>, StoreError> {
        self.list(CONTAINERS)
    }
    pub fn containers_of(&self, app: &str) -> Result<Vec<ContainerRecord>, StoreError> {
        let mut containers: Vec<_> = self
            .containers()?
            .into_iter()
            .filter(|c| c.app == app)
            .collect();
        containers.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then(a.id.cmp(&b.id)));
        Ok(containers)
    }
    pub fn put_container(&self, container: &ContainerRecord) -> Result<(), StoreError> {
        self.put(CONTAINERS, &container.id, container)
    }
    pub fn delete_container(&self, id: &str) -> Result<bool, StoreError> {
        self.remove(CONTAINERS, id)
    }

    pub fn volume(&self, name: &str) -> Result<Option<VolumeRecord>, StoreError> {
        self.value(VOLUMES, name)
    }
    pub fn volumes(&self) -> Result<Vec<VolumeRecord>, StoreError> {
        self.values(VOLUMES)
    }

    /// Appends to this node's audit log, dropping the oldest entries past
    /// [`AUDIT_KEEP`].
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = format!("{:020}-{seq:010}", entry.at_ms);
        let bytes = serde_json::to_vec(entry).map_err(|source| StoreError::Corrupt {
            table: "audit".to_string(),
            key: key.clone(),
            source,
        })?;
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(AUDIT)?;
            table.insert(key.as_str(), bytes.as_slice())?;
            let len = usize::try_from(table.len()?).unwrap_or(usize::MAX);
            if len > AUDIT_KEEP {
                let old: Vec<String> = table
                    .iter()?
                    .take(len - AUDIT_KEEP)
                    .filter_map(|e| e.ok().map(|(k, _)| k.value().to_string()))
                    .collect();
                for key in old {
                    table.remove(key.as_str())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The newest `limit` entries of this node's audit log, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        for entry in table.iter()?.rev().take(limit) {
            let (key, value) = entry?;
            match serde_json::from_slice(value.value()) {
                Ok(entry) => out.push(entry),
                Err(e) => {
                    tracing::warn!(key = key.value(), error = %e, "skipping an audit entry that does not decode")
                }
            }
        }
        Ok(out)
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        Ok(table.get(key)?.map(|v| v.value().to_string()))
    }
    pub fn put_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?.insert(key, value)?;
        txn.commit()?;
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(table: &str, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        table: table.to_string(),
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Hlc, Record};
    use crate::contract::DeployRequest;

    fn app(name: &str, wall_ms: u64) -> Record {
        let spec = DeployRequest {
            image: "busybox".into(),
            name: name.into(),
            ..Default::default()
        }
        .validate()
        .unwrap();
        Record {
            key: APPS.key(name),
            version: Hlc {
                wall_ms,
                counter: 0,
                node: 1,
            },
            value: Some(to_value(&AppRecord::new(spec)).unwrap()),
            signature: None,
        }
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = Store::open(&path).unwrap();
            assert!(store.merge_record(&app("web", 10)).unwrap());
            store.put_meta("node_id", "abc").unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.app("web").unwrap().unwrap().spec.name, "web");
        assert_eq!(store.apps().unwrap().len(), 1);
        assert_eq!(store.meta("node_id").unwrap().as_deref(), Some("abc"));
        assert!(!store.merge_record(&app("web", 5)).unwrap(), "older loses");
        let tombstone = Record {
            value: None,
            signature: None,
            ..app("web", 20)
        };
        assert!(store.merge_record(&tombstone).unwrap());
        assert!(store.app("web").unwrap().is_none());
        assert_eq!(
            store.records(APPS.name()).unwrap().len(),
            1,
            "tombstone kept"
        );
    }
}
