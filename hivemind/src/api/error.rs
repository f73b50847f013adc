//! The one error type of the API: a status and a message a user can act on.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::image::ImageError;
use crate::node::NodeError;
use crate::runtime::RuntimeError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed",
            message: message.into(),
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = crate::contract::ErrorBody::new(self.code, self.message);
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            NodeError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_field"),
            NodeError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            NodeError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            NodeError::Limit(_) => (StatusCode::UNPROCESSABLE_ENTITY, "over_limit"),
            NodeError::Policy(_) => (StatusCode::UNPROCESSABLE_ENTITY, "scan_policy"),
            NodeError::Chart(_) => (StatusCode::UNPROCESSABLE_ENTITY, "chart"),
            NodeError::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream_unreachable"),
            NodeError::Cloud { refused: true, .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "cloud_refused")
            }
            NodeError::Cloud { refused: false, .. } => {
                (StatusCode::BAD_GATEWAY, "cloud_unreachable")
            }
            NodeError::Runtime(RuntimeError::Image(image)) => image_status(image),
            NodeError::Store(crate::state::StoreError::SubnetFull(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "no_addresses")
            }
            NodeError::Runtime(_) | NodeError::Network(_) | NodeError::Dataplane(_) => {
                (StatusCode::BAD_GATEWAY, "runtime")
            }
            NodeError::Schedule(_) => (StatusCode::CONFLICT, "no_capacity"),
            NodeError::Cluster(_) => (StatusCode::SERVICE_UNAVAILABLE, "cluster"),
            NodeError::Secret(crate::secrets::SecretError::NotText(_)) => {
                (StatusCode::BAD_REQUEST, "invalid_field")
            }
            NodeError::Secret(_) => (StatusCode::INTERNAL_SERVER_ERROR, "secret"),
            NodeError::Store(_) | NodeError::Io(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        if status.is_server_error() {
            tracing::warn!(error = %message, "request failed");
        }
        Self {
            status,
            code,
            message,
        }
    }
}

impl From<crate::model::ValidationError> for ApiError {
    fn from(e: crate::model::ValidationError) -> Self {
        NodeError::Invalid(e).into()
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        NodeError::Runtime(e).into()
    }
}

impl From<crate::state::StoreError> for ApiError {
    fn from(e: crate::state::StoreError) -> Self {
        NodeError::Store(e).into()
    }
}

/// A bad reference or archive is the user's mistake; an unreachable or
/// misbehaving registry is not.
fn image_status(e: &ImageError) -> (StatusCode, &'static str) {
    match e {
        ImageError::InvalidReference { .. }
        | ImageError::Archive { .. }
        | ImageError::Io { .. }
        | ImageError::NoPlatform { .. } => (StatusCode::BAD_REQUEST, "invalid_image"),
        ImageError::NotFound { .. } | ImageError::NotLocal { .. } => {
            (StatusCode::NOT_FOUND, "image_not_found")
        }
        ImageError::Layer { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "image_unreadable"),
        ImageError::Unauthorized { .. } => (StatusCode::FORBIDDEN, "registry_unauthorized"),
        _ => (StatusCode::BAD_GATEWAY, "image_pull_failed"),
    }
}
