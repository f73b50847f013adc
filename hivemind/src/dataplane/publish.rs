//! Published ports: the node's address (`NodeConfig::node_ip`), the switch the programs read
//! (`node_flags::PUBLISHED`) and the local backends' published ports (`HM_PUBLISHED`). The
//! frontends themselves are services on the node's address (`set_service` with
//! `node_address()` as the VIP).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};
use hivemind_common::{MAP_PUBLISHED, MAX_PUBLISHED, PublishedKey, node_flags};

use super::{Dataplane, DataplaneError, is_not_found};

/// `HM_PUBLISHED` and what this process wrote to it.
pub(super) struct PublishMaps {
    published: HashMap<MapData, PublishedKey, u16>,
    written: BTreeSet<PublishedKey>,
}

impl PublishMaps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let map = ebpf
            .take_map(MAP_PUBLISHED)
            .ok_or(DataplaneError::MapMissing { map: MAP_PUBLISHED })?;
        Ok(Self {
            published: HashMap::try_from(map)
                .map_err(DataplaneError::map(MAP_PUBLISHED, "opening"))?,
            written: BTreeSet::new(),
        })
    }
}

impl Dataplane {
    /// Sets the node's own address: the source of masqueraded packets and the address that
    /// answers on published ports.
    pub fn set_node_address(&mut self, address: Ipv4Addr) -> Result<(), DataplaneError> {
        let mut config = self.node_config()?;
        config.node_ip = u32::from_ne_bytes(address.octets());
        self.write_node_config(config)
    }

    /// The node's own address, once set.
    pub fn node_address(&self) -> Option<Ipv4Addr> {
        let config = self.node_config().ok()?;
        (config.node_ip != 0).then(|| Ipv4Addr::from(config.node_ip.to_ne_bytes()))
    }

    /// Whether `ip` is a local backend of a published port.
    pub(super) fn publishes(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from_ne_bytes(ip.octets());
        self.publish.written.iter().any(|k| k.ip == ip)
    }

    /// Switches published ports on (some app publishes one) or off, and replaces the local
    /// backends' published ports: `(backend address, backend port, protocol) -> published
    /// port`.
    pub fn set_published(
        &mut self,
        on: bool,
        backends: &BTreeMap<(Ipv4Addr, u16, u8), u16>,
    ) -> Result<(), DataplaneError> {
        if backends.len() > MAX_PUBLISHED as usize {
            return Err(DataplaneError::MapFull {
                map: MAP_PUBLISHED,
                max: MAX_PUBLISHED,
            });
        }
        let key = |&(ip, port, proto): &(Ipv4Addr, u16, u8)| PublishedKey {
            ip: u32::from_ne_bytes(ip.octets()),
            port: port.to_be(),
            proto,
            _pad: 0,
        };
        self.mark_backends(backends.keys().map(|&(ip, _, _)| ip))?;
        let maps = &mut self.publish;
        let mut wanted = BTreeSet::new();
        for (backend, published) in backends {
            let k = key(backend);
            maps.published
                .insert(k, published, 0)
                .map_err(DataplaneError::map(MAP_PUBLISHED, "inserting"))?;
            wanted.insert(k);
        }
        for stale in maps.written.difference(&wanted) {
            match maps.published.remove(stale) {
                Err(e) if !is_not_found(&e) => {
                    return Err(DataplaneError::map(MAP_PUBLISHED, "removing")(e));
                }
                _ => {}
            }
        }
        maps.written = wanted;
        let mut config = self.node_config()?;
        let flags = if on {
            config.flags | node_flags::PUBLISHED
        } else {
            config.flags & !node_flags::PUBLISHED
        };
        if flags != config.flags {
            config.flags = flags;
            self.write_node_config(config)?;
            tracing::info!(on, "published ports switched");
        }
        Ok(())
    }
}

impl Dataplane {
    /// Rebuilds the published ports this process wrote from `HM_PUBLISHED` (taken over from an
    /// earlier daemon).
    pub(super) fn restore_published(&mut self) -> Result<(), DataplaneError> {
        let maps = &mut self.publish;
        maps.written = maps
            .published
            .keys()
            .collect::<Result<_, _>>()
            .map_err(DataplaneError::map(MAP_PUBLISHED, "reading"))?;
        Ok(())
    }
}
