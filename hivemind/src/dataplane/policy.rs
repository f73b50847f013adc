//! Network policy in the kernel: the ipcache (`HM_IPCACHE`, also where the overlay finds the
//! node of an address), each endpoint's identity and enforcement flags (`HM_ENDPOINTS`), its
//! identity rules (`HM_POLICY`) and CIDR rules (`HM_POLICY_CIDR`), and the flow events the
//! programs write (`HM_FLOWS`, `HM_FLOWS_LOST`).
//!
//! `set_endpoint_policy` replaces an endpoint's rules in an order the data path can read at any
//! moment: the new entries first, then the enforcement flags, then the stale entries go. So a
//! tightened policy briefly allows the union of old and new rules, never less than the new one
//! when enforcement starts. Each entry holds at most `MAX_PORT_RANGES` merged port ranges; a key
//! that needs more is refused before anything is written (`TooManyPortRanges`), and the daemon
//! must then refuse the policy rather than widen it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap as StdHashMap},
    net::Ipv4Addr,
};

use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie, MapData, PerCpuArray, RingBuf, lpm_trie::Key},
};
use hivemind_common::{
    CtKey, DIR_FROM_CONTAINER, DIR_TO_CONTAINER, EndpointInfo, FlowRecord, IpcacheValue, MAP_CT,
    MAP_ENDPOINTS, MAP_FLOWS, MAP_FLOWS_LOST, MAP_IPCACHE, MAP_POLICY, MAP_POLICY_CIDR,
    MAX_PORT_RANGES, POLICY_CIDR_FIXED_BITS, PolicyCidrKey, PolicyEntry, PolicyKey, PortRange,
    ct_scope, endpoint_flags, identity, reason, verdict,
};
use serde::Serialize;

use super::{Dataplane, DataplaneError, is_not_found};
use crate::policy::{Allow, EndpointRules, PeerMatch};

/// The reason of a flow event: its stable code and name (`hivemind_common::reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FlowReason {
    pub code: u8,
    pub name: &'static str,
}

/// One flow event from the kernel: a new flow the policy code allowed, or a denied packet
/// (denied ones at most once per 5-tuple and direction per second).
#[derive(Debug, Clone, Serialize)]
pub struct FlowEvent {
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
    pub time_ns: u64,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    pub endpoint_id: u32,
    /// `"egress"` (leaving the container) or `"ingress"` (going into it).
    pub direction: &'static str,
    pub peer_identity: u32,
    /// `"allowed"` or `"denied"`.
    pub verdict: &'static str,
    pub reason: FlowReason,
}

impl FlowEvent {
    fn from_record(r: &FlowRecord) -> Self {
        let code = r.reason;
        Self {
            time_ns: r.time_ns,
            src: Ipv4Addr::from(r.saddr.to_ne_bytes()),
            dst: Ipv4Addr::from(r.daddr.to_ne_bytes()),
            sport: u16::from_be(r.sport),
            dport: u16::from_be(r.dport),
            proto: r.proto,
            endpoint_id: r.endpoint_id,
            direction: if r.direction == DIR_FROM_CONTAINER {
                "egress"
            } else {
                "ingress"
            },
            peer_identity: r.peer_identity,
            verdict: if r.verdict == verdict::DENIED {
                "denied"
            } else {
                "allowed"
            },
            reason: FlowReason {
                code,
                name: reason::name(code),
            },
        }
    }
}

/// What the ipcache says of one address: its identity and, if it lives on another node, that
/// node's underlay address (the tunnel endpoint the programs encapsulate to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct IpcacheEntry {
    pub identity: u32,
    pub tunnel_endpoint: Option<Ipv4Addr>,
}

impl IpcacheEntry {
    /// An address of this node.
    pub fn local(identity: u32) -> Self {
        Self {
            identity,
            tunnel_endpoint: None,
        }
    }

    /// An address of the node whose underlay address is `node`.
    pub fn remote(identity: u32, node: Ipv4Addr) -> Self {
        Self {
            identity,
            tunnel_endpoint: Some(node),
        }
    }
}

/// A CIDR rule key: the LPM prefix length (fixed bits + prefix) and the data.
type CidrKey = (u32, PolicyCidrKey);

/// What this process last wrote for one endpoint.
#[derive(Default)]
struct Written {
    identity: BTreeSet<PolicyKey>,
    cidr: BTreeSet<CidrKey>,
}

/// The policy maps and what this process last wrote to them.
pub(super) struct PolicyMaps {
    pub(super) ipcache: HashMap<MapData, u32, IpcacheValue>,
    pub(super) rules: HashMap<MapData, PolicyKey, PolicyEntry>,
    pub(super) cidr: LpmTrie<MapData, PolicyCidrKey, PolicyEntry>,
    flows: RingBuf<MapData>,
    flows_lost: PerCpuArray<MapData, u64>,
    written: StdHashMap<u32, Written>,
    /// The rules each endpoint last got, to tell which direction a new set changes.
    rules_of: StdHashMap<u32, EndpointRules>,
    /// Enforcement flags per endpoint id (applied again by `attach_endpoint`).
    pub(super) flags: StdHashMap<u32, u32>,
}

impl PolicyMaps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let mut take =
            |map: &'static str| ebpf.take_map(map).ok_or(DataplaneError::MapMissing { map });
        Ok(Self {
            ipcache: HashMap::try_from(take(MAP_IPCACHE)?)
                .map_err(DataplaneError::map(MAP_IPCACHE, "opening"))?,
            rules: HashMap::try_from(take(MAP_POLICY)?)
                .map_err(DataplaneError::map(MAP_POLICY, "opening"))?,
            cidr: LpmTrie::try_from(take(MAP_POLICY_CIDR)?)
                .map_err(DataplaneError::map(MAP_POLICY_CIDR, "opening"))?,
            flows: RingBuf::try_from(take(MAP_FLOWS)?)
                .map_err(DataplaneError::map(MAP_FLOWS, "opening"))?,
            flows_lost: PerCpuArray::try_from(take(MAP_FLOWS_LOST)?)
                .map_err(DataplaneError::map(MAP_FLOWS_LOST, "opening"))?,
            written: StdHashMap::new(),
            rules_of: StdHashMap::new(),
            flags: StdHashMap::new(),
        })
    }
}

/// The network address of `ip/prefix` (host bits cleared), or `None` if `prefix > 32`.
fn network(ip: Ipv4Addr, prefix: u8) -> Option<Ipv4Addr> {
    let mask = match prefix {
        0 => 0,
        1..=32 => u32::MAX << (32 - u32::from(prefix)),
        _ => return None,
    };
    Some(Ipv4Addr::from(u32::from(ip) & mask))
}

/// Sorted, overlapping and adjacent ranges merged.
fn merge(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    ranges.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for (min, max) in ranges {
        let (min, max) = (min.min(max), min.max(max));
        match out.last_mut() {
            Some(last) if u32::from(min) <= u32::from(last.1) + 1 => last.1 = last.1.max(max),
            _ => out.push((min, max)),
        }
    }
    out
}

fn entry(
    endpoint_id: u32,
    ranges: Vec<(u16, u16)>,
    peer: String,
) -> Result<PolicyEntry, DataplaneError> {
    let ranges = merge(ranges);
    if ranges.len() > MAX_PORT_RANGES {
        return Err(DataplaneError::TooManyPortRanges {
            endpoint_id,
            peer,
            count: ranges.len(),
            max: MAX_PORT_RANGES,
        });
    }
    let mut e = PolicyEntry {
        count: ranges.len() as u32,
        ..Default::default()
    };
    for (slot, (min, max)) in e.ranges.iter_mut().zip(ranges) {
        *slot = PortRange { min, max };
    }
    Ok(e)
}

/// How many `HM_POLICY` and `HM_POLICY_CIDR` entries an endpoint with `rules` takes; an
/// error when a key would need more port ranges than an entry holds.
pub fn entry_counts(rules: &EndpointRules) -> Result<(usize, usize), DataplaneError> {
    let (identity, cidr) = entries(0, rules)?;
    Ok((identity.len(), cidr.len()))
}

/// The map entries of one endpoint's rules.
type Entries = (
    BTreeMap<PolicyKey, PolicyEntry>,
    BTreeMap<CidrKey, PolicyEntry>,
);

/// Per (direction, proto): (network, prefix) -> port ranges.
type CidrRanges = BTreeMap<(Ipv4Addr, u8), Vec<(u16, u16)>>;

fn entries(endpoint_id: u32, rules: &EndpointRules) -> Result<Entries, DataplaneError> {
    let mut by_identity: BTreeMap<PolicyKey, Vec<(u16, u16)>> = BTreeMap::new();
    let mut by_cidr: BTreeMap<(u8, u8), CidrRanges> = BTreeMap::new();
    for (direction, set) in [
        (DIR_TO_CONTAINER, &rules.ingress),
        (DIR_FROM_CONTAINER, &rules.egress),
    ] {
        let Some(set) = set else { continue };
        for Allow {
            peer,
            protocol,
            port_min,
            port_max,
        } in set
        {
            let proto = protocol.number();
            let range = (*port_min, *port_max);
            match *peer {
                PeerMatch::Identity(id) => by_identity
                    .entry(PolicyKey::new(endpoint_id, id, direction, proto))
                    .or_default()
                    .push(range),
                PeerMatch::Any => by_identity
                    .entry(PolicyKey::new(endpoint_id, identity::ANY, direction, proto))
                    .or_default()
                    .push(range),
                PeerMatch::Cidr(ip, prefix) => {
                    let net = network(ip, prefix)
                        .ok_or(DataplaneError::InvalidSubnet { subnet: ip, prefix })?;
                    by_cidr
                        .entry((direction, proto))
                        .or_default()
                        .entry((net, prefix))
                        .or_default()
                        .push(range);
                }
            }
        }
    }
    let mut identity_entries = BTreeMap::new();
    for (key, ranges) in by_identity {
        let peer = format!("identity {} proto {}", key.identity, key.proto);
        identity_entries.insert(key, entry(endpoint_id, ranges, peer)?);
    }
    let mut cidr_entries = BTreeMap::new();
    for ((direction, proto), prefixes) in &by_cidr {
        for (&(net, prefix), ranges) in prefixes {
            // An LPM lookup finds only the longest prefix: it carries the ranges of every
            // shorter prefix that covers it.
            let mut all = ranges.clone();
            for (&(other, other_prefix), more) in prefixes {
                if other_prefix < prefix && network(net, other_prefix) == Some(other) {
                    all.extend_from_slice(more);
                }
            }
            let data = PolicyCidrKey {
                endpoint_id,
                direction: *direction,
                proto: *proto,
                _pad: [0; 2],
                addr: u32::from_ne_bytes(net.octets()),
            };
            let key = (POLICY_CIDR_FIXED_BITS + u32::from(prefix), data);
            let peer = format!("{net}/{prefix} proto {proto}");
            cidr_entries.insert(key, entry(endpoint_id, all, peer)?);
        }
    }
    Ok((identity_entries, cidr_entries))
}

impl Dataplane {
    /// Sets the identity of the endpoint on host-side veth `ifindex` (after `attach_endpoint`).
    pub fn set_endpoint_identity(
        &mut self,
        ifindex: u32,
        identity: u32,
    ) -> Result<(), DataplaneError> {
        let mut info = match self.endpoints.get(&ifindex, 0) {
            Ok(info) => info,
            Err(e) if is_not_found(&e) => {
                return Err(DataplaneError::EndpointNotAttached { ifindex });
            }
            Err(e) => return Err(DataplaneError::map(MAP_ENDPOINTS, "looking up")(e)),
        };
        if info.identity == identity {
            return Ok(());
        }
        info.identity = identity;
        self.endpoints
            .insert(ifindex, info, 0)
            .map_err(DataplaneError::map(MAP_ENDPOINTS, "inserting"))?;
        tracing::debug!(ifindex, identity, "endpoint identity set");
        Ok(())
    }

    /// Adds or replaces what the ipcache says of `ip`: its identity (1..=2^24-1) and the
    /// underlay address of the node that holds it, if that is another node.
    pub fn set_ipcache(&mut self, ip: Ipv4Addr, entry: IpcacheEntry) -> Result<(), DataplaneError> {
        let IpcacheEntry {
            identity,
            tunnel_endpoint,
        } = entry;
        if identity == identity::ANY || identity > identity::MAX {
            return Err(DataplaneError::InvalidIdentity { identity });
        }
        let tunnel_endpoint = match tunnel_endpoint {
            None => 0,
            Some(addr) if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() => {
                return Err(DataplaneError::InvalidTunnelEndpoint { addr });
            }
            Some(addr) => u32::from_ne_bytes(addr.octets()),
        };
        let value = IpcacheValue {
            identity,
            tunnel_endpoint,
        };
        self.policy
            .ipcache
            .insert(u32::from_ne_bytes(ip.octets()), value, 0)
            .map_err(DataplaneError::map(MAP_IPCACHE, "inserting"))
    }

    /// Removes what the ipcache says of `ip`; succeeds if it is already gone.
    pub fn remove_ipcache(&mut self, ip: Ipv4Addr) -> Result<(), DataplaneError> {
        match self.policy.ipcache.remove(&u32::from_ne_bytes(ip.octets())) {
            Err(e) if !is_not_found(&e) => Err(DataplaneError::map(MAP_IPCACHE, "removing")(e)),
            _ => Ok(()),
        }
    }

    /// Every ipcache entry, sorted by address.
    pub fn ipcache(&self) -> Result<Vec<(Ipv4Addr, IpcacheEntry)>, DataplaneError> {
        let mut out = Vec::new();
        for entry in self.policy.ipcache.iter() {
            match entry {
                Ok((addr, value)) => out.push((
                    Ipv4Addr::from(addr.to_ne_bytes()),
                    IpcacheEntry {
                        identity: value.identity,
                        tunnel_endpoint: (value.tunnel_endpoint != 0)
                            .then(|| Ipv4Addr::from(value.tunnel_endpoint.to_ne_bytes())),
                    },
                )),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(DataplaneError::map(MAP_IPCACHE, "reading")(e)),
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Replaces the endpoint's rules: writes the new entries first, then sets the enforce flags,
    /// then deletes stale entries; `None` for a direction turns enforcement off.
    pub fn set_endpoint_policy(
        &mut self,
        endpoint_id: u32,
        rules: &EndpointRules,
    ) -> Result<(), DataplaneError> {
        let (identity_entries, cidr_entries) = entries(endpoint_id, rules)?;
        for (key, value) in &identity_entries {
            self.policy
                .rules
                .insert(key, value, 0)
                .map_err(DataplaneError::map(MAP_POLICY, "inserting"))?;
        }
        for ((prefix_len, data), value) in &cidr_entries {
            self.policy
                .cidr
                .insert(&Key::new(*prefix_len, *data), value, 0)
                .map_err(DataplaneError::map(MAP_POLICY_CIDR, "inserting"))?;
        }
        let mut flags = 0;
        if rules.ingress.is_some() {
            flags |= endpoint_flags::INGRESS_ENFORCED;
        }
        if rules.egress.is_some() {
            flags |= endpoint_flags::EGRESS_ENFORCED;
        }
        self.policy.flags.insert(endpoint_id, flags);
        self.apply_endpoint_flags(endpoint_id, flags)?;
        let old = self.policy.written.remove(&endpoint_id).unwrap_or_default();
        for key in old
            .identity
            .difference(&identity_entries.keys().copied().collect())
        {
            match self.policy.rules.remove(key) {
                Err(e) if !is_not_found(&e) => {
                    return Err(DataplaneError::map(MAP_POLICY, "removing")(e));
                }
                _ => {}
            }
        }
        for (prefix_len, data) in old.cidr.difference(&cidr_entries.keys().copied().collect()) {
            match self.policy.cidr.remove(&Key::new(*prefix_len, *data)) {
                Err(e) if !is_not_found(&e) => {
                    return Err(DataplaneError::map(MAP_POLICY_CIDR, "removing")(e));
                }
                _ => {}
            }
        }
        tracing::debug!(
            endpoint_id,
            flags,
            identity_entries = identity_entries.len(),
            cidr_entries = cidr_entries.len(),
            "endpoint policy set"
        );
        self.policy.written.insert(
            endpoint_id,
            Written {
                identity: identity_entries.into_keys().collect(),
                cidr: cidr_entries.into_keys().collect(),
            },
        );
        // Connections the old rules let in keep going only if the new ones allow them too: the
        // state of each changed direction is forgotten, so the next packet is checked again.
        let old = self
            .policy
            .rules_of
            .insert(endpoint_id, rules.clone())
            .unwrap_or_default();
        let mut scopes = Vec::new();
        if old.ingress != rules.ingress {
            scopes.push(ct_scope::INGRESS);
        }
        if old.egress != rules.egress {
            scopes.push(ct_scope::EGRESS);
        }
        if !scopes.is_empty() {
            let forgotten = self.forget_flows(endpoint_id, &scopes)?;
            tracing::debug!(
                endpoint_id,
                forgotten,
                "policy changed: flows checked again"
            );
        }
        Ok(())
    }

    /// Removes the policy conntrack entries of `scopes` that involve an address of
    /// `endpoint_id`; returns how many went.
    fn forget_flows(&mut self, endpoint_id: u32, scopes: &[u8]) -> Result<usize, DataplaneError> {
        let addresses: Vec<u32> = self
            .links
            .values()
            .filter(|l| l.endpoint_id == endpoint_id)
            .map(|l| u32::from_ne_bytes(l.ip.octets()))
            .collect();
        if addresses.is_empty() {
            return Ok(0);
        }
        let ct = &mut self.services.ct;
        let stale: Vec<CtKey> = ct
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                scopes.contains(&k.scope)
                    && (addresses.contains(&k.saddr) || addresses.contains(&k.daddr))
            })
            .collect();
        let mut removed = 0;
        for key in &stale {
            match ct.remove(key) {
                Ok(()) => removed += 1,
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(DataplaneError::map(MAP_CT, "removing")(e)),
            }
        }
        Ok(removed)
    }

    /// Takes the flow events the kernel wrote since the last call (non-blocking), plus the
    /// lost-events total.
    pub fn drain_flows(&mut self) -> Result<(Vec<FlowEvent>, u64), DataplaneError> {
        let mut events = Vec::new();
        while let Some(item) = self.policy.flows.next() {
            if item.len() >= size_of::<FlowRecord>() {
                // SAFETY: the kernel wrote a whole FlowRecord (plain integers, any bit pattern
                // valid); read_unaligned copes with any alignment of the ring buffer slot.
                let record =
                    unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowRecord>()) };
                events.push(FlowEvent::from_record(&record));
            }
        }
        let lost = match self.policy.flows_lost.get(&0, 0) {
            Ok(values) => values.iter().fold(0u64, |a, v| a.saturating_add(*v)),
            Err(e) => return Err(DataplaneError::map(MAP_FLOWS_LOST, "reading")(e)),
        };
        Ok((events, lost))
    }

    /// Writes `flags` into every `HM_ENDPOINTS` entry of `endpoint_id`.
    fn apply_endpoint_flags(&mut self, endpoint_id: u32, flags: u32) -> Result<(), DataplaneError> {
        let mut updates: Vec<(u32, EndpointInfo)> = Vec::new();
        for entry in self.endpoints.iter() {
            match entry {
                Ok((ifindex, info)) if info.endpoint_id == endpoint_id => {
                    updates.push((ifindex, EndpointInfo { flags, ..info }));
                }
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(DataplaneError::map(MAP_ENDPOINTS, "reading")(e)),
            }
        }
        for (ifindex, info) in updates {
            self.endpoints
                .insert(ifindex, info, 0)
                .map_err(DataplaneError::map(MAP_ENDPOINTS, "inserting"))?;
        }
        Ok(())
    }
}

impl Dataplane {
    /// Rebuilds which entries each endpoint has from the maps (taken over from an earlier
    /// daemon), so the next `set_endpoint_policy` removes what it no longer wants.
    pub(super) fn restore_policy(&mut self) -> Result<(), DataplaneError> {
        let PolicyMaps {
            rules,
            cidr,
            written,
            ..
        } = &mut self.policy;
        for key in rules.keys() {
            let key = key.map_err(DataplaneError::map(MAP_POLICY, "reading"))?;
            written
                .entry(key.endpoint_id)
                .or_default()
                .identity
                .insert(key);
        }
        for key in cidr.keys() {
            let key = key.map_err(DataplaneError::map(MAP_POLICY_CIDR, "reading"))?;
            let data = key.data();
            written
                .entry(data.endpoint_id)
                .or_default()
                .cidr
                .insert((key.prefix_len(), data));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::merge;

    #[test]
    fn ranges_merge_when_they_overlap_or_touch() {
        assert_eq!(
            merge(vec![(80, 80), (81, 90), (100, 200), (150, 160), (5, 5)]),
            vec![(5, 5), (80, 90), (100, 200)]
        );
        assert_eq!(merge(vec![(0, u16::MAX), (1, 2)]), vec![(0, u16::MAX)]);
    }
}
