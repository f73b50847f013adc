//! /api/flows: the data plane's flow events (new allowed flows, denied
//! packets) as server-sent events, and the most recent ones as JSON.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use super::AppState;
use crate::contract::RecentFlows;

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
