//! /api/nodes and /api/health.

use axum::extract::State;

use super::{ApiError, AppState};
use crate::command::{Command, Outcome};
use crate::contract::{
    AppStatus, ClusterCounters, ErrorBody, GossipKeys, HealthAnswer, HealthBrief, HealthNode,
    HealthReport, HealthStatus, HealthyCount, JoinRequest, KeyRotated, Message, NetworkHealth,
    NodeCount, NodeResources, NodeView, RunningCount, RuntimeHealth,
};
use crate::state::{ContainerStatus, NODES, NodeInfo, PLACEMENTS, Placement};

/// Lists the cluster's nodes: membership state, addresses, subnet, resources.
#[utoipa::path(
    get,
    path = "/api/nodes",
    tag = "nodes",
    responses((status = 200, description = "every known node, by id", body = Vec<NodeView>))
)]
pub async fn list(State(node): State<AppState>) -> Result<axum::Json<Vec<NodeView>>, ApiError> {
    let infos: Vec<NodeInfo> = node.store().values(NODES)?;
    let placements: Vec<Placement> = node.store().values(PLACEMENTS)?;
    let members = match node.cluster() {
        Some(cluster) => cluster.members(),
        None => Vec::new(),
    };
    let mut ids: Vec<String> = infos.iter().map(|i| i.id.clone()).collect();
    for member in &members {
        if !ids.contains(&member.id) {
            ids.push(member.id.clone());
        }
    }
    ids.sort();
    let nodes: Vec<NodeView> = ids
        .iter()
        .map(|id| {
            let info = infos.iter().find(|i| &i.id == id);
            let member = members.iter().find(|m| &m.id == id);
            let state = node
                .member_state(id)
                .map_or("unknown".to_string(), |s| format!("{s:?}").to_lowercase());
            let replicas = placements
                .iter()
                .map(|p| p.nodes.iter().filter(|n| *n == id).count())
                .sum::<usize>();
            NodeView {
                id: id.clone(),
                name: info.map(|i| i.name.clone()),
                address: info
                    .map(|i| i.api.clone())
                    .or(member.map(|m| m.api.to_string())),
                gossip: member.map(|m| m.gossip.to_string()),
                underlay: info.map(|i| i.underlay.to_string()),
                state,
                since_ms: member.map(|m| m.since_ms),
                subnet: info.map(|i| i.subnet.to_string()),
                resources: info.map(|i| NodeResources {
                    cpu_cores: i.cpu_cores,
                    memory_bytes: i.memory_bytes,
                }),
                labels: info.map(|i| i.labels.clone()),
                containers: replicas as u64,
                is_self: id == node.id(),
            }
        })
        .collect();
    Ok(axum::Json(nodes))
}

/// Asks this node to join the cluster of the node at `address`.
#[utoipa::path(
    post,
    path = "/api/nodes/join",
    tag = "nodes",
    request_body = JoinRequest,
    responses(
        (status = 200, description = "joining", body = Message),
        (status = 400, description = "the address is invalid", body = ErrorBody),
        (status = 409, description = "this node runs without a cluster (--mock)", body = ErrorBody),
        (status = 503, description = "this node has left its cluster", body = ErrorBody),
    )
)]
pub async fn join(
    State(node): State<AppState>,
    super::Json(request): super::Json<JoinRequest>,
) -> Result<axum::Json<Message>, ApiError> {
    let command = Command::join_cluster(&request.address)?;
    let Outcome::Joining { address } = node.execute(command).await? else {
        return Err(ApiError::internal("join returned an unexpected outcome"));
    };
    Ok(axum::Json(Message::ok(format!(
        "Joining the cluster through {address}"
    ))))
}

/// The cluster's health as this node sees it.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "nodes",
    responses((status = 200, description = "status and the problems found; without a token only `{\"status\": \"up\"}`", body = HealthAnswer))
)]
pub async fn health(
    State(node): State<AppState>,
    principal: super::auth::MaybePrincipal,
) -> Result<axum::Json<HealthAnswer>, ApiError> {
    if principal.is_none() {
        return Ok(axum::Json(HealthAnswer::Brief(HealthBrief {
            status: "up".to_string(),
        })));
    }
    let apps = node.store().apps()?;
    let containers = node.store().containers()?;
    let counts = node.replica_counts()?;
    let mut problems = Vec::new();
    let runtime_ok = match node.runtime_answers().await {
        Ok(_) => true,
        Err(e) => {
            problems.push(format!("runtime: {e}"));
            false
        }
    };
    let mut healthy_apps = 0;
    for app in &apps {
        let view = super::apps::app_view(app, counts.get(&app.spec.name));
        if view.status == AppStatus::Running {
            healthy_apps += 1;
        } else {
            problems.push(format!(
                "app {}: {} of {} replicas running ({})",
                view.name,
                view.running,
                view.replicas,
                view.status.as_str()
            ));
        }
    }
    for container in containers
        .iter()
        .filter(|c| c.status == ContainerStatus::Failed)
    {
        problems.push(format!(
            "container {}: {}",
            container.id,
            container.message.as_deref().unwrap_or("failed")
        ));
    }
    let services: Vec<crate::services::ServiceRecord> =
        node.store().values(crate::services::SERVICES)?;
    let endpoints: Vec<crate::services::EndpointRecord> =
        node.store().values(crate::services::ENDPOINTS)?;
    let mut healthy_services = 0;
    for service in &services {
        let mine: Vec<_> = endpoints.iter().filter(|e| e.app == service.app).collect();
        let ready = mine.iter().filter(|e| e.ready).count();
        if ready > 0 {
            healthy_services += 1;
        } else {
            problems.push(format!("service {}: no ready endpoint", service.app));
        }
        for endpoint in mine.iter().filter(|e| !e.ready) {
            problems.push(format!(
                "endpoint {} of {} on {}: not ready ({})",
                endpoint.container,
                service.app,
                endpoint.node,
                endpoint.reason.as_deref().unwrap_or("unknown")
            ));
        }
    }
    let running = containers
        .iter()
        .filter(|c| c.status == ContainerStatus::Running)
        .count();
    let (total_nodes, alive_nodes) = match node.cluster() {
        Some(cluster) => {
            let members = cluster.members();
            for member in &members {
                if member.state == crate::cluster::MemberState::Down {
                    problems.push(format!("node {}: down", member.id));
                }
            }
            (members.len(), cluster.live_members().len())
        }
        None => (1, 1),
    };
    let status = if problems.is_empty() {
        HealthStatus::Healthy
    } else {
        HealthStatus::Degraded
    };
    Ok(axum::Json(HealthAnswer::Full(Box::new(HealthReport {
        status,
        node: HealthNode {
            id: node.id().to_string(),
            name: node.name().to_string(),
            state: "alive".to_string(),
        },
        nodes: NodeCount {
            total: total_nodes as u64,
            alive: alive_nodes as u64,
        },
        runtime: RuntimeHealth {
            name: node.runtime_name().to_string(),
            ok: runtime_ok,
        },
        network: NetworkHealth {
            bridge: node.net_config().bridge.clone(),
            subnet: node.net_config().subnet.to_string(),
            mtu: node.net_config().mtu,
            dataplane: node.has_dataplane(),
            host_routing: node.host_routing(),
            socket_lb: node.socket_lb(),
            masquerade: node
                .masquerade()
                .map(|(address, (mappings, capacity), counters)| {
                    crate::contract::MasqueradeHealth {
                        enabled: address.is_some(),
                        address: address.map(|a| a.to_string()),
                        mappings: mappings as u64,
                        capacity: u64::from(capacity),
                        pressure: mappings as f64 / f64::from(capacity.max(1)),
                        masqueraded_packets: counters.masqueraded,
                        reversed_packets: counters.reversed,
                        drops: counters
                            .drops
                            .iter()
                            .map(|(why, count)| {
                                (hivemind_common::reason::name(*why).to_string(), *count)
                            })
                            .collect(),
                    }
                }),
            bpf_pins: node.bpf_pins(),
            ingress: {
                let status = node.ingress().status();
                crate::contract::IngressHealth {
                    http: status.http,
                    https: status.https,
                    errors: status.errors,
                    routes: status.routes as u64,
                    certificates: status.certificates as u64,
                }
            },
        },
        apps: HealthyCount {
            total: apps.len() as u64,
            healthy: healthy_apps,
        },
        services: HealthyCount {
            total: services.len() as u64,
            healthy: healthy_services,
        },
        containers: RunningCount {
            total: containers.len() as u64,
            running: running as u64,
        },
        cluster: node.cluster().map(|c| ClusterCounters {
            bad_frames: c.bad_frames(),
            rejected_records: c.rejected_records(),
            purged_tombstones: c.purged_tombstones(),
        }),
        problems,
    }))))
}

/// The fingerprints of this node's cluster keys.
#[utoipa::path(
    get,
    path = "/api/cluster/gossip-key",
    tag = "nodes",
    responses(
        (status = 200, description = "the key fingerprints, the primary first", body = GossipKeys),
        (status = 409, description = "this node runs without a cluster (--mock)", body = ErrorBody),
    )
)]
pub async fn gossip_keys(State(node): State<AppState>) -> Result<axum::Json<GossipKeys>, ApiError> {
    let cluster = node.cluster().ok_or_else(no_cluster)?;
    let keys = cluster.key_fingerprints();
    Ok(axum::Json(GossipKeys {
        primary: keys.first().cloned().unwrap_or_default(),
        keys,
    }))
}

/// Rotates the cluster key on every live member: install, use, drop.
#[utoipa::path(
    post,
    path = "/api/cluster/gossip-key/rotate",
    tag = "nodes",
    responses(
        (status = 200, description = "rotated; members it could not reach are listed", body = KeyRotated),
        (status = 409, description = "this node runs without a cluster (--mock)", body = ErrorBody),
    )
)]
pub async fn rotate_gossip_key(
    State(node): State<AppState>,
) -> Result<axum::Json<KeyRotated>, ApiError> {
    let cluster = node.cluster().ok_or_else(no_cluster)?;
    let rotation = cluster
        .rotate_key()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let message = if rotation.missed.is_empty() {
        format!(
            "Every member ({}) now uses key {}",
            rotation.members.len(),
            rotation.fingerprint
        )
    } else {
        format!(
            "Key {} is used by {} member(s); not reached: {} (give them <data dir>/gossip.key by hand)",
            rotation.fingerprint,
            rotation.members.len(),
            rotation.missed.join("; ")
        )
    };
    Ok(axum::Json(KeyRotated {
        success: rotation.missed.is_empty(),
        fingerprint: rotation.fingerprint,
        members: rotation.members,
        missed: rotation.missed,
        message,
    }))
}

fn no_cluster() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::CONFLICT,
        "no_cluster",
        "this node runs without a cluster (--mock)",
    )
}
