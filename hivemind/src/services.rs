//! Services: every app gets a virtual IP from the service CIDR and DNS names;
//! its ready containers are the endpoints behind it.
//!
//! Records (replicated): `services/<app>` (VIP, ports, custom domain),
//! written by the app's owner; `endpoints/<container>` (address and
//! readiness), written by the node that runs the container.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::state::{AppRecord, Subnet};

pub use crate::model::DEFAULT_PORT;
pub use crate::state::{CLUSTER_DOMAIN, ENDPOINTS, EndpointRecord, SERVICES, ServiceRecord};

/// Default service CIDR.
pub fn default_service_cidr() -> Subnet {
    Subnet {
        network: Ipv4Addr::new(10, 96, 0, 0),
        prefix: 16,
    }
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

/// The DNS server's view of services: the replicated records of this node.
pub struct StoreDirectory {
    pub store: std::sync::Arc<crate::state::Store>,
}

impl crate::discovery::ServiceDirectory for StoreDirectory {
    fn lookup(&self, name: &str) -> Option<crate::discovery::ServiceAnswer> {
        use crate::discovery::{Endpoint, Protocol, ServiceAnswer};
        let services: Vec<ServiceRecord> = self.store.values(SERVICES).ok()?;
        // `preview.<app>`: a blue-green rollout's new version alone.
        if let Some(app) = name
            .strip_prefix(crate::state::PREVIEW_LABEL)
            .and_then(|rest| rest.strip_prefix('.'))
        {
            let service = services.into_iter().find(|s| s.app == app)?;
            let preview = service.preview_vip?;
            let generation = self.store.app(app).ok()??.generation;
            let endpoints = self
                .store
                .values::<EndpointRecord>(ENDPOINTS)
                .ok()?
                .into_iter()
                .filter(|e| e.app == app && e.ready && e.generation == generation)
                .map(|e| Endpoint {
                    name: e.container,
                    ip: e.ip,
                })
                .collect();
            return Some(ServiceAnswer {
                vip: preview,
                ports: service.ports.iter().map(|p| (*p, Protocol::Tcp)).collect(),
                endpoints,
            });
        }
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
