//! Services: every app gets a virtual IP from the service CIDR and DNS names;
//! its ready containers are the endpoints behind it.
//!
//! Records (replicated): `services/<app>` (VIP, ports, custom domain),
//! written by the app's owner; `endpoints/<container>` (address and
//! readiness), written by the node that runs the container.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::daemon::{Node, NodeError};
use crate::state::{AppRecord, Subnet};

pub const SERVICES: &str = "services";
pub const ENDPOINTS: &str = "endpoints";
/// The cluster's DNS domain.
pub const CLUSTER_DOMAIN: &str = "hivemind.local";
/// Port of a service whose app declares none.
pub const DEFAULT_PORT: u16 = 80;

/// Default service CIDR.
pub fn default_service_cidr() -> Subnet {
    Subnet {
        network: Ipv4Addr::new(10, 96, 0, 0),
        prefix: 16,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub app: String,
    pub vip: Ipv4Addr,
    /// The `--service` domain, if any.
    pub domain: Option<String>,
    /// TCP ports.
    pub ports: Vec<u16>,
}

impl ServiceRecord {
    pub fn dns_names(&self) -> Vec<String> {
        let mut names = vec![format!("{}.{CLUSTER_DOMAIN}", self.app)];
        names.extend(self.domain.iter().cloned());
        names
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub container: String,
    pub app: String,
    pub node: String,
    pub ip: Ipv4Addr,
    /// In the load balancer and DNS.
    pub ready: bool,
    /// Why it is not ready, when it is not.
    pub reason: Option<String>,
}

/// The ports a service exposes for an app.
pub fn service_ports(app: &AppRecord) -> Vec<u16> {
    if app.spec.ports.is_empty() {
        vec![DEFAULT_PORT]
    } else {
        app.spec.ports.clone()
    }
}

/// The VIP for `app`: a stable hash into the service CIDR, moved to the next
/// free address when taken (the gateway-like .0/.1 and broadcast excluded).
pub fn pick_vip(app: &str, cidr: Subnet, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let size = 1u32 << (32 - u32::from(cidr.prefix));
    let usable = size.checked_sub(3)?;
    if usable == 0 {
        return None;
    }
    let hash = app.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let base = u32::from(cidr.network);
    (0..usable)
        .map(|i| Ipv4Addr::from(base + 2 + (hash.wrapping_add(i) % usable)))
        .find(|ip| !taken.contains(ip))
}

impl Node {
    /// Makes sure every app this node owns has a service record with its
    /// current ports and domain; removes records of deleted apps.
    pub async fn reconcile_services(&self) -> Result<(), NodeError> {
        let apps: Vec<AppRecord> = self.store.apps()?;
        let services: Vec<ServiceRecord> = self.store.values(SERVICES)?;
        let mut taken: BTreeSet<Ipv4Addr> = services.iter().map(|s| s.vip).collect();
        for app in &apps {
            let name = &app.spec.name;
            if !self.owns(name) {
                continue;
            }
            let existing = services.iter().find(|s| &s.app == name);
            // Two apps on one VIP (concurrent owners): the larger name moves.
            let clash = existing.is_some_and(|mine| {
                services
                    .iter()
                    .any(|other| other.vip == mine.vip && other.app < mine.app)
            });
            let vip = match existing {
                Some(service) if !clash => service.vip,
                _ => match pick_vip(name, self.service_cidr, &taken) {
                    Some(vip) => vip,
                    None => {
                        tracing::warn!(app = %name, cidr = %self.service_cidr, "service CIDR is full");
                        continue;
                    }
                },
            };
            taken.insert(vip);
            let wanted = ServiceRecord {
                app: name.clone(),
                vip,
                domain: app.spec.service.clone(),
                ports: service_ports(app),
            };
            if existing != Some(&wanted) {
                tracing::info!(app = %name, vip = %vip, "service");
                self.write(SERVICES, name, Some(&wanted)).await?;
            }
        }
        for service in &services {
            if !apps.iter().any(|a| a.spec.name == service.app) && self.owns(&service.app) {
                self.write::<ServiceRecord>(SERVICES, &service.app, None)
                    .await?;
            }
        }
        Ok(())
    }

    /// Publishes (or withdraws, with `None`) the endpoint of a local container.
    pub async fn publish_endpoint(
        &self,
        container: &str,
        endpoint: Option<&EndpointRecord>,
    ) -> Result<(), NodeError> {
        let current: Option<EndpointRecord> = self.store.value(ENDPOINTS, container)?;
        if current.as_ref() == endpoint {
            return Ok(());
        }
        self.write(ENDPOINTS, container, endpoint).await
    }

    /// Publishes a local container's endpoint; `running` says whether its
    /// process runs (readiness checks refine it).
    pub async fn publish_local_endpoint(
        &self,
        record: &crate::state::ContainerRecord,
        running: bool,
    ) -> Result<(), NodeError> {
        let (ready, reason) = if running {
            self.readiness(&record.id)
        } else {
            (false, Some("not running".to_string()))
        };
        let endpoint = EndpointRecord {
            container: record.id.clone(),
            app: record.app.clone(),
            node: self.name.clone(),
            ip: record.ip,
            ready,
            reason,
        };
        self.publish_endpoint(&record.id, Some(&endpoint)).await
    }

    /// Whether a running container serves: its readiness check's verdict
    /// (ready at once without checks).
    pub fn readiness(&self, container: &str) -> (bool, Option<String>) {
        match self.monitor.status(container) {
            None => (true, None),
            Some(health) if health.ready => (true, None),
            Some(health) => {
                let reason = health
                    .last
                    .map(|probe| probe.message)
                    .unwrap_or_else(|| "waiting for the first readiness check".to_string());
                (false, Some(reason))
            }
        }
    }

    /// Starts the checks of a running container unless they run already.
    pub fn watch_health(&self, app: &AppRecord, record: &crate::state::ContainerRecord) {
        if app.spec.health.is_empty() || self.monitor.watched().contains(&record.id) {
            return;
        }
        self.monitor
            .watch(&record.id, record.ip, app.spec.health.clone());
    }

    /// Carries out a health event: readiness into the endpoint record, a
    /// failed liveness check into a restart after the backoff.
    pub async fn on_health_event(
        self: &std::sync::Arc<Self>,
        event: crate::health::HealthEvent,
    ) -> Result<(), NodeError> {
        use crate::health::HealthEvent;
        match event {
            HealthEvent::ReadinessChanged { id, ready } => {
                tracing::info!(container = %id, ready, "readiness changed");
                if let Some(record) = self.store.container(&id)? {
                    self.publish_local_endpoint(&record, true).await?;
                }
                self.wake.notify_one();
            }
            HealthEvent::LivenessFailed { id, restart_after } => {
                tracing::warn!(container = %id, restart_after_s = restart_after.as_secs(), "liveness check failed; restarting");
                let node = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(restart_after).await;
                    if let Err(e) = node.runtime.stop(&id, node.stop_grace).await {
                        tracing::warn!(container = %id, error = %e, "stop for liveness restart failed");
                    }
                    node.wake.notify_one();
                });
            }
        }
        Ok(())
    }

    /// The ready endpoints of an app, cluster-wide.
    pub fn ready_endpoints(&self, app: &str) -> Result<Vec<EndpointRecord>, NodeError> {
        Ok(self
            .store
            .values::<EndpointRecord>(ENDPOINTS)?
            .into_iter()
            .filter(|e| e.app == app && e.ready)
            .collect())
    }
}

/// The DNS server's view of services: the replicated records of this node.
pub struct StoreDirectory {
    pub store: std::sync::Arc<crate::state::Store>,
}

impl crate::discovery::ServiceDirectory for StoreDirectory {
    fn lookup(&self, name: &str) -> Option<crate::discovery::ServiceAnswer> {
        use crate::discovery::{Endpoint, Protocol, ServiceAnswer};
        let services: Vec<ServiceRecord> = self.store.values(SERVICES).ok()?;
        let service = services.into_iter().find(|s| {
            s.app == name
                || s.domain
                    .as_deref()
                    .is_some_and(|d| d.eq_ignore_ascii_case(name))
        })?;
        let endpoints = self
            .store
            .values::<EndpointRecord>(ENDPOINTS)
            .ok()?
            .into_iter()
            .filter(|e| e.app == service.app && e.ready)
            .map(|e| Endpoint {
                name: e.container,
                ip: e.ip,
            })
            .collect();
        Some(ServiceAnswer {
            vip: service.vip,
            ports: service.ports.iter().map(|p| (*p, Protocol::Tcp)).collect(),
            endpoints,
        })
    }
}

impl Node {
    /// Points the data plane's service table at the ready endpoints of every
    /// service; removes services that are gone.
    pub async fn sync_services(&self) -> Result<(), NodeError> {
        use crate::dataplane::ServiceBackend;
        const TCP: u8 = 6;
        let Some(dataplane) = &self.dataplane else {
            return Ok(());
        };
        let services: Vec<ServiceRecord> = self.store.values(SERVICES)?;
        let endpoints: Vec<EndpointRecord> = self.store.values(ENDPOINTS)?;
        let mut wanted = Vec::new();
        for service in &services {
            for port in &service.ports {
                let backends: Vec<ServiceBackend> = endpoints
                    .iter()
                    .filter(|e| e.app == service.app && e.ready)
                    .map(|e| ServiceBackend {
                        id: u32::from(e.ip),
                        ip: e.ip,
                        port: *port,
                        weight: 1,
                    })
                    .collect();
                wanted.push((service.vip, *port, backends));
            }
        }
        let mut dataplane = match dataplane.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let current = dataplane.services()?;
        for (vip, port, proto, _) in &current {
            if *proto != TCP || !wanted.iter().any(|(v, p, _)| v == vip && p == port) {
                dataplane.remove_service(*vip, *port, *proto)?;
            }
        }
        for (vip, port, backends) in wanted {
            // Every backend weighs the same today: compare the sets of ids.
            let ids: BTreeSet<u32> = backends.iter().map(|b| b.id).collect();
            let unchanged = current.iter().any(|(v, p, proto, slots)| {
                *v == vip
                    && *p == port
                    && *proto == TCP
                    && slots.iter().copied().collect::<BTreeSet<u32>>() == ids
                    && !slots.is_empty()
            });
            if !unchanged {
                dataplane.set_service(vip, port, TCP, &backends)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vips_are_stable_and_unique() {
        let cidr = default_service_cidr();
        let mut taken = BTreeSet::new();
        let a = pick_vip("web", cidr, &taken).unwrap();
        assert_eq!(a, pick_vip("web", cidr, &taken).unwrap(), "stable");
        taken.insert(a);
        let b = pick_vip("web", cidr, &taken).unwrap();
        assert_ne!(a, b, "moves when taken");
        assert!(cidr.contains(a) && cidr.contains(b));
        let tiny: Subnet = "10.96.0.0/29".parse().unwrap();
        let all: BTreeSet<Ipv4Addr> = (2..=6).map(|i| Ipv4Addr::new(10, 96, 0, i)).collect();
        assert_eq!(pick_vip("x", tiny, &all), None);
    }
}
