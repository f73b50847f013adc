//! What a health check is (the probe, its period and retries) and what it
//! reports, as plain data: the app model stores it, the `health` module
//! runs it.

use serde::{Deserialize, Serialize};

/// Seconds between probes when not given.
pub const DEFAULT_INTERVAL_S: u64 = 10;
/// Longest health check interval, timeout or start period, in seconds.
pub const MAX_HEALTH_PERIOD_S: u64 = 3600;
/// Most consecutive failures a health check may wait for.
pub const MAX_HEALTH_RETRIES: u32 = 100;
/// Seconds one probe may take when not given.
pub const DEFAULT_TIMEOUT_S: u64 = 1;
/// Consecutive failures that make a check fail when not given.
pub const DEFAULT_RETRIES: u32 = 3;
/// Seconds after a (re)start during which failures do not count.
pub const DEFAULT_START_PERIOD_S: u64 = 0;
/// Port of `--health-http` when the app publishes none.
pub const DEFAULT_HTTP_PORT: u16 = 80;

/// How a check asks a container whether it is fine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Probe {
    /// GET http://IP:port/path; a 2xx or 3xx answer is healthy.
    Http { path: String, port: u16 },
    /// A TCP connection to IP:port is accepted.
    Tcp { port: u16 },
    /// The command, run inside the container, exits 0.
    Exec { command: Vec<String> },
}

/// One check (liveness or readiness) of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSpec {
    pub probe: Probe,
    #[serde(default = "default_interval_s")]
    pub interval_s: u64,
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default)]
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

impl CheckSpec {
    /// A check with the default interval, timeout, retries and start period.
    pub fn new(probe: Probe) -> Self {
        Self {
            probe,
            interval_s: DEFAULT_INTERVAL_S,
            timeout_s: DEFAULT_TIMEOUT_S,
            retries: DEFAULT_RETRIES,
            start_period_s: DEFAULT_START_PERIOD_S,
        }
    }

    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.interval_s.max(1))
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_s.max(1))
    }

    pub fn start_period(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.start_period_s)
    }
}

/// The checks of an app's containers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<CheckSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<CheckSpec>,
}

impl HealthSpec {
    /// The check that decides readiness: the readiness check, else the
    /// liveness check (as Docker and Swarm use HEALTHCHECK for both).
    pub fn effective_readiness(&self) -> Option<&CheckSpec> {
        self.readiness.as_ref().or(self.liveness.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.liveness.is_none() && self.readiness.is_none()
    }
}

/// Where a check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// No success yet and not yet `retries` counted failures.
    Starting,
    Healthy,
    Unhealthy,
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeResult {
    pub ok: bool,
    /// The HTTP status, the exec output or why it failed.
    pub message: String,
    /// When the probe finished, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}
