//! Container networking on a node: a bridge with the node's gateway address,
//! and per container a network namespace joined to it by a veth pair.
//!
//! Invariant: only this module talks rtnetlink, and it never shells out to
//! `ip`. The seam is [`ContainerNetwork`]; [`NoNetwork`] serves `--mock`.

mod netlink;
mod netns;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

pub use netlink::Netlink;
pub use netns::{create_netns, current_netns_cookie, netns_cookie, remove_netns, run_in_netns};

use crate::state::Subnet;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("netlink {operation} on {target}: {message}")]
    Netlink {
        operation: &'static str,
        target: String,
        message: String,
    },
    #[error("network namespace {path}: {message}")]
    Netns { path: PathBuf, message: String },
    #[error("link {0} not found")]
    NoLink(String),
}

/// The node's container network.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Bridge every container's host-side veth joins.
    pub bridge: String,
    pub subnet: Subnet,
    /// Container MTU: the underlay MTU less 50 bytes of VXLAN overhead.
    pub mtu: u32,
}

/// A container's attachment, as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub host_ifname: String,
    pub host_ifindex: u32,
}

#[async_trait]
pub trait ContainerNetwork: Send + Sync {
    /// Creates the bridge with the gateway address, idempotently.
    async fn ensure_node(&self) -> Result<(), NetworkError>;

    /// Creates the netns (if missing) and the veth pair, addresses the
    /// container side as eth0 with a default route via the gateway.
    /// Idempotent: an existing attachment is recreated.
    async fn attach(
        &self,
        netns: &Path,
        host_ifname: &str,
        ip: Ipv4Addr,
    ) -> Result<Attachment, NetworkError>;

    /// Removes the veth pair and the netns. Succeeds when already gone.
    async fn detach(&self, netns: &Path, host_ifname: &str) -> Result<(), NetworkError>;

    /// Index of a host-side link, if it exists.
    async fn ifindex(&self, name: &str) -> Result<Option<u32>, NetworkError>;

    /// Creates the overlay device (VXLAN in external mode) and routes the
    /// given CIDRs (cluster and services) through it; returns its ifindex.
    /// Idempotent.
    async fn ensure_overlay(&self, routes: &[Subnet]) -> Result<u32, NetworkError>;

    /// Index of the link that holds `ip` (the underlay interface).
    async fn ifindex_of_address(&self, ip: Ipv4Addr) -> Result<Option<u32>, NetworkError>;
}

pub use hivemind_common::{OVERLAY_DEVICE, VXLAN_PORT};

/// No kernel networking: for `web --mock` and unit tests.
pub struct NoNetwork;

#[async_trait]
impl ContainerNetwork for NoNetwork {
    async fn ensure_node(&self) -> Result<(), NetworkError> {
        Ok(())
    }
    async fn attach(
        &self,
        _netns: &Path,
        host_ifname: &str,
        _ip: Ipv4Addr,
    ) -> Result<Attachment, NetworkError> {
        Ok(Attachment {
            host_ifname: host_ifname.to_string(),
            host_ifindex: 0,
        })
    }
    async fn detach(&self, _netns: &Path, _host_ifname: &str) -> Result<(), NetworkError> {
        Ok(())
    }
    async fn ifindex(&self, _name: &str) -> Result<Option<u32>, NetworkError> {
        Ok(None)
    }
    async fn ensure_overlay(&self, _routes: &[Subnet]) -> Result<u32, NetworkError> {
        Ok(0)
    }
    async fn ifindex_of_address(&self, _ip: Ipv4Addr) -> Result<Option<u32>, NetworkError> {
        Ok(None)
    }
}

/// Stable, short names derived from the node and container ids: Linux link
/// names have at most 15 bytes.
pub fn host_ifname(node_id: &str, container_id: &str) -> String {
    format!("hm{:08x}", fnv1a(&format!("{node_id}/{container_id}")))
}

/// Name of a container's network namespace under /run/netns.
pub fn netns_path(node_id: &str, container_id: &str) -> PathBuf {
    PathBuf::from(format!("/run/netns/hm-{node_id}-{container_id}"))
}

fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_fit_the_kernel_limit_and_differ_per_node() {
        let a = host_ifname("n1", "web-abcdef");
        assert!(a.len() <= 15, "{a}");
        assert_eq!(a, host_ifname("n1", "web-abcdef"));
        assert_ne!(a, host_ifname("n2", "web-abcdef"));
    }
}
