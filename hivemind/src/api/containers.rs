//! /api/containers and container logs.

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::state::ContainerRecord;

/// A container as the API shows it.
#[derive(Debug, Serialize)]
pub struct ContainerView {
    pub id: String,
    pub app: String,
    pub node: String,
    pub status: &'static str,
    pub ip: String,
    pub image: String,
    pub resources: Value,
    pub restarts: u32,
    pub exit_code: Option<u32>,
    pub message: Option<String>,
    pub created_at: u64,
    pub started_at: Option<u64>,
}

pub fn container_view(c: &ContainerRecord) -> ContainerView {
    ContainerView {
        id: c.id.clone(),
        app: c.app.clone(),
        node: c.node.clone(),
        status: c.status.as_str(),
        ip: c.ip.to_string(),
        image: c.image.clone(),
        resources: json!({"cpu": c.resources.cpu, "memory": c.resources.memory}),
        restarts: c.restarts,
        exit_code: c.exit_code,
        message: c.message.clone(),
        created_at: c.created_at,
        started_at: c.started_at,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `local`: only this node's containers (what peers ask each other).
    pub scope: Option<String>,
}

/// How long a node waits for a peer's answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(3);

/// GETs `path` from every other live member; answers that fail are skipped.
pub(super) async fn from_peers(node: &AppState, path: &str) -> Vec<Value> {
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
                        response.json::<Value>().await.ok()
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

pub async fn list(
    State(node): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<Vec<Value>>, ApiError> {
    let mut containers: Vec<Value> = node
        .store
        .containers()?
        .iter()
        .map(|c| json!(container_view(c)))
        .collect();
    match query.scope.as_deref() {
        Some("local") => {}
        None | Some("cluster") => {
            for answer in from_peers(&node, "/api/containers?scope=local").await {
                if let Value::Array(items) = answer {
                    containers.extend(items);
                }
            }
        }
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("scope: {other:?} must be local or cluster"),
            ));
        }
    }
    containers.sort_by_key(|c| {
        (
            c["app"].as_str().map(str::to_string),
            c["id"].as_str().map(str::to_string),
        )
    });
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

pub async fn show(
    State(node): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let record = match find(&node, &id) {
        Ok(record) => record,
        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND && query.scope.is_none() => {
            // Maybe on another node.
            let path = format!("/api/containers/{id}?scope=local");
            return from_peers(&node, &path)
                .await
                .into_iter()
                .find(|c| c["id"] == id.as_str())
                .map(axum::Json)
                .ok_or(e);
        }
        Err(e) => return Err(e),
    };
    let mut view = serde_json::to_value(container_view(&record))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    view["netns"] = json!(record.netns);
    view["host_interface"] = json!(record.host_ifname);
    view["log_path"] = json!(node.log_path(&record.id));
    view["generation"] = json!(record.generation);
    if let Some(health) = node.monitor.status(&record.id) {
        view["health"] = json!(health);
    }
    if let Some(counters) = node.counters().remove(&record.id) {
        view["network"] = json!(counters);
    }
    Ok(axum::Json(view))
}

pub async fn metrics(State(node): State<AppState>) -> axum::Json<Value> {
    axum::Json(json!(node.counters()))
}

/// Overlay counters of this node's data plane: what crossed the VXLAN
/// tunnels, per peer node, and drops by reason.
pub async fn overlay(State(node): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    let Some(dataplane) = &node.dataplane else {
        return Ok(axum::Json(json!(null)));
    };
    let dataplane = match dataplane.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    let counters = dataplane
        .overlay_counters()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let tunnels: Vec<Value> = dataplane
        .tunnels()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .into_iter()
        .map(|(net, prefix, underlay, vni)| json!({"subnet": format!("{net}/{prefix}"), "underlay": underlay, "vni": vni}))
        .collect();
    Ok(axum::Json(
        json!({"counters": counters, "tunnels": tunnels}),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    pub tail: Option<usize>,
    #[serde(default)]
    pub follow: bool,
}

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
        let skip = query
            .tail
            .map_or(0, |tail| lines.len().saturating_sub(tail));
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
