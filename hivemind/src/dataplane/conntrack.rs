//! Connection tracking seen from the daemon: the collector that removes connections that are
//! over (`HM_CT` is a plain hash map, nothing is evicted by the kernel), and the owners'
//! budgets it keeps honest.
//!
//! A connection is its two entries (original and reply direction, or the forward and reverse
//! entries of a policy check). Their state bits and last packet are taken together: a
//! connection that saw a FIN or RST goes after `CT_TCP_CLOSING_TIMEOUT_S` of quiet, an
//! established one after `CT_TCP_ESTABLISHED_TIMEOUT_S`, a handshake that never finished after
//! `CT_TCP_SYN_TIMEOUT_S`; UDP and ICMP by their own timeouts.

use std::collections::{HashMap as StdHashMap, HashSet};
use std::time::Duration;

use hivemind_common::{
    CT_ICMP_TIMEOUT_S, CT_OWNER_NODE, CT_TCP_CLOSING_TIMEOUT_S, CT_TCP_ESTABLISHED_TIMEOUT_S,
    CT_TCP_SYN_TIMEOUT_S, CT_TOTAL, CT_UDP_TIMEOUT_S, CtKey, CtValue, HAIRPIN_IP, IPPROTO_ICMP,
    IPPROTO_TCP, IPPROTO_UDP, MAP_CT, MAP_CT_BUDGET, ct_flags, ct_scope, ct_state,
};

use super::{Dataplane, DataplaneError, is_not_found};

/// What a collection found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtCollected {
    /// Entries left.
    pub entries: usize,
    /// Entries removed.
    pub removed: usize,
}

/// The other entry of the connection `key` belongs to, when it can be told.
pub fn pair_key(key: &CtKey, value: &CtValue) -> Option<CtKey> {
    if key.scope != ct_scope::SERVICE {
        return Some(
            CtKey::new(key.daddr, key.saddr, key.dport, key.sport, key.proto).with_scope(key.scope),
        );
    }
    // Network order as in the packets.
    let hairpin_ip = u32::from_ne_bytes(HAIRPIN_IP);
    if value.flags & ct_flags::REPLY != 0 {
        // A published port's reply entry on the backend's node stands alone.
        if value.backend_ip == 0 {
            return None;
        }
        if value.flags & ct_flags::SNAT != 0 {
            return Some(CtKey::new(
                value.nat_ip,
                value.rev_vip,
                value.nat_port,
                value.rev_port,
                key.proto,
            ));
        }
        let client = if value.flags & ct_flags::HAIRPIN != 0 {
            key.saddr
        } else {
            key.daddr
        };
        Some(CtKey::new(
            client,
            value.rev_vip,
            key.dport,
            value.rev_port,
            key.proto,
        ))
    } else if value.flags & ct_flags::SNAT != 0 {
        Some(CtKey::new(
            value.backend_ip,
            value.nat_ip,
            value.backend_port,
            value.nat_port,
            key.proto,
        ))
    } else {
        let client = if value.backend_ip == key.saddr {
            hairpin_ip
        } else {
            key.saddr
        };
        Some(CtKey::new(
            value.backend_ip,
            client,
            value.backend_port,
            key.sport,
            key.proto,
        ))
    }
}

/// How long a connection of `proto` whose entries showed `state` lives without a packet.
pub fn timeout(proto: u8, state: u8) -> Duration {
    let seconds = match proto {
        IPPROTO_TCP if state & (ct_state::FIN | ct_state::RST) != 0 => CT_TCP_CLOSING_TIMEOUT_S,
        IPPROTO_TCP if state & ct_state::ESTABLISHED != 0 => CT_TCP_ESTABLISHED_TIMEOUT_S,
        IPPROTO_TCP => CT_TCP_SYN_TIMEOUT_S,
        IPPROTO_UDP => CT_UDP_TIMEOUT_S,
        IPPROTO_ICMP => CT_ICMP_TIMEOUT_S,
        _ => CT_UDP_TIMEOUT_S,
    };
    Duration::from_secs(seconds)
}

/// The keys of the connections in `entries` that are over at `now` (both entries of each).
pub fn expired(entries: &StdHashMap<CtKey, CtValue>, now: Duration) -> HashSet<CtKey> {
    let now = now.as_nanos() as u64;
    let mut doomed = HashSet::new();
    for (key, value) in entries {
        if doomed.contains(key) {
            continue;
        }
        let pair = pair_key(key, value).and_then(|p| entries.get_key_value(&p));
        let (state, last_seen) = match pair {
            Some((_, other)) => (
                value.state | other.state,
                value.last_seen_ns.max(other.last_seen_ns),
            ),
            None => (value.state, value.last_seen_ns),
        };
        let limit = timeout(key.proto, state).as_nanos() as u64;
        if now.saturating_sub(last_seen) > limit {
            doomed.insert(*key);
            if let Some((pair, _)) = pair {
                doomed.insert(*pair);
            }
        }
    }
    doomed
}

impl Dataplane {
    /// Removes the connections that are over at `now` (CLOCK_MONOTONIC, see
    /// [`super::monotonic_now`]), then recounts what each owner holds (the data path counts
    /// up, this count is the truth).
    pub fn collect_conntrack(&mut self, now: Duration) -> Result<CtCollected, DataplaneError> {
        let ct = &mut self.services.ct;
        let mut entries = StdHashMap::new();
        for entry in ct.iter() {
            match entry {
                Ok((key, value)) => {
                    entries.insert(key, value);
                }
                // Removed while listed.
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(DataplaneError::map(MAP_CT, "reading")(e)),
            }
        }
        let doomed = expired(&entries, now);
        for key in &doomed {
            match ct.remove(key) {
                Err(e) if !is_not_found(&e) => {
                    return Err(DataplaneError::map(MAP_CT, "removing")(e));
                }
                _ => {
                    entries.remove(key);
                }
            }
        }
        let mut owned: StdHashMap<u32, u64> = StdHashMap::new();
        for value in entries.values() {
            if value.owner != CT_OWNER_NODE {
                *owned.entry(value.owner).or_default() += 1;
            }
        }
        owned.insert(CT_TOTAL, entries.len() as u64);
        let budget = &mut self.services.ct_budget;
        let stale: Vec<u32> = budget
            .keys()
            .filter_map(Result::ok)
            .filter(|owner| !owned.contains_key(owner))
            .collect();
        for owner in stale {
            let _ = budget.remove(&owner);
        }
        for (owner, count) in &owned {
            budget
                .insert(owner, count, 0)
                .map_err(DataplaneError::map(MAP_CT_BUDGET, "writing"))?;
        }
        if !doomed.is_empty() {
            tracing::debug!(
                removed = doomed.len(),
                left = entries.len(),
                "conntrack collected"
            );
        }
        Ok(CtCollected {
            entries: entries.len(),
            removed: doomed.len(),
        })
    }

    /// Every conntrack entry, as the maps hold them.
    pub fn conntrack(&self) -> Result<Vec<(CtKey, CtValue)>, DataplaneError> {
        self.services
            .ct
            .iter()
            .filter(|e| !matches!(e, Err(e) if is_not_found(e)))
            .collect::<Result<_, _>>()
            .map_err(DataplaneError::map(MAP_CT, "reading"))
    }

    /// Entries each owner holds, as the data path counts them (recounted at each collection).
    pub fn conntrack_owners(&self) -> Result<Vec<(u32, u64)>, DataplaneError> {
        let counts: Vec<(u32, u64)> = self
            .services
            .ct_budget
            .iter()
            .collect::<Result<_, _>>()
            .map_err(DataplaneError::map(MAP_CT_BUDGET, "reading"))?;
        Ok(counts
            .into_iter()
            .filter(|(owner, _)| *owner != CT_TOTAL)
            .collect())
    }

    /// Entries of every owner, as the data path counts them (recounted at each collection):
    /// the owners' budgets apply from `CT_PRESSURE` on.
    pub fn conntrack_total(&self) -> Result<u64, DataplaneError> {
        match self.services.ct_budget.get(&CT_TOTAL, 0) {
            Ok(total) => Ok(total),
            Err(e) if is_not_found(&e) => Ok(0),
            Err(e) => Err(DataplaneError::map(MAP_CT_BUDGET, "reading")(e)),
        }
    }

    /// Sets the count `conntrack_total` reads, as if the table held `total` entries: for tests
    /// of the budget under pressure without filling the table (the next collection recounts).
    pub fn set_conntrack_total_for_test(&mut self, total: u64) -> Result<(), DataplaneError> {
        self.services
            .ct_budget
            .insert(CT_TOTAL, total, 0)
            .map_err(DataplaneError::map(MAP_CT_BUDGET, "writing"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
        u32::from_ne_bytes([a, b, c, d])
    }

    fn entry(state: u8, last_seen_s: u64) -> CtValue {
        CtValue {
            state,
            last_seen_ns: last_seen_s * 1_000_000_000,
            ..CtValue::default()
        }
    }

    #[test]
    fn service_entries_pair_up_both_ways_and_in_hairpin() {
        let (client, vip, backend) = (ip(10, 0, 1, 2), ip(10, 96, 0, 5), ip(10, 0, 2, 3));
        let original = CtKey::new(client, vip, 1000, 80, IPPROTO_TCP);
        let value = CtValue {
            backend_ip: backend,
            backend_port: 8080,
            rev_vip: vip,
            rev_port: 80,
            flags: ct_flags::SERVICE,
            ..CtValue::default()
        };
        let reply = pair_key(&original, &value).unwrap();
        assert_eq!(reply, CtKey::new(backend, client, 8080, 1000, IPPROTO_TCP));
        let reply_value = CtValue {
            flags: ct_flags::SERVICE | ct_flags::REPLY,
            ..value
        };
        assert_eq!(pair_key(&reply, &reply_value), Some(original));

        // Hairpin: the client is the backend and its packets carry HAIRPIN_IP.
        let original = CtKey::new(backend, vip, 1000, 80, IPPROTO_TCP);
        let reply = pair_key(&original, &value).unwrap();
        assert_eq!(reply.daddr, u32::from_ne_bytes(HAIRPIN_IP));
        let reply_value = CtValue {
            flags: ct_flags::SERVICE | ct_flags::REPLY | ct_flags::HAIRPIN,
            ..value
        };
        assert_eq!(pair_key(&reply, &reply_value), Some(original));
    }

    #[test]
    fn snat_entries_of_a_published_port_pair_up_through_the_gateway_port() {
        let (client, node, gateway, backend) = (
            ip(192, 168, 7, 9),
            ip(192, 168, 7, 1),
            ip(10, 0, 1, 1),
            ip(10, 0, 2, 3),
        );
        let original = CtKey::new(client, node, 40000, 8080, IPPROTO_TCP);
        let value = CtValue {
            backend_ip: backend,
            backend_port: 80,
            rev_vip: node,
            rev_port: 8080,
            flags: ct_flags::SERVICE | ct_flags::SNAT,
            nat_ip: gateway,
            nat_port: 2000,
            ..CtValue::default()
        };
        let reply = pair_key(&original, &value).unwrap();
        assert_eq!(reply, CtKey::new(backend, gateway, 80, 2000, IPPROTO_TCP));
        let reply_value = CtValue {
            flags: ct_flags::SERVICE | ct_flags::REPLY | ct_flags::SNAT,
            nat_ip: client,
            nat_port: 40000,
            ..value
        };
        assert_eq!(pair_key(&reply, &reply_value), Some(original));
    }

    #[test]
    fn connections_expire_by_state_and_the_later_packet_of_the_two() {
        let a = CtKey::new(ip(10, 0, 0, 1), ip(10, 0, 0, 2), 1, 2, IPPROTO_TCP)
            .with_scope(ct_scope::EGRESS);
        let b = pair_key(&a, &CtValue::default()).unwrap();
        let mut entries = StdHashMap::new();
        // Established, one direction quiet for long, the other recent: kept.
        entries.insert(a, entry(ct_state::SYN | ct_state::ESTABLISHED, 0));
        entries.insert(b, entry(ct_state::ESTABLISHED, 100));
        assert!(expired(&entries, Duration::from_secs(200)).is_empty());
        // A FIN on either side: gone after 10 s of quiet, both entries.
        entries.insert(b, entry(ct_state::ESTABLISHED | ct_state::FIN, 100));
        assert!(expired(&entries, Duration::from_secs(105)).is_empty());
        assert_eq!(
            expired(&entries, Duration::from_secs(111)),
            HashSet::from([a, b])
        );
        // A handshake that never finished: 60 s.
        let syn = CtKey::new(ip(10, 0, 0, 3), ip(10, 0, 0, 4), 5, 6, IPPROTO_TCP);
        let lone = StdHashMap::from([(syn, entry(ct_state::SYN, 0))]);
        assert!(expired(&lone, Duration::from_secs(59)).is_empty());
        assert_eq!(expired(&lone, Duration::from_secs(61)).len(), 1);
        // UDP: 60 s.
        let udp = CtKey::new(ip(10, 0, 0, 3), ip(10, 0, 0, 4), 5, 53, IPPROTO_UDP);
        let lone = StdHashMap::from([(udp, entry(0, 0))]);
        assert_eq!(expired(&lone, Duration::from_secs(61)).len(), 1);
    }
}
