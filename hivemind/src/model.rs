//! The desired-state model and the validation of everything a user sends.
//!
//! Every REST body and CLI flag that describes an app goes through
//! [`DeployRequest::validate`] before anything changes: a bad field gets an
//! error naming it and the rule it broke.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::validation::ValidationError;

/// Longest app or volume name: container ids, netns and hostnames derive from it.
pub const MAX_NAME_LEN: usize = 40;
/// Upper bound on replicas of one app on a single node.
pub const MAX_REPLICAS: u32 = 100;

/// Checks a DNS-label style name: lowercase letters, digits and '-', starting
/// with a letter, not ending with '-'.
pub fn validate_name(field: &str, name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ValidationError::new(
            field,
            format!(
                "must be at most {MAX_NAME_LEN} characters, got {}",
                name.len()
            ),
        ));
    }
    let first_is_letter = name.starts_with(|c: char| c.is_ascii_lowercase());
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !first_is_letter || !chars_ok || name.ends_with('-') {
        return Err(ValidationError::new(
            field,
            format!(
                "{name:?} is not a valid name: use lowercase letters, digits and '-', \
                 starting with a letter and not ending with '-'"
            ),
        ));
    }
    Ok(())
}

/// Parses a memory size: plain bytes or a number with K, M, G (powers of 1024,
/// as Docker reads `--memory`), optionally followed by `i` and/or `B`.
pub fn parse_memory(field: &str, text: &str) -> Result<u64, ValidationError> {
    let bad = || {
        ValidationError::new(
            field,
            format!("{text:?} is not a memory size; use e.g. 512M, 1G or 67108864"),
        )
    };
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    let without_b = upper.strip_suffix('B').unwrap_or(&upper);
    let without_i = without_b.strip_suffix('I').unwrap_or(without_b);
    let (digits, multiplier) = match without_i.chars().last() {
        Some('K') => (&without_i[..without_i.len() - 1], 1u64 << 10),
        Some('M') => (&without_i[..without_i.len() - 1], 1 << 20),
        Some('G') => (&without_i[..without_i.len() - 1], 1 << 30),
        Some('T') => (&without_i[..without_i.len() - 1], 1 << 40),
        _ => (without_i, 1),
    };
    let value: f64 = digits.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value <= 0.0 {
        return Err(bad());
    }
    let bytes = (value * multiplier as f64) as u64;
    if bytes < MIN_MEMORY {
        return Err(ValidationError::new(
            field,
            format!("{text:?} is below the minimum of 6M that runc accepts"),
        ));
    }
    Ok(bytes)
}

/// runc refuses memory limits below this.
pub const MIN_MEMORY: u64 = 6 << 20;
/// No node here has more: a larger limit is a typo.
pub const MAX_MEMORY: u64 = 1 << 40;
/// Most environment variables of one app, and their size together.
pub const MAX_ENV_VARS: usize = 1000;
pub const MAX_ENV_BYTES: usize = 256 << 10;
/// Largest secret value.
pub const MAX_SECRET_BYTES: usize = 64 << 10;
/// `observability configure-metrics`: every node also serves its metrics on `port` at `path`
/// (plain HTTP, no token, as Prometheus exporters do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsListener {
    pub port: u16,
    /// Where the metrics are, e.g. `/metrics`.
    pub path: String,
}

impl MetricsListener {
    /// The rules of a listener: a port that is no reserved one, an absolute path of plain
    /// characters.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.port == 0 || RESERVED_PORTS.contains(&self.port) {
            return Err(ValidationError::new(
                "port",
                format!(
                    "{} cannot serve metrics: use 1-65535 other than {RESERVED_PORTS:?}",
                    self.port
                ),
            ));
        }
        let plain = |c: char| c.is_ascii_alphanumeric() || "/-_.~".contains(c);
        if !self.path.starts_with('/')
            || self.path.len() > 256
            || !self.path.chars().all(plain)
            || self.path.contains("//")
        {
            return Err(ValidationError::new(
                "path",
                format!(
                    "{:?} is not a path: it starts with / and holds letters, digits and -_.~/ (at most 256)",
                    self.path
                ),
            ));
        }
        Ok(())
    }
}

/// `observability configure-tracing`: every node exports its spans (API requests, deploy
/// steps) over OTLP/HTTP to `endpoint`, as service `service_name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingExport {
    /// The `service.name` of the spans, e.g. `hivemind`.
    pub service_name: String,
    /// The collector: `http://collector:4318` (spans go to its `/v1/traces`) or a full URL
    /// with a path, which is used as it is.
    pub endpoint: String,
}

impl TracingExport {
    /// A service name of 1 to 128 printable characters; an http(s) URL with a host.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let name = &self.service_name;
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "service_name",
                format!("{name:?} is not a service name: 1 to 128 printable characters"),
            ));
        }
        validate_http_url("endpoint", &self.endpoint)
    }
}

/// `observability configure-dashboard`: the Prometheus that scrapes the nodes, which the
/// dashboard's traffic charts read for history beyond the daemons' own 15 minutes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DashboardHistory {
    /// Prometheus's base URL, e.g. `http://prometheus:9090` (its `/api/v1/query_range`).
    pub prometheus: String,
}

impl DashboardHistory {
    /// An http(s) URL with a host.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_http_url("prometheus", &self.prometheus)
    }
}

/// `observability configure-logging`: every node ships its containers' log lines and its own
/// to an Elasticsearch-compatible `_bulk` endpoint, into `index`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogShipping {
    /// The cluster's base URL, e.g. `http://elasticsearch:9200` (lines go to its `/_bulk`).
    pub endpoint: String,
    /// The index the lines go to, e.g. `hivemind-logs`.
    pub index: String,
}

impl LogShipping {
    /// An http(s) URL with a host; an index name Elasticsearch takes: lowercase, 1 to 255
    /// bytes, none of `\ / * ? " < > | , # :` or spaces, not starting with `-`, `_` or `+`.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_http_url("endpoint", &self.endpoint)?;
        let index = &self.index;
        let bad_char = |c: char| {
            c.is_ascii_uppercase()
                || c.is_whitespace()
                || c.is_control()
                || "\\/*?\"<>|,#:".contains(c)
        };
        if index.is_empty()
            || index.len() > 255
            || index.chars().any(bad_char)
            || index.starts_with(['-', '_', '+'])
            || index == "."
            || index == ".."
        {
            return Err(ValidationError::new(
                "index",
                format!(
                    "{index:?} is not an index name: lowercase, 1 to 255 bytes, no spaces or \\/*?\"<>|,#:, not starting with -, _ or +"
                ),
            ));
        }
        Ok(())
    }
}

/// An `http://` or `https://` URL with a host, of at most 2048 characters, without spaces or
/// control characters.
pub fn validate_http_url(field: &str, url: &str) -> Result<(), ValidationError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
    let plain = !url.chars().any(|c| c.is_control() || c.is_whitespace());
    match host {
        Some(host) if !host.is_empty() && url.len() <= 2048 && plain => Ok(()),
        _ => Err(ValidationError::new(
            field,
            format!("{url:?} is not an http:// or https:// URL with a host"),
        )),
    }
}

/// Largest certificate chain the ingress takes, in PEM bytes.
pub const MAX_CERT_CHAIN_BYTES: usize = 64 << 10;
/// Most secrets one app may use.
pub const MAX_APP_SECRETS: usize = 64;

/// Resources of one replica after validation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resources {
    /// CPUs as a CFS quota fraction (0.5 = half a core).
    pub cpu: Option<f64>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VolumeMount {
    pub name: String,
    #[serde(rename = "mountPath")]
    pub mount_path: String,
}

/// A secret as a file in a container: read-only, mode 0400, on a tmpfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretMount {
    /// The secret's name.
    pub name: String,
    /// Absolute path of the file inside the container.
    pub path: String,
}

/// A validated app: what the reconciler keeps running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSpec {
    pub name: String,
    pub image: String,
    pub service: Option<String>,
    pub replicas: u32,
    pub resources: Resources,
    pub volumes: Vec<VolumeMount>,
    pub env: BTreeMap<String, String>,
    pub ports: Vec<u16>,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub health: crate::checks::HealthSpec,
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub constraints: BTreeMap<String, String>,
    /// Secrets as files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretMount>,
    /// Variables set from secrets: variable -> secret name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// Ports published on every node's address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<PublishedPort>,
    /// How published ports answer.
    #[serde(default, skip_serializing_if = "PublishMode::is_default")]
    pub publish_mode: PublishMode,
    /// How a redeploy replaces the containers.
    #[serde(default, skip_serializing_if = "StrategySpec::is_default")]
    pub strategy: StrategySpec,
}

/// How a redeploy replaces an app's containers (`--strategy` and its flags). The strategies
/// themselves are in the `rollout` module, registered by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrategySpec {
    /// A registered strategy: `simple` (each node replaces its replicas once their successors
    /// are ready) or `rolling-update` (batches across the cluster).
    pub name: String,
    /// Rolling update: replicas that may be unavailable during the update (default 25%,
    /// rounded down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<Amount>,
    /// Rolling update: replicas that may run above the wanted count (default 25%, rounded up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<Amount>,
    /// Seconds a new container must stay ready before it counts as available.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_ready_secs: u32,
    /// Seconds a rollout may go without progress before it fails.
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline_secs: u32,
    /// Whether a failed rollout goes back to the version it replaced by itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_rollback: bool,
    /// Canary: the new version's share of the traffic at each step, in permille, rising to
    /// 1000 (`--percentage 10 --steps 50` is 100, 500, 1000).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<u32>,
    /// Canary: seconds each step holds before the analysis lets it go on.
    #[serde(
        default = "default_interval",
        skip_serializing_if = "is_default_interval"
    )]
    pub interval_secs: u32,
    /// Blue-green: seconds every new replica must serve the preview, ready and without
    /// failures, before the switch (unless it waits for `rollout promote`).
    #[serde(
        default = "default_blue_green",
        skip_serializing_if = "is_default_blue_green"
    )]
    pub verification_secs: u32,
    /// Blue-green: seconds the old version is kept after the switch, for an instant undo.
    #[serde(
        default = "default_blue_green",
        skip_serializing_if = "is_default_blue_green"
    )]
    pub scale_down_delay_secs: u32,
    /// Blue-green: switch only on `rollout promote`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual_promotion: bool,
    /// A/B testing: the variants served side by side, each client (by its address) always on
    /// the same one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
    /// A/B testing: seconds the test runs before it waits for `rollout promote --variant`
    /// (none: until promoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u32>,
}

/// One variant of an A/B test: its own image, and its share of the clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    pub name: String,
    pub image: String,
    /// Its share of the clients, in permille; the variants' shares add up to 1000.
    pub share: u32,
}

/// Most variants of one A/B test.
pub const MAX_VARIANTS: usize = 8;
/// Longest A/B test: a year.
pub const MAX_AB_DURATION_S: u32 = 365 * 86_400;

/// Default `verification_secs` and `scale_down_delay_secs` of a blue-green rollout.
pub const DEFAULT_BLUE_GREEN_S: u32 = 30;

fn default_blue_green() -> u32 {
    DEFAULT_BLUE_GREEN_S
}

fn is_default_blue_green(n: &u32) -> bool {
    *n == DEFAULT_BLUE_GREEN_S
}

/// Default `interval_secs` of a canary's steps.
pub const DEFAULT_CANARY_INTERVAL_S: u32 = 60;
/// Most steps a canary takes.
pub const MAX_CANARY_STEPS: usize = 20;

fn default_interval() -> u32 {
    DEFAULT_CANARY_INTERVAL_S
}

fn is_default_interval(n: &u32) -> bool {
    *n == DEFAULT_CANARY_INTERVAL_S
}

/// Default `progress_deadline_secs`, as Kubernetes's `progressDeadlineSeconds`.
pub const DEFAULT_PROGRESS_DEADLINE_S: u32 = 600;
/// Longest `progress_deadline_secs` and `min_ready_secs`: a day.
pub const MAX_ROLLOUT_SECS: u32 = 86_400;

fn default_progress_deadline() -> u32 {
    DEFAULT_PROGRESS_DEADLINE_S
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for StrategySpec {
    fn default() -> Self {
        Self {
            name: "simple".to_string(),
            max_unavailable: None,
            max_surge: None,
            min_ready_secs: 0,
            progress_deadline_secs: DEFAULT_PROGRESS_DEADLINE_S,
            auto_rollback: false,
            steps: Vec::new(),
            interval_secs: DEFAULT_CANARY_INTERVAL_S,
            verification_secs: DEFAULT_BLUE_GREEN_S,
            scale_down_delay_secs: DEFAULT_BLUE_GREEN_S,
            manual_promotion: false,
            variants: Vec::new(),
            duration_secs: None,
        }
    }
}

impl StrategySpec {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// An A/B test's variants: names, images, shares adding up to 100%, duration.
    fn validate_variants(&self) -> Result<(), ValidationError> {
        if self.variants.len() > MAX_VARIANTS {
            return Err(ValidationError::new(
                "strategy.variants",
                format!(
                    "at most {MAX_VARIANTS} variants, got {}",
                    self.variants.len()
                ),
            ));
        }
        for (i, variant) in self.variants.iter().enumerate() {
            validate_name(&format!("strategy.variants[{i}].name"), &variant.name)?;
            validate_image(&format!("strategy.variants[{i}].image"), &variant.image)?;
            if variant.share == 0 || variant.share > 1000 {
                return Err(ValidationError::new(
                    format!("strategy.variants[{i}].percentage"),
                    "must be above 0 and at most 100, to 0.1",
                ));
            }
            if self.variants[..i].iter().any(|v| v.name == variant.name) {
                return Err(ValidationError::new(
                    format!("strategy.variants[{i}].name"),
                    format!("{:?} is named twice", variant.name),
                ));
            }
        }
        let total: u32 = self.variants.iter().map(|v| v.share).sum();
        if !self.variants.is_empty() && total != 1000 {
            return Err(ValidationError::new(
                "strategy.variants",
                format!(
                    "the percentages add up to {}%, not 100%",
                    f64::from(total) / 10.0
                ),
            ));
        }
        if let Some(secs) = self.duration_secs
            && (secs == 0 || secs > MAX_AB_DURATION_S)
        {
            return Err(ValidationError::new(
                "strategy.duration",
                format!("must be 1 to {MAX_AB_DURATION_S} s, got {secs}"),
            ));
        }
        Ok(())
    }

    /// The rules that do not depend on which strategies exist (the name is checked against
    /// the registry by the caller).
    pub fn validate(&self) -> Result<(), ValidationError> {
        for (field, amount) in [
            ("strategy.max_unavailable", self.max_unavailable),
            ("strategy.max_surge", self.max_surge),
        ] {
            if let Some(Amount::Percent(p)) = amount
                && p > 100
            {
                return Err(ValidationError::new(
                    field,
                    format!("{p}% is more than 100%"),
                ));
            }
            if let Some(Amount::Count(n)) = amount
                && n > MAX_REPLICAS
            {
                return Err(ValidationError::new(
                    field,
                    format!("must be at most {MAX_REPLICAS}, got {n}"),
                ));
            }
        }
        if self.max_unavailable.is_some_and(Amount::is_zero)
            && self.max_surge.is_some_and(Amount::is_zero)
        {
            return Err(ValidationError::new(
                "strategy.max_surge",
                "max_surge and max_unavailable cannot both be 0: the update could never start",
            ));
        }
        for (field, secs) in [
            ("strategy.min_ready_secs", self.min_ready_secs),
            (
                "strategy.progress_deadline_secs",
                self.progress_deadline_secs,
            ),
            ("strategy.verification_secs", self.verification_secs),
            ("strategy.scale_down_delay_secs", self.scale_down_delay_secs),
        ] {
            if secs > MAX_ROLLOUT_SECS {
                return Err(ValidationError::new(
                    field,
                    format!("must be at most {MAX_ROLLOUT_SECS} s, got {secs}"),
                ));
            }
        }
        if self.steps.len() > MAX_CANARY_STEPS {
            return Err(ValidationError::new(
                "strategy.steps",
                format!("at most {MAX_CANARY_STEPS} steps, got {}", self.steps.len()),
            ));
        }
        if self.steps.windows(2).any(|w| w[0] >= w[1])
            || self.steps.first().is_some_and(|s| *s == 0)
            || self.steps.last().is_some_and(|s| *s != 1000)
        {
            return Err(ValidationError::new(
                "strategy.steps",
                "shares must rise from above 0% to 100%",
            ));
        }
        if self.interval_secs == 0 || self.interval_secs > MAX_ROLLOUT_SECS {
            return Err(ValidationError::new(
                "strategy.interval_secs",
                format!(
                    "must be 1 to {MAX_ROLLOUT_SECS} s, got {}",
                    self.interval_secs
                ),
            ));
        }
        if self.progress_deadline_secs == 0 {
            return Err(ValidationError::new(
                "strategy.progress_deadline_secs",
                "must be at least 1 s",
            ));
        }
        self.validate_variants()?;
        if self.min_ready_secs >= self.progress_deadline_secs {
            return Err(ValidationError::new(
                "strategy.min_ready_secs",
                format!(
                    "{} s leaves no time within the progress deadline of {} s",
                    self.min_ready_secs, self.progress_deadline_secs
                ),
            ));
        }
        Ok(())
    }
}

/// A number of replicas, absolute (`2`) or a percentage of the wanted count (`25%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    Count(u32),
    Percent(u32),
}

impl Amount {
    fn is_zero(self) -> bool {
        matches!(self, Self::Count(0) | Self::Percent(0))
    }

    /// The count for `replicas`, a percentage rounded up or down.
    pub fn of(self, replicas: u32, round_up: bool) -> u32 {
        match self {
            Self::Count(n) => n,
            Self::Percent(p) if round_up => (replicas * p).div_ceil(100),
            Self::Percent(p) => replicas * p / 100,
        }
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl std::str::FromStr for Amount {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || format!("{s:?} is neither a count (2) nor a percentage (25%)");
        match s.strip_suffix('%') {
            Some(p) => p.parse().map(Self::Percent).map_err(|_| bad()),
            None => s.parse().map(Self::Count).map_err(|_| bad()),
        }
    }
}

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Requests the HTTP ingress sent to one side of a rollout (the new generation's containers,
/// or the older ones'), and how they went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpFigures {
    /// Requests sent, each attempt on a backend counted (a retry on another one is another).
    pub requests: u64,
    /// Of those, the ones answered with a 5xx status or not answered at all (the backend
    /// refused or dropped the connection).
    pub server_errors: u64,
    /// The time from sending to the answer's head (or to the failure), summed over the
    /// requests, in microseconds.
    pub latency_us: u64,
}

impl HttpFigures {
    pub fn add(&mut self, other: &Self) {
        self.requests = self.requests.saturating_add(other.requests);
        self.server_errors = self.server_errors.saturating_add(other.server_errors);
        self.latency_us = self.latency_us.saturating_add(other.latency_us);
    }

    /// What was counted since `base` (a count that went back, after a restart, counts from 0).
    pub fn since(&self, base: &Self) -> Self {
        if self.requests < base.requests {
            return *self;
        }
        Self {
            requests: self.requests - base.requests,
            server_errors: self.server_errors.saturating_sub(base.server_errors),
            latency_us: self.latency_us.saturating_sub(base.latency_us),
        }
    }

    /// The mean time to an answer, in milliseconds (none without a request).
    pub fn mean_latency_ms(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.latency_us as f64 / self.requests as f64 / 1000.0)
    }
}

/// An update in progress (or the last one) of an app, in its record: the driving node (the
/// app's owner) moves it on, every node follows its quotas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The strategy driving it.
    pub strategy: String,
    /// The generation it replaces, and the spec that ran it: a rollback returns to both,
    /// keeping the containers of that generation that still run.
    pub from_generation: u64,
    pub from_spec: Box<AppSpec>,
    /// The generation it brings.
    pub to_generation: u64,
    /// How many replicas of each generation the cluster may run now; `None`: every node
    /// replaces its own replicas once their successors are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<Quotas>,
    pub phase: RolloutPhase,
    /// Milliseconds since the epoch: the start, and the last progress (a new replica available,
    /// an old one gone).
    pub started_ms: u64,
    pub progressed_ms: u64,
    /// The most new replicas seen available, and the fewest old ones seen.
    #[serde(default)]
    pub best_available: u32,
    #[serde(default)]
    pub fewest_old: u32,
    /// Why it failed, stopped or went back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The new generation's share of the service's connections, in permille, while a strategy
    /// splits traffic by weight; `None`: every ready replica weighs the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// A stepped strategy's step, since when it holds (ms since the epoch), and the failures
    /// of the new and the old generation counted when it began (for the analysis).
    #[serde(default)]
    pub step: u32,
    #[serde(default)]
    pub step_started_ms: u64,
    #[serde(default)]
    pub failures_at_step: u64,
    #[serde(default)]
    pub stable_failures_at_step: u64,
}

impl Rollout {
    /// Whether its quotas still bind the nodes.
    pub fn is_active(&self) -> bool {
        matches!(
            self.phase,
            RolloutPhase::Progressing | RolloutPhase::Paused | RolloutPhase::Failed
        )
    }
}

/// Replicas of the new generation and of older ones the cluster may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    pub new: u32,
    pub old: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutPhase {
    /// The driver moves it on.
    Progressing,
    /// `rollout pause`: held where it is until `rollout resume`.
    Paused,
    /// Every replica runs the new generation, ready; no old one is left.
    Complete,
    /// No progress within the deadline, without auto-rollback: held where it is.
    Failed,
    /// Back on the generation it replaced (automatically, by `abort` or by `undo`).
    RolledBack,
}

impl RolloutPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Progressing => "progressing",
            Self::Paused => "paused",
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::RolledBack => "rolled-back",
        }
    }
}

/// How a published port's connections reach a backend on another node and come back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// Direct server return: the backend sees the client's own address and answers it from its
    /// own node, with the address of the node the client reached as the source (the underlay
    /// must let a node send with another node's address).
    #[default]
    Dsr,
    /// Source NAT: the node the client reached gives its packets its own gateway address as
    /// the source, so the backend answers through that node; the backend does not see the
    /// client's address. Works on any underlay.
    Snat,
}

impl PublishMode {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dsr => "dsr",
            Self::Snat => "snat",
        }
    }
}

/// A port published on every node: `<any node address>:published` reaches the app's service
/// port `target`, balanced over the ready backends of every node. The backend sees the
/// client's own address and answers it directly from its node (direct server return).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct PublishedPort {
    /// The port on every node, 1 to 65535, not one the node itself uses (53, 4789, 7946).
    pub published: u16,
    /// The app's port it reaches: one of its `ports` (80 when it lists none).
    pub target: u16,
}

/// Port of a service whose app declares none.
pub const DEFAULT_PORT: u16 = 80;

/// Ports a node itself answers on, which no app may publish: DNS, VXLAN, gossip.
pub const RESERVED_PORTS: [u16; 3] = [53, hivemind_common::VXLAN_PORT, 7946];

impl std::str::FromStr for PublishedPort {
    type Err = String;

    /// `PUBLISHED:TARGET`, e.g. `8080:80`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (published, target) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not PUBLISHED:TARGET, like 8080:80"))?;
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{p:?} is not a port from 1 to 65535"))
        };
        Ok(Self {
            published: port(published)?,
            target: port(target)?,
        })
    }
}

/// How replicas are placed over nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Fewest replicas of the app per node first.
    #[default]
    Spread,
    /// Fill the fullest node that still fits first.
    Binpack,
}

/// Most CPUs one replica may ask for.
pub const MAX_CPU: f64 = 1024.0;
pub use crate::checks::{MAX_HEALTH_PERIOD_S, MAX_HEALTH_RETRIES};

/// Checks an image reference: not empty, at most 512 characters, no spaces.
fn validate_image(field: &str, image: &str) -> Result<(), ValidationError> {
    if image.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if image.len() > 512 || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ValidationError::new(
            field,
            "must be an image reference of at most 512 characters without spaces",
        ));
    }
    Ok(())
}

/// The strategy that serves variants side by side.
pub const AB_TESTING: &str = "ab-testing";

impl AppSpec {
    /// The variants this app serves side by side (an A/B test), none otherwise.
    pub fn variants(&self) -> &[Variant] {
        if self.strategy.name == AB_TESTING {
            &self.strategy.variants
        } else {
            &[]
        }
    }

    /// This spec as the version an app goes back to (a rollback's or an undo's target) from
    /// `current`: with the current replica count and strategy, which going back keeps. An A/B
    /// test's variants are what runs, though: when either side is one, the strategy is this
    /// spec's own.
    pub fn going_back_from(&self, current: &AppSpec) -> AppSpec {
        let own = !self.variants().is_empty() || !current.variants().is_empty();
        AppSpec {
            replicas: current.replicas,
            strategy: if own {
                self.strategy.clone()
            } else {
                current.strategy.clone()
            },
            ..self.clone()
        }
    }

    /// What the containers of `variant` run: this spec with the variant's image.
    pub fn for_variant(&self, variant: &Variant) -> AppSpec {
        AppSpec {
            image: variant.image.clone(),
            ..self.clone()
        }
    }

    /// The rules every app satisfies, wherever it comes from: a user's
    /// request (through [`DeployRequest::validate`]) or a record from a peer.
    /// The error names the first bad field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name("name", &self.name)?;
        validate_image("image", &self.image)?;
        if self.replicas > MAX_REPLICAS {
            return Err(ValidationError::new(
                "replicas",
                format!("must be at most {MAX_REPLICAS}, got {}", self.replicas),
            ));
        }
        if let Some(service) = &self.service {
            validate_domain("service", service)?;
        }
        self.validate_resources()?;
        self.validate_volumes()?;
        self.validate_secrets()?;
        if self.env.len() > MAX_ENV_VARS {
            return Err(ValidationError::new(
                "env",
                format!("at most {MAX_ENV_VARS} variables, got {}", self.env.len()),
            ));
        }
        let env_bytes: usize = self.env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        if env_bytes > MAX_ENV_BYTES {
            return Err(ValidationError::new(
                "env",
                format!("{env_bytes} bytes in all, the limit is {MAX_ENV_BYTES}"),
            ));
        }
        for (key, value) in &self.env {
            validate_env("env", key, value)?;
        }
        for (index, port) in self.ports.iter().enumerate() {
            if *port == 0 {
                return Err(ValidationError::new(
                    format!("ports[{index}]"),
                    "must be between 1 and 65535",
                ));
            }
        }
        self.validate_publish()?;
        if self.labels.get("app") != Some(&self.name) {
            return Err(ValidationError::new(
                "labels",
                format!("the label app must be the app name {}", self.name),
            ));
        }
        for (key, value) in self.labels.iter().filter(|(k, _)| *k != "app") {
            validate_label(key, value)?;
        }
        if let Some(node) = &self.node
            && (node.is_empty()
                || node.len() > 253
                || node.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(ValidationError::new(
                "node",
                format!("{node:?} is not a node id or name"),
            ));
        }
        self.validate_health()?;
        self.strategy.validate()?;
        for (key, value) in &self.constraints {
            validate_label(key, value)
                .map_err(|e| ValidationError::new("constraints", e.message))?;
        }
        Ok(())
    }

    fn validate_publish(&self) -> Result<(), ValidationError> {
        let ports: &[u16] = if self.ports.is_empty() {
            &[DEFAULT_PORT]
        } else {
            &self.ports
        };
        for (index, p) in self.publish.iter().enumerate() {
            let field = format!("publish[{index}]");
            if p.published == 0 || p.target == 0 {
                return Err(ValidationError::new(
                    field,
                    "ports must be between 1 and 65535",
                ));
            }
            if RESERVED_PORTS.contains(&p.published) {
                return Err(ValidationError::new(
                    field,
                    format!(
                        "port {} is the node's own (DNS 53, VXLAN {}, gossip 7946)",
                        p.published,
                        hivemind_common::VXLAN_PORT
                    ),
                ));
            }
            if !ports.contains(&p.target) {
                return Err(ValidationError::new(
                    field,
                    format!(
                        "{} is not a port of the app ({ports:?}); add it with --port",
                        p.target
                    ),
                ));
            }
            if self.publish[..index]
                .iter()
                .any(|q| q.published == p.published)
            {
                return Err(ValidationError::new(
                    field,
                    format!("port {} is published twice", p.published),
                ));
            }
            if self.publish[..index].iter().any(|q| q.target == p.target) {
                return Err(ValidationError::new(
                    field,
                    format!("port {} of the app is published twice", p.target),
                ));
            }
        }
        Ok(())
    }

    fn validate_resources(&self) -> Result<(), ValidationError> {
        if let Some(cpu) = self.resources.cpu
            && !(cpu.is_finite() && (0.01..=MAX_CPU).contains(&cpu))
        {
            return Err(ValidationError::new(
                "resources.cpu",
                format!("{cpu} is out of range: use a number of CPUs from 0.01 to {MAX_CPU}"),
            ));
        }
        if let Some(bytes) = self.resources.memory
            && bytes < MIN_MEMORY
        {
            return Err(ValidationError::new(
                "resources.memory",
                format!("{bytes} bytes is below the minimum of 6M that runc accepts"),
            ));
        }
        if let Some(bytes) = self.resources.memory
            && bytes > MAX_MEMORY
        {
            return Err(ValidationError::new(
                "resources.memory",
                format!("{bytes} bytes is above the maximum of 1T"),
            ));
        }
        Ok(())
    }

    fn validate_health(&self) -> Result<(), ValidationError> {
        use crate::checks::Probe;
        for (name, check) in [
            ("liveness", &self.health.liveness),
            ("readiness", &self.health.readiness),
        ] {
            let Some(check) = check else { continue };
            let field = |f: &str| format!("health.{name}.{f}");
            match &check.probe {
                Probe::Http { path, port } => {
                    if !path.starts_with('/')
                        || path.len() > 2048
                        || path.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        return Err(ValidationError::new(
                            field("probe.path"),
                            format!("{path:?} must be an absolute URL path"),
                        ));
                    }
                    if *port == 0 {
                        return Err(ValidationError::new(
                            field("probe.port"),
                            "must be between 1 and 65535",
                        ));
                    }
                }
                Probe::Tcp { port } if *port == 0 => {
                    return Err(ValidationError::new(
                        field("probe.port"),
                        "must be between 1 and 65535",
                    ));
                }
                Probe::Exec { command } if command.is_empty() => {
                    return Err(ValidationError::new(
                        field("probe.command"),
                        "must not be empty",
                    ));
                }
                _ => {}
            }
            for (f, value) in [
                ("interval_s", check.interval_s),
                ("timeout_s", check.timeout_s),
            ] {
                if !(1..=MAX_HEALTH_PERIOD_S).contains(&value) {
                    return Err(ValidationError::new(
                        field(f),
                        format!("must be between 1 and {MAX_HEALTH_PERIOD_S}"),
                    ));
                }
            }
            if check.start_period_s > MAX_HEALTH_PERIOD_S {
                return Err(ValidationError::new(
                    field("start_period_s"),
                    format!("must be at most {MAX_HEALTH_PERIOD_S}"),
                ));
            }
            if !(1..=MAX_HEALTH_RETRIES).contains(&check.retries) {
                return Err(ValidationError::new(
                    field("retries"),
                    format!("must be between 1 and {MAX_HEALTH_RETRIES}"),
                ));
            }
        }
        Ok(())
    }

    fn validate_secrets(&self) -> Result<(), ValidationError> {
        if self.secrets.len() + self.secret_env.len() > MAX_APP_SECRETS {
            return Err(ValidationError::new(
                "secrets",
                format!("an app uses at most {MAX_APP_SECRETS} secrets"),
            ));
        }
        let mut seen: std::collections::BTreeSet<&str> =
            self.volumes.iter().map(|v| v.mount_path.as_str()).collect();
        for (index, secret) in self.secrets.iter().enumerate() {
            validate_name(&format!("secrets[{index}].name"), &secret.name)?;
            let field = format!("secrets[{index}].path");
            validate_mount_target(&field, &secret.path)?;
            if !seen.insert(secret.path.as_str()) {
                return Err(ValidationError::new(
                    field,
                    format!("{} is mounted twice", secret.path),
                ));
            }
        }
        for (variable, secret) in &self.secret_env {
            validate_env("secret_env", variable, "")?;
            validate_name(&format!("secret_env.{variable}"), secret)?;
            if self.env.contains_key(variable) {
                return Err(ValidationError::new(
                    format!("secret_env.{variable}"),
                    format!("{variable} is set by env too"),
                ));
            }
        }
        Ok(())
    }

    /// Every secret the app uses, by name, once each.
    pub fn secret_names(&self) -> std::collections::BTreeSet<&str> {
        self.secrets
            .iter()
            .map(|s| s.name.as_str())
            .chain(self.secret_env.values().map(String::as_str))
            .collect()
    }

    fn validate_volumes(&self) -> Result<(), ValidationError> {
        let mut seen = std::collections::BTreeSet::new();
        for (index, volume) in self.volumes.iter().enumerate() {
            validate_name(&format!("volumes[{index}].name"), &volume.name)?;
            validate_mount_target(&format!("volumes[{index}].mountPath"), &volume.mount_path)?;
            if !seen.insert(volume.mount_path.as_str()) {
                return Err(ValidationError::new(
                    format!("volumes[{index}].mountPath"),
                    format!("{} is mounted twice", volume.mount_path),
                ));
            }
        }
        Ok(())
    }
}

/// Mount points the runtime owns: the kernel's filesystems and the files
/// Hivemind writes into every container. A volume may not cover them.
const RESERVED_TARGETS: &[&str] = &["/proc", "/sys", "/dev"];
const RESERVED_FILES: &[&str] = &["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];

/// Where a volume may be mounted in a container: an absolute, normalized
/// path, not under `/proc`, `/sys` or `/dev` and not one of the files the
/// runtime writes.
pub fn validate_mount_target(field: &str, path: &str) -> Result<(), ValidationError> {
    validate_mount_path(field, path)?;
    let under = |root: &str| path == root || path.starts_with(&format!("{root}/"));
    if let Some(root) = RESERVED_TARGETS.iter().find(|root| under(root)) {
        return Err(ValidationError::new(
            field,
            format!("{path} is under {root}, which the runtime mounts"),
        ));
    }
    if RESERVED_FILES.contains(&path) {
        return Err(ValidationError::new(
            field,
            format!("{path} is written by hivemind into every container"),
        ));
    }
    Ok(())
}

/// An absolute, normalized path that is not `/` and has no `..`.
pub fn validate_mount_path(field: &str, path: &str) -> Result<(), ValidationError> {
    let ok = path.starts_with('/')
        && path != "/"
        && !path.contains('\0')
        && path
            .split('/')
            .skip(1)
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("{path:?} must be an absolute path other than / without empty, . or .. parts"),
        ))
    }
}

fn validate_env(field: &str, key: &str, value: &str) -> Result<(), ValidationError> {
    let key_ok = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !key_ok {
        return Err(ValidationError::new(
            field,
            format!("{key:?} is not a valid variable name: use letters, digits and '_'"),
        ));
    }
    if value.contains('\0') {
        return Err(ValidationError::new(
            format!("{field}.{key}"),
            "must not contain NUL bytes",
        ));
    }
    Ok(())
}

fn validate_label(key: &str, value: &str) -> Result<(), ValidationError> {
    let ok = |s: &str| {
        s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    };
    if key.is_empty() || !ok(key) || !ok(value) {
        return Err(ValidationError::new(
            "labels",
            format!(
                "{key}={value} is not a valid label: keys and values are at most 63 of \
                 letters, digits, '-', '_', '.', '/'"
            ),
        ));
    }
    if key == "app" {
        return Err(ValidationError::new(
            "labels",
            "the label app is set to the app name by hivemind",
        ));
    }
    Ok(())
}

/// A domain name such as `app.example.com` (labels of letters, digits, '-').
pub fn validate_domain(field: &str, domain: &str) -> Result<(), ValidationError> {
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("{domain:?} is not a valid domain name"),
        ))
    }
}

/// Parses `K=V` as the CLI takes `--env` and `--label`.
pub fn parse_key_value(field: &str, text: &str) -> Result<(String, String), ValidationError> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(ValidationError::new(
            field,
            format!("{text:?} must have the form KEY=VALUE"),
        )),
    }
}

/// Parses `name:/path` as the CLI takes `--volume`.
pub fn parse_volume(text: &str) -> Result<VolumeMount, ValidationError> {
    match text.split_once(':') {
        Some((name, path)) => {
            validate_name("volume", name)?;
            validate_mount_target("volume", path)?;
            Ok(VolumeMount {
                name: name.to_string(),
                mount_path: path.to_string(),
            })
        }
        None => Err(ValidationError::new(
            "volume",
            format!("{text:?} must have the form NAME:/path"),
        )),
    }
}

/// Parses `name:/path` as the CLI takes `--secret`.
pub fn parse_secret(text: &str) -> Result<SecretMount, ValidationError> {
    match text.split_once(':') {
        Some((name, path)) => {
            validate_name("secret", name)?;
            validate_mount_target("secret", path)?;
            Ok(SecretMount {
                name: name.to_string(),
                path: path.to_string(),
            })
        }
        None => Err(ValidationError::new(
            "secret",
            format!("{text:?} must have the form NAME:/path"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{DeployRequest, ResourcesRequest, VolumeMountRequest};

    /// Going back keeps the current count and strategy, but never turns a plain version into
    /// an A/B test or an A/B test into a plain version.
    #[test]
    fn going_back_keeps_the_strategy_but_not_across_an_ab_test() {
        let plain = request().validate().expect("valid");
        let canary = AppSpec {
            replicas: 4,
            strategy: StrategySpec {
                name: "canary".into(),
                steps: vec![100, 1000],
                ..StrategySpec::default()
            },
            ..plain.clone()
        };
        let back = plain.going_back_from(&canary);
        assert_eq!((back.replicas, back.strategy), (4, canary.strategy.clone()));
        let ab = AppSpec {
            strategy: StrategySpec {
                name: AB_TESTING.into(),
                variants: vec![
                    Variant {
                        name: "a".into(),
                        image: "web:a".into(),
                        share: 500,
                    },
                    Variant {
                        name: "b".into(),
                        image: "web:b".into(),
                        share: 500,
                    },
                ],
                ..StrategySpec::default()
            },
            ..canary.clone()
        };
        // Aborting an A/B test's rollout: back to the plain version, no variants.
        let back = plain.going_back_from(&ab);
        assert!(back.variants().is_empty() && back.strategy == plain.strategy);
        // Undoing a promotion: back to the test, variants and all.
        assert_eq!(ab.going_back_from(&canary).variants(), ab.variants());
    }

    #[test]
    fn published_ports_parse_and_are_checked() {
        let p: PublishedPort = "8080:80".parse().unwrap();
        assert_eq!(
            p,
            PublishedPort {
                published: 8080,
                target: 80
            }
        );
        for bad in ["8080", "0:80", "8080:0", "x:80", "8080:70000", ":"] {
            assert!(bad.parse::<PublishedPort>().is_err(), "{bad}");
        }
        let field = |r: &DeployRequest| r.validate().unwrap_err().field;
        let mut r = request();
        r.publish = vec![p];
        assert_eq!(r.validate().unwrap().publish, vec![p]);
        // The target must be one of the app's ports (80 when it lists none).
        r.ports = vec![8000];
        assert_eq!(field(&r), "publish[0]");
        r.ports = vec![80, 8000];
        r.publish.push(PublishedPort {
            published: 8080,
            target: 8000,
        });
        assert_eq!(field(&r), "publish[1]", "a port published twice");
        r.publish[1].published = 7946;
        assert_eq!(field(&r), "publish[1]", "the node's gossip port");
        r.publish[1] = PublishedPort {
            published: 9000,
            target: 80,
        };
        assert_eq!(field(&r), "publish[1]", "a target published twice");
        r.publish.truncate(1);
        r.publish_mode = Some("nat".into());
        assert_eq!(field(&r), "publish_mode");
        r.publish_mode = Some("snat".into());
        assert_eq!(r.validate().map(|s| s.publish_mode), Ok(PublishMode::Snat));
        r.publish_mode = Some("dsr".into());
        assert_eq!(r.validate().map(|s| s.publish_mode), Ok(PublishMode::Dsr));
    }

    #[test]
    fn secrets_need_names_own_paths_and_no_clash_with_env() {
        let mut r = request();
        r.secrets = vec![SecretMount {
            name: "db".into(),
            path: "/etc/secrets/db".into(),
        }];
        r.secret_env.insert("DB_PASSWORD".into(), "db".into());
        let spec = r.validate().unwrap();
        assert_eq!(spec.secret_names().into_iter().collect::<Vec<_>>(), ["db"]);

        let mut bad = r.clone();
        bad.secrets[0].path = "/proc/x".into();
        assert_eq!(bad.validate().unwrap_err().field, "secrets[0].path");
        let mut bad = r.clone();
        bad.volumes = vec![VolumeMountRequest {
            name: "data".into(),
            mount_path: "/etc/secrets/db".into(),
        }];
        assert!(
            bad.validate()
                .unwrap_err()
                .message
                .contains("mounted twice")
        );
        let mut bad = r.clone();
        bad.env.insert("DB_PASSWORD".into(), "x".into());
        assert_eq!(bad.validate().unwrap_err().field, "secret_env.DB_PASSWORD");
        let mut bad = r.clone();
        bad.secret_env.insert("OK".into(), "Not A Name".into());
        assert_eq!(bad.validate().unwrap_err().field, "secret_env.OK");
        assert!(parse_secret("db:/run/db").is_ok());
        assert!(parse_secret("db").is_err());
        assert!(parse_secret("db:/etc/hosts").is_err());
    }

    fn request() -> DeployRequest {
        DeployRequest {
            image: "busybox".into(),
            name: "web".into(),
            ..Default::default()
        }
    }

    #[test]
    fn names_follow_dns_label_rules() {
        assert!(validate_name("name", "web-1").is_ok());
        for bad in ["", "Web", "1web", "web-", "we_b", &"a".repeat(41)] {
            let err = validate_name("name", bad).unwrap_err();
            assert_eq!(err.field, "name", "{bad}");
        }
    }

    #[test]
    fn memory_sizes_parse_like_docker() {
        assert_eq!(parse_memory("m", "512M").unwrap(), 512 << 20);
        assert_eq!(parse_memory("m", "1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("m", "64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_memory("m", "67108864").unwrap(), 64 << 20);
        assert!(parse_memory("m", "lots").is_err());
        assert!(parse_memory("m", "-5M").is_err());
        assert!(parse_memory("m", "1K").is_err());
    }

    #[test]
    fn deploy_request_reports_the_bad_field() {
        let mut r = request();
        r.resources = Some(ResourcesRequest {
            cpu: Some(-1.0),
            memory: None,
        });
        assert_eq!(r.validate().unwrap_err().field, "resources.cpu");

        let mut r = request();
        r.volumes = vec![VolumeMountRequest {
            name: "data".into(),
            mount_path: "relative".into(),
        }];
        assert_eq!(r.validate().unwrap_err().field, "volumes[0].mountPath");

        let mut r = request();
        r.env.insert("1BAD".into(), "x".into());
        assert_eq!(r.validate().unwrap_err().field, "env");

        let mut r = request();
        r.replicas = Some(1000);
        assert_eq!(r.validate().unwrap_err().field, "replicas");
    }

    #[test]
    fn placement_and_constraints_are_checked() {
        let mut r = request();
        r.placement = Some("binpack".into());
        r.constraints.insert("zone".into(), "a".into());
        let spec = r.validate().unwrap();
        assert_eq!(spec.placement, Placement::Binpack);
        assert_eq!(spec.constraints["zone"], "a");
        r.placement = Some("random".into());
        assert_eq!(r.validate().unwrap_err().field, "placement");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<DeployRequest>(
            r#"{"image":"busybox","name":"web","replica":3}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `replica`"), "{err}");
    }

    #[test]
    fn the_guide_body_parses() {
        let body = r#"{"image":"your-registry/your-image:tag","name":"your-app-name",
            "service":"optional-domain-name","resources":{"cpu":0.5,"memory":"512M"},
            "volumes":[{"name":"my-data","mountPath":"/data"}],
            "env":{"KEY1":"value1","KEY2":"value2"}}"#;
        let spec = serde_json::from_str::<DeployRequest>(body)
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(spec.resources.memory, Some(512 << 20));
        assert_eq!(spec.resources.cpu, Some(0.5));
        assert_eq!(spec.volumes[0].mount_path, "/data");
        assert_eq!(spec.labels["app"], "your-app-name");
    }

    #[test]
    fn cli_pairs_parse() {
        assert_eq!(
            parse_key_value("env", "A=b=c").unwrap(),
            ("A".to_string(), "b=c".to_string())
        );
        assert!(parse_key_value("env", "novalue").is_err());
        assert_eq!(parse_volume("data:/data").unwrap().mount_path, "/data");
        assert!(parse_volume("data").is_err());
        assert!(parse_volume("data:/../etc").is_err());
    }

    #[test]
    fn volumes_may_not_cover_what_the_runtime_mounts() {
        for target in [
            "/proc",
            "/proc/sys",
            "/sys/fs/cgroup",
            "/dev",
            "/dev/shm",
            "/etc/resolv.conf",
        ] {
            let mut r = request();
            r.volumes = vec![VolumeMountRequest {
                name: "data".into(),
                mount_path: target.into(),
            }];
            let err = r.validate().unwrap_err();
            assert_eq!(err.field, "volumes[0].mountPath", "{target}: {err}");
        }
        assert!(parse_volume("data:/dev/x").is_err());
        assert!(
            parse_volume("data:/devices").is_ok(),
            "only /dev itself and below"
        );
    }

    #[test]
    fn memory_and_env_have_upper_bounds() {
        let mut r = request();
        r.resources = Some(ResourcesRequest {
            cpu: None,
            memory: Some(crate::contract::MemoryValue::Text("2T".into())),
        });
        assert_eq!(r.validate().unwrap_err().field, "resources.memory");
        let mut r = request();
        r.env = (0..=MAX_ENV_VARS)
            .map(|i| (format!("V{i}"), "x".to_string()))
            .collect();
        assert_eq!(r.validate().unwrap_err().field, "env");
        let mut r = request();
        r.env = (0..10)
            .map(|i| (format!("V{i}"), "x".repeat(30 << 10)))
            .collect();
        let err = r.validate().unwrap_err();
        assert!(err.message.contains("limit"), "{err}");
    }
}
