//! The cross-node overlay: `hm_overlay_egress` / `hm_overlay_ingress` on the VXLAN device
//! (external / collect_md mode, created by `network`), the underlay validation on the underlay
//! interface (`hm_xdp_underlay` in XDP, or `hm_tc_underlay` at TC ingress, see
//! [`UnderlayProgram`]), and the `HM_TUNNELS` routes from remote container subnets to remote
//! nodes.
//!
//! The kernel keeps routing and GSO: the node routes the cluster CIDR to the VXLAN device, the
//! egress program only sets the tunnel key (remote underlay IP, VNI) and the VXLAN driver
//! encapsulates. VNIs are checked with `hivemind_common::vni::allowed`, nowhere else.

use std::net::Ipv4Addr;

use aya::{
    maps::lpm_trie::Key,
    programs::{TcAttachType, XdpMode, xdp::XdpLink},
};
use hivemind_common::{MAP_TUNNELS, TunnelInfo, vni};
use serde::Serialize;

use super::{
    Dataplane, DataplaneError, OverlayCounters, PROG_NAT_EGRESS, PROG_NAT_INGRESS,
    PROG_OVERLAY_EGRESS, PROG_OVERLAY_INGRESS, PROG_TC_UNDERLAY, PROG_XDP_UNDERLAY, counters,
    interface_name, is_not_found,
    pins::{self, HeldLink},
    xdp,
};

/// Where the underlay validation should run (`hivemind daemon --underlay-program`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UnderlayProgram {
    /// TC on a veth, XDP on anything else. Native XDP on a veth makes the kernel turn GSO off
    /// on the veth's peer, so every segment would be encapsulated and cross on its own; TC
    /// ingress leaves offloads alone.
    #[default]
    Auto,
    /// XDP: native (driver) mode, skb mode if the driver refuses.
    Xdp,
    /// TC ingress (TCX).
    Tc,
}

/// Where the underlay validation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnderlayHook {
    XdpNative,
    XdpSkb,
    Tc,
}

impl std::fmt::Display for UnderlayHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::XdpNative => "xdp native",
            Self::XdpSkb => "xdp skb",
            Self::Tc => "tc ingress",
        })
    }
}

/// Pin names of the overlay's links.
const PIN_EGRESS: &str = "overlay-vxlan-out";
const PIN_INGRESS: &str = "overlay-vxlan-in";
const PIN_UNDERLAY_TC: &str = "overlay-underlay-tc";
/// The XDP link's pin name says its mode, for the daemon that takes it over.
const PIN_UNDERLAY_XDP_NATIVE: &str = "overlay-underlay-xdp-native";
const PIN_UNDERLAY_XDP_SKB: &str = "overlay-underlay-xdp-skb";
const PIN_NAT_EGRESS: &str = "overlay-nat-out";
const PIN_NAT_INGRESS: &str = "overlay-nat-in";

/// The links of the overlay programs; dropping unpinned ones detaches the programs.
pub(super) struct OverlayLinks {
    hook: UnderlayHook,
    /// Where host routing redirects frames for remote containers.
    pub(super) vxlan_ifindex: u32,
    /// Egress and ingress of the vxlan device, the underlay validation, and the egress NAT on
    /// the underlay's TC egress with its reverse on TC ingress where XDP validates the overlay
    /// (`hm_tc_underlay` does both otherwise).
    links: Vec<HeldLink>,
}

impl OverlayLinks {
    pub(super) fn pin_names(&self) -> Vec<String> {
        self.links.iter().filter_map(HeldLink::pin_name).collect()
    }

    fn release(self) {
        for link in self.links {
            link.release();
        }
    }
}

impl Dataplane {
    /// Attaches hm_overlay_egress/ingress to the vxlan device and the underlay validation to
    /// the underlay interface where `program` says; idempotent (replaces, never duplicates).
    ///
    /// Both ifindexes are of the calling thread's network namespace. The previous attachment
    /// (if any) is detached first; if attaching fails, the overlay is left detached.
    pub fn attach_overlay(
        &mut self,
        vxlan_ifindex: u32,
        underlay_ifindex: u32,
        program: UnderlayProgram,
    ) -> Result<(), DataplaneError> {
        let vxlan = interface_name(vxlan_ifindex)?;
        let underlay = interface_name(underlay_ifindex)?;
        // Replace, never duplicate: this process's own links go first (a hook takes a program
        // once); an earlier daemon's pinned links once the new ones take their pins.
        if let Some(old) = self.overlay.take() {
            old.release();
        }
        let egress = self.attach_tc(
            PROG_OVERLAY_EGRESS,
            &vxlan,
            vxlan_ifindex,
            TcAttachType::Egress,
        )?;
        let egress = self.hold(PIN_EGRESS, egress)?;
        let ingress = self.attach_tc(
            PROG_OVERLAY_INGRESS,
            &vxlan,
            vxlan_ifindex,
            TcAttachType::Ingress,
        )?;
        let ingress = self.hold(PIN_INGRESS, ingress)?;
        let use_tc = match program {
            UnderlayProgram::Tc => true,
            UnderlayProgram::Xdp => false,
            UnderlayProgram::Auto => is_veth(&underlay),
        };
        let (link, hook) = if use_tc {
            let link = self.attach_tc(
                PROG_TC_UNDERLAY,
                &underlay,
                underlay_ifindex,
                TcAttachType::Ingress,
            )?;
            (self.hold(PIN_UNDERLAY_TC, link)?, UnderlayHook::Tc)
        } else {
            let (link, native) = self.attach_xdp_underlay(underlay_ifindex)?;
            if native {
                (
                    self.hold(PIN_UNDERLAY_XDP_NATIVE, link)?,
                    UnderlayHook::XdpNative,
                )
            } else {
                (self.hold(PIN_UNDERLAY_XDP_SKB, link)?, UnderlayHook::XdpSkb)
            }
        };
        let nat_egress = self.attach_tc(
            PROG_NAT_EGRESS,
            &underlay,
            underlay_ifindex,
            TcAttachType::Egress,
        )?;
        let mut links = vec![
            egress,
            ingress,
            link,
            self.hold(PIN_NAT_EGRESS, nat_egress)?,
        ];
        if !use_tc {
            let nat_ingress = self.attach_tc(
                PROG_NAT_INGRESS,
                &underlay,
                underlay_ifindex,
                TcAttachType::Ingress,
            )?;
            links.push(self.hold(PIN_NAT_INGRESS, nat_ingress)?);
        }
        // An earlier daemon's links no new one replaced (it used another underlay program).
        if let Some(pins) = &self.pins {
            let kept: Vec<String> = links.iter().filter_map(HeldLink::pin_name).collect();
            for name in [
                PIN_UNDERLAY_TC,
                PIN_UNDERLAY_XDP_NATIVE,
                PIN_UNDERLAY_XDP_SKB,
                PIN_NAT_INGRESS,
            ] {
                if !kept.iter().any(|k| k == name) {
                    pins::release_pin(&pins.link(name));
                }
            }
        }
        self.overlay = Some(OverlayLinks {
            hook,
            vxlan_ifindex,
            links,
        });
        tracing::info!(
            vxlan = %vxlan,
            underlay = %underlay,
            underlay_program = %hook,
            "overlay attached"
        );
        Ok(())
    }

    /// Detaches the overlay programs; the tunnel routes and counters stay. Succeeds if nothing
    /// is attached.
    pub fn detach_overlay(&mut self) -> Result<(), DataplaneError> {
        if let Some(overlay) = self.overlay.take() {
            overlay.release();
            tracing::info!("overlay detached");
        }
        Ok(())
    }

    /// Where the underlay validation runs, `None` while the overlay is not attached.
    pub fn underlay_hook(&self) -> Option<UnderlayHook> {
        self.overlay.as_ref().map(|o| o.hook)
    }

    /// Adds or replaces the route of a remote node's container subnet.
    pub fn set_tunnel(
        &mut self,
        subnet: Ipv4Addr,
        prefix: u8,
        underlay: Ipv4Addr,
        vni: u32,
    ) -> Result<(), DataplaneError> {
        let key = tunnel_key(subnet, prefix)?;
        if !vni::allowed(vni) {
            return Err(DataplaneError::InvalidVni { vni });
        }
        let info = TunnelInfo {
            underlay_ip: u32::from_ne_bytes(underlay.octets()),
            vni,
            flags: 0,
            _pad: [0; 2],
        };
        self.tunnels
            .insert(&key, info, 0)
            .map_err(DataplaneError::map(MAP_TUNNELS, "inserting"))?;
        tracing::debug!(%subnet, prefix, %underlay, vni, "tunnel set");
        Ok(())
    }

    /// Removes the route of a remote node's container subnet; succeeds if it is already gone.
    pub fn remove_tunnel(&mut self, subnet: Ipv4Addr, prefix: u8) -> Result<(), DataplaneError> {
        let key = tunnel_key(subnet, prefix)?;
        match self.tunnels.remove(&key) {
            Err(e) if !is_not_found(&e) => Err(DataplaneError::map(MAP_TUNNELS, "removing")(e)),
            _ => {
                tracing::debug!(%subnet, prefix, "tunnel removed");
                Ok(())
            }
        }
    }

    /// Every tunnel route as (subnet, prefix, underlay IP, VNI), sorted.
    pub fn tunnels(&self) -> Result<Vec<(Ipv4Addr, u8, Ipv4Addr, u32)>, DataplaneError> {
        let mut tunnels = Vec::new();
        for entry in self.tunnels.iter() {
            let (key, info) = match entry {
                Ok(entry) => entry,
                // Removed between listing and reading.
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(DataplaneError::map(MAP_TUNNELS, "reading")(e)),
            };
            tunnels.push((
                Ipv4Addr::from(key.data().to_ne_bytes()),
                // The kernel refuses prefixes above 32 for a 4-byte key.
                u8::try_from(key.prefix_len()).unwrap_or(u8::MAX),
                Ipv4Addr::from(info.underlay_ip.to_ne_bytes()),
                info.vni,
            ));
        }
        tunnels.sort_unstable();
        Ok(tunnels)
    }

    /// Overlay counters: packets/bytes sent/received through the tunnel and drops by reason.
    pub fn overlay_counters(&self) -> Result<OverlayCounters, DataplaneError> {
        let mut overlay = OverlayCounters::default();
        self.metrics.each_but_forwarded(|key, value| {
            if counters::is_overlay_direction(key.direction) {
                overlay.add(key, value);
            }
        })?;
        Ok(overlay)
    }

    /// Attaches `hm_xdp_underlay` in native mode, or in skb mode if the driver refuses; returns
    /// the link and whether it is native.
    fn attach_xdp_underlay(&mut self, ifindex: u32) -> Result<(XdpLink, bool), DataplaneError> {
        let program = PROG_XDP_UNDERLAY;
        let prog = xdp(&mut self.ebpf, program)?;
        let take = |e| DataplaneError::Attach {
            program,
            ifindex,
            source: Box::new(e),
        };
        // A link an earlier daemon pinned: its program is swapped in place (an interface takes
        // one XDP link, so a new one could not be attached beside it).
        if let Some(pins) = &self.pins {
            for (name, native) in [
                (PIN_UNDERLAY_XDP_NATIVE, true),
                (PIN_UNDERLAY_XDP_SKB, false),
            ] {
                let Some(old) = pins::pinned_link(&pins.link(name)) else {
                    continue;
                };
                let replaced = XdpLink::try_from(old)
                    .ok()
                    .and_then(|link| prog.attach_to_link(link).ok());
                match replaced {
                    Some(id) => return Ok((prog.take_link(id).map_err(take)?, native)),
                    None => pins::release_pin(&pins.link(name)),
                }
            }
        }
        let native = match prog.attach_to_if_index(ifindex, XdpMode::Driver) {
            Ok(id) => return Ok((prog.take_link(id).map_err(take)?, true)),
            Err(e) => e,
        };
        tracing::info!(ifindex, error = %native, "native xdp refused, using skb mode");
        let id = prog
            .attach_to_if_index(ifindex, XdpMode::Skb)
            .map_err(|e| DataplaneError::AttachXdp {
                program,
                ifindex,
                native: native.to_string(),
                source: Box::new(e),
            })?;
        Ok((prog.take_link(id).map_err(take)?, false))
    }
}

/// Whether `interface` (of the calling thread's namespace) is a veth, by the driver name
/// `ETHTOOL_GDRVINFO` reports. Anything that cannot be asked counts as not a veth.
fn is_veth(interface: &str) -> bool {
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    /// `struct ethtool_drvinfo` of linux/ethtool.h.
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    let name = interface.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return false;
    }
    // SAFETY: all-zero bytes are valid for both plain-data structs.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    // SAFETY: as above.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    request.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: a plain socket call; the descriptor is closed below.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return false;
    }
    // SAFETY: `request` names the interface and points at `info`, which outlives the call and
    // has the layout the kernel fills in for ETHTOOL_GDRVINFO.
    let result = unsafe { libc::ioctl(socket, libc::SIOCETHTOOL, &mut request) };
    // SAFETY: `socket` is ours and closed once.
    unsafe { libc::close(socket) };
    let driver = info.driver.split(|&b| b == 0).next().unwrap_or_default();
    result == 0 && driver == b"veth"
}

/// The `HM_TUNNELS` key of `subnet/prefix`; refuses prefixes above 32 and set host bits (an LPM
/// trie would silently ignore them, hiding a caller's mistake).
fn tunnel_key(subnet: Ipv4Addr, prefix: u8) -> Result<Key<u32>, DataplaneError> {
    let invalid = DataplaneError::InvalidSubnet { subnet, prefix };
    let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    if prefix > 32 || u32::from(subnet) & host_bits != 0 {
        return Err(invalid);
    }
    Ok(Key::new(
        u32::from(prefix),
        u32::from_ne_bytes(subnet.octets()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_keys_are_network_order_and_checked() {
        let key = tunnel_key(Ipv4Addr::new(10, 244, 2, 0), 24).expect("valid");
        assert_eq!(key.prefix_len(), 24);
        assert_eq!(key.data().to_ne_bytes(), [10, 244, 2, 0]);
        assert!(tunnel_key(Ipv4Addr::new(0, 0, 0, 0), 0).is_ok());
        assert!(tunnel_key(Ipv4Addr::new(10, 244, 2, 7), 32).is_ok());
        for (subnet, prefix) in [
            (Ipv4Addr::new(10, 244, 2, 1), 24),
            (Ipv4Addr::new(10, 244, 2, 0), 33),
            (Ipv4Addr::new(10, 0, 0, 0), 0),
        ] {
            assert!(matches!(
                tunnel_key(subnet, prefix),
                Err(DataplaneError::InvalidSubnet { .. })
            ));
        }
    }
}
