//! Cloud providers (see `crate::cloud`): their settings in cluster state, the secret key in a
//! Hivemind secret, and a client for the provider's API.

use super::{Node, NodeError};
use crate::cloud::aws::Aws;
use crate::cloud::sigv4::Credentials;
use crate::cloud::{CloudError, ProviderConfig, secret_name};
use crate::command::Outcome;
use crate::secrets::SecretValue;
use crate::state::CLOUD_PROVIDERS;

impl Node {
    pub fn cloud_provider(&self, provider: &str) -> Result<ProviderConfig, NodeError> {
        self.store
            .value(CLOUD_PROVIDERS, provider)?
            .ok_or_else(|| NodeError::NotFound {
                kind: "cloud provider (run `hivemind cloud configure` first)",
                name: provider.to_string(),
            })
    }

    pub fn cloud_providers(&self) -> Result<Vec<ProviderConfig>, NodeError> {
        Ok(self.store.values(CLOUD_PROVIDERS)?)
    }

    /// A client of the provider, in `region` (the configured one unless given).
    pub async fn cloud_client(
        &self,
        provider: &str,
        region: Option<&str>,
    ) -> Result<Aws, NodeError> {
        let config = self.cloud_provider(provider)?;
        let key = self.secret_value(&config.secret).await?.0;
        let secret_access_key = String::from_utf8(key.as_bytes().to_vec())
            .map_err(|_| NodeError::Io(format!("secret {} is not text", config.secret)))?;
        if let Some(region) = region {
            crate::cloud::validate_region(region)?;
        }
        Ok(Aws::new(
            self.http_client(),
            Credentials {
                access_key_id: config.access_key_id.clone(),
                secret_access_key,
            },
            region.unwrap_or(&config.region),
            config.endpoint_url.as_deref(),
        ))
    }

    /// The HTTP client for calls out of the cluster (cloud APIs, chart repositories).
    pub(super) fn http_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .user_agent(concat!("hivemind/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap_or_default()
    }

    /// Checks the credentials and region against the provider (its list of regions), then
    /// keeps them: the secret key as a secret, the rest as the provider's row. Nothing is
    /// kept when the check fails.
    pub(super) async fn configure_cloud(
        &self,
        config: ProviderConfig,
        secret_key: SecretValue,
    ) -> Result<Outcome, NodeError> {
        config.validate()?;
        let secret_access_key =
            String::from_utf8(secret_key.as_bytes().to_vec()).map_err(|_| {
                NodeError::Invalid(crate::model::ValidationError::new(
                    "secret_key",
                    "must be text",
                ))
            })?;
        let client = Aws::new(
            self.http_client(),
            Credentials {
                access_key_id: config.access_key_id.clone(),
                secret_access_key,
            },
            &config.region,
            config.endpoint_url.as_deref(),
        );
        let regions = client.regions().await.map_err(cloud_error)?;
        if !regions.contains(&config.region) {
            return Err(NodeError::Invalid(crate::model::ValidationError::new(
                "region",
                format!(
                    "{} does not know region {}: it has {}",
                    config.provider,
                    config.region,
                    regions.join(", ")
                ),
            )));
        }
        let secret = secret_name(&config.provider);
        let exists = self.secret_record(&secret).is_ok();
        self.put_secret(secret, secret_key, !exists).await?;
        self.write(CLOUD_PROVIDERS, &config.provider, Some(&config))
            .await?;
        Ok(Outcome::CloudConfigured(Box::new(config)))
    }
}

/// A provider's refusal as the node's error: bad credentials are a 401-like refusal of the
/// input, other refusals name the provider's code.
pub fn cloud_error(e: CloudError) -> NodeError {
    match &e {
        CloudError::NotFound(what) => NodeError::NotFound {
            kind: "cloud resource",
            name: what.clone(),
        },
        CloudError::Aws { code, message, .. } if code.contains("NotFound") => NodeError::NotFound {
            kind: "cloud resource",
            name: format!("({code}: {message})"),
        },
        _ if e.is_auth() => NodeError::Invalid(crate::model::ValidationError::new(
            "credentials",
            format!("the provider refused them: {e}"),
        )),
        CloudError::Config(message) => {
            NodeError::Invalid(crate::model::ValidationError::new("cloud", message.clone()))
        }
        CloudError::Aws { status, .. } => NodeError::Cloud {
            refused: (400..500).contains(status),
            message: e.to_string(),
        },
        CloudError::Unreachable(_) => NodeError::Cloud {
            refused: false,
            message: e.to_string(),
        },
    }
}
