//! Placement of an app's replicas on nodes, by free cpu and memory.
//!
//! Placement is stable: replicas already on a live node that can hold them
//! stay there; only missing replicas are placed. Strategies are a trait so a
//! custom one can be plugged in, as the reference guide describes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub cpu_cores: f64,
    pub memory_bytes: u64,
    /// Already promised to replicas of other apps.
    pub cpu_used: f64,
    pub memory_used: u64,
}

/// What one app asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementRequest {
    pub app: String,
    pub replicas: u32,
    /// CPUs and bytes per replica; 0 when unlimited.
    pub cpu: f64,
    pub memory: u64,
    /// Only this node (by id or name).
    pub node: Option<String>,
    /// Only nodes carrying all these labels.
    pub node_labels: BTreeMap<String, String>,
}

/// A candidate with what placing one more replica there would leave.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<'a> {
    pub node: &'a NodeView,
    /// Replicas of this app already placed on the node.
    pub replicas_here: u32,
    pub cpu_free: f64,
    pub memory_free: u64,
}

pub trait SchedulingStrategy: Send + Sync {
    /// Picks the index of the candidate for the next replica; every
    /// candidate can hold it.
    fn select_node(
        &self,
        request: &PlacementRequest,
        candidates: &[Candidate<'_>],
    ) -> Option<usize>;
}

/// Fewest replicas of the app first, then the most free memory and cpu.
pub struct Spread;
/// The fullest node that still fits first, to keep others empty.
pub struct BinPack;

fn free_fraction(c: &Candidate<'_>) -> f64 {
    let memory = if c.node.memory_bytes == 0 {
        0.0
    } else {
        c.memory_free as f64 / c.node.memory_bytes as f64
    };
    let cpu = if c.node.cpu_cores <= 0.0 {
        0.0
    } else {
        c.cpu_free / c.node.cpu_cores
    };
    memory + cpu
}

impl SchedulingStrategy for Spread {
    fn select_node(
        &self,
        _request: &PlacementRequest,
        candidates: &[Candidate<'_>],
    ) -> Option<usize> {
        (0..candidates.len()).min_by(|&a, &b| {
            let (a, b) = (&candidates[a], &candidates[b]);
            a.replicas_here
                .cmp(&b.replicas_here)
                .then(free_fraction(b).total_cmp(&free_fraction(a)))
                .then(a.node.id.cmp(&b.node.id))
        })
    }
}

impl SchedulingStrategy for BinPack {
    fn select_node(
        &self,
        _request: &PlacementRequest,
        candidates: &[Candidate<'_>],
    ) -> Option<usize> {
        (0..candidates.len()).min_by(|&a, &b| {
            let (a, b) = (&candidates[a], &candidates[b]);
            free_fraction(a)
                .total_cmp(&free_fraction(b))
                .then(a.node.id.cmp(&b.node.id))
        })
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("no node can run replica {replica} of {app}: {reason}")]
    NoCapacity {
        app: String,
        replica: u32,
        reason: String,
    },
}

/// Returns the node id of every replica. `existing` is the node of each
/// replica placed before; those on nodes still in `nodes` (and matching the
/// constraints) are kept first.
pub fn place(
    request: &PlacementRequest,
    nodes: &[NodeView],
    existing: &[String],
    strategy: &dyn SchedulingStrategy,
) -> Result<Vec<String>, ScheduleError> {
    let eligible: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| {
            request
                .node
                .as_ref()
                .is_none_or(|wanted| *wanted == n.id || *wanted == n.name)
                && request
                    .node_labels
                    .iter()
                    .all(|(k, v)| n.labels.get(k) == Some(v))
        })
        .collect();
    let mut state: Vec<Candidate<'_>> = eligible
        .iter()
        .map(|n| Candidate {
            node: n,
            replicas_here: 0,
            cpu_free: n.cpu_cores - n.cpu_used,
            memory_free: n.memory_bytes.saturating_sub(n.memory_used),
        })
        .collect();
    let fits =
        |c: &Candidate<'_>| c.cpu_free + 1e-9 >= request.cpu && c.memory_free >= request.memory;
    let take = |c: &mut Candidate<'_>| {
        c.replicas_here += 1;
        c.cpu_free -= request.cpu;
        c.memory_free -= request.memory;
    };

    let mut placed = Vec::new();
    for node_id in existing.iter().take(request.replicas as usize) {
        if let Some(c) = state.iter_mut().find(|c| &c.node.id == node_id)
            && fits(c)
        {
            take(c);
            placed.push(node_id.clone());
        }
    }
    while placed.len() < request.replicas as usize {
        let candidates: Vec<Candidate<'_>> = state.iter().filter(|c| fits(c)).cloned().collect();
        let chosen = strategy
            .select_node(request, &candidates)
            .and_then(|i| candidates.get(i))
            .map(|c| c.node.id.clone());
        let Some(node_id) = chosen else {
            let reason = if eligible.is_empty() {
                "no live node matches the constraints".to_string()
            } else {
                format!(
                    "none of {} eligible node(s) has {} cpu and {} bytes free",
                    eligible.len(),
                    request.cpu,
                    request.memory
                )
            };
            return Err(ScheduleError::NoCapacity {
                app: request.app.clone(),
                replica: placed.len() as u32 + 1,
                reason,
            });
        };
        if let Some(c) = state.iter_mut().find(|c| c.node.id == node_id) {
            take(c);
        }
        placed.push(node_id);
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, cores: f64, memory_gib: u64) -> NodeView {
        NodeView {
            id: id.into(),
            name: format!("name-{id}"),
            labels: BTreeMap::new(),
            cpu_cores: cores,
            memory_bytes: memory_gib << 30,
            cpu_used: 0.0,
            memory_used: 0,
        }
    }

    fn request(replicas: u32, cpu: f64, memory: u64) -> PlacementRequest {
        PlacementRequest {
            app: "web".into(),
            replicas,
            cpu,
            memory,
            node: None,
            node_labels: BTreeMap::new(),
        }
    }

    fn count(placed: &[String], id: &str) -> usize {
        placed.iter().filter(|p| *p == id).count()
    }

    #[test]
    fn spread_puts_one_replica_per_node() {
        let nodes = [node("a", 2.0, 4), node("b", 2.0, 4), node("c", 2.0, 4)];
        let placed = place(&request(3, 0.5, 1 << 28), &nodes, &[], &Spread).unwrap();
        for id in ["a", "b", "c"] {
            assert_eq!(count(&placed, id), 1, "{placed:?}");
        }
    }

    #[test]
    fn binpack_fills_one_node_first() {
        let nodes = [node("a", 2.0, 4), node("b", 2.0, 4)];
        let placed = place(&request(3, 0.5, 1 << 28), &nodes, &[], &BinPack).unwrap();
        assert_eq!(count(&placed, "a") + count(&placed, "b"), 3);
        assert!(
            count(&placed, "a") == 3 || count(&placed, "b") == 3,
            "{placed:?}"
        );
    }

    #[test]
    fn resources_limit_placement() {
        let nodes = [node("a", 1.0, 4), node("b", 4.0, 4)];
        let placed = place(&request(4, 1.0, 0), &nodes, &[], &Spread).unwrap();
        assert_eq!(count(&placed, "a"), 1);
        assert_eq!(count(&placed, "b"), 3);
        let err = place(&request(6, 1.0, 0), &nodes, &[], &Spread).unwrap_err();
        assert!(err.to_string().contains("replica 6"), "{err}");
    }

    #[test]
    fn existing_replicas_stay_and_dead_nodes_lose_theirs() {
        let nodes = [node("a", 2.0, 4), node("c", 2.0, 4)];
        let existing = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let placed = place(&request(3, 0.1, 0), &nodes, &existing, &Spread).unwrap();
        assert_eq!(&placed[..2], &["a".to_string(), "c".to_string()]);
        assert!(placed[2] == "a" || placed[2] == "c");
    }

    #[test]
    fn constraints_filter_nodes() {
        let mut gpu = node("b", 2.0, 4);
        gpu.labels.insert("gpu".into(), "yes".into());
        let nodes = [node("a", 2.0, 4), gpu];
        let mut r = request(2, 0.0, 0);
        r.node_labels.insert("gpu".into(), "yes".into());
        assert_eq!(place(&r, &nodes, &[], &Spread).unwrap(), vec!["b", "b"]);
        let mut r = request(1, 0.0, 0);
        r.node = Some("name-a".into());
        assert_eq!(place(&r, &nodes, &[], &Spread).unwrap(), vec!["a"]);
        r.node = Some("nowhere".into());
        assert!(place(&r, &nodes, &[], &Spread).is_err());
    }
}
