//! `hivemind debug`: this node's data-plane maps decoded with names (containers, apps,
//! identities, reasons), and policy traces computed from the maps the programs read, not from
//! the replicated copy of the policies.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use hivemind_common::{DIR_FROM_CONTAINER, DIR_TO_CONTAINER, ct_flags, ct_scope, identity};
use serde_json::{Value, json};

use super::apps::endpoint_id;
use super::{Node, NodeError, lock, protocol_name};
use crate::contract::{DebugTable, MapFill, TraceCheck};
use crate::dataplane::PolicyDecision;
use crate::policy::{NetworkPolicy, identities};
use crate::state::{AppRecord, ContainerRecord, POLICIES};

/// The tables `debug bpf` shows and the maps behind each.
pub const TABLES: [(&str, &[&str]); 8] = [
    ("endpoints", &["HM_ENDPOINTS"]),
    ("ipcache", &["HM_IPCACHE"]),
    ("tunnels", &["HM_TUNNELS"]),
    ("services", &["HM_SERVICES"]),
    ("backends", &["HM_BACKENDS"]),
    ("conntrack", &["HM_CT"]),
    ("nat", &["HM_NAT"]),
    ("policy", &["HM_POLICY", "HM_POLICY_CIDR"]),
];

/// Most rows one table answer holds (conntrack can hold far more).
pub const MAX_ROWS: usize = 5000;

/// What a trace asks: traffic from a set of addresses to another, to a port over a protocol.
#[derive(Debug, Clone)]
pub struct TraceRequest {
    pub from: Vec<Ipv4Addr>,
    pub to: Vec<Ipv4Addr>,
    pub proto: u8,
    pub port: u16,
}

/// Names of identities: the apps whose labels make each one.
fn identity_names(apps: &[AppRecord]) -> BTreeMap<u32, String> {
    let sets: BTreeSet<BTreeMap<String, String>> =
        apps.iter().map(|a| a.spec.labels.clone()).collect();
    let ids = identities(&sets);
    let mut names: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for app in apps {
        if let Some(id) = ids.get(&app.spec.labels) {
            names.entry(*id).or_default().push(&app.spec.name);
        }
    }
    let mut out: BTreeMap<u32, String> = names
        .into_iter()
        .map(|(id, apps)| (id, apps.join(",")))
        .collect();
    out.insert(identity::HOST, "host".into());
    out.insert(identity::WORLD, "world".into());
    out.insert(identity::ANY, "any".into());
    out
}

fn ip(value: u32) -> Ipv4Addr {
    Ipv4Addr::from(value.to_ne_bytes())
}

fn scope_name(scope: u8) -> &'static str {
    match scope {
        ct_scope::SERVICE => "service",
        ct_scope::EGRESS => "egress",
        ct_scope::INGRESS => "ingress",
        _ => "unknown",
    }
}

fn ct_flag_names(flags: u8) -> Vec<&'static str> {
    [
        (ct_flags::SERVICE, "service"),
        (ct_flags::REPLY, "reply"),
        (ct_flags::HAIRPIN, "hairpin"),
        (ct_flags::SNAT, "snat"),
    ]
    .into_iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

fn direction_name(direction: u8) -> &'static str {
    if direction == DIR_FROM_CONTAINER {
        "egress"
    } else {
        "ingress"
    }
}

fn ranges(entry: &hivemind_common::PolicyEntry) -> String {
    entry.ranges[..(entry.count as usize).min(entry.ranges.len())]
        .iter()
        .map(|r| {
            if r.min == r.max {
                r.min.to_string()
            } else {
                format!("{}-{}", r.min, r.max)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Node {
    /// This node's `table`, its rows filtered to those that mention `container` (a container
    /// id, or its address) when given. `None` without a data plane.
    pub fn debug_table(
        &self,
        table: &str,
        container: Option<&str>,
    ) -> Result<Option<DebugTable>, NodeError> {
        let Some(dataplane) = &self.dataplane else {
            return Ok(None);
        };
        let maps = TABLES
            .iter()
            .find(|(name, _)| *name == table)
            .map(|(_, maps)| *maps)
            .unwrap_or_default();
        let apps: Vec<AppRecord> = self.store.apps()?;
        let identity_name = identity_names(&apps);
        let name_of = |id: u32| identity_name.get(&id).cloned();
        let addresses = self.flow_map_names();
        let address_name = |a: Ipv4Addr| addresses.get(&a).cloned();
        let services: BTreeMap<Ipv4Addr, String> = self
            .store
            .values::<crate::state::ServiceRecord>(crate::state::SERVICES)?
            .into_iter()
            .map(|s| (s.vip, s.app))
            .collect();
        let containers: Vec<ContainerRecord> = self.store.containers()?;
        let by_endpoint: BTreeMap<u32, &ContainerRecord> =
            containers.iter().map(|c| (endpoint_id(c), c)).collect();
        let owner = |id: u32| by_endpoint.get(&id).map(|c| (c.id.clone(), c.app.clone()));
        let rows: Vec<Value> = {
            let dp = lock(dataplane);
            match table {
                "endpoints" => dp
                    .endpoint_entries()?
                    .into_iter()
                    .map(|(ifindex, info)| {
                        let (container, app) = owner(info.endpoint_id).unzip();
                        json!({
                            "ifindex": ifindex, "endpoint_id": info.endpoint_id,
                            "container": container, "app": app, "ip": ip(info.ip),
                            "identity": info.identity, "identity_name": name_of(info.identity),
                            "ingress_enforced": info.flags & hivemind_common::endpoint_flags::INGRESS_ENFORCED != 0,
                            "egress_enforced": info.flags & hivemind_common::endpoint_flags::EGRESS_ENFORCED != 0,
                        })
                    })
                    .collect(),
                "ipcache" => dp
                    .ipcache()?
                    .into_iter()
                    .map(|(addr, entry)| {
                        json!({
                            "address": addr, "identity": entry.identity,
                            "identity_name": name_of(entry.identity), "name": address_name(addr),
                            "tunnel_endpoint": entry.tunnel_endpoint,
                        })
                    })
                    .collect(),
                "tunnels" => dp
                    .tunnels()?
                    .into_iter()
                    .map(|(subnet, prefix, underlay, vni)| {
                        json!({
                            "subnet": format!("{subnet}/{prefix}"), "underlay": underlay,
                            "vni": vni,
                            "node": address_name(underlay).map(|n| n.trim_start_matches("node ").to_string()),
                        })
                    })
                    .collect(),
                "services" => {
                    let backends: BTreeMap<u32, hivemind_common::Backend> =
                        dp.backend_entries()?.into_iter().collect();
                    dp.services()?
                        .into_iter()
                        .map(|(vip, port, proto, ids)| {
                            let to: Vec<String> = ids
                                .iter()
                                .map(|id| match backends.get(id) {
                                    Some(b) => format!("{}:{}", ip(b.ip), u16::from_be(b.port)),
                                    None => format!("#{id} (missing)"),
                                })
                                .collect();
                            json!({
                                "vip": vip, "port": port, "protocol": protocol_name(proto),
                                "app": services.get(&vip), "slots": ids.len(), "backend_ids": ids,
                                "backends": to,
                            })
                        })
                        .collect()
                }
                "backends" => dp
                    .backend_entries()?
                    .into_iter()
                    .map(|(id, b)| {
                        json!({
                            "id": id, "ip": ip(b.ip), "port": u16::from_be(b.port),
                            "protocol": protocol_name(b.proto), "app": address_name(ip(b.ip)),
                        })
                    })
                    .collect(),
                "conntrack" => dp
                    .conntrack()?
                    .into_iter()
                    .map(|(k, v)| {
                        let (container, app) = owner(v.owner).unzip();
                        json!({
                            "scope": scope_name(k.scope), "protocol": protocol_name(k.proto),
                            "src": ip(k.saddr), "sport": u16::from_be(k.sport),
                            "dst": ip(k.daddr), "dport": u16::from_be(k.dport),
                            "flags": ct_flag_names(v.flags), "backend_id": v.backend_id,
                            "owner": v.owner, "container": container, "app": app,
                        })
                    })
                    .collect(),
                "nat" => dp
                    .nat_mappings()?
                    .into_iter()
                    .map(|m| {
                        json!({
                            "protocol": protocol_name(m.proto), "container": m.container,
                            "app": address_name(m.container), "container_port": m.container_port,
                            "remote": m.remote, "remote_port": m.remote_port,
                            "nat_port": m.nat_port, "closing": m.closing,
                        })
                    })
                    .collect(),
                "policy" => {
                    let mut rows: Vec<Value> = dp
                        .policy_entries()?
                        .into_iter()
                        .map(|(k, entry)| {
                            let (container, app) = owner(k.endpoint_id).unzip();
                            json!({
                                "endpoint_id": k.endpoint_id, "container": container, "app": app,
                                "direction": direction_name(k.direction),
                                "peer": format!("identity {}", k.identity),
                                "peer_name": name_of(k.identity),
                                "protocol": if k.proto == 0 { "any".to_string() } else { protocol_name(k.proto) },
                                "ports": ranges(&entry),
                            })
                        })
                        .collect();
                    rows.extend(dp.policy_cidr_entries()?.into_iter().map(|(k, prefix, entry)| {
                        let (container, app) = owner(k.endpoint_id).unzip();
                        json!({
                            "endpoint_id": k.endpoint_id, "container": container, "app": app,
                            "direction": direction_name(k.direction),
                            "peer": format!("{}/{prefix}", ip(k.addr)),
                            "peer_name": Value::Null,
                            "protocol": if k.proto == 0 { "any".to_string() } else { protocol_name(k.proto) },
                            "ports": ranges(&entry),
                        })
                    }));
                    rows
                }
                _ => Vec::new(),
            }
        };
        let wanted: Option<Vec<String>> = container.map(|c| {
            containers
                .iter()
                .filter(|r| r.id == c || r.id.starts_with(c) || r.ip.to_string() == c)
                .flat_map(|r| [r.id.clone(), r.ip.to_string()])
                .chain(std::iter::once(c.to_string()))
                .collect()
        });
        let mut rows: Vec<Value> = rows
            .into_iter()
            .filter(|row| {
                wanted.as_ref().is_none_or(|wanted| {
                    row.as_object().is_some_and(|fields| {
                        fields
                            .values()
                            .any(|v| v.as_str().is_some_and(|s| wanted.iter().any(|w| w == s)))
                    })
                })
            })
            .collect();
        let truncated = rows.len() > MAX_ROWS;
        rows.truncate(MAX_ROWS);
        let maps = self
            .map_pressure()
            .into_iter()
            .filter(|p| maps.contains(&p.map))
            .map(|p| MapFill {
                map: p.map.to_string(),
                entries: p.entries as u64,
                capacity: p.capacity,
            })
            .collect();
        Ok(Some(DebugTable {
            node: self.name().to_string(),
            table: table.to_string(),
            maps,
            rows,
            truncated,
        }))
    }

    /// The checks this node's maps make for `request`: the egress check of each local
    /// container among the sources, for each destination, and the ingress check of each local
    /// container among the destinations, for each source.
    pub fn policy_trace(&self, request: &TraceRequest) -> Result<Vec<TraceCheck>, NodeError> {
        let Some(dataplane) = &self.dataplane else {
            return Ok(Vec::new());
        };
        let containers: Vec<ContainerRecord> = self.store.containers()?;
        let apps: Vec<AppRecord> = self.store.apps()?;
        let policies: Vec<NetworkPolicy> = self.store.values(POLICIES)?;
        let selecting = |app: &str, egress: bool| -> Vec<String> {
            let Some(labels) = apps
                .iter()
                .find(|a| a.spec.name == app)
                .map(|a| &a.spec.labels)
            else {
                return Vec::new();
            };
            policies
                .iter()
                .filter(|p| {
                    p.selector.matches(labels)
                        && if egress {
                            p.egress_rules.is_some()
                        } else {
                            p.ingress_rules.is_some()
                        }
                })
                .map(|p| p.name.clone())
                .collect()
        };
        let names = self.flow_map_names();
        let gateway = self.subnet_gateway();
        let dp = lock(dataplane);
        let infos: BTreeMap<u32, hivemind_common::EndpointInfo> = dp
            .endpoint_entries()?
            .into_iter()
            .map(|(_, info)| (info.endpoint_id, info))
            .collect();
        let mut checks = Vec::new();
        for container in &containers {
            let Some(info) = infos.get(&endpoint_id(container)) else {
                continue;
            };
            for (direction, peers, egress) in [
                (DIR_FROM_CONTAINER, &request.to, true),
                (DIR_TO_CONTAINER, &request.from, false),
            ] {
                let own = if egress { &request.from } else { &request.to };
                if !own.contains(&container.ip) {
                    continue;
                }
                for peer in peers.iter().filter(|p| **p != container.ip) {
                    let peer_identity = dp.identity_of(*peer, gateway);
                    let decision = dp.policy_decision(
                        info,
                        direction,
                        peer_identity,
                        *peer,
                        request.proto,
                        request.port,
                        gateway,
                    )?;
                    checks.push(TraceCheck {
                        node: self.name().to_string(),
                        container: container.id.clone(),
                        app: container.app.clone(),
                        direction: direction_name(direction).to_string(),
                        peer: *peer,
                        peer_name: names.get(peer).cloned(),
                        peer_identity,
                        allowed: decision.allows(),
                        decided_by: describe(&decision, request.proto),
                        policies: selecting(&container.app, egress),
                    });
                }
            }
        }
        Ok(checks)
    }
}

/// A decision in the maps' terms.
fn describe(decision: &PolicyDecision, proto: u8) -> String {
    let protocol = |p: u8| {
        if p == 0 {
            "any protocol".to_string()
        } else {
            protocol_name(p)
        }
    };
    match decision {
        PolicyDecision::NotEnforced => {
            "no policy selects the container in this direction: everything passes".into()
        }
        PolicyDecision::DnsToNode => "DNS to the node's resolver is always allowed".into(),
        PolicyDecision::Identity { identity, proto } => format!(
            "HM_POLICY allows {} over {}",
            if *identity == identity::ANY {
                "any peer".to_string()
            } else {
                format!("identity {identity}")
            },
            protocol(*proto)
        ),
        PolicyDecision::Cidr {
            network,
            prefix,
            proto,
        } => format!(
            "HM_POLICY_CIDR allows {network}/{prefix} over {}",
            protocol(*proto)
        ),
        PolicyDecision::NoRule => format!(
            "no HM_POLICY or HM_POLICY_CIDR entry allows this peer on {} to this port: \
             drop_policy",
            protocol(proto)
        ),
    }
}

impl Node {
    /// The policy identity of `app`'s containers, `None` for an app that does not exist.
    pub fn app_identity(&self, app: &str) -> Result<Option<u32>, NodeError> {
        let apps: Vec<AppRecord> = self.store.apps()?;
        let Some(labels) = apps
            .iter()
            .find(|a| a.spec.name == app)
            .map(|a| &a.spec.labels)
        else {
            return Ok(None);
        };
        let sets: BTreeSet<BTreeMap<String, String>> =
            apps.iter().map(|a| a.spec.labels.clone()).collect();
        Ok(identities(&sets).get(labels).copied())
    }

    /// This node's gateway address on its bridge (the identity `host` where the ipcache has no
    /// entry), when it has a subnet.
    fn subnet_gateway(&self) -> Option<Ipv4Addr> {
        let nodes: Vec<crate::state::NodeInfo> =
            self.store.values(crate::state::NODES).unwrap_or_default();
        nodes
            .into_iter()
            .find(|n| n.id == self.id())
            .map(|n| n.subnet.gateway())
    }
}
