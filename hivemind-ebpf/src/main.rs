//! Hivemind's in-kernel programs. Entry points only: each one calls a `try_*` function and
//! maps its `Result` to a return code; the logic lives in one module per concern.
#![no_std]
#![no_main]
// Single-instruction packet loads in `pkt` (see its `load!`).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod conntrack;
mod flows;
mod frag;
mod lb;
mod metrics;
mod monitor;
mod nat;
mod pkt;
mod policy;
mod publish;
mod routing;
mod runtime;
mod sock;
mod switch;
mod tunnel;
mod underlay;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::{cgroup_sock_addr, classifier, xdp},
    programs::{SockAddrContext, TcContext, XdpContext},
};
use hivemind_common::{
    DIR_FROM_CONTAINER, DIR_TO_CONTAINER, ENDPOINT_ID_UNKNOWN, EndpointInfo, reason,
};

/// TC ingress of a container's host-side veth: packets leaving the container. Service DNAT
/// then the endpoint's egress policy (on the backend), or the egress policy then the reverse
/// NAT of replies from a local backend; then host routing (`routing`) delivers or encapsulates
/// the packet, or the kernel routes it.
#[classifier]
pub fn hm_lxc_from_container(ctx: TcContext) -> i32 {
    match try_lxc(&ctx, DIR_FROM_CONTAINER) {
        Ok(ret) | Err(ret) => monitor::finish(&ctx, ret),
    }
}

/// TC egress of a container's host-side veth: packets going into the container. The endpoint's
/// ingress policy, then the reverse NAT of service replies.
#[classifier]
pub fn hm_lxc_to_container(ctx: TcContext) -> i32 {
    match try_lxc(&ctx, DIR_TO_CONTAINER) {
        Ok(ret) | Err(ret) => monitor::finish(&ctx, ret),
    }
}

/// Runs the load balancer and the policy for the direction and counts the packet for its
/// endpoint: passed (FORWARDED) or dropped with the reason; a passed packet from the container
/// then meets host routing.
#[inline(always)]
fn try_lxc(ctx: &TcContext, direction: u8) -> Result<i32, i32> {
    let info = metrics::endpoint(ctx);
    let endpoint = info.endpoint_id;
    let mut headers = pkt::parse(ctx);
    let mut to_outside = false;
    let verdict = if let Err(why) = guard(ctx, &headers, &info, direction) {
        Err(why)
    } else if direction == DIR_FROM_CONTAINER {
        from_container(ctx, &headers, &info).map(|nat| {
            if nat.kind != lb::NAT_UNTOUCHED {
                headers = pkt::parse(ctx);
            }
            // The reply of a published port leaves from a node address: not the kernel's to
            // forward (its source is local, or another node's), so it is routed out here.
            to_outside = nat.kind == lb::NAT_SOURCE && !lb::in_service_cidr(nat.addr);
        })
    } else {
        policy::ingress(
            ctx,
            &info,
            policy::parse(&headers),
            policy::marked_identity(ctx),
        )
        .and_then(|()| lb::reverse(ctx, &headers).map(|_| ()))
    };
    let bytes = u64::from(ctx.len());
    let mut explain = false;
    if monitor::on() {
        let program = if direction == DIR_FROM_CONTAINER {
            hivemind_common::trace_program::FROM_CONTAINER
        } else {
            hivemind_common::trace_program::TO_CONTAINER
        };
        let why = match verdict {
            Ok(()) => reason::FORWARDED,
            Err(why) => why,
        };
        explain = monitor::trace(ctx, &headers, endpoint, program, why) && monitor::explains(why);
    }
    match verdict {
        Ok(()) => {
            metrics::forwarded(&info, direction, bytes);
            if let pkt::Headers::Ipv4(ip) = &headers {
                let event = tcp_event(direction, ip.tcp_flags);
                if event != 0 {
                    metrics::count(endpoint, direction, event, 0);
                }
            }
            if to_outside {
                return Ok(routing::to_outside(ctx, &headers));
            }
            if direction == DIR_FROM_CONTAINER {
                return Ok(routing::from_container(ctx, &headers, &info));
            }
            Ok(TC_ACT_OK)
        }
        Err(why) => {
            metrics::count(endpoint, direction, why, bytes);
            if explain {
                monitor::stash(ctx, &headers, why);
                return Err(monitor::EXPLAIN);
            }
            Err(TC_ACT_SHOT)
        }
    }
}

/// Whether `info`'s endpoint backs a service (its replies may need reverse NAT).
#[inline(always)]
fn is_backend(info: &EndpointInfo) -> bool {
    info.roles & hivemind_common::endpoint_roles::BACKEND != 0
}

/// What a container may send and receive at all: from a container, IPv4 from its own address
/// and MAC (`DROP_SPOOFED`); both ways, IPv4 and ARP only (`DROP_NOT_IPV4_CONTAINER`: IPv6 is not
/// carried, so it must not pass between containers around their policy).
/// What a forwarded TCP segment says of the container's health, for the rollout analyses:
/// a reset it sent, a SYN it received, a SYN-ACK it sent (`reason::TCP_*`); 0 for anything
/// else.
#[inline(always)]
fn tcp_event(direction: u8, flags: u8) -> u8 {
    let handshake = flags & (pkt::TCP_SYN | pkt::TCP_ACK | pkt::TCP_RST);
    if direction == DIR_FROM_CONTAINER {
        if flags & pkt::TCP_RST != 0 {
            reason::TCP_RESET_SENT
        } else if handshake == pkt::TCP_SYN | pkt::TCP_ACK {
            reason::TCP_SYNACK_SENT
        } else {
            0
        }
    } else if handshake == pkt::TCP_SYN {
        reason::TCP_SYN_RECEIVED
    } else {
        0
    }
}

#[inline(always)]
fn guard(
    ctx: &TcContext,
    headers: &pkt::Headers,
    info: &EndpointInfo,
    direction: u8,
) -> Result<(), u8> {
    const ETH_P_ARP: u16 = 0x0806;
    if info.endpoint_id == ENDPOINT_ID_UNKNOWN {
        return Ok(());
    }
    match headers {
        pkt::Headers::Ipv4(ip) if direction == DIR_FROM_CONTAINER && info.ip != 0 => {
            let own_mac = pkt::source_mac(ctx).is_some_and(|(head, tail)| {
                head == u16::from_ne_bytes([0x0a, 0x58]) && tail == info.ip
            });
            if ip.saddr == info.ip && own_mac {
                Ok(())
            } else {
                Err(reason::DROP_SPOOFED)
            }
        }
        pkt::Headers::NotIpv4 if pkt::ethertype(ctx) != Some(ETH_P_ARP) => {
            Err(reason::DROP_NOT_IPV4_CONTAINER)
        }
        _ => Ok(()),
    }
}

/// Policy applies to the backend: after DNAT for packets to the service CIDR, before the
/// reverse NAT (which only touches replies) otherwise. What the load balancer did.
#[inline(always)]
fn from_container(
    ctx: &TcContext,
    headers: &pkt::Headers,
    info: &hivemind_common::EndpointInfo,
) -> Result<lb::Nat, u8> {
    let before = policy::parse(headers);
    match before {
        policy::Parsed::Ipv4(t) if lb::in_service_cidr(t.daddr) => {
            // The tuple the packet carries now: the backend's if it was translated.
            let nat = lb::from_container(ctx, headers, info.endpoint_id, is_backend(info))?;
            let after = if nat.kind == lb::NAT_DESTINATION {
                t.with_destination(nat.addr, nat.port)
            } else {
                t
            };
            policy::egress(ctx, info, policy::Parsed::Ipv4(after), Some(t))?;
            Ok(nat)
        }
        _ => {
            policy::egress(ctx, info, before, None)?;
            lb::from_container(ctx, headers, info.endpoint_id, is_backend(info))
        }
    }
}

/// TC egress of the VXLAN device `hm-vxlan`: service DNAT of node-originated packets (a local
/// backend is redirected to the bridge), then picks the remote node for the destination and sets
/// the tunnel key; no tunnel or not IPv4 -> dropped with a counted reason.
#[classifier]
pub fn hm_overlay_egress(ctx: TcContext) -> i32 {
    match tunnel::egress(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

/// TC ingress of the VXLAN device `hm-vxlan`: decapsulated packets; checks the VNI and the
/// inner IPv4 header, restores the source of service replies, then lets the kernel route them
/// to the local bridge (or deliver them to the node).
#[classifier]
pub fn hm_overlay_ingress(ctx: TcContext) -> i32 {
    match tunnel::ingress(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

/// XDP on the node's underlay interface: drops malformed VXLAN early, passes the rest.
#[xdp]
pub fn hm_xdp_underlay(ctx: XdpContext) -> u32 {
    underlay::xdp(&ctx)
}

/// TC ingress of the node's underlay interface: the same checks as `hm_xdp_underlay`, for
/// interfaces where XDP costs more than it saves (a veth, whose peer loses GSO under XDP); then
/// the reverse translation of replies to masqueraded flows.
#[classifier]
pub fn hm_tc_underlay(ctx: TcContext) -> i32 {
    underlay::tc(&ctx)
}

/// TC egress of the node's underlay interface: egress NAT of container traffic leaving the
/// cluster (`nat`).
#[classifier]
pub fn hm_nat_egress(ctx: TcContext) -> i32 {
    nat::egress(&ctx)
}

/// TC ingress of the node's underlay interface where `hm_xdp_underlay` validates the overlay:
/// the reverse translation of replies to masqueraded flows (`hm_tc_underlay` does it itself).
#[classifier]
pub fn hm_nat_ingress(ctx: TcContext) -> i32 {
    nat::ingress(&ctx)
}

/// cgroup connect4: a connect to a VIP:port goes to a backend (`sock`). Always allows.
#[cgroup_sock_addr(connect4)]
pub fn hm_sock_connect4(ctx: SockAddrContext) -> i32 {
    sock::translate(&ctx);
    1
}

/// cgroup sendmsg4: a datagram to a VIP:port goes to a backend.
#[cgroup_sock_addr(sendmsg4)]
pub fn hm_sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock::translate(&ctx);
    1
}

/// cgroup recvmsg4: a datagram from a backend shows the VIP:port it was sent to.
#[cgroup_sock_addr(recvmsg4)]
pub fn hm_sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock::restore(&ctx);
    1
}

/// cgroup getpeername4: a socket connected through a VIP names the VIP as its peer.
#[cgroup_sock_addr(getpeername4)]
pub fn hm_sock_getpeername4(ctx: SockAddrContext) -> i32 {
    sock::restore(&ctx);
    1
}

/// Tail-called by the container programs for a drop the monitor wants explained: writes the
/// line in words (`aya-log`) and drops.
#[classifier]
pub fn hm_tc_explain(ctx: TcContext) -> i32 {
    monitor::explain_stashed(&ctx);
    TC_ACT_SHOT
}
