//! The cluster's key-encryption key (KEK): the key secrets' data keys are
//! wrapped with. It never enters replicated state. The first node of a
//! cluster makes it and keeps it in `<data dir>/secrets.key` (0600); a node
//! that joins asks a member for it over the signed replication channel and
//! gets it sealed with the cluster key, so it never crosses the wire in clear.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::ClusterError;
use super::keyring::Key;
use super::sync::{accept_body, read_limited, signed};
use super::{Cluster, Shared};

/// The internal route members hand the KEK out on.
pub const SECRETS_KEY_PATH: &str = "/api/internal/cluster/secrets-key";

/// The KEK of this member, once it has one, and where it is kept.
#[derive(Debug, Default)]
pub struct SecretsKey {
    key: RwLock<Option<Key>>,
    path: Option<PathBuf>,
}

impl SecretsKey {
    /// The key kept at `path`, if the file exists.
    pub fn load(path: PathBuf) -> Result<Arc<Self>, ClusterError> {
        let key = match std::fs::read_to_string(&path) {
            Ok(text) => Some(
                Key::from_hex(&text)
                    .map_err(|e| ClusterError::Key(format!("{}: {e}", path.display())))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(ClusterError::Key(format!("{}: {e}", path.display()))),
        };
        Ok(Arc::new(Self {
            key: RwLock::new(key),
            path: Some(path),
        }))
    }

    /// A key held in memory only (`web --mock`, tests).
    pub fn in_memory(key: Key) -> Arc<Self> {
        Arc::new(Self {
            key: RwLock::new(Some(key)),
            path: None,
        })
    }

    pub fn get(&self) -> Option<Key> {
        self.key.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Keeps `key` (on disk too, 0600), unless a key is already held: the
    /// first one wins, a member never swaps the key its secrets are under.
    pub fn set(&self, key: Key) -> Result<Key, ClusterError> {
        let mut held = self.key.write().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = &*held {
            return Ok(existing.clone());
        }
        if let Some(path) = &self.path {
            write_private(path, &(key.to_hex() + "\n"))?;
        }
        *held = Some(key.clone());
        Ok(key)
    }
}

/// Writes a file readable by its owner only, replacing the old one whole.
pub(super) fn write_private(path: &std::path::Path, text: &str) -> Result<(), ClusterError> {
    crate::pki::write_file(path, text, 0o600).map_err(|e| ClusterError::Key(e.to_string()))
}

/// The KEK as it travels: sealed with the cluster key, in hex.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedKey {
    sealed: String,
}

pub(crate) async fn secrets_key_handler(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(e) = accept_body(&shared, &headers, SECRETS_KEY_PATH, body) {
        return e.into_response();
    }
    match shared.secrets_key.get() {
        Some(key) => axum::Json(SealedKey {
            sealed: hex::encode(shared.keyring().seal(key.as_bytes())),
        })
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "success": false,
                "error": {"code": "no_key", "message": "this member has no secrets key yet"},
            })),
        )
            .into_response(),
    }
}

impl Cluster {
    /// This member's KEK: the one it holds, else one asked of the live
    /// members (the first that answers).
    pub async fn secrets_key(&self) -> Result<Key, ClusterError> {
        let shared = &self.shared;
        if let Some(key) = shared.secrets_key.get() {
            return Ok(key);
        }
        let mut errors = Vec::new();
        for peer in shared.replication_peers() {
            let fetched = async {
                let response = signed(shared, &peer, SECRETS_KEY_PATH, b"{}".to_vec())
                    .send()
                    .await
                    .map_err(|e| ClusterError::Peer {
                        peer: peer.id.clone(),
                        message: e.to_string(),
                    })?;
                let body = read_limited(&peer, response, 4 << 10).await?;
                let answer: SealedKey = serde_json::from_slice(&body)
                    .map_err(|e| ClusterError::Key(format!("{}: {e}", peer.id)))?;
                let sealed = hex::decode(&answer.sealed)
                    .map_err(|_| ClusterError::Key(format!("{}: the key is not hex", peer.id)))?;
                let bytes = shared
                    .keyring()
                    .open(&sealed)
                    .map_err(|e| ClusterError::Key(format!("{}: {e}", peer.id)))?;
                Key::from_bytes(&bytes)
            }
            .await;
            match fetched {
                Ok(key) => {
                    tracing::info!(from = %peer.id, key = %key.fingerprint(), "secrets key received");
                    return shared.secrets_key.set(key);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(ClusterError::Key(if errors.is_empty() {
            "no secrets key here and no live member to ask".to_string()
        } else {
            format!(
                "no member handed out the secrets key: {}",
                errors.join("; ")
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_key_kept_wins_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let held = SecretsKey::load(path.clone()).unwrap();
        assert!(held.get().is_none());
        let first = Key::generate();
        held.set(first.clone()).unwrap();
        assert_eq!(held.set(Key::generate()).unwrap(), first);
        let again = SecretsKey::load(path.clone()).unwrap();
        assert_eq!(again.get(), Some(first));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_key_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        std::fs::write(&path, "not hex").unwrap();
        let e = SecretsKey::load(path).unwrap_err().to_string();
        assert!(e.contains("secrets.key"), "{e}");
    }
}
