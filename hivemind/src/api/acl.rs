//! /api/acl/tokens, /api/acl/policies, /api/audit and /api/session: who may
//! call the API, what they did, and the dashboard's sign-in.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::{CSRF_COOKIE, SESSION_COOKIE, resolve};
use super::{ApiError, AppState, Json, Path, Query};
use crate::acl::{AclPolicy, TokenText};
use crate::contract::{
    AuditEntry, AuditQuery, CreateToken, ErrorBody, Message, SessionAnswer, SessionRequest,
    TokenCreated, TokenView, WhoAmI,
};
use crate::health::parse_duration;
use crate::node::NodeError;
use crate::state::{ACL_POLICIES, AUDIT_KEEP, TOKENS, TokenRecord, now_secs};

/// Creates a token; the answer shows it once.
#[utoipa::path(
    post,
    path = "/api/acl/tokens",
    tag = "acl",
    request_body = CreateToken,
    responses(
        (status = 201, description = "created; the token is in the answer, and only there", body = TokenCreated),
        (status = 400, description = "a field is invalid", body = ErrorBody),
        (status = 409, description = "a token of that name exists", body = ErrorBody),
    )
)]
pub async fn create_token(
    State(node): State<AppState>,
    Json(request): Json<CreateToken>,
) -> Result<(StatusCode, axum::Json<TokenCreated>), ApiError> {
    if let Some(policy) = &request.policy
        && node.store().value(ACL_POLICIES, policy)?.is_none()
    {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("policy: no acl policy named {policy}"),
        ));
    }
    let expires_at = match &request.expires {
        None => None,
        Some(text) => Some(now_secs() + parse_lifetime("expires", text, 10 * 365 * 86_400)?),
    };
    if tokens(&node)?.iter().any(|t| t.name == request.name) {
        return Err(NodeError::Conflict(format!("a token named {} exists", request.name)).into());
    }
    let token = TokenText::generate();
    let record = TokenRecord {
        id: token.id.clone(),
        name: request.name.clone(),
        secret_sha256: token.secret_hash(),
        role: request.role,
        policy: request.policy.clone(),
        expires_at,
        created_at: now_secs(),
    };
    node.write(TOKENS, &record.id, Some(&record)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(TokenCreated {
            success: true,
            name: record.name,
            token: token.to_string(),
            expires_at,
            message: "keep the token now: it is not shown again".to_string(),
        }),
    ))
}

/// Token lifetimes: a duration with a unit (`90d` too), from a minute to
/// `max` seconds.
pub(super) fn parse_lifetime(field: &str, text: &str, max: u64) -> Result<u64, ApiError> {
    let secs = match text.strip_suffix('d').and_then(|d| d.parse::<u64>().ok()) {
        Some(days) => days.checked_mul(86_400),
        None => parse_duration(field, text)
            .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))
            .map(|d| Some(d.as_secs()))?,
    };
    match secs {
        Some(secs) if (60..=max).contains(&secs) => Ok(secs),
        _ => Err(ApiError::bad_request(
            "invalid_field",
            format!("{field}: {text:?} must be between 1m and {}d", max / 86_400),
        )),
    }
}

fn tokens(node: &AppState) -> Result<Vec<TokenRecord>, ApiError> {
    Ok(node.store().values(TOKENS)?)
}

/// Lists tokens (never their secrets).
#[utoipa::path(
    get,
    path = "/api/acl/tokens",
    tag = "acl",
    responses((status = 200, description = "every token, by name", body = Vec<TokenView>))
)]
pub async fn list_tokens(
    State(node): State<AppState>,
) -> Result<axum::Json<Vec<TokenView>>, ApiError> {
    let mut views: Vec<TokenView> = tokens(&node)?
        .into_iter()
        .map(|t| TokenView {
            id: t.id,
            name: t.name,
            role: t.role,
            policy: t.policy,
            expires_at: t.expires_at,
            created_at: t.created_at,
        })
        .collect();
    views.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(axum::Json(views))
}

/// Revokes a token: every node refuses it from the moment the deletion
/// reaches it.
#[utoipa::path(
    delete,
    path = "/api/acl/tokens/{name}",
    tag = "acl",
    params(("name" = String, Path, description = "token name")),
    responses(
        (status = 200, description = "revoked", body = Message),
        (status = 404, description = "no such token", body = ErrorBody),
    )
)]
pub async fn revoke_token(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Message>, ApiError> {
    let Some(record) = tokens(&node)?.into_iter().find(|t| t.name == name) else {
        return Err(ApiError::not_found(format!("token {name} not found")));
    };
    node.write::<TokenRecord>(TOKENS, &record.id, None).await?;
    Ok(axum::Json(Message::ok(format!("Revoked token {name}"))))
}

/// Creates or replaces an ACL policy.
#[utoipa::path(
    post,
    path = "/api/acl/policies",
    tag = "acl",
    request_body = AclPolicy,
    responses(
        (status = 200, description = "stored", body = Message),
        (status = 400, description = "a field is invalid", body = ErrorBody),
    )
)]
pub async fn put_policy(
    State(node): State<AppState>,
    Json(policy): Json<AclPolicy>,
) -> Result<axum::Json<Message>, ApiError> {
    node.write(ACL_POLICIES, &policy.name, Some(&policy))
        .await?;
    Ok(axum::Json(Message::ok(format!(
        "Stored acl policy {}",
        policy.name
    ))))
}

/// Lists ACL policies.
#[utoipa::path(
    get,
    path = "/api/acl/policies",
    tag = "acl",
    responses((status = 200, description = "every policy", body = Vec<AclPolicy>))
)]
pub async fn list_policies(
    State(node): State<AppState>,
) -> Result<axum::Json<Vec<AclPolicy>>, ApiError> {
    let mut policies: Vec<AclPolicy> = node.store().values(ACL_POLICIES)?;
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(axum::Json(policies))
}

/// Deletes an ACL policy; tokens that carry it are then allowed nothing.
#[utoipa::path(
    delete,
    path = "/api/acl/policies/{name}",
    tag = "acl",
    params(("name" = String, Path, description = "policy name")),
    responses(
        (status = 200, description = "deleted", body = Message),
        (status = 404, description = "no such policy", body = ErrorBody),
    )
)]
pub async fn delete_policy(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Message>, ApiError> {
    if node.store().value(ACL_POLICIES, &name)?.is_none() {
        return Err(ApiError::not_found(format!("acl policy {name} not found")));
    }
    node.write::<AclPolicy>(ACL_POLICIES, &name, None).await?;
    Ok(axum::Json(Message::ok(format!(
        "Deleted acl policy {name}"
    ))))
}

/// This node's audit log, newest first.
#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "acl",
    params(AuditQuery),
    responses((status = 200, description = "every change made through this node", body = Vec<AuditEntry>))
)]
pub async fn audit(
    State(node): State<AppState>,
    Query(query): Query<AuditQuery>,
) -> Result<axum::Json<Vec<AuditEntry>>, ApiError> {
    let limit = query.limit.unwrap_or(100).min(AUDIT_KEEP);
    Ok(axum::Json(node.store().audit(limit)?))
}

/// Signs the dashboard in: the token goes into an HttpOnly, SameSite=Strict
/// cookie; changes must then repeat the CSRF cookie in `x-csrf-token`.
#[utoipa::path(
    post,
    path = "/api/session",
    tag = "acl",
    request_body = SessionRequest,
    responses(
        (status = 200, description = "signed in", body = SessionAnswer),
        (status = 401, description = "the token is not valid", body = ErrorBody),
    )
)]
pub async fn sign_in(
    State(node): State<AppState>,
    Json(request): Json<SessionRequest>,
) -> Result<Response, ApiError> {
    let Some(principal) = resolve(&node, &request.token)? else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the token is not valid",
        ));
    };
    let csrf = TokenText::generate().secret;
    let mut headers = HeaderMap::new();
    for cookie in [
        format!(
            "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
            request.token.trim()
        ),
        format!("{CSRF_COOKIE}={csrf}; Path=/; SameSite=Strict"),
    ] {
        let value = HeaderValue::from_str(&cookie)
            .map_err(|_| ApiError::bad_request("invalid_field", "token: not a cookie value"))?;
        headers.append(header::SET_COOKIE, value);
    }
    Ok((
        headers,
        axum::Json(SessionAnswer {
            success: true,
            name: principal.name,
            csrf_token: csrf,
        }),
    )
        .into_response())
}

/// Signs the dashboard out.
#[utoipa::path(
    delete,
    path = "/api/session",
    tag = "acl",
    responses((status = 200, description = "signed out", body = Message))
)]
pub async fn sign_out() -> Response {
    let mut headers = HeaderMap::new();
    for name in [SESSION_COOKIE, CSRF_COOKIE] {
        if let Ok(value) = HeaderValue::from_str(&format!("{name}=; Path=/; Max-Age=0")) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    (headers, axum::Json(Message::ok("Signed out"))).into_response()
}

/// The caller's token: its name and what it grants.
#[utoipa::path(
    get,
    path = "/api/whoami",
    tag = "acl",
    responses((status = 200, description = "the caller", body = WhoAmI))
)]
pub async fn whoami(
    principal: super::auth::MaybePrincipal,
) -> Result<axum::Json<WhoAmI>, ApiError> {
    let Some(axum::Extension(principal)) = principal else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid token is required",
        ));
    };
    let grant = match &principal.grant {
        crate::acl::Grant::Role(role) => format!(
            "role {}",
            serde_json::to_value(role)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ),
        crate::acl::Grant::Policy(policy) => format!("policy {}", policy.name),
    };
    Ok(axum::Json(WhoAmI {
        name: principal.name,
        grant,
    }))
}
