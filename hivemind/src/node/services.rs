//! Services: the records every app's owner keeps (VIP, ports, domain), and
//! the data plane's service table that every node points at the ready
//! endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use hivemind_common::service_flags;

use super::map_diff::diff;
use super::{Node, NodeError};
use crate::model::PublishMode;
use crate::services::{pick_vip, service_ports};
use crate::state::{AppRecord, ENDPOINTS, EndpointRecord, SERVICES, ServiceRecord};

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
            // A blue-green rollout's preview VIP, while it verifies its new version.
            let previewing = app
                .active_rollout()
                .is_some_and(|r| r.strategy == "blue-green" && r.weight == Some(0));
            let preview_vip = match existing.and_then(|s| s.preview_vip) {
                Some(preview) if previewing => Some(preview),
                None if previewing => {
                    let preview = pick_vip(
                        &format!("{}.{name}", crate::state::PREVIEW_LABEL),
                        self.service_cidr,
                        &taken,
                    );
                    if preview.is_none() {
                        tracing::warn!(app = %name, "service CIDR is full: no preview VIP");
                    }
                    preview
                }
                _ => None,
            };
            taken.extend(preview_vip);
            let wanted = ServiceRecord {
                app: name.clone(),
                vip,
                domain: app.spec.service.clone(),
                ports: service_ports(app),
                preview_vip,
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
}

impl Node {
    /// Refuses ports another app publishes already.
    pub(super) fn require_free_published_ports(
        &self,
        spec: &crate::model::AppSpec,
    ) -> Result<(), NodeError> {
        for app in self.store.apps()? {
            if app.spec.name == spec.name {
                continue;
            }
            if let Some(p) = spec
                .publish
                .iter()
                .find(|p| app.spec.publish.iter().any(|q| q.published == p.published))
            {
                return Err(NodeError::Conflict(format!(
                    "port {} is published by app {} already",
                    p.published, app.spec.name
                )));
            }
        }
        Ok(())
    }

    /// Points the data plane's service table at the ready endpoints of every
    /// service; removes services that are gone.
    pub async fn sync_services(&self) -> Result<(), NodeError> {
        use crate::dataplane::ServiceBackend;
        const TCP: u8 = 6;
        let Some(dataplane) = &self.dataplane else {
            return Ok(());
        };
        // State is read under the data plane's lock: several tasks sync (the service loop, the
        // reconcile pass, a drain), and an older read must never be applied after a newer one.
        let mut dataplane = match dataplane.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let services: Vec<ServiceRecord> = self.store.values(SERVICES)?;
        let endpoints: Vec<EndpointRecord> = self.store.values(ENDPOINTS)?;
        let apps: Vec<AppRecord> = self.store.apps()?;
        // Frontend -> its flags and the backend id of each slot (what the kernel holds), and the
        // backends. Each (endpoint, port) is its own backend.
        let slots = |list: &[ServiceBackend]| {
            let weights: Vec<(u32, u32)> = list.iter().map(|b| (b.id, b.weight)).collect();
            crate::dataplane::weighted_slots(
                &weights,
                usize::from(hivemind_common::MAX_SLOTS_PER_SERVICE),
            )
        };
        let mut wanted: BTreeMap<(Ipv4Addr, u16, u8), (u16, Vec<u32>)> = BTreeMap::new();
        // Backend -> the port it is published on.
        let mut published_backends: BTreeMap<(Ipv4Addr, u16, u8), u16> = BTreeMap::new();
        let mut backends: BTreeMap<(Ipv4Addr, u16, u8), Vec<ServiceBackend>> = BTreeMap::new();
        for service in &services {
            let ready: Vec<&EndpointRecord> = endpoints
                .iter()
                .filter(|e| e.app == service.app && e.ready)
                .collect();
            let app = apps.iter().find(|a| a.spec.name == service.app);
            let weights = backend_weights(app, &ready);
            // An A/B test: each variant's run of slots, chosen by the client's address.
            let variants = app.map_or(&[][..], |a| a.spec.variants());
            let affinity = !variants.is_empty();
            for port in &service.ports {
                let list: Vec<ServiceBackend> = ready
                    .iter()
                    .zip(&weights)
                    .map(|(e, weight)| ServiceBackend {
                        id: dataplane.backend_id(e.ip, *port, TCP),
                        ip: e.ip,
                        port: *port,
                        weight: *weight,
                    })
                    .collect();
                let key = (service.vip, *port, TCP);
                let value = match app.filter(|_| affinity) {
                    Some(app) => (service_flags::AFFINITY, variant_slots(app, &ready, &list)),
                    None => (0, slots(&list)),
                };
                wanted.insert(key, value);
                backends.insert(key, list);
                // The preview reaches the current generation alone.
                if let (Some(preview), Some(app)) = (service.preview_vip, app) {
                    let list: Vec<ServiceBackend> = ready
                        .iter()
                        .filter(|e| e.generation == app.generation)
                        .map(|e| ServiceBackend {
                            id: dataplane.backend_id(e.ip, *port, TCP),
                            ip: e.ip,
                            port: *port,
                            weight: 1,
                        })
                        .collect();
                    let key = (preview, *port, TCP);
                    wanted.insert(key, (0, slots(&list)));
                    backends.insert(key, list);
                }
            }
            // Published ports: a frontend on this node's own address with the backends of the
            // target port.
            let (published, mode) = apps
                .iter()
                .find(|a| a.spec.name == service.app)
                .map(|a| (a.spec.publish.clone(), a.spec.publish_mode))
                .unwrap_or_default();
            let flags = match mode {
                PublishMode::Dsr => 0,
                PublishMode::Snat => service_flags::SNAT,
            };
            if let Some(node_ip) = dataplane.node_address() {
                for p in published {
                    let Some(list) = backends.get(&(service.vip, p.target, TCP)).cloned() else {
                        continue;
                    };
                    if mode == PublishMode::Dsr {
                        for b in &list {
                            published_backends.insert((b.ip, b.port, TCP), p.published);
                        }
                    }
                    let key = (node_ip, p.published, TCP);
                    let value = match wanted.get(&(service.vip, p.target, TCP)) {
                        // The same slots as the VIP's: a client's variant is the same both ways.
                        Some((vip_flags, vip_slots)) if affinity => {
                            (flags | vip_flags, vip_slots.clone())
                        }
                        _ => (flags, slots(&list)),
                    };
                    wanted.insert(key, value);
                    backends.insert(key, list);
                }
            }
        }
        let current_flags = dataplane.frontend_flags()?;
        let current: BTreeMap<(Ipv4Addr, u16, u8), (u16, Vec<u32>)> = dataplane
            .services()?
            .into_iter()
            .map(|(vip, port, proto, slots)| {
                let key = (vip, port, proto);
                let flags = current_flags.get(&key).copied().unwrap_or(0);
                (key, (flags, slots))
            })
            .collect();
        let publishing = apps.iter().any(|a| !a.spec.publish.is_empty());
        // A refusal here must not stop the services themselves from syncing.
        if let Err(e) = dataplane.set_published(publishing, &published_backends) {
            tracing::warn!(error = %e, "published ports not synced");
        }
        diff(&current, wanted).apply(
            &mut *dataplane,
            |dp, (vip, port, proto)| dp.remove_service(vip, port, proto),
            |dp, (vip, port, proto), (flags, slots)| {
                let list = backends
                    .get(&(vip, port, proto))
                    .map_or(&[][..], Vec::as_slice);
                dp.set_frontend_slots(vip, port, proto, list, &slots, flags)
            },
        )?;
        Ok(())
    }
}

/// The slots of an A/B test's frontend: each variant's ready endpoints of the current
/// generation (`list` holds their backends, in the order of `ready`) in a run of their share;
/// a variant with none ready lends its run to the version the test replaces while it still
/// serves.
fn variant_slots(
    app: &AppRecord,
    ready: &[&EndpointRecord],
    list: &[crate::dataplane::ServiceBackend],
) -> Vec<u32> {
    let of = |e: &EndpointRecord, name: Option<&str>| {
        e.generation == app.generation && e.variant.as_deref() == name
    };
    let ids = |keep: &dyn Fn(&EndpointRecord) -> bool| -> Vec<u32> {
        ready
            .iter()
            .zip(list)
            .filter(|(e, _)| keep(e))
            .map(|(_, b)| b.id)
            .collect()
    };
    let variants = app.spec.variants();
    let groups: Vec<(u32, Vec<u32>)> = variants
        .iter()
        .map(|v| (v.share, ids(&|e| of(e, Some(v.name.as_str())))))
        .collect();
    let replaced = ids(&|e| !variants.iter().any(|v| of(e, Some(v.name.as_str()))));
    crate::dataplane::affinity_slots(&groups, &replaced)
}

/// The weight of each ready endpoint of an app: alike, unless a rollout splits the traffic by
/// weight (a canary): then the new generation's endpoints together take its share in permille
/// and the older ones the rest, whatever their numbers.
pub(super) fn backend_weights(app: Option<&AppRecord>, ready: &[&EndpointRecord]) -> Vec<u32> {
    let split = app.and_then(|a| {
        a.active_rollout()
            .and_then(|r| r.weight)
            .map(|w| (a.generation, w.min(1000)))
    });
    let Some((generation, share)) = split else {
        return vec![1; ready.len()];
    };
    let new = ready.iter().filter(|e| e.generation == generation).count() as u32;
    let old = ready.len() as u32 - new;
    if new == 0 || old == 0 {
        return vec![1; ready.len()];
    }
    ready
        .iter()
        .map(|e| {
            if e.generation == generation {
                share * old
            } else {
                (1000 - share) * new
            }
        })
        .collect()
}
