//! /api/deploy, /api/apps, /api/scale, /api/restart.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::containers::{LogQuery, stream_logs};
use super::{ApiError, AppState, Json};
use crate::command::{Command, Outcome};
use crate::image::normalize_reference;
use crate::model::{DeployRequest, ValidationError, validate_name};
use crate::state::{AppRecord, ContainerRecord, ContainerStatus};

/// An app as the API shows it.
#[derive(Debug, Serialize)]
pub struct AppView {
    pub name: String,
    pub image: String,
    pub replicas: u32,
    pub running: usize,
    pub status: &'static str,
    pub service: Option<String>,
    pub containers: Vec<String>,
    pub resources: Value,
    pub volumes: Vec<crate::model::VolumeMount>,
    pub env: std::collections::BTreeMap<String, String>,
    pub ports: Vec<u16>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub generation: u64,
    pub created_at: u64,
    pub updated_at: u64,
}

pub fn app_view(app: &AppRecord, containers: &[ContainerRecord]) -> AppView {
    let mine: Vec<&ContainerRecord> = containers
        .iter()
        .filter(|c| c.app == app.spec.name)
        .collect();
    let running = mine
        .iter()
        .filter(|c| c.status == ContainerStatus::Running && c.generation == app.generation)
        .count();
    let wanted = app.spec.replicas as usize;
    let status = if running == wanted {
        "running"
    } else if mine.iter().any(|c| c.status == ContainerStatus::Failed) {
        "failing"
    } else if running == 0 {
        "pending"
    } else {
        "degraded"
    };
    AppView {
        name: app.spec.name.clone(),
        image: app.spec.image.clone(),
        replicas: app.spec.replicas,
        running,
        status,
        service: app.spec.service.clone(),
        containers: mine.iter().map(|c| c.id.clone()).collect(),
        resources: json!({"cpu": app.spec.resources.cpu, "memory": app.spec.resources.memory}),
        volumes: app.spec.volumes.clone(),
        env: app.spec.env.clone(),
        ports: app.spec.ports.clone(),
        labels: app.spec.labels.clone(),
        generation: app.generation,
        created_at: app.created_at,
        updated_at: app.updated_at,
    }
}

pub async fn deploy(
    State(node): State<AppState>,
    Json(request): Json<DeployRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let mut spec = request.validate().map_err(crate::daemon::NodeError::from)?;
    spec.image = normalize_reference(&spec.image)
        .map_err(|e| ApiError::bad_request("invalid_field", format!("image: {e}")))?;
    let outcome = node.execute(Command::Deploy(Box::new(spec))).await?;
    let Outcome::Deployed {
        app,
        containers,
        created,
    } = outcome
    else {
        return Err(ApiError::internal("deploy returned an unexpected outcome"));
    };
    let verb = if created { "Deployed" } else { "Updated" };
    Ok(axum::Json(json!({
        "success": true,
        "container_id": containers.first().cloned().unwrap_or_default(),
        "containers": containers,
        "message": format!("{verb} application {app} with container(s) {}", containers.join(", ")),
    })))
}

pub async fn list(State(node): State<AppState>) -> Result<axum::Json<Vec<AppView>>, ApiError> {
    let containers = node.store.containers()?;
    let mut apps: Vec<AppView> = node
        .store
        .apps()?
        .iter()
        .map(|app| app_view(app, &containers))
        .collect();
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(axum::Json(apps))
}

fn require_name(name: &str) -> Result<(), ApiError> {
    validate_name("name", name).map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))
}

pub async fn show(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<AppView>, ApiError> {
    require_name(&name)?;
    let app = node
        .store
        .app(&name)?
        .ok_or_else(|| ApiError::not_found(format!("app {name} not found")))?;
    Ok(axum::Json(app_view(
        &app,
        &node.store.containers_of(&name)?,
    )))
}

pub async fn delete(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    require_name(&name)?;
    node.execute(Command::DeleteApp { name: name.clone() })
        .await?;
    Ok(axum::Json(
        json!({"success": true, "message": format!("Deleted application {name}")}),
    ))
}

pub async fn logs(
    State(node): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ApiError> {
    require_name(&name)?;
    if node.store.app(&name)?.is_none() {
        return Err(ApiError::not_found(format!("app {name} not found")));
    }
    let paths = node
        .store
        .containers_of(&name)?
        .into_iter()
        .map(|c| (c.id.clone(), node.log_path(&c.id)))
        .collect();
    stream_logs(paths, query).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub name: String,
    pub replicas: u32,
}

pub async fn scale(
    State(node): State<AppState>,
    Json(request): Json<ScaleRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    require_name(&request.name)?;
    if request.replicas > crate::model::MAX_REPLICAS {
        let error = ValidationError::new(
            "replicas",
            format!(
                "must be at most {}, got {}",
                crate::model::MAX_REPLICAS,
                request.replicas
            ),
        );
        return Err(ApiError::bad_request("invalid_field", error.to_string()));
    }
    node.execute(Command::Scale {
        name: request.name.clone(),
        replicas: request.replicas,
    })
    .await?;
    Ok(axum::Json(json!({
        "success": true,
        "message": format!("Scaled application {} to {} replica(s)", request.name, request.replicas),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartRequest {
    pub name: String,
}

pub async fn restart(
    State(node): State<AppState>,
    Json(request): Json<RestartRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    require_name(&request.name)?;
    let outcome = node
        .execute(Command::Restart {
            name: request.name.clone(),
        })
        .await?;
    let containers = match outcome {
        Outcome::Restarted { containers, .. } => containers,
        _ => Vec::new(),
    };
    Ok(axum::Json(json!({
        "success": true,
        "containers": containers,
        "message": format!("Restarted application {}", request.name),
    })))
}
