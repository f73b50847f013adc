//! The replicated tables, typed: each [`Table`] names its row type, and
//! every row states the rules it must satisfy under its key ([`Row::check`]).
//!
//! One rule set for both doors: a local write is checked before it is
//! versioned, and a record from a peer is checked on its own before it is
//! merged ([`check_record`]); a record that fails is refused alone, never
//! its whole batch.

use std::marker::PhantomData;
use std::net::SocketAddr;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::records::{
    AppRecord, EndpointRecord, IngressFiguresRecord, JoinTokenRecord, NodeInfo, Placement,
    RevisionRecord, SecretRecord, ServiceRecord, TlsCertRecord, TokenRecord, TrustedKey,
    VolumeRecord, VulnDbMeta, VulnRow,
};
use crate::acl::AclPolicy;
use crate::cicd::{PipelineRun, PipelineSpec};
use crate::cloud::ProviderConfig;
use crate::cluster::{Record, RecordKey, validate_node_id};
use crate::helm::{ReleaseRecord, RepoRecord};
use crate::model::{
    DashboardHistory, LogShipping, MAX_REPLICAS, MAX_SECRET_BYTES, MetricsListener, TracingExport,
    ValidationError, validate_domain, validate_name,
};
use crate::policy::NetworkPolicy;
use crate::vuln::ScanPolicy;

/// A row of a replicated table.
pub trait Row: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Checks the value as stored under `key`: the same rules as a user's
    /// input, plus that the key names the value.
    fn check(&self, key: &str) -> Result<(), ValidationError>;
}

/// A replicated table whose rows are `T`.
pub struct Table<T> {
    name: &'static str,
    row: PhantomData<fn() -> T>,
}

impl<T> Clone for Table<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Table<T> {}

impl<T> std::fmt::Debug for Table<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Table({})", self.name)
    }
}

impl<T> std::fmt::Display for Table<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl<T: Row> Table<T> {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            row: PhantomData,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn key(&self, key: impl Into<String>) -> RecordKey {
        RecordKey::new(self.name, key)
    }

    /// Decodes and checks a stored or received value.
    pub fn decode(&self, key: &str, value: &serde_json::Value) -> Result<T, ValidationError> {
        let row: T = T::deserialize(value)
            .map_err(|e| ValidationError::new(self.name, format!("undecodable row: {e}")))?;
        row.check(key)?;
        Ok(row)
    }
}

pub const APPS: Table<AppRecord> = Table::new("apps");
pub const VOLUMES: Table<VolumeRecord> = Table::new("volumes");
pub const PLACEMENTS: Table<Placement> = Table::new("placements");
pub const NODES: Table<NodeInfo> = Table::new("nodes");
/// Subnet claims: key `<network>/<node id>`, value the claiming node's id.
pub const SUBNETS: Table<String> = Table::new("subnets");
pub const SERVICES: Table<ServiceRecord> = Table::new("services");
pub const ENDPOINTS: Table<EndpointRecord> = Table::new("endpoints");
pub const POLICIES: Table<NetworkPolicy> = Table::new("policies");
pub const TOKENS: Table<TokenRecord> = Table::new("tokens");
pub const ACL_POLICIES: Table<AclPolicy> = Table::new("acl_policies");
pub const SECRETS: Table<SecretRecord> = Table::new("secrets");
pub const JOIN_TOKENS: Table<JoinTokenRecord> = Table::new("join_tokens");
pub const TLS_CERTS: Table<TlsCertRecord> = Table::new("tls_certs");
/// Cluster settings of the metrics listener: one row, key [`CLUSTER_SETTING`].
pub const METRICS_LISTENER: Table<MetricsListener> = Table::new("metrics_listener");
/// Cluster settings of the span export: one row, key [`CLUSTER_SETTING`].
pub const TRACING_EXPORT: Table<TracingExport> = Table::new("tracing_export");
/// Cluster settings of the log shipping: one row, key [`CLUSTER_SETTING`].
pub const LOG_SHIPPING: Table<LogShipping> = Table::new("log_shipping");
/// Cluster settings of the dashboard's history: one row, key [`CLUSTER_SETTING`].
pub const DASHBOARD_HISTORY: Table<DashboardHistory> = Table::new("dashboard_history");
/// Each app's recent specs, for `app rollout history|undo`: key `<app>/<revision>`.
pub const REVISIONS: Table<RevisionRecord> = Table::new("revisions");
/// Each node's HTTP ingress figures of the apps under a canary analysis: key `<node id>`.
pub const INGRESS_FIGURES: Table<IngressFiguresRecord> = Table::new("ingress_figures");
/// The vulnerability database's rows: key `<OSV ecosystem>|<package>`.
pub const VULNDB: Table<VulnRow> = Table::new("vulndb");
/// What the vulnerability database holds: one row, key [`CLUSTER_SETTING`].
pub const VULNDB_META: Table<VulnDbMeta> = Table::new("vulndb_meta");
/// Public keys whose cosign signatures admit images: key `<name>`.
pub const TRUSTED_KEYS: Table<TrustedKey> = Table::new("trusted_keys");
/// The cluster's image scan policy for deploys: one row, key [`CLUSTER_SETTING`].
pub const SCAN_POLICY: Table<ScanPolicy> = Table::new("scan_policy");
/// CI/CD pipelines: key `<name>`.
pub const PIPELINES: Table<PipelineSpec> = Table::new("pipelines");
/// Their runs: key `<pipeline>/<run id>`.
pub const PIPELINE_RUNS: Table<PipelineRun> = Table::new("pipeline_runs");
/// Cloud providers' settings: key `<provider>`.
pub const CLOUD_PROVIDERS: Table<ProviderConfig> = Table::new("cloud_providers");
/// Helm chart repositories: key `<name>`.
pub const HELM_REPOS: Table<RepoRecord> = Table::new("helm_repos");
/// Helm release revisions: key `<namespace>/<name>/<revision, 6 digits>`.
pub const HELM_RELEASES: Table<ReleaseRecord> = Table::new("helm_releases");
/// The key of a cluster-wide setting's one row.
pub const CLUSTER_SETTING: &str = "cluster";

/// Every table name, for the checks of records from peers.
pub const TABLE_NAMES: [&str; 28] = [
    APPS.name,
    VOLUMES.name,
    PLACEMENTS.name,
    NODES.name,
    SUBNETS.name,
    SERVICES.name,
    ENDPOINTS.name,
    POLICIES.name,
    TOKENS.name,
    ACL_POLICIES.name,
    SECRETS.name,
    JOIN_TOKENS.name,
    TLS_CERTS.name,
    METRICS_LISTENER.name,
    TRACING_EXPORT.name,
    LOG_SHIPPING.name,
    DASHBOARD_HISTORY.name,
    REVISIONS.name,
    INGRESS_FIGURES.name,
    VULNDB.name,
    VULNDB_META.name,
    SCAN_POLICY.name,
    TRUSTED_KEYS.name,
    PIPELINES.name,
    PIPELINE_RUNS.name,
    CLOUD_PROVIDERS.name,
    HELM_REPOS.name,
    HELM_RELEASES.name,
];

/// The node that alone may write `key`: a node's record, its subnet
/// claims (`<network>/<node id>`) and its ingress figures are its own.
pub fn record_owner(key: &RecordKey) -> Option<String> {
    if key.table == NODES.name || key.table == INGRESS_FIGURES.name {
        Some(key.key.clone())
    } else if key.table == SUBNETS.name {
        key.key.rsplit_once('/').map(|(_, node)| node.to_string())
    } else {
        None
    }
}

/// Checks a record against its table's rules; tombstones only need a known
/// table. The error names the rule the record broke.
pub fn check_record(record: &Record) -> Result<(), ValidationError> {
    let RecordKey { table, key } = &record.key;
    if !TABLE_NAMES.contains(&table.as_str()) {
        return Err(ValidationError::new(
            "table",
            format!("{table:?} is not a replicated table"),
        ));
    }
    let Some(value) = &record.value else {
        return Ok(());
    };
    fn check<T: Row>(
        t: Table<T>,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<(), ValidationError> {
        t.decode(key, value).map(drop)
    }
    match table.as_str() {
        "apps" => check(APPS, key, value),
        "volumes" => check(VOLUMES, key, value),
        "placements" => check(PLACEMENTS, key, value),
        "nodes" => check(NODES, key, value),
        "subnets" => check(SUBNETS, key, value),
        "services" => check(SERVICES, key, value),
        "endpoints" => check(ENDPOINTS, key, value),
        "tokens" => check(TOKENS, key, value),
        "acl_policies" => check(ACL_POLICIES, key, value),
        "secrets" => check(SECRETS, key, value),
        "join_tokens" => check(JOIN_TOKENS, key, value),
        "tls_certs" => check(TLS_CERTS, key, value),
        "metrics_listener" => check(METRICS_LISTENER, key, value),
        "tracing_export" => check(TRACING_EXPORT, key, value),
        "log_shipping" => check(LOG_SHIPPING, key, value),
        "dashboard_history" => check(DASHBOARD_HISTORY, key, value),
        "revisions" => check(REVISIONS, key, value),
        "ingress_figures" => check(INGRESS_FIGURES, key, value),
        "vulndb" => check(VULNDB, key, value),
        "vulndb_meta" => check(VULNDB_META, key, value),
        "scan_policy" => check(SCAN_POLICY, key, value),
        "trusted_keys" => check(TRUSTED_KEYS, key, value),
        "pipelines" => check(PIPELINES, key, value),
        "pipeline_runs" => check(PIPELINE_RUNS, key, value),
        "cloud_providers" => check(CLOUD_PROVIDERS, key, value),
        "helm_repos" => check(HELM_REPOS, key, value),
        "helm_releases" => check(HELM_RELEASES, key, value),
        _ => check(POLICIES, key, value),
    }
}

fn key_names(key: &str, name: &str) -> Result<(), ValidationError> {
    if key == name {
        Ok(())
    } else {
        Err(ValidationError::new(
            "key",
            format!("key {key:?} does not name the row ({name:?})"),
        ))
    }
}

fn node_id(field: &str, id: &str) -> Result<(), ValidationError> {
    validate_node_id(id).map_err(|e| ValidationError::new(field, e.to_string()))
}

/// Printable text of bounded length (names, reasons, node names).
fn text(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max || value.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            format!("must be at most {max} printable characters"),
        ));
    }
    Ok(())
}

/// Container ids are `<app>-<hex>`: a name with a suffix.
fn container_id(field: &str, id: &str) -> Result<(), ValidationError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("{id:?} is not a container id"),
        ))
    }
}

impl Row for AppRecord {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        self.spec.validate()?;
        crate::rollout::check_strategy(&self.spec.strategy)?;
        if let Some(rollout) = &self.rollout {
            rollout.from_spec.validate()?;
            if rollout.from_spec.name != self.spec.name {
                return Err(ValidationError::new(
                    "rollout.from_spec",
                    format!(
                        "{:?} is not the app's name ({:?})",
                        rollout.from_spec.name, self.spec.name
                    ),
                ));
            }
            if rollout.quotas.is_some_and(|q| {
                q.new > crate::model::MAX_REPLICAS || q.old > crate::model::MAX_REPLICAS
            }) {
                return Err(ValidationError::new(
                    "rollout.quotas",
                    format!("at most {} replicas each", crate::model::MAX_REPLICAS),
                ));
            }
        }
        key_names(key, &self.spec.name)
    }
}

impl Row for RevisionRecord {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        self.spec.validate()?;
        if self.app != self.spec.name {
            return Err(ValidationError::new(
                "app",
                format!(
                    "{:?} is not the spec's app ({:?})",
                    self.app, self.spec.name
                ),
            ));
        }
        if self.revision == 0
            || self
                .from_revision
                .is_some_and(|r| r == 0 || r >= self.revision)
        {
            return Err(ValidationError::new(
                "revision",
                "revisions count from 1, and an undo comes from an earlier one",
            ));
        }
        key_names(key, &RevisionRecord::key(&self.app, self.revision))
    }
}

impl Row for VolumeRecord {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        validate_name("name", &self.name)?;
        text("path", &self.path, 4096)?;
        key_names(key, &self.name)
    }
}

impl Row for Placement {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        validate_name("app", &self.app)?;
        if self.nodes.len() > MAX_REPLICAS as usize {
            return Err(ValidationError::new(
                "nodes",
                format!("at most {MAX_REPLICAS} replicas, got {}", self.nodes.len()),
            ));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            node_id(&format!("nodes[{i}]"), node)?;
        }
        key_names(key, &self.app)
    }
}

impl Row for NodeInfo {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        node_id("id", &self.id)?;
        if self.name.is_empty() {
            return Err(ValidationError::new("name", "must not be empty"));
        }
        text("name", &self.name, 253)?;
        self.api.parse::<SocketAddr>().map_err(|_| {
            ValidationError::new("api", format!("{:?} is not an address:port", self.api))
        })?;
        if !self.cpu_cores.is_finite() || self.cpu_cores < 0.0 {
            return Err(ValidationError::new(
                "cpu_cores",
                "must be a finite number ≥ 0",
            ));
        }
        for (k, v) in &self.labels {
            text("labels", k, 63)?;
            text("labels", v, 63)?;
        }
        key_names(key, &self.id)
    }
}

impl Row for String {
    /// A subnet claim: the key is `<network>/<node id>`, the value the node id.
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        let Some((network, node)) = key.split_once('/') else {
            return Err(ValidationError::new(
                "key",
                format!("{key:?} is not <network>/<node id>"),
            ));
        };
        network.parse::<std::net::Ipv4Addr>().map_err(|_| {
            ValidationError::new("key", format!("{network:?} is not an IPv4 network"))
        })?;
        node_id("value", self)?;
        key_names(node, self)
    }
}

impl Row for ServiceRecord {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        validate_name("app", &self.app)?;
        if let Some(domain) = &self.domain {
            validate_domain("domain", domain)?;
        }
        if self.ports.contains(&0) || self.ports.len() > 64 {
            return Err(ValidationError::new(
                "ports",
                "at most 64 ports, each between 1 and 65535",
            ));
        }
        key_names(key, &self.app)
    }
}

/// Advisories one package's row may hold.
pub const MAX_ADVISORIES_PER_PACKAGE: usize = 20_000;

impl Row for VulnRow {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        if crate::vuln::Ecosystem::of_osv(&self.ecosystem).is_none() {
            return Err(ValidationError::new(
                "ecosystem",
                format!("{:?} is not an ecosystem the scanner reads", self.ecosystem),
            ));
        }
        text("ecosystem", &self.ecosystem, 64)?;
        text("package", &self.package, 400)?;
        if self.package.is_empty() {
            return Err(ValidationError::new("package", "must not be empty"));
        }
        if self.advisories.len() > MAX_ADVISORIES_PER_PACKAGE {
            return Err(ValidationError::new(
                "advisories",
                format!("at most {MAX_ADVISORIES_PER_PACKAGE} per package"),
            ));
        }
        for advisory in &self.advisories {
            text("advisories.id", &advisory.id, 128)?;
        }
        key_names(key, &crate::vuln::row_key(&self.ecosystem, &self.package))
    }
}

impl Row for TrustedKey {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        validate_name("name", &self.name)?;
        crate::image::cosign::parse_public_key(&self.pem)
            .map_err(|e| ValidationError::new("public_key", e))?;
        hex("fingerprint", &self.fingerprint, 64)?;
        key_names(key, &self.name)
    }
}

impl Row for PipelineSpec {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        self.validate()?;
        key_names(key, &self.name)
    }
}

impl Row for PipelineRun {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        self.validate()?;
        key_names(key, &self.key())
    }
}

impl Row for ProviderConfig {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        self.validate()?;
        key_names(key, &self.provider)
    }
}

impl Row for RepoRecord {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        self.validate()?;
        key_names(key, &self.name)
    }
}

impl Row for ReleaseRecord {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        self.validate()?;
        key_names(key, &self.key())
    }
}

impl Row for ScanPolicy {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        self.validate()?;
        key_names(key, CLUSTER_SETTING)
    }
}

impl Row for VulnDbMeta {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        for family in self.ecosystems.keys() {
            if crate::vuln::Ecosystem::of_osv(family).is_none() {
                return Err(ValidationError::new(
                    "ecosystems",
                    format!("{family:?} is not an ecosystem the scanner reads"),
                ));
            }
        }
        key_names(key, CLUSTER_SETTING)
    }
}

/// Apps one node's ingress figures may name (an app under a canary rollout each).
pub const MAX_INGRESS_FIGURE_APPS: usize = 1000;

impl Row for IngressFiguresRecord {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        node_id("node_id", &self.node_id)?;
        if self.apps.len() > MAX_INGRESS_FIGURE_APPS {
            return Err(ValidationError::new(
                "apps",
                format!("at most {MAX_INGRESS_FIGURE_APPS} apps"),
            ));
        }
        for (app, figures) in &self.apps {
            validate_name("apps", app)?;
            for side in [&figures.new, &figures.old] {
                if side.server_errors > side.requests {
                    return Err(ValidationError::new(
                        "apps",
                        format!("app {app}: more server errors than requests"),
                    ));
                }
            }
        }
        key_names(key, &self.node_id)
    }
}

impl Row for EndpointRecord {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        container_id("container", &self.container)?;
        validate_name("app", &self.app)?;
        if self.node.is_empty() {
            return Err(ValidationError::new("node", "must not be empty"));
        }
        text("node", &self.node, 253)?;
        if !self.node_id.is_empty() {
            node_id("node_id", &self.node_id)?;
        }
        if let Some(reason) = &self.reason {
            text("reason", reason, 1024)?;
        }
        key_names(key, &self.container)
    }
}

/// `value` is exactly `len` hex digits.
fn hex(field: &str, value: &str, len: usize) -> Result<(), ValidationError> {
    if value.len() == len && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("must be {len} hex digits"),
        ))
    }
}

/// Bytes a seal adds: the nonce (XChaCha20) and the tag.
const SEALED_OVERHEAD: usize = 24 + 16;

impl Row for SecretRecord {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        validate_name("name", &self.name)?;
        key_names(key, &self.name)?;
        check_sealed(self)
    }
}

/// A sealed value's shape: version, size and the lengths of its parts.
fn check_sealed(sealed: &SecretRecord) -> Result<(), ValidationError> {
    if sealed.version == 0 {
        return Err(ValidationError::new("version", "starts at 1"));
    }
    if sealed.size > MAX_SECRET_BYTES as u64 {
        return Err(ValidationError::new(
            "size",
            format!("a secret holds at most {MAX_SECRET_BYTES} bytes"),
        ));
    }
    hex("kek", &sealed.kek, 4 * 2)?;
    hex("data_key", &sealed.data_key, (32 + SEALED_OVERHEAD) * 2)?;
    hex(
        "value",
        &sealed.value,
        (sealed.size as usize + SEALED_OVERHEAD) * 2,
    )
}

/// A TLS domain: a domain name, or `*.` and one (lowercase either way).
pub fn validate_tls_domain(field: &str, domain: &str) -> Result<(), ValidationError> {
    validate_domain(field, domain.strip_prefix("*.").unwrap_or(domain))?;
    if domain.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ValidationError::new(field, "must be lowercase"));
    }
    Ok(())
}

impl Row for MetricsListener {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        key_names(key, CLUSTER_SETTING)?;
        self.validate()
    }
}

impl Row for TracingExport {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        key_names(key, CLUSTER_SETTING)?;
        self.validate()
    }
}

impl Row for LogShipping {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        key_names(key, CLUSTER_SETTING)?;
        self.validate()
    }
}

impl Row for DashboardHistory {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        key_names(key, CLUSTER_SETTING)?;
        self.validate()
    }
}

impl Row for TlsCertRecord {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        validate_tls_domain("domain", &self.domain)?;
        key_names(key, &self.domain)?;
        key_names(&self.key.name, &self.domain)?;
        check_sealed(&self.key)?;
        if self.chain_pem.len() > crate::model::MAX_CERT_CHAIN_BYTES
            || !self.chain_pem.starts_with("-----BEGIN CERTIFICATE-----")
        {
            return Err(ValidationError::new(
                "chain_pem",
                format!(
                    "must be a PEM chain of at most {} bytes",
                    crate::model::MAX_CERT_CHAIN_BYTES
                ),
            ));
        }
        hex("fingerprint", &self.fingerprint, 64)?;
        text("issuer", &self.issuer, 1024)?;
        for name in &self.names {
            text("names", name, 253)?;
        }
        Ok(())
    }
}

impl Row for JoinTokenRecord {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        hex("id", &self.id, 12)?;
        hex("secret_sha256", &self.secret_sha256, 64)?;
        key_names(key, &self.id)
    }
}

impl Row for TokenRecord {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        hex("id", &self.id, 12)?;
        hex("secret_sha256", &self.secret_sha256, 64)?;
        validate_name("name", &self.name)?;
        match (&self.role, &self.policy) {
            (Some(_), None) => {}
            (None, Some(policy)) => validate_name("policy", policy)?,
            _ => {
                return Err(ValidationError::new(
                    "role",
                    "a token has either a role or a policy",
                ));
            }
        }
        key_names(key, &self.id)
    }
}

impl Row for AclPolicy {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        self.validate()?;
        key_names(key, &self.name)
    }
}

impl Row for NetworkPolicy {
    fn check(&self, key: &str) -> Result<(), ValidationError> {
        self.validate()?;
        key_names(key, &self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Hlc;
    use serde_json::json;

    fn record(table: &str, key: &str, value: Option<serde_json::Value>) -> Record {
        Record {
            key: RecordKey::new(table, key),
            version: Hlc {
                wall_ms: 1,
                counter: 0,
                node: 1,
            },
            value,
            signature: None,
        }
    }

    fn app_value(name: &str, volume: &str) -> serde_json::Value {
        json!({
            "spec": {
                "name": name, "image": "busybox", "service": null, "replicas": 1,
                "resources": {"cpu": null, "memory": null},
                "volumes": [{"name": volume, "mountPath": "/data"}],
                "env": {}, "ports": [], "labels": {"app": name}
            },
            "generation": 1, "created_at": 0, "updated_at": 0
        })
    }

    #[test]
    fn revisions_from_peers_are_checked() {
        let revision = |key: &str, app: &str, revision: u64, from: Option<u64>| {
            let mut value = json!({
                "app": app, "revision": revision, "created_at": 0,
                "spec": app_value("web", "data")["spec"].clone(),
            });
            if let Some(from) = from {
                value["from_revision"] = json!(from);
            }
            check_record(&record("revisions", key, Some(value)))
        };
        revision("web/000002", "web", 2, Some(1)).unwrap();
        let field = |r: Result<(), ValidationError>| r.unwrap_err().field;
        assert_eq!(field(revision("web/2", "web", 2, None)), "key");
        assert_eq!(field(revision("db/000002", "db", 2, None)), "app");
        assert_eq!(field(revision("web/000000", "web", 0, None)), "revision");
        assert_eq!(field(revision("web/000002", "web", 2, Some(2))), "revision");
    }

    #[test]
    fn a_valid_app_passes() {
        check_record(&record("apps", "web", Some(app_value("web", "data")))).unwrap();
    }

    #[test]
    fn a_volume_name_with_path_segments_is_refused() {
        let err = check_record(&record(
            "apps",
            "web",
            Some(app_value("web", "../../_data/x")),
        ))
        .unwrap_err();
        assert_eq!(err.field, "volumes[0].name", "{err}");
    }

    #[test]
    fn a_key_that_does_not_name_the_row_is_refused() {
        let err = check_record(&record("apps", "db", Some(app_value("web", "data")))).unwrap_err();
        assert_eq!(err.field, "key", "{err}");
    }

    #[test]
    fn undecodable_rows_and_unknown_tables_are_refused() {
        let err = check_record(&record("apps", "web", Some(json!({"spec": 3})))).unwrap_err();
        assert!(err.message.contains("undecodable"), "{err}");
        let err = check_record(&record("passwords", "x", None)).unwrap_err();
        assert_eq!(err.field, "table");
        check_record(&record("apps", "gone", None)).unwrap();
    }

    #[test]
    fn a_secret_record_must_hold_ciphertext_of_its_stated_size() {
        // The shape sealing gives a 7-byte value.
        let sealed = SecretRecord {
            name: "db".into(),
            version: 1,
            size: 7,
            created_at: 1,
            updated_at: 1,
            kek: "0011aabb".into(),
            data_key: "ab".repeat(32 + SEALED_OVERHEAD),
            value: "cd".repeat(7 + SEALED_OVERHEAD),
        };
        let good = serde_json::to_value(&sealed).unwrap();
        check_record(&record("secrets", "db", Some(good.clone()))).unwrap();
        let err = check_record(&record("secrets", "other", Some(good))).unwrap_err();
        assert_eq!(err.field, "key", "{err}");
        let mut clear = sealed.clone();
        clear.value = "hunter2".into();
        let err = check_record(&record(
            "secrets",
            "db",
            Some(serde_json::to_value(&clear).unwrap()),
        ))
        .unwrap_err();
        assert_eq!(err.field, "value", "{err}");
        let huge = SecretRecord {
            size: MAX_SECRET_BYTES as u64 + 1,
            ..sealed
        };
        let err = check_record(&record(
            "secrets",
            "db",
            Some(serde_json::to_value(&huge).unwrap()),
        ))
        .unwrap_err();
        assert_eq!(err.field, "size", "{err}");
    }

    #[test]
    fn subnet_claims_name_their_node() {
        check_record(&record("subnets", "10.244.1.0/n1", Some(json!("n1")))).unwrap();
        assert!(check_record(&record("subnets", "10.244.1.0/n1", Some(json!("n2")))).is_err());
        assert!(check_record(&record("subnets", "banana/n1", Some(json!("n1")))).is_err());
    }
}
