//! `/api/security/vulndb` and `/api/security/scans`: the vulnerability database and image
//! scans.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::vuln::{Ecosystem, Finding, Severity};

/// `POST /api/security/scans`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanRequest {
    /// The image to scan (pulled first when this node does not have it).
    pub image: String,
    /// Scan again even when a result for the image's digest and this database is kept.
    #[serde(default)]
    pub refresh: bool,
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScanReport {
    /// The normalized reference, and the digest of the manifest scanned.
    pub image: String,
    pub digest: String,
    /// The distribution the image is built on (`Debian GNU/Linux 12 (bookworm)`), and the OSV
    /// ecosystems its packages were matched in.
    pub distro: Option<String>,
    pub ecosystems: Vec<String>,
    /// Packages read (dpkg, apk and lockfiles), and the files they came from.
    pub packages: u64,
    pub sources: Vec<String>,
    /// The worst first.
    pub findings: Vec<Finding>,
    /// Findings by severity.
    pub counts: BTreeMap<Severity, u64>,
    /// Seconds since the epoch.
    pub scanned_at: u64,
    /// Whether this is a kept result (same image digest, same database).
    pub cached: bool,
    /// What the result should be read with: a database older than its maximum age, an
    /// ecosystem of the image the database has no records of.
    pub warnings: Vec<String>,
}

/// `GET /api/security/vulndb`, and the answer to an import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VulnDbStatus {
    /// Per ecosystem family.
    pub ecosystems: Vec<VulnDbEcosystemView>,
    /// Days after its import when an ecosystem's records count as old (scans warn).
    pub max_age_days: u32,
    /// What the import did (after an import), or why scans will warn.
    pub messages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VulnDbEcosystemView {
    pub ecosystem: String,
    /// Seconds since the epoch, and days since.
    pub imported_at: u64,
    pub age_days: f64,
    /// Older than `max_age_days`.
    pub stale: bool,
    pub packages: u64,
    pub advisories: u64,
    /// sha256 of the imported file.
    pub sha256: String,
}

/// The body of `POST /api/security/vulndb`: OSV data (a zip of records, one record or a JSON
/// array of them), sent as is.
#[derive(Debug, Clone, PartialEq, Eq, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct OsvData(pub Vec<u8>);

/// `POST /api/security/vulndb?max_age_days=N`.
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, utoipa::IntoParams,
)]
#[serde(deny_unknown_fields)]
pub struct VulnDbImportQuery {
    /// Days after this import when scans warn that the database is old (default: the stored
    /// setting, 7 at first).
    #[serde(default)]
    pub max_age_days: Option<u32>,
}

/// `POST /api/security/trust/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddTrustedKey {
    pub name: String,
    /// An ECDSA P-256 public key, PEM (`cosign.pub`).
    pub public_key: String,
}

/// A trusted signing key (its PEM is public, and shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrustedKeyView {
    pub name: String,
    /// sha256 of the key's DER, hex.
    pub fingerprint: String,
    pub public_key: String,
    pub created_at: u64,
}

/// The answer to `POST /api/security/trust/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrustedKeyAnswer {
    pub success: bool,
    pub message: String,
    pub fingerprint: String,
}
