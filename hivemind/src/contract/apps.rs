//! /api/deploy, /api/apps, /api/scale, /api/restart and app logs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::health::{
    CheckSpec, DEFAULT_INTERVAL_S, DEFAULT_RETRIES, DEFAULT_START_PERIOD_S, DEFAULT_TIMEOUT_S,
    HealthSpec, Probe,
};
use crate::model::{
    Amount, AppSpec, Placement, PublishMode, Resources, SecretMount, StrategySpec, ValidationError,
    VolumeMount, parse_memory, validate_name,
};

/// Memory as JSON: `"512M"` or a number of bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum MemoryValue {
    Bytes(u64),
    Text(String),
}

/// CPUs and memory of one replica.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesRequest {
    /// CPUs as a CFS quota fraction, from 0.01 to 1024 (0.5 = half a core).
    pub cpu: Option<f64>,
    /// e.g. `512M`, `1G` or a number of bytes; at least 6M.
    pub memory: Option<MemoryValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeMountRequest {
    pub name: String,
    /// Absolute path inside the container (`mount_path` is accepted too).
    #[serde(rename = "mountPath", alias = "mount_path")]
    pub mount_path: String,
}

/// How a check asks a container whether it is fine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProbeRequest {
    /// GET http://IP:port/path; a 2xx or 3xx answer is healthy.
    Http { path: String, port: u16 },
    /// A TCP connection to IP:port is accepted.
    Tcp { port: u16 },
    /// The command, run inside the container, exits 0.
    Exec { command: Vec<String> },
}

/// One check (liveness or readiness).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub probe: ProbeRequest,
    /// Seconds between probes, 1 to 3600 (default 10).
    #[serde(default = "default_interval_s")]
    pub interval_s: u64,
    /// Seconds a probe may take, 1 to 3600 (default 1).
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// Consecutive failures that count, 1 to 100 (default 3).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Seconds after start during which failures do not count (default 0).
    #[serde(default = "default_start_period_s")]
    pub start_period_s: u64,
}

fn default_interval_s() -> u64 {
    DEFAULT_INTERVAL_S
}
fn default_timeout_s() -> u64 {
    DEFAULT_TIMEOUT_S
}
fn default_retries() -> u32 {
    DEFAULT_RETRIES
}
fn default_start_period_s() -> u64 {
    DEFAULT_START_PERIOD_S
}

/// Liveness (restart after `retries` failures) and readiness (in or out of
/// the load balancer and DNS); liveness alone serves as readiness too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<CheckRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<CheckRequest>,
}

impl From<ProbeRequest> for Probe {
    fn from(p: ProbeRequest) -> Self {
        match p {
            ProbeRequest::Http { path, port } => Self::Http { path, port },
            ProbeRequest::Tcp { port } => Self::Tcp { port },
            ProbeRequest::Exec { command } => Self::Exec { command },
        }
    }
}

impl From<Probe> for ProbeRequest {
    fn from(p: Probe) -> Self {
        match p {
            Probe::Http { path, port } => Self::Http { path, port },
            Probe::Tcp { port } => Self::Tcp { port },
            Probe::Exec { command } => Self::Exec { command },
        }
    }
}

impl From<CheckRequest> for CheckSpec {
    fn from(c: CheckRequest) -> Self {
        Self {
            probe: c.probe.into(),
            interval_s: c.interval_s,
            timeout_s: c.timeout_s,
            retries: c.retries,
            start_period_s: c.start_period_s,
        }
    }
}

impl From<CheckSpec> for CheckRequest {
    fn from(c: CheckSpec) -> Self {
        Self {
            probe: c.probe.into(),
            interval_s: c.interval_s,
            timeout_s: c.timeout_s,
            retries: c.retries,
            start_period_s: c.start_period_s,
        }
    }
}

impl From<HealthRequest> for HealthSpec {
    fn from(h: HealthRequest) -> Self {
        Self {
            liveness: h.liveness.map(Into::into),
            readiness: h.readiness.map(Into::into),
        }
    }
}

impl From<HealthSpec> for HealthRequest {
    fn from(h: HealthSpec) -> Self {
        Self {
            liveness: h.liveness.map(Into::into),
            readiness: h.readiness.map(Into::into),
        }
    }
}

/// The body of `POST /api/deploy`, as the reference guide writes it.
/// Validated by [`DeployRequest::validate`] (in `crate::model`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Image reference, e.g. `busybox`, `registry:5000/app:1.2`. May be left out for an A/B
    /// test: its first variant's image is the app's.
    #[serde(default)]
    pub image: String,
    /// App name: lowercase letters, digits and '-', starting with a letter, at most 40.
    pub name: String,
    /// Service domain for routing and discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// 0 to 100 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesRequest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMountRequest>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Container ports, 1 to 65535.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Run only on this node (id or name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Liveness and readiness checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthRequest>,
    /// `spread` (default) or `binpack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
    /// Run only on nodes carrying all these labels (`--node-label` of the daemon).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub constraints: BTreeMap<String, String>,
    /// Secrets as read-only files (mode 0400, on a tmpfs); a rotation
    /// rewrites them in running containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretMount>,
    /// Environment variables set from secrets (variable -> secret name), read
    /// at container start; prefer files, which rotate.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// Ports published on every node's address (`--publish 8080:80`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<crate::model::PublishedPort>,
    /// `dsr` (the default: the backend sees the client's own address and answers it directly
    /// from its node) or `snat` (the backend sees the address of the node the client reached and
    /// answers through it; works on any underlay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_mode: Option<String>,
    /// How a redeploy replaces the containers (default: `simple`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<StrategyRequest>,
    /// Scan the image against the vulnerability database before the deploy, with this
    /// policy (it overrides the cluster's: `security scan-policy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_policy: Option<crate::vuln::ScanPolicy>,
    /// Deploy only if the image carries a cosign signature a trusted key verifies (`security
    /// trust add-key`); the cluster's policy may require it too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_signature: bool,
}

/// A number of replicas (`1`) or a percentage of the wanted count (`"25%"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum AmountValue {
    Count(u32),
    Text(String),
}

impl AmountValue {
    fn parse(&self, field: &str) -> Result<Amount, ValidationError> {
        match self {
            Self::Count(n) => Ok(Amount::Count(*n)),
            Self::Text(text) => text.parse().map_err(|e| ValidationError::new(field, e)),
        }
    }
}

/// How a redeploy replaces an app's containers (`--strategy` and its flags).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategyRequest {
    /// `simple` (the default: each node replaces its replicas once their successors are ready
    /// there), `rolling-update` (batches across the cluster), `canary` (a share of the traffic
    /// by weight, in steps) or `blue-green` (the new version beside the old behind a preview
    /// VIP, then one switch) or `ab-testing` (variants side by side, each client on one).
    pub name: String,
    /// Canary: the new version's first share of the traffic, in percent to 0.1 (e.g. `10`,
    /// `2.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<f64>,
    /// Canary: the shares that follow, in percent, rising (e.g. `[20, 50, 100]`); 100 is added
    /// when the last is below.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<f64>,
    /// Canary: seconds each step holds before the analysis lets it go on (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u32>,
    /// Blue-green: seconds every new replica must serve the preview before the switch
    /// (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_timeout: Option<u32>,
    /// Blue-green: seconds the old version is kept after the switch (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay: Option<u32>,
    /// Blue-green: switch only on `rollout promote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_promotion: Option<bool>,
    /// Rolling update: replicas that may be unavailable during the update, a count or a
    /// percentage (default `"25%"`, rounded down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<AmountValue>,
    /// Rolling update: replicas that may run above the wanted count (default `"25%"`, rounded
    /// up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<AmountValue>,
    /// Seconds a new container must stay ready before it counts as available (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_time: Option<u32>,
    /// Seconds the rollout may go without progress before it fails (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<u32>,
    /// Go back to the replaced version by itself when the rollout fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<bool>,
    /// A/B testing: the variants served side by side (at least two), their percentages adding
    /// up to 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<VariantRequest>,
    /// A/B testing: seconds the test runs before it waits for `rollout promote --variant`
    /// (default: until promoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u32>,
}

/// One variant of an A/B test (`--variant "name=v1,image=web:1,percentage=50"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantRequest {
    /// The variant's name: lowercase letters, digits and '-', starting with a letter.
    pub name: String,
    /// The image its containers run.
    pub image: String,
    /// Its share of the clients, in percent to 0.1.
    pub percentage: f64,
}

impl std::str::FromStr for VariantRequest {
    type Err = String;

    /// `name=v1,image=web:1,percentage=50`, as `--variant` takes it.
    fn from_str(text: &str) -> Result<Self, String> {
        let (mut name, mut image, mut percentage) = (None, None, None);
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(format!("{pair:?} is not key=value"));
            };
            let value = value.trim().to_string();
            match key.trim() {
                "name" => name = Some(value),
                "image" => image = Some(value),
                "percentage" => {
                    let p = value.trim_end_matches('%');
                    percentage = Some(
                        p.parse::<f64>()
                            .map_err(|_| format!("percentage {value:?} is not a number"))?,
                    );
                }
                other => {
                    return Err(format!(
                        "unknown key {other:?}: a variant takes name, image and percentage"
                    ));
                }
            }
        }
        match (name, image, percentage) {
            (Some(name), Some(image), Some(percentage)) => Ok(Self {
                name,
                image,
                percentage,
            }),
            _ => Err(format!(
                "{text:?} needs name=..,image=..,percentage=.. (e.g. \"name=v1,image=web:1,percentage=50\")"
            )),
        }
    }
}

/// A percentage to 0.1 (above 0, at most 100) in permille.
fn permille(field: &str, p: f64) -> Result<u32, ValidationError> {
    let scaled = p * 10.0;
    if !(scaled > 0.0 && scaled <= 1000.0) || (scaled - scaled.round()).abs() > 1e-6 {
        return Err(ValidationError::new(
            field,
            format!("{p} is not a percentage above 0 and at most 100, to 0.1"),
        ));
    }
    Ok(scaled.round() as u32)
}

impl StrategyRequest {
    /// `percentage` then `steps`, in permille, ending at 1000.
    fn canary_steps(&self) -> Result<Vec<u32>, ValidationError> {
        let mut steps = Vec::new();
        if let Some(p) = self.percentage {
            steps.push(permille("strategy.percentage", p)?);
        }
        for p in &self.steps {
            let step = permille("strategy.steps", *p)?;
            // `--percentage 20 --steps 20,50,100` lists the first share twice.
            if steps.last() != Some(&step) {
                steps.push(step);
            }
        }
        if steps.last().is_some_and(|last| *last < 1000) {
            steps.push(1000);
        }
        Ok(steps)
    }

    pub fn parse(&self) -> Result<StrategySpec, ValidationError> {
        let defaults = StrategySpec::default();
        let spec = StrategySpec {
            name: self.name.trim().to_string(),
            max_unavailable: self
                .max_unavailable
                .as_ref()
                .map(|a| a.parse("strategy.max_unavailable"))
                .transpose()?,
            max_surge: self
                .max_surge
                .as_ref()
                .map(|a| a.parse("strategy.max_surge"))
                .transpose()?,
            min_ready_secs: self.min_ready_time.unwrap_or(defaults.min_ready_secs),
            progress_deadline_secs: self
                .progress_deadline
                .unwrap_or(defaults.progress_deadline_secs),
            auto_rollback: self.auto_rollback.unwrap_or(false),
            steps: self.canary_steps()?,
            interval_secs: self.interval.unwrap_or(defaults.interval_secs),
            verification_secs: self
                .verification_timeout
                .unwrap_or(defaults.verification_secs),
            scale_down_delay_secs: self
                .scale_down_delay
                .unwrap_or(defaults.scale_down_delay_secs),
            manual_promotion: self.manual_promotion.unwrap_or(false),
            variants: self
                .variants
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    Ok(crate::model::Variant {
                        name: v.name.trim().to_string(),
                        image: v.image.trim().to_string(),
                        share: permille(
                            &format!("strategy.variants[{i}].percentage"),
                            v.percentage,
                        )?,
                    })
                })
                .collect::<Result<_, ValidationError>>()?,
            duration_secs: self.duration,
        };
        spec.validate()?;
        crate::rollout::check_strategy(&spec)?;
        Ok(spec)
    }
}

/// Answer of `POST /api/deploy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeployAnswer {
    pub success: bool,
    /// The first container, as the reference guide answers.
    pub container_id: String,
    pub containers: Vec<String>,
    pub message: String,
}

/// Where an app stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppStatus {
    /// Every replica of the current generation runs and is ready.
    Running,
    /// Some container failed.
    Failing,
    /// None runs yet.
    Pending,
    /// Some, not all, run or are ready.
    Degraded,
}

impl AppStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Failing => "failing",
            Self::Pending => "pending",
            Self::Degraded => "degraded",
        }
    }
}

/// An app as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AppView {
    pub name: String,
    pub image: String,
    pub replicas: u32,
    pub running: u64,
    /// Of the running replicas of the current generation, those that serve.
    pub ready: u64,
    pub status: AppStatus,
    pub service: Option<String>,
    pub containers: Vec<String>,
    pub resources: Resources,
    pub volumes: Vec<VolumeMount>,
    pub env: BTreeMap<String, String>,
    /// Secret files (names and paths; never values).
    pub secrets: Vec<SecretMount>,
    /// Variables set from secrets: variable -> secret name.
    pub secret_env: BTreeMap<String, String>,
    pub ports: Vec<u16>,
    /// Ports published on every node's address.
    #[serde(default)]
    pub publish: Vec<crate::model::PublishedPort>,
    /// How the published ports answer: `dsr` or `snat`.
    #[serde(default)]
    pub publish_mode: crate::model::PublishMode,
    pub labels: BTreeMap<String, String>,
    pub generation: u64,
    pub created_at: u64,
    pub updated_at: u64,
    /// The last scan of its image at a deploy under a scan policy.
    #[serde(default)]
    pub scan: Option<crate::vuln::AppScan>,
}

/// The body of `POST /api/scale`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub name: String,
    /// 0 to 100.
    pub replicas: u32,
}

/// The body of `POST /api/restart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartRequest {
    pub name: String,
}

/// Answer of `POST /api/restart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestartAnswer {
    pub success: bool,
    pub containers: Vec<String>,
    pub message: String,
}

/// The query of the log routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Only the last `tail` lines (of each container).
    pub tail: Option<u64>,
    /// Keep the answer open and stream new lines.
    #[serde(default)]
    pub follow: bool,
    /// Only lines written since then: an RFC 3339 time (`2026-11-30T13:00:00Z`) or a duration
    /// back from now (`10s`, `5m`, `1h30m`).
    #[serde(default)]
    pub since: Option<String>,
    /// Start each line with the time it was written (RFC 3339, UTC).
    #[serde(default)]
    pub timestamps: bool,
}

impl LogQuery {
    /// `since` as nanoseconds since the epoch, checked.
    pub fn since_ns(&self) -> Result<Option<i128>, ValidationError> {
        let Some(since) = &self.since else {
            return Ok(None);
        };
        use time::format_description::well_known::Rfc3339;
        if let Ok(at) = time::OffsetDateTime::parse(since, &Rfc3339) {
            return Ok(Some(at.unix_timestamp_nanos()));
        }
        let back = crate::health::parse::parse_duration("since", since).map_err(|_| {
            ValidationError::new(
                "since",
                format!("{since:?} is neither an RFC 3339 time nor a duration like 10m"),
            )
        })?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        Ok(Some(now - back.as_nanos() as i128))
    }
}

impl DeployRequest {
    /// Parses the request into an app spec (memory sizes, placement names)
    /// and checks it with [`AppSpec::validate`]; `image` is normalized by the
    /// caller, which owns the reference grammar.
    pub fn validate(&self) -> Result<AppSpec, ValidationError> {
        validate_name("name", &self.name)?;
        let mut labels = self.labels.clone();
        if labels.contains_key("app") {
            return Err(ValidationError::new(
                "labels",
                "the label app is set to the app name by hivemind",
            ));
        }
        labels.insert("app".to_string(), self.name.clone());
        let spec = AppSpec {
            name: self.name.clone(),
            image: match (self.image.trim(), &self.strategy) {
                ("", Some(strategy)) if !strategy.variants.is_empty() => {
                    strategy.variants[0].image.trim().to_string()
                }
                (image, _) => image.to_string(),
            },
            service: self.service.clone(),
            replicas: self.replicas.unwrap_or(1),
            resources: self.parsed_resources()?,
            volumes: self
                .volumes
                .iter()
                .map(|v| VolumeMount {
                    name: v.name.clone(),
                    mount_path: v.mount_path.clone(),
                })
                .collect(),
            env: self.env.clone(),
            ports: self.ports.clone(),
            labels,
            node: self.node.clone(),
            health: self.health.clone().map(Into::into).unwrap_or_default(),
            placement: match self.placement.as_deref() {
                None | Some("spread") => Placement::Spread,
                Some("binpack") | Some("bin-pack") => Placement::Binpack,
                Some(other) => {
                    return Err(ValidationError::new(
                        "placement",
                        format!("{other:?} is not a placement: use spread or binpack"),
                    ));
                }
            },
            constraints: self.constraints.clone(),
            secrets: self.secrets.clone(),
            secret_env: self.secret_env.clone(),
            publish: self.publish.clone(),
            strategy: match &self.strategy {
                Some(strategy) => strategy.parse()?,
                None => StrategySpec::default(),
            },
            publish_mode: match self.publish_mode.as_deref() {
                None | Some("dsr") => PublishMode::Dsr,
                Some("snat") => PublishMode::Snat,
                Some(other) => {
                    return Err(ValidationError::new(
                        "publish_mode",
                        format!("{other:?} is not a publish mode: use dsr or snat"),
                    ));
                }
            },
        };
        spec.validate()?;
        Ok(spec)
    }

    fn parsed_resources(&self) -> Result<Resources, ValidationError> {
        let Some(request) = &self.resources else {
            return Ok(Resources::default());
        };
        let memory = match &request.memory {
            None => None,
            Some(MemoryValue::Bytes(bytes)) => Some(*bytes),
            Some(MemoryValue::Text(text)) => Some(parse_memory("resources.memory", text)?),
        };
        Ok(Resources {
            cpu: request.cpu,
            memory,
        })
    }
}

/// One kept revision of an app (`GET /api/apps/{name}/rollout/history`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RevisionView {
    /// 1 for the first deploy, one more for each deploy that changed the spec.
    pub revision: u64,
    /// The image reference it ran.
    pub image: String,
    /// Seconds since the epoch.
    pub created_at: u64,
    /// What differs from the revision before it (top-level spec fields, e.g. `image`, `env`);
    /// empty for the first kept one.
    pub changes: Vec<String>,
    /// The revision an undo brought back, for one made by `rollout undo`.
    pub from_revision: Option<u64>,
    /// The revision the app runs now.
    pub current: bool,
}

/// Body of `POST /api/apps/{name}/rollout/undo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UndoRequest {
    /// The revision to go back to (default: the one before the current).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_revision: Option<u64>,
}

/// Body of `POST /api/apps/{name}/rollout/promote` (which may also be empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// An A/B test's variant to deploy as the app's one version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Where an app's update stands (`GET /api/apps/{name}/rollout`): the containers of its
/// current generation against those of older ones, cluster-wide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RolloutStatus {
    pub app: String,
    /// Bumped by every deploy that changes the spec, and by `restart`.
    pub generation: u64,
    /// The kept revision the app runs (see `rollout/history`).
    pub revision: Option<u64>,
    /// Replicas wanted.
    pub replicas: u32,
    /// Containers of the current generation.
    pub updated: u32,
    /// Of those, the ready ones (they take traffic).
    pub ready: u32,
    /// Containers of older generations still there: each node removes its old ones once its
    /// new ones are ready.
    pub old: u32,
    /// Every replica runs the current generation, ready, and no old container is left.
    pub complete: bool,
    /// Containers that are not ready, and why.
    pub waiting: Vec<WaitingContainer>,
    /// The app's strategy (`simple`, `rolling-update`).
    pub strategy: String,
    /// The last rollout's phase: `progressing`, `paused`, `complete`, `failed` (no progress
    /// within the deadline, held where it is) or `rolled-back`; none since the app was created.
    pub phase: Option<String>,
    /// Why the last rollout failed or went back.
    pub message: Option<String>,
    /// The generation the last rollout replaced (a rollback returns to it).
    pub from_generation: Option<u64>,
    /// While a rollout's quotas bind: replicas of the new generation the cluster may run now,
    /// and of older ones it keeps.
    pub allowed_new: Option<u32>,
    pub allowed_old: Option<u32>,
    /// While a canary splits the traffic: the new generation's share of the connections, in
    /// percent (to 0.1), and the step (from 1) of how many.
    pub traffic_percent: Option<f64>,
    pub step: Option<u32>,
    pub steps: Option<u32>,
    /// An A/B test's variants, with what each served and how it failed.
    #[serde(default)]
    pub variants: Vec<VariantStatus>,
    /// The node that places the app and drives its rollouts (its owner among the live
    /// members, as the answering node sees them); another takes over when it is lost.
    #[serde(default)]
    pub driver: Option<String>,
    /// An A/B test with a duration: when it ends (seconds since the epoch); `test_over` once
    /// it has, and it waits for `rollout promote --variant`.
    #[serde(default)]
    pub test_ends_at: Option<u64>,
    #[serde(default)]
    pub test_over: bool,
    /// While a canary's analysis runs: what the HTTP ingress of every node sent each version
    /// since the current step began (all zero when no request went through the ingress).
    #[serde(default)]
    pub ingress: Option<IngressAnalysis>,
}

/// The HTTP half of a canary's analysis, in its rollout status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IngressAnalysis {
    /// The new version's containers, and the older ones'.
    pub canary: HttpSide,
    pub stable: HttpSide,
}

/// What the ingress sent one version's containers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HttpSide {
    pub requests: u64,
    /// Answered with a 5xx status, or not answered.
    pub failed: u64,
    /// The mean time to the answer (`null` without a request).
    pub mean_latency_ms: Option<f64>,
}

impl From<crate::model::HttpFigures> for HttpSide {
    fn from(figures: crate::model::HttpFigures) -> Self {
        Self {
            requests: figures.requests,
            failed: figures.server_errors,
            mean_latency_ms: figures
                .mean_latency_ms()
                .map(|ms| (ms * 10.0).round() / 10.0),
        }
    }
}

/// One variant of an A/B test in its app's rollout status: cluster-wide figures of its
/// containers of the current generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VariantStatus {
    pub name: String,
    pub image: String,
    /// Its share of the clients, in percent (to 0.1).
    pub percentage: f64,
    /// Replicas it runs for its share.
    pub replicas: u32,
    /// Its containers, and the ready ones.
    pub running: u32,
    pub ready: u32,
    /// Restarts of its containers, and the TCP resets they sent (connections they refused or
    /// broke).
    pub restarts: u64,
    pub resets: u64,
    /// Packets and bytes delivered into its containers, as each node's data plane counted
    /// them (`null` when a node did not answer).
    pub packets_in: Option<u64>,
    pub bytes_in: Option<u64>,
}

/// A container of a rollout that does not take traffic yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WaitingContainer {
    pub container: String,
    pub node: String,
    pub generation: u64,
    /// Its status and why it is not ready (the last readiness check's message).
    pub reason: String,
}
