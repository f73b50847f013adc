//! Building an image from a directory: its files as one new layer on a local base image
//! (the base's layers kept as they are), written to the content store and unpacked like a
//! pull, and recorded under a new name. What `docker build` does for a `COPY dir /path` on
//! `FROM base`, without running anything.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::content::{Session, read_document};
use super::manifest::{
    DOCKER_MANIFEST, Descriptor, Manifest, OCI_MANIFEST, parse_config, parse_manifest,
    sha256_digest,
};
use super::pull::{Documents, finish};
use super::{ImageError, Progress, ResolvedImage, normalize_reference};
use crate::containerd::Containerd;

const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The new layer: `dir`'s files under `dest` in the image.
#[derive(Debug, Clone)]
pub struct LayerSource {
    pub dir: PathBuf,
    /// Absolute path in the image.
    pub dest: String,
    /// What the image's history says made the layer.
    pub created_by: String,
    /// Labels added to the image's config.
    pub labels: BTreeMap<String, String>,
}

/// The manifest of the local image `name` (the platform's, under an index): its digest,
/// bytes and parsed form. `None` when the image or one of its documents is not stored.
pub(super) async fn local_manifest(
    cd: &Containerd,
    name: &str,
) -> Result<Option<(String, Bytes, Manifest)>, ImageError> {
    let Some(target) = super::unpack::get_image(cd, name).await? else {
        return Ok(None);
    };
    let Some(top) = read_document(cd, &target.digest).await? else {
        return Ok(None);
    };
    let (digest, bytes) = if super::manifest::is_index(&target.media_type) {
        let index = super::manifest::parse_index(&target.digest, &top)?;
        let (_, chosen) = super::manifest::select_platform(name, &index)?;
        match read_document(cd, &chosen.digest).await? {
            Some(bytes) => (chosen.digest, bytes),
            None => return Ok(None),
        }
    } else {
        (target.digest.clone(), top)
    };
    let manifest = parse_manifest(&digest, &bytes)?;
    Ok(Some((digest, bytes, manifest)))
}

/// Records `reference` as the local image `base` with `layer` on top.
pub async fn add_layer(
    cd: &Containerd,
    base: &str,
    layer: &LayerSource,
    reference: &str,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<ResolvedImage, ImageError> {
    let base = normalize_reference(base)?;
    let name = normalize_reference(reference)?;
    let not_local = || ImageError::NotLocal {
        reference: base.clone(),
    };
    let (base_digest, base_bytes, base_manifest) =
        local_manifest(cd, &base).await?.ok_or_else(not_local)?;
    let base_config = read_document(cd, &base_manifest.config.digest)
        .await?
        .ok_or_else(not_local)?;

    let source = layer.clone();
    let (blob, diff_id) = tokio::task::spawn_blocking(move || tar_layer(&source.dir, &source.dest))
        .await
        .map_err(|e| layer_error(&name, format!("the layer build stopped: {e}")))?
        .map_err(|e| layer_error(&name, format!("reading {}: {e}", layer.dir.display())))?;
    let blob = Bytes::from(blob);
    let blob_digest = sha256_digest(&blob);

    let invalid = |reason: String| ImageError::InvalidManifest {
        digest: base_digest.clone(),
        reason,
    };
    let mut config: Value = serde_json::from_slice(&base_config)
        .map_err(|e| invalid(format!("its config is not JSON: {e}")))?;
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    config["created"] = json!(created);
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .ok_or_else(|| invalid("its config has no rootfs.diff_ids".to_string()))?
        .push(json!(diff_id));
    if !config["history"].is_array() {
        config["history"] = json!([]);
    }
    if let Some(history) = config["history"].as_array_mut() {
        history.push(json!({"created": created, "created_by": layer.created_by}));
    }
    if !config["config"].is_object() {
        config["config"] = json!({});
    }
    if !config["config"]["Labels"].is_object() {
        config["config"]["Labels"] = json!({});
    }
    for (key, value) in &layer.labels {
        config["config"]["Labels"][key] = json!(value);
    }
    let config_bytes = Bytes::from(serde_json::to_vec(&config).unwrap_or_default());
    let config_digest = sha256_digest(&config_bytes);

    let mut manifest: Value = serde_json::from_slice(&base_bytes)
        .map_err(|e| invalid(format!("its manifest is not JSON: {e}")))?;
    let media_type = manifest["mediaType"]
        .as_str()
        .unwrap_or(OCI_MANIFEST)
        .to_string();
    manifest["config"]["digest"] = json!(config_digest);
    manifest["config"]["size"] = json!(config_bytes.len());
    let layer_type = if media_type == DOCKER_MANIFEST {
        DOCKER_LAYER_GZIP
    } else {
        OCI_LAYER_GZIP
    };
    manifest["layers"]
        .as_array_mut()
        .ok_or_else(|| invalid("its manifest has no layers".to_string()))?
        .push(json!({"mediaType": layer_type, "digest": blob_digest, "size": blob.len()}));
    let manifest_bytes = Bytes::from(serde_json::to_vec(&manifest).unwrap_or_default());
    let manifest_digest = sha256_digest(&manifest_bytes);

    let documents = Documents {
        top: Descriptor {
            media_type,
            digest: manifest_digest.clone(),
            size: manifest_bytes.len() as u64,
            platform: None,
            annotations: Default::default(),
        },
        index: None,
        manifest: parse_manifest(&manifest_digest, &manifest_bytes)?,
        manifest_digest,
        manifest_bytes,
        config: parse_config(&config_digest, &config_bytes)?,
        config_bytes,
    };
    documents.check()?;
    let session = Session::begin(cd).await?;
    let result = async {
        session
            .write_bytes(
                &blob_digest,
                blob.len() as u64,
                blob.clone(),
                Default::default(),
            )
            .await?;
        finish(&session, &name, &documents, progress).await
    }
    .await;
    session.end().await;
    result
}

fn layer_error(name: &str, reason: String) -> ImageError {
    ImageError::Layer {
        reference: name.to_string(),
        digest: String::new(),
        reason,
    }
}

/// A gzip'd tar of `dir`'s files under `dest` (its parents as directories), and the digest
/// of the uncompressed tar (the layer's diff id). Symbolic links are kept as links, never
/// followed, so nothing outside `dir` gets in.
fn tar_layer(dir: &Path, dest: &str) -> std::io::Result<(Vec<u8>, String)> {
    if !dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "not a directory (did the build write it?)",
        ));
    }
    let dest = dest.trim_matches('/');
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    let mut parent = String::new();
    let components: Vec<&str> = dest.split('/').filter(|c| !c.is_empty()).collect();
    for component in components.iter().take(components.len().saturating_sub(1)) {
        if !parent.is_empty() {
            parent.push('/');
        }
        parent.push_str(component);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(0);
        tar.append_data(&mut header, format!("{parent}/"), std::io::empty())?;
    }
    if dest.is_empty() {
        tar.append_dir_all(".", dir)?;
    } else {
        tar.append_dir_all(dest, dir)?;
    }
    let data = tar.into_inner()?;
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&data)?;
    Ok((gz.finish()?, diff_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_holds_the_directory_under_its_path_and_keeps_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("css")).unwrap();
        std::fs::write(dir.path().join("index.html"), "hi").unwrap();
        std::fs::write(dir.path().join("css/site.css"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", dir.path().join("leak")).unwrap();
        let (gz, diff_id) = tar_layer(dir.path(), "/srv/www").unwrap();
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain).unwrap();
        assert_eq!(
            diff_id,
            format!("sha256:{}", hex::encode(Sha256::digest(&plain)))
        );
        let mut entries = BTreeMap::new();
        for entry in tar::Archive::new(&plain[..]).entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            entries.insert(path, entry.header().entry_type());
        }
        assert_eq!(entries.get("srv"), Some(&tar::EntryType::Directory));
        assert_eq!(
            entries.get("srv/www/index.html"),
            Some(&tar::EntryType::Regular)
        );
        assert_eq!(
            entries.get("srv/www/css/site.css"),
            Some(&tar::EntryType::Regular)
        );
        assert_eq!(entries.get("srv/www/leak"), Some(&tar::EntryType::Symlink));
        assert!(tar_layer(&dir.path().join("missing"), "/app").is_err());
    }
}
