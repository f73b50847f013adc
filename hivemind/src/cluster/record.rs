//! Versioned records, the store seam they are merged into, and the checks
//! every record from a peer passes before it touches a store.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::error::ClusterError;
use super::hlc::Hlc;

/// Longest table name, in bytes.
pub const MAX_TABLE_LEN: usize = 64;
/// Longest record key, in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// How far ahead of our wall clock a remote version may be.
pub const MAX_FUTURE_MS: u64 = 60_000;

/// Identifies a record: a table name and a key within it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordKey {
    pub table: String,
    pub key: String,
}

impl RecordKey {
    pub fn new(table: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            key: key.into(),
        }
    }
}

/// One replicated value with its version; `value: None` is a tombstone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub key: RecordKey,
    pub version: Hlc,
    pub value: Option<serde_json::Value>,
    /// The author's signature, on records only their node may write
    /// ([`ReplicaStore::owner`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<RecordSignature>,
}

/// A node's signature of a record, with the node's certificate (which the
/// cluster's CA signed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSignature {
    /// The signer's certificate, PEM.
    pub cert: String,
    /// ECDSA P-256 over [`Record::signed_bytes`], hex.
    pub sig: String,
}

impl Record {
    /// What a signature covers: table, key, version and value.
    pub fn signed_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&(&self.key.table, &self.key.key, &self.version, &self.value))
            .unwrap_or_default()
    }
}

/// The seam between replication and storage. The daemon implements it over
/// redb; [`MemoryReplicaStore`] serves tests.
pub trait ReplicaStore: Send + Sync + 'static {
    /// Every stored key with its version, tombstones included.
    fn digest(&self) -> Result<Vec<(RecordKey, Hlc)>, ClusterError>;
    fn get(&self, key: &RecordKey) -> Result<Option<Record>, ClusterError>;
    /// Applies the record if its version is newer than the stored one
    /// (last-writer-wins); returns whether it was applied. Implementations
    /// should decide with [`supersedes`].
    fn merge(&self, record: Record) -> Result<bool, ClusterError>;
    /// Checks a record's value against its table's rules before a merge;
    /// the error says which rule it broke.
    fn check(&self, _record: &Record) -> Result<(), String> {
        Ok(())
    }
    /// The node that alone may write `key` (its node record, its subnet
    /// claim): such records must carry its signature.
    fn owner(&self, _key: &RecordKey) -> Option<String> {
        None
    }
    /// Every stored tombstone with its version.
    fn tombstones(&self) -> Result<Vec<(RecordKey, Hlc)>, ClusterError>;
    /// Removes the tombstone of `key` if it is still the one at `version`;
    /// returns whether it did.
    fn purge(&self, key: &RecordKey, version: Hlc) -> Result<bool, ClusterError>;
}

/// Last-writer-wins: whether `incoming` replaces `existing`. A higher version
/// wins; equal versions with different values (only possible if two node ids
/// hash to the same node number) fall back to comparing the serialized
/// values, so every replica still picks the same winner.
pub fn supersedes(incoming: &Record, existing: Option<&Record>) -> bool {
    let Some(existing) = existing else {
        return true;
    };
    match incoming.version.cmp(&existing.version) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => value_rank(&incoming.value) > value_rank(&existing.value),
    }
}

fn value_rank(value: &Option<serde_json::Value>) -> String {
    value.as_ref().map(|v| v.to_string()).unwrap_or_default()
}

/// Checks a key coming from outside: sane table name and key.
pub fn validate_key(key: &RecordKey) -> Result<(), ClusterError> {
    let table = &key.table;
    if table.is_empty() || table.len() > MAX_TABLE_LEN {
        return Err(ClusterError::InvalidRecord(format!(
            "table name must be 1-{MAX_TABLE_LEN} bytes, got {}",
            table.len()
        )));
    }
    if !table
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
    {
        return Err(ClusterError::InvalidRecord(format!(
            "table name {table:?} must use only [a-z0-9_.-]"
        )));
    }
    if key.key.is_empty() || key.key.len() > MAX_KEY_LEN {
        return Err(ClusterError::InvalidRecord(format!(
            "key in table {table} must be 1-{MAX_KEY_LEN} bytes, got {}",
            key.key.len()
        )));
    }
    if key.key.chars().any(char::is_control) {
        return Err(ClusterError::InvalidRecord(format!(
            "key in table {table} contains control characters"
        )));
    }
    Ok(())
}

/// Checks a version coming from outside against our wall clock.
pub fn validate_version(version: &Hlc, now_ms: u64) -> Result<(), ClusterError> {
    if version.wall_ms > now_ms.saturating_add(MAX_FUTURE_MS) {
        return Err(ClusterError::InvalidRecord(format!(
            "version {} ms is more than {MAX_FUTURE_MS} ms ahead of this node's clock ({now_ms} ms)",
            version.wall_ms
        )));
    }
    Ok(())
}

/// Checks a whole record coming from outside.
pub fn validate_record(record: &Record, now_ms: u64) -> Result<(), ClusterError> {
    validate_key(&record.key)?;
    validate_version(&record.version, now_ms)
}

/// An in-memory [`ReplicaStore`] for tests and `--mock` mode.
#[derive(Debug, Default)]
pub struct MemoryReplicaStore {
    records: Mutex<BTreeMap<RecordKey, Record>>,
}

impl MemoryReplicaStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record, tombstones included, sorted by key.
    pub fn records(&self) -> Vec<Record> {
        self.lock().values().cloned().collect()
    }

    /// The value of a live (non-tombstone) record.
    pub fn value(&self, key: &RecordKey) -> Option<serde_json::Value> {
        self.lock().get(key).and_then(|r| r.value.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<RecordKey, Record>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ReplicaStore for MemoryReplicaStore {
    fn digest(&self) -> Result<Vec<(RecordKey, Hlc)>, ClusterError> {
        Ok(self
            .lock()
            .iter()
            .map(|(k, r)| (k.clone(), r.version))
            .collect())
    }

    fn get(&self, key: &RecordKey) -> Result<Option<Record>, ClusterError> {
        Ok(self.lock().get(key).cloned())
    }

    fn merge(&self, record: Record) -> Result<bool, ClusterError> {
        let mut records = self.lock();
        if supersedes(&record, records.get(&record.key)) {
            records.insert(record.key.clone(), record);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn tombstones(&self) -> Result<Vec<(RecordKey, Hlc)>, ClusterError> {
        Ok(self
            .lock()
            .values()
            .filter(|r| r.value.is_none())
            .map(|r| (r.key.clone(), r.version))
            .collect())
    }

    fn purge(&self, key: &RecordKey, version: Hlc) -> Result<bool, ClusterError> {
        let mut records = self.lock();
        let is_that_tombstone = records
            .get(key)
            .is_some_and(|r| r.value.is_none() && r.version == version);
        if is_that_tombstone {
            records.remove(key);
        }
        Ok(is_that_tombstone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(key: &str, wall_ms: u64, node: u32, value: Option<serde_json::Value>) -> Record {
        Record {
            key: RecordKey::new("apps", key),
            version: Hlc {
                wall_ms,
                counter: 0,
                node,
            },
            value,
            signature: None,
        }
    }

    #[test]
    fn merge_is_last_writer_wins() {
        let store = MemoryReplicaStore::new();
        assert!(store.merge(rec("a", 10, 1, Some(json!(1)))).unwrap());
        assert!(!store.merge(rec("a", 5, 1, Some(json!(0)))).unwrap());
        assert!(store.merge(rec("a", 10, 2, Some(json!(2)))).unwrap());
        assert!(!store.merge(rec("a", 10, 2, Some(json!(2)))).unwrap());
        assert_eq!(store.value(&RecordKey::new("apps", "a")), Some(json!(2)));
        // A tombstone with a newer version deletes.
        assert!(store.merge(rec("a", 11, 1, None)).unwrap());
        assert_eq!(store.value(&RecordKey::new("apps", "a")), None);
        assert_eq!(store.digest().unwrap().len(), 1);
    }

    #[test]
    fn equal_versions_pick_the_same_winner_in_any_order() {
        let x = rec("a", 10, 1, Some(json!("x")));
        let y = rec("a", 10, 1, Some(json!("y")));
        let s1 = MemoryReplicaStore::new();
        s1.merge(x.clone()).unwrap();
        s1.merge(y.clone()).unwrap();
        let s2 = MemoryReplicaStore::new();
        s2.merge(y).unwrap();
        s2.merge(x).unwrap();
        assert_eq!(s1.records(), s2.records());
    }

    #[test]
    fn validation_rejects_bad_keys_and_future_versions() {
        let now = 1_000_000;
        assert!(validate_record(&rec("web", now, 1, None), now).is_ok());
        assert!(validate_record(&rec("", now, 1, None), now).is_err());
        assert!(validate_record(&rec("a\nb", now, 1, None), now).is_err());
        assert!(validate_record(&rec(&"k".repeat(MAX_KEY_LEN + 1), now, 1, None), now).is_err());
        let mut bad_table = rec("web", now, 1, None);
        bad_table.key.table = "Apps!".into();
        assert!(validate_record(&bad_table, now).is_err());
        let future = rec("web", now + MAX_FUTURE_MS + 1, 1, None);
        let err = validate_record(&future, now).unwrap_err().to_string();
        assert!(err.contains("ahead"), "{err}");
    }
}
