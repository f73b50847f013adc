//! /api/containers and the data plane's counters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::model::Resources;

/// A container as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ContainerView {
    pub id: String,
    pub app: String,
    /// Id of the node it runs on.
    pub node: String,
    /// `creating`, `running`, `exited`, `failed`, ...
    pub status: String,
    pub ip: String,
    pub image: String,
    pub resources: Resources,
    pub restarts: u32,
    pub exit_code: Option<u32>,
    pub message: Option<String>,
    pub created_at: u64,
    pub started_at: Option<u64>,
}

/// One container with what only its node knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ContainerDetail {
    #[serde(flatten)]
    pub view: ContainerView,
    pub netns: String,
    pub host_interface: String,
    pub log_path: String,
    pub generation: u64,
    /// Liveness and readiness as the health monitor sees them, when checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub health: Option<Value>,
    /// The data plane's counters of this container, when it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub network: Option<Value>,
}

/// The query of `GET /api/containers` and `GET /api/containers/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `local`: only this node's containers (what peers ask each other);
    /// `cluster` (default): every node's.
    #[param(value_type = Option<Scope>)]
    pub scope: Option<String>,
}

/// Which nodes a container query covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Local,
    Cluster,
}

/// `GET /api/metrics/containers`: per container id, packets and bytes from
/// and to it and drops by reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = BTreeMap<String, Object>)]
pub struct ContainerMetrics(pub BTreeMap<String, Value>);

/// `GET /api/metrics/overlay`: this node's VXLAN counters (`null` without a
/// data plane).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OverlayView {
    /// Sent and received per peer node, drops by reason.
    #[schema(value_type = Object)]
    pub counters: Value,
    pub tunnels: Vec<TunnelView>,
}

/// A peer node's subnet reached through the overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TunnelView {
    pub subnet: String,
    pub underlay: String,
    pub vni: u32,
}

/// `GET /api/flows/recent`: the latest flow events of every node that match the query, oldest
/// first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecentFlows {
    pub flows: Vec<FlowView>,
    /// Events the kernels could not hand over (their ring buffers were full), every node
    /// together, since each daemon started.
    pub lost: u64,
    /// How many kept events after `cursor` match (`flows` holds the newest `limit` of them).
    pub matched: u64,
    /// Where this answer ends, per node: pass it back as `cursor` for only newer events.
    pub cursor: String,
    /// Nodes that did not answer.
    pub unavailable: Vec<String>,
}

/// One flow event: a new flow (allowed) or a denied packet, seen by the data plane of `node`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlowView {
    /// The node whose data plane saw it.
    pub node: String,
    /// Its number on that node (see `cursor`).
    pub seq: u64,
    /// When it was seen, in milliseconds since the epoch.
    pub time_ms: u64,
    #[schema(value_type = String)]
    pub src: std::net::Ipv4Addr,
    pub sport: u16,
    #[schema(value_type = String)]
    pub dst: std::net::Ipv4Addr,
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// `tcp`, `udp`, `icmp` or the number.
    pub protocol: String,
    /// `egress` (leaving the container) or `ingress` (going into it).
    pub direction: String,
    /// `allowed` or `denied`.
    pub verdict: String,
    pub reason: FlowReasonView,
    /// The local endpoint the event is about.
    pub endpoint_id: u32,
    /// The policy identity of the other side.
    pub peer_identity: u32,
    /// What the source is: an app, `node NAME`, or none (outside the cluster).
    pub src_app: Option<String>,
    /// What the destination is, as `src_app`.
    pub dst_app: Option<String>,
    /// A packet denied by policy: the policies that select the endpoint in that direction
    /// (none of their rules allows it), comma-separated.
    pub policy: Option<String>,
}

/// Why a flow event was written: a stable code and its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FlowReasonView {
    pub code: u8,
    /// `policy_allowed`, `no_policy` (the endpoint enforces nothing), `drop_policy`, ...
    pub name: String,
}
