//! /api/volumes.

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, Json};
use crate::command::{Command, Outcome};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    pub name: String,
}

pub async fn create(
    State(node): State<AppState>,
    Json(request): Json<CreateVolume>,
) -> Result<axum::Json<Value>, ApiError> {
    let outcome = node
        .execute(Command::CreateVolume { name: request.name })
        .await?;
    let Outcome::VolumeCreated { name, path } = outcome else {
        return Err(ApiError::internal(
            "volume create returned an unexpected outcome",
        ));
    };
    Ok(axum::Json(json!({
        "success": true,
        "name": name,
        "path": path,
        "message": format!("Created volume {name}"),
    })))
}

pub async fn list(State(node): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    let apps = node.store.apps()?;
    let volumes: Vec<Value> = node
        .store
        .volumes()?
        .into_iter()
        .map(|v| {
            let used_by: Vec<&str> = apps
                .iter()
                .filter(|a| a.spec.volumes.iter().any(|m| m.name == v.name))
                .map(|a| a.spec.name.as_str())
                .collect();
            json!({"name": v.name, "path": v.path, "created_at": v.created_at, "used_by": used_by})
        })
        .collect();
    Ok(axum::Json(json!(volumes)))
}

pub async fn delete(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    crate::model::validate_name("name", &name)
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
    node.execute(Command::DeleteVolume { name: name.clone() })
        .await?;
    Ok(axum::Json(
        json!({"success": true, "message": format!("Deleted volume {name}")}),
    ))
}
