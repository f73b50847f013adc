//! /api/cluster/join-tokens and /api/cluster/certificate: admitting nodes.

use axum::extract::State;
use axum::http::StatusCode;

use super::{ApiError, AppState, Json, Path};
use crate::acl::JoinTokenText;
use crate::contract::{
    CertificateView, CreateJoinToken, ErrorBody, JoinTokenCreated, JoinTokenView, Message,
};
use crate::state::{JOIN_TOKENS, JoinTokenRecord, now_secs};

/// Default and longest lifetime of a join token.
const DEFAULT_TTL: u64 = 24 * 3600;
const MAX_TTL: u64 = 30 * 86_400;

fn tls(node: &AppState) -> Result<&std::sync::Arc<crate::cluster::ClusterTls>, ApiError> {
    node.cluster().and_then(|c| c.tls()).ok_or_else(|| {
        crate::node::NodeError::Conflict("this node runs without cluster TLS (--mock)".to_string())
            .into()
    })
}

/// Makes a join token: `hivemind daemon --join ADDR --join-token T` admits a
/// node with it until it expires or is revoked.
#[utoipa::path(
    post,
    path = "/api/cluster/join-tokens",
    tag = "nodes",
    request_body = CreateJoinToken,
    responses(
        (status = 201, description = "created; the token is in the answer, and only there", body = JoinTokenCreated),
        (status = 400, description = "the ttl is invalid", body = ErrorBody),
    )
)]
pub async fn create(
    State(node): State<AppState>,
    Json(request): Json<CreateJoinToken>,
) -> Result<(StatusCode, axum::Json<JoinTokenCreated>), ApiError> {
    let ttl = match &request.ttl {
        None => DEFAULT_TTL,
        Some(text) => super::acl::parse_lifetime("ttl", text, MAX_TTL)?,
    };
    Ok((StatusCode::CREATED, axum::Json(issue(&node, ttl).await?)))
}

/// The cluster's id: the start of its CA's fingerprint (what cloud resources are tagged with).
pub(super) fn cluster_id(node: &AppState) -> Result<String, ApiError> {
    Ok(tls(node)?.ca_fingerprint().chars().take(16).collect())
}

/// Makes and keeps a join token living `ttl` seconds.
pub(super) async fn issue(node: &AppState, ttl: u64) -> Result<JoinTokenCreated, ApiError> {
    let ca_sha256 = tls(node)?.ca_fingerprint();
    let text = JoinTokenText::generate(&ca_sha256);
    let record = JoinTokenRecord {
        id: text.token.id.clone(),
        secret_sha256: text.token.secret_hash(),
        created_at: now_secs(),
        expires_at: now_secs() + ttl,
    };
    node.write(JOIN_TOKENS, &record.id, Some(&record)).await?;
    let gossip = node
        .cluster()
        .map(|c| c.gossip_addr().to_string())
        .unwrap_or_default();
    Ok(JoinTokenCreated {
        success: true,
        id: record.id,
        join_command: format!("hivemind daemon --join {gossip} --join-token {text}"),
        token: text.to_string(),
        expires_at: record.expires_at,
        ca_sha256,
        message: "keep the token now: it is not shown again".to_string(),
    })
}

/// Lists join tokens (never their secrets).
#[utoipa::path(
    get,
    path = "/api/cluster/join-tokens",
    tag = "nodes",
    responses((status = 200, description = "every join token", body = Vec<JoinTokenView>))
)]
pub async fn list(
    State(node): State<AppState>,
) -> Result<axum::Json<Vec<JoinTokenView>>, ApiError> {
    let now = now_secs();
    let mut views: Vec<JoinTokenView> = node
        .store()
        .values(JOIN_TOKENS)?
        .into_iter()
        .map(|t: JoinTokenRecord| JoinTokenView {
            expired: t.expires_at <= now,
            id: t.id,
            created_at: t.created_at,
            expires_at: t.expires_at,
        })
        .collect();
    views.sort_by_key(|t| t.created_at);
    Ok(axum::Json(views))
}

/// Revokes a join token: no node is admitted with it from the moment the
/// deletion reaches the member it asks.
#[utoipa::path(
    delete,
    path = "/api/cluster/join-tokens/{id}",
    tag = "nodes",
    params(("id" = String, Path, description = "token id (12 hex digits)")),
    responses(
        (status = 200, description = "revoked", body = Message),
        (status = 404, description = "no such token", body = ErrorBody),
    )
)]
pub async fn revoke(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Message>, ApiError> {
    let known = id.len() <= 64 && node.store().value(JOIN_TOKENS, &id)?.is_some();
    if !known {
        return Err(ApiError::not_found(format!("join token {id} not found")));
    }
    node.write::<JoinTokenRecord>(JOIN_TOKENS, &id, None)
        .await?;
    Ok(axum::Json(Message::ok(format!("Revoked join token {id}"))))
}

/// This node's certificate and the cluster CA's fingerprint.
#[utoipa::path(
    get,
    path = "/api/cluster/certificate",
    tag = "nodes",
    responses(
        (status = 200, description = "the node certificate", body = CertificateView),
        (status = 409, description = "no cluster TLS (--mock)", body = ErrorBody),
    )
)]
pub async fn certificate(
    State(node): State<AppState>,
) -> Result<axum::Json<CertificateView>, ApiError> {
    let tls = tls(&node)?;
    Ok(axum::Json(CertificateView {
        ca_sha256: tls.ca_fingerprint(),
        cert: tls.cert_pem(),
        not_after: tls.cert_not_after(),
    }))
}
