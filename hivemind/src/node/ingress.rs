//! The ingress's view of state: a route per `--service` domain to the
//! app's ready containers, and the certificates of `security tls add` with
//! their keys opened.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{Node, NodeError};
use crate::command::Outcome;
use crate::ingress::{CertInfo, Ingress, Route, RouteVariant, Routes};
use crate::secrets::{SecretValue, open, seal};
use crate::services::{DEFAULT_PORT, ENDPOINTS, EndpointRecord, SERVICES, ServiceRecord};
use crate::state::{TLS_CERTS, TlsCertRecord, now_secs};

/// An A/B test's variants with their ready containers of the app's current generation.
fn route_variants(
    app: Option<&crate::state::AppRecord>,
    endpoints: &[EndpointRecord],
) -> Vec<RouteVariant> {
    let Some(app) = app else {
        return Vec::new();
    };
    app.spec
        .variants()
        .iter()
        .map(|v| {
            let mut backends: Vec<_> = endpoints
                .iter()
                .filter(|e| {
                    e.app == app.spec.name
                        && e.ready
                        && e.generation == app.generation
                        && e.variant.as_deref() == Some(v.name.as_str())
                })
                .map(|e| e.ip)
                .collect();
            backends.sort();
            RouteVariant {
                name: v.name.clone(),
                share: v.share,
                backends,
            }
        })
        .collect()
}

impl Node {
    pub fn ingress(&self) -> &Arc<Ingress> {
        &self.ingress
    }

    /// Rebuilds the ingress's routes and loads changed certificates. A
    /// failure is logged; the ingress keeps what it had.
    pub async fn refresh_ingress(&self) {
        match self.ingress_routes() {
            Ok(routes) => self.ingress.set_routes(routes),
            Err(e) => tracing::warn!(error = %e, "ingress routes not rebuilt"),
        }
        if let Err(e) = self.load_certificates().await {
            tracing::warn!(error = %e, "ingress certificates not loaded");
        }
    }

    fn ingress_routes(&self) -> Result<Routes, NodeError> {
        let services: Vec<ServiceRecord> = self.store.values(SERVICES)?;
        let endpoints: Vec<EndpointRecord> = self.store.values(ENDPOINTS)?;
        let apps = self.store.apps()?;
        let mut routes = Routes::new();
        for service in services {
            let Some(domain) = &service.domain else {
                continue;
            };
            let mut backends: Vec<_> = endpoints
                .iter()
                .filter(|e| e.app == service.app && e.ready)
                .map(|e| e.ip)
                .collect();
            backends.sort();
            routes.insert(
                domain.trim_end_matches('.').to_ascii_lowercase(),
                Route {
                    port: service.ports.first().copied().unwrap_or(DEFAULT_PORT),
                    variants: route_variants(
                        apps.iter().find(|a| a.spec.name == service.app),
                        &endpoints,
                    ),
                    app: service.app,
                    backends,
                },
            );
        }
        Ok(routes)
    }

    async fn load_certificates(&self) -> Result<(), NodeError> {
        let records: Vec<TlsCertRecord> = self.store.values(TLS_CERTS)?;
        let certs = self.ingress.certs();
        let keep: BTreeSet<String> = records.iter().map(|r| r.domain.clone()).collect();
        certs.retain(&keep);
        for record in records {
            let version = format!("{}/{}", record.fingerprint, record.key.version);
            if certs.version(&record.domain).as_deref() == Some(version.as_str()) {
                continue;
            }
            let kek = self.secrets_key().await?;
            let key = match open(&kek, &record.key) {
                Ok(key) => key,
                Err(e) => {
                    tracing::warn!(domain = %record.domain, error = %e, "TLS key cannot be opened");
                    continue;
                }
            };
            match certs.load(&record.domain, version, &record.chain_pem, key.as_bytes()) {
                Ok(()) => tracing::info!(domain = %record.domain, "ingress certificate loaded"),
                Err(e) => {
                    tracing::warn!(domain = %record.domain, error = %e, "ingress certificate not loaded")
                }
            }
        }
        Ok(())
    }

    /// Stores (or replaces) the certificate of `domain`, its key sealed.
    pub(super) async fn put_tls_cert(
        &self,
        domain: String,
        chain_pem: String,
        key: SecretValue,
        info: CertInfo,
    ) -> Result<Outcome, NodeError> {
        let existing: Option<TlsCertRecord> = self.store.value(TLS_CERTS, &domain)?;
        let (version, created_at) = match &existing {
            Some(old) => (old.key.version + 1, old.created_at),
            None => (1, now_secs()),
        };
        let kek = self.secrets_key().await?;
        let now = now_secs();
        let record = TlsCertRecord {
            key: seal(&kek, &domain, version, &key, created_at, now),
            domain: domain.clone(),
            chain_pem,
            names: info.names,
            issuer: info.issuer,
            not_before: info.not_before,
            not_after: info.not_after,
            fingerprint: info.fingerprint,
            created_at,
            updated_at: now,
        };
        self.write(TLS_CERTS, &domain, Some(&record)).await?;
        tracing::info!(%domain, version, "TLS certificate stored");
        Ok(Outcome::TlsCertSet {
            domain,
            created: existing.is_none(),
        })
    }

    pub(super) async fn delete_tls_cert(&self, domain: String) -> Result<Outcome, NodeError> {
        if self
            .store
            .value::<TlsCertRecord>(TLS_CERTS, &domain)?
            .is_none()
        {
            return Err(NodeError::NotFound {
                kind: "TLS certificate",
                name: domain,
            });
        }
        self.write::<TlsCertRecord>(TLS_CERTS, &domain, None)
            .await?;
        Ok(Outcome::Deleted {
            kind: "TLS certificate",
            name: domain,
        })
    }
}
