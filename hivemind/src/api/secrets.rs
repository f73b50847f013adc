//! /api/security/secrets: create, list, show, rotate, delete. No route ever
//! answers with a value: values go in, metadata comes out.

use axum::extract::State;
use axum::http::StatusCode;

use super::{ApiError, AppState, Json, Path};
use crate::command::{Command, Outcome};
use crate::contract::{CreateSecret, ErrorBody, Message, SecretAnswer, SecretInput, SecretView};
use crate::state::{SECRETS, SecretRecord};

fn view(node: &AppState, record: SecretRecord) -> Result<SecretView, ApiError> {
    Ok(SecretView {
        used_by: node.secret_users(&record.name)?,
        name: record.name,
        version: record.version,
        size: record.size,
        created_at: record.created_at,
        updated_at: record.updated_at,
    })
}

async fn put(node: &AppState, command: Command) -> Result<SecretAnswer, ApiError> {
    let Outcome::SecretSet {
        name,
        version,
        created,
    } = node.execute(command).await?
    else {
        return Err(ApiError::internal(
            "secret put returned an unexpected outcome",
        ));
    };
    let verb = if created { "Created" } else { "Rotated" };
    Ok(SecretAnswer {
        success: true,
        message: format!("{verb} secret {name} (version {version})"),
        name,
        version,
    })
}

/// Creates a secret (version 1), sealed before it is stored.
#[utoipa::path(
    post,
    path = "/api/security/secrets",
    tag = "security",
    request_body = CreateSecret,
    responses(
        (status = 201, description = "created", body = SecretAnswer),
        (status = 400, description = "a field is invalid (named in the message)", body = ErrorBody),
        (status = 409, description = "a secret of that name exists", body = ErrorBody),
    )
)]
pub async fn create(
    State(node): State<AppState>,
    Json(request): Json<CreateSecret>,
) -> Result<(StatusCode, axum::Json<SecretAnswer>), ApiError> {
    let command = Command::put_secret(&request.name, request.input().bytes()?, true)?;
    Ok((StatusCode::CREATED, axum::Json(put(&node, command).await?)))
}

/// Lists secrets: names, versions, sizes and the apps using them.
#[utoipa::path(
    get,
    path = "/api/security/secrets",
    tag = "security",
    responses((status = 200, description = "every secret, by name", body = Vec<SecretView>))
)]
pub async fn list(State(node): State<AppState>) -> Result<axum::Json<Vec<SecretView>>, ApiError> {
    let mut records: Vec<SecretRecord> = node.store().values(SECRETS)?;
    records.sort_by(|a, b| a.name.cmp(&b.name));
    let views = records
        .into_iter()
        .map(|r| view(&node, r))
        .collect::<Result<_, _>>()?;
    Ok(axum::Json(views))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    crate::model::validate_name("name", name)
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))
}

fn record(node: &AppState, name: &str) -> Result<SecretRecord, ApiError> {
    check_name(name)?;
    node.store()
        .value(SECRETS, name)?
        .ok_or_else(|| ApiError::not_found(format!("secret {name} not found")))
}

/// Shows one secret's metadata.
#[utoipa::path(
    get,
    path = "/api/security/secrets/{name}",
    tag = "security",
    params(("name" = String, Path, description = "secret name")),
    responses(
        (status = 200, description = "the secret's metadata", body = SecretView),
        (status = 400, description = "the name is invalid", body = ErrorBody),
        (status = 404, description = "no such secret", body = ErrorBody),
    )
)]
pub async fn show(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<SecretView>, ApiError> {
    let record = record(&node, &name)?;
    Ok(axum::Json(view(&node, record)?))
}

/// Stores a secret's next version; running containers' secret files follow
/// within seconds, without a restart.
#[utoipa::path(
    post,
    path = "/api/security/secrets/{name}/rotate",
    tag = "security",
    params(("name" = String, Path, description = "secret name")),
    request_body = SecretInput,
    responses(
        (status = 200, description = "rotated", body = SecretAnswer),
        (status = 400, description = "a field is invalid (named in the message)", body = ErrorBody),
        (status = 404, description = "no such secret", body = ErrorBody),
    )
)]
pub async fn rotate(
    State(node): State<AppState>,
    Path(name): Path<String>,
    Json(input): Json<SecretInput>,
) -> Result<axum::Json<SecretAnswer>, ApiError> {
    check_name(&name)?;
    let command = Command::put_secret(&name, input.bytes()?, false)?;
    Ok(axum::Json(put(&node, command).await?))
}

/// Deletes a secret no app uses.
#[utoipa::path(
    delete,
    path = "/api/security/secrets/{name}",
    tag = "security",
    params(("name" = String, Path, description = "secret name")),
    responses(
        (status = 200, description = "deleted", body = Message),
        (status = 400, description = "the name is invalid", body = ErrorBody),
        (status = 404, description = "no such secret", body = ErrorBody),
        (status = 409, description = "an app uses it", body = ErrorBody),
    )
)]
pub async fn delete(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Message>, ApiError> {
    check_name(&name)?;
    node.execute(Command::DeleteSecret { name: name.clone() })
        .await?;
    Ok(axum::Json(Message::ok(format!("Deleted secret {name}"))))
}
