//! The connection to containerd: the only place that opens its socket.
//! Every containerd request goes through [`Containerd::request`], which adds
//! the namespace header.

use std::path::{Path, PathBuf};

use containerd_client::tonic::Request;
use containerd_client::tonic::transport::Channel;

/// containerd namespace all Hivemind objects live in.
pub const NAMESPACE: &str = "hivemind";
/// Snapshotter used for container root filesystems.
pub const SNAPSHOTTER: &str = "overlayfs";

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to containerd at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: containerd_client::tonic::transport::Error,
    },
}

/// A live gRPC channel to containerd plus the namespace to use.
#[derive(Clone)]
pub struct Containerd {
    pub channel: Channel,
    pub namespace: String,
    pub socket: PathBuf,
}

impl Containerd {
    pub async fn connect(socket: &Path) -> Result<Self, ConnectError> {
        let channel =
            containerd_client::connect(socket)
                .await
                .map_err(|source| ConnectError::Connect {
                    path: socket.to_path_buf(),
                    source,
                })?;
        Ok(Self {
            channel,
            namespace: NAMESPACE.to_string(),
            socket: socket.to_path_buf(),
        })
    }

    /// Wraps a request message with the containerd namespace header.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(value) = self.namespace.parse() {
            request.metadata_mut().insert("containerd-namespace", value);
        }
        request
    }
}
