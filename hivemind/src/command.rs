//! Every change a user can ask of a node, as one closed enum. The REST
//! handlers (and so the CLI and the dashboard) only parse into a [`Command`];
//! `Node::execute` (in `node`) is the one place that carries them out.
//!
//! Validation happens once, when a command is built: the constructors below
//! check what is not a stored row (references, addresses); every row a
//! command writes is checked by its table's rules (`state::Row`), the same
//! rules records from peers pass.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::contract::DeployRequest;
use crate::image::{Progress, ResolvedImage, normalize_reference};
use crate::ingress::{CertInfo, check_certificate};
use crate::model::{
    AppSpec, DashboardHistory, LogShipping, MetricsListener, TracingExport, ValidationError,
    validate_name,
};
use crate::policy::NetworkPolicy;
use crate::secrets::SecretValue;
use crate::state::{now_secs, validate_tls_domain};

/// What a deploy asks of its image besides the cluster's image policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admission {
    /// The scan policy, instead of the cluster's.
    pub scan_policy: Option<crate::vuln::ScanPolicy>,
    /// A trusted cosign signature, whatever the cluster says.
    pub require_signature: bool,
}

/// Where pull progress goes (nowhere by default).
#[derive(Clone, Default)]
pub struct ProgressSink(Option<Arc<dyn Fn(Progress) + Send + Sync>>);

impl ProgressSink {
    pub fn new(f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    pub fn report(&self, progress: Progress) {
        if let Some(f) = &self.0 {
            f(progress);
        }
    }
}

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

/// Two sinks are never told apart: a command is the same whoever watches it.
impl PartialEq for ProgressSink {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Creates the app, or replaces its containers with the new spec.
    Deploy(Box<AppSpec>, Admission),
    Scale {
        name: String,
        replicas: u32,
    },
    /// Replaces every container of the app; volumes keep their data.
    Restart {
        name: String,
    },
    DeleteApp {
        name: String,
    },
    /// Deploys an earlier revision of the app again (the one before the current without
    /// `to_revision`), keeping the current replica count.
    Undo {
        name: String,
        to_revision: Option<u64>,
    },
    /// `rollout pause|resume|abort`.
    Rollout {
        name: String,
        action: RolloutAction,
    },
    /// Creates a CI/CD pipeline (`create`), or replaces one that exists.
    PutPipeline {
        spec: Box<crate::cicd::PipelineSpec>,
        create: bool,
    },
    /// Deletes a pipeline and its runs.
    DeletePipeline {
        name: String,
    },
    /// Queues a run of a pipeline (`trigger`: `cli`, `webhook` or `poll`; `commit`: the one a
    /// webhook announced).
    TriggerPipeline {
        name: String,
        trigger: &'static str,
        commit: Option<String>,
    },
    /// Keeps a cloud provider's settings and secret key, once the provider accepted them.
    ConfigureCloud {
        config: Box<crate::cloud::ProviderConfig>,
        secret_key: SecretValue,
    },
    /// `rollout promote --variant`: deploys one variant of an A/B test as the app's one
    /// version.
    PromoteVariant {
        name: String,
        variant: String,
    },
    CreateVolume {
        name: String,
    },
    DeleteVolume {
        name: String,
    },
    /// Creates or replaces a network policy.
    PutPolicy(Box<NetworkPolicy>),
    DeletePolicy {
        name: String,
    },
    /// Makes an image present on this node: pulled unless it is (or always
    /// with `force`). `reference` is normalized.
    PullImage {
        reference: String,
        force: bool,
        progress: ProgressSink,
    },
    /// Imports every image of an OCI or `docker save` archive on disk.
    ImportImages {
        archive: PathBuf,
    },
    /// Announces this node to the member at a gossip address.
    JoinCluster {
        address: SocketAddr,
    },
    /// Stores a new secret (version 1).
    CreateSecret {
        name: String,
        value: SecretValue,
    },
    /// Stores a secret's next version; running containers' files follow.
    RotateSecret {
        name: String,
        value: SecretValue,
    },
    DeleteSecret {
        name: String,
    },
    /// Stores (or replaces) the ingress's certificate for a domain; the key
    /// is sealed like a secret.
    PutTlsCert {
        domain: String,
        chain_pem: String,
        key: SecretValue,
        info: CertInfo,
    },
    DeleteTlsCert {
        domain: String,
    },
    /// Sets (or, `None`, removes) the metrics listener every node opens.
    ConfigureMetrics(Option<MetricsListener>),
    /// Sets (or, `None`, stops) the span export of every node.
    ConfigureTracing(Option<TracingExport>),
    /// Sets (or, `None`, stops) the log shipping of every node.
    ConfigureLogging(Option<LogShipping>),
    /// Sets (or, `None`, forgets) the Prometheus the dashboard reads history from.
    ConfigureDashboard(Option<DashboardHistory>),
    /// Imports OSV data into the vulnerability database.
    ImportVulnDb {
        data: Arc<[u8]>,
        max_age_days: Option<u32>,
    },
    /// Sets the cluster's scan policy for deploys.
    SetScanPolicy(crate::vuln::ScanPolicy),
    /// Trusts a public key's cosign signatures (a new name, or a replaced key).
    PutTrustedKey {
        name: String,
        pem: String,
    },
    DeleteTrustedKey {
        name: String,
    },
    /// Scans an image (pulled first when missing) against the vulnerability database.
    ScanImage {
        reference: String,
        refresh: bool,
    },
}

impl Command {
    /// A deploy of a user's request; the error names the first bad field.
    pub fn deploy(request: &DeployRequest) -> Result<Self, ValidationError> {
        let mut spec = request.validate()?;
        spec.image = normalize_reference(&spec.image)
            .map_err(|e| ValidationError::new("image", e.to_string()))?;
        if let Some(policy) = &request.scan_policy {
            policy
                .validate()
                .map_err(|e| ValidationError::new(format!("scan_policy.{}", e.field), e.message))?;
        }
        Ok(Self::Deploy(
            Box::new(spec),
            Admission {
                scan_policy: request.scan_policy,
                require_signature: request.require_signature,
            },
        ))
    }

    pub fn undo(name: &str, to_revision: Option<u64>) -> Result<Self, ValidationError> {
        validate_name("name", name)?;
        if to_revision == Some(0) {
            return Err(ValidationError::new(
                "to_revision",
                "revisions count from 1",
            ));
        }
        Ok(Self::Undo {
            name: name.to_string(),
            to_revision,
        })
    }

    pub fn rollout(name: &str, action: RolloutAction) -> Result<Self, ValidationError> {
        validate_name("name", name)?;
        Ok(Self::Rollout {
            name: name.to_string(),
            action,
        })
    }

    pub fn promote_variant(name: &str, variant: &str) -> Result<Self, ValidationError> {
        validate_name("name", name)?;
        validate_name("variant", variant)?;
        Ok(Self::PromoteVariant {
            name: name.to_string(),
            variant: variant.to_string(),
        })
    }

    pub fn put_trusted_key(name: &str, pem: &str) -> Result<Self, ValidationError> {
        validate_name("name", name)?;
        crate::image::cosign::parse_public_key(pem)
            .map_err(|e| ValidationError::new("public_key", e))?;
        Ok(Self::PutTrustedKey {
            name: name.to_string(),
            pem: pem.trim().to_string() + "\n",
        })
    }

    pub fn scan_image(reference: &str, refresh: bool) -> Result<Self, ValidationError> {
        let reference = normalize_reference(reference)
            .map_err(|e| ValidationError::new("image", e.to_string()))?;
        Ok(Self::ScanImage { reference, refresh })
    }

    pub fn import_vulndb(data: &[u8], max_age_days: Option<u32>) -> Result<Self, ValidationError> {
        if data.is_empty() {
            return Err(ValidationError::new(
                "body",
                "must be OSV data: a zip of OSV records, one record or a JSON array of them",
            ));
        }
        if max_age_days == Some(0) {
            return Err(ValidationError::new("max_age_days", "must be at least 1"));
        }
        Ok(Self::ImportVulnDb {
            data: Arc::from(data),
            max_age_days,
        })
    }

    pub fn scale(name: &str, replicas: u32) -> Result<Self, ValidationError> {
        validate_name("name", name)?;
        Ok(Self::Scale {
            name: name.to_string(),
            replicas,
        })
    }

    pub fn create_volume(name: &str) -> Result<Self, ValidationError> {
        validate_name("name", name)?;
        Ok(Self::CreateVolume {
            name: name.to_string(),
        })
    }

    pub fn put_policy(policy: NetworkPolicy) -> Result<Self, ValidationError> {
        policy.validate()?;
        Ok(Self::PutPolicy(Box::new(policy)))
    }

    pub fn pull_image(
        reference: &str,
        force: bool,
        progress: ProgressSink,
    ) -> Result<Self, ValidationError> {
        let reference = normalize_reference(reference)
            .map_err(|e| ValidationError::new("image", e.to_string()))?;
        Ok(Self::PullImage {
            reference,
            force,
            progress,
        })
    }

    /// Creates (`create`) or rotates secret `name`.
    pub fn put_secret(name: &str, value: Vec<u8>, create: bool) -> Result<Self, ValidationError> {
        validate_name("name", name)?;
        let value = SecretValue::new(value)?;
        let name = name.to_string();
        Ok(if create {
            Self::CreateSecret { name, value }
        } else {
            Self::RotateSecret { name, value }
        })
    }

    /// A certificate for the HTTPS ingress: the chain and key must parse,
    /// belong together, name `domain` and not have expired.
    pub fn put_tls_cert(
        domain: &str,
        chain_pem: String,
        key_pem: Vec<u8>,
    ) -> Result<Self, ValidationError> {
        let domain = tls_domain(domain)?;
        let info = check_certificate(&domain, &chain_pem, &key_pem, now_secs())?;
        let key = SecretValue::new(key_pem).map_err(|e| ValidationError::new("key", e.message))?;
        Ok(Self::PutTlsCert {
            domain,
            chain_pem,
            key,
            info,
        })
    }

    pub fn configure_metrics(listener: Option<MetricsListener>) -> Result<Self, ValidationError> {
        if let Some(listener) = &listener {
            listener.validate()?;
        }
        Ok(Self::ConfigureMetrics(listener))
    }

    pub fn configure_tracing(export: Option<TracingExport>) -> Result<Self, ValidationError> {
        if let Some(export) = &export {
            export.validate()?;
        }
        Ok(Self::ConfigureTracing(export))
    }

    pub fn configure_logging(shipping: Option<LogShipping>) -> Result<Self, ValidationError> {
        if let Some(shipping) = &shipping {
            shipping.validate()?;
        }
        Ok(Self::ConfigureLogging(shipping))
    }

    pub fn configure_dashboard(history: Option<DashboardHistory>) -> Result<Self, ValidationError> {
        if let Some(history) = &history {
            history.validate()?;
        }
        Ok(Self::ConfigureDashboard(history))
    }

    pub fn delete_tls_cert(domain: &str) -> Result<Self, ValidationError> {
        Ok(Self::DeleteTlsCert {
            domain: tls_domain(domain)?,
        })
    }

    /// A join through `address`: `IP` (port 7946) or `IP:PORT`.
    pub fn join_cluster(address: &str) -> Result<Self, ValidationError> {
        let address =
            parse_gossip_address(address).map_err(|e| ValidationError::new("address", e))?;
        Ok(Self::JoinCluster { address })
    }
}

/// A certificate's domain as stored: lowercase, no trailing dot.
pub fn tls_domain(domain: &str) -> Result<String, ValidationError> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    validate_tls_domain("domain", &domain)?;
    Ok(domain)
}

/// Default UDP port of the membership protocol.
pub const GOSSIP_PORT: u16 = 7946;

/// A member's gossip address: `IP:PORT`, or `IP` for the default port.
pub fn parse_gossip_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, GOSSIP_PORT))
        .map_err(|_| format!("{text:?} is not an IP or IP:PORT"))
}

/// What an operator does to a rollout in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    /// Holds it where it is.
    Pause,
    /// Goes on after a pause, or tries again after a failure (the deadline starts again).
    Resume,
    /// Goes back to the version it replaced.
    Abort,
    /// Skips a stepped rollout's remaining steps: the new version takes all the traffic.
    Promote,
}

impl RolloutAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Abort => "abort",
            Self::Promote => "promote",
        }
    }
}

/// What a command did, for the API's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Deployed {
        app: String,
        containers: Vec<String>,
        created: bool,
    },
    Scaled {
        app: String,
        replicas: u32,
    },
    Restarted {
        app: String,
        containers: Vec<String>,
    },
    Deleted {
        kind: &'static str,
        name: String,
    },
    VolumeCreated {
        name: String,
        path: String,
    },
    PolicySet {
        name: String,
        /// No policy of that name existed.
        created: bool,
    },
    ImagePulled(ResolvedImage),
    ImagesImported(Vec<ResolvedImage>),
    Joining {
        address: SocketAddr,
    },
    SecretSet {
        name: String,
        version: u32,
        /// Version 1 of a new secret.
        created: bool,
    },
    MetricsConfigured(Option<MetricsListener>),
    TracingConfigured(Option<TracingExport>),
    LoggingConfigured(Option<LogShipping>),
    DashboardConfigured(Option<DashboardHistory>),
    TlsCertSet {
        domain: String,
        /// No certificate for the domain existed.
        created: bool,
    },
    RolloutChanged {
        app: String,
        action: RolloutAction,
    },
    VulnDbImported(Box<crate::contract::VulnDbStatus>),
    ScanPolicySet(crate::vuln::ScanPolicy),
    PipelineSet {
        name: String,
        created: bool,
    },
    RunQueued(Box<crate::cicd::PipelineRun>),
    CloudConfigured(Box<crate::cloud::ProviderConfig>),
    TrustedKeySet {
        name: String,
        fingerprint: String,
        created: bool,
    },
    ImageScanned(Box<crate::contract::ScanReport>),
}
