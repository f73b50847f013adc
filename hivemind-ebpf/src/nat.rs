//! Egress NAT (masquerade) on the node's underlay interface, as Cilium's BPF masquerading:
//! packets from this node's containers to destinations outside `HM_NO_MASQ` (the cluster and
//! service CIDRs and what the operator lists) leave with the node's address as their source,
//! and the replies get the container's address back before the kernel routes them.
//!
//! - `egress` (TC egress of the underlay interface, after the kernel routed the packet): TCP,
//!   UDP and ICMP echo requests from the container subnet. A new flow keeps its source port
//!   (echo identifier) when no other mapping to the same remote address and port holds it and
//!   no socket of the node owns it; otherwise up to `NAT_PROBES` ports from `NAT_PORT_MIN` up
//!   are tried. No port: dropped as `DROP_NAT_NO_PORT`; the map full: `DROP_NAT_FULL`; a
//!   protocol or fragment it cannot translate: `DROP_NAT_UNSUPPORTED` (all counted under
//!   `DIR_NAT`, never lost silently).
//! - `ingress` (TC ingress of the underlay interface): a TCP, UDP or ICMP echo reply to the
//!   node's address that matches an in entry gets the container's address and port back;
//!   everything else passes untouched (the node's own traffic).
//!
//! A mapping is two `HM_NAT` entries (out and in, see `NatKey`), made together. An RST in
//! either direction frees it at once; a FIN marks it closing; the daemon's garbage collection
//! frees closing and idle mappings by their `last_seen_ns` (`NAT_*_TIMEOUT_S`).

use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        BPF_NOEXIST, TC_ACT_OK, TC_ACT_SHOT, bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1,
    },
    helpers::{bpf_ktime_get_ns, bpf_sk_lookup_tcp, bpf_sk_lookup_udp, bpf_sk_release},
    macros::map,
    maps::{HashMap, LpmTrie, lpm_trie::Key},
    programs::TcContext,
};
use hivemind_common::{
    DIR_NAT, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, MAX_NAT_ENTRIES, MAX_NO_MASQ, NAT_PORT_MIN,
    NAT_PROBES, NatKey, NatValue, NodeConfig, nat_flags, node_flags, reason,
};

use crate::{
    lb, metrics,
    pkt::{self, Headers, Ipv4, TCP_FIN, TCP_RST},
    publish,
};

/// Masquerade mappings, both directions. Written by the data path; the daemon frees idle ones.
#[map(name = "HM_NAT")]
static HM_NAT: HashMap<NatKey, NatValue> = HashMap::with_max_entries(MAX_NAT_ENTRIES, 0);

/// Destinations never masqueraded (LPM, network byte order). Written by the daemon.
#[map(name = "HM_NO_MASQ")]
static HM_NO_MASQ: LpmTrie<u32, u8> = LpmTrie::with_max_entries(MAX_NO_MASQ, 0);

/// More-fragments flag and fragment offset of the IPv4 flags/offset field.
const IP_MF_OFFSET: u16 = 0x3fff;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
/// Offset of the echo identifier in the ICMP header.
const ICMP_ID: usize = 4;
/// `bpf_sk_lookup_*`: the network namespace of the packet's device.
const CURRENT_NETNS: u64 = u64::MAX;
/// `-EEXIST`, what a `BPF_NOEXIST` insert returns for a key that is there.
const EEXIST: i32 = -17;

/// The addresses and ports of a packet egress NAT translates, network byte order; ICMP echo has
/// its identifier as the container's (or the NAT) port and 0 as the remote one.
#[derive(Clone, Copy)]
struct Flow {
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    proto: u8,
    l4_off: usize,
    tcp_flags: u8,
}

impl Flow {
    /// Where the rewritten port lies: the TCP/UDP source or destination port, or the ICMP echo
    /// identifier.
    #[inline(always)]
    fn port_offset(&self, source: bool) -> usize {
        match (self.proto, source) {
            (IPPROTO_ICMP, _) => self.l4_off + ICMP_ID,
            (_, true) => self.l4_off,
            (_, false) => self.l4_off + 2,
        }
    }
}

/// The configuration, if masquerading is on.
#[inline(always)]
fn enabled() -> Option<NodeConfig> {
    lb::node_config()
        .filter(|c| c.flags & node_flags::MASQUERADE != 0 && c.node_ip != 0 && c.subnet_mask != 0)
}

/// The flow of `ip` if it is TCP, UDP or ICMP echo of the given type, not a fragment, with the
/// headers it needs.
#[inline(always)]
fn flow(ctx: &TcContext, ip: &Ipv4, echo_type: u8) -> Option<Flow> {
    if ip.frag & IP_MF_OFFSET != 0 || !ip.complete {
        return None;
    }
    let mut flow = Flow {
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport: 0,
        dport: 0,
        proto: ip.proto,
        l4_off: ip.l4_off,
        tcp_flags: 0,
    };
    match ip.proto {
        IPPROTO_TCP if ip.l4_avail >= 20 => {
            flow.sport = ip.l4_u16(0);
            flow.dport = ip.l4_u16(2);
            flow.tcp_flags = ip.tcp_flags;
        }
        IPPROTO_UDP if ip.l4_avail >= 8 => {
            flow.sport = ip.l4_u16(0);
            flow.dport = ip.l4_u16(2);
        }
        IPPROTO_ICMP if ip.l4_avail >= 8 && ip.l4[0] == echo_type => {
            let id = ctx.load::<u16>(ip.l4_off + ICMP_ID).ok()?;
            if echo_type == ICMP_ECHO_REQUEST {
                flow.sport = id;
            } else {
                flow.dport = id;
            }
        }
        _ => return None,
    }
    Some(flow)
}

/// TC egress of the underlay interface: the TC verdict.
#[inline(always)]
pub(crate) fn egress(ctx: &TcContext) -> i32 {
    let Some(config) = enabled() else {
        return TC_ACT_OK;
    };
    let Headers::Ipv4(ip) = pkt::parse(ctx) else {
        return TC_ACT_OK;
    };
    if ip.saddr & config.subnet_mask != config.subnet || ip.saddr == config.gateway {
        return TC_ACT_OK;
    }
    if HM_NO_MASQ.get(Key::new(32, ip.daddr)).is_some() {
        return TC_ACT_OK;
    }
    let bytes = u64::from(ctx.len());
    match masquerade(ctx, &ip, &config) {
        Ok(()) => {
            metrics::count_node(DIR_NAT, reason::NAT_MASQUERADED, bytes);
            TC_ACT_OK
        }
        Err(why) => {
            metrics::count(0, DIR_NAT, why, bytes);
            TC_ACT_SHOT
        }
    }
}

/// Rewrites the source of a packet from a container to the node's address and its mapping's
/// port, making the mapping on a flow's first packet.
#[inline(always)]
fn masquerade(ctx: &TcContext, ip: &Ipv4, config: &NodeConfig) -> Result<(), u8> {
    let flow = flow(ctx, ip, ICMP_ECHO_REQUEST).ok_or(reason::DROP_NAT_UNSUPPORTED)?;
    let out = NatKey {
        local: flow.saddr,
        remote: flow.daddr,
        local_port: flow.sport,
        remote_port: flow.dport,
        proto: flow.proto,
        dir: NatKey::OUT,
        _pad: [0; 2],
    };
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let port = match HM_NAT.get_ptr_mut(&out) {
        Some(value) => {
            // SAFETY: a map value pointer, valid for the program's run; plain data (a racing
            // update of the timestamp or flags by another CPU is harmless).
            unsafe {
                (*value).last_seen_ns = now;
                if flow.tcp_flags & TCP_FIN != 0 {
                    (*value).flags |= nat_flags::CLOSING;
                }
                (*value).port
            }
        }
        None => map_new(ctx, &flow, &out, config.node_ip, now)?,
    };
    lb::rewrite(
        ctx,
        (flow.proto, flow.l4_off),
        lb::IP_SRC_OFF,
        flow.port_offset(true),
        (flow.saddr, config.node_ip),
        (flow.sport, port),
    )?;
    if flow.tcp_flags & TCP_RST != 0 {
        let _ = HM_NAT.remove(&inbound(&flow, config.node_ip, port));
        let _ = HM_NAT.remove(&out);
    }
    Ok(())
}

/// The in key of `flow`'s mapping on `port`.
#[inline(always)]
fn inbound(flow: &Flow, node_ip: u32, port: u16) -> NatKey {
    NatKey {
        local: flow.daddr,
        remote: node_ip,
        local_port: flow.dport,
        remote_port: port,
        proto: flow.proto,
        dir: NatKey::IN,
        _pad: [0; 2],
    }
}

/// Makes the mapping of a new flow: reserves a port with its in entry (`BPF_NOEXIST`, so two
/// flows never share one), then writes the out entry. Returns the port.
#[inline(always)]
fn map_new(ctx: &TcContext, flow: &Flow, out: &NatKey, node_ip: u32, now: u64) -> Result<u16, u8> {
    let back = NatValue {
        addr: flow.saddr,
        port: flow.sport,
        flags: 0,
        _pad: 0,
        last_seen_ns: now,
    };
    let start = lb::mix(flow.saddr ^ u32::from(flow.sport) ^ (u32::from(flow.dport) << 16));
    let span = u32::from(u16::MAX - NAT_PORT_MIN) + 1;
    for probe in 0..NAT_PROBES {
        let port = if probe == 0 {
            flow.sport
        } else {
            let host =
                u32::from(NAT_PORT_MIN) + start.wrapping_add(probe.wrapping_mul(7919)) % span;
            (host as u16).to_be()
        };
        if host_socket(ctx, flow, node_ip, port) {
            continue;
        }
        let key = inbound(flow, node_ip, port);
        match HM_NAT.insert(&key, &back, u64::from(BPF_NOEXIST)) {
            Ok(()) => {}
            Err(EEXIST) => continue,
            Err(_) => return Err(reason::DROP_NAT_FULL),
        }
        let forward = NatValue {
            addr: node_ip,
            port,
            ..back
        };
        if let Err(e) = HM_NAT.insert(out, &forward, u64::from(BPF_NOEXIST)) {
            let _ = HM_NAT.remove(&key);
            if e != EEXIST {
                return Err(reason::DROP_NAT_FULL);
            }
            // Another CPU mapped the same flow first: use its port.
            // SAFETY: as in `masquerade`.
            return HM_NAT
                .get_ptr(out)
                .map(|v| unsafe { (*v).port })
                .ok_or(reason::DROP_NAT_FULL);
        }
        metrics::count_node(DIR_NAT, reason::NAT_NEW_MAPPING, 0);
        return Ok(port);
    }
    Err(reason::DROP_NAT_NO_PORT)
}

/// Whether a socket of the node owns `node_ip`:`port` towards the flow's remote address and
/// port (a connection, or a listener on that port): the port is not the NAT's to hand out.
#[inline(always)]
fn host_socket(ctx: &TcContext, flow: &Flow, node_ip: u32, port: u16) -> bool {
    if flow.proto != IPPROTO_TCP && flow.proto != IPPROTO_UDP {
        return false;
    }
    let mut tuple = bpf_sock_tuple {
        __bindgen_anon_1: bpf_sock_tuple__bindgen_ty_1 {
            ipv4: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
                saddr: flow.daddr,
                daddr: node_ip,
                sport: flow.dport,
                dport: port,
            },
        },
    };
    let size = size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>() as u32;
    let skb = ctx.skb.skb.cast();
    // SAFETY: plain helper calls on the program's own context and a stack tuple of the IPv4
    // size; a socket found is released at once.
    unsafe {
        let sk = if flow.proto == IPPROTO_TCP {
            bpf_sk_lookup_tcp(skb, &mut tuple, size, CURRENT_NETNS, 0)
        } else {
            bpf_sk_lookup_udp(skb, &mut tuple, size, CURRENT_NETNS, 0)
        };
        if sk.is_null() {
            return false;
        }
        bpf_sk_release(sk.cast());
    }
    true
}

/// TC ingress of the underlay interface, for what is not overlay traffic: published ports
/// (`publish`), then the reverse translation of replies to masqueraded flows.
#[inline(always)]
pub(crate) fn ingress(ctx: &TcContext) -> i32 {
    let headers = pkt::parse(ctx);
    if let Some(verdict) = publish::ingress(ctx, &headers) {
        return verdict;
    }
    let Some(config) = enabled() else {
        return TC_ACT_OK;
    };
    let Headers::Ipv4(ip) = headers else {
        return TC_ACT_OK;
    };
    if ip.daddr != config.node_ip {
        return TC_ACT_OK;
    }
    let Some(flow) = flow(ctx, &ip, ICMP_ECHO_REPLY) else {
        return TC_ACT_OK;
    };
    let key = NatKey {
        local: flow.saddr,
        remote: flow.daddr,
        local_port: flow.sport,
        remote_port: flow.dport,
        proto: flow.proto,
        dir: NatKey::IN,
        _pad: [0; 2],
    };
    let Some(value) = HM_NAT.get_ptr_mut(&key) else {
        return TC_ACT_OK;
    };
    // SAFETY: as in `masquerade`.
    let (addr, port) = unsafe {
        // SAFETY: a plain helper call.
        (*value).last_seen_ns = bpf_ktime_get_ns();
        if flow.tcp_flags & TCP_FIN != 0 {
            (*value).flags |= nat_flags::CLOSING;
        }
        ((*value).addr, (*value).port)
    };
    let bytes = u64::from(ctx.len());
    let rewritten = lb::rewrite(
        ctx,
        (flow.proto, flow.l4_off),
        lb::IP_DST_OFF,
        flow.port_offset(false),
        (flow.daddr, addr),
        (flow.dport, port),
    );
    if let Err(why) = rewritten {
        metrics::count(0, DIR_NAT, why, bytes);
        return TC_ACT_SHOT;
    }
    if flow.tcp_flags & TCP_RST != 0 {
        let out = NatKey {
            local: addr,
            remote: flow.saddr,
            local_port: port,
            remote_port: flow.sport,
            proto: flow.proto,
            dir: NatKey::OUT,
            _pad: [0; 2],
        };
        let _ = HM_NAT.remove(&out);
        let _ = HM_NAT.remove(&key);
    }
    metrics::count_node(DIR_NAT, reason::NAT_REVERSED, bytes);
    TC_ACT_OK
}
