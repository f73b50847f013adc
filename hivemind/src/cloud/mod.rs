//! Cloud providers: instances that join this cluster and load balancers in front of its
//! published ports. AWS (EC2 and Elastic Load Balancing v2) through their query APIs, signed
//! here with SigV4 ([`sigv4`]), against AWS or any AWS-compatible endpoint.
//!
//! What this cluster keeps is a provider's settings (a replicated row per provider; the secret
//! key is a Hivemind secret). Instances and load balancers live in the provider: they are
//! listed from it, tagged `hivemind:cluster=<cluster id>`.

pub mod aws;
pub mod sigv4;
mod xml;

use serde::{Deserialize, Serialize};

use crate::model::{ValidationError, validate_name};

/// The providers Hivemind drives.
pub const PROVIDERS: [&str; 1] = ["aws"];

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The provider answered with an error (its code and message).
    #[error("{code}: {message}")]
    Aws {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach {0}")]
    Unreachable(String),
    #[error("{0}")]
    Config(String),
    #[error("{0} not found")]
    NotFound(String),
}

impl CloudError {
    /// Whether the provider refused the credentials (as opposed to the request).
    pub fn is_auth(&self) -> bool {
        matches!(self, Self::Aws { code, .. } if [
            "AuthFailure",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "UnrecognizedClientException",
            "InvalidAccessKeyId",
        ].contains(&code.as_str()))
    }
}

/// A provider's settings: key `<provider>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderConfig {
    pub provider: String,
    pub region: String,
    pub access_key_id: String,
    /// The Hivemind secret holding the secret access key.
    pub secret: String,
    /// An AWS-compatible endpoint instead of AWS's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    pub configured_at: u64,
}

/// The secret a provider's key is kept in.
pub fn secret_name(provider: &str) -> String {
    format!("cloud-{provider}-secret-key")
}

/// `us-east-1`, `eu-central-2`, `ap-southeast-4`: letters, dashes, a final number.
pub fn validate_region(region: &str) -> Result<(), ValidationError> {
    let mut parts = region.split('-');
    let ok = region.len() <= 32
        && parts.clone().count() >= 3
        && parts
            .next()
            .is_some_and(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_lowercase()))
        && region
            .rsplit('-')
            .next()
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(ValidationError::new(
            "region",
            format!("{region:?} is not a region name like us-east-1"),
        ));
    }
    Ok(())
}

impl ProviderConfig {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !PROVIDERS.contains(&self.provider.as_str()) {
            return Err(ValidationError::new(
                "provider",
                format!("{:?} is not a provider Hivemind drives: aws", self.provider),
            ));
        }
        validate_region(&self.region)?;
        let key_ok = (16..=128).contains(&self.access_key_id.len())
            && self
                .access_key_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric());
        if !key_ok {
            return Err(ValidationError::new(
                "access_key",
                "must be 16 to 128 letters and digits (an access key id, AKIA...)",
            ));
        }
        validate_name("secret", &self.secret)?;
        if let Some(url) = &self.endpoint_url {
            let parsed = reqwest::Url::parse(url).ok();
            let ok = parsed
                .as_ref()
                .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(ValidationError::new(
                    "endpoint_url",
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
        }
        Ok(())
    }
}

/// An instance as the provider shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Instance {
    pub id: String,
    /// Its `Name` tag.
    pub name: String,
    pub instance_type: String,
    /// `pending`, `running`, `stopping`, `terminated`...
    pub state: String,
    pub zone: Option<String>,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
}

/// A load balancer as the provider shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoadBalancer {
    pub name: String,
    pub arn: String,
    pub dns_name: String,
    /// `application` or `network`.
    pub kind: String,
    /// `internet-facing` or `internal`.
    pub scheme: String,
    pub state: String,
    /// The port it forwards (to the same port of its instances).
    pub port: u16,
    /// The instances registered behind it.
    pub instances: Vec<String>,
}

/// The script an instance runs at its first boot (cloud-init user data): it installs Hivemind
/// (from `install_url`, else the image must have it) and starts it as a service joining this
/// cluster with a join token.
pub fn user_data(join: &str, token: &str, install_url: Option<&str>) -> String {
    let install = match install_url {
        Some(url) => format!(
            "curl -fsSL --retry 5 -o /usr/local/bin/hivemind '{url}'\nchmod 755 /usr/local/bin/hivemind\n"
        ),
        None => "command -v hivemind >/dev/null || { echo 'hivemind is not on this image: create the instance with --install-url' >&2; exit 1; }\n".to_string(),
    };
    format!(
        "#!/bin/sh\n\
         # Written by `hivemind cloud create-instance`: join the cluster at {join}.\n\
         set -eu\n\
         {install}\
         cat > /etc/systemd/system/hivemind.service <<'UNIT'\n\
         [Unit]\n\
         Description=Hivemind node\n\
         After=network-online.target containerd.service\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         ExecStart=/usr/local/bin/hivemind daemon --join {join} --join-token {token}\n\
         Restart=always\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n\
         UNIT\n\
         systemctl daemon-reload\n\
         systemctl enable --now hivemind\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_and_settings_name_what_is_wrong() {
        for ok in [
            "us-east-1",
            "eu-central-2",
            "ap-southeast-4",
            "us-gov-west-1",
        ] {
            assert!(validate_region(ok).is_ok(), "{ok}");
        }
        for bad in ["", "mars", "us-east", "US-EAST-1", "us east 1", "useast-1"] {
            assert!(validate_region(bad).is_err(), "{bad}");
        }
        let config = ProviderConfig {
            provider: "aws".into(),
            region: "us-east-1".into(),
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret: secret_name("aws"),
            endpoint_url: Some("http://127.0.0.1:5000".into()),
            configured_at: 1,
        };
        assert!(config.validate().is_ok());
        let mut bad = config.clone();
        bad.provider = "gcp".into();
        assert_eq!(bad.validate().unwrap_err().field, "provider");
        let mut bad = config.clone();
        bad.access_key_id = "short".into();
        assert_eq!(bad.validate().unwrap_err().field, "access_key");
        let mut bad = config;
        bad.endpoint_url = Some("ftp://x".into());
        assert_eq!(bad.validate().unwrap_err().field, "endpoint_url");
    }

    #[test]
    fn user_data_joins_with_the_token() {
        let script = user_data("10.0.0.1:7946", "hmjoin_abc", Some("https://x/hivemind"));
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains("--join 10.0.0.1:7946 --join-token hmjoin_abc"));
        assert!(
            script.contains("curl -fsSL --retry 5 -o /usr/local/bin/hivemind 'https://x/hivemind'")
        );
        assert!(user_data("a:1", "t", None).contains("command -v hivemind"));
    }
}
