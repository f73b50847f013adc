//! /api/volumes.

use axum::extract::State;

use super::{ApiError, AppState, Json, Path};
use crate::command::{Command, Outcome};
use crate::contract::{CreateVolume, ErrorBody, Message, VolumeCreated, VolumeView};

/// Creates a named volume.
#[utoipa::path(
    post,
    path = "/api/volumes/create",
    tag = "volumes",
    request_body = CreateVolume,
    responses(
        (status = 200, description = "created", body = VolumeCreated),
        (status = 400, description = "the name is invalid", body = ErrorBody),
        (status = 409, description = "it exists", body = ErrorBody),
    )
)]
pub async fn create(
    State(node): State<AppState>,
    Json(request): Json<CreateVolume>,
) -> Result<axum::Json<VolumeCreated>, ApiError> {
    let outcome = node.execute(Command::create_volume(&request.name)?).await?;
    let Outcome::VolumeCreated { name, path } = outcome else {
        return Err(ApiError::internal(
            "volume create returned an unexpected outcome",
        ));
    };
    Ok(axum::Json(VolumeCreated {
        success: true,
        message: format!("Created volume {name}"),
        name,
        path,
    }))
}

/// Lists volumes and the apps that mount them.
#[utoipa::path(
    get,
    path = "/api/volumes",
    tag = "volumes",
    responses((status = 200, description = "every volume", body = Vec<VolumeView>))
)]
pub async fn list(State(node): State<AppState>) -> Result<axum::Json<Vec<VolumeView>>, ApiError> {
    let apps = node.store().apps()?;
    let volumes = node
        .store()
        .volumes()?
        .into_iter()
        .map(|v| {
            let used_by = apps
                .iter()
                .filter(|a| a.spec.volumes.iter().any(|m| m.name == v.name))
                .map(|a| a.spec.name.clone())
                .collect();
            VolumeView {
                name: v.name,
                path: v.path,
                created_at: v.created_at,
                used_by,
            }
        })
        .collect();
    Ok(axum::Json(volumes))
}

/// Deletes a volume no app uses.
#[utoipa::path(
    delete,
    path = "/api/volumes/{name}",
    tag = "volumes",
    params(("name" = String, Path, description = "volume name")),
    responses(
        (status = 200, description = "deleted", body = Message),
        (status = 400, description = "the name is invalid", body = ErrorBody),
        (status = 404, description = "no such volume", body = ErrorBody),
        (status = 409, description = "an app uses it", body = ErrorBody),
    )
)]
pub async fn delete(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Message>, ApiError> {
    crate::model::validate_name("name", &name)
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
    node.execute(Command::DeleteVolume { name: name.clone() })
        .await?;
    Ok(axum::Json(Message::ok(format!("Deleted volume {name}"))))
}
