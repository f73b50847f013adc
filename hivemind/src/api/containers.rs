//! /api/containers and container logs.

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

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
pub(super) async fn from_peers<T: DeserializeOwned>(node: &AppState, path: &str) -> Vec<T> {
    let Some(cluster) = &node.cluster else {
        return Vec::new();
    };
    let client = reqwest::Client::new();
    let requests = cluster
        .live_members()
        .into_iter()
        .filter(|m| !m.is_self)
        .map(|member| {
            let url = format!("http://{}{path}", member.api);
            let request = client.get(url).timeout(PEER_TIMEOUT).send();
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
) -> Result<axum::Json<Vec<ContainerView>>, ApiError> {
    let mut containers: Vec<ContainerView> = node
        .store
        .containers()?
        .iter()
        .map(container_view)
        .collect();
    match query.scope.as_deref() {
        Some("local") => {}
        None | Some("cluster") => {
            for answer in
                from_peers::<Vec<ContainerView>>(&node, "/api/containers?scope=local").await
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
    node.store
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
            return from_peers::<ContainerDetail>(&node, &path)
                .await
                .into_iter()
                .find(|c| c.view.id == id)
                .map(axum::Json)
                .ok_or(e);
        }
        Err(e) => return Err(e),
    };
    let health = match node.monitor.status(&record.id) {
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
    let Some(dataplane) = &node.dataplane else {
        return Ok(axum::Json(None));
    };
    let dataplane = match dataplane.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    let counters = dataplane
        .overlay_counters()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let counters = serde_json::to_value(counters).map_err(|e| ApiError::internal(e.to_string()))?;
    let tunnels: Vec<TunnelView> = dataplane
        .tunnels()
        .map_err(|e| ApiError::internal(e.to_string()))?
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
) -> Result<Response, ApiError> {
    let record = find(&node, &id)?;
    stream_logs(vec![(record.id.clone(), node.log_path(&record.id))], query).await
}

/// The logs of one or more containers as text; lines are prefixed with the
/// container id when there are several. With `follow`, new lines stream
/// until the client goes away.
pub async fn stream_logs(
    sources: Vec<(String, PathBuf)>,
    query: LogQuery,
) -> Result<Response, ApiError> {
    let prefix = sources.len() > 1;
    let mut initial = String::new();
    let mut offsets = Vec::new();
    for (id, path) in &sources {
        let bytes = tokio::fs::read(path).await.unwrap_or_default();
        offsets.push(bytes.len() as u64);
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        let skip = query.tail.map_or(0, |tail| {
            lines
                .len()
                .saturating_sub(usize::try_from(tail).unwrap_or(usize::MAX))
        });
        for line in &lines[skip..] {
            push_line(&mut initial, prefix, id, line);
        }
    }
    if !query.follow {
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            initial,
        )
            .into_response());
    }
    let state = (Some(initial), sources, offsets, prefix);
    let stream =
        futures::stream::unfold(state, |(first, sources, mut offsets, prefix)| async move {
            if let Some(first) = first {
                return Some((
                    Ok::<_, std::io::Error>(first),
                    (None, sources, offsets, prefix),
                ));
            }
            loop {
                let mut chunk = String::new();
                for (index, (id, path)) in sources.iter().enumerate() {
                    let Ok(bytes) = tokio::fs::read(path).await else {
                        continue;
                    };
                    let offset = offsets[index] as usize;
                    if bytes.len() > offset {
                        // Only whole lines; a partial last line waits.
                        let new = &bytes[offset..];
                        if let Some(end) = new.iter().rposition(|b| *b == b'\n') {
                            for line in String::from_utf8_lossy(&new[..=end]).lines() {
                                push_line(&mut chunk, prefix, id, line);
                            }
                            offsets[index] += end as u64 + 1;
                        }
                    } else if bytes.len() < offset {
                        offsets[index] = 0;
                    }
                }
                if !chunk.is_empty() {
                    return Some((Ok(chunk), (None, sources, offsets, prefix)));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn push_line(out: &mut String, prefix: bool, id: &str, line: &str) {
    if prefix {
        out.push('[');
        out.push_str(id);
        out.push_str("] ");
    }
    out.push_str(line);
    out.push('\n');
}
