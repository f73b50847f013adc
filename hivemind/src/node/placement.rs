//! Which node runs which replica. Each app is placed by exactly one live
//! node, its owner by rendezvous hashing over the live members, so no leader
//! election is needed and a dead owner's apps move to another owner.

use std::collections::BTreeMap;

use super::{Node, NodeError};
use crate::cluster::{Member, MemberState, rendezvous_owner};
use crate::model::AppSpec;
use crate::scheduler::{BinPack, NodeView, PlacementRequest, SchedulingStrategy, Spread, place};
use crate::state::{AppRecord, NODES, NodeInfo, PLACEMENTS, Placement};

impl Node {
    /// Ids of the live members (this node alone without a cluster).
    pub fn live_ids(&self) -> Vec<String> {
        match &self.cluster {
            Some(cluster) => cluster.live_members().into_iter().map(|m| m.id).collect(),
            None => vec![self.id.clone()],
        }
    }

    /// The name of the node that places `app` and drives its rollouts (its owner among the live
    /// members), as this node sees the cluster.
    pub fn owner_name(&self, app: &str) -> Result<Option<String>, NodeError> {
        let Some(cluster) = &self.cluster else {
            return Ok(Some(self.name.clone()));
        };
        let live: Vec<Member> = cluster.live_members();
        let Some(owner) = rendezvous_owner(app, &live) else {
            return Ok(None);
        };
        let nodes: Vec<NodeInfo> = self.store.values(NODES)?;
        Ok(nodes.into_iter().find(|n| n.id == owner.id).map(|n| n.name))
    }

    /// Whether this node places `app`.
    pub fn owns(&self, app: &str) -> bool {
        let Some(cluster) = &self.cluster else {
            return true;
        };
        let live: Vec<Member> = cluster.live_members();
        rendezvous_owner(app, &live).is_some_and(|m| m.is_self)
    }

    /// How many replicas of `app` this node should run.
    pub fn local_replicas(&self, app: &AppRecord) -> Result<usize, NodeError> {
        let nodes = self.placement_nodes(&app.spec.name)?;
        Ok(nodes.iter().filter(|n| **n == self.id).count())
    }

    /// The node of each replica of `app`, as its placement lists them.
    pub fn placement_nodes(&self, app: &str) -> Result<Vec<String>, NodeError> {
        let placement: Option<Placement> = self.store.value(PLACEMENTS, app)?;
        Ok(placement.map(|p| p.nodes).unwrap_or_default())
    }

    /// How many replicas of `app`'s current generation this node runs, and, while a rollout's
    /// quotas bind, how many of older generations it keeps.
    pub fn local_quotas(&self, app: &AppRecord) -> Result<(usize, Option<usize>), NodeError> {
        let Some(quotas) = app.active_rollout().and_then(|r| r.quotas) else {
            return Ok((self.local_replicas(app)?, None));
        };
        let nodes = self.placement_nodes(&app.spec.name)?;
        let (new, old) = crate::rollout::local_quotas(&nodes, &self.id, quotas);
        Ok((new, Some(old)))
    }

    /// The placement of `spec` when this node owns it; `None` otherwise.
    pub fn placement_if_owner(&self, spec: &AppSpec) -> Result<Option<Placement>, NodeError> {
        if !self.owns(&spec.name) {
            return Ok(None);
        }
        Ok(Some(self.compute_placement(spec)?))
    }

    fn compute_placement(&self, spec: &AppSpec) -> Result<Placement, NodeError> {
        let live = self.live_ids();
        let nodes: Vec<NodeInfo> = self
            .store
            .values::<NodeInfo>(NODES)?
            .into_iter()
            .filter(|n| live.contains(&n.id))
            .collect();
        // What other apps' replicas already take on each node.
        let mut used: BTreeMap<String, (f64, u64)> = BTreeMap::new();
        let apps: BTreeMap<String, AppRecord> = self
            .store
            .apps()?
            .into_iter()
            .map(|a| (a.spec.name.clone(), a))
            .collect();
        for placement in self.store.values::<Placement>(PLACEMENTS)? {
            if placement.app == spec.name {
                continue;
            }
            let Some(app) = apps.get(&placement.app) else {
                continue;
            };
            for node in placement.nodes {
                let entry = used.entry(node).or_default();
                entry.0 += app.spec.resources.cpu.unwrap_or(0.0);
                entry.1 += app.spec.resources.memory.unwrap_or(0);
            }
        }
        let views: Vec<NodeView> = nodes
            .iter()
            .map(|n| {
                let (cpu_used, memory_used) = used.get(&n.id).copied().unwrap_or_default();
                NodeView {
                    id: n.id.clone(),
                    name: n.name.clone(),
                    labels: n.labels.clone(),
                    cpu_cores: n.cpu_cores,
                    memory_bytes: n.memory_bytes,
                    cpu_used,
                    memory_used,
                }
            })
            .collect();
        let existing: Vec<String> = self
            .store
            .value::<Placement>(PLACEMENTS, &spec.name)?
            .map(|p| p.nodes)
            .unwrap_or_default();
        let request = PlacementRequest {
            app: spec.name.clone(),
            replicas: spec.replicas,
            cpu: spec.resources.cpu.unwrap_or(0.0),
            memory: spec.resources.memory.unwrap_or(0),
            node: spec.node.clone(),
            node_labels: spec.constraints.clone(),
        };
        let strategy: &dyn SchedulingStrategy = match spec.placement {
            crate::model::Placement::Spread => &Spread,
            crate::model::Placement::Binpack => &BinPack,
        };
        let nodes = place(&request, &views, &existing, strategy)?;
        Ok(Placement {
            app: spec.name.clone(),
            nodes,
        })
    }

    /// Re-places the apps this node owns when nodes came or went; removes
    /// placements of deleted apps.
    pub async fn reconcile_placements(&self) -> Result<(), NodeError> {
        let apps: Vec<AppRecord> = self.store.apps()?;
        for app in &apps {
            if !self.owns(&app.spec.name) {
                continue;
            }
            let current: Option<Placement> = self.store.value(PLACEMENTS, &app.spec.name)?;
            match self.compute_placement(&app.spec) {
                Ok(placement) if current.as_ref() != Some(&placement) => {
                    tracing::info!(app = %app.spec.name, nodes = ?placement.nodes, "placing replicas");
                    self.write(PLACEMENTS, &app.spec.name, Some(&placement))
                        .await?;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(app = %app.spec.name, error = %e, "cannot place"),
            }
        }
        for placement in self.store.values::<Placement>(PLACEMENTS)? {
            if !apps.iter().any(|a| a.spec.name == placement.app) && self.owns(&placement.app) {
                self.write::<Placement>(PLACEMENTS, &placement.app, None)
                    .await?;
            }
        }
        Ok(())
    }

    /// Membership state of a node id, as this node sees it.
    pub fn member_state(&self, id: &str) -> Option<MemberState> {
        match &self.cluster {
            Some(cluster) => cluster
                .members()
                .into_iter()
                .find(|m| m.id == id)
                .map(|m| m.state),
            None => (id == self.id).then_some(MemberState::Alive),
        }
    }
}
