//! /api/observability: the metrics listener every node opens besides the API
//! (`observability configure-metrics --port P --path /metrics`), and the span export of every
//! node (`observability configure-tracing --service-name S --endpoint URL`), and the log
//! shipping of every node (`observability configure-logging --endpoint URL --index I`), and
//! the Prometheus the dashboard reads history from (`observability configure-dashboard
//! --prometheus URL`).

use axum::extract::State;

use super::{ApiError, AppState, Json};
use crate::command::{Command, Outcome};
use crate::contract::{
    DashboardHistory, ErrorBody, LogShipping, Message, MetricsListener, TracingExport,
};
use crate::state::{
    CLUSTER_SETTING, DASHBOARD_HISTORY, LOG_SHIPPING, METRICS_LISTENER, TRACING_EXPORT,
};

/// Sets the metrics listener: every node serves its metrics on the port at the path (plain
/// HTTP, no token) within seconds; the API's own `/metrics` stays.
#[utoipa::path(
    post,
    path = "/api/observability/metrics",
    tag = "observability",
    request_body = MetricsListener,
    responses(
        (status = 200, description = "set; every node follows within seconds", body = MetricsListener),
        (status = 400, description = "the port or path is invalid (named in the message)", body = ErrorBody),
    )
)]
pub async fn configure(
    State(node): State<AppState>,
    Json(request): Json<MetricsListener>,
) -> Result<axum::Json<MetricsListener>, ApiError> {
    let Outcome::MetricsConfigured(Some(listener)) = node
        .execute(Command::configure_metrics(Some(request))?)
        .await?
    else {
        return Err(ApiError::internal(
            "configure returned an unexpected outcome",
        ));
    };
    Ok(axum::Json(listener))
}

/// The metrics listener as configured.
#[utoipa::path(
    get,
    path = "/api/observability/metrics",
    tag = "observability",
    responses(
        (status = 200, description = "the listener", body = MetricsListener),
        (status = 404, description = "none is configured (metrics are at the API's /metrics)", body = ErrorBody),
    )
)]
pub async fn show(State(node): State<AppState>) -> Result<axum::Json<MetricsListener>, ApiError> {
    setting(&node, METRICS_LISTENER, "no metrics listener is configured")
}

/// The cluster setting in `table`, or a 404 that says `missing`.
fn setting<T: crate::state::Row + serde::de::DeserializeOwned>(
    node: &AppState,
    table: crate::state::Table<T>,
    missing: &str,
) -> Result<axum::Json<T>, ApiError> {
    node.store()
        .value(table, CLUSTER_SETTING)?
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found(missing.to_string()))
}

/// Closes the metrics listener on every node; the API's `/metrics` stays.
#[utoipa::path(
    delete,
    path = "/api/observability/metrics",
    tag = "observability",
    responses((status = 200, description = "closed", body = Message))
)]
pub async fn remove(State(node): State<AppState>) -> Result<axum::Json<Message>, ApiError> {
    node.execute(Command::configure_metrics(None)?).await?;
    Ok(axum::Json(Message::ok("Closed the metrics listener")))
}

/// Sets the span export: every node sends its spans (API requests, the steps of a deploy) over
/// OTLP/HTTP to the endpoint within seconds, replacing the previous one.
#[utoipa::path(
    post,
    path = "/api/observability/tracing",
    tag = "observability",
    request_body = TracingExport,
    responses(
        (status = 200, description = "set; every node follows within seconds", body = TracingExport),
        (status = 400, description = "the service name or endpoint is invalid (named in the message)", body = ErrorBody),
    )
)]
pub async fn configure_tracing(
    State(node): State<AppState>,
    Json(request): Json<TracingExport>,
) -> Result<axum::Json<TracingExport>, ApiError> {
    let Outcome::TracingConfigured(Some(export)) = node
        .execute(Command::configure_tracing(Some(request))?)
        .await?
    else {
        return Err(ApiError::internal(
            "configure returned an unexpected outcome",
        ));
    };
    Ok(axum::Json(export))
}

/// The span export as configured.
#[utoipa::path(
    get,
    path = "/api/observability/tracing",
    tag = "observability",
    responses(
        (status = 200, description = "the export", body = TracingExport),
        (status = 404, description = "spans are not exported", body = ErrorBody),
    )
)]
pub async fn show_tracing(
    State(node): State<AppState>,
) -> Result<axum::Json<TracingExport>, ApiError> {
    setting(&node, TRACING_EXPORT, "spans are not exported")
}

/// Stops the span export on every node (what is batched is sent first).
#[utoipa::path(
    delete,
    path = "/api/observability/tracing",
    tag = "observability",
    responses((status = 200, description = "stopped", body = Message))
)]
pub async fn remove_tracing(State(node): State<AppState>) -> Result<axum::Json<Message>, ApiError> {
    node.execute(Command::configure_tracing(None)?).await?;
    Ok(axum::Json(Message::ok("Stopped the span export")))
}

/// Sets the log shipping: every node sends its containers' log lines (with app, container and
/// node) and its own to the endpoint's `_bulk` API, into the index, within seconds.
#[utoipa::path(
    post,
    path = "/api/observability/logging",
    tag = "observability",
    request_body = LogShipping,
    responses(
        (status = 200, description = "set; every node follows within seconds", body = LogShipping),
        (status = 400, description = "the endpoint or index is invalid (named in the message)", body = ErrorBody),
    )
)]
pub async fn configure_logging(
    State(node): State<AppState>,
    Json(request): Json<LogShipping>,
) -> Result<axum::Json<LogShipping>, ApiError> {
    let Outcome::LoggingConfigured(Some(shipping)) = node
        .execute(Command::configure_logging(Some(request))?)
        .await?
    else {
        return Err(ApiError::internal(
            "configure returned an unexpected outcome",
        ));
    };
    Ok(axum::Json(shipping))
}

/// The log shipping as configured.
#[utoipa::path(
    get,
    path = "/api/observability/logging",
    tag = "observability",
    responses(
        (status = 200, description = "the shipping", body = LogShipping),
        (status = 404, description = "logs are not shipped", body = ErrorBody),
    )
)]
pub async fn show_logging(
    State(node): State<AppState>,
) -> Result<axum::Json<LogShipping>, ApiError> {
    setting(&node, LOG_SHIPPING, "logs are not shipped")
}

/// Stops the log shipping on every node (lines still buffered are dropped).
#[utoipa::path(
    delete,
    path = "/api/observability/logging",
    tag = "observability",
    responses((status = 200, description = "stopped", body = Message))
)]
pub async fn remove_logging(State(node): State<AppState>) -> Result<axum::Json<Message>, ApiError> {
    node.execute(Command::configure_logging(None)?).await?;
    Ok(axum::Json(Message::ok("Stopped the log shipping")))
}

/// Sets the Prometheus that scrapes the nodes: the dashboard's traffic charts read history
/// beyond the daemons' 15 minutes from it (`GET /api/traffic/history`).
#[utoipa::path(
    post,
    path = "/api/observability/dashboard",
    tag = "observability",
    request_body = DashboardHistory,
    responses(
        (status = 200, description = "set", body = DashboardHistory),
        (status = 400, description = "the URL is invalid (named in the message)", body = ErrorBody),
    )
)]
pub async fn configure_dashboard(
    State(node): State<AppState>,
    Json(request): Json<DashboardHistory>,
) -> Result<axum::Json<DashboardHistory>, ApiError> {
    let Outcome::DashboardConfigured(Some(history)) = node
        .execute(Command::configure_dashboard(Some(request))?)
        .await?
    else {
        return Err(ApiError::internal(
            "configure returned an unexpected outcome",
        ));
    };
    Ok(axum::Json(history))
}

/// The Prometheus the dashboard reads history from.
#[utoipa::path(
    get,
    path = "/api/observability/dashboard",
    tag = "observability",
    responses(
        (status = 200, description = "the setting", body = DashboardHistory),
        (status = 404, description = "none is configured: 15 minutes of history only", body = ErrorBody),
    )
)]
pub async fn show_dashboard(
    State(node): State<AppState>,
) -> Result<axum::Json<DashboardHistory>, ApiError> {
    setting(&node, DASHBOARD_HISTORY, NO_PROMETHEUS)
}

/// What a dashboard without a Prometheus says.
pub(super) const NO_PROMETHEUS: &str = "no Prometheus is configured for the dashboard's history \
     (hivemind observability configure-dashboard --prometheus URL)";

/// Forgets the Prometheus: the dashboard keeps its 15 minutes.
#[utoipa::path(
    delete,
    path = "/api/observability/dashboard",
    tag = "observability",
    responses((status = 200, description = "forgotten", body = Message))
)]
pub async fn remove_dashboard(
    State(node): State<AppState>,
) -> Result<axum::Json<Message>, ApiError> {
    node.execute(Command::configure_dashboard(None)?).await?;
    Ok(axum::Json(Message::ok(
        "The dashboard keeps 15 minutes of history only",
    )))
}
