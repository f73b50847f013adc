//! Pulling from a registry, and the steps a pull shares with an import:
//! storing the documents with their GC labels, unpacking, recording.

use std::collections::HashMap;
use tracing::Instrument as _;

use bytes::Bytes;

use super::content::{Session, read_document};
use super::manifest::{
    Descriptor, ImageConfig, Manifest, chain_ids, is_index, is_manifest, parse_config, parse_index,
    parse_manifest, select_platform,
};
use super::reference::Reference;
use super::registry::Remote;
use super::unpack::{put_image, snapshot_exists, unpack};
use super::{ImageError, ImageStore, Progress, ResolvedImage};
use crate::containerd::{Containerd, SNAPSHOTTER};

/// Everything about one image but its layers' bytes.
pub struct Documents {
    /// What the name points at (the index, or the manifest).
    pub top: Descriptor,
    /// The index's bytes and the position of the chosen manifest in it.
    pub index: Option<(Bytes, usize)>,
    pub manifest_digest: String,
    pub manifest_bytes: Bytes,
    pub manifest: Manifest,
    pub config_bytes: Bytes,
    pub config: ImageConfig,
}

impl Documents {
    pub fn check(&self) -> Result<(), ImageError> {
        if self.config.rootfs.diff_ids.len() != self.manifest.layers.len() {
            return Err(ImageError::InvalidManifest {
                digest: self.manifest_digest.clone(),
                reason: format!(
                    "it has {} layers but its config lists {} diff ids",
                    self.manifest.layers.len(),
                    self.config.rootfs.diff_ids.len()
                ),
            });
        }
        Ok(())
    }

    pub fn chain_id(&self) -> String {
        chain_ids(&self.config.rootfs.diff_ids)
            .pop()
            .unwrap_or_default()
    }
}

pub async fn pull(
    store: &ImageStore,
    input: &str,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<ResolvedImage, ImageError> {
    let reference = Reference::parse(input)?;
    let name = reference.to_string();
    progress(Progress::Resolving {
        reference: name.clone(),
    });
    let remote = Remote::new(&store.http, &reference, &store.insecure_registries);
    let documents = fetch_documents(&remote, &reference, &name).await?;
    let session = Session::begin(&store.cd).await?;
    let result = async {
        for layer in &documents.manifest.layers {
            if session.info(&layer.digest).await?.is_some() {
                continue;
            }
            progress(Progress::Layer {
                digest: layer.digest.clone(),
                downloaded: 0,
                total: layer.size,
            });
            let body = remote.blob_stream(&layer.digest).await?;
            session
                .write_stream(&layer.digest, layer.size, HashMap::new(), body, |n| {
                    progress(Progress::Layer {
                        digest: layer.digest.clone(),
                        downloaded: n,
                        total: layer.size,
                    })
                })
                .await?;
        }
        finish(&session, &name, &documents, progress).await
    }
    .await;
    session.end().await;
    result
}

async fn fetch_documents(
    remote: &Remote<'_>,
    reference: &Reference,
    name: &str,
) -> Result<Documents, ImageError> {
    let top = remote.manifest(reference.object(), None).await?;
    let top_descriptor = Descriptor {
        media_type: top.media_type.clone(),
        digest: top.digest.clone(),
        size: top.data.len() as u64,
        platform: None,
        annotations: HashMap::new(),
    };
    let (index, fetched) = if is_index(&top.media_type) {
        let parsed = parse_index(&top.digest, &top.data)?;
        let (position, chosen) = select_platform(name, &parsed)?;
        let fetched = remote.manifest(&chosen.digest, Some(chosen.size)).await?;
        (Some((top.data, position)), fetched)
    } else if is_manifest(&top.media_type) {
        (None, top)
    } else {
        return Err(ImageError::UnsupportedMediaType {
            digest: top.digest,
            media_type: top.media_type,
        });
    };
    if !is_manifest(&fetched.media_type) {
        return Err(ImageError::UnsupportedMediaType {
            digest: fetched.digest,
            media_type: fetched.media_type,
        });
    }
    let manifest = parse_manifest(&fetched.digest, &fetched.data)?;
    let config_bytes = remote
        .blob_bytes(&manifest.config.digest, manifest.config.size)
        .await?;
    let config = parse_config(&manifest.config.digest, &config_bytes)?;
    let documents = Documents {
        top: top_descriptor,
        index,
        manifest_digest: fetched.digest,
        manifest_bytes: fetched.data,
        manifest,
        config_bytes,
        config,
    };
    documents.check()?;
    Ok(documents)
}

/// Stores config, manifest and index with the labels that make containerd's
/// garbage collector keep the layers and snapshots as long as the image
/// record exists, unpacks, and records the image. The layers must be in
/// the content store already.
pub async fn finish(
    session: &Session,
    name: &str,
    documents: &Documents,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<ResolvedImage, ImageError> {
    let chain_id = documents.chain_id();
    let config = &documents.manifest.config;
    session
        .write_bytes(
            &config.digest,
            config.size,
            documents.config_bytes.clone(),
            HashMap::from([(
                format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
                chain_id.clone(),
            )]),
        )
        .await?;
    let mut labels = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        config.digest.clone(),
    )]);
    for (i, layer) in documents.manifest.layers.iter().enumerate() {
        labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            layer.digest.clone(),
        );
    }
    session
        .write_bytes(
            &documents.manifest_digest,
            documents.manifest_bytes.len() as u64,
            documents.manifest_bytes.clone(),
            labels,
        )
        .await?;
    if let Some((index_bytes, position)) = &documents.index {
        session
            .write_bytes(
                &documents.top.digest,
                documents.top.size,
                index_bytes.clone(),
                HashMap::from([(
                    format!("containerd.io/gc.ref.content.m.{position}"),
                    documents.manifest_digest.clone(),
                )]),
            )
            .await?;
    }
    let top_chain = unpack(
        session,
        &documents.manifest.layers,
        &documents.config.rootfs.diff_ids,
        progress,
    )
    .instrument(tracing::info_span!(
        "image.unpack",
        layers = documents.manifest.layers.len()
    ))
    .await?;
    put_image(session, name, &documents.top).await?;
    progress(Progress::Done {
        image: name.to_string(),
        digest: documents.top.digest.clone(),
    });
    Ok(ResolvedImage {
        name: name.to_string(),
        digest: documents.top.digest.clone(),
        chain_id: top_chain,
        config: documents.config.run_config(),
    })
}

/// The local image behind a record, if its documents are stored and its
/// top snapshot exists.
pub async fn resolve_target(
    cd: &Containerd,
    name: &str,
    target: &Descriptor,
) -> Result<Option<ResolvedImage>, ImageError> {
    let Some(top) = read_document(cd, &target.digest).await? else {
        return Ok(None);
    };
    let manifest_bytes = if is_index(&target.media_type) {
        let index = parse_index(&target.digest, &top)?;
        let (_, chosen) = select_platform(name, &index)?;
        match read_document(cd, &chosen.digest).await? {
            Some(bytes) => bytes,
            None => return Ok(None),
        }
    } else {
        top
    };
    let manifest = parse_manifest(&target.digest, &manifest_bytes)?;
    let Some(config_bytes) = read_document(cd, &manifest.config.digest).await? else {
        return Ok(None);
    };
    let config = parse_config(&manifest.config.digest, &config_bytes)?;
    let Some(chain_id) = chain_ids(&config.rootfs.diff_ids).pop() else {
        return Ok(None);
    };
    if !snapshot_exists(cd, &chain_id).await? {
        return Ok(None);
    }
    Ok(Some(ResolvedImage {
        name: name.to_string(),
        digest: target.digest.clone(),
        chain_id,
        config: config.run_config(),
    }))
}
