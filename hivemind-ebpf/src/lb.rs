//! Service load balancing: destination NAT of IPv4 TCP/UDP packets to a service VIP:port
//! (`HM_SERVICES`, `HM_BACKENDS`), reverse NAT of the replies (`HM_CT`), no SNAT (the backend
//! sees the client's own address).
//!
//! Where it runs:
//! - `from_container` (TC ingress of a container veth): DNAT of packets to the service CIDR,
//!   reverse NAT of every other packet that matches a reply entry (a local backend answering a
//!   local client or the node itself).
//! - `node_egress` (TC egress of `hm-vxlan`, where the daemon routes the service CIDR): DNAT of
//!   node-originated packets; a remote backend continues through the tunnel lookup, a local one
//!   is redirected to the bridge (`HM_NODE_CONFIG`).
//! - `reverse` (TC egress of a container veth, TC ingress of `hm-vxlan`): reverse NAT only.
//!
//! Verdicts: anything that is not IPv4 TCP/UDP, or is not addressed to a service, passes
//! untouched. TCP/UDP to the service CIDR that cannot be translated (a fragment, a header cut
//! short) is dropped (`DROP_SERVICE_UNSUPPORTED`); a service without a usable backend drops its
//! packets (`DROP_NO_BACKEND`). Checksums are updated incrementally (IPv4 header, and the L4
//! checksum with the pseudo-header; a UDP checksum of 0 stays 0).

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_REDIRECT},
    helpers::bpf_redirect_neigh,
    macros::map,
    maps::{Array, HashMap},
    programs::TcContext,
};
use hivemind_common::{
    Backend, CT_OWNER_NODE, CT_OWNER_OUTSIDE, CtKey, CtValue, DIR_SERVICE, HAIRPIN_IP,
    IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, MAX_BACKENDS, MAX_SERVICE_ENTRIES, NodeConfig,
    SNAT_PORT_MAX, SNAT_PORT_MIN, SNAT_PROBES, ServiceKey, ServiceValue, ct_flags, frag_scope,
    reason, service_flags,
};

use crate::{
    conntrack, frag, metrics,
    pkt::{ETH_HLEN, Headers, Ipv4},
};

/// Frontend slots: slot 0 holds the count, slots `1..=count` a backend id each. Written by
/// the daemon (backends first, then slots, then slot 0).
#[map(name = "HM_SERVICES")]
static HM_SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::with_max_entries(MAX_SERVICE_ENTRIES, 0);

/// Backend id -> address and port. Written by the daemon.
#[map(name = "HM_BACKENDS")]
static HM_BACKENDS: HashMap<u32, Backend> = HashMap::with_max_entries(MAX_BACKENDS, 0);

/// Index 0: this node's bridge and subnet, for node-originated connections. Written by the
/// daemon.
#[map(name = "HM_NODE_CONFIG")]
static HM_NODE_CONFIG: Array<NodeConfig> = Array::with_max_entries(1, 0);

const IP_CSUM_OFF: usize = ETH_HLEN + 10;
pub(crate) const IP_SRC_OFF: usize = ETH_HLEN + 12;
pub(crate) const IP_DST_OFF: usize = ETH_HLEN + 16;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// Offset of the checksum in the TCP / UDP header.
const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;
const ICMP_CSUM: usize = 2;

/// The 5-tuple of an IPv4 TCP/UDP packet, addresses and ports in network byte order.
#[derive(Clone, Copy)]
struct Flow {
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    proto: u8,
    /// Offset of the TCP/UDP header (after the IPv4 options).
    l4_off: usize,
    /// TCP flags (0 for UDP).
    tcp_flags: u8,
    /// The IP id, and whether the packet is a datagram's first fragment (whose later fragments
    /// follow its translation, see `frag`).
    id: u16,
    first_fragment: bool,
}

impl Flow {
    fn ct_key(&self) -> CtKey {
        CtKey::new(self.saddr, self.daddr, self.sport, self.dport, self.proto)
    }
}

/// What `from_container` did to a packet. A plain struct with every field always set (an enum
/// with payloads of different sizes left bits undefined, which LLVM filled from whatever
/// register was at hand, a map pointer once, and the verifier refused the program).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Nat {
    /// `NAT_*`.
    pub(crate) kind: u16,
    /// `NAT_DESTINATION`: the backend port (network order; 0 for a later fragment).
    pub(crate) port: u16,
    /// `NAT_DESTINATION`: the backend address; `NAT_SOURCE`: the restored source (a VIP, or a
    /// node's address for a published port's reply); network order.
    pub(crate) addr: u32,
}

/// Nothing: not a service packet, nor a reply of one.
pub(crate) const NAT_UNTOUCHED: u16 = 0;
/// Destination NAT to a backend.
pub(crate) const NAT_DESTINATION: u16 = 1;
/// Reverse NAT of a reply: the source is the VIP:port (or a node's address and published port)
/// again.
pub(crate) const NAT_SOURCE: u16 = 2;

impl Nat {
    pub(crate) const UNTOUCHED: Nat = Nat {
        kind: NAT_UNTOUCHED,
        port: 0,
        addr: 0,
    };

    #[inline(always)]
    pub(crate) fn destination(addr: u32, port: u16) -> Nat {
        Nat {
            kind: NAT_DESTINATION,
            port,
            addr,
        }
    }

    #[inline(always)]
    pub(crate) fn source(addr: u32) -> Nat {
        Nat {
            kind: NAT_SOURCE,
            port: 0,
            addr,
        }
    }
}

/// What `node_egress` decided for a node-originated packet to a service.
pub(crate) enum NodeEgress {
    /// The backend is on another node: continue with the tunnel lookup of this (network order)
    /// destination.
    Remote(u32),
    /// The backend is local: return this TC verdict (a redirect to the bridge).
    Local(i32),
}

/// The packet's flow (from `pkt::parse`). `Ok(None)`: not IPv4 TCP/UDP, or an IPv4 header too
/// broken to read (not the load balancer's business, the kernel deals with it).
/// `Err(DROP_SERVICE_UNSUPPORTED)`: TCP/UDP to the service CIDR that cannot be translated
/// (fragment, header cut short).
#[inline(always)]
fn parse(headers: &Headers) -> Result<Option<Flow>, u8> {
    let Headers::Ipv4(ip) = headers else {
        return Ok(None);
    };
    let l4_len = match ip.proto {
        IPPROTO_TCP => TCP_HLEN,
        IPPROTO_UDP => UDP_HLEN,
        _ => return Ok(None),
    };
    let to_service = in_service_cidr(ip.daddr);
    let unsupported = if to_service {
        Err(reason::DROP_SERVICE_UNSUPPORTED)
    } else {
        Ok(None)
    };
    // A later fragment has no L4 header: it follows its first fragment (`later_fragment`).
    if frag::is_later(ip) || ip.l4_avail < l4_len {
        return unsupported;
    }
    Ok(Some(Flow {
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport: ip.l4_u16(0),
        dport: ip.l4_u16(2),
        proto: ip.proto,
        l4_off: ip.l4_off,
        tcp_flags: ip.tcp_flags,
        id: ip.id,
        first_fragment: frag::is_first(ip),
    }))
}

/// TC ingress of a container veth: DNAT to a backend if the packet goes to a service,
/// otherwise reverse NAT if it is a reply of a translated connection. `Err` holds the drop
/// reason.
#[inline(always)]
pub(crate) fn from_container(
    ctx: &TcContext,
    headers: &Headers,
    endpoint: u32,
    backend: bool,
) -> Result<Nat, u8> {
    if let Headers::Ipv4(ip) = headers {
        if frag::is_later(ip) {
            if in_service_cidr(ip.daddr) {
                return Ok(Nat::destination(vip_fragment(ctx, ip)?, 0));
            }
            return Ok(match reply_fragment(ctx, ip)? {
                0 => Nat::UNTOUCHED,
                source => Nat::source(source),
            });
        }
        if ip.proto == IPPROTO_ICMP {
            return Ok(match icmp_error(ctx, ip)? {
                (_, 0) => Nat::UNTOUCHED,
                (_, source) => Nat::source(source),
            });
        }
    }
    let Some(flow) = parse(headers)? else {
        return Ok(Nat::UNTOUCHED);
    };
    if in_service_cidr(flow.daddr) {
        return Ok(match translate(ctx, &flow, endpoint)? {
            Some(t) => Nat::destination(t.backend.ip, t.backend.port),
            None => Nat::UNTOUCHED,
        });
    }
    // Only a backend's replies have anything to restore: other containers skip the lookup.
    if !backend {
        return Ok(Nat::UNTOUCHED);
    }
    Ok(match reverse_flow(ctx, &flow)? {
        Some(source) => Nat::source(source),
        None => Nat::UNTOUCHED,
    })
}

/// Reverse NAT only (TC egress of a container veth, TC ingress of `hm-vxlan`, host routing's
/// local delivery). `Ok(true)` if the packet was rewritten; `Err` holds the drop reason (a
/// failed rewrite).
#[inline(always)]
pub(crate) fn reverse(ctx: &TcContext, headers: &Headers) -> Result<bool, u8> {
    if let Headers::Ipv4(ip) = headers {
        if frag::is_later(ip) {
            return Ok(reply_fragment(ctx, ip)? != 0);
        }
        if ip.proto == IPPROTO_ICMP {
            return Ok(icmp_error(ctx, ip)?.0);
        }
    }
    match parse(headers) {
        Ok(Some(flow)) => reverse_flow(ctx, &flow).map(|r| r.is_some()),
        // Nothing to restore in what cannot be parsed: the forward path decides about it.
        _ => Ok(false),
    }
}

/// Underlay TC ingress: DNAT of a packet to the node's address on a published port (the
/// frontend `{node address, port}`), as `translate` does for a VIP. `PUBLISHED_NONE`: no such
/// frontend, the packet is the node's own; `PUBLISHED_DNAT`: translated, the kernel routes it;
/// `PUBLISHED_SNAT`: its source is the node's gateway now, which the kernel would refuse as
/// a martian on the underlay: the caller delivers it.
#[inline(always)]
pub(crate) fn translate_published(ctx: &TcContext, headers: &Headers) -> Result<u8, u8> {
    let Some(flow) = parse(headers)? else {
        return Ok(PUBLISHED_NONE);
    };
    Ok(match translate(ctx, &flow, CT_OWNER_OUTSIDE)? {
        None => PUBLISHED_NONE,
        Some(t) if t.snat => PUBLISHED_SNAT,
        Some(_) => PUBLISHED_DNAT,
    })
}

/// Results of `translate_published`.
pub(crate) const PUBLISHED_NONE: u8 = 0;
pub(crate) const PUBLISHED_DNAT: u8 = 1;
pub(crate) const PUBLISHED_SNAT: u8 = 2;

/// On the node of a local backend that a client reached through the published port
/// `published` (network order) of node `node` (network order): the reply entry that gives the
/// backend's replies that node's address and port as their source.
#[inline(always)]
pub(crate) fn remember_published_reply(ip: &crate::pkt::Ipv4, node: u32, published: u16) {
    let key = CtKey::new(ip.daddr, ip.saddr, ip.l4_u16(2), ip.l4_u16(0), ip.proto);
    if let Some(ct) = conntrack::touch(&key, 0)
        && ct.rev_vip == node
        && ct.rev_port == published
    {
        return;
    }
    let value = CtValue {
        rev_vip: node,
        rev_port: published,
        flags: ct_flags::SERVICE | ct_flags::REPLY,
        owner: CT_OWNER_OUTSIDE,
        ..CtValue::default()
    };
    let _ = conntrack::create(&key, &value, 0);
}

/// TC egress of `hm-vxlan`: DNAT of node-originated packets to a service. `Ok(None)`: not a
/// service packet, carry on as before.
#[inline(always)]
pub(crate) fn node_egress(ctx: &TcContext, headers: &Headers) -> Result<Option<NodeEgress>, u8> {
    let Some(flow) = parse(headers)? else {
        return Ok(None);
    };
    if !in_service_cidr(flow.daddr) {
        return Ok(None);
    }
    let Some(Translated { backend, .. }) = translate(ctx, &flow, CT_OWNER_NODE)? else {
        return Ok(None);
    };
    let Some(config) = HM_NODE_CONFIG.get(0) else {
        return Ok(Some(NodeEgress::Remote(backend.ip)));
    };
    if config.bridge_ifindex == 0 || backend.ip & config.subnet_mask != config.subnet {
        return Ok(Some(NodeEgress::Remote(backend.ip)));
    }
    // SAFETY: a plain helper call; no parameters (the helper does the FIB and neighbour
    // lookups for the new destination on the bridge).
    let ret = unsafe { bpf_redirect_neigh(config.bridge_ifindex, core::ptr::null_mut(), 0, 0) };
    if ret == i64::from(TC_ACT_REDIRECT) {
        Ok(Some(NodeEgress::Local(TC_ACT_REDIRECT)))
    } else {
        Err(reason::DROP_REWRITE)
    }
}

/// DNAT of a packet to the service CIDR: the connection's backend from `HM_CT` while that
/// backend id still names the same address and port, or a new one picked by hashing the
/// 5-tuple over the service's slots. New entries count against `owner`. `Ok(None)`: no such
/// service (the packet passes untouched). A published frontend in `snat` mode (only reached
/// with `CT_OWNER_OUTSIDE`) also gives the client's packets the node's gateway and a port of
/// their own as the source (`Translated::snat`).
#[inline(always)]
fn translate(ctx: &TcContext, flow: &Flow, owner: u32) -> Result<Option<Translated>, u8> {
    let key = flow.ct_key();
    let (tracked, refreshed) = match conntrack::touch_and_tell(&key, flow.tcp_flags) {
        Some((ct, refreshed)) if ct.flags & ct_flags::REPLY == 0 => (Some(ct), refreshed),
        _ => (None, false),
    };
    let existing = match tracked {
        Some(ct) => backend(ct.backend_id)
            .filter(|b| b.ip == ct.backend_ip && b.port == ct.backend_port)
            .map(|b| (ct.backend_id, b, ct)),
        None => None,
    };
    let bytes = u64::from(ctx.len());
    let (backend_id, backend, new, snat) = match existing {
        Some((id, b, ct)) => (id, b, false, ct.flags & ct_flags::SNAT != 0),
        None => match select(flow)? {
            Some((id, b, flags)) => (id, b, true, flags & service_flags::SNAT != 0),
            None => return Ok(None),
        },
    };
    // SNAT is for clients from outside the cluster only (published frontends).
    let snat = snat && owner == CT_OWNER_OUTSIDE;
    // Hairpin: the client is its own backend; it must not see its own address as the source.
    let hairpin = backend.ip == flow.saddr && !snat;
    let mut reply = CtValue {
        backend_id,
        rev_vip: flow.daddr,
        rev_port: flow.dport,
        flags: ct_flags::SERVICE
            | ct_flags::REPLY
            | if hairpin { ct_flags::HAIRPIN } else { 0 }
            | if snat { ct_flags::SNAT } else { 0 },
        backend_ip: backend.ip,
        backend_port: backend.port,
        owner,
        ..CtValue::default()
    };
    // The source the backend sees.
    let (client, client_port) = if hairpin {
        (hairpin_ip(), flow.sport)
    } else if snat {
        reply.nat_ip = flow.saddr;
        reply.nat_port = flow.sport;
        match (new, existing) {
            (false, Some((_, _, ct))) => (ct.nat_ip, ct.nat_port),
            _ => {
                let gateway = node_config().map_or(0, |c| c.gateway);
                (gateway, snat_port(flow, &backend, gateway, &reply)?)
            }
        }
    } else {
        (flow.saddr, flow.sport)
    };
    let reply_key = CtKey::new(backend.ip, client, backend.port, client_port, flow.proto);
    if new {
        let original = CtValue {
            flags: ct_flags::SERVICE | if snat { ct_flags::SNAT } else { 0 },
            nat_ip: if snat { client } else { 0 },
            nat_port: if snat { client_port } else { 0 },
            ..reply
        };
        // Reply entry first: once the original one exists, replies may already flow. SNAT
        // wrote it already, claiming its port.
        if !snat {
            conntrack::create(&reply_key, &reply, 0)?;
        }
        conntrack::create(&key, &original, flow.tcp_flags)?;
        metrics::count_node(DIR_SERVICE, reason::SERVICE_NEW_CONNECTION, bytes);
    } else if refreshed {
        // The collector may have taken the reply entry alone (idle in that direction): put
        // back whenever the connection's entry is written (at most once a second), not looked
        // up on every packet.
        conntrack::ensure(&reply_key, &reply, 0);
    }
    rewrite(
        ctx,
        (flow.proto, flow.l4_off),
        IP_DST_OFF,
        flow.l4_off + 2,
        (flow.daddr, backend.ip),
        (flow.dport, backend.port),
    )?;
    if hairpin || snat {
        rewrite(
            ctx,
            (flow.proto, flow.l4_off),
            IP_SRC_OFF,
            flow.l4_off,
            (flow.saddr, client),
            (flow.sport, client_port),
        )?;
    }
    if flow.first_fragment && !hairpin && !snat {
        frag::remember(
            flow.saddr,
            flow.daddr,
            flow.id,
            flow.proto,
            frag_scope::SERVICE,
            backend.ip,
        );
    }
    metrics::count_node(DIR_SERVICE, reason::SERVICE_TRANSLATED, bytes);
    Ok(Some(Translated { backend, snat }))
}

/// What `translate` did.
#[derive(Clone, Copy)]
struct Translated {
    backend: Backend,
    /// The source is now the node's gateway (a published port in `snat` mode).
    snat: bool,
}

/// Claims a source port on the node's gateway for a new SNAT connection to `backend`: writes
/// its reply entry `{backend, gateway, backend port, port}` if no connection holds that key
/// yet, trying up to `SNAT_PROBES` ports of `SNAT_PORT_MIN..=SNAT_PORT_MAX` spread by the flow's
/// hash. None free: `DROP_NAT_NO_PORT`.
#[inline(always)]
fn snat_port(flow: &Flow, backend: &Backend, gateway: u32, reply: &CtValue) -> Result<u16, u8> {
    if gateway == 0 {
        return Err(reason::DROP_REWRITE);
    }
    let span = u32::from(SNAT_PORT_MAX - SNAT_PORT_MIN) + 1;
    let start = hash(flow);
    for probe in 0..SNAT_PROBES {
        let host = u32::from(SNAT_PORT_MIN) + start.wrapping_add(probe.wrapping_mul(7919)) % span;
        let port = (host as u16).to_be();
        let key = CtKey::new(backend.ip, gateway, backend.port, port, flow.proto);
        if conntrack::create_new(&key, reply, 0)? {
            return Ok(port);
        }
    }
    Err(reason::DROP_NAT_NO_PORT)
}

/// Whether `addr` (network order) lies in the node's service CIDR. A BPF subprogram, not
/// inlined: inlined at its several call sites of one program, the toolchain emitted two BTF
/// line records for one instruction and the kernel refused `hm_lxc_from_container` ("Invalid
/// line_info[45].insn_off:128 (prev_offset:128)").
#[inline(never)]
pub(crate) fn in_service_cidr(addr: u32) -> bool {
    match HM_NODE_CONFIG.get(0) {
        Some(c) => c.service_mask != 0 && addr & c.service_mask == c.service_net,
        None => false,
    }
}

/// This node's configuration, if the daemon wrote it.
#[inline(always)]
pub(crate) fn node_config() -> Option<NodeConfig> {
    HM_NODE_CONFIG.get(0).copied()
}

/// A backend for a new connection: `Ok(None)` if the destination is no service,
/// `Err(DROP_NO_BACKEND)` if the service has no usable backend.
#[inline(always)]
fn select(flow: &Flow) -> Result<Option<(u32, Backend, u16)>, u8> {
    select_backend(
        flow.daddr,
        flow.dport,
        flow.proto,
        hash(flow),
        hivemind_common::client_hash(flow.saddr),
    )
}

/// The backend of service `vip`:`port` (network order) / `proto` for a connection whose hash
/// is `hash` (`client`: the hash of its client's address, for a frontend with
/// `service_flags::AFFINITY`), with the frontend's `service_flags`: `Ok(None)` if that is no
/// service, `Err(DROP_NO_BACKEND)` if it has no usable backend.
#[inline(always)]
pub(crate) fn select_backend(
    vip: u32,
    port: u16,
    proto: u8,
    hash: u32,
    client: u32,
) -> Result<Option<(u32, Backend, u16)>, u8> {
    let head = ServiceKey::new(vip, port, proto, 0);
    // SAFETY: map values are plain data valid for the program's run; copied out at once.
    let Some((count, flags)) = HM_SERVICES
        .get_ptr(head)
        .map(|v| unsafe { ((*v).count, (*v).flags) })
    else {
        return Ok(None);
    };
    if count == 0 {
        return Err(reason::DROP_NO_BACKEND);
    }
    let hash = if flags & service_flags::AFFINITY != 0 {
        client
    } else {
        hash
    };
    let slot = (hash % u32::from(count)) as u16 + 1;
    let slot_value = |slot: u16| {
        let key = ServiceKey::new(vip, port, proto, slot);
        // SAFETY: as above.
        HM_SERVICES.get_ptr(key).map(|v| unsafe { (*v).backend_id })
    };
    // A slot beyond a count that was just lowered may be gone already: fall back to slot 1.
    let backend_id = slot_value(slot)
        .or_else(|| slot_value(1))
        .ok_or(reason::DROP_NO_BACKEND)?;
    let backend = backend(backend_id).ok_or(reason::DROP_NO_BACKEND)?;
    Ok(Some((backend_id, backend, flags)))
}

#[inline(always)]
fn backend(id: u32) -> Option<Backend> {
    // SAFETY: as in `select`.
    HM_BACKENDS.get_ptr(id).map(|b| unsafe { *b })
}

/// Restores the source of a reply of a translated connection to the VIP:port (or a node's
/// address and published port); the address it restored, if it did.
#[inline(always)]
fn reverse_flow(ctx: &TcContext, flow: &Flow) -> Result<Option<u32>, u8> {
    let Some(ct) = conntrack::touch(&flow.ct_key(), flow.tcp_flags) else {
        return Ok(None);
    };
    if ct.flags & ct_flags::REPLY == 0 {
        return Ok(None);
    }
    rewrite(
        ctx,
        (flow.proto, flow.l4_off),
        IP_SRC_OFF,
        flow.l4_off,
        (flow.saddr, ct.rev_vip),
        (flow.sport, ct.rev_port),
    )?;
    if ct.flags & ct_flags::HAIRPIN != 0 {
        // The reply goes back to the client, which is the backend itself.
        rewrite(
            ctx,
            (flow.proto, flow.l4_off),
            IP_DST_OFF,
            flow.l4_off + 2,
            (flow.daddr, flow.saddr),
            (flow.dport, flow.dport),
        )?;
    }
    if ct.flags & ct_flags::SNAT != 0 {
        // The reply goes back to the client the node's gateway stood in for.
        rewrite(
            ctx,
            (flow.proto, flow.l4_off),
            IP_DST_OFF,
            flow.l4_off + 2,
            (flow.daddr, ct.nat_ip),
            (flow.dport, ct.nat_port),
        )?;
    }
    if flow.first_fragment && ct.flags & (ct_flags::HAIRPIN | ct_flags::SNAT) == 0 {
        frag::remember(
            flow.saddr,
            flow.daddr,
            flow.id,
            flow.proto,
            frag_scope::SERVICE_REPLY,
            ct.rev_vip,
        );
    }
    metrics::count_node(
        DIR_SERVICE,
        reason::SERVICE_REVERSE_TRANSLATED,
        u64::from(ctx.len()),
    );
    Ok(Some(ct.rev_vip))
}

/// A later fragment (no L4 header) to a VIP: the backend its first fragment went to (the new
/// destination). No first fragment on record: `DROP_SERVICE_UNSUPPORTED`.
#[inline(always)]
fn vip_fragment(ctx: &TcContext, ip: &Ipv4) -> Result<u32, u8> {
    let to = frag::lookup(ip.saddr, ip.daddr, ip.id, ip.proto, frag_scope::SERVICE)
        .ok_or(reason::DROP_SERVICE_UNSUPPORTED)?;
    rewrite_l3(ctx, IP_DST_OFF, ip.daddr, to.addr)?;
    Ok(to.addr)
}

/// A later fragment of a backend's reply: the VIP back as its source, as its first fragment
/// got. The source it restored, 0 when it is no such fragment.
#[inline(always)]
fn reply_fragment(ctx: &TcContext, ip: &Ipv4) -> Result<u32, u8> {
    match frag::lookup(
        ip.saddr,
        ip.daddr,
        ip.id,
        ip.proto,
        frag_scope::SERVICE_REPLY,
    ) {
        Some(from) => {
            rewrite_l3(ctx, IP_SRC_OFF, ip.saddr, from.addr)?;
            Ok(from.addr)
        }
        None => Ok(0),
    }
}

/// ICMP types that quote the packet they are about.
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_HLEN: usize = 8;

/// An ICMP error (destination unreachable, fragmentation needed, time exceeded) about a packet
/// of a translated connection, on its way back to the client: the quoted packet went to the
/// backend, but the client sent it to the VIP, and matches the error to its socket by what is
/// quoted. The quote gets the VIP:port back (its IPv4 checksum and the ICMP checksum follow);
/// an error the backend sent itself comes from the VIP. Returns whether it rewrote the packet,
/// and the outer source it gave (0: unchanged).
#[inline(always)]
fn icmp_error(ctx: &TcContext, ip: &Ipv4) -> Result<(bool, u32), u8> {
    let ty = ip.l4[0];
    if ip.l4_avail < ICMP_HLEN + 24 || (ty != ICMP_DEST_UNREACH && ty != ICMP_TIME_EXCEEDED) {
        return Ok((false, 0));
    }
    let inner = ip.l4_off + ICMP_HLEN;
    let load32 = |off: usize| ctx.load::<u32>(off).map_err(|_| reason::DROP_REWRITE);
    let load16 = |off: usize| ctx.load::<u16>(off).map_err(|_| reason::DROP_REWRITE);
    // A plain quoted IPv4 header (no options) over TCP or UDP.
    let version_ihl = ctx.load::<u8>(inner).map_err(|_| reason::DROP_REWRITE)?;
    let proto = ctx
        .load::<u8>(inner + 9)
        .map_err(|_| reason::DROP_REWRITE)?;
    if version_ihl != 0x45 || (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
        return Ok((false, 0));
    }
    let (q_saddr, q_daddr) = (load32(inner + 12)?, load32(inner + 16)?);
    let (q_sport, q_dport) = (load16(inner + 20)?, load16(inner + 22)?);
    let q_csum = load16(inner + 10)?;
    let Some(ct) = conntrack::touch(&CtKey::new(q_daddr, q_saddr, q_dport, q_sport, proto), 0)
    else {
        return Ok((false, 0));
    };
    if ct.flags & ct_flags::REPLY == 0 || ct.flags & (ct_flags::HAIRPIN | ct_flags::SNAT) != 0 {
        return Ok((false, 0));
    }
    let fail = |_| reason::DROP_REWRITE;
    let icmp_csum = ip.l4_off + ICMP_CSUM;
    let new_q_csum = csum_replace4(q_csum, q_daddr, ct.rev_vip);
    ctx.l4_csum_replace(icmp_csum, u64::from(q_daddr), u64::from(ct.rev_vip), 4)
        .map_err(fail)?;
    ctx.l4_csum_replace(icmp_csum, u64::from(q_csum), u64::from(new_q_csum), 2)
        .map_err(fail)?;
    ctx.store(inner + 16, &ct.rev_vip, 0).map_err(fail)?;
    ctx.store(inner + 10, &new_q_csum, 0).map_err(fail)?;
    if q_dport != ct.rev_port {
        ctx.l4_csum_replace(icmp_csum, u64::from(q_dport), u64::from(ct.rev_port), 2)
            .map_err(fail)?;
        ctx.store(inner + 22, &ct.rev_port, 0).map_err(fail)?;
    }
    metrics::count_node(
        DIR_SERVICE,
        reason::SERVICE_REVERSE_TRANSLATED,
        u64::from(ctx.len()),
    );
    if ip.saddr == q_daddr {
        rewrite_l3(ctx, IP_SRC_OFF, ip.saddr, ct.rev_vip)?;
        return Ok((true, ct.rev_vip));
    }
    Ok((true, 0))
}

/// The one's-complement checksum `csum` after a 32-bit word of what it covers went from `old`
/// to `new` (RFC 1624), all as loaded from the packet.
#[inline(always)]
fn csum_replace4(csum: u16, old: u32, new: u32) -> u16 {
    let mut sum = u32::from(!csum)
        + u32::from(!(old as u16))
        + u32::from(!((old >> 16) as u16))
        + u32::from(new as u16)
        + u32::from((new >> 16) as u16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Rewrites one IPv4 address (at `addr_off`) and the header checksum; no L4 checksum (a later
/// fragment has none, an ICMP one covers no addresses).
#[inline(always)]
fn rewrite_l3(ctx: &TcContext, addr_off: usize, old: u32, new: u32) -> Result<(), u8> {
    let fail = |_| reason::DROP_REWRITE;
    ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(old), u64::from(new), 4)
        .map_err(fail)?;
    ctx.store(addr_off, &new, 0).map_err(fail)
}

/// Rewrites one address (at `addr_off`) and one port (at `port_off`), `(old, new)` pairs in
/// network byte order, updating the IPv4 and the L4 checksums. `proto` is TCP, UDP or ICMP
/// (whose "port" is the echo identifier and whose checksum covers no pseudo-header).
#[inline(always)]
pub(crate) fn rewrite(
    ctx: &TcContext,
    (proto, l4_off): (u8, usize),
    addr_off: usize,
    port_off: usize,
    addr: (u32, u32),
    port: (u16, u16),
) -> Result<(), u8> {
    let (csum_off, mangled) = match proto {
        IPPROTO_TCP => (l4_off + TCP_CSUM, 0),
        IPPROTO_ICMP => (l4_off + ICMP_CSUM, 0),
        // A UDP checksum of 0 means "none": leave it, and never produce 0 from an update.
        _ => (l4_off + UDP_CSUM, u64::from(BPF_F_MARK_MANGLED_0)),
    };
    let fail = |_| reason::DROP_REWRITE;
    if proto != IPPROTO_ICMP {
        ctx.l4_csum_replace(
            csum_off,
            u64::from(addr.0),
            u64::from(addr.1),
            u64::from(BPF_F_PSEUDO_HDR) | mangled | 4,
        )
        .map_err(fail)?;
    }
    if port.0 != port.1 {
        ctx.l4_csum_replace(csum_off, u64::from(port.0), u64::from(port.1), mangled | 2)
            .map_err(fail)?;
    }
    ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(addr.0), u64::from(addr.1), 4)
        .map_err(fail)?;
    ctx.store(addr_off, &addr.1, 0).map_err(fail)?;
    if port.0 != port.1 {
        ctx.store(port_off, &port.1, 0).map_err(fail)?;
    }
    Ok(())
}

/// `HAIRPIN_IP` in network byte order.
#[inline(always)]
fn hairpin_ip() -> u32 {
    u32::from_ne_bytes(HAIRPIN_IP)
}

/// A hash of the 5-tuple: the same flow always picks the same slot, different client ports
/// spread over the slots.
#[inline(always)]
fn hash(flow: &Flow) -> u32 {
    let mut h = mix(flow.saddr ^ 0x9e37_79b9);
    h = mix(h ^ flow.daddr);
    h = mix(h ^ ((u32::from(flow.sport) << 16) | u32::from(flow.dport)));
    mix(h ^ u32::from(flow.proto))
}

/// The murmur3 finalizer.
#[inline(always)]
pub(crate) fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}
