//! The REST client behind every CLI command, and its exit codes.

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::contract::ErrorBody;

/// Exit codes, as docs/api.md lists them.
pub mod exit {
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const CONNECT: i32 = 3;
    pub const UNAUTHENTICATED: i32 = 4;
    pub const FORBIDDEN: i32 = 5;
    pub const NOT_FOUND: i32 = 6;
    pub const CONFLICT: i32 = 7;
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to {server}: {source} (is `hivemind daemon` running? set --server or HIVEMIND_SERVER)"
    )]
    Connect {
        server: String,
        source: reqwest::Error,
    },
    #[error(
        "cannot trust {server}: {message} (give its cluster CA with --ca-cert <data dir>/pki/ca.crt, or log in with `hivemind login --ca-sha256`)"
    )]
    Tls { server: String, message: String },
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Connect { .. } | Self::Tls { .. } => exit::CONNECT,
            Self::Usage(_) => exit::USAGE,
            Self::Other(_) => exit::ERROR,
            Self::Api { status, .. } => match *status {
                StatusCode::UNAUTHORIZED => exit::UNAUTHENTICATED,
                StatusCode::FORBIDDEN => exit::FORBIDDEN,
                StatusCode::NOT_FOUND => exit::NOT_FOUND,
                StatusCode::CONFLICT => exit::CONFLICT,
                _ => exit::ERROR,
            },
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

/// Whom the CLI trusts when the server speaks HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The usual public roots (a server with a `--tls-cert` from a public CA).
    Roots,
    /// The CA certificate in this PEM file (`--ca-cert`, a node's
    /// `<data dir>/pki/ca.crt`).
    CaFile(std::path::PathBuf),
    /// The CA of this SHA-256 fingerprint, pinned by `hivemind login`.
    Pinned(String),
}

impl Trust {
    /// The fingerprint of the CA this trust names, if it names one.
    pub fn fingerprint(&self) -> Result<Option<String>, ClientError> {
        match self {
            Self::Roots => Ok(None),
            Self::Pinned(fp) => Ok(Some(fp.clone())),
            Self::CaFile(path) => {
                let pem = read_ca(path)?;
                let der = rustls_pemfile::certs(&mut pem.as_slice())
                    .next()
                    .and_then(Result::ok)
                    .ok_or_else(|| {
                        ClientError::Usage(format!("{} holds no certificate", path.display()))
                    })?;
                Ok(Some(crate::pki::fingerprint(&der)))
            }
        }
    }
}

fn read_ca(path: &std::path::Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path)
        .map_err(|e| ClientError::Usage(format!("cannot read the CA {}: {e}", path.display())))
}

impl Client {
    pub fn new(server: &str, token: Option<String>, trust: &Trust) -> Result<Self, ClientError> {
        let builder = reqwest::Client::builder();
        let builder = match trust {
            Trust::Roots => builder,
            Trust::CaFile(path) => {
                let ca = reqwest::Certificate::from_pem(&read_ca(path)?).map_err(|e| {
                    ClientError::Usage(format!("{} is not a PEM certificate: {e}", path.display()))
                })?;
                builder
                    .add_root_certificate(ca)
                    .tls_built_in_root_certs(false)
            }
            Trust::Pinned(fingerprint) => builder.use_preconfigured_tls(
                crate::pki::pinned_client_config(fingerprint)
                    .map_err(|e| ClientError::Other(e.to_string()))?,
            ),
        };
        Ok(Self {
            http: builder
                .build()
                .map_err(|e| ClientError::Other(e.to_string()))?,
            server: server.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut builder = self.http.request(method, format!("{}{path}", self.server));
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        builder
    }

    /// Sends and turns non-2xx answers into [`ClientError::Api`] with the
    /// server's message.
    pub async fn send(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = builder.send().await.map_err(|source| {
            let chain = crate::health::probe::error_chain(&source);
            if chain.contains("certificate") || chain.contains("CA of fingerprint") {
                ClientError::Tls {
                    server: self.server.clone(),
                    message: chain,
                }
            } else if source.is_connect() || source.is_timeout() {
                ClientError::Connect {
                    server: self.server.clone(),
                    source,
                }
            } else {
                ClientError::Other(source.to_string())
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|body| body.error.message)
            .unwrap_or_else(|_| format!("server answered {status}: {text}"));
        Err(ClientError::Api { status, message })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        json_of(self.send(self.request(Method::GET, path)).await?).await
    }

    pub async fn get_text(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        json_of(
            self.send(self.request(Method::POST, path).json(body))
                .await?,
        )
        .await
    }

    pub async fn post_stream<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<reqwest::Response, ClientError> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        let builder = self
            .request(Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
            .body(body);
        json_of(self.send(builder).await?).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        json_of(self.send(self.request(Method::DELETE, path)).await?).await
    }
}

/// The answer as `T`; an answer that does not fit the contract is an error
/// that says so (a server of another version, most likely).
async fn json_of<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, ClientError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ClientError::Other(format!("reading the server's answer: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ClientError::Other(format!(
            "the server's answer does not match this client's API: {e}"
        ))
    })
}
