//! The ingress's view of state: a route per `--service` domain to the
//! app's ready containers, and the certificates of `security tls add` with
//! their keys opened.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Node, NodeError};
use crate::command::Outcome;
use crate::ingress::{CertInfo, Ingress, Route, RouteBackend, RouteVariant, Routes};
use crate::model::HttpFigures;
use crate::secrets::{SecretValue, open, seal};
use crate::services::{DEFAULT_PORT, ENDPOINTS, EndpointRecord, SERVICES, ServiceRecord};
use crate::state::{
    AppRecord, INGRESS_FIGURES, IngressFiguresRecord, StepHttpFigures, TLS_CERTS, TlsCertRecord,
    now_secs,
};

/// How often a node's ingress figures are written while only their counts grow (a new step
/// is written at once).
const FIGURES_EVERY: Duration = Duration::from_secs(2);

/// A rollout's step: (the generation it brings, the step).
type StepKey = (u64, u32);

/// What this node's ingress counted when each app's current rollout step began.
#[derive(Debug, Default)]
pub(super) struct FigureWindows {
    /// App -> its rollout's step and each generation's running totals then.
    apps: HashMap<String, (StepKey, HashMap<u64, HttpFigures>)>,
    written: Option<Instant>,
}

/// The ready endpoints of `app` the ingress sends requests to, weighed as the kernel's
/// balancer weighs them: a canary's share by weight, and none to a blue-green rollout's new
/// version before its promotion.
fn route_backends(app: Option<&AppRecord>, ready: &[&EndpointRecord]) -> Vec<RouteBackend> {
    let weights = super::services::backend_weights(app, ready);
    let mut backends: Vec<RouteBackend> = ready
        .iter()
        .zip(weights)
        .filter(|(_, weight)| *weight > 0)
        .map(|(e, weight)| RouteBackend {
            ip: e.ip,
            weight,
            generation: e.generation,
        })
        .collect();
    backends.sort_by_key(|b| b.ip);
    backends
}

/// An A/B test's variants with their ready containers of the app's current generation.
fn route_variants(app: Option<&AppRecord>, endpoints: &[EndpointRecord]) -> Vec<RouteVariant> {
    let Some(app) = app else {
        return Vec::new();
    };
    app.spec
        .variants()
        .iter()
        .map(|v| {
            let mut backends: Vec<RouteBackend> = endpoints
                .iter()
                .filter(|e| {
                    e.app == app.spec.name
                        && e.ready
                        && e.generation == app.generation
                        && e.variant.as_deref() == Some(v.name.as_str())
                })
                .map(|e| RouteBackend {
                    generation: e.generation,
                    ..e.ip.into()
                })
                .collect();
            backends.sort_by_key(|b| b.ip);
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
            let app = apps.iter().find(|a| a.spec.name == service.app);
            let ready: Vec<&EndpointRecord> = endpoints
                .iter()
                .filter(|e| e.app == service.app && e.ready)
                .collect();
            routes.insert(
                domain.trim_end_matches('.').to_ascii_lowercase(),
                Route {
                    port: service.ports.first().copied().unwrap_or(DEFAULT_PORT),
                    variants: route_variants(app, &endpoints),
                    backends: route_backends(app, &ready),
                    app: service.app,
                },
            );
        }
        Ok(routes)
    }

    /// Publishes what this node's ingress sent to each app under a canary rollout, in the
    /// rollout's current step, for the canary's analysis (see [`IngressFiguresRecord`]); removes
    /// the record once no app is under one.
    pub async fn publish_ingress_figures(&self) -> Result<(), NodeError> {
        let apps = self.store.apps()?;
        let mut record = IngressFiguresRecord {
            node_id: self.id.clone(),
            apps: BTreeMap::new(),
        };
        let last_written = {
            let mut windows = super::apps::lock(&self.ingress_windows);
            let mut kept = HashMap::new();
            for app in &apps {
                let Some(rollout) = app
                    .active_rollout()
                    .filter(|r| crate::rollout::ANALYSES_HTTP.contains(&r.strategy.as_str()))
                else {
                    continue;
                };
                let name = &app.spec.name;
                let totals: HashMap<u64, HttpFigures> = self
                    .ingress
                    .stats()
                    .generation_figures(name)
                    .into_iter()
                    .collect();
                let window = (rollout.to_generation, rollout.step);
                let base = match windows.apps.remove(name) {
                    Some((counted, base)) if counted == window => base,
                    _ => totals.clone(),
                };
                let mut figures = StepHttpFigures {
                    generation: window.0,
                    step: window.1,
                    ..Default::default()
                };
                for (generation, total) in &totals {
                    let since =
                        total.since(base.get(generation).unwrap_or(&HttpFigures::default()));
                    if *generation == rollout.to_generation {
                        figures.new.add(&since);
                    } else {
                        figures.old.add(&since);
                    }
                }
                record.apps.insert(name.clone(), figures);
                kept.insert(name.clone(), (window, base));
            }
            windows.apps = kept;
            windows.written
        };
        let stored: Option<IngressFiguresRecord> = self.store.value(INGRESS_FIGURES, &self.id)?;
        if record.apps.is_empty() {
            if stored.is_some() {
                self.write::<IngressFiguresRecord>(INGRESS_FIGURES, &self.id, None)
                    .await?;
            }
            return Ok(());
        }
        if stored.as_ref() == Some(&record) {
            return Ok(());
        }
        let steps = |r: &IngressFiguresRecord| -> Vec<(String, u64, u32)> {
            r.apps
                .iter()
                .map(|(app, f)| (app.clone(), f.generation, f.step))
                .collect()
        };
        let same_steps = stored.as_ref().is_some_and(|s| steps(s) == steps(&record));
        if same_steps && last_written.is_some_and(|t| t.elapsed() < FIGURES_EVERY) {
            return Ok(());
        }
        self.write(INGRESS_FIGURES, &self.id, Some(&record)).await?;
        super::apps::lock(&self.ingress_windows).written = Some(Instant::now());
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Rollout, RolloutPhase};
    use crate::state::ContainerStatus;

    fn endpoint(last: u8, generation: u64) -> EndpointRecord {
        EndpointRecord {
            container: format!("web-{last}"),
            app: "web".into(),
            node: "node-1".into(),
            node_id: String::new(),
            ip: std::net::Ipv4Addr::new(10, 244, 0, last),
            status: ContainerStatus::Running,
            generation,
            ready: true,
            reason: None,
            restarts: 0,
            resets: 0,
            unanswered_syns: 0,
            variant: None,
        }
    }

    fn app(strategy: &str, weight: Option<u32>) -> AppRecord {
        let spec = crate::contract::DeployRequest {
            image: "busybox".into(),
            name: "web".into(),
            ..Default::default()
        }
        .validate()
        .expect("valid");
        let mut app = AppRecord::new(spec.clone());
        app.generation = 2;
        app.rollout = Some(Rollout {
            strategy: strategy.into(),
            from_generation: 1,
            from_spec: Box::new(spec),
            to_generation: 2,
            quotas: None,
            phase: RolloutPhase::Progressing,
            started_ms: 0,
            progressed_ms: 0,
            best_available: 0,
            fewest_old: 0,
            message: None,
            weight,
            step: 0,
            step_started_ms: 0,
            failures_at_step: 0,
            stable_failures_at_step: 0,
        });
        app
    }

    /// The ingress weighs a route's backends as the kernel's balancer does: a 10% canary's one
    /// replica against 3 stable ones takes 10% by weight, and a blue-green rollout's new
    /// version takes nothing before its promotion.
    #[test]
    fn routes_follow_a_rollouts_weights() {
        let endpoints = [
            endpoint(1, 1),
            endpoint(2, 1),
            endpoint(3, 1),
            endpoint(4, 2),
        ];
        let ready: Vec<&EndpointRecord> = endpoints.iter().collect();
        let weight_of = |backends: &[RouteBackend], generation| -> u32 {
            backends
                .iter()
                .filter(|b| b.generation == generation)
                .map(|b| b.weight)
                .sum()
        };
        let canary = route_backends(Some(&app("canary", Some(100))), &ready);
        assert_eq!(canary.len(), 4);
        let total = weight_of(&canary, 1) + weight_of(&canary, 2);
        assert_eq!(weight_of(&canary, 2) * 10, total, "{canary:?}");
        let previewing = route_backends(Some(&app("blue-green", Some(0))), &ready);
        assert!(
            previewing.len() == 3 && previewing.iter().all(|b| b.generation == 1),
            "{previewing:?}"
        );
        let plain = route_backends(None, &ready);
        assert!(plain.iter().all(|b| b.weight == 1) && plain.len() == 4);
    }
}
