//! The overlay on the VXLAN device `hm-vxlan` (external / collect_md mode): the kernel routes
//! packets for remote container subnets onto the device, `egress` picks the remote node from
//! `HM_TUNNELS` and sets the tunnel metadata, the VXLAN driver encapsulates (keeping GSO and
//! kernel routing); on the way in the driver decapsulates and `ingress` checks the metadata.
//!
//! Service traffic (see `lb`): `egress` first translates node-originated packets to a service
//! VIP (a local backend is redirected to the bridge and not counted as overlay traffic; a remote
//! one continues with the tunnel lookup of the backend), `ingress` restores the source of
//! service replies.
//!
//! Identity: the VNI is the source identity (`policy::known_identity` of the inner source,
//! `identity::HOST` when the ipcache does not know it); `ingress` writes the received VNI into
//! `skb->mark` (`hivemind_common::mark`) for `hm_lxc_to_container`.
//!
//! Host routing (`routing`) sets the tunnel key itself, in the container's program, and
//! redirects the frame here marked `mark::ENCAPSULATED`: `egress` lets such a frame through
//! untouched. On the way in, `ingress` hands frames for a local container to
//! `routing::deliver` instead of the kernel.
//!
//! VNI decisions go through [`check_vni`] (which defers to `hivemind_common::vni`), from here and
//! from the XDP validation of the underlay alike.

use core::mem::{size_of, zeroed};

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, bpf_tunnel_key},
    helpers::{bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key},
    macros::map,
    maps::{LpmTrie, lpm_trie::Key},
    programs::TcContext,
};
use hivemind_common::{
    DIR_FROM_OVERLAY, DIR_TO_OVERLAY, MAX_TUNNELS, OVERLAY_SRC_MAC, TunnelInfo, identity, mark,
    reason, vni,
};

use crate::{
    lb, metrics,
    pkt::{self, Headers},
    policy, publish, routing,
};

/// Remote node container subnet (LPM, network byte order) -> underlay IP and VNI. Written by
/// the daemon.
#[map(name = "HM_TUNNELS")]
static HM_TUNNELS: LpmTrie<u32, TunnelInfo> = LpmTrie::with_max_entries(MAX_TUNNELS, 0);

/// Offset of the source MAC in the Ethernet header.
const ETH_SOURCE: usize = 6;
/// TTL of the outer IPv4 header.
const OUTER_TTL: u8 = 64;

/// Whether the overlay carries `vni`; `Err` holds the drop reason.
#[inline(always)]
pub(crate) fn check_vni(vni: u32) -> Result<(), u8> {
    if vni::allowed(vni) {
        Ok(())
    } else {
        Err(reason::DROP_UNKNOWN_VNI)
    }
}

/// The source and destination of an Ethernet + IPv4 frame, in network byte order, after
/// checking the EtherType, the IP version and that the whole IPv4 header (options included) is
/// present.
#[inline(always)]
fn ipv4_addresses(headers: &Headers) -> Result<(u32, u32), u8> {
    match headers {
        Headers::NotIpv4 => Err(reason::DROP_NOT_IPV4),
        Headers::Ipv4(ip) if ip.complete => Ok((ip.saddr, ip.daddr)),
        _ => Err(reason::DROP_MALFORMED_IPV4),
    }
}

/// Writes the overlay source MAC: directly if the Ethernet header is in the linear area (it is
/// after `pkt::parse` read the IPv4 header), else through the helper.
#[inline(always)]
fn set_source_mac(ctx: &TcContext) -> Result<(), i64> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + ETH_SOURCE + OVERLAY_SRC_MAC.len() <= end {
        // SAFETY: the bytes were just checked to lie inside the linear area; byte array, no
        // alignment requirement.
        unsafe { *((start + ETH_SOURCE) as *mut [u8; 6]) = OVERLAY_SRC_MAC };
        return Ok(());
    }
    ctx.store(ETH_SOURCE, &OVERLAY_SRC_MAC, 0)
}

/// The underlay address (network order) of the node that holds `destination` (network
/// order), if it is another node: the ipcache's tunnel endpoint, one hash lookup whatever the
/// number of nodes; for an address the ipcache does not place (an app without an identity yet,
/// an address of a remote subnet no container holds), the remote subnets of `HM_TUNNELS`.
#[inline(always)]
pub(crate) fn lookup(destination: u32) -> Option<u32> {
    match policy::tunnel_endpoint(destination) {
        0 => HM_TUNNELS
            .get(Key::new(32, destination))
            .map(|t: &TunnelInfo| t.underlay_ip),
        underlay => Some(underlay),
    }
}

/// The VNI of a packet from `source` (network order): its identity when the ipcache knows it,
/// else `identity::HOST` (anything the ipcache does not know left through the node's own
/// routing).
#[inline(always)]
pub(crate) fn source_vni(source: u32) -> u32 {
    match policy::known_identity(source) {
        Some(id) if vni::allowed(id) => id,
        _ => identity::HOST,
    }
}

/// Sets the tunnel key: VNI `vni`, remote underlay `node` (host byte order), `flags` of
/// `bpf_skb_set_tunnel_key` (`BPF_F_ZERO_CSUM_TX` or 0). `Err` if the helper refused.
#[inline(always)]
pub(crate) fn set_key(ctx: &TcContext, vni: u32, node: u32, flags: u64) -> Result<(), i64> {
    // SAFETY: bpf_tunnel_key is plain C data; all zeroes is its "unset" value.
    let mut key: bpf_tunnel_key = unsafe { zeroed() };
    key.tunnel_id = vni;
    // The helper takes the address in host byte order.
    key.__bindgen_anon_1.remote_ipv4 = node;
    key.tunnel_ttl = OUTER_TTL;
    // SAFETY: `ctx.skb.skb` is the program's context; `key` lives across the call and the size
    // passed is its own.
    let ret = unsafe {
        bpf_skb_set_tunnel_key(
            ctx.skb.skb,
            &mut key,
            size_of::<bpf_tunnel_key>() as u32,
            flags,
        )
    };
    if ret == 0 { Ok(()) } else { Err(ret) }
}

/// TC egress of `hm-vxlan`: sets the tunnel key of the packet's destination node, or drops.
#[inline(always)]
pub(crate) fn egress(ctx: &TcContext) -> Result<i32, i32> {
    // SAFETY: a verifier-checked read of the program's context.
    if unsafe { (*ctx.skb.skb).mark } == mark::ENCAPSULATED {
        // Host routing set the key and counted the packet; the mark must not steer the outer
        // route lookup.
        ctx.set_mark(0);
        return Ok(TC_ACT_OK);
    }
    let bytes = u64::from(ctx.len());
    let drop = |node: u32, why: u8| {
        metrics::count(node, DIR_TO_OVERLAY, why, bytes);
        TC_ACT_SHOT
    };
    let headers = pkt::parse(ctx);
    let (source, mut destination) = ipv4_addresses(&headers).map_err(|why| drop(0, why))?;
    // Node-originated traffic to a service VIP (the daemon routes the service CIDR here).
    match lb::node_egress(ctx, &headers) {
        Ok(None) => {}
        Ok(Some(lb::NodeEgress::Remote(backend))) => destination = backend,
        Ok(Some(lb::NodeEgress::Local(verdict))) => return Ok(verdict),
        Err(why) => return Err(drop(0, why)),
    }
    let Some(underlay) = lookup(destination) else {
        return Err(drop(0, reason::DROP_NO_TUNNEL));
    };
    let node = u32::from_be(underlay);
    // The VNI carries the source identity. (`TunnelInfo::vni` is not used any more.)
    set_key(ctx, source_vni(source), node, 0).map_err(|_| drop(node, reason::DROP_TUNNEL_KEY))?;
    // See OVERLAY_SRC_MAC: the receiving driver drops frames "from" its own MAC.
    set_source_mac(ctx).map_err(|_| drop(node, reason::DROP_REWRITE))?;
    metrics::count(node, DIR_TO_OVERLAY, reason::FORWARDED, bytes);
    Ok(TC_ACT_OK)
}

/// TC ingress of `hm-vxlan`: accepts decapsulated IPv4 packets of an allowed VNI; the kernel
/// then routes them to the local bridge.
#[inline(always)]
pub(crate) fn ingress(ctx: &TcContext) -> Result<i32, i32> {
    let bytes = u64::from(ctx.len());
    let drop = |node: u32, why: u8| {
        metrics::count(node, DIR_FROM_OVERLAY, why, bytes);
        TC_ACT_SHOT
    };
    // SAFETY: as in `egress`.
    let mut key: bpf_tunnel_key = unsafe { zeroed() };
    // SAFETY: `ctx.skb.skb` is the program's context; `key` lives across the call and the size
    // passed is its own. Flags 0: an IPv6 underlay is refused (the overlay is IPv4).
    let ret = unsafe {
        bpf_skb_get_tunnel_key(ctx.skb.skb, &mut key, size_of::<bpf_tunnel_key>() as u32, 0)
    };
    if ret != 0 {
        return Err(drop(0, reason::DROP_TUNNEL_KEY));
    }
    // SAFETY: with flags 0 the helper filled the IPv4 member of the union (host byte order).
    let node = unsafe { key.__bindgen_anon_1.remote_ipv4 };
    check_vni(key.tunnel_id).map_err(|why| drop(node, why))?;
    let mut headers = pkt::parse(ctx);
    ipv4_addresses(&headers).map_err(|why| drop(node, why))?;
    // The source identity for `hm_lxc_to_container` (see `hivemind_common::mark`).
    let source_identity = key.tunnel_id & mark::IDENTITY_MASK;
    ctx.set_mark(mark::IDENTITY_MAGIC | source_identity);
    // Replies of node-originated connections (and of containers' ones) to a remote backend.
    if lb::reverse(ctx, &headers).map_err(|why| drop(node, why))? {
        headers = pkt::parse(ctx);
        // A reply of a published port in `snat` mode: from this node's address to the client
        // outside, which the kernel would refuse (a local source from `hm-vxlan`).
        if let (Headers::Ipv4(ip), Some(config)) = (&headers, lb::node_config())
            && config.node_ip != 0
            && ip.saddr == config.node_ip
        {
            metrics::count(node, DIR_FROM_OVERLAY, reason::FORWARDED, bytes);
            return Ok(routing::to_outside(ctx, &headers));
        }
    }
    // A client that came in through another node's published port.
    let published = publish::learn(&headers, node.to_be());
    metrics::count(node, DIR_FROM_OVERLAY, reason::FORWARDED, bytes);
    Ok(routing::from_overlay(
        ctx,
        &headers,
        source_identity,
        published,
    ))
}
