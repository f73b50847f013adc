//! The data plane's map limits, checked before a change is stored: a policy
//! or a service that would not fit is refused with the map and its limit
//! named, rather than stored and then failing on some node's kernel.

use std::collections::{BTreeMap, BTreeSet};

use hivemind_common::{
    MAX_BACKENDS, MAX_POLICY_CIDR_ENTRIES, MAX_POLICY_ENTRIES, MAX_SERVICE_ENTRIES,
};

use super::{Node, NodeError};
use crate::dataplane::DataplaneError;
use crate::model::{AppSpec, DEFAULT_PORT};
use crate::policy::{NetworkPolicy, endpoint_rules, identities};
use crate::state::{PLACEMENTS, POLICIES, Placement};

/// `HM_SERVICES` and `HM_BACKENDS` entries an app's services take on every
/// node: per port, a frontend slot plus one per replica, for the VIP and for
/// each published port; a backend per (replica, port).
fn service_entries(spec: &AppSpec) -> (u64, u64) {
    let ports = spec.ports.len().max(1) as u64;
    let replicas = u64::from(spec.replicas);
    let frontends = ports + spec.publish.len() as u64;
    (frontends * (1 + replicas), ports * replicas)
}

impl Node {
    /// Refuses a deploy whose services would not fit in every node's
    /// service maps next to the other apps'.
    pub(super) fn check_service_limits(&self, spec: &AppSpec) -> Result<(), NodeError> {
        let (mut slots, mut backends) = service_entries(spec);
        for app in self.store.apps()? {
            if app.spec.name != spec.name {
                let (s, b) = service_entries(&app.spec);
                slots += s;
                backends += b;
            }
        }
        let ports = if spec.ports.is_empty() {
            vec![DEFAULT_PORT]
        } else {
            spec.ports.clone()
        };
        if slots > u64::from(MAX_SERVICE_ENTRIES) {
            return Err(NodeError::Limit(format!(
                "app {}: the services of all apps would need {slots} service slots (a slot per \
                 port and published port, plus one per replica of each), more than the \
                 {MAX_SERVICE_ENTRIES} of the data plane's HM_SERVICES map; use fewer replicas \
                 or ports ({} here)",
                spec.name,
                ports.len()
            )));
        }
        if backends > u64::from(MAX_BACKENDS) {
            return Err(NodeError::Limit(format!(
                "app {}: the services of all apps would need {backends} backends (one per \
                 replica and port), more than the {MAX_BACKENDS} of the data plane's \
                 HM_BACKENDS map",
                spec.name
            )));
        }
        Ok(())
    }

    /// Refuses a policy whose rules, with the others', would not fit in the
    /// policy maps of a node (counted over the replicas each node runs), or
    /// whose ports would not fit in one entry.
    pub(super) fn check_policy_limits(&self, policy: &NetworkPolicy) -> Result<(), NodeError> {
        let mut policies: Vec<NetworkPolicy> = self
            .store
            .values(POLICIES)?
            .into_iter()
            .filter(|p| p.name != policy.name)
            .collect();
        policies.push(policy.clone());
        let apps = self.store.apps()?;
        let label_sets: BTreeSet<BTreeMap<String, String>> =
            apps.iter().map(|a| a.spec.labels.clone()).collect();
        let ids = identities(&label_sets);
        let placements: BTreeMap<String, Vec<String>> = self
            .store
            .values::<Placement>(PLACEMENTS)?
            .into_iter()
            .map(|p| (p.app, p.nodes))
            .collect();
        // Per node: (HM_POLICY entries, HM_POLICY_CIDR entries).
        let mut per_node: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for app in &apps {
            let rules = endpoint_rules(&app.spec.labels, &policies, &ids);
            let (identity, cidr) = crate::dataplane::policy_entry_counts(&rules).map_err(|e| {
                let why = match e {
                    DataplaneError::TooManyPortRanges {
                        peer, count, max, ..
                    } => format!(
                        "{peer} needs {count} port ranges, an entry of the data plane's policy \
                         maps holds at most {max}: use fewer, wider ranges"
                    ),
                    other => other.to_string(),
                };
                NodeError::Limit(format!(
                    "policy {}: the rules of app {}'s containers do not fit: {why}",
                    policy.name, app.spec.name
                ))
            })?;
            for node in placements.get(&app.spec.name).into_iter().flatten() {
                let counts = per_node.entry(node.as_str()).or_default();
                counts.0 += identity as u64;
                counts.1 += cidr as u64;
            }
        }
        for (node, (identity, cidr)) in per_node {
            if identity > u64::from(MAX_POLICY_ENTRIES) {
                return Err(NodeError::Limit(format!(
                    "policy {}: node {node}'s containers would need {identity} policy entries, \
                     more than the {MAX_POLICY_ENTRIES} of the data plane's HM_POLICY map",
                    policy.name
                )));
            }
            if cidr > u64::from(MAX_POLICY_CIDR_ENTRIES) {
                return Err(NodeError::Limit(format!(
                    "policy {}: node {node}'s containers would need {cidr} CIDR rule entries \
                     (ip_block peers), more than the {MAX_POLICY_CIDR_ENTRIES} of the data \
                     plane's HM_POLICY_CIDR map; use fewer or wider blocks",
                    policy.name
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_count_a_slot_per_port_and_replica() {
        let request: crate::contract::DeployRequest = serde_json::from_value(serde_json::json!({
            "name": "web", "image": "x", "replicas": 3, "ports": [80, 8080],
        }))
        .unwrap();
        let mut spec = request.validate().unwrap();
        assert_eq!(service_entries(&spec), (2 * 4, 2 * 3));
        spec.ports.clear();
        assert_eq!(service_entries(&spec), (4, 3), "the default port");
    }
}
