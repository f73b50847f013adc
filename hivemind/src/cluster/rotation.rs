//! Rotating the cluster key without a moment where two members cannot talk,
//! as memberlist's keyring does, in three steps over the signed replication
//! channel:
//!
//! 1. **install**: every member adds the new key after its primary (it opens
//!    datagrams sealed with it, still seals with the old one). The new key
//!    travels sealed with the current key, never in clear.
//! 2. **use**: once every live member has it, each makes it its primary.
//! 3. **drop**: once every live member uses it, each forgets the old keys.
//!
//! A member that misses a step (down, partitioned) keeps the old key and
//! must be given the new one by hand (`--gossip-key-file`); the rotation
//! reports which members it reached.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::ClusterError;
use super::keyring::Key;
use super::sync::{HttpError, accept_body, read_limited, signed};
use super::{Cluster, Member, Shared};

/// The internal route a rotation step travels on.
pub const KEYRING_PATH: &str = "/api/internal/cluster/keyring";

/// One step of a rotation, as a member receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyringStep {
    /// The new key, sealed with the current one, in hex.
    Install { sealed: String },
    /// Make the key of this fingerprint the primary.
    Use { fingerprint: String },
    /// Forget every key but the primary.
    Drop,
}

/// What a rotation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// The new primary key's fingerprint.
    pub fingerprint: String,
    /// Members (this one included) that went through all three steps.
    pub members: Vec<String>,
    /// Live members a step could not reach, with why.
    pub missed: Vec<String>,
}

impl Shared {
    /// Carries out one step on this member's keyring, and keeps it on disk.
    pub(crate) fn apply_step(&self, step: &KeyringStep) -> Result<(), ClusterError> {
        let mut ring = (*self.keyring()).clone();
        match step {
            KeyringStep::Install { sealed } => {
                let sealed = hex::decode(sealed)
                    .map_err(|_| ClusterError::Key("the sealed key is not hex".to_string()))?;
                let bytes = ring
                    .open(&sealed)
                    .map_err(|e| ClusterError::Key(e.to_string()))?;
                ring.install(Key::from_bytes(&bytes)?);
            }
            KeyringStep::Use { fingerprint } => {
                if !ring.make_primary(fingerprint) {
                    return Err(ClusterError::Key(format!(
                        "no key {fingerprint} here to use: install it first"
                    )));
                }
            }
            KeyringStep::Drop => ring.keep_only_primary(),
        }
        self.set_keyring(ring)
    }
}

pub(crate) async fn keyring_handler(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = accept_body(&shared, &headers, KEYRING_PATH, body).and_then(|body| {
        let step: KeyringStep = serde_json::from_slice(&body).map_err(|e| {
            HttpError::bad_request("invalid_json", format!("a keyring step: {e}"))
        })?;
        shared.apply_step(&step).map_err(HttpError::from)?;
        tracing::info!(step = ?std::mem::discriminant(&step), primary = %shared.keyring().primary().fingerprint(), "cluster key step applied");
        Ok(())
    });
    match result {
        Ok(()) => axum::Json(serde_json::json!({"success": true})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn send_step(shared: &Shared, peer: &Member, step: &KeyringStep) -> Result<(), ClusterError> {
    let body = serde_json::to_vec(step).map_err(|e| ClusterError::Key(e.to_string()))?;
    let response = signed(shared, peer, KEYRING_PATH, body)
        .send()
        .await
        .map_err(|e| ClusterError::Peer {
            peer: peer.id.clone(),
            message: e.to_string(),
        })?;
    read_limited(peer, response, 64 << 10).await.map(drop)
}

impl Cluster {
    /// Rotates the cluster key on every live member.
    pub async fn rotate_key(&self) -> Result<Rotation, ClusterError> {
        let shared = &self.shared;
        let key = Key::generate();
        let fingerprint = key.fingerprint();
        let install = KeyringStep::Install {
            sealed: hex::encode(shared.keyring().seal(key.as_bytes())),
        };
        let peers: Vec<Member> = shared.replication_peers();
        let mut reached: Vec<Member> = Vec::new();
        let mut missed = Vec::new();
        shared.apply_step(&install)?;
        for peer in peers {
            match send_step(shared, &peer, &install).await {
                Ok(()) => reached.push(peer),
                Err(e) => missed.push(format!("{}: {e}", peer.id)),
            }
        }
        // Every reached member opens both keys now: switch, then drop.
        for step in [
            KeyringStep::Use {
                fingerprint: fingerprint.clone(),
            },
            KeyringStep::Drop,
        ] {
            // Old keys go only when nobody was left behind: a member that
            // missed a step still seals with the old key.
            if step == KeyringStep::Drop && !missed.is_empty() {
                break;
            }
            // Peers first: they open both keys already.
            let mut still = Vec::new();
            for peer in reached {
                match send_step(shared, &peer, &step).await {
                    Ok(()) => still.push(peer),
                    Err(e) => missed.push(format!("{}: {e}", peer.id)),
                }
            }
            reached = still;
            shared.apply_step(&step)?;
        }
        let mut members: Vec<String> = reached.into_iter().map(|m| m.id).collect();
        members.push(shared.node_id.clone());
        members.sort();
        tracing::info!(key = %fingerprint, members = ?members, missed = ?missed, "cluster key rotated");
        Ok(Rotation {
            fingerprint,
            members,
            missed,
        })
    }

    /// The fingerprints of this member's keys, the primary first.
    pub fn key_fingerprints(&self) -> Vec<String> {
        self.shared
            .keyring()
            .keys()
            .iter()
            .map(|k| k.fingerprint())
            .collect()
    }
}
