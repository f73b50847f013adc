//! Service load balancing at the socket (`hivemind daemon --socket-lb on`), as Cilium's
//! `bpf_sock.c` does: cgroup programs on the node's cgroup2 root translate a VIP:port to a
//! backend once, when a socket connects (`connect4`) or sends a datagram (`sendmsg4`), so the
//! connection's packets go to the backend directly and cost what direct traffic costs (no
//! per-packet DNAT, no conntrack entry). `getpeername4` and `recvmsg4` show the VIP again, from
//! `HM_SOCK_REVNAT`.
//!
//! Only sockets of the network namespaces in `HM_SOCK_NETNS` (this node's containers and the
//! node itself) are translated: every other namespace on the machine, other nodes' included
//! when several share a kernel, keeps the per-packet path. A service without a usable backend
//! is left alone here, and its packets meet the per-packet path's counted drop.

use aya_ebpf::{
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::map,
    maps::{HashMap, LruHashMap},
    programs::SockAddrContext,
};
use hivemind_common::{
    DIR_SERVICE, IPPROTO_TCP, IPPROTO_UDP, MAX_CT_ENTRIES, MAX_ENDPOINTS, SockRevKey, SockRevValue,
    reason, service_flags,
};

use crate::{lb, metrics};

/// Network namespace cookie -> 1: the namespaces whose sockets are translated. Written by the
/// daemon.
#[map(name = "HM_SOCK_NETNS")]
static HM_SOCK_NETNS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_ENDPOINTS + 1, 0);

/// {socket cookie, backend} -> the VIP:port the socket addressed. Written by `translate`.
#[map(name = "HM_SOCK_REVNAT")]
static HM_SOCK_REVNAT: LruHashMap<SockRevKey, SockRevValue> =
    LruHashMap::with_max_entries(MAX_CT_ENTRIES, 0);

const AF_INET: u32 = 2;

/// `connect4` and `sendmsg4`: a VIP:port of a translated namespace becomes a backend.
#[inline(always)]
pub(crate) fn translate(ctx: &SockAddrContext) {
    let sa = ctx.sock_addr;
    // SAFETY: verifier-checked reads of the program's context.
    let (family, proto, vip, port) = unsafe {
        (
            (*sa).user_family,
            (*sa).protocol,
            (*sa).user_ip4,
            (*sa).user_port as u16,
        )
    };
    if family != AF_INET || (proto != u32::from(IPPROTO_TCP) && proto != u32::from(IPPROTO_UDP)) {
        return;
    }
    if !lb::in_service_cidr(vip) || !translated_namespace(ctx) {
        return;
    }
    // SAFETY: the helper takes the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(sa.cast()) };
    let hash = lb::mix(cookie as u32 ^ lb::mix((cookie >> 32) as u32));
    let Ok(Some((_, backend, flags))) = lb::select_backend(vip, port, proto as u8, hash, 0) else {
        return;
    };
    // Affinity follows the client's address, which a socket does not have yet: the per-packet
    // path chooses.
    if flags & service_flags::AFFINITY != 0 {
        return;
    }
    let key = SockRevKey {
        cookie,
        backend_ip: backend.ip,
        backend_port: backend.port,
        _pad: 0,
    };
    let value = SockRevValue { vip, port, _pad: 0 };
    // Without the entry getpeername would show the backend: still a working connection.
    let _ = HM_SOCK_REVNAT.insert(&key, &value, 0);
    // SAFETY: verifier-checked writes of the program's context (allowed for these hooks).
    unsafe {
        (*sa).user_ip4 = backend.ip;
        (*sa).user_port = u32::from(backend.port);
    }
    metrics::count_node(DIR_SERVICE, reason::SERVICE_SOCKET_TRANSLATED, 0);
    metrics::count_node(DIR_SERVICE, reason::SERVICE_NEW_CONNECTION, 0);
}

/// `getpeername4` and `recvmsg4`: a backend this socket was sent to shows as the VIP:port.
#[inline(always)]
pub(crate) fn restore(ctx: &SockAddrContext) {
    let sa = ctx.sock_addr;
    // SAFETY: verifier-checked reads of the program's context.
    let (family, ip, port) = unsafe { ((*sa).user_family, (*sa).user_ip4, (*sa).user_port as u16) };
    if family != AF_INET {
        return;
    }
    // SAFETY: the helper takes the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(sa.cast()) };
    let key = SockRevKey {
        cookie,
        backend_ip: ip,
        backend_port: port,
        _pad: 0,
    };
    // SAFETY: a map value pointer, valid for the program's run; plain data, copied at once.
    let Some(original) = HM_SOCK_REVNAT.get_ptr(&key).map(|v| unsafe { *v }) else {
        return;
    };
    // SAFETY: verifier-checked writes of the program's context (allowed for these hooks).
    unsafe {
        (*sa).user_ip4 = original.vip;
        (*sa).user_port = u32::from(original.port);
    }
}

/// Whether the socket's network namespace is one the daemon asked to translate.
#[inline(always)]
fn translated_namespace(ctx: &SockAddrContext) -> bool {
    // SAFETY: the helper takes the program's own context.
    let netns = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    HM_SOCK_NETNS.get_ptr(&netns).is_some()
}
