//! /api/security/network-policies: create (or replace), list, show, delete.

use axum::extract::State;
use axum::http::StatusCode;

use super::{ApiError, AppState, Json, Path};
use crate::command::{Command, Outcome};
use crate::contract::{ErrorBody, Message, NetworkPolicy, PolicyAnswer};
use crate::state::POLICIES;

/// Creates a network policy, or replaces the one of the same name.
#[utoipa::path(
    post,
    path = "/api/security/network-policies",
    tag = "security",
    request_body = NetworkPolicy,
    responses(
        (status = 201, description = "created", body = PolicyAnswer),
        (status = 200, description = "replaced", body = PolicyAnswer),
        (status = 400, description = "a field is invalid (named in the message)", body = ErrorBody),
    )
)]
pub async fn create(
    State(node): State<AppState>,
    Json(policy): Json<NetworkPolicy>,
) -> Result<(StatusCode, axum::Json<PolicyAnswer>), ApiError> {
    let Outcome::PolicySet { name, created } = node.execute(Command::put_policy(policy)?).await?
    else {
        return Err(ApiError::internal(
            "policy put returned an unexpected outcome",
        ));
    };
    let (status, verb) = if created {
        (StatusCode::CREATED, "Created")
    } else {
        (StatusCode::OK, "Updated")
    };
    Ok((
        status,
        axum::Json(PolicyAnswer {
            success: true,
            message: format!("{verb} network policy {name}"),
            name,
        }),
    ))
}

/// Lists network policies, by name.
#[utoipa::path(
    get,
    path = "/api/security/network-policies",
    tag = "security",
    responses((status = 200, description = "every policy", body = Vec<NetworkPolicy>))
)]
pub async fn list(
    State(node): State<AppState>,
) -> Result<axum::Json<Vec<NetworkPolicy>>, ApiError> {
    let mut policies: Vec<NetworkPolicy> = node.store().values(POLICIES)?;
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(axum::Json(policies))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    crate::model::validate_name("name", name)
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))
}

/// Shows one network policy.
#[utoipa::path(
    get,
    path = "/api/security/network-policies/{name}",
    tag = "security",
    params(("name" = String, Path, description = "policy name")),
    responses(
        (status = 200, description = "the policy", body = NetworkPolicy),
        (status = 400, description = "the name is invalid", body = ErrorBody),
        (status = 404, description = "no such policy", body = ErrorBody),
    )
)]
pub async fn show(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<NetworkPolicy>, ApiError> {
    check_name(&name)?;
    let policy: NetworkPolicy = node
        .store()
        .value(POLICIES, &name)?
        .ok_or_else(|| ApiError::not_found(format!("network policy {name} not found")))?;
    Ok(axum::Json(policy))
}

/// Deletes a network policy.
#[utoipa::path(
    delete,
    path = "/api/security/network-policies/{name}",
    tag = "security",
    params(("name" = String, Path, description = "policy name")),
    responses(
        (status = 200, description = "deleted", body = Message),
        (status = 400, description = "the name is invalid", body = ErrorBody),
        (status = 404, description = "no such policy", body = ErrorBody),
    )
)]
pub async fn delete(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Message>, ApiError> {
    check_name(&name)?;
    node.execute(Command::DeletePolicy { name: name.clone() })
        .await?;
    Ok(axum::Json(Message::ok(format!(
        "Deleted network policy {name}"
    ))))
}
