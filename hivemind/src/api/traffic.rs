//! /api/traffic: bytes, packets and drops per second of every node and every app over the last
//! 15 minutes (see `node::traffic`), gathered from every node by the one that answers.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::forwarded_token;
use super::{ApiError, AppState, Query};
use crate::node::traffic::{NodeTraffic, TRAFFIC_WINDOW, TrafficSample, apps_of_cluster};
use crate::state::{NODES, NodeInfo};

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TrafficQuery {
    /// Only samples after this second (seconds since the epoch): what a page that polls has
    /// not seen yet.
    #[serde(default)]
    pub since: u64,
    /// This node's samples only (how nodes ask each other).
    #[serde(default)]
    pub local: bool,
}

/// The answer of `GET /api/traffic`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrafficAnswer {
    /// Seconds between samples.
    pub interval_s: u64,
    /// Seconds of history kept.
    pub window_s: u64,
    /// Per node name: its containers together and per app.
    pub nodes: BTreeMap<String, NodeTraffic>,
    /// Per app, summed over the nodes that answered.
    pub apps: BTreeMap<String, Vec<TrafficSample>>,
    /// Nodes that did not answer.
    pub unavailable: Vec<String>,
}

/// Traffic rates of every node and app, one sample a second for the last 15 minutes (or those
/// after `since`).
#[utoipa::path(
    get,
    path = "/api/traffic",
    tag = "metrics",
    params(TrafficQuery),
    responses(
        (status = 200, description = "rates per second per node and app", body = TrafficAnswer),
        (status = 400, description = "the query is invalid", body = crate::contract::ErrorBody),
    )
)]
pub async fn traffic(
    State(node): State<AppState>,
    Query(query): Query<TrafficQuery>,
    headers: HeaderMap,
) -> Result<axum::Json<TrafficAnswer>, ApiError> {
    let mut nodes = BTreeMap::from([(node.name().to_string(), node.traffic_since(query.since))]);
    let mut unavailable = Vec::new();
    if !query.local {
        let asked = [
            ("local", "true".to_string()),
            ("since", query.since.to_string()),
        ];
        for (name, answer) in
            ask_other_nodes::<TrafficAnswer>(&node, &headers, "/api/traffic", &asked).await?
        {
            match answer.and_then(|a| a.nodes.into_values().next()) {
                Some(traffic) => {
                    nodes.insert(name, traffic);
                }
                None => unavailable.push(name),
            }
        }
    }
    let apps = apps_of_cluster(nodes.values());
    Ok(axum::Json(TrafficAnswer {
        interval_s: 1,
        window_s: TRAFFIC_WINDOW as u64,
        nodes,
        apps,
        unavailable,
    }))
}

/// Asks every other node's API for `path` with `query` (and the caller's token): each node's
/// name and its answer, `None` when it gave none.
pub(super) async fn ask_other_nodes<T: serde::de::DeserializeOwned>(
    node: &AppState,
    headers: &HeaderMap,
    path: &str,
    query: &(impl Serialize + ?Sized),
) -> Result<Vec<(String, Option<T>)>, ApiError> {
    let peers = node.peer_api();
    let token = forwarded_token(headers);
    let others: Vec<NodeInfo> = node
        .store()
        .values(NODES)?
        .into_iter()
        .filter(|n| n.id != node.id())
        .collect();
    let asks = others.iter().map(|other| {
        let mut request = peers.client().get(peers.url(&other.api, path)).query(query);
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        async move {
            let answer = request.send().await.ok()?.error_for_status().ok()?;
            answer.json::<T>().await.ok()
        }
    });
    let answers = futures::future::join_all(asks).await;
    Ok(others.into_iter().map(|o| o.name).zip(answers).collect())
}
