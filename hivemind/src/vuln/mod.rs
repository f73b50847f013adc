//! Offline vulnerability scanning of images: an OSV database the operator imports once into
//! cluster state ([`osv`]), the packages an image has installed ([`packages`]), each matched
//! against its ecosystem's advisories in that ecosystem's version order ([`version`]), with a
//! severity from the CVSS vector ([`cvss`]).
//!
//! ```text
//! security vulndb import all.zip ──► rows (ecosystem|package → advisories), replicated
//! security scan-image --image REF ─► image layers in containerd (whiteouts honoured)
//!     → dpkg status, apk installed, Cargo.lock, package-lock.json, requirements.txt
//!     → each package's rows (a Debian package also by its source package)
//!     → findings: id, package, installed, fixed, severity
//! ```

pub mod cvss;
pub mod osv;
pub mod packages;
pub mod version;

use serde::{Deserialize, Serialize};

pub use cvss::Severity;
pub use osv::Advisory;
pub use packages::{Distro, Ecosystem, Package};

/// One vulnerability of one installed package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Finding {
    /// The OSV record's id (`CVE-...`, `DSA-...`, `GHSA-...`), and its aliases.
    pub id: String,
    pub aliases: Vec<String>,
    pub ecosystem: Ecosystem,
    /// The installed package, and the source package the advisory names when it is that.
    pub package: String,
    pub source: Option<String>,
    pub installed: String,
    /// The lowest version above the installed one that fixes it; none when no fix is known.
    pub fixed: Option<String>,
    pub severity: Severity,
    /// The CVSS v3 base score, where the record has a vector.
    pub score: Option<f64>,
    pub summary: String,
    /// The file in the image that lists the package.
    pub location: String,
}

/// Matches `packages` (of an image on `distro`) against the database: `advisories(ecosystem,
/// name)` gives the rows stored for an OSV ecosystem and package. A Debian or Alpine package is
/// looked up under its own name and its source package's, in its release's ecosystem and the
/// family's.
pub fn scan(
    distro: Option<&Distro>,
    packages: &[Package],
    advisories: &mut dyn FnMut(&str, &str) -> Vec<Advisory>,
) -> Vec<Finding> {
    let mut findings: Vec<Finding> = Vec::new();
    for package in packages {
        let ecosystems = match distro.filter(|d| d.ecosystem == package.ecosystem) {
            Some(d) => d.osv_ecosystems(),
            None => vec![package.ecosystem.as_str().to_string()],
        };
        let names = std::iter::once((package.name.as_str(), None))
            .chain(package.source.as_deref().map(|s| (s, Some(s.to_string()))));
        let scheme = package.ecosystem.scheme();
        for (name, source) in names {
            for ecosystem in &ecosystems {
                for advisory in advisories(ecosystem, name) {
                    let Some(fixed) = advisory.affects(scheme, &package.version) else {
                        continue;
                    };
                    let seen = findings.iter().any(|f| {
                        f.id == advisory.id
                            && f.package == package.name
                            && f.location == package.location
                    });
                    if seen {
                        continue;
                    }
                    findings.push(Finding {
                        id: advisory.id,
                        aliases: advisory.aliases,
                        ecosystem: package.ecosystem,
                        package: package.name.clone(),
                        source: source.clone(),
                        installed: package.version.clone(),
                        fixed,
                        severity: advisory.severity,
                        score: advisory.score,
                        summary: advisory.summary,
                        location: package.location.clone(),
                    });
                }
            }
        }
    }
    // The worst first.
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.package.cmp(&b.package))
            .then_with(|| a.id.cmp(&b.id))
    });
    findings
}

/// What a deploy does with its image's scan.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ScanMode {
    /// No scan.
    #[default]
    Off,
    /// Scan, deploy whatever it finds, and record the findings on the app.
    Warn,
    /// Refuse the deploy when the scan finds what the policy forbids.
    Block,
}

impl ScanMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Warn => "warn",
            Self::Block => "block",
        }
    }
}

/// An admission policy: a cluster setting (`security scan-policy set`), or a deploy's own
/// (`--scan-policy`), which wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanPolicy {
    pub mode: ScanMode,
    /// Findings of this severity or worse break the policy (`low`, `medium`, `high` or
    /// `critical`; default `high`).
    #[serde(default = "default_max_severity")]
    pub max_severity: Severity,
    /// Only findings a fixed version exists for break it.
    #[serde(default)]
    pub only_fixed: bool,
    /// Deploy only images with a cosign signature a trusted key verifies (`security trust
    /// add-key`), whatever `mode` says.
    #[serde(default)]
    pub require_signature: bool,
}

fn default_max_severity() -> Severity {
    Severity::High
}

impl Default for ScanPolicy {
    fn default() -> Self {
        Self {
            mode: ScanMode::Off,
            max_severity: default_max_severity(),
            only_fixed: false,
            require_signature: false,
        }
    }
}

impl ScanPolicy {
    pub fn validate(&self) -> Result<(), crate::model::ValidationError> {
        if self.max_severity < Severity::Low {
            return Err(crate::model::ValidationError::new(
                "max_severity",
                "must be low, medium, high or critical",
            ));
        }
        Ok(())
    }

    /// The findings that break the policy.
    pub fn breaking<'a>(&self, findings: &'a [Finding]) -> Vec<&'a Finding> {
        findings
            .iter()
            .filter(|f| f.severity >= self.max_severity && (!self.only_fixed || f.fixed.is_some()))
            .collect()
    }

    /// `block at critical and above, fixed only`.
    pub fn describe(&self) -> String {
        format!(
            "{} at {} and above{}{}",
            self.mode.as_str(),
            self.max_severity.as_str(),
            if self.only_fixed {
                ", fixed ones only"
            } else {
                ""
            },
            if self.require_signature {
                ", signed images only"
            } else {
                ""
            }
        )
    }
}

/// The last scan of an app's image, kept on the app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppScan {
    pub image: String,
    pub digest: String,
    /// The policy it was checked against (`warn` or `block`; a blocked deploy changes no app).
    pub policy: String,
    /// Findings by severity.
    pub counts: std::collections::BTreeMap<Severity, u64>,
    /// The findings that break the policy: `<id> (<severity>, <package> <installed>)`.
    pub breaking: Vec<String>,
    /// Seconds since the epoch.
    pub scanned_at: u64,
}

/// One finding in a line: `CVE-1 (critical, bash 5.2-1, fixed in 5.2-2)`.
pub fn describe(f: &Finding) -> String {
    format!(
        "{} ({}, {} {}{})",
        f.id,
        f.severity.as_str(),
        f.package,
        f.installed,
        f.fixed
            .as_ref()
            .map(|v| format!(", fixed in {v}"))
            .unwrap_or_else(|| ", no fix".to_string())
    )
}

/// The key of a database row: `<OSV ecosystem>|<package>`.
pub fn row_key(ecosystem: &str, package: &str) -> String {
    format!("{ecosystem}|{package}")
}

/// Findings as SARIF 2.1.0, one rule per vulnerability id and one result per finding, for
/// code-scanning tools.
pub fn sarif(image: &str, findings: &[Finding]) -> serde_json::Value {
    let mut rules: Vec<serde_json::Value> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for f in findings {
        if seen.insert(f.id.clone()) {
            rules.push(serde_json::json!({
                "id": f.id,
                "shortDescription": {"text": if f.summary.is_empty() { f.id.clone() } else { f.summary.clone() }},
                "properties": {
                    "security-severity": f.score.map(|s| format!("{s:.1}")),
                    "severity": f.severity.as_str(),
                    "aliases": f.aliases,
                },
            }));
        }
    }
    let level = |s: Severity| match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        _ => "note",
    };
    let results: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "ruleId": f.id,
                "level": level(f.severity),
                "message": {"text": format!(
                    "{} {} in {} is affected by {} ({}){}",
                    f.package,
                    f.installed,
                    image,
                    f.id,
                    f.severity.as_str(),
                    f.fixed.as_ref().map(|v| format!("; fixed in {v}")).unwrap_or_default()
                )},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": f.location}}}],
            })
        })
        .collect();
    serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "hivemind",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://hivemind.dev",
                "rules": rules,
            }},
            "results": results,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_debian_package_is_matched_by_its_source_package_in_its_release() {
        let doc = br#"[{"id":"CVE-1","affected":[{"package":{"ecosystem":"Debian:12","name":"openssl"},
            "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"3.0.13-1~deb12u1"}]}]}],
            "severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]},
           {"id":"CVE-2","affected":[{"package":{"ecosystem":"Debian:11","name":"openssl"},
            "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"}]}]}]}]"#;
        let (rows, _) = osv::read(doc).unwrap();
        let distro = Distro {
            ecosystem: Ecosystem::Debian,
            release: Some("12".into()),
            pretty_name: None,
        };
        let package = |name: &str, version: &str| Package {
            ecosystem: Ecosystem::Debian,
            name: name.into(),
            version: version.into(),
            source: Some("openssl".into()),
            location: "var/lib/dpkg/status".into(),
        };
        let packages = [
            package("libssl3", "3.0.11-1~deb12u2"),
            package("openssl-fixed", "3.0.13-1~deb12u1"),
        ];
        let mut lookup = |e: &str, n: &str| {
            rows.get(&(e.to_string(), n.to_string()))
                .cloned()
                .unwrap_or_default()
        };
        let findings = scan(Some(&distro), &packages, &mut lookup);
        assert_eq!(findings.len(), 1, "{findings:?}");
        let f = &findings[0];
        assert_eq!(
            (f.id.as_str(), f.package.as_str(), f.source.as_deref()),
            ("CVE-1", "libssl3", Some("openssl"))
        );
        assert_eq!(f.fixed.as_deref(), Some("3.0.13-1~deb12u1"));
        assert_eq!(f.severity, Severity::Critical);
        let report = sarif("img", &findings);
        assert_eq!(report["runs"][0]["results"][0]["level"], "error");
        assert_eq!(
            report["runs"][0]["tool"]["driver"]["rules"][0]["id"],
            "CVE-1"
        );
    }
}
