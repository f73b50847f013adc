//! /api/helm: chart repositories and releases.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::helm::ReleaseRecord;
pub use crate::helm::{ReleaseObjects, ReleaseStatus, RepoRecord as RepoView};
use crate::model::{ValidationError, validate_name};

/// Most `--set` expressions and `-f` files in one request.
const MAX_VALUE_SOURCES: usize = 100;

/// `helm repo add`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoAddRequest {
    pub name: String,
    /// Where the repository's `index.yaml` is (`<url>/index.yaml`).
    pub url: String,
}

/// `helm install` and `helm upgrade`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    /// The release's name.
    pub name: String,
    /// The release's namespace (default `default`). Hivemind's apps have one namespace: a
    /// name another release's objects use is refused.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// `<repository>/<chart>`; empty when `package` is given.
    #[serde(default)]
    pub chart: String,
    /// A chart package (`.tgz`, base64): the CLI packs a chart directory into one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// A version or constraint (`1.2.3`, `^1.2`, `~1.2.0`, `>=1 <2`); the newest stable
    /// version without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Values files' YAML (`-f`), merged in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// `--set` expressions, applied in order after the files (`image.tag=2,replicaCount=3`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<String>,
    /// Install without the objects Hivemind cannot run instead of refusing the chart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_unsupported: bool,
    /// Render and check only; nothing changes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Upgrade only: the last revision's values under the new ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reuse_values: bool,
}

fn default_namespace() -> String {
    "default".to_string()
}

impl InstallRequest {
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name("name", &self.name)?;
        validate_name("namespace", &self.namespace)?;
        if self.chart.trim().is_empty() == self.package.is_none() {
            return Err(ValidationError::new(
                "chart",
                "give either a chart (<repository>/<chart>) or a package",
            ));
        }
        if self.values.len() + self.set.len() > MAX_VALUE_SOURCES {
            return Err(ValidationError::new(
                "set",
                format!("at most {MAX_VALUE_SOURCES} values files and --set expressions"),
            ));
        }
        Ok(())
    }
}

/// `helm rollback`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The revision to return to (default: the one before the newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

/// A release revision, as `helm ls`, `helm history` and `helm status` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReleaseView {
    pub name: String,
    pub namespace: String,
    pub revision: u64,
    pub status: ReleaseStatus,
    pub description: String,
    /// Seconds since the epoch.
    pub updated: u64,
    /// `<chart>-<version>`.
    pub chart: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    /// `<repository>/<chart>` or `upload`.
    pub source: String,
    /// The values the user gave.
    #[schema(value_type = Object)]
    pub values: serde_json::Value,
    /// What the revision made.
    pub objects: ReleaseObjects,
    /// Objects that need nothing in Hivemind (ServiceAccounts, autoscalers...).
    pub accepted: Vec<String>,
    /// Unsupported objects left out (`skip_unsupported`).
    pub skipped: Vec<String>,
    /// Hooks left out: Hivemind runs no hook Jobs.
    pub hooks: Vec<String>,
    /// What was mapped approximately.
    pub warnings: Vec<String>,
    /// The chart's NOTES.txt, rendered.
    pub notes: String,
    /// Whether this was a dry run (nothing changed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

impl ReleaseView {
    pub fn of(record: ReleaseRecord, dry_run: bool) -> Self {
        Self {
            chart: format!("{}-{}", record.chart, record.chart_version),
            name: record.name,
            namespace: record.namespace,
            revision: record.revision,
            status: record.status,
            description: record.description,
            updated: record.updated,
            app_version: record.app_version,
            source: record.source,
            values: record.values,
            objects: record.objects,
            accepted: record.accepted,
            skipped: record.skipped,
            hooks: record.hooks,
            warnings: record.warnings,
            notes: record.notes,
            dry_run,
        }
    }
}

/// What `helm uninstall` removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UninstallAnswer {
    pub name: String,
    pub namespace: String,
    pub removed: ReleaseObjects,
}
