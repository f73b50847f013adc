//! /api/volumes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of `POST /api/volumes/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    pub name: String,
}

/// Answer of `POST /api/volumes/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeCreated {
    pub success: bool,
    pub name: String,
    pub path: String,
    pub message: String,
}

/// A named volume and the apps that mount it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeView {
    pub name: String,
    pub path: String,
    pub created_at: u64,
    pub used_by: Vec<String>,
}
