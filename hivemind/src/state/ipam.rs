//! Container address management: one address per container from the node's
//! subnet, persisted so that no address is reused while a container holds it.

use std::net::Ipv4Addr;
use std::str::FromStr;

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::{IPAM, Store, StoreError};

/// An IPv4 subnet; the first host address is the node's gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    fn host_range(&self) -> std::ops::RangeInclusive<u32> {
        let base = u32::from(self.network);
        let size = 1u32 << (32 - u32::from(self.prefix));
        // .0 is the network, .1 the gateway, the last the broadcast.
        (base + 2)..=(base + size - 2)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.prefix));
        u32::from(ip) & mask == u32::from(self.network)
    }

    /// Whether the two subnets share an address (one holds the other's network address).
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a subnet like 10.244.0.0/24"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{prefix:?} is not a prefix length"))?;
        if !(8..=29).contains(&prefix) {
            return Err(format!("prefix /{prefix} must be between /8 and /29"));
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        if u32::from(ip) & !mask != 0 {
            return Err(format!("{s} has host bits set"));
        }
        Ok(Self {
            network: ip,
            prefix,
        })
    }
}

impl Store {
    /// Allocates the lowest free address of `subnet` to `owner`, or returns
    /// the address it already holds.
    pub fn allocate_ip(&self, subnet: Subnet, owner: &str) -> Result<Ipv4Addr, StoreError> {
        let txn = self.db.begin_write()?;
        let ip = {
            let mut table = txn.open_table(IPAM)?;
            let mut taken = std::collections::BTreeSet::new();
            for entry in table.iter()? {
                let (ip, holder) = entry?;
                if holder.value() == owner && subnet.contains(Ipv4Addr::from(ip.value())) {
                    return Ok(Ipv4Addr::from(ip.value()));
                }
                taken.insert(ip.value());
            }
            let free = subnet
                .host_range()
                .find(|ip| !taken.contains(ip))
                .ok_or_else(|| StoreError::SubnetFull(subnet.to_string()))?;
            table.insert(free, owner)?;
            Ipv4Addr::from(free)
        };
        txn.commit()?;
        Ok(ip)
    }

    /// Frees every address held by `owner`.
    pub fn release_ip(&self, owner: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(IPAM)?;
            table.retain(|_, holder| holder != owner)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Every allocated address and its holder.
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(IPAM)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (ip, holder) = entry?;
            out.push((Ipv4Addr::from(ip.value()), holder.value().to_string()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_unique_and_reused_only_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let subnet: Subnet = "10.244.0.0/29".parse().unwrap();
        assert_eq!(subnet.gateway(), Ipv4Addr::new(10, 244, 0, 1));
        let a = store.allocate_ip(subnet, "a").unwrap();
        let b = store.allocate_ip(subnet, "b").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 244, 0, 2));
        assert_eq!(b, Ipv4Addr::new(10, 244, 0, 3));
        assert_eq!(store.allocate_ip(subnet, "a").unwrap(), a, "idempotent");
        for owner in ["c", "d", "e"] {
            store.allocate_ip(subnet, owner).unwrap();
        }
        assert!(matches!(
            store.allocate_ip(subnet, "f"),
            Err(StoreError::SubnetFull(_))
        ));
        store.release_ip("a").unwrap();
        assert_eq!(store.allocate_ip(subnet, "f").unwrap(), a);
    }

    #[test]
    fn subnets_parse_strictly() {
        assert!("10.244.0.0/24".parse::<Subnet>().is_ok());
        assert!("10.244.0.1/24".parse::<Subnet>().is_err());
        assert!("10.244.0.0".parse::<Subnet>().is_err());
        assert!("10.244.0.0/30".parse::<Subnet>().is_err());
    }
}
