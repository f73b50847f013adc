//! /api/images.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::image::Progress;

/// The body of `POST /api/images/pull`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    pub image: String,
    /// Pull even when the image is present (to pick up a moved tag);
    /// otherwise only a missing image is pulled, as `docker run` does.
    #[serde(default)]
    pub force: bool,
}

/// One line of the answer of `POST /api/images/pull` (newline-delimited
/// JSON), in the order it happens; the last is `done` or `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
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
    Error {
        message: String,
    },
}

impl From<Progress> for PullEvent {
    fn from(p: Progress) -> Self {
        match p {
            Progress::Resolving { reference } => Self::Resolving { reference },
            Progress::Layer {
                digest,
                downloaded,
                total,
            } => Self::Layer {
                digest,
                downloaded,
                total,
            },
            Progress::Unpacking { digest } => Self::Unpacking { digest },
            Progress::Done { image, digest } => Self::Done { image, digest },
        }
    }
}

/// The body of `POST /api/images/import`: an OCI image archive (tar), sent
/// as is.
#[derive(Debug, Clone, PartialEq, Eq, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct ImageArchive(pub Vec<u8>);

/// An image in the node's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageRef {
    pub name: String,
    pub digest: String,
}

/// Answer of `POST /api/images/import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportAnswer {
    pub success: bool,
    pub images: Vec<ImageRef>,
    pub message: String,
}
