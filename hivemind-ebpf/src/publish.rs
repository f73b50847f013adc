//! Published ports (`app deploy --publish 8080:80`), like Kubernetes' NodePort with direct
//! server return: `<any node address>:8080` reaches the app's backends on every node, and the
//! backend answers the client from its own node, with the client's own address kept.
//!
//! - `ingress` (underlay TC ingress, `node_flags::PUBLISHED`): a TCP/UDP packet to the node's
//!   address on a published port is translated like a service VIP (`lb::translate_published`:
//!   frontend `{node address, published port}`, conntrack, DNAT to the backend); the kernel
//!   then routes it to the bridge (a local backend) or the overlay (a remote one).
//! - `learn` (`hm-vxlan` TC ingress): a packet from outside the cluster to a local backend's
//!   published port (`HM_PUBLISHED`) came through another node's published port: the reply
//!   entry it writes makes the backend's replies leave with that node's address and port as
//!   their source (`lb::reverse`), straight to the client (`routing::to_outside`).
//!
//! `--publish-mode snat` (`service_flags::SNAT` on the frontend): `ingress` also gives the
//! client's packets the node's gateway and a port of their own as the source
//! (`ct_flags::SNAT`), and delivers them itself (`routing::from_published`): the backend
//! answers the node the client reached, whose reverse NAT (`lb::reverse` on `hm-vxlan` for a
//! remote backend, on the backend's veth for a local one) restores the published frontend as
//! the source and the client as the destination before `routing::to_outside` sends it back.
//! The backend sees the gateway, not the client; the underlay sees only the node's address.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::map,
    maps::HashMap,
    programs::TcContext,
};
use hivemind_common::{
    DIR_SERVICE, IPPROTO_TCP, IPPROTO_UDP, MAX_PUBLISHED, NodeConfig, PublishedKey, node_flags,
};

use crate::{
    lb, metrics,
    pkt::{Headers, Ipv4},
    routing, tunnel,
};

/// Local backend `{address, port, protocol}` -> the port it is published on (host order).
/// Written by the daemon.
#[map(name = "HM_PUBLISHED")]
static HM_PUBLISHED: HashMap<PublishedKey, u16> = HashMap::with_max_entries(MAX_PUBLISHED, 0);

/// Fragment offset and more-fragments flag.
const IP_MF_OFFSET: u16 = 0x3fff;

/// The configuration, if some app publishes a port.
#[inline(always)]
fn enabled() -> Option<NodeConfig> {
    lb::node_config().filter(|c| c.flags & node_flags::PUBLISHED != 0 && c.node_ip != 0)
}

/// Underlay TC ingress: the verdict if the packet went to a published port, `None` otherwise.
#[inline(always)]
pub(crate) fn ingress(ctx: &TcContext, headers: &Headers) -> Option<i32> {
    let config = enabled()?;
    let Headers::Ipv4(ip) = headers else {
        return None;
    };
    if ip.daddr != config.node_ip {
        return None;
    }
    match lb::translate_published(ctx, headers) {
        Ok(lb::PUBLISHED_DNAT) => Some(TC_ACT_OK),
        Ok(lb::PUBLISHED_SNAT) => Some(routing::from_published(ctx)),
        Ok(_) => None,
        Err(why) => {
            metrics::count(0, DIR_SERVICE, why, u64::from(ctx.len()));
            Some(TC_ACT_SHOT)
        }
    }
}

/// `hm-vxlan` TC ingress, for a packet from node `node` (underlay address, network order):
/// remembers the published frontend of a client from outside the cluster; whether it was one.
#[inline(always)]
pub(crate) fn learn(headers: &Headers, node: u32) -> bool {
    let Some(config) = enabled() else {
        return false;
    };
    let Headers::Ipv4(ip) = headers else {
        return false;
    };
    if (ip.proto != IPPROTO_TCP && ip.proto != IPPROTO_UDP)
        || ip.frag & IP_MF_OFFSET != 0
        || ip.l4_avail < 4
    {
        return false;
    }
    let key = PublishedKey {
        ip: ip.daddr,
        port: ip.l4_u16(2),
        proto: ip.proto,
        _pad: 0,
    };
    // SAFETY: a map value pointer, valid for the program's run; plain data, copied at once.
    let Some(published) = HM_PUBLISHED.get_ptr(&key).map(|p| unsafe { *p }) else {
        return false;
    };
    if from_cluster(ip, &config) {
        return false;
    }
    lb::remember_published_reply(ip, node, published.to_be());
    true
}

/// Whether `ip` comes from a container (of any node) or a VIP: not a published-port client.
#[inline(always)]
fn from_cluster(ip: &Ipv4, config: &NodeConfig) -> bool {
    ip.saddr & config.subnet_mask == config.subnet
        || lb::in_service_cidr(ip.saddr)
        || tunnel::lookup(ip.saddr).is_some()
}
