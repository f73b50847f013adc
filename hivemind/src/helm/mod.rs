//! Helm charts (the reference guide's `hivemind helm ...`): real Helm v3 charts ([`chart`]),
//! rendered with Go's `text/template` and the Sprig and Helm functions ([`template`],
//! [`render`]), values as `--set` and `-f` give them ([`values`]), chart repositories with
//! `index.yaml` and digests ([`repo`]), the rendered Kubernetes objects mapped onto apps,
//! secrets and policies ([`kube`]), and `helm create`'s layout ([`create`]). Releases are
//! revisions in replicated state ([`ReleaseRecord`]); `node::helm` applies them.

pub mod chart;
pub mod create;
pub mod render;
pub mod repo;
pub mod template;
pub mod values;

use serde::{Deserialize, Serialize};

use crate::model::{ValidationError, validate_http_url, validate_name};

/// Largest chart package a release keeps (packed): a release revision is one replicated
/// record, as Helm keeps one in a Kubernetes Secret of at most 1 MiB.
pub const MAX_RELEASE_CHART_BYTES: usize = 1 << 20;
/// Most revisions a release keeps (Helm's `--history-max` default is 10).
pub const MAX_HISTORY: usize = 10;

/// A chart repository (`helm repo add`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoRecord {
    pub name: String,
    /// Where `index.yaml` is (`<url>/index.yaml`).
    pub url: String,
    /// Charts its index listed when it was added.
    #[serde(default)]
    pub charts: usize,
    /// When it was added, seconds since the epoch.
    pub added: u64,
}

impl RepoRecord {
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name("name", &self.name)?;
        validate_http_url("url", &self.url)
    }
}

/// Where a release revision stands, as `helm history` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseStatus {
    /// The release's current revision.
    Deployed,
    /// An earlier revision a later one replaced.
    Superseded,
    /// A revision whose objects could not all be applied.
    Failed,
}

/// What a revision made in Hivemind, by name: what an upgrade compares and an uninstall
/// removes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseObjects {
    #[serde(default)]
    pub apps: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub policies: Vec<String>,
    /// Volumes the release's claims use (created when missing, never removed: data stays).
    #[serde(default)]
    pub volumes: Vec<String>,
}

impl ReleaseObjects {
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty() && self.secrets.is_empty() && self.policies.is_empty()
    }
}

/// One revision of a release: key `<namespace>/<name>/<revision>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRecord {
    pub name: String,
    pub namespace: String,
    pub revision: u64,
    pub status: ReleaseStatus,
    /// `Install complete`, `Upgrade complete`, `Rollback to 1`, or what failed.
    pub description: String,
    /// Seconds since the epoch.
    pub updated: u64,
    pub chart: String,
    pub chart_version: String,
    #[serde(default)]
    pub app_version: Option<String>,
    /// Where the chart came from: `<repo>/<chart>` or `upload`.
    pub source: String,
    /// The values the user gave (`-f` files, then `--set`), without the chart's defaults.
    pub values: serde_json::Value,
    /// The chart package, base64: a rollback renders it again.
    pub package: String,
    pub objects: ReleaseObjects,
    /// Kinds that need nothing in Hivemind, and unsupported objects left out
    /// (`--skip-unsupported`), as `Kind/name`.
    #[serde(default)]
    pub accepted: Vec<String>,
    #[serde(default)]
    pub skipped: Vec<String>,
    #[serde(default)]
    pub hooks: Vec<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub notes: String,
}

impl ReleaseRecord {
    pub fn key(&self) -> String {
        release_key(&self.namespace, &self.name, self.revision)
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name("name", &self.name)?;
        validate_name("namespace", &self.namespace)?;
        if self.revision == 0 {
            return Err(ValidationError::new("revision", "revisions count from 1"));
        }
        if self.package.len() > MAX_RELEASE_CHART_BYTES * 4 / 3 + 4 {
            return Err(ValidationError::new(
                "package",
                format!(
                    "a release keeps a chart package of at most {} KiB",
                    MAX_RELEASE_CHART_BYTES >> 10
                ),
            ));
        }
        for name in self
            .objects
            .apps
            .iter()
            .chain(&self.objects.secrets)
            .chain(&self.objects.policies)
            .chain(&self.objects.volumes)
        {
            validate_name("objects", name)?;
        }
        Ok(())
    }
}

/// The key of a release revision; revisions sort by number within a release.
pub fn release_key(namespace: &str, name: &str, revision: u64) -> String {
    format!("{namespace}/{name}/{revision:06}")
}
