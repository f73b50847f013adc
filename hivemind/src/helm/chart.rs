//! Helm v3 charts as files: `Chart.yaml`, `values.yaml`, `templates/`, subcharts in
//! `charts/` (directories or packages), read from a directory or a `.tgz` package, and packed
//! into one (`helm package` without the signing).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Most bytes a chart package may hold once unpacked (Helm's own limit is 100 MiB; charts of
/// apps this size are far smaller).
pub const MAX_CHART_BYTES: u64 = 20 << 20;
/// Most files in one chart package, subcharts included.
pub const MAX_CHART_FILES: usize = 5_000;
/// How deep subcharts may nest.
const MAX_DEPTH: usize = 8;

/// A chart that could not be read, with what is wrong in it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ChartError(pub String);

fn err(message: impl Into<String>) -> ChartError {
    ChartError(message.into())
}

/// `Chart.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub api_version: String,
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `application` (the default) or `library` (templates only, nothing rendered).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub chart_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Dependency>,
}

/// One of `Chart.yaml`'s `dependencies`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub repository: Option<String>,
    /// A values path (`redis.enabled`) that turns the subchart off when false.
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub alias: Option<String>,
}

/// A loaded chart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chart {
    pub metadata: Metadata,
    /// `Chart.yaml` as written, for `.Chart` (with Helm's field names).
    pub chart_fields: Map<String, Value>,
    /// `values.yaml` (an empty map when there is none).
    pub values: Value,
    /// Files under `templates/`, by path in the chart (`templates/deployment.yaml`).
    pub templates: BTreeMap<String, String>,
    /// Every other text file, for `.Files.Get`.
    pub files: BTreeMap<String, String>,
    /// Subcharts from `charts/`.
    pub subcharts: Vec<Chart>,
}

impl Chart {
    /// Reads a chart from its files (paths relative to the chart's directory).
    pub fn from_files(files: BTreeMap<String, Vec<u8>>) -> Result<Self, ChartError> {
        Self::from_files_at(files, 0)
    }

    fn from_files_at(files: BTreeMap<String, Vec<u8>>, depth: usize) -> Result<Self, ChartError> {
        if depth > MAX_DEPTH {
            return Err(err(format!(
                "subcharts nest deeper than {MAX_DEPTH} levels"
            )));
        }
        let text = |path: &str, bytes: &[u8]| {
            String::from_utf8(bytes.to_vec()).map_err(|_| err(format!("{path} is not UTF-8 text")))
        };
        let chart_yaml = files
            .get("Chart.yaml")
            .ok_or_else(|| err("Chart.yaml is missing: this is not a chart"))?;
        let chart_yaml = text("Chart.yaml", chart_yaml)?;
        let metadata: Metadata =
            serde_yaml::from_str(&chart_yaml).map_err(|e| err(format!("Chart.yaml: {e}")))?;
        metadata.validate()?;
        let chart_fields = chart_fields(&chart_yaml)?;
        let values = match files.get("values.yaml") {
            Some(bytes) => super::values::parse_yaml(&text("values.yaml", bytes)?)
                .map_err(|e| err(format!("values.yaml: {e}")))?,
            None => Value::Object(Map::new()),
        };
        let mut chart = Chart {
            metadata,
            chart_fields,
            values,
            ..Default::default()
        };
        let mut subchart_dirs: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
        for (path, bytes) in files {
            if let Some(rest) = path.strip_prefix("charts/") {
                match rest.split_once('/') {
                    Some((dir, inner)) => {
                        subchart_dirs
                            .entry(dir.to_string())
                            .or_default()
                            .insert(inner.to_string(), bytes);
                    }
                    None if rest.ends_with(".tgz") => {
                        let sub = unpack(&bytes).map_err(|e| err(format!("{path}: {e}")))?;
                        let sub = Self::from_files_at(sub, depth + 1)
                            .map_err(|e| err(format!("{path}: {e}")))?;
                        chart.subcharts.push(sub);
                    }
                    None => {}
                }
            } else if path.starts_with("templates/") {
                let source = text(&path, &bytes)?;
                chart.templates.insert(path, source);
            } else if let Ok(source) = String::from_utf8(bytes) {
                chart.files.insert(path, source);
            }
        }
        for (dir, files) in subchart_dirs {
            let sub = Self::from_files_at(files, depth + 1)
                .map_err(|e| err(format!("charts/{dir}: {e}")))?;
            chart.subcharts.push(sub);
        }
        for dependency in &chart.metadata.dependencies {
            if !chart
                .subcharts
                .iter()
                .any(|s| s.metadata.name == dependency.name)
            {
                return Err(err(format!(
                    "dependency {} is not in charts/: vendor it first (helm dependency build)",
                    dependency.name
                )));
            }
        }
        Ok(chart)
    }

    /// Reads a chart directory, leaving out what its `.helmignore` lists.
    pub fn load_dir(dir: &Path) -> Result<Self, ChartError> {
        Self::from_files(read_dir(dir)?)
    }

    /// Reads a chart package (`.tgz`).
    pub fn load_archive(bytes: &[u8]) -> Result<Self, ChartError> {
        Self::from_files(unpack(bytes)?)
    }
}

impl Metadata {
    fn validate(&self) -> Result<(), ChartError> {
        if self.api_version != "v2" && self.api_version != "v1" {
            return Err(err(format!(
                "Chart.yaml: apiVersion {:?} is not a Helm chart version (v2, or v1)",
                self.api_version
            )));
        }
        super::create::validate_chart_name(&self.name)
            .map_err(|e| err(format!("Chart.yaml: name: {e}")))?;
        if super::repo::Version::parse(&self.version).is_none() {
            return Err(err(format!(
                "Chart.yaml: version {:?} is not a semantic version",
                self.version
            )));
        }
        Ok(())
    }

    /// Whether the chart renders nothing of its own (`type: library`).
    pub fn is_library(&self) -> bool {
        self.chart_type.as_deref() == Some("library")
    }
}

/// `Chart.yaml`'s fields as templates see them: `.Chart.Name`, `.Chart.AppVersion`...
fn chart_fields(chart_yaml: &str) -> Result<Map<String, Value>, ChartError> {
    let value: Value =
        serde_yaml::from_str(chart_yaml).map_err(|e| err(format!("Chart.yaml: {e}")))?;
    let Value::Object(map) = value else {
        return Err(err("Chart.yaml is not a mapping"));
    };
    Ok(map
        .into_iter()
        .map(|(key, value)| {
            let key = match key.as_str() {
                "apiVersion" => "APIVersion".to_string(),
                other => {
                    let mut chars = other.chars();
                    chars
                        .next()
                        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                        .unwrap_or_default()
                }
            };
            (key, value)
        })
        .collect())
}

/// The chart's files, relative to its top directory, from a package: every entry sits under
/// one top directory (`web/Chart.yaml`), as `helm package` writes them.
pub fn unpack(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, ChartError> {
    let gz = flate2::read::GzDecoder::new(bytes);
    let mut archive = tar::Archive::new(gz.take(MAX_CHART_BYTES * 4));
    let mut files = BTreeMap::new();
    let mut top: Option<String> = None;
    let mut total = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| err(format!("not a gzipped tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| err(format!("not a gzipped tar archive: {e}")))?;
        let kind = entry.header().entry_type();
        if kind.is_dir() || kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| err(format!("an entry has a bad path: {e}")))?
            .into_owned();
        let shown = path.display().to_string();
        if !kind.is_file() {
            return Err(err(format!(
                "{shown}: only regular files belong in a chart package"
            )));
        }
        let mut parts = Vec::new();
        for component in path.components() {
            match component {
                Component::Normal(part) => parts.push(
                    part.to_str()
                        .ok_or_else(|| err(format!("{shown}: the path is not UTF-8")))?
                        .to_string(),
                ),
                Component::CurDir => {}
                _ => return Err(err(format!("{shown}: the path leaves the chart"))),
            }
        }
        if parts.len() < 2 {
            return Err(err(format!(
                "{shown}: a package keeps its files in one top directory"
            )));
        }
        let dir = parts.remove(0);
        match &top {
            Some(top) if *top != dir => {
                return Err(err(format!(
                    "{shown}: a package holds one chart, found {top}/ and {dir}/"
                )));
            }
            Some(_) => {}
            None => top = Some(dir),
        }
        total += entry.header().size().unwrap_or(0);
        if total > MAX_CHART_BYTES {
            return Err(err(format!(
                "the package unpacks to more than {} MiB",
                MAX_CHART_BYTES >> 20
            )));
        }
        if files.len() >= MAX_CHART_FILES {
            return Err(err(format!(
                "the package has more than {MAX_CHART_FILES} files"
            )));
        }
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| err(format!("{shown}: {e}")))?;
        files.insert(parts.join("/"), data);
    }
    if files.is_empty() {
        return Err(err("the package is empty"));
    }
    Ok(files)
}

/// `.helmignore` lines: `name`, `*.glob`, `dir/` (a directory anywhere), `/top` (from the
/// chart's top), comments and blanks.
struct Ignore(Vec<String>);

impl Ignore {
    fn matches(&self, path: &str, is_dir: bool) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        self.0.iter().any(|pattern| {
            let (pattern, dir_only) = match pattern.strip_suffix('/') {
                Some(p) => (p, true),
                None => (pattern.as_str(), false),
            };
            if dir_only && !is_dir {
                return false;
            }
            match pattern.strip_prefix('/') {
                Some(anchored) => glob(anchored, path),
                None if pattern.contains('/') => glob(pattern, path),
                None => glob(pattern, name),
            }
        })
    }
}

/// `*` (any run without '/'), `?` (one character) and literal text.
fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && t[0] != b'/' && go(p, &t[1..])),
            (Some(b'?'), Some(c)) if *c != b'/' => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// A chart directory's files, relative to it, without what `.helmignore` lists.
pub fn read_dir(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, ChartError> {
    let ignore = match std::fs::read_to_string(dir.join(".helmignore")) {
        Ok(text) => Ignore(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect(),
        ),
        Err(_) => Ignore(Vec::new()),
    };
    let mut files = BTreeMap::new();
    let mut total = 0u64;
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, relative)) = pending.pop() {
        let entries =
            std::fs::read_dir(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        for entry in entries {
            let entry = entry.map_err(|e| err(format!("{}: {e}", path.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if relative.is_empty() {
                name
            } else {
                format!("{relative}/{name}")
            };
            let kind = entry.file_type().map_err(|e| err(format!("{rel}: {e}")))?;
            if ignore.matches(&rel, kind.is_dir()) {
                continue;
            }
            if kind.is_dir() {
                pending.push((entry.path(), rel));
            } else if kind.is_file() {
                let data = std::fs::read(entry.path()).map_err(|e| err(format!("{rel}: {e}")))?;
                total += data.len() as u64;
                if total > MAX_CHART_BYTES || files.len() >= MAX_CHART_FILES {
                    return Err(err(format!(
                        "{}: the chart is larger than {} MiB or {MAX_CHART_FILES} files",
                        dir.display(),
                        MAX_CHART_BYTES >> 20
                    )));
                }
                files.insert(rel, data);
            }
        }
    }
    Ok(files)
}

/// Packs a chart's files as `helm package` does: one gzipped tar with the files under
/// `<name>/`.
pub fn pack(name: &str, files: &BTreeMap<String, Vec<u8>>) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, format!("{name}/{path}"), data.as_slice())?;
    }
    builder.into_inner()?.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        list.iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect()
    }

    const CHART: &str = "apiVersion: v2\nname: web\nversion: 0.1.0\nappVersion: \"1.16.0\"\n";

    #[test]
    fn a_chart_from_files_and_its_package() {
        let sub = pack(
            "db",
            &files(&[
                ("Chart.yaml", "apiVersion: v2\nname: db\nversion: 1.0.0\n"),
                ("templates/s.yaml", "kind: Service"),
            ]),
        )
        .unwrap();
        let mut all = files(&[
            ("Chart.yaml", CHART),
            ("values.yaml", "replicaCount: 2\n"),
            ("templates/deployment.yaml", "kind: Deployment"),
            ("templates/_helpers.tpl", "{{ define \"x\" }}{{ end }}"),
            ("README.md", "hello"),
        ]);
        all.insert("charts/db-1.0.0.tgz".into(), sub);
        let packed = pack("web", &all).unwrap();
        let chart = Chart::load_archive(&packed).unwrap();
        assert_eq!(chart.metadata.name, "web");
        assert_eq!(chart.metadata.app_version.as_deref(), Some("1.16.0"));
        assert_eq!(chart.chart_fields["AppVersion"], "1.16.0");
        assert_eq!(chart.chart_fields["APIVersion"], "v2");
        assert_eq!(chart.values["replicaCount"], 2);
        assert_eq!(chart.templates.len(), 2);
        assert_eq!(chart.files["README.md"], "hello");
        assert_eq!(chart.subcharts.len(), 1);
        assert_eq!(chart.subcharts[0].metadata.name, "db");
    }

    #[test]
    fn bad_charts_say_what_is_wrong() {
        let error = |list: &[(&str, &str)]| Chart::from_files(files(list)).unwrap_err().0;
        assert!(error(&[("values.yaml", "")]).contains("Chart.yaml is missing"));
        assert!(
            error(&[("Chart.yaml", "apiVersion: v3\nname: a\nversion: 1.0.0\n")])
                .contains("apiVersion")
        );
        assert!(
            error(&[("Chart.yaml", "apiVersion: v2\nname: a\nversion: one\n")])
                .contains("semantic version")
        );
        assert!(
            error(&[("Chart.yaml", "apiVersion: v2\nname: a b\nversion: 1.0.0\n")])
                .contains("name")
        );
        assert!(
            error(&[("Chart.yaml", CHART), ("values.yaml", "- a list")]).contains("values.yaml")
        );
        assert!(error(&[(
            "Chart.yaml",
            "apiVersion: v2\nname: a\nversion: 1.0.0\ndependencies:\n- name: redis\n  version: 1.x\n"
        )])
        .contains("dependency redis"));
    }

    #[test]
    fn packages_that_escape_or_mix_charts_are_refused() {
        let tar = |entries: &[(&str, &[u8])]| {
            let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            let mut builder = tar::Builder::new(gz);
            for (path, data) in entries {
                let mut header = tar::Header::new_gnu();
                header.set_size(data.len() as u64);
                header.set_entry_type(tar::EntryType::Regular);
                // set_path refuses "..": write the name bytes directly.
                header.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
                header.set_cksum();
                builder.append(&header, *data).unwrap();
            }
            builder.into_inner().unwrap().finish().unwrap()
        };
        let escape = tar(&[("web/../../etc/passwd", b"x")]);
        assert!(unpack(&escape).unwrap_err().0.contains("leaves the chart"));
        let two = tar(&[("a/Chart.yaml", b"x"), ("b/Chart.yaml", b"x")]);
        assert!(unpack(&two).unwrap_err().0.contains("one chart"));
        assert!(unpack(b"not gzip").is_err());
    }

    #[test]
    fn helmignore_patterns() {
        let ignore = Ignore(vec![
            ".git/".into(),
            "*.swp".into(),
            "/secret.txt".into(),
            "docs/*.md".into(),
        ]);
        assert!(ignore.matches(".git", true));
        assert!(!ignore.matches(".git", false));
        assert!(ignore.matches("templates/a.swp", false));
        assert!(ignore.matches("secret.txt", false));
        assert!(!ignore.matches("templates/secret.txt", false));
        assert!(ignore.matches("docs/a.md", false));
        assert!(!ignore.matches("templates/deployment.yaml", false));
    }
}
