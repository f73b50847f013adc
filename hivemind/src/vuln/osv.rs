//! OSV records (<https://ossf.github.io/osv-schema/>) as the OSV project publishes them: one
//! JSON document per vulnerability, zipped per ecosystem. Each record becomes an [`Advisory`]
//! per affected package, kept under that package in the vulnerability database.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};

use super::cvss::{Severity, base_score};
use super::packages::Ecosystem;
use super::version::Scheme;

/// Longest summary kept per advisory.
const MAX_SUMMARY: usize = 300;
/// Largest OSV document read from an archive.
const MAX_RECORD_BYTES: u64 = 4 << 20;
/// Most documents one archive may hold.
pub const MAX_RECORDS: usize = 1_000_000;

/// One vulnerability of one package, as the database keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advisory {
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Affected ranges, each a list of events in the package ecosystem's order (`SEMVER`
    /// ranges in SemVer's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<Range>,
    /// Versions listed as affected one by one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Range {
    pub semver: bool,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
    Limit(String),
}

impl Event {
    fn version(&self) -> &str {
        match self {
            Self::Introduced(v) | Self::Fixed(v) | Self::LastAffected(v) | Self::Limit(v) => v,
        }
    }
}

impl Advisory {
    /// Whether `version` is affected, and if so the version that fixes it (the lowest fix
    /// above it), by the OSV specification's evaluation of ranges.
    pub fn affects(&self, scheme: Scheme, version: &str) -> Option<Option<String>> {
        if self.versions.iter().any(|v| v == version) {
            return Some(self.fix_above(scheme, version));
        }
        for range in &self.ranges {
            let scheme = if range.semver { Scheme::Semver } else { scheme };
            let cmp = |a: &str, b: &str| {
                if a == "0" {
                    // "0": before every version.
                    if b == "0" {
                        std::cmp::Ordering::Equal
                    } else {
                        std::cmp::Ordering::Less
                    }
                } else if b == "0" {
                    std::cmp::Ordering::Greater
                } else {
                    scheme.compare(a, b)
                }
            };
            let mut events: Vec<&Event> = range.events.iter().collect();
            events.sort_by(|a, b| cmp(a.version(), b.version()));
            let mut affected = false;
            for event in events {
                match event {
                    Event::Introduced(v) if cmp(version, v).is_ge() => affected = true,
                    Event::Fixed(v) | Event::Limit(v) if cmp(version, v).is_ge() => {
                        affected = false
                    }
                    Event::LastAffected(v) if cmp(version, v).is_gt() => affected = false,
                    _ => {}
                }
            }
            if affected {
                return Some(self.fix_above(scheme, version));
            }
        }
        None
    }

    fn fix_above(&self, scheme: Scheme, version: &str) -> Option<String> {
        self.ranges
            .iter()
            .flat_map(|r| {
                let scheme = if r.semver { Scheme::Semver } else { scheme };
                r.events.iter().filter_map(move |e| match e {
                    Event::Fixed(v) if scheme.compare(v, version).is_gt() => Some((scheme, v)),
                    _ => None,
                })
            })
            .min_by(|(s, a), (_, b)| s.compare(a, b))
            .map(|(_, v)| v.clone())
    }
}

/// The database's rows from a set of records: advisories by (OSV ecosystem, package name).
pub type Rows = BTreeMap<(String, String), Vec<Advisory>>;

/// Reads an OSV archive (a zip of JSON documents, as `all.zip` of an ecosystem), a single
/// document, or a JSON array of documents. Records of ecosystems this does not read are
/// counted and skipped; a document that is not an OSV record fails the whole import, named.
pub fn read(data: &[u8]) -> Result<(Rows, usize), String> {
    let mut rows = Rows::new();
    let mut skipped = 0;
    let mut add = |name: &str, json: &[u8]| -> Result<(), String> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("{name}: not JSON: {e}"))?;
        let records = match value {
            serde_json::Value::Array(items) => items,
            single => vec![single],
        };
        for record in records {
            let record: Record = serde_json::from_value(record)
                .map_err(|e| format!("{name}: not an OSV record: {e}"))?;
            skipped += record
                .into_rows(&mut rows)
                .map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(())
    };
    if data.starts_with(b"PK") {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(data))
            .map_err(|e| format!("not a readable zip archive: {e}"))?;
        if archive.len() > MAX_RECORDS {
            return Err(format!(
                "{} files in the archive, more than {MAX_RECORDS}",
                archive.len()
            ));
        }
        for i in 0..archive.len() {
            let mut file = archive
                .by_index(i)
                .map_err(|e| format!("entry {i} of the archive: {e}"))?;
            let name = file
                .name()
                .map_err(|e| format!("entry {i} of the archive: {e}"))?
                .to_string();
            if file.is_dir() || !name.ends_with(".json") {
                continue;
            }
            if file.size() > MAX_RECORD_BYTES {
                return Err(format!(
                    "{name}: {} bytes, more than any OSV record",
                    file.size()
                ));
            }
            let mut json = Vec::with_capacity(file.size() as usize);
            file.by_ref()
                .take(MAX_RECORD_BYTES + 1)
                .read_to_end(&mut json)
                .map_err(|e| format!("{name}: {e}"))?;
            add(&name, &json)?;
        }
    } else {
        add("the file", data)?;
    }
    for advisories in rows.values_mut() {
        advisories.sort_by(|a, b| a.id.cmp(&b.id));
        advisories.dedup_by(|a, b| a.id == b.id);
    }
    Ok((rows, skipped))
}

#[derive(Debug, Deserialize)]
struct Record {
    id: String,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    details: String,
    #[serde(default)]
    severity: Vec<SeverityEntry>,
    #[serde(default)]
    affected: Vec<Affected>,
    #[serde(default)]
    database_specific: serde_json::Value,
    /// Withdrawn records are kept by OSV with this set.
    #[serde(default)]
    withdrawn: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SeverityEntry {
    #[serde(rename = "type")]
    kind: String,
    score: String,
}

#[derive(Debug, Deserialize)]
struct Affected {
    package: Option<PackageRef>,
    #[serde(default)]
    severity: Vec<SeverityEntry>,
    #[serde(default)]
    ranges: Vec<RawRange>,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    ecosystem_specific: serde_json::Value,
    #[serde(default)]
    database_specific: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct PackageRef {
    ecosystem: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct RawRange {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    events: Vec<BTreeMap<String, String>>,
}

/// The severity a record states: the highest CVSS v3 base score among its vectors, else a
/// rating its database gives in words.
fn severity(entries: &[SeverityEntry], words: &[&serde_json::Value]) -> (Severity, Option<f64>) {
    let score = entries
        .iter()
        .filter(|e| e.kind == "CVSS_V3")
        .filter_map(|e| base_score(&e.score).ok())
        .fold(None, |best: Option<f64>, s| {
            Some(best.map_or(s, |b| b.max(s)))
        });
    if let Some(score) = score {
        return (Severity::of_score(score), Some(score));
    }
    let stated = words
        .iter()
        .filter_map(|v| v["severity"].as_str().or_else(|| v["urgency"].as_str()))
        .filter_map(Severity::parse)
        .max();
    (stated.unwrap_or(Severity::Unknown), None)
}

impl Record {
    /// Adds the record's advisories to `rows`; returns how many affected packages were
    /// skipped (an ecosystem this does not read).
    fn into_rows(self, rows: &mut Rows) -> Result<usize, String> {
        if self.id.is_empty() || self.id.len() > 128 || self.id.chars().any(char::is_control) {
            return Err(format!("{:?} is not a vulnerability id", self.id));
        }
        if self.withdrawn.is_some() {
            return Ok(0);
        }
        let mut skipped = 0;
        let summary: String = if self.summary.is_empty() {
            self.details.lines().next().unwrap_or("").to_string()
        } else {
            self.summary.clone()
        };
        let summary: String = summary.chars().take(MAX_SUMMARY).collect();
        for affected in &self.affected {
            let Some(package) = &affected.package else {
                continue;
            };
            let Some(ecosystem) = Ecosystem::of_osv(&package.ecosystem) else {
                skipped += 1;
                continue;
            };
            let mut ranges = Vec::new();
            for range in &affected.ranges {
                let semver = match range.kind.as_str() {
                    "SEMVER" => true,
                    "ECOSYSTEM" => false,
                    // Commit ranges say nothing of released versions.
                    _ => continue,
                };
                let mut events = Vec::new();
                for event in &range.events {
                    for (kind, version) in event {
                        events.push(match kind.as_str() {
                            "introduced" => Event::Introduced(version.clone()),
                            "fixed" => Event::Fixed(version.clone()),
                            "last_affected" => Event::LastAffected(version.clone()),
                            "limit" => Event::Limit(version.clone()),
                            other => {
                                return Err(format!("{}: {other:?} is not a range event", self.id));
                            }
                        });
                    }
                }
                ranges.push(Range { semver, events });
            }
            let entries: Vec<&SeverityEntry> =
                self.severity.iter().chain(&affected.severity).collect();
            let entries: Vec<SeverityEntry> = entries
                .into_iter()
                .map(|e| SeverityEntry {
                    kind: e.kind.clone(),
                    score: e.score.clone(),
                })
                .collect();
            let (severity, score) = severity(
                &entries,
                &[
                    &affected.ecosystem_specific,
                    &affected.database_specific,
                    &self.database_specific,
                ],
            );
            let name = ecosystem.normalize(&package.name);
            if name.is_empty() {
                return Err(format!("{}: a package with no name", self.id));
            }
            rows.entry((package.ecosystem.clone(), name))
                .or_default()
                .push(Advisory {
                    id: self.id.clone(),
                    aliases: self.aliases.clone(),
                    summary: summary.clone(),
                    severity,
                    score,
                    ranges,
                    versions: affected.versions.clone(),
                });
        }
        Ok(skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advisory(events: Vec<Event>) -> Advisory {
        Advisory {
            id: "X".into(),
            aliases: Vec::new(),
            summary: String::new(),
            severity: Severity::High,
            score: None,
            ranges: vec![Range {
                semver: false,
                events,
            }],
            versions: Vec::new(),
        }
    }

    #[test]
    fn ranges_are_evaluated_in_the_ecosystems_order() {
        let a = advisory(vec![
            Event::Introduced("0".into()),
            Event::Fixed("3.0.11-1~deb12u2".into()),
        ]);
        let dpkg = Scheme::Dpkg;
        assert_eq!(
            a.affects(dpkg, "3.0.11-1~deb12u1"),
            Some(Some("3.0.11-1~deb12u2".into()))
        );
        assert_eq!(a.affects(dpkg, "3.0.11-1~deb12u2"), None);
        // `~` sorts before the end: 3.0.11-1 is above the fix.
        assert_eq!(a.affects(dpkg, "3.0.11-1"), None);
        assert_eq!(a.affects(dpkg, "1:1.0"), None, "an epoch is above");
        let two = advisory(vec![
            Event::Introduced("1.0".into()),
            Event::Fixed("1.2".into()),
            Event::Introduced("2.0".into()),
            Event::LastAffected("2.1".into()),
        ]);
        assert!(two.affects(dpkg, "0.9").is_none());
        assert_eq!(two.affects(dpkg, "1.1"), Some(Some("1.2".into())));
        assert!(two.affects(dpkg, "1.5").is_none());
        assert_eq!(two.affects(dpkg, "2.1"), Some(None), "no fix above");
        assert!(two.affects(dpkg, "2.1.1").is_none());
    }

    #[test]
    fn records_become_advisories_per_package() {
        let doc = br#"[{"id":"CVE-2024-0001","summary":"bad","aliases":["DSA-1"],
            "severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
            "affected":[{"package":{"ecosystem":"Debian:12","name":"openssl"},
              "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"3.0.13-1"}]}]},
              {"package":{"ecosystem":"Ubuntu:22.04","name":"openssl"}}]},
            {"id":"GHSA-x","affected":[{"package":{"ecosystem":"PyPI","name":"Django_Rest"},
              "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"4.0"},{"fixed":"4.2.2"}]}]}],
             "database_specific":{"severity":"MODERATE"}}]"#;
        let (rows, skipped) = read(doc).expect("read");
        assert_eq!(skipped, 1, "Ubuntu is not read");
        let ssl = &rows[&("Debian:12".to_string(), "openssl".to_string())][0];
        assert_eq!((ssl.severity, ssl.score), (Severity::Critical, Some(9.8)));
        let django = &rows[&("PyPI".to_string(), "django-rest".to_string())][0];
        assert_eq!(django.severity, Severity::Medium);
        assert!(django.affects(Scheme::Pep440, "4.2.1").is_some());
        let error = read(br#"{"id":"A","affected":[{"package":{"ecosystem":"npm","name":"x"},"ranges":[{"type":"SEMVER","events":[{"broken":"1"}]}]}]}"#).unwrap_err();
        assert!(error.contains("\"broken\" is not a range event"), "{error}");
        assert!(read(b"{not json").unwrap_err().contains("not JSON"));
        assert!(read(b"PK\x03\x04garbage").unwrap_err().contains("zip"));
    }
}
