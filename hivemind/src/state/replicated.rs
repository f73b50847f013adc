//! Replicated desired state: versioned last-writer-wins records in one redb
//! table, keyed `table/key`. The cluster layer merges records from peers
//! into it; typed views below read the live (non-tombstone) values.
//!
//! Tables: `apps` (AppRecord), `volumes` (VolumeRecord), `placements`
//! (Placement), `nodes` (NodeInfo), `subnets` (node id).

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Store, StoreError};
use crate::cluster::{ClusterError, Hlc, Record, RecordKey, ReplicaStore, supersedes};

pub(super) const REPLICATED: TableDefinition<&str, &[u8]> = TableDefinition::new("replicated");

pub const APPS: &str = "apps";
pub const VOLUMES: &str = "volumes";
pub const PLACEMENTS: &str = "placements";
pub const NODES: &str = "nodes";
pub const SUBNETS: &str = "subnets";

fn db_key(key: &RecordKey) -> String {
    format!("{}/{}", key.table, key.key)
}

fn store_error(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Store(e.to_string())
}

impl Store {
    /// Every record of `table`, tombstones included.
    pub fn records(&self, table: &str) -> Result<Vec<Record>, StoreError> {
        let txn = self.db.begin_read()?;
        let handle = txn.open_table(REPLICATED)?;
        let prefix = format!("{table}/");
        let mut out = Vec::new();
        for entry in handle.range(prefix.as_str()..)? {
            let (key, value) = entry?;
            if !key.value().starts_with(&prefix) {
                break;
            }
            out.push(decode_record(key.value(), value.value())?);
        }
        Ok(out)
    }

    /// The live values of `table`, decoded.
    pub fn values<T: DeserializeOwned>(&self, table: &str) -> Result<Vec<T>, StoreError> {
        self.records(table)?
            .into_iter()
            .filter_map(|r| r.value.map(|v| (r.key, v)))
            .map(|(key, value)| {
                serde_json::from_value(value).map_err(|source| StoreError::Corrupt {
                    table: table.to_string(),
                    key: key.key,
                    source,
                })
            })
            .collect()
    }

    /// One live value of `table`.
    pub fn value<T: DeserializeOwned>(
        &self,
        table: &str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let Some(record) = self.record(&RecordKey::new(table, key))? else {
            return Ok(None);
        };
        match record.value {
            None => Ok(None),
            Some(value) => {
                serde_json::from_value(value)
                    .map(Some)
                    .map_err(|source| StoreError::Corrupt {
                        table: table.to_string(),
                        key: key.to_string(),
                        source,
                    })
            }
        }
    }

    pub fn record(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        let txn = self.db.begin_read()?;
        let handle = txn.open_table(REPLICATED)?;
        let k = db_key(key);
        match handle.get(k.as_str())? {
            Some(value) => decode_record(&k, value.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Stores the record when it supersedes the stored one.
    pub fn merge_record(&self, record: &Record) -> Result<bool, StoreError> {
        let k = db_key(&record.key);
        let bytes = serde_json::to_vec(record).map_err(|source| StoreError::Corrupt {
            table: "encode".to_string(),
            key: k.clone(),
            source,
        })?;
        let txn = self.db.begin_write()?;
        let applied = {
            let mut handle = txn.open_table(REPLICATED)?;
            let existing = match handle.get(k.as_str())? {
                Some(value) => Some(decode_record(&k, value.value())?),
                None => None,
            };
            let applied = supersedes(record, existing.as_ref());
            if applied {
                handle.insert(k.as_str(), bytes.as_slice())?;
            }
            applied
        };
        txn.commit()?;
        Ok(applied)
    }
}

/// Encodes a typed value for a record.
pub fn to_value<T: Serialize>(value: &T) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(value).map_err(|source| StoreError::Corrupt {
        table: "encode".to_string(),
        key: String::new(),
        source,
    })
}

fn decode_record(key: &str, bytes: &[u8]) -> Result<Record, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        table: "replicated".to_string(),
        key: key.to_string(),
        source,
    })
}

impl ReplicaStore for Store {
    fn digest(&self) -> Result<Vec<(RecordKey, Hlc)>, ClusterError> {
        let txn = self.db.begin_read().map_err(store_error)?;
        let handle = txn.open_table(REPLICATED).map_err(store_error)?;
        let mut out = Vec::new();
        for entry in handle.iter().map_err(store_error)? {
            let (key, value) = entry.map_err(store_error)?;
            let record = decode_record(key.value(), value.value()).map_err(store_error)?;
            out.push((record.key, record.version));
        }
        Ok(out)
    }

    fn get(&self, key: &RecordKey) -> Result<Option<Record>, ClusterError> {
        self.record(key).map_err(store_error)
    }

    fn merge(&self, record: Record) -> Result<bool, ClusterError> {
        self.merge_record(&record).map_err(store_error)
    }
}
