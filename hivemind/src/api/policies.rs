//! /api/security/network-policies: create (or replace), list, show, delete.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, AppState, Json};
use crate::command::Command;
use crate::policy::{NetworkPolicy, POLICIES};

pub async fn create(
    State(node): State<AppState>,
    Json(policy): Json<NetworkPolicy>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    policy
        .validate()
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
    let existed = node
        .store
        .value::<NetworkPolicy>(POLICIES, &policy.name)?
        .is_some();
    let name = policy.name.clone();
    node.execute(Command::PutPolicy(Box::new(policy))).await?;
    let (status, verb) = if existed {
        (StatusCode::OK, "Updated")
    } else {
        (StatusCode::CREATED, "Created")
    };
    Ok((
        status,
        axum::Json(
            json!({"success": true, "name": name, "message": format!("{verb} network policy {name}")}),
        ),
    ))
}

pub async fn list(State(node): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    let mut policies: Vec<NetworkPolicy> = node.store.values(POLICIES)?;
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(axum::Json(json!(policies)))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    crate::model::validate_name("name", name)
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))
}

pub async fn show(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    check_name(&name)?;
    let policy: NetworkPolicy = node
        .store
        .value(POLICIES, &name)?
        .ok_or_else(|| ApiError::not_found(format!("network policy {name} not found")))?;
    Ok(axum::Json(json!(policy)))
}

pub async fn delete(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    check_name(&name)?;
    node.execute(Command::DeletePolicy { name: name.clone() })
        .await?;
    Ok(axum::Json(
        json!({"success": true, "message": format!("Deleted network policy {name}")}),
    ))
}
