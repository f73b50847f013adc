//! The vulnerability database in cluster state, and image scans against it.
//!
//! An import replaces what the database holds of the ecosystems in the file (an OSV archive is
//! per ecosystem: importing Alpine's keeps Debian's), one replicated row per package. A scan
//! reads the image's package files out of its layers in containerd, matches them against the
//! rows, and is kept per (image digest, database) until either changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::{Node, NodeError};
use crate::contract::{ScanReport, VulnDbEcosystemView, VulnDbStatus};
use crate::model::AppSpec;
use crate::state::{
    CLUSTER_SETTING, SCAN_POLICY, TRUSTED_KEYS, TrustedKey, VULNDB, VULNDB_META, VulnDbEcosystem,
    VulnDbMeta, VulnRow, now_secs,
};
use crate::vuln::{AppScan, Ecosystem, ScanMode, ScanPolicy, Severity, describe, osv, packages};

/// Days after an import when its records count as old, unless the operator says otherwise.
pub const DEFAULT_MAX_AGE_DAYS: u32 = 7;

/// Scan results kept, by image manifest digest.
#[derive(Debug, Default)]
pub(super) struct ScanCache {
    /// Digest -> (the database it was matched against, the report).
    reports: BTreeMap<String, (String, ScanReport)>,
}

/// Most scan results kept.
const MAX_KEPT_SCANS: usize = 256;

impl Node {
    fn vulndb_meta(&self) -> Result<VulnDbMeta, NodeError> {
        Ok(self
            .store
            .value(VULNDB_META, CLUSTER_SETTING)?
            .unwrap_or(VulnDbMeta {
                max_age_days: DEFAULT_MAX_AGE_DAYS,
                ..Default::default()
            }))
    }

    /// What the database holds, per ecosystem, with its age.
    pub fn vulndb_status(&self) -> Result<VulnDbStatus, NodeError> {
        let meta = self.vulndb_meta()?;
        let now = now_secs();
        let ecosystems: Vec<VulnDbEcosystemView> = meta
            .ecosystems
            .iter()
            .map(|(name, e)| {
                let age_days = now.saturating_sub(e.imported_at) as f64 / 86_400.0;
                VulnDbEcosystemView {
                    ecosystem: name.clone(),
                    imported_at: e.imported_at,
                    age_days: (age_days * 100.0).round() / 100.0,
                    stale: age_days > f64::from(meta.max_age_days),
                    packages: e.packages,
                    advisories: e.advisories,
                    sha256: e.sha256.clone(),
                }
            })
            .collect();
        let mut messages: Vec<String> = ecosystems
            .iter()
            .filter(|e| e.stale)
            .map(|e| {
                format!(
                    "the {} records are {:.1} days old, more than {}: import a newer file",
                    e.ecosystem, e.age_days, meta.max_age_days
                )
            })
            .collect();
        if ecosystems.is_empty() {
            messages.push(
                "the database is empty: import OSV data with `hivemind security vulndb import FILE`"
                    .to_string(),
            );
        }
        Ok(VulnDbStatus {
            ecosystems,
            max_age_days: meta.max_age_days,
            messages,
        })
    }

    /// Imports OSV data (a zip of records, one record, or an array of them). Nothing is
    /// written unless the whole file reads.
    pub(super) async fn import_vulndb(
        &self,
        data: Arc<[u8]>,
        max_age_days: Option<u32>,
    ) -> Result<VulnDbStatus, NodeError> {
        let sha256 = hex::encode(Sha256::digest(&data));
        let parsed = {
            let data = data.clone();
            tokio::task::spawn_blocking(move || osv::read(&data))
                .await
                .map_err(|e| NodeError::Io(format!("the import stopped: {e}")))?
        };
        let (rows, skipped) = parsed.map_err(|e| {
            NodeError::Invalid(crate::model::ValidationError::new(
                "vulndb",
                format!("the file is not OSV data: {e}"),
            ))
        })?;
        let families: BTreeSet<Ecosystem> = rows
            .keys()
            .filter_map(|(ecosystem, _)| Ecosystem::of_osv(ecosystem))
            .collect();
        if families.is_empty() {
            return Err(NodeError::Invalid(crate::model::ValidationError::new(
                "vulndb",
                format!(
                    "the file holds no record of an ecosystem the scanner reads (Debian, Alpine, crates.io, npm, PyPI, Go); {skipped} affected packages of other ecosystems"
                ),
            )));
        }
        // Rows are checked before anything is written.
        let rows: Vec<VulnRow> = rows
            .into_iter()
            .map(|((ecosystem, package), advisories)| VulnRow {
                ecosystem,
                package,
                advisories,
            })
            .collect();
        for row in &rows {
            crate::state::Row::check(row, &crate::vuln::row_key(&row.ecosystem, &row.package))?;
        }
        let existing: Vec<VulnRow> = self.store.values(VULNDB)?;
        let existing: BTreeMap<String, VulnRow> = existing
            .into_iter()
            .map(|r| (crate::vuln::row_key(&r.ecosystem, &r.package), r))
            .collect();
        let wanted: BTreeSet<String> = rows
            .iter()
            .map(|r| crate::vuln::row_key(&r.ecosystem, &r.package))
            .collect();
        let (mut written, mut removed) = (0u64, 0u64);
        for row in &rows {
            let key = crate::vuln::row_key(&row.ecosystem, &row.package);
            if existing.get(&key) != Some(row) {
                self.write(VULNDB, &key, Some(row)).await?;
                written += 1;
            }
        }
        for (key, row) in &existing {
            let replaced = Ecosystem::of_osv(&row.ecosystem).is_some_and(|f| families.contains(&f));
            if replaced && !wanted.contains(key) {
                self.write::<VulnRow>(VULNDB, key, None).await?;
                removed += 1;
            }
        }
        let mut meta = self.vulndb_meta()?;
        if let Some(days) = max_age_days {
            meta.max_age_days = days;
        }
        let now = now_secs();
        for family in &families {
            let of_family: Vec<&VulnRow> = rows
                .iter()
                .filter(|r| Ecosystem::of_osv(&r.ecosystem) == Some(*family))
                .collect();
            meta.ecosystems.insert(
                family.as_str().to_string(),
                VulnDbEcosystem {
                    imported_at: now,
                    sha256: sha256.clone(),
                    packages: of_family.len() as u64,
                    advisories: of_family
                        .iter()
                        .flat_map(|r| r.advisories.iter().map(|a| a.id.as_str()))
                        .collect::<BTreeSet<_>>()
                        .len() as u64,
                },
            );
        }
        self.write(VULNDB_META, CLUSTER_SETTING, Some(&meta))
            .await?;
        tracing::info!(%sha256, written, removed, skipped, "vulnerability database imported");
        let mut status = self.vulndb_status()?;
        status.messages.insert(
            0,
            format!(
                "imported {}: {} packages with advisories ({written} rows written, {removed} removed){}",
                families
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                rows.len(),
                if skipped > 0 {
                    format!("; {skipped} affected packages of ecosystems the scanner does not read skipped")
                } else {
                    String::new()
                }
            ),
        );
        Ok(status)
    }

    /// Scans `reference` (pulled first when this node does not have it) against the database.
    pub(super) async fn scan_image(
        &self,
        reference: &str,
        refresh: bool,
    ) -> Result<ScanReport, NodeError> {
        self.runtime.ensure_image(reference, &|_| {}).await?;
        let files = self
            .runtime
            .image_files(reference, packages::wanted)
            .await?;
        let meta = self.vulndb_meta()?;
        let fingerprint = serde_json::to_string(&meta).unwrap_or_default();
        if !refresh
            && let Some((db, report)) = super::apps::lock(&self.scans)
                .reports
                .get(&files.manifest_digest)
            && *db == fingerprint
        {
            return Ok(ScanReport {
                cached: true,
                ..report.clone()
            });
        }
        let (distro, installed) = packages::inventory(&files.files);
        let mut lookups = 0u64;
        let store = self.store.clone();
        let mut advisories = |ecosystem: &str, name: &str| {
            lookups += 1;
            store
                .value::<VulnRow>(VULNDB, &crate::vuln::row_key(ecosystem, name))
                .ok()
                .flatten()
                .map(|r| r.advisories)
                .unwrap_or_default()
        };
        let findings = crate::vuln::scan(distro.as_ref(), &installed, &mut advisories);
        let mut counts: BTreeMap<Severity, u64> = BTreeMap::new();
        for f in &findings {
            *counts.entry(f.severity).or_default() += 1;
        }
        let status = self.vulndb_status()?;
        let mut ecosystems: BTreeSet<String> = BTreeSet::new();
        for package in &installed {
            match distro.as_ref().filter(|d| d.ecosystem == package.ecosystem) {
                Some(d) => ecosystems.extend(d.osv_ecosystems().into_iter().take(1)),
                None => {
                    ecosystems.insert(package.ecosystem.as_str().to_string());
                }
            }
        }
        let mut warnings = Vec::new();
        let families: BTreeSet<Ecosystem> = installed.iter().map(|p| p.ecosystem).collect();
        for family in &families {
            match status
                .ecosystems
                .iter()
                .find(|e| e.ecosystem == family.as_str())
            {
                None => warnings.push(format!(
                    "the database has no {} records: the image's {} packages were not checked",
                    family.as_str(),
                    family.as_str()
                )),
                Some(e) if e.stale => warnings.push(format!(
                    "the {} records are {:.1} days old (more than {}): findings since are missing",
                    e.ecosystem, e.age_days, status.max_age_days
                )),
                Some(_) => {}
            }
        }
        if installed.is_empty() {
            warnings.push(
                "no package database or lockfile found in the image: nothing was checked"
                    .to_string(),
            );
        }
        let sources: BTreeSet<String> = installed.iter().map(|p| p.location.clone()).collect();
        let report = ScanReport {
            image: files.name,
            digest: files.manifest_digest.clone(),
            distro: distro
                .as_ref()
                .and_then(|d| d.pretty_name.clone())
                .or_else(|| {
                    distro.as_ref().map(|d| {
                        format!(
                            "{} {}",
                            d.ecosystem.as_str(),
                            d.release.clone().unwrap_or_default()
                        )
                    })
                }),
            ecosystems: ecosystems.into_iter().collect(),
            packages: installed.len() as u64,
            sources: sources.into_iter().collect(),
            findings,
            counts,
            scanned_at: now_secs(),
            cached: false,
            warnings,
        };
        tracing::info!(image = %report.image, packages = report.packages, findings = report.findings.len(), lookups, "image scanned");
        let mut cache = super::apps::lock(&self.scans);
        if cache.reports.len() >= MAX_KEPT_SCANS {
            cache.reports.clear();
        }
        cache
            .reports
            .insert(files.manifest_digest, (fingerprint, report.clone()));
        Ok(report)
    }
}

impl Node {
    /// The scan policy a deploy is held to: its own, else the cluster's (off without either).
    fn scan_policy_for(&self, own: Option<ScanPolicy>) -> Result<ScanPolicy, NodeError> {
        match own {
            Some(policy) => Ok(policy),
            None => Ok(self
                .store
                .value(SCAN_POLICY, CLUSTER_SETTING)?
                .unwrap_or_default()),
        }
    }

    /// Admission: under a `warn` or `block` policy, scans the app's images (its own and an A/B
    /// test's variants'). `block` refuses the deploy when a finding breaks the policy, or when
    /// the database has no records of an ecosystem the image has packages of (nothing could be
    /// checked); `warn` deploys and logs. Returns the scan to keep on the app (none when the
    /// policy is off).
    pub(super) async fn admit(
        &self,
        spec: &AppSpec,
        own: Option<ScanPolicy>,
    ) -> Result<Option<AppScan>, NodeError> {
        let policy = self.scan_policy_for(own)?;
        if policy.mode == ScanMode::Off {
            return Ok(None);
        }
        let mut images = vec![spec.image.clone()];
        for variant in &spec.strategy.variants {
            if !images.contains(&variant.image) {
                images.push(variant.image.clone());
            }
        }
        let mut kept = None;
        for image in images {
            let report = self.scan_image(&image, false).await?;
            let breaking = policy.breaking(&report.findings);
            let unchecked: Vec<&String> = report
                .warnings
                .iter()
                .filter(|w| w.starts_with("the database has no"))
                .collect();
            if policy.mode == ScanMode::Block {
                if !breaking.is_empty() {
                    const SHOWN: usize = 20;
                    let mut listed: Vec<String> =
                        breaking.iter().take(SHOWN).map(|f| describe(f)).collect();
                    if breaking.len() > SHOWN {
                        listed.push(format!("and {} more", breaking.len() - SHOWN));
                    }
                    return Err(NodeError::Policy(format!(
                        "image {image} breaks the scan policy ({}): {} finding(s): {}. Deploy an image with the fixes, or choose another policy (--scan-policy warn, --max-severity, --only-fixed)",
                        policy.describe(),
                        breaking.len(),
                        listed.join("; ")
                    )));
                }
                if let Some(warning) = unchecked.first() {
                    return Err(NodeError::Policy(format!(
                        "image {image} cannot be checked under the scan policy ({}): {warning}. Import that ecosystem's OSV data with `hivemind security vulndb import`",
                        policy.describe()
                    )));
                }
            }
            if !breaking.is_empty() || !unchecked.is_empty() {
                tracing::warn!(
                    %image,
                    policy = %policy.describe(),
                    breaking = breaking.len(),
                    unchecked = unchecked.len(),
                    "deploying an image that breaks the scan policy"
                );
            }
            if kept.is_none() {
                kept = Some(AppScan {
                    image: report.image.clone(),
                    digest: report.digest.clone(),
                    policy: policy.mode.as_str().to_string(),
                    counts: report.counts.clone(),
                    breaking: breaking.iter().map(|f| describe(f)).collect(),
                    scanned_at: report.scanned_at,
                });
            }
        }
        Ok(kept)
    }
}

impl Node {
    /// Trusts `pem`'s signatures under `name` (a key already under that name is replaced).
    pub(super) async fn put_trusted_key(
        &self,
        name: &str,
        pem: &str,
    ) -> Result<crate::command::Outcome, NodeError> {
        let point = crate::image::cosign::parse_public_key(pem)
            .map_err(|e| crate::model::ValidationError::new("public_key", e))?;
        // The SubjectPublicKeyInfo's DER: the fixed P-256 prefix and the point.
        let mut der = crate::image::cosign::P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&point);
        let fingerprint = hex::encode(Sha256::digest(&der));
        let existing: Option<TrustedKey> = self.store.value(TRUSTED_KEYS, name)?;
        let key = TrustedKey {
            name: name.to_string(),
            pem: pem.to_string(),
            fingerprint: fingerprint.clone(),
            created_at: existing.as_ref().map_or_else(now_secs, |k| k.created_at),
        };
        self.write(TRUSTED_KEYS, name, Some(&key)).await?;
        tracing::info!(key = %name, %fingerprint, "trusted signing key");
        Ok(crate::command::Outcome::TrustedKeySet {
            name: name.to_string(),
            fingerprint,
            created: existing.is_none(),
        })
    }

    /// Refuses the deploy unless each of its images (its own at `digest`, and an A/B test's
    /// variants') carries a cosign signature a trusted key verifies, when the deploy or the
    /// cluster's policy asks for signatures.
    pub(super) async fn require_signatures(
        &self,
        spec: &AppSpec,
        digest: &str,
        admission: crate::command::Admission,
    ) -> Result<(), NodeError> {
        let cluster: ScanPolicy = self
            .store
            .value(SCAN_POLICY, CLUSTER_SETTING)?
            .unwrap_or_default();
        let required = admission.require_signature
            || cluster.require_signature
            || admission.scan_policy.is_some_and(|p| p.require_signature);
        if !required {
            return Ok(());
        }
        let keys: Vec<(String, Vec<u8>)> = self
            .store
            .values::<TrustedKey>(TRUSTED_KEYS)?
            .into_iter()
            .filter_map(|k| {
                crate::image::cosign::parse_public_key(&k.pem)
                    .ok()
                    .map(|point| (k.name, point))
            })
            .collect();
        let mut images = vec![(spec.image.clone(), digest.to_string())];
        for variant in &spec.strategy.variants {
            let resolved = self.runtime.ensure_image(&variant.image, &|_| {}).await?;
            images.push((variant.image.clone(), resolved.digest));
        }
        for (image, digest) in images {
            if keys.is_empty() {
                return Err(NodeError::Policy(format!(
                    "image {image} must be signed, but no key is trusted: add one with `hivemind security trust add-key --name NAME --file cosign.pub`"
                )));
            }
            let signatures = self.runtime.image_signatures(&image, &digest).await?;
            if signatures.is_empty() {
                return Err(NodeError::Policy(format!(
                    "image {image} ({digest}) must be signed, and neither its registry nor this node holds a cosign signature for it (tag {}.sig): sign it with `cosign sign --key cosign.key`, or import it with its signature (`cosign save`)",
                    digest.replace(':', "-")
                )));
            }
            let mut reasons = Vec::new();
            let mut signer = None;
            for signature in &signatures {
                match crate::image::cosign::verify(signature, &digest, &keys) {
                    Ok(key) => {
                        signer = Some(key);
                        break;
                    }
                    Err(reason) => reasons.push(reason),
                }
            }
            match signer {
                Some(key) => tracing::info!(%image, %digest, %key, "signature verified"),
                None => {
                    reasons.dedup();
                    return Err(NodeError::Policy(format!(
                        "image {image} ({digest}) must be signed by a trusted key, and none of its {} signature(s) is: {}",
                        signatures.len(),
                        reasons.join("; ")
                    )));
                }
            }
        }
        Ok(())
    }
}
