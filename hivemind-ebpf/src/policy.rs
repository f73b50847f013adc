//! Network policy: identities (`HM_IPCACHE`), the identity and CIDR rules of each endpoint
//! (`HM_POLICY`, `HM_POLICY_CIDR`) and the verdict of each packet at the container veth.
//!
//! Where it runs: `egress` in `hm_lxc_from_container` (the source endpoint's egress rules, on
//! the tuple after service DNAT), `ingress` in `hm_lxc_to_container` (the destination
//! endpoint's ingress rules, before the reverse NAT of service replies), or, with host routing,
//! in whichever program delivers the packet to the destination (`routing::deliver`).
//!
//! Verdict of one packet of an endpoint whose `EndpointInfo::flags` is non-zero (an endpoint
//! that enforces nothing keeps no conntrack; it only reports its new flows, `flows::unpoliced`):
//! 1. a packet of an established flow passes: the original direction of a flow this check point
//!    allowed, or the reply of one the other check point of the endpoint allowed (`HM_CT`,
//!    scopes `ct_scope::EGRESS` / `ct_scope::INGRESS`, replies flagged `ct_flags::REPLY`);
//! 2. otherwise the flow is new: it passes if the direction is not enforced, if it is ICMP
//!    "fragmentation needed", if it is DNS (UDP/TCP 53) to the node gateway (egress only), or
//!    if a rule allows the peer identity (or any, identity 0) / the peer address (CIDR), the
//!    protocol (or any, 0) and the destination port; then both conntrack entries are created
//!    and a flow record written;
//! 3. otherwise `DROP_POLICY` (and a rate-limited flow record).
//!
//! The peer identity: on ingress the VNI (through the mark `hm_overlay_ingress` wrote,
//! `hivemind_common::mark`, or handed over by host routing) or a local sender's endpoint
//! identity, else the ipcache of the source; on egress the ipcache of the
//! destination; no match is `identity::WORLD`, the node gateway without an entry is
//! `identity::HOST`. Non-IPv4 frames (ARP) pass; a broken IPv4 header is dropped
//! (`DROP_MALFORMED_IPV4`) when the direction is enforced; TCP/UDP headers cut short are
//! matched with ports 0. A later fragment (no ports) passes where its datagram's first fragment
//! passed, and is dropped (`DROP_POLICY`) otherwise (`frag`).

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LpmTrie, lpm_trie::Key},
    programs::TcContext,
};
use hivemind_common::{
    CtKey, CtValue, DIR_FROM_CONTAINER, EndpointInfo, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
    IpcacheValue, MAX_IPCACHE_ENTRIES, MAX_POLICY_CIDR_ENTRIES, MAX_POLICY_ENTRIES,
    POLICY_CIDR_FIXED_BITS, PolicyCidrKey, PolicyEntry, PolicyKey, ct_flags, ct_scope,
    endpoint_flags, identity, mark, reason,
};

use crate::{
    conntrack, flows, frag, lb,
    pkt::{self, Headers},
};

/// IPv4 address -> identity (and the node holding it) of every container of the cluster and
/// of every node's gateway. Written by the daemon.
#[map(name = "HM_IPCACHE")]
static HM_IPCACHE: HashMap<u32, IpcacheValue> = HashMap::with_max_entries(MAX_IPCACHE_ENTRIES, 0);

/// {endpoint, peer identity, direction, proto} -> allowed port ranges. Written by the daemon.
#[map(name = "HM_POLICY")]
static HM_POLICY: HashMap<PolicyKey, PolicyEntry> =
    HashMap::with_max_entries(MAX_POLICY_ENTRIES, 0);

/// {endpoint, direction, proto, peer prefix} -> allowed port ranges. Written by the daemon.
#[map(name = "HM_POLICY_CIDR")]
static HM_POLICY_CIDR: LpmTrie<PolicyCidrKey, PolicyEntry> =
    LpmTrie::with_max_entries(MAX_POLICY_CIDR_ENTRIES, 0);

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const DNS_PORT: u16 = 53;

/// The 5-tuple of an IPv4 packet (network byte order; ports 0 where there are none).
#[derive(Clone, Copy)]
pub(crate) struct Tuple {
    saddr: u32,
    pub(crate) daddr: u32,
    sport: u16,
    dport: u16,
    proto: u8,
    /// ICMP destination unreachable / fragmentation needed.
    frag_needed: bool,
    /// TCP flags (0 for other protocols).
    tcp_flags: u8,
    /// The IP id, and whether the packet is a datagram's first or a later fragment (a later
    /// one follows the verdict its first fragment got, see `frag`).
    id: u16,
    first_fragment: bool,
    later_fragment: bool,
}

/// What `parse` found.
#[derive(Clone, Copy)]
pub(crate) enum Parsed {
    /// Not IPv4 (ARP, IPv6, ...): policy does not apply.
    NotIpv4,
    /// IPv4 with a header too broken to read.
    Malformed,
    Ipv4(Tuple),
}

/// The policy's view of the frame's headers (see `pkt::parse`).
#[inline(always)]
pub(crate) fn parse(headers: &Headers) -> Parsed {
    let ip = match headers {
        Headers::NotIpv4 => return Parsed::NotIpv4,
        Headers::Malformed => return Parsed::Malformed,
        Headers::Ipv4(ip) if !ip.complete => return Parsed::Malformed,
        Headers::Ipv4(ip) => ip,
    };
    let mut tuple = Tuple {
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport: 0,
        dport: 0,
        proto: ip.proto,
        frag_needed: false,
        tcp_flags: 0,
        id: ip.id,
        first_fragment: frag::is_first(ip),
        later_fragment: frag::is_later(ip),
    };
    if tuple.later_fragment {
        return Parsed::Ipv4(tuple);
    }
    match ip.proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            if ip.l4_avail >= 4 {
                tuple.sport = ip.l4_u16(0);
                tuple.dport = ip.l4_u16(2);
            }
            tuple.tcp_flags = ip.tcp_flags;
        }
        IPPROTO_ICMP => {
            if ip.l4_avail >= 2 {
                tuple.frag_needed = ip.l4[0] == ICMP_DEST_UNREACH && ip.l4[1] == ICMP_FRAG_NEEDED;
            }
        }
        _ => {}
    }
    Parsed::Ipv4(tuple)
}

impl Tuple {
    /// The tuple after the destination NAT of a service to `daddr`:`dport` (network order).
    #[inline(always)]
    pub(crate) fn with_destination(self, daddr: u32, dport: u16) -> Tuple {
        Tuple {
            daddr,
            dport,
            ..self
        }
    }
}

/// The identity of `addr` from the ipcache: `WORLD` if unknown, `HOST` for the node gateway.
#[inline(always)]
pub(crate) fn identity_of(addr: u32) -> u32 {
    if let Some(identity) = known_identity(addr) {
        return identity;
    }
    match lb::node_config() {
        Some(config) if config.gateway != 0 && config.gateway == addr => identity::HOST,
        _ => identity::WORLD,
    }
}

/// Whether the ipcache knows `addr` (its identity if so).
#[inline(always)]
pub(crate) fn known_identity(addr: u32) -> Option<u32> {
    // SAFETY: a map value pointer, valid for the program's run; one field read at once.
    HM_IPCACHE.get_ptr(&addr).map(|v| unsafe { (*v).identity })
}

/// The underlay address (network order) of the node the ipcache places `addr` on, 0 if none
/// (this node, or an address it does not know).
#[inline(always)]
pub(crate) fn tunnel_endpoint(addr: u32) -> u32 {
    // SAFETY: as in `known_identity`.
    HM_IPCACHE
        .get_ptr(&addr)
        .map_or(0, |v| unsafe { (*v).tunnel_endpoint })
}

/// The egress check of `info`'s endpoint. `original`: the tuple before service DNAT, if the
/// packet was translated (a reply from the VIP must pass too). `Err` holds the drop reason.
#[inline(always)]
pub(crate) fn egress(
    ctx: &TcContext,
    info: &EndpointInfo,
    parsed: Parsed,
    original: Option<Tuple>,
) -> Result<(), u8> {
    if info.flags != 0 && is_icmp(&parsed) && related_error(ctx, DIR_FROM_CONTAINER) {
        return Ok(());
    }
    check(info, parsed, DIR_FROM_CONTAINER, 0, original)
}

/// The source identity `hm_overlay_ingress` left in the packet's mark, 0 if none.
#[inline(always)]
pub(crate) fn marked_identity(ctx: &TcContext) -> u32 {
    // SAFETY: a verifier-checked read of the program's context.
    let skb_mark = unsafe { (*ctx.skb.skb).mark };
    if skb_mark & mark::MAGIC_MASK == mark::IDENTITY_MAGIC {
        skb_mark & mark::IDENTITY_MASK
    } else {
        0
    }
}

/// The ingress check of `info`'s endpoint. `source_identity`: the sender's identity where the
/// caller knows it (the VNI of an overlay packet, the endpoint of a local sender), else 0 and
/// the ipcache of the source address decides.
#[inline(always)]
pub(crate) fn ingress(
    ctx: &TcContext,
    info: &EndpointInfo,
    parsed: Parsed,
    source_identity: u32,
) -> Result<(), u8> {
    if info.flags != 0 && is_icmp(&parsed) && related_error(ctx, hivemind_common::DIR_TO_CONTAINER)
    {
        return Ok(());
    }
    check(
        info,
        parsed,
        hivemind_common::DIR_TO_CONTAINER,
        source_identity,
        None,
    )
}

#[inline(always)]
fn is_icmp(parsed: &Parsed) -> bool {
    matches!(parsed, Parsed::Ipv4(t) if t.proto == IPPROTO_ICMP)
}

/// ICMP types that quote the packet they are about.
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_HLEN: usize = 8;
const IPV4_HLEN: usize = 20;

/// Whether the packet is an ICMP error (destination unreachable, time exceeded) about a TCP or
/// UDP connection this endpoint's checks know in `direction`'s terms (its quoted packet was
/// allowed one way or the other): related traffic, as the kernel's conntrack calls it. Read
/// from the packet itself, apart from the verdict's own parse (a subprogram: the main path
/// keeps its registers).
#[inline(never)]
fn related_error(ctx: &TcContext, direction: u8) -> bool {
    let at = |off: usize| ctx.load::<u8>(pkt::ETH_HLEN + off).ok();
    // A plain IPv4 header (no options) carrying ICMP, no fragment.
    if at(0) != Some(0x45) || at(9) != Some(IPPROTO_ICMP) {
        return false;
    }
    if ctx.load::<u16>(pkt::ETH_HLEN + 6).ok().map(u16::from_be).unwrap_or(1) & 0x1fff != 0 {
        return false;
    }
    let icmp = pkt::ETH_HLEN + IPV4_HLEN;
    let ty = ctx.load::<u8>(icmp).ok();
    if ty != Some(ICMP_DEST_UNREACH) && ty != Some(ICMP_TIME_EXCEEDED) {
        return false;
    }
    let inner = icmp + ICMP_HLEN;
    let proto = ctx.load::<u8>(inner + 9).unwrap_or(0);
    if ctx.load::<u8>(inner).ok() != Some(0x45) || (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
        return false;
    }
    let (Ok(saddr), Ok(daddr), Ok(sport), Ok(dport)) = (
        ctx.load::<u32>(inner + 12),
        ctx.load::<u32>(inner + 16),
        ctx.load::<u16>(inner + 20),
        ctx.load::<u16>(inner + 22),
    ) else {
        return false;
    };
    let quoted = CtKey::new(saddr, daddr, sport, dport, proto);
    let (own, other) = if direction == DIR_FROM_CONTAINER {
        (ct_scope::EGRESS, ct_scope::INGRESS)
    } else {
        (ct_scope::INGRESS, ct_scope::EGRESS)
    };
    matches!(conntrack::touch(&quoted.with_scope(other), 0), Some(ct) if ct.flags & ct_flags::REPLY == 0)
        || matches!(conntrack::touch(&quoted.with_scope(own), 0), Some(ct) if ct.flags & ct_flags::REPLY != 0)
}

#[inline(always)]
fn check(
    info: &EndpointInfo,
    parsed: Parsed,
    direction: u8,
    overlay_identity: u32,
    original: Option<Tuple>,
) -> Result<(), u8> {
    if info.flags == 0 {
        // Nothing enforced: only a new flow is reported (a TCP SYN here, other protocols
        // sorted out by `flows::unpoliced`).
        if let Parsed::Ipv4(t) = parsed
            && !t.later_fragment
        {
            let key = CtKey::new(t.saddr, t.daddr, t.sport, t.dport, t.proto);
            let new = if t.proto == IPPROTO_TCP {
                t.tcp_flags & (pkt::TCP_SYN | pkt::TCP_ACK) == pkt::TCP_SYN
            } else if direction == DIR_FROM_CONTAINER {
                flows::first_of_flow(&key, ct_scope::EGRESS, ct_scope::INGRESS)
            } else {
                flows::first_of_flow(&key, ct_scope::INGRESS, ct_scope::EGRESS)
            };
            if new {
                flows::unpoliced(&flows::Flow {
                    key,
                    endpoint_id: info.endpoint_id,
                    direction,
                    peer_identity: overlay_identity,
                });
            }
        }
        return Ok(());
    }
    let egress = direction == DIR_FROM_CONTAINER;
    let (enforced_bit, own, other) = if egress {
        (
            endpoint_flags::EGRESS_ENFORCED,
            ct_scope::EGRESS,
            ct_scope::INGRESS,
        )
    } else {
        (
            endpoint_flags::INGRESS_ENFORCED,
            ct_scope::INGRESS,
            ct_scope::EGRESS,
        )
    };
    let enforced = info.flags & enforced_bit != 0;
    let t = match parsed {
        Parsed::NotIpv4 => return Ok(()),
        Parsed::Malformed if enforced => return Err(reason::DROP_MALFORMED_IPV4),
        Parsed::Malformed => return Ok(()),
        Parsed::Ipv4(t) => t,
    };
    if t.later_fragment {
        // No ports to check: it passes where its datagram's first fragment passed.
        if !enforced || frag::lookup(t.saddr, t.daddr, t.id, t.proto, own).is_some() {
            return Ok(());
        }
        return Err(reason::DROP_POLICY);
    }
    let key = CtKey::new(t.saddr, t.daddr, t.sport, t.dport, t.proto);
    if let Some(ct) = conntrack::touch(&key.with_scope(own), t.tcp_flags)
        && ct.flags & ct_flags::REPLY == 0
    {
        return passed(&t, own);
    }
    if let Some(ct) = conntrack::touch(&key.with_scope(other), t.tcp_flags)
        && ct.flags & ct_flags::REPLY != 0
    {
        return passed(&t, own);
    }
    if t.frag_needed {
        return Ok(());
    }
    let (peer_addr, peer_identity) = if egress {
        (t.daddr, identity_of(t.daddr))
    } else if overlay_identity != 0 {
        (t.saddr, overlay_identity)
    } else {
        (t.saddr, identity_of(t.saddr))
    };
    let flow = flows::Flow {
        key,
        endpoint_id: info.endpoint_id,
        direction,
        peer_identity,
    };
    let allowed = !enforced
        || (egress && is_dns_to_gateway(&t))
        || allowed_by_rules(info.endpoint_id, direction, peer_identity, peer_addr, &t);
    if !allowed {
        flows::denied(&flow, reason::DROP_POLICY);
        return Err(reason::DROP_POLICY);
    }
    // A TCP packet in the middle of a connection the endpoint's state does not know (the daemon
    // flushed it when a policy changed): a direction that enforces nothing lets it pass but
    // must not record the connection, or its reply entry would let the other, enforced,
    // direction pass without a new check.
    if !enforced
        && t.proto == IPPROTO_TCP
        && t.tcp_flags & (pkt::TCP_SYN | pkt::TCP_ACK) != pkt::TCP_SYN
    {
        return Ok(());
    }
    let forward = CtValue {
        owner: info.endpoint_id,
        ..CtValue::default()
    };
    let reply = CtValue {
        flags: ct_flags::REPLY,
        ..forward
    };
    let reverse = CtKey::new(t.daddr, t.saddr, t.dport, t.sport, t.proto).with_scope(own);
    // Reply entry first, as in the load balancer. A refused entry (the endpoint's budget spent,
    // the table full) only costs later packets a new check.
    let _ = conntrack::create(&reverse, &reply, 0);
    if let Some(o) = original
        && (o.daddr != t.daddr || o.dport != t.dport)
    {
        let vip_reply = CtKey::new(o.daddr, o.saddr, o.dport, o.sport, o.proto).with_scope(own);
        let _ = conntrack::create(&vip_reply, &reply, 0);
    }
    let _ = conntrack::create(&key.with_scope(own), &forward, t.tcp_flags);
    flows::allowed(&flow);
    passed(&t, own)
}

/// A packet the check let through; a first fragment leaves the verdict for the later ones.
#[inline(always)]
fn passed(t: &Tuple, scope: u8) -> Result<(), u8> {
    if t.first_fragment {
        frag::remember(t.saddr, t.daddr, t.id, t.proto, scope, 0);
    }
    Ok(())
}

#[inline(always)]
fn is_dns_to_gateway(t: &Tuple) -> bool {
    if (t.proto != IPPROTO_UDP && t.proto != IPPROTO_TCP) || u16::from_be(t.dport) != DNS_PORT {
        return false;
    }
    matches!(lb::node_config(), Some(c) if c.gateway != 0 && c.gateway == t.daddr)
}

#[inline(always)]
fn allowed_by_rules(endpoint: u32, direction: u8, peer: u32, peer_addr: u32, t: &Tuple) -> bool {
    let port = u16::from_be(t.dport);
    let by_identity = |identity: u32, proto: u8| {
        let key = PolicyKey::new(endpoint, identity, direction, proto);
        // SAFETY: a map value pointer, valid for the program's run; plain data.
        HM_POLICY
            .get_ptr(&key)
            .is_some_and(|e| unsafe { matches(&*e, port) })
    };
    let by_cidr = |proto: u8| {
        let data = PolicyCidrKey {
            endpoint_id: endpoint,
            direction,
            proto,
            _pad: [0; 2],
            addr: peer_addr,
        };
        HM_POLICY_CIDR
            .get(Key::new(POLICY_CIDR_FIXED_BITS + 32, data))
            .is_some_and(|e| matches(e, port))
    };
    by_identity(peer, t.proto)
        || by_identity(peer, 0)
        || by_identity(identity::ANY, t.proto)
        || by_identity(identity::ANY, 0)
        || by_cidr(t.proto)
        || by_cidr(0)
}

#[inline(always)]
fn matches(entry: &PolicyEntry, port: u16) -> bool {
    let count = entry.count as usize;
    for (i, r) in entry.ranges.iter().enumerate() {
        if i < count && r.min <= port && port <= r.max {
            return true;
        }
    }
    false
}
