//! Images: references, pulling from registries, importing archives, and
//! unpacking into containerd snapshots.
//!
//! containerd 1.6 has no Transfer service, so this module does what
//! containerd's Go client does: fetch the manifest and blobs, write them into
//! the content store under a lease, label them so the garbage collector keeps
//! them once the lease ends, unpack the layers into snapshots named by their
//! chain ids, and record the image.
//!
//! Invariant: nothing is written to the content store before it matched its
//! digest and size, and the image record is written last, so a failed pull
//! never leaves an image behind.

mod archive;
pub mod build;
pub(crate) mod content;
pub mod cosign;
mod docker_save;
pub mod files;
mod manifest;
pub mod probe;
mod pull;
mod push;
mod reference;
mod registry;
mod unpack;

use std::path::PathBuf;

pub use reference::{Reference, normalize_reference};

use crate::containerd::Containerd;

/// What a container of the image runs, from the image config.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// An image present locally: recorded, and its layers unpacked.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ResolvedImage {
    /// Normalized reference, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// Digest of what the reference points at: the manifest, or the index
    /// (manifest list) for multi-platform images.
    pub digest: String,
    /// Chain id of the top layer: the name of the committed snapshot a
    /// container's root filesystem is prepared from.
    pub chain_id: String,
    pub config: RunConfig,
}

/// Progress of a pull or import, in the order it happens.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    Resolving {
        reference: String,
    },
    Layer {
        digest: String,
        downloaded: u64,
        total: u64,
    },
    Unpacking {
        digest: String,
    },
    Done {
        image: String,
        digest: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference \"{reference}\": {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image \"{reference}\" not found: the registry has no {what}")]
    NotFound { reference: String, what: String },
    #[error(
        "registry {registry} refused access to \"{reference}\" (only anonymous pulls are supported)"
    )]
    Unauthorized { reference: String, registry: String },
    #[error("registry {registry} answered {status} for \"{reference}\": {message}")]
    Registry {
        reference: String,
        registry: String,
        status: u16,
        message: String,
    },
    #[error("cannot talk to registry {registry}: {source}")]
    Http {
        registry: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("content of {digest} does not match its digest (got {actual}); nothing was stored")]
    DigestMismatch { digest: String, actual: String },
    #[error("content of {digest} is {actual} bytes, not the {expected} its descriptor says")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("layer {layer} unpacked to {actual}, not the diff id {expected} of the image config")]
    DiffIdMismatch {
        layer: String,
        expected: String,
        actual: String,
    },
    #[error("image \"{reference}\" has no linux/amd64 variant (it has: {available})")]
    NoPlatform {
        reference: String,
        available: String,
    },
    #[error("{digest} has media type \"{media_type}\", which is not an image manifest or index")]
    UnsupportedMediaType { digest: String, media_type: String },
    #[error("invalid image manifest {digest}: {reason}")]
    InvalidManifest { digest: String, reason: String },
    #[error("invalid image config {digest}: {reason}")]
    InvalidConfig { digest: String, reason: String },
    #[error("invalid image archive {path}: {reason}")]
    Archive { path: PathBuf, reason: String },
    #[error("cannot read image archive {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {digest} of \"{reference}\" cannot be read: {reason}")]
    Layer {
        reference: String,
        digest: String,
        reason: String,
    },
    #[error("image \"{reference}\" is not on this node")]
    NotLocal { reference: String },
    #[error("containerd {op} failed: {}", .status.message())]
    Containerd {
        op: &'static str,
        status: containerd_client::tonic::Status,
    },
}

/// Pulls, imports and finds images in containerd.
#[derive(Clone)]
pub struct ImageStore {
    cd: Containerd,
    insecure_registries: Vec<String>,
    http: reqwest::Client,
}

impl ImageStore {
    /// `insecure_registries` (`host` or `host:port`) are reached over plain
    /// HTTP, as are loopback registries; all others over HTTPS.
    pub fn new(cd: Containerd, insecure_registries: Vec<String>) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("hivemind/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(15))
            .build()
            .unwrap_or_default();
        Self {
            cd,
            insecure_registries,
            http,
        }
    }

    /// The image if it is present locally (recorded and unpacked), without
    /// touching the network.
    pub async fn resolve(&self, reference: &str) -> Result<Option<ResolvedImage>, ImageError> {
        let name = normalize_reference(reference)?;
        let Some(target) = unpack::get_image(&self.cd, &name).await? else {
            return Ok(None);
        };
        pull::resolve_target(&self.cd, &name, &target).await
    }

    /// Fetches the image from its registry, stores and unpacks it, and
    /// records it under its normalized name. Blobs already present are not
    /// downloaded again.
    pub async fn pull(
        &self,
        reference: &str,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<ResolvedImage, ImageError> {
        pull::pull(self, reference, progress).await
    }

    /// The local image, else a pull.
    pub async fn ensure(
        &self,
        reference: &str,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<ResolvedImage, ImageError> {
        if let Some(image) = self.resolve(reference).await? {
            return Ok(image);
        }
        self.pull(reference, progress).await
    }

    /// Files of the local image `reference` as its root filesystem shows them (layers applied
    /// in order, whiteouts honoured), the ones whose path (no leading `/`) `wanted` keeps, each
    /// at most [`files::MAX_FILE`] bytes; with the digest of the image's manifest.
    pub async fn files(
        &self,
        reference: &str,
        wanted: files::Wanted,
    ) -> Result<files::ImageFiles, ImageError> {
        files::read(&self.cd, reference, wanted).await
    }

    /// The cosign signatures of `digest`: the ones imported with the image from an archive,
    /// else the ones its registry holds (none when the image is not signed).
    pub async fn cosign_signatures(
        &self,
        reference: &str,
        digest: &str,
    ) -> Result<Vec<cosign::Signature>, ImageError> {
        let kept = cosign::local(&self.cd, reference, digest).await?;
        if !kept.is_empty() {
            return Ok(kept);
        }
        cosign::fetch(&self.http, &self.insecure_registries, reference, digest).await
    }

    /// Records `reference` as the local image `base` with the files of `layer.dir` as a new
    /// layer at `layer.dest`.
    pub async fn add_layer(
        &self,
        base: &str,
        layer: &build::LayerSource,
        reference: &str,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<ResolvedImage, ImageError> {
        build::add_layer(&self.cd, base, layer, reference, progress).await
    }

    /// Pushes the local image `local` to the registry of `target` (a reference with a tag);
    /// returns the manifest's digest.
    pub async fn push(&self, local: &str, target: &str) -> Result<String, ImageError> {
        push::push(
            &self.http,
            &self.insecure_registries,
            &self.cd,
            local,
            target,
        )
        .await
    }

    /// Imports every named image of an OCI image layout tar (`index.json`
    /// plus `blobs/sha256/...`, names from the
    /// `org.opencontainers.image.ref.name` or `io.containerd.image.name`
    /// annotations) or of a `docker save` tar (`manifest.json`).
    pub async fn import_archive(
        &self,
        path: &std::path::Path,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Vec<ResolvedImage>, ImageError> {
        archive::import(&self.cd, path, progress).await
    }
}
