//! Importing image archives: an OCI image layout in a tar (`index.json`,
//! `blobs/sha256/...`), as `ctr export`, skopeo, buildah or recent Docker
//! write it, or a legacy `docker save` tar (`manifest.json`). A gzip'd
//! archive is decompressed to a temporary file first.
//!
//! The tar is indexed once (path -> offset and size) and blobs are then read
//! straight from their offsets, checked against their digests like a pull.

use std::collections::HashMap;
use std::io::{Read, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::content::{Session, unique};
use super::manifest::{
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, Descriptor, MAX_DOCUMENT, is_index,
    is_manifest, parse_config, parse_index, parse_manifest, select_platform, verify,
};
use super::pull::{Documents, finish};
use super::reference::normalize_reference;
use super::{ImageError, Progress, ResolvedImage};
use crate::containerd::Containerd;

const READ_CHUNK: u64 = 256 << 10;

/// Where each regular file of the tar lies.
pub(super) struct TarIndex {
    path: PathBuf,
    files: HashMap<String, (u64, u64)>,
}

/// Removes the decompressed copy of a gzip'd archive.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub async fn import(
    cd: &Containerd,
    path: &Path,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Vec<ResolvedImage>, ImageError> {
    let source = path.to_path_buf();
    let (index, _temp) = tokio::task::spawn_blocking(move || index_tar(&source))
        .await
        .map_err(|e| archive_error(path, &format!("indexing failed: {e}")))??;
    let session = Session::begin(cd).await?;
    let result = if index.files.contains_key("index.json") {
        import_oci(&session, &index, progress).await
    } else if index.files.contains_key("manifest.json") {
        super::docker_save::import(&session, &index, path, progress).await
    } else {
        Err(archive_error(
            path,
            "it has neither index.json (OCI layout) nor manifest.json (docker save)",
        ))
    };
    session.end().await;
    let images = result?;
    if images.is_empty() {
        return Err(archive_error(
            path,
            "no image in it has a name (annotation org.opencontainers.image.ref.name or io.containerd.image.name with a full reference)",
        ));
    }
    Ok(images)
}

pub(super) fn archive_error(path: &Path, reason: &str) -> ImageError {
    ImageError::Archive {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn index_tar(path: &Path) -> Result<(TarIndex, TempFile), ImageError> {
    let mut file = std::fs::File::open(path).map_err(io_error(path))?;
    let mut magic = [0u8; 2];
    let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let (tar_path, temp) = if gzip {
        let temp = std::env::temp_dir().join(format!("{}.tar", unique("hivemind-import")));
        let guard = TempFile(Some(temp.clone()));
        let input = std::fs::File::open(path).map_err(io_error(path))?;
        let mut output = std::fs::File::create(&temp).map_err(io_error(&temp))?;
        std::io::copy(&mut flate2::read::GzDecoder::new(input), &mut output)
            .map_err(io_error(path))?;
        (temp, guard)
    } else {
        (path.to_path_buf(), TempFile(None))
    };
    let file = std::fs::File::open(&tar_path).map_err(io_error(&tar_path))?;
    let mut archive = tar::Archive::new(file);
    let mut files = HashMap::new();
    let mut links = Vec::new();
    for entry in archive.entries().map_err(io_error(path))? {
        let entry = entry.map_err(io_error(path))?;
        let name = clean(&entry.path().map_err(io_error(path))?.to_string_lossy());
        let kind = entry.header().entry_type();
        if kind.is_file() {
            files.insert(name, (entry.raw_file_position(), entry.size()));
        } else if (kind.is_symlink() || kind.is_hard_link())
            && let Ok(Some(target)) = entry.link_name()
        {
            let target = target.to_string_lossy().into_owned();
            let resolved = if kind.is_symlink() {
                let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                resolve_relative(dir, &target)
            } else {
                clean(&target)
            };
            links.push((name, resolved));
        }
    }
    // docker save links duplicate layers to their first copy.
    for (name, target) in links {
        if let Some(location) = files.get(&target).copied() {
            files.insert(name, location);
        }
    }
    Ok((
        TarIndex {
            path: tar_path,
            files,
        },
        temp,
    ))
}

pub(super) fn clean(path: &str) -> String {
    path.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

fn resolve_relative(dir: &str, target: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

impl TarIndex {
    pub(super) fn locate(&self, name: &str) -> Result<(u64, u64), ImageError> {
        self.files
            .get(name)
            .copied()
            .ok_or_else(|| archive_error(&self.path, &format!("{name} is missing")))
    }

    fn blob_name(digest: &str) -> String {
        format!("blobs/{}", digest.replacen(':', "/", 1))
    }

    pub(super) async fn read(&self, name: &str) -> Result<Bytes, ImageError> {
        let (offset, size) = self.locate(name)?;
        if size > MAX_DOCUMENT {
            return Err(archive_error(
                &self.path,
                &format!("{name} is {size} bytes, too large for a manifest or config"),
            ));
        }
        let mut file = tokio::fs::File::open(&self.path)
            .await
            .map_err(io_error(&self.path))?;
        file.seek(SeekFrom::Start(offset))
            .await
            .map_err(io_error(&self.path))?;
        let mut data = vec![0u8; size as usize];
        file.read_exact(&mut data)
            .await
            .map_err(io_error(&self.path))?;
        Ok(Bytes::from(data))
    }

    async fn read_blob(&self, descriptor: &Descriptor) -> Result<Bytes, ImageError> {
        let data = self.read(&Self::blob_name(&descriptor.digest)).await?;
        verify(&data, &descriptor.digest, Some(descriptor.size))?;
        Ok(data)
    }

    fn stream(
        &self,
        name: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, ImageError>> + use<>, ImageError> {
        let (offset, size) = self.locate(name)?;
        let path = self.path.clone();
        let state = (path, offset, size, None::<tokio::fs::File>);
        Ok(futures::stream::try_unfold(
            state,
            |(path, offset, remaining, file)| async move {
                if remaining == 0 {
                    return Ok(None);
                }
                let mut file = match file {
                    Some(file) => file,
                    None => {
                        let mut file = tokio::fs::File::open(&path)
                            .await
                            .map_err(io_error(&path))?;
                        file.seek(SeekFrom::Start(offset))
                            .await
                            .map_err(io_error(&path))?;
                        file
                    }
                };
                let n = remaining.min(READ_CHUNK);
                let mut buffer = vec![0u8; n as usize];
                file.read_exact(&mut buffer)
                    .await
                    .map_err(io_error(&path))?;
                Ok(Some((
                    Bytes::from(buffer),
                    (path, offset, remaining - n, Some(file)),
                )))
            },
        ))
    }

    /// Streams a layer into the content store unless it is there already.
    pub(super) async fn store_layer(
        &self,
        session: &Session,
        entry: &str,
        layer: &Descriptor,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<(), ImageError> {
        if session.info(&layer.digest).await?.is_some() {
            return Ok(());
        }
        let body = self.stream(entry)?;
        session
            .write_stream(&layer.digest, layer.size, HashMap::new(), body, |n| {
                progress(Progress::Layer {
                    digest: layer.digest.clone(),
                    downloaded: n,
                    total: layer.size,
                })
            })
            .await
    }
}

/// The image name an index.json entry carries, if it is a full reference.
fn annotated_name(descriptor: &Descriptor) -> Option<Result<String, ImageError>> {
    let annotations = &descriptor.annotations;
    let name = annotations
        .get(ANNOTATION_CONTAINERD_NAME)
        .or_else(|| annotations.get(ANNOTATION_REF_NAME))?;
    // A bare OCI ref.name is only a tag: there is no repository to name.
    if !name.contains('/') && !name.contains(':') {
        tracing::warn!(name = %name, "archive image names only a tag; skipped");
        return None;
    }
    Some(normalize_reference(name))
}

async fn import_oci(
    session: &Session,
    tar: &TarIndex,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Vec<ResolvedImage>, ImageError> {
    let index_bytes = tar.read("index.json").await?;
    let index = parse_index("index.json", &index_bytes)?;
    let mut images = Vec::new();
    for top in &index.manifests {
        let Some(name) = annotated_name(top) else {
            continue;
        };
        let name = name?;
        // A cosign signature (`<repo>:sha256-<hex>.sig`, as `cosign save` writes one): kept
        // with the image, for `--require-signature` offline; nothing to unpack.
        if super::cosign::is_signature_tag(&name) && is_manifest(&top.media_type) {
            store_signature(session, tar, &name, top).await?;
            continue;
        }
        progress(Progress::Resolving {
            reference: name.clone(),
        });
        let top_bytes = tar.read_blob(top).await?;
        let (index_part, manifest_descriptor, manifest_bytes) = if is_index(&top.media_type) {
            let nested = parse_index(&top.digest, &top_bytes)?;
            let (position, chosen) = select_platform(&name, &nested)?;
            let bytes = tar.read_blob(&chosen).await?;
            (Some((top_bytes, position)), chosen, bytes)
        } else if is_manifest(&top.media_type) {
            (None, top.clone(), top_bytes)
        } else {
            return Err(ImageError::UnsupportedMediaType {
                digest: top.digest.clone(),
                media_type: top.media_type.clone(),
            });
        };
        let manifest = parse_manifest(&manifest_descriptor.digest, &manifest_bytes)?;
        let config_bytes = tar.read_blob(&manifest.config).await?;
        let config = parse_config(&manifest.config.digest, &config_bytes)?;
        let documents = Documents {
            top: Descriptor {
                annotations: HashMap::new(),
                platform: None,
                ..top.clone()
            },
            index: index_part,
            manifest_digest: manifest_descriptor.digest.clone(),
            manifest_bytes,
            manifest,
            config_bytes,
            config,
        };
        documents.check()?;
        for layer in &documents.manifest.layers {
            tar.store_layer(
                session,
                &TarIndex::blob_name(&layer.digest),
                layer,
                progress,
            )
            .await?;
        }
        images.push(finish(session, &name, &documents, progress).await?);
    }
    Ok(images)
}

/// Stores a cosign signature manifest, its config and its payloads, and records it under
/// `name` (labelled so the garbage collector keeps what it references).
async fn store_signature(
    session: &Session,
    tar: &TarIndex,
    name: &str,
    top: &Descriptor,
) -> Result<(), ImageError> {
    let manifest_bytes = tar.read_blob(top).await?;
    let manifest = parse_manifest(&top.digest, &manifest_bytes)?;
    let mut labels = HashMap::new();
    for (i, blob) in std::iter::once(&manifest.config)
        .chain(&manifest.layers)
        .enumerate()
    {
        let data = tar.read_blob(blob).await?;
        session
            .write_bytes(&blob.digest, blob.size, data, HashMap::new())
            .await?;
        labels.insert(
            format!("containerd.io/gc.ref.content.s.{i}"),
            blob.digest.clone(),
        );
    }
    session
        .write_bytes(&top.digest, top.size, manifest_bytes, labels)
        .await?;
    let target = Descriptor {
        annotations: HashMap::new(),
        platform: None,
        ..top.clone()
    };
    super::unpack::put_image(session, name, &target).await?;
    tracing::info!(%name, "cosign signature imported");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links() {
        assert_eq!(resolve_relative("a", "../b/layer.tar"), "b/layer.tar");
        assert_eq!(resolve_relative("", "./x"), "x");
        assert_eq!(clean("./blobs/sha256/ab"), "blobs/sha256/ab");
    }
}
