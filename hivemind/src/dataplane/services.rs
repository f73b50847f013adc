//! Service load balancing in the kernel: the frontends (`HM_SERVICES`), the backends
//! (`HM_BACKENDS`), the conntrack map the programs fill (`HM_CT`) and the node configuration
//! the node-originated path needs (`HM_NODE_CONFIG`).
//!
//! Writes happen in an order the data path can read at any moment: backends first, then the
//! slots `1..=count`, then slot 0 with the count; a shrinking service lowers the count before
//! its stale slots go, and a backend entry goes last, once no frontend references it. Backends
//! of weight 0 keep their entry (connections already on them keep working) but get no slot.

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    net::Ipv4Addr,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
};
use hivemind_common::{
    Backend, CtKey, CtValue, IPPROTO_TCP, IPPROTO_UDP, MAP_BACKENDS, MAP_CT, MAP_CT_BUDGET,
    MAP_NODE_CONFIG, MAP_SERVICES, MAX_SLOTS_PER_SERVICE, NodeConfig, ServiceKey, ServiceValue,
};

use super::{Dataplane, DataplaneError, ServiceCounters, is_not_found};

/// One backend of a service as the daemon knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceBackend {
    /// Node-wide unique id of this backend (its `HM_BACKENDS` key). One id, one address:port.
    pub id: u32,
    pub ip: Ipv4Addr,
    pub port: u16,
    /// Relative share of new connections; 0 keeps existing connections but takes no new ones.
    pub weight: u32,
}

/// A frontend: (VIP, port, protocol).
type Frontend = (Ipv4Addr, u16, u8);

/// The maps of the load balancer and what this process last wrote to them.
pub(super) struct ServiceMaps {
    pub(super) services: HashMap<MapData, ServiceKey, ServiceValue>,
    pub(super) backends: HashMap<MapData, u32, Backend>,
    pub(super) ct: HashMap<MapData, CtKey, CtValue>,
    /// Conntrack entries per owner (the budget).
    pub(super) ct_budget: HashMap<MapData, u32, u64>,
    pub(super) node_config: Array<MapData, NodeConfig>,
    /// Per frontend: its slot count and every backend id it lists (slotted or weight 0).
    frontends: StdHashMap<Frontend, (u16, Vec<u32>)>,
    /// The id of each backend address:port/protocol handed out by `backend_id`.
    ids: StdHashMap<(Ipv4Addr, u16, u8), u32>,
    /// Every address a frontend written by this process listed (never forgotten: it only
    /// decides whether an endpoint attached later looks up reverse NAT).
    backend_ips: std::collections::HashSet<Ipv4Addr>,
    /// The next id `backend_id` tries.
    next_id: u32,
}

impl ServiceMaps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let mut take =
            |map: &'static str| ebpf.take_map(map).ok_or(DataplaneError::MapMissing { map });
        let services = HashMap::try_from(take(MAP_SERVICES)?)
            .map_err(DataplaneError::map(MAP_SERVICES, "opening"))?;
        let backends = HashMap::try_from(take(MAP_BACKENDS)?)
            .map_err(DataplaneError::map(MAP_BACKENDS, "opening"))?;
        let ct =
            HashMap::try_from(take(MAP_CT)?).map_err(DataplaneError::map(MAP_CT, "opening"))?;
        let ct_budget = HashMap::try_from(take(MAP_CT_BUDGET)?)
            .map_err(DataplaneError::map(MAP_CT_BUDGET, "opening"))?;
        let node_config = Array::try_from(take(MAP_NODE_CONFIG)?)
            .map_err(DataplaneError::map(MAP_NODE_CONFIG, "opening"))?;
        Ok(Self {
            services,
            backends,
            ct,
            ct_budget,
            node_config,
            frontends: StdHashMap::new(),
            ids: StdHashMap::new(),
            backend_ips: Default::default(),
            next_id: 1,
        })
    }
}

impl Dataplane {
    /// The backend id of `ip:port/proto`, the same for as long as a service lists it: each
    /// (address, port) is its own backend, so a service with several ports sends each port to
    /// the same port of the backend. Ids are handed out by this process (never 0); one no
    /// service lists any more is released when its backend entry goes.
    pub fn backend_id(&mut self, ip: Ipv4Addr, port: u16, proto: u8) -> u32 {
        let maps = &mut self.services;
        if let Some(&id) = maps.ids.get(&(ip, port, proto)) {
            return id;
        }
        let taken: std::collections::HashSet<u32> = maps.ids.values().copied().collect();
        let mut id = maps.next_id.max(1);
        while taken.contains(&id) {
            id = id.checked_add(1).unwrap_or(1);
        }
        maps.next_id = id.checked_add(1).unwrap_or(1);
        maps.ids.insert((ip, port, proto), id);
        id
    }

    /// Whether `ip` backs a frontend (a service or a published port) of this node.
    pub(super) fn backs_service(&self, ip: Ipv4Addr) -> bool {
        self.services.backend_ips.contains(&ip)
            || self
                .services
                .ids
                .keys()
                .any(|&(backend, _, _)| backend == ip)
            || self.publishes(ip)
    }

    /// Creates or replaces the service `vip:port/proto` (proto 6 TCP or 17 UDP) with
    /// `backends`. Writes the backends, then the slots, then slot 0 with the count, so the data
    /// path never sees a half-written service; shrinking removes stale slots after the count is
    /// lowered. No backend (or only weight-0 ones): the service's packets are dropped
    /// (`DROP_NO_BACKEND`).
    pub fn set_service(
        &mut self,
        vip: Ipv4Addr,
        port: u16,
        proto: u8,
        backends: &[ServiceBackend],
    ) -> Result<(), DataplaneError> {
        self.set_frontend(vip, port, proto, backends, 0)
    }

    /// `set_service` with the frontend's `service_flags` (`SNAT`: a published port in `snat`
    /// mode).
    pub fn set_frontend(
        &mut self,
        vip: Ipv4Addr,
        port: u16,
        proto: u8,
        backends: &[ServiceBackend],
        flags: u16,
    ) -> Result<(), DataplaneError> {
        let weights: Vec<(u32, u32)> = backends.iter().map(|b| (b.id, b.weight)).collect();
        let slots = weighted_slots(&weights, usize::from(MAX_SLOTS_PER_SERVICE));
        self.set_frontend_slots(vip, port, proto, backends, &slots, flags)
    }

    /// `set_frontend` with the backend id of each slot laid out by the caller (ids of
    /// `backends`; see [`affinity_slots`]).
    pub fn set_frontend_slots(
        &mut self,
        vip: Ipv4Addr,
        port: u16,
        proto: u8,
        backends: &[ServiceBackend],
        slots: &[u32],
        flags: u16,
    ) -> Result<(), DataplaneError> {
        self.check_frontend(vip, proto)?;
        if backends.len() > usize::from(MAX_SLOTS_PER_SERVICE) {
            return Err(DataplaneError::TooManyBackends {
                vip,
                port,
                count: backends.len(),
                max: MAX_SLOTS_PER_SERVICE,
            });
        }
        if slots.len() > usize::from(MAX_SLOTS_PER_SERVICE)
            || slots.iter().any(|id| !backends.iter().any(|b| b.id == *id))
        {
            return Err(DataplaneError::BadSlots {
                vip,
                port,
                max: MAX_SLOTS_PER_SERVICE,
            });
        }
        let count = u16::try_from(slots.len()).unwrap_or(MAX_SLOTS_PER_SERVICE);
        // Before any packet can reach them through this frontend.
        self.services
            .backend_ips
            .extend(backends.iter().map(|b| b.ip));
        self.mark_backends(backends.iter().map(|b| b.ip))?;
        let maps = &mut self.services;

        for b in backends {
            let value = Backend {
                ip: u32::from_ne_bytes(b.ip.octets()),
                port: b.port.to_be(),
                proto,
                flags: 0,
            };
            maps.backends
                .insert(b.id, value, 0)
                .map_err(DataplaneError::map(MAP_BACKENDS, "inserting"))?;
        }
        let vip_n = u32::from_ne_bytes(vip.octets());
        let key = |slot: u16| ServiceKey::new(vip_n, port.to_be(), proto, slot);
        for (slot, &backend_id) in (1..=count).zip(slots) {
            let value = ServiceValue {
                backend_id,
                count: 0,
                flags: 0,
            };
            maps.services
                .insert(key(slot), value, 0)
                .map_err(DataplaneError::map(MAP_SERVICES, "inserting"))?;
        }
        let head = ServiceValue {
            backend_id: 0,
            count,
            flags,
        };
        maps.services
            .insert(key(0), head, 0)
            .map_err(DataplaneError::map(MAP_SERVICES, "inserting"))?;

        let frontend = (vip, port, proto);
        let ids = backends.iter().map(|b| b.id).collect();
        let (old_count, old_ids) = maps
            .frontends
            .insert(frontend, (count, ids))
            .unwrap_or_default();
        for slot in count + 1..=old_count {
            remove_ignoring_absent(&mut maps.services, &key(slot), MAP_SERVICES)?;
        }
        maps.remove_unreferenced(old_ids)?;
        tracing::debug!(%vip, port, proto, backends = backends.len(), slots = count, "service set");
        Ok(())
    }

    /// Removes the service `vip:port/proto` (slot 0 first, so the data path stops picking
    /// backends at once) and the backends no other service lists; succeeds if it is gone
    /// already. Its packets then pass untranslated.
    pub fn remove_service(
        &mut self,
        vip: Ipv4Addr,
        port: u16,
        proto: u8,
    ) -> Result<(), DataplaneError> {
        self.check_frontend(vip, proto)?;
        let maps = &mut self.services;
        let vip_n = u32::from_ne_bytes(vip.octets());
        let key = |slot: u16| ServiceKey::new(vip_n, port.to_be(), proto, slot);
        // Slot 0 decides; read the map rather than trust our record alone.
        let mapped = match maps.services.get(&key(0), 0) {
            Ok(head) => head.count,
            Err(e) if is_not_found(&e) => 0,
            Err(e) => return Err(DataplaneError::map(MAP_SERVICES, "looking up")(e)),
        };
        let (recorded, ids) = maps
            .frontends
            .remove(&(vip, port, proto))
            .unwrap_or_default();
        for slot in 0..=mapped.max(recorded) {
            remove_ignoring_absent(&mut maps.services, &key(slot), MAP_SERVICES)?;
        }
        maps.remove_unreferenced(ids)?;
        tracing::debug!(%vip, port, proto, "service removed");
        Ok(())
    }

    /// Every service as (VIP, port, protocol, backend id per slot `1..=count`), as the maps
    /// hold them, sorted. A service without backends has no slot.
    #[allow(clippy::type_complexity)] // the shape the callers asked for
    pub fn services(&self) -> Result<Vec<(Ipv4Addr, u16, u8, Vec<u32>)>, DataplaneError> {
        let mut heads: BTreeMap<Frontend, u16> = BTreeMap::new();
        let mut slots: StdHashMap<(Frontend, u16), u32> = StdHashMap::new();
        for entry in self.services.services.iter() {
            let (key, value) = match entry {
                Ok(entry) => entry,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(DataplaneError::map(MAP_SERVICES, "reading")(e)),
            };
            let frontend = (
                Ipv4Addr::from(key.vip.to_ne_bytes()),
                u16::from_be(key.port),
                key.proto,
            );
            if key.slot == 0 {
                heads.insert(frontend, value.count);
            } else {
                slots.insert((frontend, key.slot), value.backend_id);
            }
        }
        Ok(heads
            .into_iter()
            .map(|(frontend, count)| {
                let ids = (1..=count)
                    .filter_map(|slot| slots.get(&(frontend, slot)).copied())
                    .collect();
                (frontend.0, frontend.1, frontend.2, ids)
            })
            .collect())
    }

    /// The `service_flags` of every frontend whose flags are not 0.
    pub fn frontend_flags(&self) -> Result<BTreeMap<Frontend, u16>, DataplaneError> {
        let mut flags = BTreeMap::new();
        for entry in self.services.services.iter() {
            let (key, value) = match entry {
                Ok(entry) => entry,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(DataplaneError::map(MAP_SERVICES, "reading")(e)),
            };
            if key.slot == 0 && value.flags != 0 {
                let frontend = (
                    Ipv4Addr::from(key.vip.to_ne_bytes()),
                    u16::from_be(key.port),
                    key.proto,
                );
                flags.insert(frontend, value.flags);
            }
        }
        Ok(flags)
    }

    /// Tells the node-originated service path (on `hm-vxlan`) where local backends live:
    /// `bridge_ifindex` is the node bridge (`hm0`, calling thread's namespace), `gateway` its
    /// address and `prefix` the length of the node's container subnet. Call once after
    /// `attach_overlay`; calling again replaces the configuration.
    pub fn set_node_config(
        &mut self,
        bridge_ifindex: u32,
        gateway: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), DataplaneError> {
        if prefix > 32 || prefix == 0 {
            return Err(DataplaneError::InvalidSubnet {
                subnet: gateway,
                prefix,
            });
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        let subnet = Ipv4Addr::from(u32::from(gateway) & mask);
        // The bridge's MAC is the source of frames host routing delivers; without one (an
        // interface that has none) the programs write zeroes, which the container accepts.
        let gateway_mac = super::routing::interface_mac(bridge_ifindex).unwrap_or_else(|e| {
            tracing::debug!(bridge_ifindex, error = %e, "no bridge mac");
            [0; 6]
        });
        // Host routing's fields are kept.
        let config = NodeConfig {
            bridge_ifindex,
            gateway: u32::from_ne_bytes(gateway.octets()),
            subnet: u32::from_ne_bytes(subnet.octets()),
            subnet_mask: u32::from_ne_bytes(mask.to_be_bytes()),
            gateway_mac,
            ..self.node_config()?
        };
        self.write_node_config(config)?;
        tracing::debug!(bridge_ifindex, %gateway, prefix, "node config set");
        Ok(())
    }

    /// Sets the service CIDR (the default is `hivemind_common::SERVICE_CIDR`): the programs
    /// translate packets to addresses inside it, and VIPs must lie in it. Prefix 1..=32, host
    /// bits zero.
    pub fn set_service_cidr(
        &mut self,
        network: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), DataplaneError> {
        let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
        if prefix == 0 || prefix > 32 || u32::from(network) & host_bits != 0 {
            return Err(DataplaneError::InvalidSubnet {
                subnet: network,
                prefix,
            });
        }
        let config = self
            .node_config()?
            .with_service_cidr(network.octets(), prefix);
        self.write_node_config(config)?;
        tracing::debug!(%network, prefix, "service cidr set");
        Ok(())
    }

    /// Service translations and service drops since the data plane was loaded, all
    /// endpoints and the overlay together.
    pub fn service_counters(&self) -> Result<ServiceCounters, DataplaneError> {
        let mut services = ServiceCounters::default();
        self.metrics
            .each_but_forwarded(|key, value| services.add(key, value))?;
        Ok(services)
    }

    /// Number of service conntrack entries (two per tracked service connection; the policy's
    /// entries in other `ct_scope`s are not counted).
    pub fn conntrack_entries(&self) -> Result<usize, DataplaneError> {
        let mut n = 0;
        for key in self.services.ct.keys() {
            match key {
                Ok(key) if key.scope == hivemind_common::ct_scope::SERVICE => n += 1,
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(DataplaneError::map(MAP_CT, "listing keys")(e)),
            }
        }
        Ok(n)
    }
}

impl ServiceMaps {
    /// Removes the `HM_BACKENDS` entries of `ids` that no frontend lists any more.
    fn remove_unreferenced(&mut self, ids: Vec<u32>) -> Result<(), DataplaneError> {
        for id in ids {
            let used = self
                .frontends
                .values()
                .any(|(_, listed)| listed.contains(&id));
            if !used {
                remove_ignoring_absent(&mut self.backends, &id, MAP_BACKENDS)?;
                self.ids.retain(|_, listed| *listed != id);
            }
        }
        Ok(())
    }
}

fn remove_ignoring_absent<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    key: &K,
    name: &'static str,
) -> Result<(), DataplaneError> {
    match map.remove(key) {
        Err(e) if !is_not_found(&e) => Err(DataplaneError::map(name, "removing")(e)),
        _ => Ok(()),
    }
}

impl Dataplane {
    /// Refuses a VIP outside the service CIDR (the programs only look there) other than the
    /// node's own address (published ports), and protocols other than TCP and UDP.
    fn check_frontend(&self, vip: Ipv4Addr, proto: u8) -> Result<(), DataplaneError> {
        let config = self.node_config()?;
        let vip_n = u32::from_ne_bytes(vip.octets());
        if !config.in_service_cidr(vip_n) && (config.node_ip == 0 || vip_n != config.node_ip) {
            let mask = u32::from_be_bytes(config.service_mask.to_ne_bytes());
            return Err(DataplaneError::InvalidVip {
                vip,
                cidr: Ipv4Addr::from(config.service_net.to_ne_bytes()),
                prefix: mask.count_ones() as u8,
            });
        }
        if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
            return Err(DataplaneError::InvalidProtocol { proto });
        }
        Ok(())
    }
}

/// The slots of a frontend with client-address affinity (`service_flags::AFFINITY`): each group
/// (an A/B test's variant: its share in permille and its backend ids) holds one run of
/// `AFFINITY_SLOTS` slots in proportion to its share, its backends taking turns within it. A
/// client's slot is a hash of its address modulo `AFFINITY_SLOTS`, so it stays with its group
/// whatever the group's backends do, on every node. A group with no backend lends its run to
/// `fallback` (the version an A/B test replaces, while it serves), else to every backend of
/// the other groups; no backend at all: no slot.
pub fn affinity_slots(groups: &[(u32, Vec<u32>)], fallback: &[u32]) -> Vec<u32> {
    let all: Vec<u32> = if fallback.is_empty() {
        groups.iter().flat_map(|(_, ids)| ids.clone()).collect()
    } else {
        fallback.to_vec()
    };
    if all.is_empty() {
        return Vec::new();
    }
    let total = usize::from(hivemind_common::AFFINITY_SLOTS);
    let shares: u64 = groups.iter().map(|(share, _)| u64::from(*share)).sum();
    let mut slots = Vec::with_capacity(total);
    let mut taken = 0u64;
    for (share, ids) in groups {
        taken += u64::from(*share);
        let end = hivemind_common::affinity_run_end(taken, shares) as usize;
        let pool = if ids.is_empty() { &all } else { ids };
        let start = slots.len();
        slots.extend((start..end.max(start)).map(|i| pool[i % pool.len()]));
    }
    slots.resize(total, all[0]);
    slots
}

/// The backend id of every slot of a service whose backends are `(backend_id, weight)`: each
/// backend gets a number of slots proportional to its weight (weight 0: none), at most
/// `max_slots` in all, interleaved (smooth weighted round-robin) so that neighbouring slots
/// belong to different backends.
///
/// Weights are first divided by their greatest common divisor (1:1:1 gives three slots, 90:10
/// gives nine and one). If that still needs more than `max_slots`, the slots are shared out in
/// proportion (largest remainder), every backend keeping at least one while there are at least
/// as many slots as backends; otherwise only the `max_slots` heaviest get one.
pub fn weighted_slots(backends: &[(u32, u32)], max_slots: usize) -> Vec<u32> {
    let live: Vec<(u32, u64)> = backends
        .iter()
        .filter(|(_, w)| *w > 0)
        .map(|&(id, w)| (id, u64::from(w)))
        .collect();
    if live.is_empty() || max_slots == 0 {
        return Vec::new();
    }
    let divisor = live.iter().fold(0, |g, &(_, w)| gcd(g, w));
    let reduced: Vec<u64> = live.iter().map(|&(_, w)| w / divisor).collect();
    let total: u64 = reduced.iter().sum();
    let max = max_slots as u64;
    let counts: Vec<u64> = if total <= max {
        reduced
    } else if live.len() as u64 >= max {
        // One slot each for the heaviest `max_slots` (earlier ones win ties).
        let mut order: Vec<usize> = (0..live.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(reduced[i]));
        let mut counts = vec![0; live.len()];
        for &i in order.iter().take(max_slots) {
            counts[i] = 1;
        }
        counts
    } else {
        // One slot each, the rest in proportion to the weights (largest remainder).
        let rest = max - live.len() as u64;
        let mut counts: Vec<u64> = reduced.iter().map(|w| 1 + rest * w / total).collect();
        let mut left = max - counts.iter().sum::<u64>();
        let mut order: Vec<usize> = (0..live.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(rest * reduced[i] % total));
        for &i in order.iter().cycle() {
            if left == 0 {
                break;
            }
            counts[i] += 1;
            left -= 1;
        }
        counts
    };
    let total: u64 = counts.iter().sum();
    let mut current = vec![0i64; counts.len()];
    let mut slots = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..counts.len() {
            current[i] += counts[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        slots.push(live[best].0);
    }
    slots
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Dataplane {
    /// Rebuilds the backend ids and frontends this process hands out and replaces from the
    /// maps (taken over from an earlier daemon): a tracked connection keeps its backend's id.
    pub(super) fn restore_services(&mut self) -> Result<(), DataplaneError> {
        let maps = &mut self.services;
        for entry in maps.backends.iter() {
            let (id, backend) = entry.map_err(DataplaneError::map(MAP_BACKENDS, "reading"))?;
            let ip = Ipv4Addr::from(backend.ip.to_ne_bytes());
            maps.backend_ips.insert(ip);
            maps.ids
                .insert((ip, u16::from_be(backend.port), backend.proto), id);
            maps.next_id = maps.next_id.max(id.saturating_add(1));
        }
        for (vip, port, proto, ids) in self.services()? {
            self.services
                .frontends
                .insert((vip, port, proto), (ids.len() as u16, ids));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(slots: &[u32], id: u32) -> usize {
        slots.iter().filter(|&&s| s == id).count()
    }

    /// A/B variants: each holds one run of the 1000 slots by its share, whatever its backends;
    /// a variant with none lends its run to the replaced version, else to the others.
    #[test]
    fn affinity_slots_keep_each_variant_in_its_run() {
        let slots = affinity_slots(&[(500, vec![1, 2]), (500, vec![3])], &[]);
        assert_eq!(slots.len(), 1000);
        assert!(slots[..500].iter().all(|s| [1, 2].contains(s)));
        assert!(slots[500..].iter().all(|s| *s == 3));
        assert_eq!((share(&slots, 1), share(&slots, 2)), (250, 250));
        // One more backend of the first variant changes nothing for the second's clients.
        let more = affinity_slots(&[(500, vec![1, 2, 4]), (500, vec![3])], &[]);
        assert_eq!(slots[500..], more[500..]);
        // 12.5% / 87.5%.
        let slots = affinity_slots(&[(125, vec![1]), (875, vec![2])], &[]);
        assert_eq!((share(&slots, 1), share(&slots, 2)), (125, 875));
        // No ready backend in the second: the replaced version takes its run, or the first.
        let slots = affinity_slots(&[(500, vec![1]), (500, vec![])], &[9]);
        assert!(slots[..500].iter().all(|s| *s == 1) && slots[500..].iter().all(|s| *s == 9));
        let slots = affinity_slots(&[(500, vec![1]), (500, vec![])], &[]);
        assert_eq!(share(&slots, 1), 1000);
        assert!(affinity_slots(&[(500, vec![]), (500, vec![])], &[]).is_empty());
    }

    #[test]
    fn equal_weights_get_one_slot_each() {
        assert_eq!(weighted_slots(&[(7, 1), (8, 1), (9, 1)], 1024), [7, 8, 9]);
        assert_eq!(weighted_slots(&[(7, 50), (8, 50)], 1024), [7, 8]);
        assert_eq!(weighted_slots(&[(7, 3)], 1024), [7]);
    }

    #[test]
    fn weights_are_proportional_and_interleaved() {
        let slots = weighted_slots(&[(1, 90), (2, 10)], 1024);
        assert_eq!(slots.len(), 10);
        assert_eq!(share(&slots, 1), 9);
        assert_eq!(share(&slots, 2), 1);
        let slots = weighted_slots(&[(1, 2), (2, 1)], 1024);
        assert_eq!(slots, [1, 2, 1]);
        // Interleaved: never all of one backend in a row when another has slots too.
        let slots = weighted_slots(&[(1, 3), (2, 3), (3, 2)], 1024);
        assert_eq!(slots.len(), 8);
        assert!(slots.windows(2).all(|w| w[0] != w[1]), "{slots:?}");
    }

    #[test]
    fn zero_weights_and_empty_inputs_get_no_slot() {
        assert!(weighted_slots(&[], 1024).is_empty());
        assert!(weighted_slots(&[(1, 0), (2, 0)], 1024).is_empty());
        assert!(weighted_slots(&[(1, 5)], 0).is_empty());
        assert_eq!(weighted_slots(&[(1, 0), (2, 4)], 1024), [2]);
    }

    #[test]
    fn large_weights_are_scaled_to_the_slot_budget() {
        let slots = weighted_slots(&[(1, 997), (2, 3), (3, 1)], 100);
        assert_eq!(slots.len(), 100);
        assert!(share(&slots, 2) >= 1 && share(&slots, 3) >= 1, "{slots:?}");
        assert!(share(&slots, 1) >= 95, "{slots:?}");
        // More backends than slots: the heaviest get one each.
        let slots = weighted_slots(&[(1, 1), (2, 5), (3, 3), (4, 7)], 2);
        assert_eq!(slots.len(), 2);
        assert_eq!(share(&slots, 4) + share(&slots, 2), 2, "{slots:?}");
        // Coprime big weights stay within the budget and roughly in proportion.
        let slots = weighted_slots(&[(1, 1_000_003), (2, 999_983)], 1024);
        assert_eq!(slots.len(), 1024);
        assert!(share(&slots, 1).abs_diff(512) <= 1, "{}", share(&slots, 1));
    }
}
