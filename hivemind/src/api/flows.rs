//! /api/flows: the data plane's flow events (new allowed flows, denied
//! packets) as server-sent events, the most recent ones as JSON, and the
//! service map they make, from every node.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use super::traffic::ask_other_nodes;
use super::{ApiError, AppState};
use crate::contract::RecentFlows;
use crate::node::flow_map::{AddressEdge, MapEdge, name_edges};

/// Flow events as server-sent events: `flow` (one JSON event) and `lost`
/// (`{"lost": n}` when this client fell behind).
#[utoipa::path(
    get,
    path = "/api/flows",
    tag = "metrics",
    responses((status = 200, description = "an endless event stream", content_type = "text/event-stream", body = String))
)]
pub async fn stream(
    State(node): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = BroadcastStream::new(node.subscribe_flows()).map(|item| {
        Ok(match item {
            Ok(flow) => Event::default().event("flow").data(flow.to_string()),
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                Event::default()
                    .event("lost")
                    .data(json!({"lost": n}).to_string())
            }
        })
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// The most recent flow events.
#[utoipa::path(
    get,
    path = "/api/flows/recent",
    tag = "metrics",
    responses((status = 200, description = "recent flows and how many were lost", body = RecentFlows))
)]
pub async fn recent(State(node): State<AppState>) -> axum::Json<RecentFlows> {
    let (flows, lost) = node.recent_flows();
    axum::Json(RecentFlows { flows, lost })
}

#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MapQuery {
    /// Seconds back from now (default 300, at most 900).
    pub window: Option<u64>,
    /// This node's address pairs only, unnamed (how nodes ask each other).
    #[serde(default)]
    pub local: bool,
}

/// The answer of `GET /api/flows/map`.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct FlowMap {
    /// Seconds the map covers.
    pub window_s: u64,
    /// Who talked to whom: apps, `node <name>`, `world`; with the verdict and how many flows.
    pub edges: Vec<MapEdge>,
    /// This node's address pairs (with `local`).
    pub addresses: Vec<AddressEdge>,
    /// Nodes that did not answer.
    pub unavailable: Vec<String>,
}

/// The service map: apps (and nodes, and the outside) that talked in the last `window`
/// seconds, with the verdict and the number of new flows (or denied packets), from every node.
#[utoipa::path(
    get,
    path = "/api/flows/map",
    tag = "metrics",
    params(MapQuery),
    responses(
        (status = 200, description = "the edges of the map", body = FlowMap),
        (status = 400, description = "the query is invalid", body = crate::contract::ErrorBody),
    )
)]
pub async fn map(
    State(node): State<AppState>,
    super::Query(query): super::Query<MapQuery>,
    headers: axum::http::HeaderMap,
) -> Result<axum::Json<FlowMap>, ApiError> {
    let window = query.window.unwrap_or(300).min(900);
    let since = crate::state::now_secs().saturating_sub(window);
    let mut addresses = node.flow_edges_since(since);
    if query.local {
        return Ok(axum::Json(FlowMap {
            window_s: window,
            addresses,
            ..FlowMap::default()
        }));
    }
    let mut unavailable = Vec::new();
    let path = format!("/api/flows/map?local=true&window={window}");
    for (name, answer) in ask_other_nodes::<FlowMap>(&node, &headers, &path).await? {
        match answer {
            Some(map) => addresses.extend(map.addresses),
            None => unavailable.push(name),
        }
    }
    Ok(axum::Json(FlowMap {
        window_s: window,
        edges: name_edges(addresses, &node.flow_map_names()),
        addresses: Vec::new(),
        unavailable,
    }))
}
