//! The real [`ContainerNetwork`]: rtnetlink in the daemon's namespace and,
//! on a short-lived thread, inside each container's namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use async_trait::async_trait;
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder};

use super::netns::{create_netns, remove_netns, run_in_netns};
use super::{
    Attachment, ContainerNetwork, NetworkConfig, NetworkError, OVERLAY_DEVICE, VXLAN_PORT,
};
use crate::state::Subnet;

/// Name of the container side until it moves into the namespace as eth0.
fn peer_name(host_ifname: &str) -> String {
    format!("{}p", &host_ifname[..host_ifname.len().min(14)])
}

/// The MAC of a container's eth0, fixed by its IP (`hivemind_common::container_mac`): a
/// container restarted on a fresh veth keeps its MAC, so neighbour entries that name it stay
/// right and the node does not send to a dead MAC until the entry times out; host routing
/// writes it without a lookup.
pub fn container_mac(ip: Ipv4Addr) -> [u8; 6] {
    hivemind_common::container_mac(ip.octets())
}

fn nl_error(operation: &'static str, target: &str, e: impl std::fmt::Display) -> NetworkError {
    NetworkError::Netlink {
        operation,
        target: target.to_string(),
        message: e.to_string(),
    }
}

fn connect() -> Result<Handle, NetworkError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| nl_error("connect", "rtnetlink", e))?;
    tokio::spawn(connection);
    Ok(handle)
}

async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, NetworkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        // ENODEV: no such link.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(nl_error("get link", name, e)),
    }
}

async fn set_link(
    handle: &Handle,
    what: &'static str,
    name: &str,
    message: LinkMessage,
) -> Result<(), NetworkError> {
    handle
        .link()
        .set(message)
        .execute()
        .await
        .map_err(|e| nl_error(what, name, e))
}

/// Adds an address, treating "exists" as success.
async fn add_address(
    handle: &Handle,
    index: u32,
    ip: Ipv4Addr,
    prefix: u8,
    name: &str,
) -> Result<(), NetworkError> {
    match handle
        .address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
        Err(e) => Err(nl_error("add address", name, e)),
    }
}

pub struct Netlink {
    config: NetworkConfig,
}

impl Netlink {
    pub fn new(config: NetworkConfig) -> Self {
        Self { config }
    }

    /// The first IPv4 address of this namespace that is not loopback, link
    /// local or on a Hivemind link: the default address to advertise.
    pub async fn first_global_ipv4() -> Result<Option<Ipv4Addr>, NetworkError> {
        use rtnetlink::packet_route::address::AddressAttribute;
        let handle = connect()?;
        let mut addresses = handle.address().get().execute();
        while let Some(message) = addresses
            .try_next()
            .await
            .map_err(|e| nl_error("list addresses", "*", e))?
        {
            for attribute in &message.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = attribute
                    && !ip.is_loopback()
                    && !ip.is_link_local()
                    && !ip.is_unspecified()
                {
                    let name = link_name_of(&handle, message.header.index).await?;
                    if !name.starts_with("hm") {
                        return Ok(Some(*ip));
                    }
                }
            }
        }
        Ok(None)
    }

    /// MTU for containers: the largest MTU of this namespace's non-virtual
    /// links less the 50 bytes of VXLAN overhead, else 1450.
    pub async fn container_mtu() -> Result<u32, NetworkError> {
        let handle = connect()?;
        let mut links = handle.link().get().execute();
        let mut best: Option<u32> = None;
        while let Some(link) = links
            .try_next()
            .await
            .map_err(|e| nl_error("list links", "*", e))?
        {
            let name = link_name(&link).unwrap_or_default();
            if name == "lo" || name.starts_with("hm") || name.starts_with("veth") {
                continue;
            }
            for attribute in &link.attributes {
                if let LinkAttribute::Mtu(mtu) = attribute {
                    best = Some(best.map_or(*mtu, |b| b.max(*mtu)));
                }
            }
        }
        Ok(best.map_or(1450, |mtu| mtu.saturating_sub(50).max(576)))
    }
}

async fn link_name_of(handle: &Handle, index: u32) -> Result<String, NetworkError> {
    let mut links = handle.link().get().match_index(index).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.and_then(|l| link_name(&l)).unwrap_or_default()),
        Err(e) => Err(nl_error("get link", &index.to_string(), e)),
    }
}

fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

#[async_trait]
impl ContainerNetwork for Netlink {
    async fn ensure_node(&self) -> Result<(), NetworkError> {
        let handle = connect()?;
        let bridge = &self.config.bridge;
        if link_by_name(&handle, bridge).await?.is_none() {
            let message = LinkBridge::new(bridge).mtu(self.config.mtu).build();
            match handle.link().add(message).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
                Err(e) => return Err(nl_error("add bridge", bridge, e)),
            }
        }
        let link = link_by_name(&handle, bridge)
            .await?
            .ok_or_else(|| NetworkError::NoLink(bridge.clone()))?;
        let index = link.header.index;
        let gateway = self.config.subnet.gateway();
        add_address(&handle, index, gateway, self.config.subnet.prefix, bridge).await?;
        // Containers carry no IPv6: the bridge's own (router solicitations, MLD) would only be
        // flooded to them and dropped at their veths.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6"),
            "1",
        );
        // The MTU too: a bridge left by an earlier run may carry another (`--mtu` changed).
        set_link(
            &handle,
            "set bridge up",
            bridge,
            LinkUnspec::new_with_index(index)
                .up()
                .mtu(self.config.mtu)
                .build(),
        )
        .await?;
        // The hairpin address (the source a container sees when it reached itself through its
        // service VIP) lives behind the bridge: the reverse-path check of the kernel's
        // forwarding must find it there.
        let hairpin = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::from(hivemind_common::HAIRPIN_IP), 32)
            .output_interface(index)
            .scope(rtnetlink::packet_route::route::RouteScope::Link)
            .build();
        match handle.route().add(hairpin).replace().execute().await {
            Ok(()) => Ok(()),
            Err(e) => Err(nl_error("route the hairpin address", bridge, e)),
        }
    }

    async fn attach(
        &self,
        netns: &Path,
        host_ifname: &str,
        ip: Ipv4Addr,
    ) -> Result<Attachment, NetworkError> {
        create_netns(netns)?;
        let handle = connect()?;
        // Recreate from scratch: a half-made pair from a crash is removed.
        if let Some(old) = link_by_name(&handle, host_ifname).await? {
            let _ = handle.link().del(old.header.index).execute().await;
        }
        let peer = peer_name(host_ifname);
        if let Some(old) = link_by_name(&handle, &peer).await? {
            let _ = handle.link().del(old.header.index).execute().await;
        }
        let mtu = self.config.mtu;
        handle
            .link()
            .add(LinkVeth::new(host_ifname, &peer).mtu(mtu).build())
            .execute()
            .await
            .map_err(|e| nl_error("add veth", host_ifname, e))?;

        let ns_file = std::fs::File::open(netns).map_err(|e| NetworkError::Netns {
            path: netns.to_path_buf(),
            message: e.to_string(),
        })?;
        set_link(
            &handle,
            "move veth into netns",
            &peer,
            LinkUnspec::new_with_name(&peer)
                .setns_by_fd(ns_file.as_raw_fd())
                .build(),
        )
        .await?;

        let bridge = link_by_name(&handle, &self.config.bridge)
            .await?
            .ok_or_else(|| NetworkError::NoLink(self.config.bridge.clone()))?;
        let host = link_by_name(&handle, host_ifname)
            .await?
            .ok_or_else(|| NetworkError::NoLink(host_ifname.to_string()))?;
        let host_ifindex = host.header.index;
        // No IPv6 on either end: the data plane drops it at the container's veth (it is not
        // carried yet), so its router solicitations and MLD reports would only be counted as
        // drops. Absent IPv6 support in the kernel is fine.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{host_ifname}/disable_ipv6"),
            "1",
        );
        set_link(
            &handle,
            "attach veth to bridge",
            host_ifname,
            LinkUnspec::new_with_index(host_ifindex)
                .controller(bridge.header.index)
                .up()
                .build(),
        )
        .await?;

        let gateway = self.config.subnet.gateway();
        let prefix = self.config.subnet.prefix;
        run_in_netns(netns, move || async move {
            // This thread's /proc/sys/net is the container's (see the host end above).
            for conf in ["all", "default"] {
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1");
            }
            let handle = connect()?;
            if let Some(lo) = link_by_name(&handle, "lo").await? {
                set_link(
                    &handle,
                    "set lo up",
                    "lo",
                    LinkUnspec::new_with_index(lo.header.index).up().build(),
                )
                .await?;
            }
            let link = link_by_name(&handle, &peer)
                .await?
                .ok_or_else(|| NetworkError::NoLink(peer.clone()))?;
            let index = link.header.index;
            set_link(
                &handle,
                "rename to eth0 and set its MAC",
                &peer,
                LinkUnspec::new_with_index(index)
                    .name("eth0".to_string())
                    .mtu(mtu)
                    .address(container_mac(ip).to_vec())
                    .build(),
            )
            .await?;
            add_address(&handle, index, ip, prefix, "eth0").await?;
            set_link(
                &handle,
                "set eth0 up",
                "eth0",
                LinkUnspec::new_with_index(index).up().build(),
            )
            .await?;
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .output_interface(index)
                .build();
            match handle.route().add(route).execute().await {
                Ok(()) => Ok(()),
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
                Err(e) => Err(nl_error("add default route", "eth0", e)),
            }
        })?;
        Ok(Attachment {
            host_ifname: host_ifname.to_string(),
            host_ifindex,
        })
    }

    async fn detach(&self, netns: &Path, host_ifname: &str) -> Result<(), NetworkError> {
        let handle = connect()?;
        if let Some(link) = link_by_name(&handle, host_ifname).await? {
            match handle.link().del(link.header.index).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {}
                Err(e) => return Err(nl_error("delete veth", host_ifname, e)),
            }
        }
        remove_netns(netns)
    }

    async fn ifindex(&self, name: &str) -> Result<Option<u32>, NetworkError> {
        let handle = connect()?;
        Ok(link_by_name(&handle, name).await?.map(|l| l.header.index))
    }

    async fn ensure_overlay(&self, routes: &[Subnet]) -> Result<u32, NetworkError> {
        let handle = connect()?;
        if link_by_name(&handle, OVERLAY_DEVICE).await?.is_none() {
            // External (collect_md) mode: the eBPF program on the device picks
            // the remote node and VNI per packet. The same MAC on every node
            // makes decapsulated frames PACKET_HOST for the receiver.
            let message = LinkVxlan::new(OVERLAY_DEVICE, 0)
                .port(VXLAN_PORT)
                .collect_metadata(true)
                .learning(false)
                .mtu(self.config.mtu)
                .address(hivemind_common::OVERLAY_MAC.to_vec())
                .arp(false)
                .build();
            match handle.link().add(message).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
                Err(e) => return Err(nl_error("add vxlan", OVERLAY_DEVICE, e)),
            }
        }
        let link = link_by_name(&handle, OVERLAY_DEVICE)
            .await?
            .ok_or_else(|| NetworkError::NoLink(OVERLAY_DEVICE.to_string()))?;
        let index = link.header.index;
        // No IPv6 on the overlay: its router solicitations would only be
        // counted as drops by the overlay programs.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{OVERLAY_DEVICE}/disable_ipv6"),
            "1",
        );
        set_link(
            &handle,
            "set vxlan up",
            OVERLAY_DEVICE,
            LinkUnspec::new_with_index(index)
                .up()
                .mtu(self.config.mtu)
                .build(),
        )
        .await?;
        for cidr in routes {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(cidr.network, cidr.prefix)
                .output_interface(index)
                .pref_source(self.config.subnet.gateway())
                .build();
            if let Err(e) = handle.route().add(route).replace().execute().await {
                return Err(nl_error("route via overlay", &cidr.to_string(), e));
            }
        }
        // Forwarding between containers and the overlay; loose reverse-path
        // filtering, since replies from a local service backend come from a
        // VIP that is routed via the overlay device.
        let sysctls = [
            ("/proc/sys/net/ipv4/ip_forward".to_string(), "1"),
            ("/proc/sys/net/ipv4/conf/all/rp_filter".to_string(), "2"),
            (
                format!("/proc/sys/net/ipv4/conf/{}/rp_filter", self.config.bridge),
                "2",
            ),
            (
                format!("/proc/sys/net/ipv4/conf/{OVERLAY_DEVICE}/rp_filter"),
                "2",
            ),
        ];
        for (path, value) in sysctls {
            std::fs::write(&path, value).map_err(|e| NetworkError::Netlink {
                operation: "sysctl",
                target: path.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(index)
    }

    async fn ifindex_of_address(&self, ip: Ipv4Addr) -> Result<Option<u32>, NetworkError> {
        let handle = connect()?;
        let mut addresses = handle
            .address()
            .get()
            .set_address_filter(IpAddr::V4(ip))
            .execute();
        match addresses.try_next().await {
            Ok(found) => Ok(found.map(|a| a.header.index)),
            Err(e) => Err(nl_error("get address", &ip.to_string(), e)),
        }
    }
}
