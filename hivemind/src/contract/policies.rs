//! /api/security/network-policies: the body is [`crate::policy::NetworkPolicy`].

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Answer of `POST /api/security/network-policies` (201 when created, 200 when replaced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyAnswer {
    pub success: bool,
    pub name: String,
    pub message: String,
}
