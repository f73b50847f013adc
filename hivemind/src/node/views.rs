//! Cluster-wide views for the API: an app's replicas counted on every node,
//! and where a container lives when it is not on this node. Both come from
//! the records every node publishes (`endpoints`, `nodes`), so any node
//! answers for the whole cluster.

use std::collections::BTreeMap;

use super::{Node, NodeError};
use crate::state::{ContainerStatus, ENDPOINTS, EndpointRecord, NODES, NodeInfo};

/// An app's replicas across the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaCount {
    /// Containers of the current generation whose process runs.
    pub running: u32,
    /// Of those, the ones that serve (ready).
    pub ready: u32,
    /// Containers that could not start.
    pub failed: u32,
    /// Every container of the app, on any node, by id.
    pub containers: Vec<String>,
}

/// Where a container of another node is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub node_id: String,
    /// That node's API address (`ip:port`).
    pub api: String,
}

/// How this node calls other nodes' APIs: over HTTPS trusting the cluster's
/// CA (and the usual roots, for nodes with `--tls-cert`), or plain HTTP
/// where there is no cluster TLS.
#[derive(Clone)]
pub struct PeerApi {
    client: reqwest::Client,
    scheme: &'static str,
}

impl PeerApi {
    pub fn url(&self, api: &str, path: &str) -> String {
        format!("{}://{api}{path}", self.scheme)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

/// How long a node waits for another's API to accept a connection.
const PEER_CONNECT: std::time::Duration = std::time::Duration::from_secs(3);

impl Node {
    /// The client for other nodes' APIs (made once: the CA does not change).
    pub fn peer_api(&self) -> PeerApi {
        self.peer_api.get_or_init(|| self.new_peer_api()).clone()
    }

    fn new_peer_api(&self) -> PeerApi {
        let builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(PEER_CONNECT);
        let ca = self
            .cluster
            .as_ref()
            .and_then(|c| c.tls())
            .map(|tls| tls.ca_pem())
            .and_then(|pem| reqwest::Certificate::from_pem(pem.as_bytes()).ok());
        let (builder, scheme) = match ca {
            Some(ca) => (builder.add_root_certificate(ca), "https"),
            None => (builder, "http"),
        };
        PeerApi {
            client: builder.build().unwrap_or_default(),
            scheme,
        }
    }

    /// The replicas of every app, cluster-wide, from the endpoint records
    /// every node publishes for its containers.
    pub fn replica_counts(&self) -> Result<BTreeMap<String, ReplicaCount>, NodeError> {
        let generations: BTreeMap<String, u64> = self
            .store
            .apps()?
            .into_iter()
            .map(|a| (a.spec.name, a.generation))
            .collect();
        let mut counts: BTreeMap<String, ReplicaCount> = BTreeMap::new();
        for endpoint in self.store.values(ENDPOINTS)? {
            let current = generations.get(&endpoint.app).is_none_or(|g| {
                // Records of nodes that do not say their generation count.
                endpoint.generation == 0 || endpoint.generation == *g
            });
            let count = counts.entry(endpoint.app.clone()).or_default();
            count.containers.push(endpoint.container.clone());
            match endpoint.status {
                ContainerStatus::Running if current => {
                    count.running += 1;
                    count.ready += u32::from(endpoint.ready);
                }
                ContainerStatus::Failed => count.failed += 1,
                _ => {}
            }
        }
        Ok(counts)
    }

    /// The containers of `app` on other nodes, with where to reach them.
    pub fn remote_containers(&self, app: &str) -> Result<Vec<(String, Remote)>, NodeError> {
        let endpoints: Vec<EndpointRecord> = self.store.values(ENDPOINTS)?;
        let nodes: Vec<NodeInfo> = self.store.values(NODES)?;
        Ok(endpoints
            .into_iter()
            .filter(|e| e.app == app && e.node_id != self.id)
            .filter_map(|e| {
                let remote = remote_of(&nodes, &e)?;
                Some((e.container, remote))
            })
            .collect())
    }

    /// Where container `id` lives when it is not on this node; `None` when
    /// it is here or unknown.
    pub fn remote_container(&self, id: &str) -> Result<Option<Remote>, NodeError> {
        if self.store.container(id)?.is_some() {
            return Ok(None);
        }
        let Some(endpoint) = self.store.value(ENDPOINTS, id)? else {
            return Ok(None);
        };
        if endpoint.node_id == self.id {
            return Ok(None);
        }
        let nodes: Vec<NodeInfo> = self.store.values(NODES)?;
        Ok(remote_of(&nodes, &endpoint))
    }
}

fn remote_of(nodes: &[NodeInfo], endpoint: &EndpointRecord) -> Option<Remote> {
    nodes
        .iter()
        .find(|n| n.id == endpoint.node_id)
        .map(|n| Remote {
            node_id: n.id.clone(),
            api: n.api.clone(),
        })
}
