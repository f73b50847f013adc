//! Replicated desired state: versioned last-writer-wins records in one redb
//! table, keyed `table/key`. The cluster layer merges records from peers
//! into it; typed views below read the live (non-tombstone) values of the
//! tables in [`super::tables`].

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;

use super::tables::{Row, Table, check_record};
use super::{Store, StoreError};
use crate::cluster::{ClusterError, Hlc, Record, RecordKey, ReplicaStore, supersedes};

pub(super) const REPLICATED: TableDefinition<&str, &[u8]> = TableDefinition::new("replicated");

fn db_key(key: &RecordKey) -> String {
    format!("{}/{}", key.table, key.key)
}

fn store_error(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Store(e.to_string())
}

/// Rows that fail to decode: counted, and logged once per key.
#[derive(Debug, Default)]
pub(super) struct CorruptRows {
    count: AtomicU64,
    logged: Mutex<HashSet<String>>,
}

impl CorruptRows {
    fn note(&self, table: &str, key: &str, error: &dyn std::fmt::Display) {
        let id = format!("{table}/{key}");
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if logged.len() < 10_000 && logged.insert(id) {
            self.count.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(table, key, error = %error, "skipping a stored row that does not decode");
        }
    }
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
            match decode_record(key.value(), value.value()) {
                Ok(record) => out.push(record),
                Err(e) => self.corrupt.note("replicated", key.value(), &e),
            }
        }
        Ok(out)
    }

    /// The live rows of `table`. A row that does not decode or breaks its
    /// table's rules is skipped (and logged once): one bad row never stops a
    /// read of the others.
    pub fn values<T: Row>(&self, table: Table<T>) -> Result<Vec<T>, StoreError> {
        Ok(self
            .records(table.name())?
            .into_iter()
            .filter_map(|r| {
                let value = r.value?;
                match table.decode(&r.key.key, &value) {
                    Ok(row) => Some(row),
                    Err(e) => {
                        self.corrupt.note(table.name(), &r.key.key, &e);
                        None
                    }
                }
            })
            .collect())
    }

    /// One live row of `table`; a row that does not decode reads as absent.
    pub fn value<T: Row>(&self, table: Table<T>, key: &str) -> Result<Option<T>, StoreError> {
        let Some(value) = self.record(&table.key(key))?.and_then(|r| r.value) else {
            return Ok(None);
        };
        match table.decode(key, &value) {
            Ok(row) => Ok(Some(row)),
            Err(e) => {
                self.corrupt.note(table.name(), key, &e);
                Ok(None)
            }
        }
    }

    /// Stored rows skipped because they do not decode.
    pub fn corrupt_rows(&self) -> u64 {
        self.corrupt.count.load(Ordering::Relaxed)
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
                // A stored row that no longer decodes is replaced by anything.
                Some(value) => decode_record(&k, value.value()).ok(),
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
            match decode_record(key.value(), value.value()) {
                Ok(record) => out.push((record.key, record.version)),
                Err(e) => self.corrupt.note("replicated", key.value(), &e),
            }
        }
        Ok(out)
    }

    fn get(&self, key: &RecordKey) -> Result<Option<Record>, ClusterError> {
        self.record(key).map_err(store_error)
    }

    fn merge(&self, record: Record) -> Result<bool, ClusterError> {
        self.merge_record(&record).map_err(store_error)
    }

    fn check(&self, record: &Record) -> Result<(), String> {
        check_record(record).map_err(|e| e.to_string())
    }

    fn owner(&self, key: &RecordKey) -> Option<String> {
        super::tables::record_owner(key)
    }

    fn tombstones(&self) -> Result<Vec<(RecordKey, Hlc)>, ClusterError> {
        let txn = self.db.begin_read().map_err(store_error)?;
        let handle = txn.open_table(REPLICATED).map_err(store_error)?;
        let mut out = Vec::new();
        for entry in handle.iter().map_err(store_error)? {
            let (key, value) = entry.map_err(store_error)?;
            if let Ok(record) = decode_record(key.value(), value.value())
                && record.value.is_none()
            {
                out.push((record.key, record.version));
            }
        }
        Ok(out)
    }

    fn purge(&self, key: &RecordKey, version: Hlc) -> Result<bool, ClusterError> {
        let k = db_key(key);
        let txn = self.db.begin_write().map_err(store_error)?;
        let purged = {
            let mut handle = txn.open_table(REPLICATED).map_err(store_error)?;
            let stored = match handle.get(k.as_str()).map_err(store_error)? {
                Some(value) => decode_record(&k, value.value()).ok(),
                None => None,
            };
            let is_that_tombstone =
                stored.is_some_and(|r| r.value.is_none() && r.version == version);
            if is_that_tombstone {
                handle.remove(k.as_str()).map_err(store_error)?;
            }
            is_that_tombstone
        };
        txn.commit().map_err(store_error)?;
        Ok(purged)
    }
}
