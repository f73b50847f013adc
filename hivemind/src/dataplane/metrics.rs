//! The data plane's counters, in three maps the programs write (see the eBPF `metrics`
//! module): each endpoint's forwarded packets in a per-CPU array at the slot this module hands
//! it (`HM_EP_METRICS`), the node-wide directions' successes in a per-CPU array
//! (`HM_NODE_METRICS`), and everything else in a per-CPU hash keyed {endpoint or node,
//! direction, reason} (`HM_METRICS`). Readers see one stream of `(MetricsKey, MetricsValue)`
//! entries, the array elements turned into the keys the hash would have held.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues},
};
use hivemind_common::{
    DIR_FROM_CONTAINER, DIR_NAT, DIR_SERVICE, DIR_TO_CONTAINER, DIR_UNDERLAY, ENDPOINT_ID_UNKNOWN,
    MAP_ENDPOINT_METRICS, MAP_METRICS, MAP_NODE_METRICS, MAX_ENDPOINTS, MetricsKey, MetricsValue,
    NODE_METRICS_REASONS, endpoint_metrics_index, node_metrics_index, reason,
};

use super::{DataplaneError, counters, is_not_found};

/// The last endpoint slot (`MAX_ENDPOINTS` fits a `u16`).
const MAX_SLOT: u16 = {
    assert!(MAX_ENDPOINTS <= u16::MAX as u32);
    MAX_ENDPOINTS as u16
};

pub(super) struct Metrics {
    pub(super) hash: PerCpuHashMap<MapData, MetricsKey, MetricsValue>,
    endpoints: PerCpuArray<MapData, MetricsValue>,
    node: PerCpuArray<MapData, MetricsValue>,
    /// Endpoint id -> its slot in `HM_EP_METRICS` (1..=`MAX_ENDPOINTS`).
    slots: BTreeMap<u32, u16>,
}

impl Metrics {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let mut take = |name: &'static str| {
            ebpf.take_map(name)
                .ok_or(DataplaneError::MapMissing { map: name })
        };
        let hash = PerCpuHashMap::try_from(take(MAP_METRICS)?)
            .map_err(DataplaneError::map(MAP_METRICS, "opening"))?;
        let endpoints = PerCpuArray::try_from(take(MAP_ENDPOINT_METRICS)?)
            .map_err(DataplaneError::map(MAP_ENDPOINT_METRICS, "opening"))?;
        let node = PerCpuArray::try_from(take(MAP_NODE_METRICS)?)
            .map_err(DataplaneError::map(MAP_NODE_METRICS, "opening"))?;
        Ok(Self {
            hash,
            endpoints,
            node,
            slots: BTreeMap::new(),
        })
    }

    /// Records that `endpoint_id` holds `slot` (read back from a taken-over `HM_ENDPOINTS`), so
    /// its counters carry on; a slot out of range or held by another endpoint is ignored.
    pub(super) fn adopt_slot(&mut self, endpoint_id: u32, slot: u16) {
        if (1..=MAX_SLOT).contains(&slot) && !self.slots.values().any(|&s| s == slot) {
            self.slots.entry(endpoint_id).or_insert(slot);
        }
    }

    /// The slot of `endpoint_id`: the one it holds, else the lowest free one, zeroed before it is
    /// handed out. 0 (shared with the unattached interfaces) if every slot is taken, which
    /// `HM_ENDPOINTS`' size keeps from happening.
    pub(super) fn slot_for(&mut self, endpoint_id: u32) -> Result<u16, DataplaneError> {
        if let Some(&slot) = self.slots.get(&endpoint_id) {
            return Ok(slot);
        }
        let taken: std::collections::BTreeSet<u16> = self.slots.values().copied().collect();
        let Some(slot) = (1..=MAX_SLOT).find(|s| !taken.contains(s)) else {
            return Ok(0);
        };
        self.zero(slot)?;
        self.slots.insert(endpoint_id, slot);
        Ok(slot)
    }

    /// Forgets `endpoint_id`'s counters: its slot (zeroed, free again) and its hash entries.
    pub(super) fn forget_endpoint(&mut self, endpoint_id: u32) -> Result<(), DataplaneError> {
        if let Some(slot) = self.slots.remove(&endpoint_id) {
            self.zero(slot)?;
        }
        let stale: Vec<MetricsKey> = self
            .hash
            .keys()
            .filter_map(|key| match key {
                // Overlay entries are keyed by node address, not endpoint id.
                Ok(key)
                    if key.endpoint_id == endpoint_id
                        && counters::is_endpoint_direction(key.direction) =>
                {
                    Some(Ok(key))
                }
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()
            .map_err(DataplaneError::map(MAP_METRICS, "listing keys"))?;
        for key in stale {
            match self.hash.remove(&key) {
                Err(e) if !is_not_found(&e) => {
                    return Err(DataplaneError::map(MAP_METRICS, "removing")(e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn zero(&mut self, slot: u16) -> Result<(), DataplaneError> {
        let error = || DataplaneError::map(MAP_ENDPOINT_METRICS, "zeroing");
        for direction in [DIR_FROM_CONTAINER, DIR_TO_CONTAINER] {
            let index = endpoint_metrics_index(slot, direction);
            // One value per possible CPU, as many as a read gives.
            let cpus = self.endpoints.get(&index, 0).map_err(error())?.len();
            let zeroes = PerCpuValues::try_from(vec![MetricsValue::default(); cpus])
                .map_err(|e| error()(MapError::IoError(e)))?;
            self.endpoints.set(index, zeroes, 0).map_err(error())?;
        }
        Ok(())
    }

    /// The counters of every endpoint, summed over CPUs.
    pub(super) fn each_of_endpoints(
        &self,
        mut f: impl FnMut(&MetricsKey, &MetricsValue),
    ) -> Result<(), DataplaneError> {
        self.each_hashed(|key, value| {
            if counters::is_endpoint_direction(key.direction) {
                f(key, value);
            }
        })?;
        self.each_forwarded(ENDPOINT_ID_UNKNOWN, 0, &mut f)?;
        for (&endpoint_id, &slot) in &self.slots {
            self.each_forwarded(endpoint_id, slot, &mut f)?;
        }
        Ok(())
    }

    /// The counters of `endpoint_id`, summed over CPUs (its slot, then its hash entries).
    pub(super) fn each_of_endpoint(
        &self,
        endpoint_id: u32,
        mut f: impl FnMut(&MetricsKey, &MetricsValue),
    ) -> Result<(), DataplaneError> {
        let slot = match self.slots.get(&endpoint_id) {
            Some(&slot) => Some(slot),
            None if endpoint_id == ENDPOINT_ID_UNKNOWN => Some(0),
            None => None,
        };
        if let Some(slot) = slot {
            self.each_forwarded(endpoint_id, slot, &mut f)?;
        }
        self.each_hashed(|key, value| {
            if key.endpoint_id == endpoint_id {
                f(key, value);
            }
        })
    }

    /// Every counter but the endpoints' forwarded packets (what the node-wide, overlay and
    /// service readers need: service drops count under the endpoint directions too), summed
    /// over CPUs.
    pub(super) fn each_but_forwarded(
        &self,
        mut f: impl FnMut(&MetricsKey, &MetricsValue),
    ) -> Result<(), DataplaneError> {
        self.each_hashed(&mut f)?;
        self.each_node_wide(&mut f)
    }

    /// One counter of the hash (where drops and TCP events are), summed over CPUs; absent: 0.
    pub(super) fn hashed(&self, key: &MetricsKey) -> Result<Option<MetricsValue>, DataplaneError> {
        match self.hash.get(key, 0) {
            Ok(per_cpu) => Ok(Some(counters::sum_cpus(per_cpu.iter()))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(DataplaneError::map(MAP_METRICS, "looking up")(e)),
        }
    }

    fn each_hashed(
        &self,
        mut f: impl FnMut(&MetricsKey, &MetricsValue),
    ) -> Result<(), DataplaneError> {
        for entry in self.hash.iter() {
            let (key, per_cpu) = match entry {
                Ok(entry) => entry,
                // Removed between listing and reading: nothing to count.
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(DataplaneError::map(MAP_METRICS, "reading")(e)),
            };
            f(&key, &counters::sum_cpus(per_cpu.iter()));
        }
        Ok(())
    }

    fn each_forwarded(
        &self,
        endpoint_id: u32,
        slot: u16,
        f: &mut impl FnMut(&MetricsKey, &MetricsValue),
    ) -> Result<(), DataplaneError> {
        for direction in [DIR_FROM_CONTAINER, DIR_TO_CONTAINER] {
            let per_cpu = self
                .endpoints
                .get(&endpoint_metrics_index(slot, direction), 0)
                .map_err(DataplaneError::map(MAP_ENDPOINT_METRICS, "reading"))?;
            let value = counters::sum_cpus(per_cpu.iter());
            if value.packets != 0 {
                f(
                    &MetricsKey::new(endpoint_id, direction, reason::FORWARDED),
                    &value,
                );
            }
        }
        Ok(())
    }

    fn each_node_wide(
        &self,
        f: &mut impl FnMut(&MetricsKey, &MetricsValue),
    ) -> Result<(), DataplaneError> {
        for direction in [DIR_UNDERLAY, DIR_SERVICE, DIR_NAT] {
            for why in 0..NODE_METRICS_REASONS {
                let per_cpu = self
                    .node
                    .get(&node_metrics_index(direction, why), 0)
                    .map_err(DataplaneError::map(MAP_NODE_METRICS, "reading"))?;
                let value = counters::sum_cpus(per_cpu.iter());
                if value.packets != 0 {
                    f(
                        &MetricsKey::new(ENDPOINT_ID_UNKNOWN, direction, why),
                        &value,
                    );
                }
            }
        }
        Ok(())
    }
}
