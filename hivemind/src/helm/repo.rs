//! Chart repositories: `index.yaml` and the packages it lists, semantic versions and the
//! version constraints `--version` takes (`1.2.3`, `^1.2`, `~1.2.0`, `>=1.0 <2`, `1.x`, `*`).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A semantic version (`v` prefix allowed, build metadata ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: Vec<String>,
}

impl Version {
    /// `1.2.3`, `v1.2.3-rc.1+build`; `1` and `1.2` too, as Helm takes them.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().trim_start_matches('v');
        let text = text.split('+').next()?;
        let (core, pre) = match text.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (text, None),
        };
        let mut numbers = core.split('.');
        let mut next = |required: bool| -> Option<u64> {
            match numbers.next() {
                Some(n) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => n.parse().ok(),
                None if !required => Some(0),
                _ => None,
            }
        };
        let version = Version {
            major: next(true)?,
            minor: next(false)?,
            patch: next(false)?,
            pre: match pre {
                Some("") => return None,
                Some(pre) => pre.split('.').map(str::to_string).collect(),
                None => Vec::new(),
            },
        };
        numbers.next().is_none().then_some(version)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let order = match (a.parse::<u64>(), b.parse::<u64>()) {
                            (Ok(a), Ok(b)) => a.cmp(&b),
                            (Ok(_), Err(_)) => Ordering::Less,
                            (Err(_), Ok(_)) => Ordering::Greater,
                            (Err(_), Err(_)) => a.cmp(b),
                        };
                        if order != Ordering::Equal {
                            return order;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One comparison of a constraint.
#[derive(Debug, Clone, PartialEq)]
struct Bound {
    op: &'static str,
    version: Version,
}

/// A version constraint: alternatives (`||`), each a set of comparisons that must all hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    any_of: Vec<Vec<Bound>>,
    /// Whether some comparison names a pre-release: only then may a pre-release match.
    pre_release: bool,
}

impl Constraint {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a version constraint");
        let mut any_of = Vec::new();
        let mut pre_release = false;
        for alternative in text.split("||") {
            let mut all = Vec::new();
            let mut words_seen = 0;
            let normalized = alternative.replace(',', " ");
            let mut words = normalized.split_whitespace().peekable();
            while let Some(word) = words.next() {
                // `>= 1.2` is one comparison written as two words.
                let word = if matches!(word, ">=" | "<=" | ">" | "<" | "=" | "!=" | "^" | "~") {
                    format!("{word}{}", words.next().ok_or_else(bad)?)
                } else {
                    word.to_string()
                };
                let (op, rest) = [">=", "<=", "!=", "=>", "=<", ">", "<", "=", "^", "~>", "~"]
                    .iter()
                    .find_map(|op| word.strip_prefix(op).map(|r| (*op, r)))
                    .unwrap_or(("", word.as_str()));
                let rest = rest.trim().trim_start_matches('v');
                if rest.contains('-') {
                    pre_release = true;
                }
                all.extend(bounds(op, rest).ok_or_else(bad)?);
                words_seen += 1;
            }
            if words_seen == 0 {
                return Err(bad());
            }
            any_of.push(all);
        }
        Ok(Constraint {
            any_of,
            pre_release,
        })
    }

    pub fn matches(&self, version: &Version) -> bool {
        if !version.pre.is_empty() && !self.pre_release {
            return false;
        }
        self.any_of.iter().any(|all| {
            all.iter().all(|b| match b.op {
                ">=" => *version >= b.version,
                ">" => *version > b.version,
                "<=" => *version <= b.version,
                "<" => *version < b.version,
                "!=" => *version != b.version,
                _ => *version == b.version,
            })
        })
    }
}

/// A comparison as plain bounds: `^1.2` is `>=1.2.0 <2.0.0`, `1.x` is `>=1.0.0 <2.0.0`...
fn bounds(op: &str, text: &str) -> Option<Vec<Bound>> {
    let bound = |op, version| Bound { op, version };
    let (core, pre) = match text.split_once('-') {
        Some((core, pre)) => (core, pre.split('.').map(str::to_string).collect()),
        None => (text, Vec::new()),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    // How many leading numbers are given before a wildcard or the end.
    let mut numbers = Vec::new();
    for part in &parts {
        if matches!(*part, "x" | "X" | "*") {
            break;
        }
        numbers.push(part.parse::<u64>().ok()?);
    }
    if numbers.is_empty() {
        return match op {
            "" | "=" | ">=" | "^" | "~" | "~>" => Some(Vec::new()),
            _ => None,
        };
    }
    let given = numbers.len();
    numbers.resize(3, 0);
    let low = Version {
        major: numbers[0],
        minor: numbers[1],
        patch: numbers[2],
        pre,
    };
    let next = |level: usize| -> Version {
        let mut v = [low.major, low.minor, low.patch];
        v[level] += 1;
        for slot in v.iter_mut().skip(level + 1) {
            *slot = 0;
        }
        Version {
            major: v[0],
            minor: v[1],
            patch: v[2],
            pre: vec!["0".into()],
        }
    };
    let range = |upper_level: usize| {
        Some(vec![
            bound(">=", low.clone()),
            bound("<", next(upper_level)),
        ])
    };
    match op {
        "" | "=" if given < 3 => range(given - 1),
        "" | "=" => Some(vec![bound("=", low)]),
        "!=" => Some(vec![bound("!=", low)]),
        ">" if given < 3 => Some(vec![bound(">=", next(given - 1))]),
        ">" => Some(vec![bound(">", low)]),
        ">=" | "=>" => Some(vec![bound(">=", low)]),
        "<" => Some(vec![bound("<", low)]),
        "<=" | "=<" if given < 3 => Some(vec![bound("<", next(given - 1))]),
        "<=" | "=<" => Some(vec![bound("<=", low)]),
        "~" | "~>" => range(if given == 1 { 0 } else { 1 }),
        "^" => {
            let level = if low.major > 0 || given == 1 {
                0
            } else if low.minor > 0 || given == 2 {
                1
            } else {
                2
            };
            range(level)
        }
        _ => None,
    }
}

/// A repository's `index.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    #[serde(default)]
    pub entries: BTreeMap<String, Vec<IndexEntry>>,
}

/// One packaged version of a chart in an index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The package's SHA-256, hex.
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub urls: Vec<String>,
}

impl Index {
    pub fn parse(text: &str) -> Result<Self, String> {
        let index: Index =
            serde_yaml::from_str(text).map_err(|e| format!("index.yaml is not an index: {e}"))?;
        if index.api_version != "v1" {
            return Err(format!(
                "index.yaml has apiVersion {:?}; a chart repository index is v1",
                index.api_version
            ));
        }
        Ok(index)
    }

    /// The newest version of `chart` that `constraint` allows (any stable one without).
    pub fn find(&self, chart: &str, constraint: Option<&str>) -> Result<&IndexEntry, String> {
        let versions = self
            .entries
            .get(chart)
            .ok_or_else(|| format!("the repository has no chart {chart:?}"))?;
        let text = constraint.unwrap_or_default();
        let constraint = constraint.map(Constraint::parse).transpose()?;
        versions
            .iter()
            .filter_map(|entry| Version::parse(&entry.version).map(|v| (v, entry)))
            .filter(|(v, _)| match &constraint {
                Some(c) => c.matches(v),
                None => v.pre.is_empty(),
            })
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, entry)| entry)
            .ok_or_else(|| match constraint {
                Some(_) => format!(
                    "no version of {chart} matches {text:?} (the repository has {})",
                    versions
                        .iter()
                        .map(|e| e.version.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => format!("{chart} has no stable version"),
            })
    }
}

/// Where a package of an index lives: its first URL, relative to the repository's.
pub fn package_url(repository: &str, entry: &IndexEntry) -> Result<String, String> {
    let first = entry
        .urls
        .first()
        .ok_or_else(|| format!("{} {} lists no package URL", entry.name, entry.version))?;
    if first.starts_with("http://") || first.starts_with("https://") {
        return Ok(first.clone());
    }
    Ok(format!(
        "{}/{}",
        repository.trim_end_matches('/'),
        first.trim_start_matches("./")
    ))
}

/// Checks a downloaded package against the digest its index gives.
pub fn check_digest(entry: &IndexEntry, package: &[u8]) -> Result<(), String> {
    use sha2::Digest as _;
    let actual = hex::encode(sha2::Sha256::digest(package));
    if entry.digest.is_empty() {
        return Err(format!(
            "the index gives no digest for {} {}: the package cannot be checked",
            entry.name, entry.version
        ));
    }
    if !actual.eq_ignore_ascii_case(entry.digest.trim_start_matches("sha256:")) {
        return Err(format!(
            "{} {}: the package's SHA-256 is {actual}, the index says {}",
            entry.name, entry.version, entry.digest
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    fn allows(constraint: &str, version: &str) -> bool {
        Constraint::parse(constraint).unwrap().matches(&v(version))
    }

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(v("v1.2.3").patch, 3);
        assert_eq!(v("1.2"), v("1.2.0"));
        assert!(v("1.2.3-rc.1") < v("1.2.3"));
        assert!(v("1.2.3-rc.2") < v("1.2.3-rc.10"));
        assert!(v("1.2.3-alpha") < v("1.2.3-beta"));
        assert!(v("1.10.0") > v("1.9.9"));
        assert_eq!(v("1.0.0+build"), v("1.0.0"));
        for bad in ["", "one", "1.2.3.4", "1.-2", "1.2.3-"] {
            assert!(Version::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn constraints_as_helm_reads_them() {
        assert!(allows("1.2.3", "1.2.3"));
        assert!(!allows("1.2.3", "1.2.4"));
        assert!(allows("^1.2", "1.9.0"));
        assert!(!allows("^1.2", "2.0.0"));
        assert!(allows("^0.2.3", "0.2.9"));
        assert!(!allows("^0.2.3", "0.3.0"));
        assert!(allows("~1.2.0", "1.2.9"));
        assert!(!allows("~1.2.0", "1.3.0"));
        assert!(allows(">=1.0 <2", "1.5.0"));
        assert!(allows(">= 1.0, < 2", "1.5.0"));
        assert!(!allows(">=1.0 <2", "2.0.0"));
        assert!(allows("1.x", "1.7.1"));
        assert!(!allows("1.x", "2.0.0"));
        assert!(allows("*", "3.0.0"));
        assert!(allows("<1.0 || >=3", "3.1.0"));
        assert!(!allows("<1.0 || >=3", "2.0.0"));
        assert!(!allows(">=1.0", "1.5.0-rc.1"));
        assert!(allows(">=1.19-0", "1.31.0"));
        assert!(allows(">=1.19-0", "1.20.0-beta.1"));
        for bad in ["", ">=", "~one", "1.2.3.4"] {
            assert!(Constraint::parse(bad).is_err(), "{bad}");
        }
    }

    const INDEX: &str = r#"
apiVersion: v1
entries:
  web:
  - name: web
    version: 0.2.0
    digest: abc
    urls: [web-0.2.0.tgz]
  - name: web
    version: 0.1.0
    digest: def
    urls: ["https://charts.example.com/web-0.1.0.tgz"]
  - name: web
    version: 0.3.0-rc.1
    urls: []
generated: "2026-01-01T00:00:00Z"
"#;

    #[test]
    fn an_index_and_its_versions() {
        let index = Index::parse(INDEX).unwrap();
        assert_eq!(index.find("web", None).unwrap().version, "0.2.0");
        assert_eq!(index.find("web", Some("~0.1")).unwrap().version, "0.1.0");
        assert_eq!(
            index.find("web", Some(">=0.3.0-0")).unwrap().version,
            "0.3.0-rc.1"
        );
        let missing = index.find("web", Some("2.x")).unwrap_err();
        assert!(missing.contains("0.2.0, 0.1.0"), "{missing}");
        assert!(
            index
                .find("db", None)
                .unwrap_err()
                .contains("no chart \"db\"")
        );
        let latest = index.find("web", None).unwrap();
        assert_eq!(
            package_url("http://10.0.0.1:8080/charts/", latest).unwrap(),
            "http://10.0.0.1:8080/charts/web-0.2.0.tgz"
        );
        let old = index.find("web", Some("0.1.0")).unwrap();
        assert_eq!(
            package_url("http://x", old).unwrap(),
            "https://charts.example.com/web-0.1.0.tgz"
        );
        assert!(Index::parse("apiVersion: v2\nentries: {}\n").is_err());
        assert!(Index::parse("<html>").is_err());
    }

    #[test]
    fn digests_are_checked() {
        let entry = IndexEntry {
            name: "web".into(),
            version: "1.0.0".into(),
            digest: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".into(),
            ..Default::default()
        };
        assert!(check_digest(&entry, b"hello").is_ok());
        let wrong = check_digest(&entry, b"hellO").unwrap_err();
        assert!(wrong.contains("the index says"), "{wrong}");
        let none = IndexEntry {
            digest: String::new(),
            ..entry
        };
        assert!(check_digest(&none, b"hello").is_err());
    }
}
