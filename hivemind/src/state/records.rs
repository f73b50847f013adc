//! The records kept in the state tables.

use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::Subnet;
use crate::model::{AppSpec, HttpFigures, Resources};

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An app as stored: the validated spec plus bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    pub spec: AppSpec,
    /// Bumped by `restart` and by every redeploy: containers of an older
    /// generation are replaced.
    pub generation: u64,
    pub created_at: u64,
    pub updated_at: u64,
    /// The update in progress, or the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::model::Rollout>,
    /// The last scan of its image, when a scan policy applied to its deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<crate::vuln::AppScan>,
}

impl AppRecord {
    pub fn new(spec: AppSpec) -> Self {
        let now = now_secs();
        Self {
            spec,
            generation: 1,
            created_at: now,
            updated_at: now,
            rollout: None,
            scan: None,
        }
    }

    /// The generation a change brings: above every generation the app ran, including one a
    /// rollback left (its containers may still be going).
    pub fn next_generation(&self) -> u64 {
        let last = self.rollout.as_ref().map_or(0, |r| r.to_generation);
        self.generation.max(last) + 1
    }

    /// The rollout whose quotas bind the nodes now, if any.
    pub fn active_rollout(&self) -> Option<&crate::model::Rollout> {
        self.rollout.as_ref().filter(|r| r.is_active())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerStatus {
    /// Recorded, not yet running in containerd.
    Creating,
    Running,
    /// The process ended; the reconciler restarts it after a backoff.
    Exited,
    /// Could not be created or started; retried after a backoff.
    Failed,
}

impl ContainerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Running => "running",
            Self::Exited => "exited",
            Self::Failed => "failed",
        }
    }
}

/// One replica of an app on this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub app: String,
    pub node: String,
    pub image: String,
    pub generation: u64,
    pub ip: Ipv4Addr,
    /// Host-side veth name.
    pub host_ifname: String,
    /// Path of the container's network namespace.
    pub netns: String,
    pub resources: Resources,
    pub status: ContainerStatus,
    pub restarts: u32,
    pub exit_code: Option<u32>,
    pub message: Option<String>,
    pub created_at: u64,
    /// Creation time in milliseconds: orders replicas (scale-down removes
    /// the newest first).
    #[serde(default)]
    pub created_ms: u64,
    pub started_at: Option<u64>,
    /// The A/B test variant it runs, if its app serves variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// One revision of an app: the spec a deploy asked for, kept so that `app rollout undo` can go
/// back to it. Key `<app>/<revision, 6 digits>`; the newest [`REVISION_LIMIT`] of each app are
/// kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionRecord {
    pub app: String,
    /// 1 for the first deploy, then one more for each deploy that changed the spec.
    pub revision: u64,
    pub spec: AppSpec,
    pub created_at: u64,
    /// The revision an undo brought back, for a revision made by `rollout undo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_revision: Option<u64>,
}

/// Revisions kept per app (as Kubernetes keeps 10 by default).
pub const REVISION_LIMIT: usize = 10;

impl RevisionRecord {
    pub fn key(app: &str, revision: u64) -> String {
        format!("{app}/{revision:06}")
    }
}

/// A named volume: a directory under the data dir.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub path: String,
    pub created_at: u64,
}

/// Where an app's replicas run: one node id per replica. Written by the
/// app's owner (rendezvous hashing over live members).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub app: String,
    pub nodes: Vec<String>,
}

/// A node as it describes itself to the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub name: String,
    pub api: String,
    /// Underlay address: VXLAN packets for this node's subnet go here.
    pub underlay: Ipv4Addr,
    #[serde(with = "subnet_text")]
    pub subnet: Subnet,
    pub cpu_cores: f64,
    pub memory_bytes: u64,
    pub labels: std::collections::BTreeMap<String, String>,
    pub started_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub app: String,
    pub vip: Ipv4Addr,
    /// The `--service` domain, if any.
    pub domain: Option<String>,
    /// TCP ports.
    pub ports: Vec<u16>,
    /// While a blue-green rollout verifies its new version: the VIP that reaches the new
    /// version alone (`preview.<app>.hivemind.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_vip: Option<Ipv4Addr>,
}

/// The label before an app's name in its preview name (`preview.<app>.hivemind.local`).
pub const PREVIEW_LABEL: &str = "preview";

impl ServiceRecord {
    pub fn dns_names(&self) -> Vec<String> {
        let mut names = vec![format!("{}.{CLUSTER_DOMAIN}", self.app)];
        names.extend(self.domain.iter().cloned());
        if self.preview_vip.is_some() {
            names.push(format!("{PREVIEW_LABEL}.{}.{CLUSTER_DOMAIN}", self.app));
        }
        names
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub container: String,
    pub app: String,
    pub node: String,
    pub ip: Ipv4Addr,
    /// The id of the node it runs on (for requests that must reach it).
    #[serde(default)]
    pub node_id: String,
    /// Where the container stands (running, exited, failed).
    #[serde(default = "running")]
    pub status: ContainerStatus,
    /// The app generation it runs.
    #[serde(default)]
    pub generation: u64,
    /// In the load balancer and DNS.
    pub ready: bool,
    /// Why it is not ready, when it is not.
    pub reason: Option<String>,
    /// Times it was restarted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// TCP resets it sent, as its node's data plane counted them; kept up to date only while
    /// its app is under a canary rollout (the analysis reads them).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resets: u64,
    /// TCP SYNs it received and answered with neither a SYN-ACK nor a reset (their clients
    /// timed out), kept up to date as `resets` is.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unanswered_syns: u64,
    /// The A/B test variant it runs, if its app serves variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// What one node's HTTP ingress sent to the apps under a canary analysis, in the current step
/// of each one's rollout: key `<node id>`, written (and signed) by that node alone. The app's
/// driver sums every node's figures of the step its rollout stands at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IngressFiguresRecord {
    pub node_id: String,
    pub apps: std::collections::BTreeMap<String, StepHttpFigures>,
}

/// An app's ingress figures since its rollout to `generation` entered `step`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepHttpFigures {
    pub generation: u64,
    pub step: u32,
    /// To the containers of `generation`, and to older ones.
    pub new: HttpFigures,
    pub old: HttpFigures,
}

/// The advisories of one package in the vulnerability database: key
/// `<OSV ecosystem>|<package>` (see `crate::vuln::row_key`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VulnRow {
    /// The OSV ecosystem, with its release (`Debian:12`).
    pub ecosystem: String,
    pub package: String,
    pub advisories: Vec<crate::vuln::Advisory>,
}

/// A public key whose cosign signatures admit images: key `<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustedKey {
    pub name: String,
    /// The ECDSA P-256 public key, PEM (as `cosign.pub`).
    pub pem: String,
    /// sha256 of its DER, hex.
    pub fingerprint: String,
    pub created_at: u64,
}

/// What the vulnerability database holds: one row, key `cluster`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VulnDbMeta {
    /// Per ecosystem family (`Debian`, `npm`): when it was last imported and what it holds.
    pub ecosystems: std::collections::BTreeMap<String, VulnDbEcosystem>,
    /// Days after an import when scans warn that the database is old.
    pub max_age_days: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VulnDbEcosystem {
    /// Seconds since the epoch.
    pub imported_at: u64,
    /// sha256 of the file it came from.
    pub sha256: String,
    pub packages: u64,
    pub advisories: u64,
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

/// An API token: its public id, a name, the hash of its secret, and what it
/// grants (a built-in role or a custom policy). Revoking deletes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub secret_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::acl::Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Seconds since the epoch after which it is refused.
    #[serde(default)]
    pub expires_at: Option<u64>,
    pub created_at: u64,
}

/// A secret as the replicated store keeps it: ciphertext only. The value
/// is sealed with a data key of its own, and the data key with the cluster's
/// key-encryption key, which never enters replicated state (see
/// the `secrets` module).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    pub name: String,
    /// 1 at creation, one more at each rotation.
    pub version: u32,
    /// Bytes of the value.
    pub size: u64,
    pub created_at: u64,
    pub updated_at: u64,
    /// Fingerprint of the key-encryption key that wrapped `data_key`.
    pub kek: String,
    /// The data key sealed with the KEK: hex of nonce and ciphertext.
    pub data_key: String,
    /// The value sealed with the data key: hex of nonce and ciphertext.
    pub value: String,
}

/// A certificate the HTTPS ingress serves for `domain` (`security tls
/// add`): the chain in the clear, the private key sealed like a secret
/// (named after the domain, so a sealed key cannot move to another one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsCertRecord {
    /// Lowercase; `*.example.com` for a wildcard.
    pub domain: String,
    /// PEM, leaf first.
    pub chain_pem: String,
    pub key: SecretRecord,
    /// The leaf's DNS names.
    pub names: Vec<String>,
    pub issuer: String,
    pub not_before: u64,
    pub not_after: u64,
    /// SHA-256 of the leaf (DER), hex.
    pub fingerprint: String,
    pub created_at: u64,
    pub updated_at: u64,
}

/// A join token: admits nodes to the cluster until it expires or is
/// revoked. Only a hash of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    pub id: String,
    pub secret_sha256: String,
    pub created_at: u64,
    /// Seconds since the epoch after which it is refused.
    pub expires_at: u64,
}

/// One mutating API call, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub at_ms: u64,
    /// The node that answered.
    pub node: String,
    /// The token's name, or `-` when none was valid.
    pub who: String,
    pub method: String,
    pub path: String,
    pub status: u16,
}

fn running() -> ContainerStatus {
    ContainerStatus::Running
}

/// The cluster's DNS domain.
pub const CLUSTER_DOMAIN: &str = "hivemind.local";

/// A subnet on the wire and on disk as text (`10.244.1.0/24`).
mod subnet_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Subnet;

    pub fn serialize<S: Serializer>(subnet: &Subnet, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(subnet)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Subnet, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
