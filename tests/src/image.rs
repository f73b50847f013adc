//! Test images built offline and deterministically from Debian's
//! busybox-static, as OCI image layouts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const BUSYBOX: &str = "/bin/busybox";

/// Applets linked in /bin next to busybox, so `sh -c` scripts and exec
/// probes can call them by name.
const APPLETS: &[&str] = &[
    "sh", "cat", "cp", "echo", "ls", "mkdir", "rm", "sleep", "wget", "httpd", "env", "id", "ps",
    "test", "[", "true", "false", "hostname", "ip", "nslookup", "ping", "date", "touch", "grep",
    "head", "tail", "wc", "sed", "kill", "nc", "mount", "df", "uname", "printf", "stat",
];

/// The test app's entrypoint: it publishes what it sees over HTTP on :80:
/// /greeting ($GREETING), /boots (a line per start, kept in the /data
/// volume), /memory-limit, /hostname, /ready and /alive (for readiness and
/// liveness checks; delete them to fail the check), /cgi-bin/whoami
/// (the client address as the server saw it, and the hostname),
/// /cgi-bin/headers (the request's headers, as CGI's `HTTP_*` variables) and
/// /cgi-bin/greeting (the greeting, with the status `$HTTP_STATUS`, 200 unless
/// set: a version that answers 500). With
/// `SECOND_PORT` set, a second server on that port answers /port with the
/// port (a second process: only where asked, so that the container is its
/// init alone otherwise). It logs `serving as <hostname>` on its standard
/// output.
pub const APP_SCRIPT: &str = r#"#!/bin/sh
echo "$GREETING" > /www/greeting
if [ -d /data ]; then
  echo boot >> /data/boots
  cp /data/boots /www/boots
fi
if [ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
  cat /sys/fs/cgroup/memory/memory.limit_in_bytes > /www/memory-limit
elif [ -f /sys/fs/cgroup/memory.max ]; then
  cat /sys/fs/cgroup/memory.max > /www/memory-limit
fi
hostname > /www/hostname
echo ok > /www/ready
echo ok > /www/alive
mkdir -p /www/cgi-bin
printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "$REMOTE_ADDR $(hostname)"\n' > /www/cgi-bin/whoami
printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\nenv | grep ^HTTP_\n' > /www/cgi-bin/headers
printf '#!/bin/sh\necho "Content-Type: application/octet-stream"\necho\nhead -c "${QUERY_STRING:-1024}" /dev/zero\n' > /www/cgi-bin/bytes
printf '#!/bin/sh\nprintf "Status: %s\\r\\nContent-Type: text/plain\\r\\n\\r\\n"\ncat /www/greeting\n' "${HTTP_STATUS:-200} Answer" > /www/cgi-bin/greeting
chmod +x /www/cgi-bin/whoami /www/cgi-bin/headers /www/cgi-bin/bytes /www/cgi-bin/greeting
if [ -n "$SECOND_PORT" ]; then
  mkdir -p /www2
  echo "$SECOND_PORT" > /www2/port
  busybox httpd -p "$SECOND_PORT" -h /www2
fi
echo "serving as $(hostname)"
# A broken version: nothing listens on port 80, so connections to it are reset.
if [ -n "$NO_HTTP" ]; then
  exec sleep 2147483647
fi
exec busybox httpd -f -p 80 -h /www
"#;

/// This machine's `/etc/os-release` and its `VERSION_ID` (`12`): with its dpkg database, what
/// makes an image look like this machine's distribution to a scanner.
pub fn os_release() -> Result<(Vec<u8>, String)> {
    let text = std::fs::read("/etc/os-release").context("read /etc/os-release")?;
    let version = String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_ID="))
        .map(|v| v.trim_matches('"').to_string())
        .context("VERSION_ID in /etc/os-release")?;
    Ok((text, version))
}

/// An image written as an OCI layout in `dir`, with its pieces at hand.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// The OCI image layout directory (oci-layout, index.json, blobs/).
    pub dir: PathBuf,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digest: String,
    /// sha256 of the uncompressed layer.
    pub diff_id: String,
    /// Chain id of the (single) layer: the snapshot name after unpacking.
    pub chain_id: String,
    /// Config and layer blobs as (digest, bytes), config first.
    pub blobs: Vec<(String, Vec<u8>)>,
    /// Name the default archive carries in its annotations.
    pub ref_name: String,
}

pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The test app image: busybox, applet links, /www, /bin/hm-test-app.
pub fn build_test_image(dir: &Path) -> Result<TestImage> {
    build_test_image_greeting(dir, "default")
}

/// The test app image answering `greeting` on /greeting unless the app sets `GREETING`: one
/// layer with the test app image, its own config (and digest).
pub fn build_test_image_greeting(dir: &Path, greeting: &str) -> Result<TestImage> {
    build_test_image_with(dir, greeting, &[], "hivemind.test/hm/test-app:1")
}

/// The test app image with more files in its layer (path without the leading `/`, content;
/// their directories made): a package database or a lockfile for a scan to read, in an image
/// that runs.
pub fn build_test_image_with(
    dir: &Path,
    greeting: &str,
    files: &[(&str, &[u8])],
    ref_name: &str,
) -> Result<TestImage> {
    let busybox = std::fs::read(BUSYBOX).with_context(|| format!("read {BUSYBOX}"))?;
    let mut tar = LayerBuilder::new();
    tar.dir("bin")?;
    tar.file("bin/busybox", &busybox, 0o755)?;
    for applet in APPLETS {
        tar.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    tar.file("bin/hm-test-app", APP_SCRIPT.as_bytes(), 0o755)?;
    for d in ["www", "tmp", "etc", "proc", "sys", "dev"] {
        tar.dir(d)?;
    }
    let mut dirs = std::collections::BTreeSet::new();
    for (path, _) in files {
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_string_lossy().to_string());
            parent = p.parent();
        }
    }
    for d in dirs
        .iter()
        .filter(|d| !["www", "tmp", "etc", "proc", "sys", "dev", "bin"].contains(&d.as_str()))
    {
        tar.dir(d)?;
    }
    for (path, data) in files {
        tar.file(path, data, 0o644)?;
    }
    let config = json!({
        "Entrypoint": ["/bin/hm-test-app"],
        "Env": ["PATH=/bin", format!("GREETING={greeting}")],
        "WorkingDir": "/",
    });
    assemble(dir, tar.finish()?, config, ref_name)
}

/// A tiny image whose only file is /marker with `marker` in it: distinct
/// blobs for tests that must not share content with the test app.
pub fn build_marker_image(dir: &Path, marker: &str) -> Result<TestImage> {
    let mut tar = LayerBuilder::new();
    tar.file("marker", marker.as_bytes(), 0o644)?;
    let config = json!({ "Cmd": ["/marker"] });
    assemble(dir, tar.finish()?, config, "hivemind.test/hm/marker:1")
}

struct LayerBuilder(tar::Builder<Vec<u8>>);

impl LayerBuilder {
    fn new() -> Self {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        Self(builder)
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.0
            .append_data(&mut header, format!("{path}/"), std::io::empty())?;
        Ok(())
    }

    fn file(&mut self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.0.append_data(&mut header, path, data)?;
        Ok(())
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.0.append_link(&mut header, path, target)?;
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>> {
        Ok(self.0.into_inner()?)
    }
}

fn assemble(
    dir: &Path,
    layer_tar: Vec<u8>,
    container_config: serde_json::Value,
    ref_name: &str,
) -> Result<TestImage> {
    let diff_id = digest(&layer_tar);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    std::io::Write::write_all(&mut gz, &layer_tar)?;
    let layer = gz.finish()?;
    let layer_digest = digest(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": container_config,
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created_by": "hivemind-tests", "created": "1970-01-01T00:00:00Z" }],
    }))?;
    let config_digest = digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": layer.len() }],
    }))?;
    let manifest_digest = digest(&manifest);
    let image = TestImage {
        dir: dir.to_path_buf(),
        manifest: manifest.clone(),
        manifest_digest: manifest_digest.clone(),
        config_digest: config_digest.clone(),
        layer_digest: layer_digest.clone(),
        chain_id: diff_id.clone(),
        diff_id,
        blobs: vec![(config_digest, config), (layer_digest, layer)],
        ref_name: ref_name.to_string(),
    };
    std::fs::create_dir_all(dir.join("blobs/sha256"))?;
    for (d, data) in image.blobs.iter().chain([&(manifest_digest, manifest)]) {
        std::fs::write(image.blob_path(d), data)?;
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    std::fs::write(dir.join("index.json"), image.index_json(ref_name)?)?;
    Ok(image)
}

impl TestImage {
    /// Path of a blob in the layout directory.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    fn index_json(&self, ref_name: &str) -> Result<Vec<u8>> {
        Ok(serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": OCI_MANIFEST,
                "digest": self.manifest_digest,
                "size": self.manifest.len(),
                "annotations": { "org.opencontainers.image.ref.name": ref_name },
            }],
        }))?)
    }

    /// The OCI layout as a tar, named [`TestImage::ref_name`].
    pub fn write_oci_archive(&self, path: &Path) -> Result<()> {
        self.write_oci_archive_named(path, &self.ref_name)
    }

    /// The OCI layout as a tar whose index names the image `ref_name` (a
    /// full reference, in the `org.opencontainers.image.ref.name`
    /// annotation).
    pub fn write_oci_archive_named(&self, path: &Path, ref_name: &str) -> Result<()> {
        write_oci_archive(path, &[(self, ref_name)])
    }
}

/// One OCI layout as a tar holding each image under its name (as `cosign save` writes an
/// image with its signature manifest beside it).
pub fn write_oci_archive(path: &Path, images: &[(&TestImage, &str)]) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut tar = tar::Builder::new(file);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut add = |name: &str, data: &[u8]| -> Result<()> {
        let mut header = LayerBuilder::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        tar.append_data(&mut header, name, data)?;
        Ok(())
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|(image, ref_name)| {
            json!({
                "mediaType": OCI_MANIFEST,
                "digest": digest(&image.manifest),
                "size": image.manifest.len(),
                "annotations": { "org.opencontainers.image.ref.name": ref_name },
            })
        })
        .collect();
    add(
        "index.json",
        &serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests}))?,
    )?;
    let mut written = std::collections::BTreeSet::new();
    for (image, _) in images {
        for (d, data) in image
            .blobs
            .iter()
            .chain([&(digest(&image.manifest), image.manifest.clone())])
        {
            if written.insert(d.clone()) {
                add(
                    &format!("blobs/sha256/{}", d.trim_start_matches("sha256:")),
                    data,
                )?;
            }
        }
    }
    tar.into_inner()?;
    Ok(())
}

impl TestImage {
    /// A legacy `docker save` tar (manifest.json, `<id>.json`,
    /// `<id>/layer.tar` uncompressed) tagged `repo_tag`.
    pub fn write_docker_archive(&self, path: &Path, repo_tag: &str) -> Result<()> {
        let (config_digest, config) = &self.blobs[0];
        let config_name = format!("{}.json", config_digest.trim_start_matches("sha256:"));
        let mut layer_names = Vec::new();
        let mut files = vec![(config_name.clone(), config.clone())];
        for (layer_digest, layer) in &self.blobs[1..] {
            let mut tar = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&layer[..]), &mut tar)?;
            let name = format!("{}/layer.tar", layer_digest.trim_start_matches("sha256:"));
            layer_names.push(name.clone());
            files.push((name, tar));
        }
        let manifest = serde_json::to_vec(&json!([{
            "Config": config_name,
            "RepoTags": [repo_tag],
            "Layers": layer_names,
        }]))?;
        files.push(("manifest.json".to_string(), manifest));
        let file =
            std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
        let mut tar = tar::Builder::new(file);
        for (name, data) in files {
            let mut header =
                LayerBuilder::header(tar::EntryType::Regular, 0o644, data.len() as u64);
            tar.append_data(&mut header, name, &data[..])?;
        }
        tar.into_inner()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_deterministically() {
        if !Path::new(BUSYBOX).exists() {
            eprintln!("skipped: {BUSYBOX} missing (apt-get install busybox-static)");
            return;
        }
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let one = build_test_image(a.path()).unwrap();
        let two = build_test_image(b.path()).unwrap();
        assert_eq!(one.manifest_digest, two.manifest_digest);
        assert!(one.blob_path(&one.layer_digest).exists());
        let archive = a.path().join("image.tar");
        one.write_oci_archive(&archive).unwrap();
        let mut names = Vec::new();
        for entry in tar::Archive::new(std::fs::File::open(&archive).unwrap())
            .entries()
            .unwrap()
        {
            names.push(
                entry
                    .unwrap()
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        assert!(names.contains(&"index.json".to_string()), "{names:?}");
        assert_eq!(names.len(), 5, "{names:?}");
    }
}
