//! The cluster subsystem's error type.

use std::net::SocketAddr;

/// Everything the cluster layer can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot bind gossip socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid node id {0:?}: expected 1-64 characters of [A-Za-z0-9._-]")]
    InvalidNodeId(String),
    #[error("cluster key: {0}")]
    Key(String),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error(
        "the write of {table}/{key} lost to a newer version from another node; read it and try again"
    )]
    Superseded { table: String, key: String },
    #[error("this node has left the cluster")]
    Left,
    #[error("the cluster tasks have stopped")]
    Stopped,
    #[error("replica store: {0}")]
    Store(String),
    #[error("http client: {0}")]
    Http(String),
    #[error("peer {peer}: {message}")]
    Peer { peer: String, message: String },
    #[error("cluster TLS: {0}")]
    Tls(String),
    #[error("only node {owner} may write {table}/{key}")]
    NotOwner {
        owner: String,
        table: String,
        key: String,
    },
}
