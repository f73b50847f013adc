//! The REST API: one module per resource. Handlers parse requests into a
//! [`crate::command::Command`] or read state; every error is an [`ApiError`].

mod apps;
mod containers;
mod error;
mod flows;
mod images;
mod nodes;
mod policies;
mod services;
mod volumes;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::routing::{delete, get, post};
use serde::de::DeserializeOwned;

pub use error::ApiError;

use crate::daemon::Node;

pub type AppState = Arc<Node>;

/// Largest JSON body accepted (image archives have their own limit).
const JSON_LIMIT: usize = 1 << 20;

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/api/deploy", post(apps::deploy))
        .route("/api/apps", get(apps::list))
        .route("/api/apps/{name}", get(apps::show).delete(apps::delete))
        .route("/api/apps/{name}/logs", get(apps::logs))
        .route("/api/scale", post(apps::scale))
        .route("/api/restart", post(apps::restart))
        .route("/api/containers", get(containers::list))
        .route("/api/containers/{id}", get(containers::show))
        .route("/api/containers/{id}/logs", get(containers::logs))
        .route("/api/flows", get(flows::stream))
        .route("/api/flows/recent", get(flows::recent))
        .route("/api/metrics/containers", get(containers::metrics))
        .route("/api/metrics/overlay", get(containers::overlay))
        .route(
            "/api/security/network-policies",
            post(policies::create).get(policies::list),
        )
        .route(
            "/api/security/network-policies/{name}",
            get(policies::show).delete(policies::delete),
        )
        .route("/api/services", get(services::list))
        .route("/api/services/{name}/endpoints", get(services::endpoints))
        .route("/api/volumes", get(volumes::list))
        .route("/api/volumes/create", post(volumes::create))
        .route("/api/volumes/{name}", delete(volumes::delete))
        .route("/api/nodes", get(nodes::list))
        .route("/api/nodes/join", post(nodes::join))
        .route("/api/health", get(nodes::health))
        .route("/api/images/pull", post(images::pull))
        .route(
            "/api/images/import",
            post(images::import).layer(DefaultBodyLimit::max(images::ARCHIVE_LIMIT)),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .with_state(node)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {} {}",
        request.method(),
        request.uri().path()
    ))
}

async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("dashboard.html"))
}

/// A JSON body whose errors are answered as [`ApiError`]s naming the field.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(ApiError::bad_request(
                "invalid_body",
                rejection.body_text().replace(
                    "Failed to deserialize the JSON body into the target type: ",
                    "invalid JSON body: ",
                ),
            )),
        }
    }
}
