//! Pushing a local image to a registry (the distribution API v2, as `docker push` does): every
//! blob the repository lacks is uploaded in one request (`POST .../blobs/uploads/`, then `PUT
//! <location>?digest=`), then the manifest under the tag. Blobs the registry has are skipped
//! (`HEAD`). Only the platform's manifest is pushed, never an index.

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, LOCATION};

use super::build::local_manifest;
use super::content::{content_info, read_content};
use super::manifest::OCI_MANIFEST;
use super::reference::Reference;
use super::registry::Remote;
use super::{ImageError, normalize_reference};
use crate::containerd::Containerd;

/// Pushes the local image `local` to `target` (a full reference with a tag); returns the
/// manifest's digest.
pub async fn push(
    http: &reqwest::Client,
    insecure: &[String],
    cd: &Containerd,
    local: &str,
    target: &str,
) -> Result<String, ImageError> {
    let local = normalize_reference(local)?;
    let target_name = normalize_reference(target)?;
    let reference = Reference::parse(&target_name)?;
    let tag = reference
        .tag
        .clone()
        .ok_or_else(|| ImageError::InvalidReference {
            reference: target.to_string(),
            reason: "a push needs a tag".to_string(),
        })?;
    let (digest, bytes, manifest) =
        local_manifest(cd, &local)
            .await?
            .ok_or_else(|| ImageError::NotLocal {
                reference: local.clone(),
            })?;
    let remote = Remote::new(http, &reference, insecure);
    let mut blobs = vec![manifest.config.clone()];
    blobs.extend(manifest.layers.iter().cloned());
    for blob in &blobs {
        if remote.has_blob(&blob.digest).await? {
            continue;
        }
        let size = content_info(cd, &blob.digest)
            .await?
            .map(|i| i.size as u64)
            .ok_or_else(|| ImageError::NotLocal {
                reference: local.clone(),
            })?;
        let data =
            read_content(cd, &blob.digest, size)
                .await?
                .ok_or_else(|| ImageError::NotLocal {
                    reference: local.clone(),
                })?;
        remote.upload_blob(&blob.digest, data).await?;
    }
    let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|m| m["mediaType"].as_str().map(str::to_string))
        .unwrap_or_else(|| OCI_MANIFEST.to_string());
    remote.put_manifest(&tag, &media_type, bytes).await?;
    Ok(digest)
}

impl Remote<'_> {
    /// Whether the repository has the blob.
    pub async fn has_blob(&self, digest: &str) -> Result<bool, ImageError> {
        let url = format!("{}/blobs/{digest}", self.base());
        let response = self
            .send(|http, token| with_token(http.head(&url), token))
            .await?;
        Ok(response.status().is_success())
    }

    /// Uploads a blob in one request.
    pub async fn upload_blob(&self, digest: &str, data: Bytes) -> Result<(), ImageError> {
        let start = format!("{}/blobs/uploads/", self.base());
        let response = self
            .send(|http, token| with_token(http.post(&start), token))
            .await?;
        let response = self.check(response, "blob upload").await?;
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| self.registry_error(StatusCode::ACCEPTED, "no upload location"))?
            .to_string();
        let location = if location.starts_with('/') {
            format!("{}{location}", self.origin())
        } else {
            location
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={digest}");
        let response = self
            .send(|http, token| {
                with_token(
                    http.put(&url)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .body(data.clone()),
                    token,
                )
            })
            .await?;
        self.check(response, "blob upload").await?;
        Ok(())
    }

    /// Puts the manifest under `tag`.
    pub async fn put_manifest(
        &self,
        tag: &str,
        media_type: &str,
        data: Bytes,
    ) -> Result<(), ImageError> {
        let url = format!("{}/manifests/{tag}", self.base());
        let response = self
            .send(|http, token| {
                with_token(
                    http.put(&url)
                        .header(CONTENT_TYPE, media_type)
                        .body(data.clone()),
                    token,
                )
            })
            .await?;
        self.check(response, "manifest upload").await?;
        Ok(())
    }
}

fn with_token(request: reqwest::RequestBuilder, token: Option<String>) -> reqwest::RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}
