//! Record replication over HTTP: best-effort push of new records to every
//! live peer, and a once-a-second anti-entropy digest exchange with one
//! random peer that repairs lost pushes and heals partitions.
//!
//! Wire formats (JSON):
//! - `POST /api/internal/cluster/push`: body `[Record, ..]`, answer
//!   `{"success": true, "applied": n}`.
//! - `POST /api/internal/cluster/sync`: body
//!   `{"digest": [{"key": RecordKey, "version": Hlc}, ..]}`, answer
//!   `{"records": [Record, ..], "want": [RecordKey, ..]}`: the records the
//!   peer has newer than the digest, and the keys it wants from the caller,
//!   which the caller then pushes.
//!
//! Errors answer `{"success": false, "error": {"code", "message"}}` with a
//! 4xx status; a rejected body changes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rand::seq::IndexedRandom;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

use super::error::ClusterError;
use super::hlc::{Hlc, unix_ms};
use super::record::{Record, RecordKey, validate_key, validate_version};
use super::{Applied, Member, Shared};

pub const PUSH_PATH: &str = "/api/internal/cluster/push";
pub const SYNC_PATH: &str = "/api/internal/cluster/sync";
/// Largest push body.
pub const MAX_PUSH_BODY: usize = 4 << 20;
/// Largest sync request or answer body.
pub const MAX_SYNC_BODY: usize = 16 << 20;
/// Most records in one push, or in one sync answer.
pub const MAX_RECORDS_PER_MESSAGE: usize = 1000;
/// Most digest entries in one sync request.
pub const MAX_DIGEST_ENTRIES: usize = 200_000;
/// Names the sending node on internal requests.
pub const NODE_HEADER: &str = "x-hivemind-node";
/// The cluster key's signature of an internal request: `<ms>.<hex HMAC>`.
pub const AUTH_HEADER: &str = "x-hivemind-auth";
/// How far a request's signing time may be from this node's clock.
pub const AUTH_WINDOW_MS: u64 = 60_000;
/// How often anti-entropy runs.
pub const ANTI_ENTROPY_PERIOD: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DigestEntry {
    pub key: RecordKey,
    pub version: Hlc,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncRequest {
    pub digest: Vec<DigestEntry>,
}

/// The answer to a digest. Records travel as plain JSON so that the
/// receiver decodes and checks each on its own.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SyncResponse {
    pub records: Vec<serde_json::Value>,
    pub want: Vec<RecordKey>,
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            PUSH_PATH,
            post(push_handler).layer(DefaultBodyLimit::max(MAX_PUSH_BODY)),
        )
        .route(
            SYNC_PATH,
            post(sync_handler).layer(DefaultBodyLimit::max(MAX_SYNC_BODY)),
        )
        .route(
            super::rotation::KEYRING_PATH,
            post(super::rotation::keyring_handler).layer(DefaultBodyLimit::max(64 << 10)),
        )
        .route(
            super::tls::JOIN_PATH,
            post(super::tls::join_handler).layer(DefaultBodyLimit::max(4 << 10)),
        )
        .route(
            super::kek::SECRETS_KEY_PATH,
            post(super::kek::secrets_key_handler).layer(DefaultBodyLimit::max(1 << 10)),
        )
        .with_state(shared)
}

pub(super) struct HttpError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl HttpError {
    pub(super) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }
}

impl From<ClusterError> for HttpError {
    fn from(e: ClusterError) -> Self {
        let (status, code) = match &e {
            ClusterError::InvalidRecord(_) => (StatusCode::BAD_REQUEST, "invalid_record"),
            ClusterError::Key(_) => (StatusCode::BAD_REQUEST, "invalid_key"),
            ClusterError::Left => (StatusCode::SERVICE_UNAVAILABLE, "left"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self {
            status,
            code,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = json!({
            "success": false,
            "error": {"code": self.code, "message": self.message},
        });
        (self.status, Json(body)).into_response()
    }
}

/// Shared request checks: the test-only peer block, the body, then its
/// signature with the cluster key.
pub(super) fn accept_body(
    shared: &Shared,
    headers: &HeaderMap,
    path: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, HttpError> {
    if let Some(peer) = headers.get(NODE_HEADER).and_then(|v| v.to_str().ok())
        && shared.is_blocked(peer)
    {
        return Err(HttpError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "peer_blocked",
            message: format!("peer {peer} is blocked"),
        });
    }
    let body = body.map_err(|rejection| HttpError {
        status: rejection.status(),
        code: "invalid_body",
        message: rejection.body_text().to_lowercase(),
    })?;
    let unauthenticated = |message: String| HttpError {
        status: StatusCode::UNAUTHORIZED,
        code: "unauthenticated",
        message,
    };
    if shared.tls.is_some() {
        let verified = headers
            .get(super::tls::VERIFIED_NODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                unauthenticated(
                    "a node certificate from this cluster's CA is needed (mutual TLS)".to_string(),
                )
            })?;
        if let Some(claimed) = headers.get(NODE_HEADER).and_then(|v| v.to_str().ok())
            && claimed != verified
        {
            return Err(HttpError {
                status: StatusCode::FORBIDDEN,
                code: "wrong_node",
                message: format!(
                    "the certificate is node {verified}'s, the request says {claimed}"
                ),
            });
        }
    }
    let auth = headers
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthenticated(format!("the {AUTH_HEADER} header is missing")))?;
    shared
        .keyring()
        .verify_request(auth, unix_ms(), AUTH_WINDOW_MS, path, &body)
        .map_err(unauthenticated)?;
    Ok(body)
}

fn log_rejected(shared: &Shared, headers: &HeaderMap, route: &'static str, error: &HttpError) {
    if let Some(suppressed) = shared.logs.http_in.check() {
        let peer = headers
            .get(NODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        tracing::warn!(route, peer, status = %error.status, error = %error.message, suppressed, "rejected cluster request");
    }
}

async fn push_handler(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match push_inner(&shared, &headers, body) {
        Ok(report) => Json(json!({
            "success": true,
            "applied": report.applied,
            "rejected": report.rejected,
        }))
        .into_response(),
        Err(e) => {
            log_rejected(&shared, &headers, PUSH_PATH, &e);
            e.into_response()
        }
    }
}

fn push_inner(
    shared: &Shared,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Applied, HttpError> {
    let body = accept_body(shared, headers, PUSH_PATH, body)?;
    // Each element is decoded on its own, so one bad record is refused alone.
    let records: Vec<serde_json::Value> = serde_json::from_slice(&body).map_err(|e| {
        HttpError::bad_request(
            "invalid_json",
            format!("push body must be a json array of records: {e}"),
        )
    })?;
    Ok(shared.apply_remote(sender(headers), records)?)
}

/// The sending node as it names itself (for logs).
fn sender(headers: &HeaderMap) -> &str {
    headers
        .get(NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
}

async fn sync_handler(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match sync_inner(&shared, &headers, body) {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => {
            log_rejected(&shared, &headers, SYNC_PATH, &e);
            e.into_response()
        }
    }
}

fn sync_inner(
    shared: &Shared,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<SyncResponse, HttpError> {
    let body = accept_body(shared, headers, SYNC_PATH, body)?;
    let request: SyncRequest = serde_json::from_slice(&body).map_err(|e| {
        HttpError::bad_request(
            "invalid_json",
            format!("sync body must be {{\"digest\": [..]}}: {e}"),
        )
    })?;
    if request.digest.len() > MAX_DIGEST_ENTRIES {
        return Err(HttpError::bad_request(
            "too_many_entries",
            format!(
                "digest has {} entries, the limit is {MAX_DIGEST_ENTRIES}",
                request.digest.len()
            ),
        ));
    }
    // Entries with a bad key or a version from the future are ignored: we
    // neither want them nor compare against them.
    let now = unix_ms();
    let digest: Vec<DigestEntry> = request
        .digest
        .into_iter()
        .filter(|e| validate_key(&e.key).is_ok() && validate_version(&e.version, now).is_ok())
        .collect();
    Ok(diff(shared, &digest)?)
}

/// What we have newer than `theirs`, and what they have newer than us.
fn diff(shared: &Shared, theirs: &[DigestEntry]) -> Result<SyncResponse, ClusterError> {
    let ours: HashMap<RecordKey, Hlc> = shared.store.digest()?.into_iter().collect();
    let theirs_map: HashMap<&RecordKey, Hlc> = theirs.iter().map(|e| (&e.key, e.version)).collect();
    let mut answer = SyncResponse::default();
    for (key, version) in &ours {
        if answer.records.len() >= MAX_RECORDS_PER_MESSAGE {
            break;
        }
        if theirs_map.get(key).is_none_or(|theirs| version > theirs)
            && let Some(record) = shared.store.get(key)?
        {
            answer.records.push(
                serde_json::to_value(&record).map_err(|e| ClusterError::Store(e.to_string()))?,
            );
        }
    }
    for (key, version) in theirs_map {
        if answer.want.len() >= MAX_RECORDS_PER_MESSAGE {
            break;
        }
        if ours.get(key).is_none_or(|ours| version > *ours) && !shared.was_purged(key, version) {
            answer.want.push(key.clone());
        }
    }
    Ok(answer)
}

fn peer_error(peer: &Member, message: impl std::fmt::Display) -> ClusterError {
    ClusterError::Peer {
        peer: peer.id.clone(),
        message: message.to_string(),
    }
}

/// Reads a response body, refusing more than `limit` bytes.
pub(super) async fn read_limited(
    peer: &Member,
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ClusterError> {
    let status = response.status();
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(peer_error(
            peer,
            format!("answer larger than {limit} bytes"),
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| peer_error(peer, e))? {
        if body.len() + chunk.len() > limit {
            return Err(peer_error(
                peer,
                format!("answer larger than {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        return Err(peer_error(peer, format!("status {status}: {text}")));
    }
    Ok(body)
}

/// A replication request to `peer`, signed with the cluster key.
pub(super) fn signed(
    shared: &Shared,
    peer: &Member,
    path: &str,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let auth = shared.keyring().sign_request(unix_ms(), path, &body);
    shared
        .http()
        .post(shared.peer_url(peer, path))
        .header(NODE_HEADER, shared.node_id.as_str())
        .header(AUTH_HEADER, auth)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
}

/// POSTs records to one peer.
pub(crate) async fn post_records(
    shared: &Shared,
    peer: &Member,
    records: &[Record],
) -> Result<(), ClusterError> {
    for chunk in records.chunks(MAX_RECORDS_PER_MESSAGE) {
        let body = serde_json::to_vec(chunk).map_err(|e| peer_error(peer, e))?;
        let response = signed(shared, peer, PUSH_PATH, body)
            .send()
            .await
            .map_err(|e| peer_error(peer, e))?;
        read_limited(peer, response, 64 << 10).await?;
    }
    Ok(())
}

/// Sends published records to every live peer, batching what queued up.
pub(crate) async fn push_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<Record>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_RECORDS_PER_MESSAGE {
            match rx.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
        let peers = shared.replication_peers();
        let sends = peers.iter().map(|peer| post_records(&shared, peer, &batch));
        for (peer, result) in peers.iter().zip(futures::future::join_all(sends).await) {
            if let Err(e) = result
                && let Some(suppressed) = shared.logs.push.check()
            {
                tracing::warn!(peer = %peer.id, records = batch.len(), error = %e, suppressed, "push failed; anti-entropy will repair");
            }
        }
    }
}

/// Once a period, exchanges digests with one random live peer.
pub(crate) async fn anti_entropy_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(ANTI_ENTROPY_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = shared.purge_tombstones()
            && let Some(suppressed) = shared.logs.sync.check()
        {
            tracing::warn!(error = %e, suppressed, "purging tombstones failed");
        }
        let peer = {
            let peers = shared.replication_peers();
            peers.choose(&mut rand::rng()).cloned()
        };
        let Some(peer) = peer else { continue };
        if let Err(e) = sync_with(&shared, &peer).await
            && let Some(suppressed) = shared.logs.sync.check()
        {
            tracing::warn!(peer = %peer.id, error = %e, suppressed, "anti-entropy round failed");
        }
    }
}

/// One anti-entropy round with `peer`.
pub(crate) async fn sync_with(shared: &Shared, peer: &Member) -> Result<(), ClusterError> {
    let as_of = unix_ms();
    let digest: Vec<DigestEntry> = shared
        .store
        .digest()?
        .into_iter()
        .map(|(key, version)| DigestEntry { key, version })
        .collect();
    let body = serde_json::to_vec(&SyncRequest { digest }).map_err(|e| peer_error(peer, e))?;
    let response = signed(shared, peer, SYNC_PATH, body)
        .send()
        .await
        .map_err(|e| peer_error(peer, e))?;
    let body = read_limited(peer, response, MAX_SYNC_BODY).await?;
    let answer: SyncResponse = serde_json::from_slice(&body)
        .map_err(|e| peer_error(peer, format!("bad sync answer: {e}")))?;
    if answer.records.len() > MAX_RECORDS_PER_MESSAGE || answer.want.len() > MAX_RECORDS_PER_MESSAGE
    {
        return Err(peer_error(peer, "sync answer exceeds the record limit"));
    }
    let received = answer.records.len();
    let applied = shared.apply_remote(&peer.id, answer.records)?.applied;
    let mut wanted = Vec::new();
    for key in &answer.want {
        validate_key(key)?;
        if let Some(record) = shared.store.get(key)? {
            wanted.push(record);
        }
    }
    if !wanted.is_empty() {
        post_records(shared, peer, &wanted).await?;
    }
    // The peer named every key it lacked (its list was not cut short) and
    // got each: it now holds everything of our digest.
    if answer.want.len() < MAX_RECORDS_PER_MESSAGE {
        shared.note_full_sync(&peer.id, as_of);
    }
    if received > 0 || !wanted.is_empty() {
        tracing::debug!(peer = %peer.id, received, applied, sent = wanted.len(), "anti-entropy repaired records");
    }
    Ok(())
}
