//! What a node tells the cluster about itself, and the overlay tunnels it
//! keeps towards the others.

use std::net::Ipv4Addr;

use std::collections::BTreeMap;

use super::map_diff::diff;
use super::{Node, NodeError};
use crate::cluster::MemberState;
use crate::state::{NODES, NodeInfo, now_secs};

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
            subnet: self.net_config.subnet,
            cpu_cores: cores as f64,
            memory_bytes: memory,
            labels,
            started_at: now_secs(),
        };
        self.write(NODES, &self.id, Some(&info)).await
    }

    /// Whether the overlay reaches `info` through a tunnel: another node
    /// that has not left.
    pub(super) fn is_tunnel_peer(&self, info: &NodeInfo) -> bool {
        info.id != self.id && self.member_state(&info.id) != Some(MemberState::Left)
    }

    /// Points the data plane's tunnels at every other known node that has
    /// not left; removes the tunnels of nodes that left.
    pub async fn sync_tunnels(&self) -> Result<(), NodeError> {
        let Some(dataplane) = &self.dataplane else {
            return Ok(());
        };
        let mut wanted: BTreeMap<(Ipv4Addr, u8), (Ipv4Addr, u32)> = BTreeMap::new();
        let nodes = self.store.values::<NodeInfo>(NODES)?;
        for info in nodes.into_iter().filter(|info| self.is_tunnel_peer(info)) {
            wanted.insert(
                (info.subnet.network, info.subnet.prefix),
                (info.underlay, DEFAULT_VNI),
            );
        }
        let mut dataplane = match dataplane.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let current: BTreeMap<(Ipv4Addr, u8), (Ipv4Addr, u32)> = dataplane
            .tunnels()?
            .into_iter()
            .map(|(network, prefix, underlay, vni)| ((network, prefix), (underlay, vni)))
            .collect();
        diff(&current, wanted).apply(
            &mut *dataplane,
            |dp, (network, prefix)| dp.remove_tunnel(network, prefix),
            |dp, (network, prefix), (underlay, vni)| {
                tracing::info!(subnet = %network, prefix, underlay = %underlay, "tunnel to node");
                dp.set_tunnel(network, prefix, underlay, vni)
            },
        )?;
        Ok(())
    }
}
