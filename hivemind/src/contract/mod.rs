//! The REST API's contract: every request and answer body, in one place.
//!
//! The server (the `api` module) deserialises the requests and serialises the
//! answers; the CLI (the `cli` module) does the opposite with the same types; the
//! OpenAPI document (`GET /api/openapi.json`, `docs/openapi.json`) is
//! generated from them by utoipa. A field changes here or nowhere.
//!
//! Invariants: requests refuse unknown fields (`deny_unknown_fields`), so a
//! misspelt field is an error naming it rather than a silent default; no
//! handler builds an answer with `json!`, and no client reads one by key.
//!
//! Bodies that are also stored records (a network policy, a volume mount)
//! are defined beside their validation and re-exported here. The data
//! plane's counters, health probes and flow events are shown as free-form
//! objects ([`serde_json::Value`]): their shape belongs to those modules.

mod acl;
mod apps;
mod cicd;
mod cloud;
mod containers;
mod helm;
mod images;
mod nodes;
mod policies;
mod secrets;
mod services;
mod volumes;
mod vulns;

pub use acl::*;
pub use apps::*;
pub use cicd::*;
pub use cloud::*;
pub use containers::*;
pub use helm::*;
pub use images::*;
pub use nodes::*;
pub use policies::*;
pub use secrets::*;
pub use services::*;
pub use volumes::*;
pub use vulns::*;

pub use crate::model::{
    DashboardHistory, LogShipping, MetricsListener, Resources, SecretMount, TracingExport,
    VolumeMount,
};
pub use crate::policy::{NetworkPolicy, Peer, PortRange, RuleBody, Selector};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    pub error: ErrorDetail,
}

/// What went wrong: a stable machine-readable `code` and a message that
/// names the field and the rule when the input was at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// e.g. `invalid_body`, `invalid_field`, `invalid_query`, `not_found`, `conflict`.
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            success: false,
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

/// The answer of a command that only reports what it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub success: bool,
    pub message: String,
}

impl Message {
    pub fn ok(message: impl Into<String>) -> Self {
        Self {
            success: true,
            message: message.into(),
        }
    }
}

/// A command's answer: every one carries a human `message`.
pub trait Answer {
    fn message(&self) -> &str;
}

macro_rules! answers {
    ($($ty:ty),* $(,)?) => {
        $(impl Answer for $ty {
            fn message(&self) -> &str {
                &self.message
            }
        })*
    };
}

answers!(
    Message,
    TlsCertAnswer,
    KeyRotated,
    DeployAnswer,
    RestartAnswer,
    PolicyAnswer,
    VolumeCreated,
    ImportAnswer,
    SecretAnswer,
    JoinTokenCreated,
    TrustedKeyAnswer
);
