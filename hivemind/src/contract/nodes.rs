//! /api/nodes and /api/health.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// A member of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    pub id: String,
    pub name: Option<String>,
    /// Address of its API.
    pub address: Option<String>,
    /// Address of its membership protocol.
    pub gossip: Option<String>,
    pub underlay: Option<String>,
    /// `alive`, `suspect`, `down`, `left` or `unknown`.
    pub state: String,
    pub since_ms: Option<u64>,
    pub subnet: Option<String>,
    pub resources: Option<NodeResources>,
    pub labels: Option<BTreeMap<String, String>>,
    /// Replicas placed on it.
    pub containers: u64,
    pub is_self: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeResources {
    pub cpu_cores: f64,
    pub memory_bytes: u64,
}

/// The body of `POST /api/nodes/join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// Gossip address `IP` or `IP:PORT` (port 7946 if omitted) of a member.
    pub address: String,
}

/// Healthy when nothing is listed in `problems`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Degraded,
}

/// `GET /api/health`: the cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthReport {
    pub status: HealthStatus,
    pub node: HealthNode,
    pub nodes: NodeCount,
    pub runtime: RuntimeHealth,
    pub network: NetworkHealth,
    pub apps: HealthyCount,
    pub services: HealthyCount,
    pub containers: RunningCount,
    /// What this node refused from the network (absent without a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterCounters>,
    pub problems: Vec<String>,
}

/// Counters of the cluster layer, since this node started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterCounters {
    /// Gossip datagrams dropped: not sealed with the cluster key, or malformed.
    pub bad_frames: u64,
    /// Records from peers refused one by one.
    pub rejected_records: u64,
    /// Deletion markers purged once every live member had seen them.
    pub purged_tombstones: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthNode {
    pub id: String,
    pub name: String,
    pub state: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeCount {
    pub total: u64,
    pub alive: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RuntimeHealth {
    pub name: String,
    pub ok: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NetworkHealth {
    pub bridge: String,
    pub subnet: String,
    pub mtu: u32,
    /// Whether the eBPF data plane is loaded.
    pub dataplane: bool,
    /// Whether the data plane routes between containers itself (`--host-routing on`): local
    /// delivery with `bpf_redirect_peer`, encapsulation with `bpf_redirect` to the VXLAN device.
    #[serde(default)]
    pub host_routing: bool,
    /// Whether services are load-balanced at the socket (`--socket-lb on` and the kernel took
    /// the cgroup programs); otherwise every packet to a VIP is translated on its way.
    #[serde(default)]
    pub socket_lb: bool,
    /// Egress NAT of container traffic leaving the cluster (`--masquerade`); absent without
    /// a data plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masquerade: Option<MasqueradeHealth>,
    /// Where the data plane's maps and programs are pinned on bpffs (they outlive the
    /// daemon: policy and load balancing stay enforced while it restarts); absent when they
    /// go with the daemon (`--bpf-pins off`, or no usable bpffs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_pins: Option<String>,
    /// The HTTP(S) ingress: where it listens, what it routes.
    #[serde(default)]
    pub ingress: IngressHealth,
}

/// The HTTP(S) ingress of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IngressHealth {
    /// `address:port` of the HTTP listener, when it listens.
    pub http: Option<String>,
    /// `address:port` of the HTTPS listener, when it listens.
    pub https: Option<String>,
    /// Why a listener is missing (the port is taken, say).
    pub errors: Vec<String>,
    /// Domains routed (apps with a `--service` domain).
    pub routes: u64,
    /// Certificates loaded for HTTPS.
    pub certificates: u64,
}

/// Egress NAT (masquerade) of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MasqueradeHealth {
    /// Whether containers' traffic to outside the cluster leaves from `address`.
    pub enabled: bool,
    /// The node address masqueraded packets carry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Mappings (flows) in use and how many fit: `pressure` is their ratio.
    pub mappings: u64,
    pub capacity: u64,
    pub pressure: f64,
    /// Packets translated on the way out and back.
    pub masqueraded_packets: u64,
    pub reversed_packets: u64,
    /// Packets dropped, by reason name (`drop_nat_no_port` when every probed port was taken,
    /// `drop_nat_full`, `drop_nat_unsupported`).
    pub drops: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthyCount {
    pub total: u64,
    pub healthy: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunningCount {
    pub total: u64,
    pub running: u64,
}

/// `GET /api/health` without a token: only whether the node answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthBrief {
    /// `up` (a node that is down does not answer).
    pub status: String,
}

/// `GET /api/health`: the full report with a token, the brief one without.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum HealthAnswer {
    Full(Box<HealthReport>),
    Brief(HealthBrief),
}

/// `GET /api/cluster/gossip-key`: the fingerprints of this node's cluster
/// keys (never the keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GossipKeys {
    /// The key gossip is sealed with.
    pub primary: String,
    /// Every key that opens gossip, the primary first.
    pub keys: Vec<String>,
}

/// Answer of `POST /api/cluster/gossip-key/rotate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyRotated {
    pub success: bool,
    /// The new primary key's fingerprint.
    pub fingerprint: String,
    /// Members that now use it.
    pub members: Vec<String>,
    /// Live members the rotation could not reach, with why.
    pub missed: Vec<String>,
    pub message: String,
}

/// The body of `POST /api/cluster/join-tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// How long it admits nodes: `30m`, `24h`, `7d` (default 24h, at most 30d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// Answer of `POST /api/cluster/join-tokens`: the token, shown only here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JoinTokenCreated {
    pub success: bool,
    pub id: String,
    /// `hmjoin_<id>_<secret>_<ca sha256>`: give it to `hivemind daemon --join-token`.
    pub token: String,
    pub expires_at: u64,
    /// The SHA-256 of the cluster CA's certificate, which the token pins.
    pub ca_sha256: String,
    /// The command that joins a node with it.
    pub join_command: String,
    pub message: String,
}

/// A join token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JoinTokenView {
    pub id: String,
    pub created_at: u64,
    pub expires_at: u64,
    pub expired: bool,
}

/// Where this node's cluster TLS stands (`GET /api/cluster/certificate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CertificateView {
    /// The SHA-256 of the cluster CA's certificate.
    pub ca_sha256: String,
    /// This node's certificate, PEM.
    pub cert: String,
    /// When it expires (seconds since the epoch); it is renewed with a third left.
    pub not_after: u64,
}

/// One node's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DebugTable {
    pub node: String,
    pub table: String,
    /// Each map behind the table: entries and capacity.
    pub maps: Vec<MapFill>,
    /// The entries, decoded and named (at most `MAX_ROWS`).
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<Value>,
    /// More entries matched than the rows hold.
    pub truncated: bool,
}

/// How full one map is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MapFill {
    pub map: String,
    pub entries: u64,
    pub capacity: u32,
}

/// One check of a policy trace: a container of this node, the direction it checks and the
/// peer, with what the maps decide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TraceCheck {
    pub node: String,
    pub container: String,
    pub app: String,
    /// `egress` (the source's check) or `ingress` (the destination's).
    pub direction: String,
    #[schema(value_type = String)]
    pub peer: Ipv4Addr,
    /// The peer's app, `node NAME`, or none (outside).
    pub peer_name: Option<String>,
    /// The identity the programs give the peer.
    pub peer_identity: u32,
    pub allowed: bool,
    /// What decided, in the maps' terms.
    pub decided_by: String,
    /// The policies that select this container in this direction (from the cluster's state).
    pub policies: Vec<String>,
}

/// The answer of `GET /api/debug/bpf/{table}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DebugAnswer {
    pub tables: Vec<DebugTable>,
    /// Nodes that did not answer.
    pub unavailable: Vec<String>,
}

/// The answer of `GET /api/debug/policy-trace`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PolicyTrace {
    /// `allowed` (every source reaches every destination), `denied` (none does) or `mixed`.
    pub verdict: String,
    /// Source and destination pairs and whether each passes both its checks.
    pub pairs: Vec<TracePair>,
    /// Every check, from the node that makes it.
    pub checks: Vec<TraceCheck>,
    /// Nodes that did not answer (their checks are missing).
    pub unavailable: Vec<String>,
}

/// One source and destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TracePair {
    #[schema(value_type = String)]
    pub from: Ipv4Addr,
    #[schema(value_type = String)]
    pub to: Ipv4Addr,
    pub allowed: bool,
}

/// What `POST /api/debug/connectivity` checks, beyond its defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectivityRequest {
    /// The probes' image; it must serve HTTP on `port`. Default: an image of busybox's httpd
    /// that the node builds from its own busybox and imports on both probe nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The port the image serves HTTP on (default 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The node of the server probe, by name or id (default: another live node, the first by
    /// name). The client probe runs on the node that answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_node: Option<String>,
    /// A TCP service outside the cluster, `IP:PORT`, for the egress check (skipped without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<String>,
    /// Publishes the server probe on this port of every node, for the published-port check
    /// (skipped without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_port: Option<u16>,
    /// Seconds each check may take before it fails, 1 to 60 (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_timeout_s: Option<u64>,
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckResult {
    Passed,
    Failed,
    /// Not run: not configured, or an earlier step failed (the detail says which).
    Skipped,
}

impl CheckResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

/// One step of a connectivity test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConnectivityCheck {
    /// e.g. `container-to-container`, `dns`, `cleanup`.
    pub name: String,
    /// What it does, from where to where.
    pub description: String,
    pub result: CheckResult,
    /// How long it took, in milliseconds.
    pub ms: u64,
    /// What was seen: the answer, or why it failed.
    pub detail: String,
}

/// A probe container of a connectivity test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProbeView {
    pub app: String,
    pub node: String,
    pub container: String,
    #[schema(value_type = String)]
    pub ip: Ipv4Addr,
}

/// The answer of `POST /api/debug/connectivity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConnectivityReport {
    /// Every check passed or was skipped.
    pub passed: bool,
    /// The probes ran on two nodes (a cluster of one runs both on its node).
    pub cross_node: bool,
    pub client: Option<ProbeView>,
    pub server: Option<ProbeView>,
    /// The server probe's service address.
    #[schema(value_type = Option<String>)]
    pub vip: Option<Ipv4Addr>,
    /// In the order they ran; setup and cleanup are checks too.
    pub checks: Vec<ConnectivityCheck>,
}
