//! /api/containers and container logs.

use std::time::Duration;

use axum::extract::State;

use axum::response::Response;
use serde::de::DeserializeOwned;

use super::auth::forwarded_token;
use super::logs::{FORWARDED_HEADER, stream_logs};
use super::{ApiError, AppState, Path, Query};
use crate::contract::{
    ContainerDetail, ContainerMetrics, ContainerView, ErrorBody, ListQuery, LogQuery, OverlayView,
    TunnelView,
};
use crate::state::ContainerRecord;

pub fn container_view(c: &ContainerRecord) -> ContainerView {
    ContainerView {
        id: c.id.clone(),
        app: c.app.clone(),
        node: c.node.clone(),
        status: c.status.as_str().to_string(),
        ip: c.ip.to_string(),
        image: c.image.clone(),
        resources: c.resources,
        restarts: c.restarts,
        exit_code: c.exit_code,
        message: c.message.clone(),
        created_at: c.created_at,
        started_at: c.started_at,
    }
}

/// How long a node waits for a peer's answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(3);

/// GETs `path` from every other live member; answers that fail or are not
/// a `T` are skipped.
pub(super) async fn from_peers<T: DeserializeOwned>(
    node: &AppState,
    path: &str,
    token: Option<&str>,
) -> Vec<T> {
    let Some(cluster) = node.cluster() else {
        return Vec::new();
    };
    let peers = node.peer_api();
    let requests = cluster
        .live_members()
        .into_iter()
        .filter(|m| !m.is_self)
        .map(|member| {
            let url = peers.url(&member.api.to_string(), path);
            let mut request = peers.client().get(url).timeout(PEER_TIMEOUT);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let request = request.send();
            async move {
                match request.await {
                    Ok(response) if response.status().is_success() => {
                        match response.json::<T>().await {
                            Ok(answer) => Some(answer),
                            Err(e) => {
                                tracing::debug!(peer = %member.id, error = %e, "peer answer does not parse");
                                None
                            }
                        }
                    }
                    Ok(response) => {
                        tracing::debug!(peer = %member.id, status = %response.status(), "peer answered with an error");
                        None
                    }
                    Err(e) => {
                        tracing::debug!(peer = %member.id, error = %e, "peer did not answer");
                        None
                    }
                }
            }
        });
    futures::future::join_all(requests)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Lists containers, of every node unless `scope=local`.
#[utoipa::path(
    get,
    path = "/api/containers",
    tag = "containers",
    params(ListQuery),
    responses(
        (status = 200, description = "containers by app and id", body = Vec<ContainerView>),
        (status = 400, description = "the query is invalid", body = ErrorBody),
    )
)]
pub async fn list(
    State(node): State<AppState>,
    Query(query): Query<ListQuery>,
    headers: axum::http::HeaderMap,
) -> Result<axum::Json<Vec<ContainerView>>, ApiError> {
    let mut containers: Vec<ContainerView> = node
        .store()
        .containers()?
        .iter()
        .map(container_view)
        .collect();
    match query.scope.as_deref() {
        Some("local") => {}
        None | Some("cluster") => {
            for answer in from_peers::<Vec<ContainerView>>(
                &node,
                "/api/containers?scope=local",
                forwarded_token(&headers).as_deref(),
            )
            .await
            {
                containers.extend(answer);
            }
        }
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("scope: {other:?} must be local or cluster"),
            ));
        }
    }
    containers.sort_by(|a, b| (&a.app, &a.id).cmp(&(&b.app, &b.id)));
    Ok(axum::Json(containers))
}

fn find(node: &AppState, id: &str) -> Result<ContainerRecord, ApiError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("container id {id:?} is not valid: use letters, digits and '-'"),
        ));
    }
    node.store()
        .container(id)?
        .ok_or_else(|| ApiError::not_found(format!("container {id} not found")))
}

/// Shows one container, asking the other nodes when it is not here.
#[utoipa::path(
    get,
    path = "/api/containers/{id}",
    tag = "containers",
    params(("id" = String, Path, description = "container id"), ListQuery),
    responses(
        (status = 200, description = "the container", body = ContainerDetail),
        (status = 400, description = "the id or the query is invalid", body = ErrorBody),
        (status = 404, description = "no such container", body = ErrorBody),
    )
)]
pub async fn show(
    State(node): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
    headers: axum::http::HeaderMap,
) -> Result<axum::Json<ContainerDetail>, ApiError> {
    match query.scope.as_deref() {
        None | Some("local") | Some("cluster") => {}
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("scope: {other:?} must be local or cluster"),
            ));
        }
    }
    let record = match find(&node, &id) {
        Ok(record) => record,
        Err(e)
            if e.status == axum::http::StatusCode::NOT_FOUND
                && query.scope.as_deref() != Some("local") =>
        {
            // Maybe on another node.
            let path = format!("/api/containers/{id}?scope=local");
            return from_peers::<ContainerDetail>(
                &node,
                &path,
                forwarded_token(&headers).as_deref(),
            )
            .await
            .into_iter()
            .find(|c| c.view.id == id)
            .map(axum::Json)
            .ok_or(e);
        }
        Err(e) => return Err(e),
    };
    let health = match node.container_health(&record.id) {
        Some(health) => {
            Some(serde_json::to_value(health).map_err(|e| ApiError::internal(e.to_string()))?)
        }
        None => None,
    };
    let network = match node.counters().remove(&record.id) {
        Some(counters) => {
            Some(serde_json::to_value(counters).map_err(|e| ApiError::internal(e.to_string()))?)
        }
        None => None,
    };
    Ok(axum::Json(ContainerDetail {
        view: container_view(&record),
        netns: record.netns.clone(),
        host_interface: record.host_ifname.clone(),
        log_path: node.log_path(&record.id).display().to_string(),
        generation: record.generation,
        health,
        network,
    }))
}

/// The data plane's counters of this node's containers.
#[utoipa::path(
    get,
    path = "/api/metrics/containers",
    tag = "metrics",
    responses((status = 200, description = "per container id", body = ContainerMetrics))
)]
pub async fn metrics(
    State(node): State<AppState>,
) -> Result<axum::Json<ContainerMetrics>, ApiError> {
    let mut metrics = ContainerMetrics::default();
    for (id, counters) in node.counters() {
        let value =
            serde_json::to_value(counters).map_err(|e| ApiError::internal(e.to_string()))?;
        metrics.0.insert(id, value);
    }
    Ok(axum::Json(metrics))
}

/// Overlay counters of this node's data plane: what crossed the VXLAN
/// tunnels, per peer node, and drops by reason; `null` without a data plane.
#[utoipa::path(
    get,
    path = "/api/metrics/overlay",
    tag = "metrics",
    responses((status = 200, description = "the overlay's counters and tunnels", body = Option<OverlayView>))
)]
pub async fn overlay(
    State(node): State<AppState>,
) -> Result<axum::Json<Option<OverlayView>>, ApiError> {
    let Some((counters, tunnels)) = node.overlay()? else {
        return Ok(axum::Json(None));
    };
    let counters = serde_json::to_value(counters).map_err(|e| ApiError::internal(e.to_string()))?;
    let tunnels: Vec<TunnelView> = tunnels
        .into_iter()
        .map(|(net, prefix, underlay, vni)| TunnelView {
            subnet: format!("{net}/{prefix}"),
            underlay: underlay.to_string(),
            vni,
        })
        .collect();
    Ok(axum::Json(Some(OverlayView { counters, tunnels })))
}

/// The logs of one container.
#[utoipa::path(
    get,
    path = "/api/containers/{id}/logs",
    tag = "containers",
    params(("id" = String, Path, description = "container id"), LogQuery),
    responses(
        (status = 200, description = "log lines; with follow, streamed until the client goes away", content_type = "text/plain", body = String),
        (status = 400, description = "the id or the query is invalid", body = ErrorBody),
        (status = 404, description = "no such container", body = ErrorBody),
    )
)]
pub async fn logs(
    State(node): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let forwarded = headers.contains_key(FORWARDED_HEADER);
    match find(&node, &id) {
        Ok(record) => {
            let path = node.log_path(&record.id);
            stream_logs(
                &node.peer_api(),
                vec![(record.id, path)],
                Vec::new(),
                query,
                None,
            )
            .await
        }
        // Not here: the node that runs it answers, once.
        Err(not_here) if !forwarded => match node.remote_container(&id)? {
            Some(remote) => {
                let token = forwarded_token(&headers);
                stream_logs(
                    &node.peer_api(),
                    Vec::new(),
                    vec![(id, remote)],
                    query,
                    token,
                )
                .await
            }
            None => Err(not_here),
        },
        Err(not_here) => Err(not_here),
    }
}
