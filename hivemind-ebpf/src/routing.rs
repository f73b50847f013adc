//! Host routing in eBPF (`node_flags::HOST_ROUTING` in `HM_NODE_CONFIG`), as Cilium's
//! `bpf_lxc.c` / `bpf_overlay.c` do it: packets between containers skip the bridge, the
//! kernel's IP forwarding (netfilter, FIB and rp_filter lookups, neighbour) and the backlog
//! queues of the veths.
//!
//! - From a container (`from_container`, after its egress policy and service NAT): a destination
//!   in `HM_LXC` is a local container: its ingress policy and reverse NAT run here, then
//!   `bpf_redirect_peer` puts the frame straight into its namespace. A destination the ipcache
//!   places on another node (`IpcacheValue::tunnel_endpoint`, one hash lookup whatever the
//!   number of nodes) is sent there: the MACs and TTL are rewritten, the tunnel key set (VNI =
//!   source identity, no outer UDP checksum) and the frame redirected to `hm-vxlan`'s transmit
//!   (marked `mark::ENCAPSULATED` so that `hm_overlay_egress` does not key it again).
//! - From the overlay (`from_overlay`, after the VNI checks and reverse NAT of `hm_overlay_ingress`):
//!   a destination in `HM_LXC` is delivered the same way.
//! - Anything else (the node, the outside world, a frame too big for the tunnel that is not
//!   GSO, a TTL about to expire, an address with no endpoint) goes to the kernel as before, which
//!   also answers with the ICMP errors it owes.
//!
//! Reverse NAT: both callers ran it already (the source's `lb::from_container`, the overlay's
//! `lb::reverse`) on the node's one conntrack table, so delivery does not look again.
//!
//! Verdicts and counters are those of the kernel path: the destination endpoint counts the
//! packet (`DIR_TO_CONTAINER`, forwarded or its drop reason) as its `hm_lxc_to_container` would
//! have, the overlay counts it per node as `hm_overlay_egress` would have.
//!
//! L2: a frame a container addressed to another container's MAC (same subnet) is switched, as
//! the bridge would: nothing is rewritten. A frame addressed to the gateway, or from the overlay,
//! is routed: destination MAC of the container (`container_mac`, from its address), source MAC
//! of the bridge, TTL decremented with the IPv4 checksum updated.

use aya_ebpf::{
    bindings::{
        BPF_F_ZERO_CSUM_TX, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK,
        TC_ACT_SHOT, bpf_fib_lookup, bpf_redir_neigh,
    },
    helpers::{bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    macros::map,
    maps::HashMap,
    programs::TcContext,
};
use hivemind_common::{
    DIR_SERVICE, DIR_TO_CONTAINER, DIR_TO_OVERLAY, EndpointInfo, MAX_ENDPOINTS, NodeConfig,
    OVERLAY_MAC, OVERLAY_SRC_MAC, container_mac, identity, mark, node_flags, reason, trace_program,
    vni,
};

use crate::{
    lb, metrics, monitor,
    pkt::{self, ETH_HLEN, Headers, L2Fields},
    policy, tunnel,
};

/// Local container IPv4 address (network order) -> ifindex of its host-side veth. Written by
/// the daemon with the endpoint.
#[map(name = "HM_LXC")]
static HM_LXC: HashMap<u32, u32> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

const IP_TTL_OFF: usize = ETH_HLEN + 8;
const AF_INET: u8 = 2;
const IP_CSUM_OFF: usize = ETH_HLEN + 10;

/// The node configuration, if host routing is on.
#[inline(always)]
fn enabled() -> Option<NodeConfig> {
    lb::node_config().filter(|c| c.flags & node_flags::HOST_ROUTING != 0)
}

/// The ifindex of the local container that holds `addr`, if any.
#[inline(always)]
fn local_endpoint(addr: u32) -> Option<u32> {
    // SAFETY: a map value pointer, valid for the program's run; plain data, copied at once.
    HM_LXC.get_ptr(&addr).map(|i| unsafe { *i })
}

/// TC ingress of a container's veth, after the source's own checks passed: the TC verdict
/// (a redirect, a drop of the destination's policy, or `TC_ACT_OK` for the kernel's path).
#[inline(always)]
pub(crate) fn from_container(ctx: &TcContext, headers: &Headers, source: &EndpointInfo) -> i32 {
    let Some(config) = enabled() else {
        return TC_ACT_OK;
    };
    let Headers::Ipv4(ip) = headers else {
        return TC_ACT_OK;
    };
    if !ip.complete {
        return TC_ACT_OK;
    }
    let Some(l2) = pkt::l2_fields(ctx) else {
        return TC_ACT_OK;
    };
    if let Some(ifindex) = local_endpoint(ip.daddr) {
        let switched =
            l2.dst_mac_head == u16::from_ne_bytes([0x0a, 0x58]) && l2.dst_mac_tail == ip.daddr;
        return deliver(
            ctx,
            headers,
            &config,
            &l2,
            ifindex,
            source.identity,
            !switched,
        );
    }
    // The ipcache alone: an address it does not place on another node takes the kernel's
    // path, where `hm_overlay_egress` also asks the tunnels.
    let underlay = policy::tunnel_endpoint(ip.daddr);
    if underlay == 0 {
        return TC_ACT_OK;
    }
    if config.vxlan_ifindex == 0 || l2.ttl() <= 1 || too_big(ctx, &config) {
        return TC_ACT_OK;
    }
    let vni = if source.identity != 0 && vni::allowed(source.identity) {
        source.identity
    } else {
        tunnel::source_vni(ip.saddr)
    };
    encapsulate(ctx, &config, &l2, underlay, vni)
}

/// Underlay TC ingress: a packet a published port in `snat` mode translated. Its source is the
/// node's gateway now, which the kernel refuses from the underlay (a martian), so it is
/// delivered here: to a local backend (`deliver`) or through the tunnel to the backend's node,
/// with the identity of the outside (`identity::WORLD`). What cannot be delivered so is dropped
/// (`DROP_NO_TUNNEL`), counted.
#[inline(always)]
pub(crate) fn from_published(ctx: &TcContext) -> i32 {
    let headers = pkt::parse(ctx);
    let bytes = u64::from(ctx.len());
    let drop = |why: u8| {
        metrics::count(0, DIR_SERVICE, why, bytes);
        TC_ACT_SHOT
    };
    let (Some(config), Headers::Ipv4(ip), Some(l2)) =
        (lb::node_config(), &headers, pkt::l2_fields(ctx))
    else {
        return drop(reason::DROP_REWRITE);
    };
    if let Some(ifindex) = local_endpoint(ip.daddr) {
        return deliver(ctx, &headers, &config, &l2, ifindex, identity::WORLD, true);
    }
    let Some(underlay) = tunnel::lookup(ip.daddr) else {
        return drop(reason::DROP_NO_TUNNEL);
    };
    if config.vxlan_ifindex == 0 || l2.ttl() <= 1 || too_big(ctx, &config) {
        return drop(reason::DROP_NO_TUNNEL);
    }
    encapsulate(ctx, &config, &l2, underlay, identity::WORLD)
}

/// Sends the frame through the tunnel to the node at `underlay` (network order) with `vni`:
/// the tunnel key, the overlay's MACs and TTL, the mark that tells `hm_overlay_egress` the key
/// is set, and a redirect to `hm-vxlan`'s transmit.
#[inline(always)]
fn encapsulate(
    ctx: &TcContext,
    config: &NodeConfig,
    l2: &L2Fields,
    underlay: u32,
    vni: u32,
) -> i32 {
    let bytes = u64::from(ctx.len());
    let node = u32::from_be(underlay);
    let drop = |why: u8| {
        metrics::count(node, DIR_TO_OVERLAY, why, bytes);
        TC_ACT_SHOT
    };
    if tunnel::set_key(ctx, vni, node, u64::from(BPF_F_ZERO_CSUM_TX)).is_err() {
        return drop(reason::DROP_TUNNEL_KEY);
    }
    if route(ctx, l2, OVERLAY_MAC, OVERLAY_SRC_MAC).is_err() {
        return drop(reason::DROP_REWRITE);
    }
    ctx.set_mark(mark::ENCAPSULATED);
    metrics::count(node, DIR_TO_OVERLAY, reason::FORWARDED, bytes);
    // SAFETY: a plain helper call (flags 0: the device's egress).
    unsafe { bpf_redirect(config.vxlan_ifindex, 0) as i32 }
}

/// TC ingress of `hm-vxlan`, after its checks passed: delivers to a local container, else
/// `TC_ACT_OK` (the kernel routes the packet). `always`: deliver even with host routing off
/// (a published port's client from outside the cluster, whose source the kernel's loose
/// reverse-path check refuses on `hm-vxlan`, an interface without an address).
#[inline(always)]
pub(crate) fn from_overlay(
    ctx: &TcContext,
    headers: &Headers,
    source_identity: u32,
    always: bool,
) -> i32 {
    let config = if always { lb::node_config() } else { enabled() };
    let Some(config) = config else {
        return TC_ACT_OK;
    };
    let Headers::Ipv4(ip) = headers else {
        return TC_ACT_OK;
    };
    let Some(ifindex) = local_endpoint(ip.daddr) else {
        return TC_ACT_OK;
    };
    let Some(l2) = pkt::l2_fields(ctx) else {
        return TC_ACT_OK;
    };
    deliver(ctx, headers, &config, &l2, ifindex, source_identity, true)
}

/// Local delivery to the container on host veth `ifindex`: its ingress policy, the L2 rewrite
/// if `routed`, its counters, then `bpf_redirect_peer`.
#[inline(always)]
fn deliver(
    ctx: &TcContext,
    headers: &Headers,
    config: &NodeConfig,
    l2: &L2Fields,
    ifindex: u32,
    source_identity: u32,
    routed: bool,
) -> i32 {
    let Some(info) = metrics::endpoint_at(ifindex) else {
        return TC_ACT_OK;
    };
    if routed && l2.ttl() <= 1 {
        return TC_ACT_OK;
    }
    let bytes = u64::from(ctx.len());
    let verdict = policy::ingress(ctx, &info, policy::parse(headers), source_identity);
    if monitor::on() {
        let why = verdict.err().unwrap_or(reason::FORWARDED);
        monitor::trace(
            ctx,
            headers,
            info.endpoint_id,
            trace_program::DELIVERED,
            why,
        );
    }
    if let Err(why) = verdict {
        metrics::count(info.endpoint_id, DIR_TO_CONTAINER, why, bytes);
        return TC_ACT_SHOT;
    }
    if routed {
        let Headers::Ipv4(ip) = headers else {
            return TC_ACT_OK;
        };
        let mac = container_mac(ip.daddr.to_ne_bytes());
        if route(ctx, l2, mac, config.gateway_mac).is_err() {
            metrics::count(
                info.endpoint_id,
                DIR_TO_CONTAINER,
                reason::DROP_REWRITE,
                bytes,
            );
            return TC_ACT_SHOT;
        }
    }
    metrics::forwarded(&info, DIR_TO_CONTAINER, bytes);
    // SAFETY: a plain helper call (flags must be 0).
    unsafe { bpf_redirect_peer(ifindex, 0) as i32 }
}

/// A packet for outside the cluster whose source is a node's address (the reply of a published
/// port): the kernel would drop it as a martian (a local source arriving from a container), so
/// it is routed here, by the kernel's FIB (`bpf_fib_lookup`): MACs and TTL written and
/// `bpf_redirect` to the outgoing interface, or `bpf_redirect_neigh` when the next hop's MAC
/// is not known yet. Anything the FIB does not forward goes to the kernel (`TC_ACT_OK`).
#[inline(always)]
pub(crate) fn to_outside(ctx: &TcContext, headers: &Headers) -> i32 {
    let Headers::Ipv4(ip) = headers else {
        return TC_ACT_OK;
    };
    let Some(l2) = pkt::l2_fields(ctx) else {
        return TC_ACT_OK;
    };
    if l2.ttl() <= 1 {
        return TC_ACT_OK;
    }
    // SAFETY: plain C data; all zeroes is a valid (empty) request.
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = ip.proto;
    // tot_len 0: the helper checks the packet itself against the MTU, a GSO packet by the size
    // of its segments (a tot_len of a GRO-merged reply would fail as "fragmentation needed").
    // SAFETY: a verifier-checked read of the program's context.
    fib.ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    fib.__bindgen_anon_3.ipv4_src = ip.saddr;
    fib.__bindgen_anon_4.ipv4_dst = ip.daddr;
    // SAFETY: the program's context and a stack struct of the size passed.
    let ret = unsafe {
        bpf_fib_lookup(
            ctx.skb.skb.cast(),
            &mut fib,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    match ret as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            if route(ctx, &l2, fib.dmac, fib.smac).is_err() {
                return TC_ACT_SHOT;
            }
            // SAFETY: a plain helper call (flags 0: the device's egress).
            unsafe { bpf_redirect(fib.ifindex, 0) as i32 }
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => {
            // SAFETY: plain C data, then the next hop the lookup found.
            let mut neigh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
            neigh.nh_family = u32::from(AF_INET);
            // SAFETY: the IPv4 members of both unions, as filled in above and by the lookup.
            unsafe { neigh.__bindgen_anon_1.ipv4_nh = fib.__bindgen_anon_4.ipv4_dst };
            // SAFETY: a stack struct of the size passed.
            unsafe {
                bpf_redirect_neigh(
                    fib.ifindex,
                    &mut neigh,
                    core::mem::size_of::<bpf_redir_neigh>() as i32,
                    0,
                ) as i32
            }
        }
        _ => TC_ACT_OK,
    }
}

/// A frame larger than the tunnel takes that is not GSO (GSO segments are cut to size).
#[inline(always)]
fn too_big(ctx: &TcContext, config: &NodeConfig) -> bool {
    // SAFETY: a verifier-checked read of the program's context.
    let gso_size = unsafe { (*ctx.skb.skb).gso_size };
    gso_size == 0 && ctx.len() > ETH_HLEN as u32 + config.overlay_mtu
}

/// One routing hop: writes the MACs and decrements the TTL, updating the IPv4 checksum, by
/// direct packet access (the Ethernet and fixed IPv4 headers are in the linear area after
/// `pkt::parse`); `Err` if they are not.
#[inline(always)]
fn route(ctx: &TcContext, l2: &L2Fields, dst: [u8; 6], src: [u8; 6]) -> Result<(), ()> {
    let [ttl, proto] = l2.ttl_proto.to_ne_bytes();
    let new = u16::from_ne_bytes([ttl - 1, proto]);
    let start = ctx.data();
    if start + ETH_HLEN + 20 > ctx.data_end() {
        return Err(());
    }
    // SAFETY: the first ETH_HLEN + 20 bytes were just checked to lie inside the linear area;
    // byte arrays and unaligned u16 accesses (the verifier does not ask packet accesses to be
    // aligned).
    unsafe {
        *(start as *mut [u8; 6]) = dst;
        *((start + 6) as *mut [u8; 6]) = src;
        let check = (start + IP_CSUM_OFF) as *mut u16;
        check.write_unaligned(pkt::csum_replace2(
            check.read_unaligned(),
            l2.ttl_proto,
            new,
        ));
        *((start + IP_TTL_OFF) as *mut u8) = ttl - 1;
    }
    Ok(())
}
