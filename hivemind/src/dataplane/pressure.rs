//! How full each map is: entries against the map's size, for `/metrics`
//! (`hivemind_bpf_map_entries`, `hivemind_bpf_map_capacity`). A full map refuses entries
//! (services, rules, tunnels) or evicts them (conntrack, LRU), so operators watch the ratio.

use hivemind_common::{
    MAP_BACKENDS, MAP_CT, MAP_ENDPOINTS, MAP_IPCACHE, MAP_LXC, MAP_METRICS, MAP_NAT, MAP_POLICY,
    MAP_POLICY_CIDR, MAP_SERVICES, MAP_SOCK_NETNS, MAP_TUNNELS, MAX_BACKENDS, MAX_CT_ENTRIES,
    MAX_ENDPOINTS, MAX_IPCACHE_ENTRIES, MAX_METRICS_ENTRIES, MAX_NAT_ENTRIES,
    MAX_POLICY_CIDR_ENTRIES, MAX_POLICY_ENTRIES, MAX_SERVICE_ENTRIES, MAX_TUNNELS,
};

use super::Dataplane;

/// One map's fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapPressure {
    pub map: &'static str,
    pub entries: usize,
    pub capacity: u32,
}

/// Entries of a map by walking its keys (a key removed meanwhile is simply not counted).
macro_rules! entries {
    ($map:expr) => {
        $map.keys().filter(Result::is_ok).count()
    };
}

impl Dataplane {
    /// Every map the daemon sizes, with its entries now and its size.
    pub fn map_pressure(&self) -> Vec<MapPressure> {
        let pressure = |map, entries, capacity| MapPressure {
            map,
            entries,
            capacity,
        };
        let mut maps = vec![
            pressure(MAP_ENDPOINTS, entries!(self.endpoints), MAX_ENDPOINTS),
            pressure(MAP_LXC, entries!(self.lxc), MAX_ENDPOINTS),
            pressure(MAP_TUNNELS, entries!(self.tunnels), MAX_TUNNELS),
            pressure(
                MAP_METRICS,
                entries!(self.metrics.hash),
                MAX_METRICS_ENTRIES,
            ),
            pressure(
                MAP_SERVICES,
                entries!(self.services.services),
                MAX_SERVICE_ENTRIES,
            ),
            pressure(MAP_BACKENDS, entries!(self.services.backends), MAX_BACKENDS),
            pressure(MAP_CT, entries!(self.services.ct), MAX_CT_ENTRIES),
            pressure(
                MAP_IPCACHE,
                entries!(self.policy.ipcache),
                MAX_IPCACHE_ENTRIES,
            ),
            pressure(MAP_POLICY, entries!(self.policy.rules), MAX_POLICY_ENTRIES),
            pressure(
                MAP_POLICY_CIDR,
                entries!(self.policy.cidr),
                MAX_POLICY_CIDR_ENTRIES,
            ),
            pressure(MAP_NAT, entries!(self.nat.mappings), MAX_NAT_ENTRIES),
        ];
        if let Some(socket) = &self.socket {
            maps.push(pressure(
                MAP_SOCK_NETNS,
                entries!(socket.netns),
                MAX_ENDPOINTS + 1,
            ));
        }
        maps
    }
}
