//! The service map: who talks to whom, from the flow events of the data plane. Each node
//! counts, per (source address, destination address, verdict), the new flows its policy code
//! allowed and the packets it denied, with the second it last saw one; `GET /api/flows/map`
//! gathers every node's and names the addresses (apps, nodes, the outside).
//!
//! A flow between two containers is seen twice (leaving one, entering the other): only the
//! entering side counts it, and the leaving side counts only flows to what is no container.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Node, lock};
use crate::dataplane::FlowEvent;

/// Most address pairs one node keeps; the least recently seen go first.
const MAX_EDGES: usize = 10_000;
/// Seconds an address pair is kept without a new event.
const KEEP_S: u64 = 900;

/// One address pair and verdict as a node counted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AddressEdge {
    #[schema(value_type = String)]
    pub src: Ipv4Addr,
    #[schema(value_type = String)]
    pub dst: Ipv4Addr,
    /// `allowed` or `denied`.
    pub verdict: String,
    /// New flows (allowed) or denied packets (at most one a second per connection).
    pub count: u64,
    /// When the last one was seen, in seconds since the epoch.
    pub last_seen: u64,
}

/// The counts of one node.
#[derive(Debug, Default)]
pub struct FlowEdges {
    edges: BTreeMap<(Ipv4Addr, Ipv4Addr, &'static str), (u64, u64)>,
}

impl FlowEdges {
    /// Counts `events` seen at second `now`; `containers` are the addresses of every container
    /// of the cluster.
    pub fn count(&mut self, events: &[FlowEvent], containers: &HashSet<Ipv4Addr>, now: u64) {
        for event in events {
            let entering = event.direction == "ingress";
            if !entering && containers.contains(&event.dst) {
                continue;
            }
            let entry = self
                .edges
                .entry((event.src, event.dst, event.verdict))
                .or_default();
            entry.0 += 1;
            entry.1 = now;
        }
        self.edges
            .retain(|_, (_, last)| now.saturating_sub(*last) <= KEEP_S);
        if self.edges.len() > MAX_EDGES {
            let mut by_age: Vec<u64> = self.edges.values().map(|(_, last)| *last).collect();
            by_age.sort_unstable();
            let cutoff = by_age[self.edges.len() - MAX_EDGES];
            self.edges.retain(|_, (_, last)| *last > cutoff);
        }
    }

    /// The pairs seen at or after `since`.
    pub fn since(&self, since: u64) -> Vec<AddressEdge> {
        self.edges
            .iter()
            .filter(|(_, (_, last))| *last >= since)
            .map(|((src, dst, verdict), (count, last))| AddressEdge {
                src: *src,
                dst: *dst,
                verdict: verdict.to_string(),
                count: *count,
                last_seen: *last,
            })
            .collect()
    }
}

/// An edge of the map: from one named peer to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MapEdge {
    /// An app, `node <name>` (a node itself) or `world` (outside the cluster).
    pub from: String,
    pub to: String,
    pub verdict: String,
    pub count: u64,
    pub last_seen: u64,
}

/// Names the addresses of `edges` and sums the edges that then coincide: `names` maps
/// container addresses to apps and gateway addresses to nodes; anything else is `world`.
pub fn name_edges(edges: Vec<AddressEdge>, names: &BTreeMap<Ipv4Addr, String>) -> Vec<MapEdge> {
    let name = |ip: &Ipv4Addr| {
        names
            .get(ip)
            .cloned()
            .unwrap_or_else(|| "world".to_string())
    };
    let mut sums: BTreeMap<(String, String, String), (u64, u64)> = BTreeMap::new();
    for edge in edges {
        let sum = sums
            .entry((name(&edge.src), name(&edge.dst), edge.verdict))
            .or_default();
        sum.0 += edge.count;
        sum.1 = sum.1.max(edge.last_seen);
    }
    sums.into_iter()
        .map(|((from, to, verdict), (count, last_seen))| MapEdge {
            from,
            to,
            verdict,
            count,
            last_seen,
        })
        .collect()
}

impl Node {
    /// Counts a batch of flow events for the map.
    pub(super) fn count_flow_edges(&self, events: &[FlowEvent]) {
        let containers: HashSet<Ipv4Addr> = self
            .store
            .values::<crate::state::EndpointRecord>(crate::state::ENDPOINTS)
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.ip)
            .collect();
        lock(&self.flow_edges).count(events, &containers, crate::state::now_secs());
    }

    /// This node's address pairs seen since `since`.
    pub fn flow_edges_since(&self, since: u64) -> Vec<AddressEdge> {
        lock(&self.flow_edges).since(since)
    }

    /// Names for the map: container addresses -> app, node gateways -> `node <name>`.
    pub fn flow_map_names(&self) -> BTreeMap<Ipv4Addr, String> {
        let mut names = BTreeMap::new();
        let nodes: Vec<crate::state::NodeInfo> =
            self.store.values(crate::state::NODES).unwrap_or_default();
        for node in nodes {
            names.insert(node.subnet.gateway(), format!("node {}", node.name));
            names.insert(node.underlay, format!("node {}", node.name));
        }
        let endpoints: Vec<crate::state::EndpointRecord> = self
            .store
            .values(crate::state::ENDPOINTS)
            .unwrap_or_default();
        for endpoint in endpoints {
            names.insert(endpoint.ip, endpoint.app);
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::FlowReason;

    fn event(
        src: [u8; 4],
        dst: [u8; 4],
        direction: &'static str,
        verdict: &'static str,
    ) -> FlowEvent {
        FlowEvent {
            time_ns: 0,
            src: Ipv4Addr::from(src),
            dst: Ipv4Addr::from(dst),
            sport: 40000,
            dport: 80,
            proto: 6,
            endpoint_id: 0,
            direction,
            peer_identity: 0,
            verdict,
            reason: FlowReason {
                code: 0,
                name: "forwarded",
            },
        }
    }

    #[test]
    fn a_flow_between_containers_counts_once_and_names_sum_up() {
        let (web1, web2, db, outside) = ([10, 0, 0, 2], [10, 0, 1, 2], [10, 0, 0, 3], [8, 8, 8, 8]);
        let containers: HashSet<Ipv4Addr> = [web1, web2, db].map(Ipv4Addr::from).into();
        let mut edges = FlowEdges::default();
        edges.count(
            &[
                event(web1, db, "egress", "allowed"),
                event(web1, db, "ingress", "allowed"),
                event(web2, db, "ingress", "allowed"),
                event(web1, outside, "egress", "allowed"),
                event(db, web1, "ingress", "denied"),
            ],
            &containers,
            100,
        );
        let names = BTreeMap::from([
            (Ipv4Addr::from(web1), "web".to_string()),
            (Ipv4Addr::from(web2), "web".to_string()),
            (Ipv4Addr::from(db), "db".to_string()),
        ]);
        let map = name_edges(edges.since(0), &names);
        let find = |from: &str, to: &str, verdict: &str| {
            map.iter()
                .find(|e| e.from == from && e.to == to && e.verdict == verdict)
                .map(|e| e.count)
        };
        assert_eq!(find("web", "db", "allowed"), Some(2), "{map:?}");
        assert_eq!(find("web", "world", "allowed"), Some(1));
        assert_eq!(find("db", "web", "denied"), Some(1));
        assert_eq!(map.len(), 3);
        // Idle pairs go after 15 minutes.
        edges.count(&[], &containers, 100 + KEEP_S + 1);
        assert!(edges.since(0).is_empty());
    }
}
