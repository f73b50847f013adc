//! A client of the Docker Registry HTTP API v2, as much as pulling needs:
//! manifests, blobs and the anonymous Bearer token flow.

use std::net::IpAddr;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

use super::ImageError;
use super::manifest::{DOCKER_LIST, DOCKER_MANIFEST, MAX_DOCUMENT, OCI_INDEX, OCI_MANIFEST};
use super::reference::Reference;

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// One repository of one registry, with the token it earned.
pub struct Remote<'a> {
    http: &'a reqwest::Client,
    reference: &'a Reference,
    base: String,
    token: Mutex<Option<String>>,
}

/// A manifest or index as the registry served it, its digest checked.
pub struct Fetched {
    pub media_type: String,
    pub digest: String,
    pub data: Bytes,
}

/// Plain HTTP for loopback registries and the ones configured insecure.
pub fn use_plain_http(registry: &str, insecure: &[String]) -> bool {
    if insecure.iter().any(|i| i == registry) {
        return true;
    }
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => registry.split(':').next().unwrap_or_default(),
    };
    if insecure.iter().any(|i| i == host) {
        return true;
    }
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl<'a> Remote<'a> {
    pub fn new(http: &'a reqwest::Client, reference: &'a Reference, insecure: &[String]) -> Self {
        let scheme = if use_plain_http(&reference.registry, insecure) {
            "http"
        } else {
            "https"
        };
        Self {
            http,
            reference,
            base: format!(
                "{scheme}://{}/v2/{}",
                reference.api_host(),
                reference.repository
            ),
            token: Mutex::new(None),
        }
    }

    fn http_error(&self, source: reqwest::Error) -> ImageError {
        ImageError::Http {
            registry: self.reference.registry.clone(),
            source,
        }
    }

    fn current_token(&self) -> Option<String> {
        self.token.lock().ok().and_then(|t| t.clone())
    }

    /// `https://host` (or `http://`) of the registry.
    pub(super) fn origin(&self) -> &str {
        let scheme_end = self.base.find("://").map_or(0, |i| i + 3);
        let path = self.base[scheme_end..]
            .find('/')
            .map_or(self.base.len(), |i| i + scheme_end);
        &self.base[..path]
    }

    /// `<origin>/v2/<repository>`.
    pub(super) fn base(&self) -> &str {
        &self.base
    }

    pub(super) fn registry_error(&self, status: StatusCode, message: &str) -> ImageError {
        ImageError::Registry {
            reference: self.reference.to_string(),
            registry: self.reference.registry.clone(),
            status: status.as_u16(),
            message: message.to_string(),
        }
    }

    /// GET with the token, earning one on a 401 Bearer challenge.
    async fn get(&self, url: &str, accept: Option<&str>) -> Result<Response, ImageError> {
        self.send(|http, token| {
            let mut request = http.get(url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(token) = token {
                request = request.header(AUTHORIZATION, format!("Bearer {token}"));
            }
            request
        })
        .await
    }

    /// Sends the request `build` makes with the token, earning one on a 401 Bearer challenge
    /// (the anonymous token flow; the challenge names the scope, push included).
    pub(super) async fn send(
        &self,
        build: impl Fn(&reqwest::Client, Option<String>) -> reqwest::RequestBuilder,
    ) -> Result<Response, ImageError> {
        let send = |token: Option<String>| build(self.http, token).send();
        let response = send(self.current_token())
            .await
            .map_err(|e| self.http_error(e))?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let token = self.authenticate(response.headers()).await?;
        if let Ok(mut slot) = self.token.lock() {
            *slot = Some(token.clone());
        }
        let response = send(Some(token)).await.map_err(|e| self.http_error(e))?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(self.unauthorized());
        }
        Ok(response)
    }

    fn unauthorized(&self) -> ImageError {
        ImageError::Unauthorized {
            reference: self.reference.to_string(),
            registry: self.reference.registry.clone(),
        }
    }

    /// The anonymous token flow of the registry's Bearer challenge.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<String, ImageError> {
        let challenge = headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let Some(params) = challenge
            .strip_prefix("Bearer ")
            .or_else(|| challenge.strip_prefix("bearer "))
        else {
            return Err(self.unauthorized());
        };
        let params = parse_challenge(params);
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        };
        let Some(realm) = get("realm") else {
            return Err(self.unauthorized());
        };
        let scope = get("scope")
            .unwrap_or_else(|| format!("repository:{}:pull", self.reference.repository));
        let mut query = vec![("scope", scope)];
        if let Some(service) = get("service") {
            query.push(("service", service));
        }
        let response = self
            .http
            .get(&realm)
            .query(&query)
            .send()
            .await
            .map_err(|e| self.http_error(e))?;
        if !response.status().is_success() {
            return Err(self.unauthorized());
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = response.json().await.map_err(|e| self.http_error(e))?;
        token
            .token
            .or(token.access_token)
            .ok_or_else(|| self.unauthorized())
    }

    /// Turns a non-success answer into an error naming the reference.
    pub(super) async fn check(
        &self,
        response: Response,
        what: &str,
    ) -> Result<Response, ImageError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status == StatusCode::NOT_FOUND {
            return Err(ImageError::NotFound {
                reference: self.reference.to_string(),
                what: what.to_string(),
            });
        }
        let body = response.text().await.unwrap_or_default();
        let message = registry_message(&body).unwrap_or_else(|| body.chars().take(200).collect());
        Err(ImageError::Registry {
            reference: self.reference.to_string(),
            registry: self.reference.registry.clone(),
            status: status.as_u16(),
            message,
        })
    }

    /// Fetches a manifest or index by tag or digest. A digest asked for, or
    /// announced in Docker-Content-Digest, must match the bytes.
    pub async fn manifest(
        &self,
        object: &str,
        expected_size: Option<u64>,
    ) -> Result<Fetched, ImageError> {
        let url = format!("{}/manifests/{object}", self.base);
        let response = self.get(&url, Some(MANIFEST_ACCEPT)).await?;
        let response = self.check(response, &format!("manifest {object}")).await?;
        let header_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_string());
        let announced = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let data = self.read_limited(response, object).await?;
        let actual = super::manifest::sha256_digest(&data);
        let expected = if object.starts_with("sha256:") {
            Some(object.to_string())
        } else {
            announced
        };
        if let Some(expected) = expected {
            super::manifest::verify(&data, &expected, expected_size)?;
        }
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
        }
        let probe: Option<Probe> = serde_json::from_slice(&data).ok();
        let media_type = match header_type {
            Some(t)
                if [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST]
                    .contains(&t.as_str()) =>
            {
                t
            }
            _ => match probe {
                Some(Probe {
                    media_type: Some(t),
                    ..
                }) => t,
                Some(Probe {
                    manifests: Some(_), ..
                }) => OCI_INDEX.to_string(),
                _ => OCI_MANIFEST.to_string(),
            },
        };
        Ok(Fetched {
            media_type,
            digest: actual,
            data,
        })
    }

    async fn read_limited(&self, response: Response, object: &str) -> Result<Bytes, ImageError> {
        let mut data = BytesMut::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.http_error(e))?;
            data.extend_from_slice(&chunk);
            if data.len() as u64 > MAX_DOCUMENT {
                return Err(ImageError::InvalidManifest {
                    digest: object.to_string(),
                    reason: format!("it is larger than {MAX_DOCUMENT} bytes"),
                });
            }
        }
        Ok(data.freeze())
    }

    /// Fetches a small blob (the config) whole.
    pub async fn blob_bytes(&self, digest: &str, size: u64) -> Result<Bytes, ImageError> {
        if size > MAX_DOCUMENT {
            return Err(ImageError::InvalidConfig {
                digest: digest.to_string(),
                reason: format!("it is {size} bytes, larger than any image config"),
            });
        }
        let url = format!("{}/blobs/{digest}", self.base);
        let response = self.get(&url, None).await?;
        let response = self.check(response, &format!("blob {digest}")).await?;
        let data = self.read_limited(response, digest).await?;
        super::manifest::verify(&data, digest, Some(size))?;
        Ok(data)
    }

    /// Streams a blob; the caller checks digest and size as bytes pass.
    pub async fn blob_stream(
        &self,
        digest: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, ImageError>> + use<'a>, ImageError> {
        let url = format!("{}/blobs/{digest}", self.base);
        let response = self.get(&url, None).await?;
        let response = self.check(response, &format!("blob {digest}")).await?;
        let registry = self.reference.registry.clone();
        Ok(response
            .bytes_stream()
            .map_err(move |source| ImageError::Http {
                registry: registry.clone(),
                source,
            }))
    }
}

/// `realm="...",service="...",scope="a,b"` into pairs; commas inside quotes
/// belong to the value.
fn parse_challenge(params: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (quoted[..end].to_string(), &quoted[end + 1..]),
                None => (quoted.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_string(), &after[end..]),
                None => (after.trim().to_string(), ""),
            }
        };
        out.push((key, value));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// The first message of the registry's `{"errors":[{"code","message"}]}`.
fn registry_message(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let first = value.get("errors")?.get(0)?;
    let code = first
        .get("code")
        .and_then(|c| c.as_str())
        .unwrap_or_default();
    let message = first
        .get("message")
        .and_then(|c| c.as_str())
        .unwrap_or_default();
    Some(format!("{code}: {message}").to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_params() {
        let p = parse_challenge(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.docker.io/token".into()),
                ("service".into(), "registry.docker.io".into()),
                ("scope".into(), "repository:a/b:pull,push".into()),
            ]
        );
    }

    #[test]
    fn plain_http_only_for_loopback_and_insecure() {
        let insecure = vec!["reg.internal:5000".to_string(), "other.lan".to_string()];
        assert!(use_plain_http("localhost:5000", &[]));
        assert!(use_plain_http("localhost", &[]));
        assert!(use_plain_http("127.0.0.2:5000", &[]));
        assert!(use_plain_http("[::1]:5000", &[]));
        assert!(use_plain_http("reg.internal:5000", &insecure));
        assert!(use_plain_http("other.lan:443", &insecure));
        assert!(!use_plain_http("reg.internal:6000", &insecure));
        assert!(!use_plain_http("docker.io", &insecure));
        assert!(!use_plain_http("10.0.0.1:5000", &[]));
    }
}
