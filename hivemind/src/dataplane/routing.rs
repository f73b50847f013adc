//! Host routing (`hivemind daemon --host-routing on`): the switch in `HM_NODE_CONFIG` and the
//! `HM_LXC` map (container address -> host veth) the programs deliver by. See the eBPF side's
//! `routing` module for the packet path; with the switch off every packet takes the kernel's
//! bridge and IP forwarding as before.

use std::{io, net::Ipv4Addr};

use hivemind_common::{MAP_LXC, MAP_NODE_CONFIG, NodeConfig, node_flags};

use super::{Dataplane, DataplaneError, interface_name, is_not_found};

impl Dataplane {
    /// Turns host routing on or off. On needs the overlay attached (`attach_overlay`): frames for
    /// remote containers are redirected to its VXLAN device, and those larger than its MTU (read
    /// now) are left to the kernel. The device and its MTU are written either way when the
    /// overlay is there: a published port in `snat` mode sends through it with host routing off.
    pub fn set_host_routing(&mut self, on: bool) -> Result<(), DataplaneError> {
        let mut config = self.node_config()?;
        let vxlan = self.overlay.as_ref().map(|o| o.vxlan_ifindex);
        if let Some(vxlan) = vxlan {
            config.vxlan_ifindex = vxlan;
            config.overlay_mtu = interface_mtu(vxlan)?;
        }
        if on {
            vxlan.ok_or(DataplaneError::HostRoutingNeedsOverlay)?;
            config.flags |= node_flags::HOST_ROUTING;
        } else {
            config.flags &= !node_flags::HOST_ROUTING;
        }
        self.write_node_config(config)?;
        tracing::info!(
            host_routing = on,
            vxlan_ifindex = config.vxlan_ifindex,
            overlay_mtu = config.overlay_mtu,
            "host routing set"
        );
        Ok(())
    }

    /// Whether host routing is on.
    pub fn host_routing(&self) -> Result<bool, DataplaneError> {
        Ok(self.node_config()?.flags & node_flags::HOST_ROUTING != 0)
    }

    /// The node configuration as the programs see it (all zero until written).
    pub(super) fn node_config(&self) -> Result<NodeConfig, DataplaneError> {
        self.services
            .node_config
            .get(&0, 0)
            .map_err(DataplaneError::map(MAP_NODE_CONFIG, "reading"))
    }

    pub(super) fn write_node_config(&mut self, config: NodeConfig) -> Result<(), DataplaneError> {
        self.services
            .node_config
            .set(0, config, 0)
            .map_err(DataplaneError::map(MAP_NODE_CONFIG, "writing"))
    }

    /// Records that the container holding `ip` sits behind host veth `ifindex`.
    pub(super) fn set_lxc(&mut self, ip: Ipv4Addr, ifindex: u32) -> Result<(), DataplaneError> {
        self.lxc
            .insert(u32::from_ne_bytes(ip.octets()), ifindex, 0)
            .map_err(DataplaneError::map(MAP_LXC, "inserting"))
    }

    /// Forgets `ip`'s entry if it still names `ifindex` (a newer endpoint may have taken the
    /// address over); succeeds if it is gone.
    pub(super) fn remove_lxc(&mut self, ip: Ipv4Addr, ifindex: u32) -> Result<(), DataplaneError> {
        let key = u32::from_ne_bytes(ip.octets());
        match self.lxc.get(&key, 0) {
            Ok(current) if current == ifindex => {}
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(DataplaneError::map(MAP_LXC, "looking up")(e)),
        }
        match self.lxc.remove(&key) {
            Err(e) if !is_not_found(&e) => Err(DataplaneError::map(MAP_LXC, "removing")(e)),
            _ => Ok(()),
        }
    }

    /// Every `HM_LXC` entry as (container address, host veth ifindex), sorted.
    pub fn local_routes(&self) -> Result<Vec<(Ipv4Addr, u32)>, DataplaneError> {
        let mut routes = Vec::new();
        for entry in self.lxc.iter() {
            match entry {
                Ok((ip, ifindex)) => routes.push((Ipv4Addr::from(ip.to_ne_bytes()), ifindex)),
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(DataplaneError::map(MAP_LXC, "reading")(e)),
            }
        }
        routes.sort_unstable();
        Ok(routes)
    }
}

/// An `ifreq` request on interface `ifindex` (calling thread's namespace).
fn interface_request(ifindex: u32, request: libc::c_ulong) -> Result<libc::ifreq, DataplaneError> {
    let name = interface_name(ifindex)?;
    // SAFETY: all-zero bytes are a valid ifreq.
    let mut ifreq: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifreq.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    let failed = |source| DataplaneError::InterfaceNotFound { ifindex, source };
    // SAFETY: a plain socket call; the descriptor is closed below.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(failed(io::Error::last_os_error()));
    }
    // SAFETY: `ifreq` names the interface and has room for the answer of these requests.
    let result = unsafe { libc::ioctl(socket, request, &mut ifreq) };
    let error = io::Error::last_os_error();
    // SAFETY: `socket` is ours and closed once.
    unsafe { libc::close(socket) };
    if result != 0 {
        return Err(failed(error));
    }
    Ok(ifreq)
}

/// The MTU of interface `ifindex`.
fn interface_mtu(ifindex: u32) -> Result<u32, DataplaneError> {
    let ifreq = interface_request(ifindex, libc::SIOCGIFMTU)?;
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    let mtu = unsafe { ifreq.ifr_ifru.ifru_mtu };
    Ok(u32::try_from(mtu).unwrap_or(0))
}

/// The MAC address of interface `ifindex`.
pub(super) fn interface_mac(ifindex: u32) -> Result<[u8; 6], DataplaneError> {
    let ifreq = interface_request(ifindex, libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let data = unsafe { ifreq.ifr_ifru.ifru_hwaddr.sa_data };
    Ok(std::array::from_fn(|i| data[i] as u8))
}
