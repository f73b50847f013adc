//! Network policy on this node's data plane: identities of label sets, the
//! ipcache of every container in the cluster (with the node each lives on,
//! which the overlay encapsulates to), and each local endpoint's rules.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use super::apps::endpoint_id;
use super::map_diff::diff;
use super::{Node, NodeError};
use crate::dataplane::IpcacheEntry;
use crate::policy::{NetworkPolicy, endpoint_rules, identities};
use crate::services::{ENDPOINTS, EndpointRecord};
use crate::state::{AppRecord, ContainerStatus, NODES, NodeInfo, POLICIES};

/// Identity of the nodes themselves.
pub const HOST_IDENTITY: u32 = 1;

impl Node {
    /// Brings the data plane's identities, ipcache and per-endpoint rules in
    /// line with the apps, endpoints and policies this node knows.
    pub async fn sync_policy(&self) -> Result<(), NodeError> {
        let Some(dataplane) = &self.dataplane else {
            return Ok(());
        };
        let apps: Vec<AppRecord> = self.store.apps()?;
        let label_sets: BTreeSet<BTreeMap<String, String>> =
            apps.iter().map(|a| a.spec.labels.clone()).collect();
        let ids = identities(&label_sets);
        let app_identity: HashMap<&str, (u32, &BTreeMap<String, String>)> = apps
            .iter()
            .filter_map(|a| {
                ids.get(&a.spec.labels)
                    .map(|id| (a.spec.name.as_str(), (*id, &a.spec.labels)))
            })
            .collect();
        let policies: Vec<NetworkPolicy> = self.store.values(POLICIES)?;

        // Each address with the node that holds it when that is another node (the tunnel
        // endpoint the overlay sends it to): the node whose subnet holds the address, as the
        // tunnels route it.
        let nodes: Vec<NodeInfo> = self.store.values(NODES)?;
        let peers: BTreeMap<Ipv4Addr, &NodeInfo> = nodes
            .iter()
            .filter(|info| self.is_tunnel_peer(info))
            .map(|info| (info.subnet.network, info))
            .collect();
        let tunnel_endpoint = |ip: Ipv4Addr| {
            peers
                .range(..=ip)
                .next_back()
                .filter(|(_, info)| info.subnet.contains(ip))
                .map(|(_, info)| info.underlay)
        };
        let entry = |ip: Ipv4Addr, identity: u32| IpcacheEntry {
            identity,
            tunnel_endpoint: tunnel_endpoint(ip),
        };
        let mut wanted: BTreeMap<Ipv4Addr, IpcacheEntry> = BTreeMap::new();
        for endpoint in self.store.values::<EndpointRecord>(ENDPOINTS)? {
            if let Some((identity, _)) = app_identity.get(endpoint.app.as_str()) {
                wanted.insert(endpoint.ip, entry(endpoint.ip, *identity));
            }
        }
        for info in &nodes {
            let gateway = info.subnet.gateway();
            wanted.insert(gateway, entry(gateway, HOST_IDENTITY));
        }
        let containers: Vec<_> = self
            .store
            .containers()?
            .into_iter()
            .filter(|c| c.status == ContainerStatus::Running)
            .collect();
        let mut ifindexes = Vec::new();
        for container in &containers {
            if let Some(ifindex) = self.network.ifindex(&container.host_ifname).await? {
                ifindexes.push((container, ifindex));
            }
        }

        let mut dataplane = match dataplane.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let current: BTreeMap<Ipv4Addr, IpcacheEntry> = dataplane.ipcache()?.into_iter().collect();
        diff(&current, wanted).apply(
            &mut *dataplane,
            |dp, ip| dp.remove_ipcache(ip),
            |dp, ip, entry| dp.set_ipcache(ip, entry),
        )?;
        let mut cache = match self.policy_cache.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut live = BTreeSet::new();
        let mut failures = Vec::new();
        for (container, ifindex) in ifindexes {
            let Some((identity, labels)) = app_identity.get(container.app.as_str()) else {
                continue;
            };
            dataplane.set_endpoint_identity(ifindex, *identity)?;
            let rules = endpoint_rules(labels, &policies, &ids);
            let id = endpoint_id(container);
            live.insert(id);
            if cache.get(&id) != Some(&rules) {
                tracing::info!(container = %container.id, identity, ingress = rules.ingress.as_ref().map(|r| r.len()), egress = rules.egress.as_ref().map(|r| r.len()), "endpoint policy");
                // One endpoint the kernel refuses never keeps the others from their rules;
                // it is tried again at the next sync (it stays out of the cache).
                match dataplane.set_endpoint_policy(id, &rules) {
                    Ok(()) => {
                        cache.insert(id, rules);
                    }
                    Err(e) => {
                        cache.remove(&id);
                        failures.push(format!("{}: {e}", container.id));
                    }
                }
            }
        }
        cache.retain(|id, _| live.contains(id));
        if !failures.is_empty() {
            return Err(NodeError::Io(format!(
                "policy not written for {} endpoint(s): {}",
                failures.len(),
                failures.join("; ")
            )));
        }
        Ok(())
    }
}
