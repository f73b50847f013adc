//! Egress NAT (masquerade) in the kernel: the switch and the node address (`HM_NODE_CONFIG`),
//! the destinations never masqueraded (`HM_NO_MASQ`), the mappings the programs make
//! (`HM_NAT`) and their garbage collection, and the counters under `DIR_NAT`.
//!
//! The programs (`hm_nat_egress` on the underlay's TC egress, the reverse translation in
//! `hm_tc_underlay` or `hm_nat_ingress` on its TC ingress) make a mapping per flow and free it
//! on an RST; `collect_nat` frees the rest by idle time: closing TCP after
//! `NAT_CLOSING_TIMEOUT_S`, TCP after `NAT_TCP_TIMEOUT_S`, UDP after `NAT_UDP_TIMEOUT_S`, ICMP
//! echo after `NAT_ICMP_TIMEOUT_S`.

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie, MapData, lpm_trie::Key},
};
use hivemind_common::{
    DIR_NAT, IPPROTO_ICMP, IPPROTO_TCP, MAP_NAT, MAP_NO_MASQ, MAX_NAT_ENTRIES, MAX_NO_MASQ,
    NAT_CLOSING_TIMEOUT_S, NAT_ICMP_TIMEOUT_S, NAT_TCP_TIMEOUT_S, NAT_UDP_TIMEOUT_S, NatKey,
    NatValue, nat_flags, node_flags, reason,
};

use super::{Dataplane, DataplaneError, is_not_found};

/// CLOCK_MONOTONIC, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_now() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a plain call writing into a local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// The NAT maps.
pub(super) struct NatMaps {
    pub(super) mappings: HashMap<MapData, NatKey, NatValue>,
    no_masq: LpmTrie<MapData, u32, u8>,
    /// The prefixes this process wrote to `HM_NO_MASQ`.
    excluded: Vec<(Ipv4Addr, u8)>,
}

impl NatMaps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let mut take =
            |map: &'static str| ebpf.take_map(map).ok_or(DataplaneError::MapMissing { map });
        let mappings =
            HashMap::try_from(take(MAP_NAT)?).map_err(DataplaneError::map(MAP_NAT, "opening"))?;
        let no_masq = LpmTrie::try_from(take(MAP_NO_MASQ)?)
            .map_err(DataplaneError::map(MAP_NO_MASQ, "opening"))?;
        Ok(Self {
            mappings,
            no_masq,
            excluded: Vec::new(),
        })
    }
}

/// One masquerade mapping, as `hivemind debug` and the tests read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NatMapping {
    pub proto: u8,
    pub container: Ipv4Addr,
    pub container_port: u16,
    pub remote: Ipv4Addr,
    pub remote_port: u16,
    /// The node's port (echo identifier for ICMP) the flow uses on the wire.
    pub nat_port: u16,
    pub closing: bool,
}

/// The NAT's counters: packets translated each way, mappings made, drops by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatCounters {
    pub masqueraded: u64,
    pub reversed: u64,
    pub new_mappings: u64,
    pub drops: BTreeMap<u8, u64>,
}

impl Dataplane {
    /// Turns masquerading on with `node_ip` as the source (or off with `None`), never for
    /// destinations in `exclude` (network, prefix). Replaces what an earlier call wrote.
    pub fn set_masquerade(
        &mut self,
        node_ip: Option<Ipv4Addr>,
        exclude: &[(Ipv4Addr, u8)],
    ) -> Result<(), DataplaneError> {
        if exclude.len() > MAX_NO_MASQ as usize {
            return Err(DataplaneError::TooManyExclusions {
                count: exclude.len(),
                max: MAX_NO_MASQ,
            });
        }
        let key = |(network, prefix): (Ipv4Addr, u8)| {
            Key::new(u32::from(prefix), u32::from_ne_bytes(network.octets()))
        };
        for &(network, prefix) in exclude {
            if prefix > 32
                || u32::from(network) & u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0) != 0
            {
                return Err(DataplaneError::InvalidSubnet {
                    subnet: network,
                    prefix,
                });
            }
        }
        let nat = &mut self.nat;
        for &prefix in exclude {
            nat.no_masq
                .insert(&key(prefix), 1, 0)
                .map_err(DataplaneError::map(MAP_NO_MASQ, "inserting"))?;
        }
        for stale in nat.excluded.iter().filter(|p| !exclude.contains(p)) {
            match nat.no_masq.remove(&key(*stale)) {
                Err(e) if !is_not_found(&e) => {
                    return Err(DataplaneError::map(MAP_NO_MASQ, "removing")(e));
                }
                _ => {}
            }
        }
        nat.excluded = exclude.to_vec();
        let mut config = self.node_config()?;
        match node_ip {
            Some(ip) => {
                config.node_ip = u32::from_ne_bytes(ip.octets());
                config.flags |= node_flags::MASQUERADE;
            }
            None => config.flags &= !node_flags::MASQUERADE,
        }
        self.write_node_config(config)?;
        tracing::debug!(?node_ip, excluded = exclude.len(), "masquerade set");
        Ok(())
    }

    /// The address masqueraded packets leave from, `None` while masquerading is off.
    pub fn masquerade(&self) -> Option<Ipv4Addr> {
        let config = self.node_config().ok()?;
        (config.flags & node_flags::MASQUERADE != 0 && config.node_ip != 0)
            .then(|| Ipv4Addr::from(config.node_ip.to_ne_bytes()))
    }

    /// Every mapping (from its out entry), sorted.
    pub fn nat_mappings(&self) -> Result<Vec<NatMapping>, DataplaneError> {
        let mut mappings = Vec::new();
        for entry in self.nat.mappings.iter() {
            let (key, value) = match entry {
                Ok(entry) => entry,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(DataplaneError::map(MAP_NAT, "reading")(e)),
            };
            if key.dir != NatKey::OUT {
                continue;
            }
            mappings.push(NatMapping {
                proto: key.proto,
                container: Ipv4Addr::from(key.local.to_ne_bytes()),
                container_port: u16::from_be(key.local_port),
                remote: Ipv4Addr::from(key.remote.to_ne_bytes()),
                remote_port: u16::from_be(key.remote_port),
                nat_port: u16::from_be(value.port),
                closing: value.flags & nat_flags::CLOSING != 0,
            });
        }
        mappings.sort_unstable();
        Ok(mappings)
    }

    /// Frees the mappings idle for longer than their timeout (see the module doc), `now` being
    /// CLOCK_MONOTONIC as `bpf_ktime_get_ns` reads it: a mapping's two entries go together,
    /// idle since the later of their last packets. Returns how many entries went.
    pub fn collect_nat(&mut self, now: Duration) -> Result<usize, DataplaneError> {
        let now_ns = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let mut entries = std::collections::HashMap::new();
        for entry in self.nat.mappings.iter() {
            match entry {
                Ok((key, value)) => {
                    entries.insert(key, value);
                }
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(DataplaneError::map(MAP_NAT, "reading")(e)),
            }
        }
        let expired_after = |proto: u8, flags: u8, last_seen_ns: u64| {
            let timeout = match proto {
                IPPROTO_TCP if flags & nat_flags::CLOSING != 0 => NAT_CLOSING_TIMEOUT_S,
                IPPROTO_TCP => NAT_TCP_TIMEOUT_S,
                IPPROTO_ICMP => NAT_ICMP_TIMEOUT_S,
                _ => NAT_UDP_TIMEOUT_S,
            };
            now_ns.saturating_sub(last_seen_ns) > timeout.saturating_mul(1_000_000_000)
        };
        let mut expired = Vec::new();
        let mut paired = std::collections::HashSet::new();
        for (key, value) in entries.iter().filter(|(k, _)| k.dir == NatKey::OUT) {
            let back_key = NatKey {
                local: key.remote,
                remote: value.addr,
                local_port: key.remote_port,
                remote_port: value.port,
                proto: key.proto,
                dir: NatKey::IN,
                _pad: [0; 2],
            };
            let back = entries.get(&back_key);
            let last = back.map_or(value.last_seen_ns, |b| {
                b.last_seen_ns.max(value.last_seen_ns)
            });
            let flags = back.map_or(value.flags, |b| b.flags | value.flags);
            if expired_after(key.proto, flags, last) {
                expired.push(*key);
                if back.is_some() {
                    expired.push(back_key);
                }
            }
            paired.insert(back_key);
        }
        // An in entry whose out entry is gone (a race between two CPUs) goes by its own time.
        for (key, value) in entries.iter().filter(|(k, _)| k.dir == NatKey::IN) {
            if !paired.contains(key) && expired_after(key.proto, value.flags, value.last_seen_ns) {
                expired.push(*key);
            }
        }
        let mut freed = 0;
        for key in expired {
            match self.nat.mappings.remove(&key) {
                Ok(()) => freed += 1,
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(DataplaneError::map(MAP_NAT, "removing")(e)),
            }
        }
        if freed > 0 {
            tracing::debug!(freed, "nat entries expired");
        }
        Ok(freed)
    }

    /// Mappings in use (half the entries of `HM_NAT`) and how many fit.
    pub fn nat_usage(&self) -> (usize, u32) {
        let entries = self.nat.mappings.keys().filter(Result::is_ok).count();
        (entries / 2, MAX_NAT_ENTRIES / 2)
    }

    /// The NAT's counters, summed over CPUs.
    pub fn nat_counters(&self) -> Result<NatCounters, DataplaneError> {
        let mut nat = NatCounters::default();
        self.metrics.each_but_forwarded(|key, value| {
            if key.direction != DIR_NAT {
                return;
            }
            match key.reason {
                reason::NAT_MASQUERADED => nat.masqueraded += value.packets,
                reason::NAT_REVERSED => nat.reversed += value.packets,
                reason::NAT_NEW_MAPPING => nat.new_mappings += value.packets,
                why if reason::is_drop(why) => *nat.drops.entry(why).or_default() += value.packets,
                _ => {}
            }
        })?;
        Ok(nat)
    }
}

impl Dataplane {
    /// Rebuilds the exclusions this process wrote from `HM_NO_MASQ` (taken over from an earlier
    /// daemon).
    pub(super) fn restore_nat(&mut self) -> Result<(), DataplaneError> {
        let nat = &mut self.nat;
        nat.excluded.clear();
        for key in nat.no_masq.keys() {
            let key = key.map_err(DataplaneError::map(MAP_NO_MASQ, "reading"))?;
            nat.excluded.push((
                Ipv4Addr::from(key.data().to_ne_bytes()),
                key.prefix_len() as u8,
            ));
        }
        Ok(())
    }
}
