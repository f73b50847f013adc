//! The JSON documents of an image (index, manifest, config) in the subset
//! Hivemind reads. Docker's schema 2 and OCI's share the same shape, so one
//! set of types parses both.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{ImageError, RunConfig};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Annotation of an OCI layout's index.json naming an image.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation containerd's exporter adds with the full image name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Largest manifest or config Hivemind reads into memory.
pub const MAX_DOCUMENT: u64 = 8 << 20;

pub const PLATFORM_OS: &str = "linux";
pub const PLATFORM_ARCH: &str = "amd64";

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Checks `data` against the digest and size a descriptor promised.
pub fn verify(data: &[u8], digest: &str, size: Option<u64>) -> Result<(), ImageError> {
    if let Some(size) = size
        && data.len() as u64 != size
    {
        return Err(ImageError::SizeMismatch {
            digest: digest.to_string(),
            expected: size,
            actual: data.len() as u64,
        });
    }
    let actual = sha256_digest(data);
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            digest: digest.to_string(),
            actual,
        });
    }
    Ok(())
}

pub fn parse_index(digest: &str, data: &[u8]) -> Result<Index, ImageError> {
    serde_json::from_slice(data).map_err(|e| ImageError::InvalidManifest {
        digest: digest.to_string(),
        reason: e.to_string(),
    })
}

pub fn parse_manifest(digest: &str, data: &[u8]) -> Result<Manifest, ImageError> {
    let manifest: Manifest =
        serde_json::from_slice(data).map_err(|e| ImageError::InvalidManifest {
            digest: digest.to_string(),
            reason: e.to_string(),
        })?;
    if manifest.layers.is_empty() {
        return Err(ImageError::InvalidManifest {
            digest: digest.to_string(),
            reason: "it has no layers".to_string(),
        });
    }
    Ok(manifest)
}

pub fn parse_config(digest: &str, data: &[u8]) -> Result<ImageConfig, ImageError> {
    serde_json::from_slice(data).map_err(|e| ImageError::InvalidConfig {
        digest: digest.to_string(),
        reason: e.to_string(),
    })
}

/// Picks the linux/amd64 manifest of an index. An index with a single
/// manifest that names no platform is taken as is.
pub fn select_platform(reference: &str, index: &Index) -> Result<(usize, Descriptor), ImageError> {
    let found = index.manifests.iter().enumerate().find(|(_, d)| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == PLATFORM_OS && p.architecture == PLATFORM_ARCH)
    });
    if let Some((i, d)) = found {
        return Ok((i, d.clone()));
    }
    if let [only] = index.manifests.as_slice()
        && only.platform.is_none()
    {
        return Ok((0, only.clone()));
    }
    let available = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| format!("{}/{}", p.os, p.architecture))
        .collect::<Vec<_>>()
        .join(", ");
    Err(ImageError::NoPlatform {
        reference: reference.to_string(),
        available,
    })
}

/// Chain ids of the layers, bottom first (OCI image spec, "Layer ChainID").
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

impl ImageConfig {
    pub fn run_config(&self) -> RunConfig {
        let c = self.config.clone().unwrap_or_default();
        RunConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.filter(|s| !s.is_empty()),
            user: c.user.filter(|s| !s.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = sha256_digest(b"a");
        let b = sha256_digest(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], sha256_digest(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn picks_linux_amd64() {
        let index: Index = serde_json::from_str(
            r#"{"manifests":[
              {"mediaType":"x","digest":"sha256:a","size":1,"platform":{"os":"linux","architecture":"arm64"}},
              {"mediaType":"x","digest":"sha256:b","size":1,"platform":{"os":"linux","architecture":"amd64"}}]}"#,
        )
        .unwrap();
        let (i, d) = select_platform("r", &index).unwrap();
        assert_eq!((i, d.digest.as_str()), (1, "sha256:b"));
        let index: Index = serde_json::from_str(
            r#"{"manifests":[{"mediaType":"x","digest":"sha256:a","size":1,"platform":{"os":"linux","architecture":"arm64"}}]}"#,
        )
        .unwrap();
        let err = select_platform("r", &index).unwrap_err().to_string();
        assert!(err.contains("linux/arm64"), "{err}");
    }

    #[test]
    fn run_config_from_docker_config() {
        let config = parse_config(
            "sha256:x",
            br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":null,"Cmd":["sh"],"Env":["PATH=/bin"],"WorkingDir":"","User":"1000"},"rootfs":{"type":"layers","diff_ids":["sha256:a"]}}"#,
        )
        .unwrap();
        let run = config.run_config();
        assert!(run.entrypoint.is_empty());
        assert_eq!(run.cmd, vec!["sh"]);
        assert_eq!(run.working_dir, None);
        assert_eq!(run.user.as_deref(), Some("1000"));
    }
}
