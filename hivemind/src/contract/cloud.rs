//! /api/cloud: cloud providers, their instances and load balancers.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::cloud::{Instance, LoadBalancer};
use crate::cloud::{ProviderConfig, secret_name, validate_region};
use crate::model::{ValidationError, validate_name};

/// `cloud configure`: the provider's credentials and region.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigureCloud {
    /// `aws`.
    pub provider: String,
    /// The access key id (`AKIA...`).
    pub access_key: String,
    /// The secret access key: kept as the Hivemind secret `cloud-<provider>-secret-key`,
    /// never shown again.
    pub secret_key: String,
    /// The region used when a request names none, e.g. `us-east-1`.
    pub region: String,
    /// An AWS-compatible endpoint instead of AWS's own (e.g. `http://10.0.0.5:5000`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
}

impl ConfigureCloud {
    pub fn parse(&self, now: u64) -> Result<ProviderConfig, ValidationError> {
        let provider = self.provider.trim().to_string();
        if self.secret_key.trim().is_empty() {
            return Err(ValidationError::new("secret_key", "must not be empty"));
        }
        let config = ProviderConfig {
            secret: secret_name(&provider),
            provider,
            region: self.region.trim().to_string(),
            access_key_id: self.access_key.trim().to_string(),
            endpoint_url: self
                .endpoint_url
                .as_deref()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string),
            configured_at: now,
        };
        config.validate()?;
        Ok(config)
    }
}

/// A provider's settings (never its secret key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProviderView {
    pub provider: String,
    pub region: String,
    pub access_key_id: String,
    /// The secret the secret key is kept in.
    pub secret: String,
    pub endpoint_url: Option<String>,
    pub configured_at: u64,
}

impl From<ProviderConfig> for ProviderView {
    fn from(c: ProviderConfig) -> Self {
        Self {
            provider: c.provider,
            region: c.region,
            access_key_id: c.access_key_id,
            secret: c.secret,
            endpoint_url: c.endpoint_url,
            configured_at: c.configured_at,
        }
    }
}

/// Which provider and region a request is about (the configured region unless given).
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, utoipa::IntoParams,
)]
#[serde(deny_unknown_fields)]
pub struct CloudQuery {
    /// `aws` (the default).
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
}

/// `cloud create-instance`: an instance that joins this cluster at its first boot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInstance {
    /// Its `Name` tag.
    pub name: String,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// The availability zone, e.g. `us-east-1a` (the provider picks one when absent).
    #[serde(default)]
    pub zone: Option<String>,
    /// e.g. `t3.medium`.
    pub instance_type: String,
    /// The machine image (AMI) to boot: a Linux with containerd (and Hivemind, unless
    /// `install_url` is given).
    pub image_id: String,
    /// Where the instance downloads the `hivemind` binary from at its first boot.
    #[serde(default)]
    pub install_url: Option<String>,
}

impl CreateInstance {
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name("name", &self.name)?;
        if let Some(region) = &self.region {
            validate_region(region)?;
        }
        let word = |field: &str, value: &str| {
            let ok = !value.is_empty()
                && value.len() <= 64
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            if ok {
                Ok(())
            } else {
                Err(ValidationError::new(
                    field,
                    format!("{value:?} is not a valid {field}"),
                ))
            }
        };
        word("instance_type", &self.instance_type)?;
        word("image_id", &self.image_id)?;
        if let Some(zone) = &self.zone {
            word("zone", zone)?;
        }
        if let Some(url) = &self.install_url {
            let ok = (url.starts_with("https://") || url.starts_with("http://"))
                && url.len() <= 2048
                && !url
                    .chars()
                    .any(|c| c.is_whitespace() || c == '\'' || c.is_control());
            if !ok {
                return Err(ValidationError::new(
                    "install_url",
                    "must be an http(s) URL without spaces or quotes",
                ));
            }
        }
        Ok(())
    }
}

/// A new instance and the join token its first boot uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceCreated {
    pub success: bool,
    pub instance: Instance,
    /// The join token made for it (revoke it with `cluster join-token rm` once it joined).
    pub join_token_id: String,
    pub message: String,
}

/// `cloud create-load-balancer`: a load balancer forwarding a published port to the
/// instances registered behind it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLoadBalancer {
    pub name: String,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// `application` (HTTP, the default) or `network` (TCP).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// `internet-facing` (the default) or `internal`.
    #[serde(default)]
    pub scheme: Option<String>,
    /// The published port it forwards (default 80), to the same port of the instances.
    #[serde(default)]
    pub port: Option<u16>,
}

impl CreateLoadBalancer {
    /// (type, scheme, port) with their defaults.
    pub fn parse(&self) -> Result<(String, String, u16), ValidationError> {
        validate_name("name", &self.name)?;
        if self.name.len() > 32 {
            return Err(ValidationError::new("name", "at most 32 characters"));
        }
        if let Some(region) = &self.region {
            validate_region(region)?;
        }
        let kind = self.kind.as_deref().unwrap_or("application");
        if !["application", "network"].contains(&kind) {
            return Err(ValidationError::new(
                "type",
                format!("{kind:?} is not application or network"),
            ));
        }
        let scheme = self.scheme.as_deref().unwrap_or("internet-facing");
        if !["internet-facing", "internal"].contains(&scheme) {
            return Err(ValidationError::new(
                "scheme",
                format!("{scheme:?} is not internet-facing or internal"),
            ));
        }
        let port = self.port.unwrap_or(80);
        if port == 0 {
            return Err(ValidationError::new("port", "must be 1 to 65535"));
        }
        Ok((kind.to_string(), scheme.to_string(), port))
    }
}

/// `cloud register-instances`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterInstances {
    pub lb_name: String,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    pub instance_ids: Vec<String>,
}

impl RegisterInstances {
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name("lb_name", &self.lb_name)?;
        if self.instance_ids.is_empty() || self.instance_ids.len() > 100 {
            return Err(ValidationError::new("instance_ids", "1 to 100 ids"));
        }
        for id in &self.instance_ids {
            let ok = id.starts_with("i-")
                && id.len() <= 32
                && id[2..].bytes().all(|b| b.is_ascii_alphanumeric());
            if !ok {
                return Err(ValidationError::new(
                    "instance_ids",
                    format!("{id:?} is not an instance id (i-...)"),
                ));
            }
        }
        if let Some(region) = &self.region {
            validate_region(region)?;
        }
        Ok(())
    }
}
