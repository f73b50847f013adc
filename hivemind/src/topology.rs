//! What a node tells the cluster about itself, and the overlay tunnels it
//! keeps towards the others.

use std::net::Ipv4Addr;

use crate::cluster::MemberState;
use crate::daemon::{Node, NodeError};
use crate::state::{NODES, NodeInfo, Subnet, now_secs};

/// The VNI of the cluster's default overlay network.
pub const DEFAULT_VNI: u32 = 1;

/// CPU cores and memory bytes of this machine.
pub fn machine_resources() -> (usize, u64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    (cores, memory)
}

impl Node {
    /// Writes this node's record (address, subnet, resources) to the cluster.
    pub async fn publish_self(
        &self,
        underlay: Ipv4Addr,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<(), NodeError> {
        let (cores, memory) = machine_resources();
        let info = NodeInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            api: self.address.clone(),
            underlay,
            subnet: self.net_config.subnet.to_string(),
            cpu_cores: cores as f64,
            memory_bytes: memory,
            labels,
            started_at: now_secs(),
        };
        self.write(NODES, &self.id, Some(&info)).await
    }

    /// Points the data plane's tunnels at every other known node that has
    /// not left; removes the tunnels of nodes that left.
    pub async fn sync_tunnels(&self) -> Result<(), NodeError> {
        let Some(dataplane) = &self.dataplane else {
            return Ok(());
        };
        let mut wanted: Vec<(Ipv4Addr, u8, Ipv4Addr)> = Vec::new();
        for info in self.store.values::<NodeInfo>(NODES)? {
            if info.id == self.id || self.member_state(&info.id) == Some(MemberState::Left) {
                continue;
            }
            let Ok(subnet) = info.subnet.parse::<Subnet>() else {
                tracing::warn!(node = %info.id, subnet = %info.subnet, "node record with a bad subnet");
                continue;
            };
            wanted.push((subnet.network, subnet.prefix, info.underlay));
        }
        let mut dataplane = match dataplane.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let current = dataplane.tunnels()?;
        for (network, prefix, underlay, vni) in &current {
            if !wanted.contains(&(*network, *prefix, *underlay)) || *vni != DEFAULT_VNI {
                dataplane.remove_tunnel(*network, *prefix)?;
            }
        }
        for (network, prefix, underlay) in wanted {
            if !current.contains(&(network, prefix, underlay, DEFAULT_VNI)) {
                tracing::info!(subnet = %network, prefix, underlay = %underlay, "tunnel to node");
                dataplane.set_tunnel(network, prefix, underlay, DEFAULT_VNI)?;
            }
        }
        Ok(())
    }
}
