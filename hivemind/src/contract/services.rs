//! /api/services.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A service: an app's virtual IP, DNS names and ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServiceView {
    pub name: String,
    pub vip: String,
    /// The `service` domain of the deploy, if any.
    pub domain: Option<String>,
    pub dns_names: Vec<String>,
    pub ports: Vec<u16>,
    pub endpoints: u64,
    pub ready_endpoints: u64,
}

/// `GET /api/services/{name}/endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServiceEndpoints {
    pub name: String,
    pub vip: String,
    /// While a blue-green rollout verifies its new version: the VIP that reaches it alone.
    pub preview_vip: Option<String>,
    pub dns_names: Vec<String>,
    pub ports: Vec<u16>,
    pub endpoints: Vec<EndpointView>,
}

/// A container behind a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EndpointView {
    pub container: String,
    pub node: String,
    pub ip: String,
    /// In the load balancer and DNS.
    pub ready: bool,
    /// Why it is not ready, when it is not.
    pub reason: Option<String>,
}
