//! Layers into snapshots (one committed snapshot per chain id, named by it)
//! and the image records that keep an image alive.

use std::collections::HashMap;

use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, GetImageRequest, Image, UpdateImageRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types;

use super::content::{Session, containerd_error, unique};
use super::manifest::{Descriptor, chain_ids};
use super::{ImageError, Progress};
use crate::containerd::{Containerd, SNAPSHOTTER};

/// Whether the committed snapshot `chain_id` exists.
pub async fn snapshot_exists(cd: &Containerd, chain_id: &str) -> Result<bool, ImageError> {
    match SnapshotsClient::new(cd.channel.clone())
        .stat(cd.request(StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: chain_id.to_string(),
        }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(containerd_error("snapshot stat", s)),
    }
}

/// Applies every layer not yet unpacked and returns the top chain id.
pub async fn unpack(
    session: &Session,
    layers: &[Descriptor],
    diff_ids: &[String],
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<String, ImageError> {
    let chains = chain_ids(diff_ids);
    let Some(top) = chains.last().cloned() else {
        return Err(ImageError::InvalidConfig {
            digest: String::new(),
            reason: "rootfs.diff_ids is empty".to_string(),
        });
    };
    if snapshot_exists(&session.cd, &top).await? {
        return Ok(top);
    }
    for (i, layer) in layers.iter().enumerate() {
        if snapshot_exists(&session.cd, &chains[i]).await? {
            continue;
        }
        progress(Progress::Unpacking {
            digest: layer.digest.clone(),
        });
        let parent = if i == 0 { "" } else { chains[i - 1].as_str() };
        apply_layer(session, layer, &diff_ids[i], parent, &chains[i]).await?;
    }
    Ok(top)
}

async fn apply_layer(
    session: &Session,
    layer: &Descriptor,
    diff_id: &str,
    parent: &str,
    chain_id: &str,
) -> Result<(), ImageError> {
    let key = format!("{} {chain_id}", unique("hivemind-extract"));
    let mut snapshots = SnapshotsClient::new(session.cd.channel.clone());
    let mounts = snapshots
        .prepare(session.request(PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: key.clone(),
            parent: parent.to_string(),
            labels: HashMap::new(),
        }))
        .await
        .map_err(|s| containerd_error("snapshot prepare", s))?
        .into_inner()
        .mounts;
    let result = async {
        let applied = DiffClient::new(session.cd.channel.clone())
            .apply(session.request(ApplyRequest {
                diff: Some(to_containerd(layer)),
                mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            }))
            .await
            .map_err(|s| containerd_error("diff apply", s))?
            .into_inner()
            .applied
            .map(|d| d.digest)
            .unwrap_or_default();
        if applied != diff_id {
            return Err(ImageError::DiffIdMismatch {
                layer: layer.digest.clone(),
                expected: diff_id.to_string(),
                actual: applied,
            });
        }
        match snapshots
            .commit(session.request(CommitSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                name: chain_id.to_string(),
                key: key.clone(),
                labels: HashMap::new(),
            }))
            .await
        {
            Ok(_) => Ok(false),
            // Another unpack of the same layer won the race.
            Err(s) if s.code() == Code::AlreadyExists => Ok(true),
            Err(s) => Err(containerd_error("snapshot commit", s)),
        }
    }
    .await;
    if !matches!(result, Ok(false)) {
        let removed = snapshots
            .remove(session.request(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: key.clone(),
            }))
            .await;
        if let Err(e) = removed {
            tracing::debug!(key = %key, error = %e, "cannot remove extraction snapshot");
        }
    }
    result.map(|_| ())
}

pub fn to_containerd(d: &Descriptor) -> types::Descriptor {
    types::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size as i64,
        annotations: HashMap::new(),
    }
}

/// The image record `name` -> `target`, created or replaced.
pub async fn put_image(
    session: &Session,
    name: &str,
    target: &Descriptor,
) -> Result<(), ImageError> {
    let image = Image {
        name: name.to_string(),
        labels: HashMap::new(),
        target: Some(to_containerd(target)),
        created_at: None,
        updated_at: None,
    };
    let mut images = ImagesClient::new(session.cd.channel.clone());
    match images
        .create(session.request(CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        }))
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::AlreadyExists => images
            .update(session.request(UpdateImageRequest {
                image: Some(image),
                update_mask: None,
                source_date_epoch: None,
            }))
            .await
            .map(|_| ())
            .map_err(|s| containerd_error("image update", s)),
        Err(s) => Err(containerd_error("image create", s)),
    }
}

/// The target of the image record `name`, if it exists.
pub async fn get_image(cd: &Containerd, name: &str) -> Result<Option<Descriptor>, ImageError> {
    match ImagesClient::new(cd.channel.clone())
        .get(cd.request(GetImageRequest {
            name: name.to_string(),
        }))
        .await
    {
        Ok(response) => {
            Ok(response
                .into_inner()
                .image
                .and_then(|i| i.target)
                .map(|t| Descriptor {
                    media_type: t.media_type,
                    digest: t.digest,
                    size: t.size.max(0) as u64,
                    platform: None,
                    annotations: HashMap::new(),
                }))
        }
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(containerd_error("image get", s)),
    }
}
