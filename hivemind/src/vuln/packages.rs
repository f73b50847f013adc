//! What an image has installed, read from the files its package managers keep: dpkg's `status`
//! and `status.d/` (distroless), apk's `installed`, and the language lockfiles `Cargo.lock`,
//! `package-lock.json` and `requirements.txt`; which distribution and release, from
//! `os-release` and `alpine-release`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::version::Scheme;

/// An ecosystem as OSV names its records' (the release of a distribution apart).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Ecosystem {
    Debian,
    Alpine,
    #[serde(rename = "crates.io")]
    CratesIo,
    #[serde(rename = "npm")]
    Npm,
    PyPI,
    Go,
}

impl Ecosystem {
    pub const ALL: [Ecosystem; 6] = [
        Self::Debian,
        Self::Alpine,
        Self::CratesIo,
        Self::Npm,
        Self::PyPI,
        Self::Go,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debian => "Debian",
            Self::Alpine => "Alpine",
            Self::CratesIo => "crates.io",
            Self::Npm => "npm",
            Self::PyPI => "PyPI",
            Self::Go => "Go",
        }
    }

    /// The family of an OSV ecosystem string (`Debian:12` is Debian); none for the ones this
    /// does not read.
    pub fn of_osv(ecosystem: &str) -> Option<Self> {
        let family = ecosystem.split(':').next().unwrap_or(ecosystem);
        Self::ALL.into_iter().find(|e| e.as_str() == family)
    }

    /// How the ecosystem orders versions.
    pub fn scheme(self) -> Scheme {
        match self {
            Self::Debian => Scheme::Dpkg,
            Self::Alpine => Scheme::Apk,
            Self::CratesIo | Self::Npm | Self::Go => Scheme::Semver,
            Self::PyPI => Scheme::Pep440,
        }
    }

    /// A package name as the ecosystem compares them: PyPI's normalised (PEP 503), the others
    /// as they are.
    pub fn normalize(self, name: &str) -> String {
        match self {
            Self::PyPI => {
                let mut out = String::with_capacity(name.len());
                let mut dash = false;
                for c in name.trim().chars() {
                    if matches!(c, '-' | '_' | '.') {
                        dash = true;
                    } else {
                        if dash && !out.is_empty() {
                            out.push('-');
                        }
                        dash = false;
                        out.push(c.to_ascii_lowercase());
                    }
                }
                out
            }
            _ => name.trim().to_string(),
        }
    }
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// The source package it was built from (Debian's advisories name source packages), when
    /// it differs.
    pub source: Option<String>,
    /// The file that lists it, in the image.
    pub location: String,
}

/// The distribution an image is built on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distro {
    pub ecosystem: Ecosystem,
    /// As OSV names releases: `12` for Debian, `v3.19` for Alpine.
    pub release: Option<String>,
    pub pretty_name: Option<String>,
}

impl Distro {
    /// The OSV ecosystems whose records apply to the distribution's packages: its release's,
    /// and the family's without a release.
    pub fn osv_ecosystems(&self) -> Vec<String> {
        let family = self.ecosystem.as_str().to_string();
        match &self.release {
            Some(release) => vec![format!("{family}:{release}"), family],
            None => vec![family],
        }
    }
}

/// Files a scan reads, by path in the image (no leading `/`).
pub fn wanted(path: &str) -> bool {
    matches!(
        path,
        "var/lib/dpkg/status"
            | "lib/apk/db/installed"
            | "etc/os-release"
            | "usr/lib/os-release"
            | "etc/alpine-release"
    ) || path
        .strip_prefix("var/lib/dpkg/status.d/")
        .is_some_and(|f| !f.is_empty() && !f.contains('/') && !f.ends_with(".md5sums"))
        || matches!(
            path.rsplit('/').next(),
            Some("Cargo.lock" | "package-lock.json" | "requirements.txt")
        ) && !path.contains("/node_modules/")
}

/// The distribution and the packages the files show.
pub fn inventory(files: &BTreeMap<String, Vec<u8>>) -> (Option<Distro>, Vec<Package>) {
    let mut packages = Vec::new();
    for (path, data) in files {
        let text = String::from_utf8_lossy(data);
        let file = path.rsplit('/').next().unwrap_or(path);
        if path == "var/lib/dpkg/status" || path.starts_with("var/lib/dpkg/status.d/") {
            packages.extend(dpkg_status(&text, path));
        } else if path == "lib/apk/db/installed" {
            packages.extend(apk_installed(&text, path));
        } else if file == "Cargo.lock" {
            packages.extend(cargo_lock(&text, path));
        } else if file == "package-lock.json" {
            packages.extend(package_lock(&text, path));
        } else if file == "requirements.txt" {
            packages.extend(requirements(&text, path));
        }
    }
    packages.sort();
    packages.dedup();
    (distro(files, &packages), packages)
}

fn distro(files: &BTreeMap<String, Vec<u8>>, packages: &[Package]) -> Option<Distro> {
    let os_release = files
        .get("etc/os-release")
        .or_else(|| files.get("usr/lib/os-release"))
        .map(|d| String::from_utf8_lossy(d).to_string());
    let field = |name: &str| {
        os_release.as_deref().and_then(|text| {
            text.lines().find_map(|line| {
                let value = line.strip_prefix(name)?.strip_prefix('=')?;
                Some(value.trim().trim_matches('"').to_string())
            })
        })
    };
    let has = |e: Ecosystem| packages.iter().any(|p| p.ecosystem == e);
    let id = field("ID");
    let pretty_name = field("PRETTY_NAME");
    if id.as_deref() == Some("alpine")
        || files.contains_key("etc/alpine-release")
        || has(Ecosystem::Alpine)
    {
        let version = field("VERSION_ID").or_else(|| {
            files
                .get("etc/alpine-release")
                .map(|d| String::from_utf8_lossy(d).trim().to_string())
        });
        let release = version.map(|v| {
            let mut parts = v.split('.');
            match (parts.next(), parts.next()) {
                (Some(major), Some(minor)) => format!("v{major}.{minor}"),
                _ => format!("v{v}"),
            }
        });
        return Some(Distro {
            ecosystem: Ecosystem::Alpine,
            release,
            pretty_name,
        });
    }
    if id.as_deref() == Some("debian") || has(Ecosystem::Debian) {
        return Some(Distro {
            ecosystem: Ecosystem::Debian,
            release: field("VERSION_ID"),
            pretty_name,
        });
    }
    None
}

/// Paragraphs of a Debian control file: fields by name (continuation lines dropped).
fn paragraphs(text: &str) -> impl Iterator<Item = BTreeMap<&str, &str>> {
    text.split("\n\n").map(|block| {
        block
            .lines()
            .filter(|l| !l.starts_with([' ', '\t']))
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect()
    })
}

/// dpkg's database: each installed package with its version and source package. A
/// `status.d/` file (distroless) has no `Status` field: its package is installed.
fn dpkg_status(text: &str, location: &str) -> Vec<Package> {
    paragraphs(text)
        .filter(|p| {
            p.get("Status")
                .is_none_or(|s| s.split_whitespace().nth(2) == Some("installed"))
        })
        .filter_map(|p| {
            let name = p.get("Package")?.to_string();
            let version = p.get("Version")?.to_string();
            // `Source: openssl` or `Source: openssl (3.0.11-1)`.
            let source = p
                .get("Source")
                .and_then(|s| s.split_whitespace().next())
                .filter(|s| *s != name)
                .map(str::to_string);
            Some(Package {
                ecosystem: Ecosystem::Debian,
                name,
                version,
                source,
                location: location.to_string(),
            })
        })
        .collect()
}

/// apk's database: `P:` name, `V:` version, `o:` origin (the source package).
fn apk_installed(text: &str, location: &str) -> Vec<Package> {
    text.split("\n\n")
        .filter_map(|block| {
            let field = |key: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(key).map(str::trim).map(str::to_string))
            };
            let name = field("P:")?;
            let version = field("V:")?;
            let source = field("o:").filter(|o| *o != name);
            Some(Package {
                ecosystem: Ecosystem::Alpine,
                name,
                version,
                source,
                location: location.to_string(),
            })
        })
        .collect()
}

/// `Cargo.lock`: every `[[package]]` from a registry (the workspace's own crates have no
/// `source`).
fn cargo_lock(text: &str, location: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for block in text.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        let (Some(name), Some(version)) = (field("name"), field("version")) else {
            continue;
        };
        if field("source").is_some_and(|s| s.starts_with("registry+")) {
            out.push(Package {
                ecosystem: Ecosystem::CratesIo,
                name,
                version,
                source: None,
                location: location.to_string(),
            });
        }
    }
    out
}

/// `package-lock.json`: lockfile v2 and v3 list `packages` by their `node_modules/` path; v1
/// nests `dependencies`.
fn package_lock(text: &str, location: &str) -> Vec<Package> {
    let Ok(lock) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |name: &str, version: &str| {
        out.push(Package {
            ecosystem: Ecosystem::Npm,
            name: name.to_string(),
            version: version.to_string(),
            source: None,
            location: location.to_string(),
        })
    };
    if let Some(packages) = lock["packages"].as_object() {
        for (path, entry) in packages {
            let Some(name) = path.rsplit_once("node_modules/").map(|(_, n)| n) else {
                continue;
            };
            if entry["link"] == true {
                continue;
            }
            if let Some(version) = entry["version"].as_str() {
                push(name, version);
            }
        }
    } else {
        fn walk(deps: &serde_json::Value, push: &mut dyn FnMut(&str, &str)) {
            if let Some(deps) = deps.as_object() {
                for (name, entry) in deps {
                    if let Some(version) = entry["version"].as_str() {
                        push(name, version);
                    }
                    walk(&entry["dependencies"], push);
                }
            }
        }
        walk(&lock["dependencies"], &mut push);
    }
    out
}

/// `requirements.txt`: the pinned ones (`name==version`, extras and markers dropped).
fn requirements(text: &str, location: &str) -> Vec<Package> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.split(';').next()?.trim();
            let (name, version) = line.split_once("==")?;
            let name = name.split('[').next()?.trim();
            let version = version.split_whitespace().next()?.trim();
            if name.is_empty() || name.starts_with('-') || version.is_empty() {
                return None;
            }
            Some(Package {
                ecosystem: Ecosystem::PyPI,
                name: Ecosystem::PyPI.normalize(name),
                version: version.to_string(),
                source: None,
                location: location.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_databases_and_lockfiles_are_read() {
        let mut files = BTreeMap::new();
        files.insert(
            "var/lib/dpkg/status".to_string(),
            b"Package: libssl3\nStatus: install ok installed\nSource: openssl (3.0.11-1)\nVersion: 3.0.11-1~deb12u2\nDescription: x\n continued\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\nPackage: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b2\n".to_vec(),
        );
        files.insert(
            "var/lib/dpkg/status.d/tzdata".to_string(),
            b"Package: tzdata\nVersion: 2024a-0+deb12u1\n".to_vec(),
        );
        files.insert(
            "etc/os-release".to_string(),
            b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n"
                .to_vec(),
        );
        files.insert(
            "app/Cargo.lock".to_string(),
            b"version = 3\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n\n[[package]]\nname = \"smallvec\"\nversion = \"1.6.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n".to_vec(),
        );
        files.insert(
            "srv/package-lock.json".to_string(),
            br#"{"lockfileVersion":3,"packages":{"":{"name":"srv"},"node_modules/lodash":{"version":"4.17.20"},"node_modules/@types/node":{"version":"20.1.0"}}}"#.to_vec(),
        );
        files.insert(
            "srv/requirements.txt".to_string(),
            b"# pinned\nDjango==4.2.1 ; python_version > '3'\nrequests[socks]==2.31.0\nflask>=2\n-r other.txt\n".to_vec(),
        );
        let (distro, packages) = inventory(&files);
        let distro = distro.expect("debian");
        assert_eq!(distro.osv_ecosystems(), ["Debian:12", "Debian"]);
        let names: Vec<(&str, &str)> = packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("bash", "5.2.15-2+b2"),
                ("libssl3", "3.0.11-1~deb12u2"),
                ("tzdata", "2024a-0+deb12u1"),
                ("smallvec", "1.6.0"),
                ("@types/node", "20.1.0"),
                ("lodash", "4.17.20"),
                ("django", "4.2.1"),
                ("requests", "2.31.0"),
            ]
        );
        let ssl = packages.iter().find(|p| p.name == "libssl3").unwrap();
        assert_eq!(ssl.source.as_deref(), Some("openssl"));

        let mut alpine = BTreeMap::new();
        alpine.insert(
            "lib/apk/db/installed".to_string(),
            b"C:Q1abc=\nP:libcrypto3\nV:3.1.4-r5\no:openssl\n\nP:musl\nV:1.2.4-r2\no:musl\n"
                .to_vec(),
        );
        alpine.insert("etc/alpine-release".to_string(), b"3.19.1\n".to_vec());
        let (distro, packages) = inventory(&alpine);
        assert_eq!(distro.unwrap().osv_ecosystems(), ["Alpine:v3.19", "Alpine"]);
        assert_eq!(packages.len(), 2);
        assert_eq!(packages[0].source.as_deref(), Some("openssl"));
        assert_eq!(packages[1].source, None);
    }

    #[test]
    fn wanted_paths() {
        for yes in [
            "var/lib/dpkg/status",
            "var/lib/dpkg/status.d/base",
            "lib/apk/db/installed",
            "app/Cargo.lock",
            "srv/package-lock.json",
            "requirements.txt",
        ] {
            assert!(wanted(yes), "{yes}");
        }
        for no in [
            "var/lib/dpkg/status-old",
            "var/lib/dpkg/status.d/base.md5sums",
            "srv/node_modules/x/package-lock.json",
            "etc/passwd",
        ] {
            assert!(!wanted(no), "{no}");
        }
    }
}
