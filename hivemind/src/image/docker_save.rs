//! Legacy `docker save` archives: `manifest.json` lists each image's
//! config file, tags and uncompressed `layer.tar` files.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;

use super::archive::{TarIndex, archive_error, clean};
use super::content::Session;
use super::manifest::{
    DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, Descriptor, parse_config, parse_manifest,
};
use super::pull::{Documents, finish};
use super::reference::normalize_reference;
use super::{ImageError, Progress, ResolvedImage};

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A `docker save` tar: the layers are uncompressed, so each one's digest
/// is its diff id; a Docker schema 2 manifest is written for them.
pub(super) async fn import(
    session: &Session,
    tar: &TarIndex,
    path: &Path,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Vec<ResolvedImage>, ImageError> {
    let listing = tar.read("manifest.json").await?;
    let entries: Vec<DockerSaveEntry> = serde_json::from_slice(&listing)
        .map_err(|e| archive_error(path, &format!("manifest.json: {e}")))?;
    let mut images = Vec::new();
    for entry in entries {
        let config_bytes = tar.read(&clean(&entry.config)).await?;
        let config_digest = super::manifest::sha256_digest(&config_bytes);
        let config = parse_config(&config_digest, &config_bytes)?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(archive_error(
                path,
                &format!(
                    "{} lists a different number of layers than its config",
                    entry.config
                ),
            ));
        }
        let mut layers = Vec::new();
        for (file, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let (_, size) = tar.locate(&clean(file))?;
            let layer = Descriptor {
                media_type: DOCKER_LAYER.to_string(),
                digest: diff_id.clone(),
                size,
                platform: None,
                annotations: HashMap::new(),
            };
            tar.store_layer(session, &clean(file), &layer, progress)
                .await?;
            layers.push(layer);
        }
        let config_descriptor = Descriptor {
            media_type: DOCKER_CONFIG.to_string(),
            digest: config_digest.clone(),
            size: config_bytes.len() as u64,
            platform: None,
            annotations: HashMap::new(),
        };
        let manifest_json = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": config_descriptor,
            "layers": layers,
        });
        let manifest_bytes = Bytes::from(
            serde_json::to_vec(&manifest_json)
                .map_err(|e| archive_error(path, &format!("cannot write a manifest: {e}")))?,
        );
        let manifest_digest = super::manifest::sha256_digest(&manifest_bytes);
        let manifest = parse_manifest(&manifest_digest, &manifest_bytes)?;
        let documents = Documents {
            top: Descriptor {
                media_type: DOCKER_MANIFEST.to_string(),
                digest: manifest_digest.clone(),
                size: manifest_bytes.len() as u64,
                platform: None,
                annotations: HashMap::new(),
            },
            index: None,
            manifest_digest,
            manifest_bytes,
            manifest,
            config_bytes,
            config,
        };
        for tag in entry.repo_tags.unwrap_or_default() {
            let name = normalize_reference(&tag)?;
            progress(Progress::Resolving {
                reference: name.clone(),
            });
            images.push(finish(session, &name, &documents, progress).await?);
        }
    }
    Ok(images)
}
