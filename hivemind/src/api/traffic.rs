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

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// How far back: `1h` (default), `6h`, `24h` or `7d`.
    pub range: Option<String>,
}

/// The answer of `GET /api/traffic/history`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrafficHistoryAnswer {
    /// Seconds between samples.
    pub interval_s: u64,
    /// Seconds of history asked for.
    pub window_s: u64,
    /// Per node: its containers together.
    pub nodes: BTreeMap<String, Vec<TrafficSample>>,
    /// Per app, every node together.
    pub apps: BTreeMap<String, Vec<TrafficSample>>,
    /// The Prometheus the samples come from.
    pub source: String,
}

/// Points per series of a history answer.
const HISTORY_POINTS: u64 = 240;

/// Traffic rates of every node and app over the last hour to week, from the Prometheus that
/// scrapes the nodes (`observability configure-dashboard --prometheus URL`): the same samples
/// as `/api/traffic`, `HISTORY_POINTS` per series.
#[utoipa::path(
    get,
    path = "/api/traffic/history",
    tag = "metrics",
    params(HistoryQuery),
    responses(
        (status = 200, description = "rates per node and app", body = TrafficHistoryAnswer),
        (status = 400, description = "the query is invalid", body = crate::contract::ErrorBody),
        (status = 404, description = "no Prometheus is configured", body = crate::contract::ErrorBody),
        (status = 502, description = "the Prometheus did not answer (named in the message)", body = crate::contract::ErrorBody),
    )
)]
pub async fn history(
    State(node): State<AppState>,
    Query(query): Query<HistoryQuery>,
) -> Result<axum::Json<TrafficHistoryAnswer>, ApiError> {
    let window: u64 = match query.range.as_deref().unwrap_or("1h") {
        "1h" => 3600,
        "6h" => 6 * 3600,
        "24h" => 24 * 3600,
        "7d" => 7 * 24 * 3600,
        other => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("query field `range`: {other:?} is not 1h, 6h, 24h or 7d"),
            ));
        }
    };
    let Some(setting) = node.store().value(
        crate::state::DASHBOARD_HISTORY,
        crate::state::CLUSTER_SETTING,
    )?
    else {
        return Err(ApiError::not_found(super::observability::NO_PROMETHEUS));
    };
    let step = window / HISTORY_POINTS;
    let end = crate::state::now_secs();
    let prometheus = Prometheus {
        base: setting.prometheus.trim_end_matches('/').to_string(),
        start: end - window,
        end,
        step,
        // Two samples of a 1 s scrape at least, and the step itself.
        rate: step.max(60),
    };
    let mut answer = TrafficHistoryAnswer {
        interval_s: step,
        window_s: window,
        source: setting.prometheus.clone(),
        ..TrafficHistoryAnswer::default()
    };
    for (by, into) in [("node", &mut answer.nodes), ("app", &mut answer.apps)] {
        let mut samples: BTreeMap<String, BTreeMap<u64, TrafficSample>> = BTreeMap::new();
        for (field, series) in prometheus.fields(by) {
            for (name, points) in prometheus.query(&series).await? {
                for (t, value) in points {
                    let sample = samples
                        .entry(name.clone())
                        .or_default()
                        .entry(t)
                        .or_default();
                    sample.t = t;
                    *field(sample) = value;
                }
            }
        }
        *into = samples
            .into_iter()
            .map(|(name, points)| (name, points.into_values().collect()))
            .collect();
    }
    Ok(axum::Json(answer))
}

/// One range of a Prometheus's `query_range`.
struct Prometheus {
    base: String,
    start: u64,
    end: u64,
    step: u64,
    /// Seconds of the `rate()` window.
    rate: u64,
}

/// Where a history query's value goes in a sample.
type Field = fn(&mut TrafficSample) -> &mut f64;

impl Prometheus {
    /// The query of each sample field, summed by the label `by`.
    fn fields(&self, by: &str) -> [(Field, String); 5] {
        let rate = |metric: &str| format!("sum by ({by}) (rate({metric}[{}s]))", self.rate);
        [
            (
                |s| &mut s.rx_bytes,
                rate("container_network_receive_bytes_total"),
            ),
            (
                |s| &mut s.rx_packets,
                rate("container_network_receive_packets_total"),
            ),
            (
                |s| &mut s.tx_bytes,
                rate("container_network_transmit_bytes_total"),
            ),
            (
                |s| &mut s.tx_packets,
                rate("container_network_transmit_packets_total"),
            ),
            (
                |s| &mut s.drops,
                format!(
                    "{} + {}",
                    rate("container_network_receive_packets_dropped_total"),
                    rate("container_network_transmit_packets_dropped_total")
                ),
            ),
        ]
    }

    /// The series of `promql` over the range: the value of its one label and its points.
    async fn query(&self, promql: &str) -> Result<Vec<(String, Vec<(u64, f64)>)>, ApiError> {
        let unavailable = |why: String| {
            ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "prometheus_unavailable",
                format!("the Prometheus at {} did not answer: {why}", self.base),
            )
        };
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| unavailable(e.to_string()))?;
        let answer: PromAnswer = client
            .get(format!("{}/api/v1/query_range", self.base))
            .query(&[
                ("query", promql.to_string()),
                ("start", self.start.to_string()),
                ("end", self.end.to_string()),
                ("step", self.step.to_string()),
            ])
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .error_for_status()
            .map_err(|e| unavailable(e.to_string()))?
            .json()
            .await
            .map_err(|e| unavailable(format!("not a query_range answer: {e}")))?;
        Ok(answer
            .data
            .result
            .into_iter()
            .map(|series| {
                let name = series.metric.into_values().next().unwrap_or_default();
                let points = series
                    .values
                    .into_iter()
                    .filter_map(|(t, v)| Some((t as u64, v.parse::<f64>().ok()?)))
                    .filter(|(_, v)| v.is_finite())
                    .collect();
                (name, points)
            })
            .collect())
    }
}

#[derive(Deserialize)]
struct PromAnswer {
    data: PromData,
}

#[derive(Deserialize)]
struct PromData {
    result: Vec<PromSeries>,
}

#[derive(Deserialize)]
struct PromSeries {
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}
