//! /api/flows: the data plane's flow events (new flows, denied packets) of every node, the
//! most recent ones as JSON (filtered, from a cursor), the answering node's as server-sent
//! events, and the service map they make.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_stream::wrappers::BroadcastStream;
use utoipa::IntoParams;

use super::traffic::ask_other_nodes;
use super::{ApiError, AppState};
use crate::contract::{FlowView, RecentFlows};
use crate::node::flow_map::{AddressEdge, MapEdge, name_edges};
use crate::node::{FlowFilter, FlowNames, protocol_number};

/// Most events one answer holds.
const MAX_LIMIT: usize = 1000;

/// Which flow events to show; every filter given must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FlowQuery {
    /// Only events after this cursor (the `cursor` of an earlier answer).
    pub cursor: Option<String>,
    /// The newest this many (default 200, at most 1000).
    pub limit: Option<usize>,
    /// From or to containers of this app.
    pub app: Option<String>,
    /// From containers of this app.
    pub from_app: Option<String>,
    /// To containers of this app.
    pub to_app: Option<String>,
    /// From or to this address or CIDR block (`10.244.1.0/24`).
    pub ip: Option<String>,
    /// From or to this port.
    pub port: Option<u16>,
    /// `tcp`, `udp`, `icmp` or a protocol number.
    pub protocol: Option<String>,
    /// `allowed`, `denied` (or its synonym `dropped`).
    pub verdict: Option<String>,
    /// This node's events only (how nodes ask each other).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
}

impl FlowQuery {
    /// The filter it asks for; a 400 naming the field that is not understood.
    fn filter(&self) -> Result<FlowFilter, ApiError> {
        let bad = |field: &str, why: String| {
            ApiError::bad_request("invalid_query", format!("query field `{field}`: {why}"))
        };
        let net = match &self.ip {
            None => None,
            Some(text) => Some(if text.contains('/') {
                crate::policy::parse_cidr(text).map_err(|e| bad("ip", e))?
            } else {
                let ip = text
                    .parse()
                    .map_err(|_| bad("ip", format!("{text:?} is not an IPv4 address or CIDR")))?;
                (ip, 32)
            }),
        };
        let proto = match &self.protocol {
            None => None,
            Some(p) => Some(protocol_number(p).ok_or_else(|| {
                bad(
                    "protocol",
                    format!("{p:?} is not tcp, udp, icmp or a number"),
                )
            })?),
        };
        let verdict = match self.verdict.as_deref() {
            None => None,
            Some("allowed") => Some("allowed"),
            Some("denied" | "dropped") => Some("denied"),
            Some(other) => {
                return Err(bad(
                    "verdict",
                    format!("{other:?} is not allowed, denied or dropped"),
                ));
            }
        };
        Ok(FlowFilter {
            app: self.app.clone(),
            from_app: self.from_app.clone(),
            to_app: self.to_app.clone(),
            net,
            port: self.port,
            proto,
            verdict,
        })
    }

    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(200),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::bad_request(
                "invalid_query",
                format!("query field `limit`: {n} is not between 1 and {MAX_LIMIT}"),
            )),
        }
    }

    /// The cursor's number per node: `name:seq,name:seq`.
    fn cursor(&self) -> Result<BTreeMap<String, u64>, ApiError> {
        let Some(text) = self.cursor.as_deref().filter(|t| !t.is_empty()) else {
            return Ok(BTreeMap::new());
        };
        text.split(',')
            .map(|part| {
                part.rsplit_once(':')
                    .and_then(|(name, seq)| Some((name.to_string(), seq.parse().ok()?)))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_query",
                            format!("query field `cursor`: {part:?} is not NODE:NUMBER"),
                        )
                    })
            })
            .collect()
    }
}

/// The answering node's flow events as server-sent events, named and filtered as
/// `/api/flows/recent` does: `flow` (one JSON event) and `lost` (`{"lost": n}`: batches this
/// client missed because it fell behind).
#[utoipa::path(
    get,
    path = "/api/flows",
    tag = "metrics",
    params(FlowQuery),
    responses(
        (status = 200, description = "an endless event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "the query is invalid", body = crate::contract::ErrorBody),
    )
)]
pub async fn stream(
    State(node): State<AppState>,
    super::Query(query): super::Query<FlowQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let filter = query.filter()?;
    let mut names: (Instant, FlowNames) = (Instant::now(), node.flow_names());
    let source = node.clone();
    let batches = BroadcastStream::new(node.subscribe_flows());
    let events = futures::StreamExt::flat_map(batches, move |item| {
        let events: Vec<Result<Event, Infallible>> = match item {
            Ok(batch) => {
                // Names change rarely: read them again at most once a second.
                if names.0.elapsed() > Duration::from_secs(1) {
                    names = (Instant::now(), source.flow_names());
                }
                let names = &names.1;
                batch
                    .iter()
                    .filter(|kept| filter.keeps(kept, names))
                    .map(|kept| {
                        let view = names.view(kept);
                        Ok(Event::default().event("flow").data(json!(view).to_string()))
                    })
                    .collect()
            }
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                vec![Ok(Event::default()
                    .event("lost")
                    .data(json!({"lost": n}).to_string()))]
            }
        };
        futures::stream::iter(events)
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The most recent flow events of every node that match the query, oldest first, with a
/// cursor for asking again for newer ones only.
#[utoipa::path(
    get,
    path = "/api/flows/recent",
    tag = "metrics",
    params(FlowQuery),
    responses(
        (status = 200, description = "recent flows, how many matched and were lost", body = RecentFlows),
        (status = 400, description = "the query is invalid", body = crate::contract::ErrorBody),
    )
)]
pub async fn recent(
    State(node): State<AppState>,
    super::Query(query): super::Query<FlowQuery>,
    headers: HeaderMap,
) -> Result<axum::Json<RecentFlows>, ApiError> {
    let filter = query.filter()?;
    let limit = query.limit()?;
    let mut cursor = query.cursor()?;
    let after = cursor.get(node.name()).copied().unwrap_or(0);
    let (mut flows, mut matched, last) = node.flows_after(after, &filter, limit);
    cursor.insert(node.name().to_string(), last);
    let mut lost = node.flows_lost();
    let mut unavailable = Vec::new();
    if !query.local {
        let asked = FlowQuery {
            local: true,
            ..query.clone()
        };
        let answers =
            ask_other_nodes::<RecentFlows>(&node, &headers, "/api/flows/recent", &asked).await?;
        for (name, answer) in answers {
            let Some(answer) = answer else {
                unavailable.push(name);
                continue;
            };
            if let Ok(theirs) = (FlowQuery {
                cursor: Some(answer.cursor),
                ..FlowQuery::default()
            })
            .cursor()
            {
                cursor.extend(theirs);
            }
            flows.extend(answer.flows);
            matched += answer.matched;
            lost += answer.lost;
        }
        // The newest `limit` of every node's, oldest first.
        flows.sort_by_key(|f: &FlowView| f.time_ms);
        let excess = flows.len().saturating_sub(limit);
        flows.drain(..excess);
    }
    let cursor = cursor
        .iter()
        .map(|(name, seq)| format!("{name}:{seq}"))
        .collect::<Vec<_>>()
        .join(",");
    Ok(axum::Json(RecentFlows {
        flows,
        lost,
        matched,
        cursor,
        unavailable,
    }))
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
    let asked = [
        ("local", "true".to_string()),
        ("window", window.to_string()),
    ];
    for (name, answer) in
        ask_other_nodes::<FlowMap>(&node, &headers, "/api/flows/map", &asked).await?
    {
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
