//! The data-plane maps read whole, as the programs see them, for `hivemind debug bpf`, and the
//! policy verdict of a would-be flow computed from the same maps (`hivemind debug
//! policy-trace`), in the order `policy.rs` of the eBPF programs checks them.

use std::net::Ipv4Addr;

use aya::maps::lpm_trie::Key;
use hivemind_common::{
    Backend, DIR_FROM_CONTAINER, EndpointInfo, IPPROTO_TCP, IPPROTO_UDP, MAP_BACKENDS,
    MAP_ENDPOINTS, MAP_POLICY, MAP_POLICY_CIDR, POLICY_CIDR_FIXED_BITS, PolicyCidrKey, PolicyEntry,
    PolicyKey, endpoint_flags, identity,
};

use super::{Dataplane, DataplaneError, is_not_found};

/// What decided a would-be flow at one check point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyDecision {
    /// The endpoint enforces nothing in that direction.
    NotEnforced,
    /// DNS to the node's resolver passes every egress check.
    DnsToNode,
    /// Allowed by the `HM_POLICY` entry for this peer identity (or any, 0) and protocol (or
    /// any, 0), whose ranges hold the port.
    Identity { identity: u32, proto: u8 },
    /// Allowed by the `HM_POLICY_CIDR` entry of this prefix and protocol (or any, 0).
    Cidr {
        network: Ipv4Addr,
        prefix: u8,
        proto: u8,
    },
    /// No entry allows it: `drop_policy`.
    NoRule,
}

impl PolicyDecision {
    pub fn allows(&self) -> bool {
        !matches!(self, PolicyDecision::NoRule)
    }
}

/// Reads every entry of a hash map, skipping keys deleted while it is read.
macro_rules! entries {
    ($map:expr, $name:expr) => {{
        let mut out = Vec::new();
        for entry in $map.iter() {
            match entry {
                Ok(entry) => out.push(entry),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(DataplaneError::map($name, "reading")(e)),
            }
        }
        out
    }};
}

impl Dataplane {
    /// Every `HM_ENDPOINTS` entry: host veth ifindex and what the programs know of it.
    pub fn endpoint_entries(&self) -> Result<Vec<(u32, EndpointInfo)>, DataplaneError> {
        let mut out = entries!(self.endpoints, MAP_ENDPOINTS);
        out.sort_unstable_by_key(|(ifindex, _)| *ifindex);
        Ok(out)
    }

    /// Every `HM_BACKENDS` entry: backend id and address.
    pub fn backend_entries(&self) -> Result<Vec<(u32, Backend)>, DataplaneError> {
        let mut out = entries!(self.services.backends, MAP_BACKENDS);
        out.sort_unstable_by_key(|(id, _)| *id);
        Ok(out)
    }

    /// Every `HM_POLICY` entry.
    pub fn policy_entries(&self) -> Result<Vec<(PolicyKey, PolicyEntry)>, DataplaneError> {
        let mut out = entries!(self.policy.rules, MAP_POLICY);
        out.sort_unstable_by_key(|(key, _)| *key);
        Ok(out)
    }

    /// Every `HM_POLICY_CIDR` entry with the peer prefix length.
    pub fn policy_cidr_entries(
        &self,
    ) -> Result<Vec<(PolicyCidrKey, u8, PolicyEntry)>, DataplaneError> {
        let mut out = Vec::new();
        for entry in self.policy.cidr.iter() {
            match entry {
                Ok((key, value)) => {
                    let prefix = key.prefix_len().saturating_sub(POLICY_CIDR_FIXED_BITS) as u8;
                    out.push((key.data(), prefix, value));
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(DataplaneError::map(MAP_POLICY_CIDR, "reading")(e)),
            }
        }
        out.sort_unstable_by_key(|(key, prefix, _)| (key.endpoint_id, key.addr, *prefix));
        Ok(out)
    }

    /// The identity the programs give `addr`: its ipcache entry, the node for the gateway,
    /// else the outside.
    pub fn identity_of(&self, addr: Ipv4Addr, gateway: Option<Ipv4Addr>) -> u32 {
        match self
            .policy
            .ipcache
            .get(&u32::from_ne_bytes(addr.octets()), 0)
        {
            Ok(value) => value.identity,
            Err(_) if gateway == Some(addr) => identity::HOST,
            Err(_) => identity::WORLD,
        }
    }

    /// What the check of `info`'s endpoint in `direction` decides for a new flow with a peer
    /// of `peer_identity` at `peer_addr`, to destination `port` over `proto`: the same
    /// lookups as the programs' `allowed_by_rules`, against the kernel's maps.
    #[allow(clippy::too_many_arguments)] // one argument per field the programs look at
    pub fn policy_decision(
        &self,
        info: &EndpointInfo,
        direction: u8,
        peer_identity: u32,
        peer_addr: Ipv4Addr,
        proto: u8,
        port: u16,
        gateway: Option<Ipv4Addr>,
    ) -> Result<PolicyDecision, DataplaneError> {
        let enforced_bit = if direction == DIR_FROM_CONTAINER {
            endpoint_flags::EGRESS_ENFORCED
        } else {
            endpoint_flags::INGRESS_ENFORCED
        };
        if info.flags & enforced_bit == 0 {
            return Ok(PolicyDecision::NotEnforced);
        }
        if direction == DIR_FROM_CONTAINER
            && (proto == IPPROTO_UDP || proto == IPPROTO_TCP)
            && port == 53
            && gateway == Some(peer_addr)
        {
            return Ok(PolicyDecision::DnsToNode);
        }
        let holds = |entry: &PolicyEntry| {
            entry.ranges[..(entry.count as usize).min(entry.ranges.len())]
                .iter()
                .any(|r| r.min <= port && port <= r.max)
        };
        for (identity, proto) in [
            (peer_identity, proto),
            (peer_identity, 0),
            (identity::ANY, proto),
            (identity::ANY, 0),
        ] {
            let key = PolicyKey::new(info.endpoint_id, identity, direction, proto);
            match self.policy.rules.get(&key, 0) {
                Ok(entry) if holds(&entry) => {
                    return Ok(PolicyDecision::Identity { identity, proto });
                }
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(DataplaneError::map(MAP_POLICY, "reading")(e)),
            }
        }
        for proto in [proto, 0] {
            let data = PolicyCidrKey {
                endpoint_id: info.endpoint_id,
                direction,
                proto,
                _pad: [0; 2],
                addr: u32::from_ne_bytes(peer_addr.octets()),
            };
            let key = Key::new(POLICY_CIDR_FIXED_BITS + 32, data);
            // A lookup in an LPM trie finds the longest prefix that holds the address.
            if let Ok(entry) = self.policy.cidr.get(&key, 0)
                && holds(&entry)
            {
                let (network, prefix) = self
                    .policy_cidr_entries()?
                    .into_iter()
                    .filter(|(k, prefix, _)| {
                        k.endpoint_id == info.endpoint_id
                            && k.direction == direction
                            && k.proto == proto
                            && contains(k.addr, *prefix, data.addr)
                    })
                    .map(|(k, prefix, _)| (Ipv4Addr::from(k.addr.to_ne_bytes()), prefix))
                    .max_by_key(|(_, prefix)| *prefix)
                    .unwrap_or((peer_addr, 32));
                return Ok(PolicyDecision::Cidr {
                    network,
                    prefix,
                    proto,
                });
            }
        }
        Ok(PolicyDecision::NoRule)
    }
}

/// Whether the prefix `network/prefix` (network byte order) holds `addr`.
fn contains(network: u32, prefix: u8, addr: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from_be(network) & mask == u32::from_be(addr) & mask
}
