//! /api/acl (tokens and policies), /api/audit and /api/session.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use crate::acl::{AclPolicy, Effect, Kind, Role, Rule, Verb};

/// The body of `POST /api/acl/tokens`: a role or a policy, and an optional
/// lifetime (`30m`, `24h`, `90d`... as `expires`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// Answer of `POST /api/acl/tokens`: the token, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    pub success: bool,
    pub name: String,
    pub token: String,
    pub expires_at: Option<u64>,
    pub message: String,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub role: Option<Role>,
    pub policy: Option<String>,
    pub expires_at: Option<u64>,
    pub created_at: u64,
}

/// One change of the audit log, as the node keeps it.
pub use crate::state::AuditEntry;

/// Query of `GET /api/audit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// The newest this many entries (default 100, at most 10000).
    pub limit: Option<usize>,
}

/// The body of `POST /api/session`: the dashboard's sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    pub token: String,
}

/// Answer of `POST /api/session`: who signed in, and the value to send as
/// `x-csrf-token` with every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionAnswer {
    pub success: bool,
    pub name: String,
    pub csrf_token: String,
}

/// `GET /api/whoami`: the caller's token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    pub name: String,
    /// `role admin`, `policy web-team`.
    pub grant: String,
}
