//! /api/debug: the data plane's maps of one node or every node, decoded with names
//! (`hivemind debug bpf TABLE`), and policy traces from the maps the programs read (`hivemind
//! debug policy-trace`). Admins only (the ACL kind `debug`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::auth::forwarded_token;
use super::traffic::ask_other_nodes;
use super::{ApiError, AppState, Json, Query};
use crate::contract::{
    ConnectivityReport, ConnectivityRequest, DebugAnswer, DebugTable, PolicyTrace, TraceCheck,
    TracePair,
};
use crate::node::connectivity::ConnectivityPlan;
use crate::node::debug::{TABLES, TraceRequest};
use crate::node::protocol_number;
use crate::state::{ENDPOINTS, EndpointRecord};

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TableQuery {
    /// Only rows that mention this container (its id, a prefix of it, or its address).
    pub container: Option<String>,
    /// The node whose maps to read: its name, or `all` (default: the node that answers).
    pub node: Option<String>,
    /// This node's table only (how nodes ask each other).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
}

fn no_dataplane(node: &AppState) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::CONFLICT,
        "no_dataplane",
        format!("{} runs without a data plane", node.name()),
    )
}

/// One data-plane table (`endpoints`, `ipcache`, `tunnels`, `services`, `backends`,
/// `conntrack`, `nat` or `policy`) of one node or every node, decoded with names, with how full
/// its maps are.
#[utoipa::path(
    get,
    path = "/api/debug/bpf/{table}",
    tag = "nodes",
    params(("table" = String, Path, description = "endpoints, ipcache, tunnels, services, backends, conntrack, nat or policy"), TableQuery),
    responses(
        (status = 200, description = "the table of each node asked", body = DebugAnswer),
        (status = 400, description = "an unknown table or node (named in the message)", body = crate::contract::ErrorBody),
        (status = 409, description = "the node runs without a data plane", body = crate::contract::ErrorBody),
    )
)]
pub async fn table(
    State(node): State<AppState>,
    Path(table): Path<String>,
    Query(query): Query<TableQuery>,
    headers: HeaderMap,
) -> Result<axum::Json<DebugAnswer>, ApiError> {
    if !TABLES.iter().any(|(name, _)| *name == table) {
        let names: Vec<&str> = TABLES.iter().map(|(name, _)| *name).collect();
        return Err(ApiError::bad_request(
            "unknown_table",
            format!("{table:?} is not a table: {}", names.join(", ")),
        ));
    }
    let wanted = query
        .node
        .clone()
        .unwrap_or_else(|| node.name().to_string());
    let here = || -> Result<DebugTable, ApiError> {
        node.debug_table(&table, query.container.as_deref())?
            .ok_or_else(|| no_dataplane(&node))
    };
    if query.local || wanted == node.name() {
        return Ok(axum::Json(DebugAnswer {
            tables: vec![here()?],
            unavailable: Vec::new(),
        }));
    }
    let known: Vec<String> = node
        .store()
        .values::<crate::state::NodeInfo>(crate::state::NODES)?
        .into_iter()
        .map(|n| n.name)
        .collect();
    if wanted != "all" && !known.contains(&wanted) {
        return Err(ApiError::bad_request(
            "unknown_node",
            format!("query field `node`: no node is named {wanted:?}"),
        ));
    }
    let mut answer = DebugAnswer::default();
    if wanted == "all" {
        match node.debug_table(&table, query.container.as_deref())? {
            Some(mine) => answer.tables.push(mine),
            None => answer.unavailable.push(node.name().to_string()),
        }
    }
    let asked = TableQuery {
        local: true,
        node: None,
        ..query.clone()
    };
    let path = format!("/api/debug/bpf/{table}");
    for (name, theirs) in ask_other_nodes::<DebugAnswer>(&node, &headers, &path, &asked).await? {
        if wanted != "all" && name != wanted {
            continue;
        }
        match theirs {
            Some(theirs) => answer.tables.extend(theirs.tables),
            None => answer.unavailable.push(name),
        }
    }
    Ok(axum::Json(answer))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TraceQuery {
    /// The sources: every container of this app ...
    pub from_app: Option<String>,
    /// ... or this address.
    pub from_ip: Option<String>,
    /// The destinations: every container of this app ...
    pub to_app: Option<String>,
    /// ... or this address.
    pub to_ip: Option<String>,
    /// The destination port.
    pub port: u16,
    /// `tcp` (default), `udp`, `icmp` or a number.
    pub protocol: Option<String>,
    /// This node's checks only (how nodes ask each other).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
}

impl TraceQuery {
    /// The addresses of one side: the app's containers, or the address.
    fn side(
        field: &str,
        app: &Option<String>,
        ip: &Option<String>,
        endpoints: &[EndpointRecord],
    ) -> Result<Vec<Ipv4Addr>, ApiError> {
        let bad = |why: String| ApiError::bad_request("invalid_query", why);
        match (app, ip) {
            (Some(app), None) => {
                let ips: Vec<Ipv4Addr> = endpoints
                    .iter()
                    .filter(|e| &e.app == app)
                    .map(|e| e.ip)
                    .collect();
                if ips.is_empty() {
                    return Err(bad(format!(
                        "query field `{field}_app`: app {app:?} has no container"
                    )));
                }
                Ok(ips)
            }
            (None, Some(ip)) => Ok(vec![ip.parse().map_err(|_| {
                bad(format!(
                    "query field `{field}_ip`: {ip:?} is not an IPv4 address"
                ))
            })?]),
            _ => Err(bad(format!("give one of `{field}_app` and `{field}_ip`"))),
        }
    }
}

/// Whether traffic from an app (or address) to an app (or address) on a port would pass, and
/// which map entry (or the lack of one) decides at each check, from the kernel's maps of the
/// nodes the containers run on.
#[utoipa::path(
    get,
    path = "/api/debug/policy-trace",
    tag = "nodes",
    params(TraceQuery),
    responses(
        (status = 200, description = "the verdict and every check", body = PolicyTrace),
        (status = 400, description = "the query is invalid (the field is named)", body = crate::contract::ErrorBody),
    )
)]
pub async fn policy_trace(
    State(node): State<AppState>,
    Query(query): Query<TraceQuery>,
    headers: HeaderMap,
) -> Result<axum::Json<PolicyTrace>, ApiError> {
    let endpoints: Vec<EndpointRecord> = node.store().values(ENDPOINTS)?;
    let from = TraceQuery::side("from", &query.from_app, &query.from_ip, &endpoints)?;
    let to = TraceQuery::side("to", &query.to_app, &query.to_ip, &endpoints)?;
    let protocol = query.protocol.as_deref().unwrap_or("tcp");
    let proto = protocol_number(protocol).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_query",
            format!("query field `protocol`: {protocol:?} is not tcp, udp, icmp or a number"),
        )
    })?;
    let request = TraceRequest {
        from: from.clone(),
        to: to.clone(),
        proto,
        port: query.port,
    };
    let mut checks = node.policy_trace(&request)?;
    let mut unavailable = Vec::new();
    if !query.local {
        let asked = TraceQuery {
            local: true,
            ..query.clone()
        };
        let answers =
            ask_other_nodes::<PolicyTrace>(&node, &headers, "/api/debug/policy-trace", &asked)
                .await?;
        for (name, answer) in answers {
            match answer {
                Some(answer) => checks.extend(answer.checks),
                None => unavailable.push(name),
            }
        }
    }
    // A pair passes when every check it meets passes (a side outside the cluster has none).
    let mut pairs: BTreeMap<(Ipv4Addr, Ipv4Addr), bool> = BTreeMap::new();
    for f in &from {
        for t in to.iter().filter(|t| *t != f) {
            pairs.insert((*f, *t), true);
        }
    }
    let own_ip = |c: &TraceCheck| {
        endpoints
            .iter()
            .find(|e| e.container == c.container)
            .map(|e| e.ip)
    };
    for check in &checks {
        let Some(own) = own_ip(check) else { continue };
        let pair = if check.direction == "egress" {
            (own, check.peer)
        } else {
            (check.peer, own)
        };
        if let Some(allowed) = pairs.get_mut(&pair) {
            *allowed &= check.allowed;
        }
    }
    let allowed = pairs.values().filter(|a| **a).count();
    let verdict = if allowed == pairs.len() {
        "allowed"
    } else if allowed == 0 {
        "denied"
    } else {
        "mixed"
    };
    Ok(axum::Json(PolicyTrace {
        verdict: verdict.to_string(),
        pairs: pairs
            .into_iter()
            .map(|((from, to), allowed)| TracePair { from, to, allowed })
            .collect(),
        checks,
        unavailable,
    }))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MonitorQuery {
    /// Packets from containers of this app.
    pub from_app: Option<String>,
    /// Packets to containers of this app.
    pub to_app: Option<String>,
    /// `trace` (every decision, the default), `drop` (drops only) or `policy` (drops by
    /// policy only).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `dropped`: drops only (as `type=drop`).
    pub verdict: Option<String>,
}

/// One traced packet, as the monitor sends it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TracedPacket {
    pub node: String,
    /// When the program saw it, in milliseconds since the epoch.
    pub time_ms: u64,
    /// `from_container`, `to_container` or `delivered`.
    pub program: String,
    /// `forwarded` or `dropped`.
    pub verdict: String,
    /// `forwarded` or the drop reason's name.
    pub reason: String,
    #[schema(value_type = String)]
    pub src: Ipv4Addr,
    pub sport: u16,
    #[schema(value_type = String)]
    pub dst: Ipv4Addr,
    pub dport: u16,
    pub protocol: String,
    pub tcp_flags: u8,
    pub len: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub src_app: Option<String>,
    pub dst_app: Option<String>,
}

/// The packets this node's programs decide on, live, as server-sent events (`trace`, and
/// `lost` when this client fell behind): the programs trace only while someone watches, and
/// only what the filter asks for.
#[utoipa::path(
    get,
    path = "/api/debug/monitor",
    tag = "nodes",
    params(MonitorQuery),
    responses(
        (status = 200, description = "an endless event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "the query is invalid (the field is named)", body = crate::contract::ErrorBody),
        (status = 409, description = "the node runs without a data plane", body = crate::contract::ErrorBody),
    )
)]
pub async fn monitor(
    State(node): State<AppState>,
    Query(query): Query<MonitorQuery>,
) -> Result<
    axum::response::sse::Sse<
        impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
    ApiError,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use hivemind_common::monitor_types::{DROP, TRACE};

    if !node.has_dataplane() {
        return Err(no_dataplane(&node));
    }
    let bad = |field: &str, why: String| {
        ApiError::bad_request("invalid_query", format!("query field `{field}`: {why}"))
    };
    let drops_only = match query.verdict.as_deref() {
        None => false,
        Some("dropped" | "denied") => true,
        Some(other) => return Err(bad("verdict", format!("{other:?} is not dropped"))),
    };
    let (types, policy_only) = match query.kind.as_deref().unwrap_or("trace") {
        "trace" if drops_only => (DROP, false),
        "trace" => (TRACE | DROP, false),
        "drop" => (DROP, false),
        "policy" => (DROP, true),
        other => {
            return Err(bad(
                "type",
                format!("{other:?} is not trace, drop or policy"),
            ));
        }
    };
    let identity = |field: &str, app: &Option<String>| -> Result<u32, ApiError> {
        match app {
            None => Ok(0),
            Some(app) => node
                .app_identity(app)?
                .ok_or_else(|| bad(field, format!("no app is named {app:?}"))),
        }
    };
    let filter = crate::node::monitor::MonitorFilter {
        src_identity: identity("from_app", &query.from_app)?,
        dst_identity: identity("to_app", &query.to_app)?,
        types,
        policy_only,
    };
    let handle = node.watch_packets(filter)?;
    let here = node.name().to_string();
    let start = (handle, std::time::Instant::now(), node.flow_map_names());
    let events = futures::stream::unfold(start, move |(mut handle, mut named_at, mut names)| {
        let here = here.clone();
        let node = node.clone();
        async move {
            let received = handle.batches.recv().await;
            // Names change rarely: read them again at most once a second.
            if named_at.elapsed() > std::time::Duration::from_secs(1) {
                names = node.flow_map_names();
                named_at = std::time::Instant::now();
            }
            let items: Vec<Result<Event, std::convert::Infallible>> = match received {
                Ok(batch) => batch
                    .iter()
                    .filter(|e| handle.filter.keeps(e))
                    .map(|e| {
                        let packet = TracedPacket {
                            node: here.clone(),
                            time_ms: crate::node::wall_ms(e.time_ns),
                            program: e.program.to_string(),
                            verdict: if hivemind_common::reason::is_drop(e.reason.code) {
                                "dropped".into()
                            } else {
                                "forwarded".into()
                            },
                            reason: e.reason.name.to_string(),
                            src: e.src,
                            sport: e.sport,
                            dst: e.dst,
                            dport: e.dport,
                            protocol: crate::node::protocol_name(e.proto),
                            tcp_flags: e.tcp_flags,
                            len: e.len,
                            src_identity: e.src_identity,
                            dst_identity: e.dst_identity,
                            src_app: names.get(&e.src).cloned(),
                            dst_app: names.get(&e.dst).cloned(),
                        };
                        Ok(Event::default()
                            .event("trace")
                            .data(serde_json::json!(packet).to_string()))
                    })
                    .collect(),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    vec![Ok(Event::default()
                        .event("lost")
                        .data(serde_json::json!({"lost": n}).to_string()))]
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            };
            Some((futures::stream::iter(items), (handle, named_at, names)))
        }
    });
    let events = futures::StreamExt::flatten(events);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// An in-cluster connectivity test: deploys a client probe on this node and a server probe on
/// another, checks container to container, container to the service address, DNS, node to
/// container, and (where asked) egress and a published port, then removes the probes. Answers
/// when it is done, with every check and its time; `passed` is false when any check failed.
#[utoipa::path(
    post,
    path = "/api/debug/connectivity",
    tag = "nodes",
    request_body = ConnectivityRequest,
    responses(
        (status = 200, description = "the report; `passed` says whether every check passed", body = ConnectivityReport),
        (status = 400, description = "a field is invalid (named in the message)", body = crate::contract::ErrorBody),
        (status = 409, description = "a test runs already, probe apps exist, or the node runs without a data plane", body = crate::contract::ErrorBody),
    )
)]
pub async fn connectivity(
    State(node): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<ConnectivityRequest>,
) -> Result<axum::Json<ConnectivityReport>, ApiError> {
    let plan = ConnectivityPlan::new(&request, forwarded_token(&headers))?;
    // A task of its own: the probes are removed even when the client leaves before the end.
    let run = tokio::spawn(async move { node.connectivity(plan).await });
    let report = run
        .await
        .map_err(|e| ApiError::internal(format!("the connectivity test: {e}")))??;
    Ok(axum::Json(report))
}
