//! The REST client behind every CLI command, and its exit codes.

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Exit codes of SPEC.md.
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
            Self::Connect { .. } => exit::CONNECT,
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

impl Client {
    pub fn new(server: &str, token: Option<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            server: server.trim_end_matches('/').to_string(),
            token,
        }
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
            if source.is_connect() || source.is_timeout() {
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
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("server answered {status}: {text}"));
        Err(ClientError::Api { status, message })
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        json_of(self.send(self.request(Method::GET, path)).await?).await
    }

    pub async fn get_text(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        json_of(
            self.send(self.request(Method::POST, path).json(body))
                .await?,
        )
        .await
    }

    pub async fn post_stream(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<reqwest::Response, ClientError> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn post_bytes(&self, path: &str, body: Vec<u8>) -> Result<Value, ClientError> {
        let builder = self
            .request(Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
            .body(body);
        json_of(self.send(builder).await?).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        json_of(self.send(self.request(Method::DELETE, path)).await?).await
    }
}

async fn json_of(response: reqwest::Response) -> Result<Value, ClientError> {
    response
        .json()
        .await
        .map_err(|e| ClientError::Other(format!("the server's answer is not JSON: {e}")))
}
