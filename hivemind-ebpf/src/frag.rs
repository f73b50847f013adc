//! IPv4 datagrams in fragments (`HM_FRAGS`). Only the first fragment (offset 0, more to come)
//! carries the TCP/UDP header, so it alone can be translated or checked; what was decided for
//! it is kept under the datagram's addresses, IP id and protocol, and the later fragments
//! follow: the load balancer gives them the same backend (or, on replies, the VIP back), the
//! policy lets them through only where it let the first one through. A later fragment with no
//! first fragment on record is not translated, and is dropped where policy is enforced.

use aya_ebpf::{macros::map, maps::LruHashMap};
use hivemind_common::{FragKey, FragValue, MAX_FRAGS};

use crate::pkt::Ipv4;

#[map(name = "HM_FRAGS")]
static HM_FRAGS: LruHashMap<FragKey, FragValue> = LruHashMap::with_max_entries(MAX_FRAGS, 0);

/// More-fragments flag of the IPv4 flags/offset field (host order).
const IP_MF: u16 = 0x2000;
const IP_OFFSET_MASK: u16 = 0x1fff;

/// Whether the packet is a datagram's first fragment (offset 0, more to come).
#[inline(always)]
pub(crate) fn is_first(ip: &Ipv4) -> bool {
    ip.frag & IP_MF != 0 && ip.frag & IP_OFFSET_MASK == 0
}

/// Whether the packet is a later fragment (offset above 0: no L4 header).
#[inline(always)]
pub(crate) fn is_later(ip: &Ipv4) -> bool {
    ip.frag & IP_OFFSET_MASK != 0
}

#[inline(always)]
fn key(saddr: u32, daddr: u32, id: u16, proto: u8, scope: u8) -> FragKey {
    FragKey {
        saddr,
        daddr,
        id,
        proto,
        scope,
    }
}

/// Records what the first fragment of the datagram `saddr -> daddr`, `id`, `proto` got.
#[inline(always)]
pub(crate) fn remember(saddr: u32, daddr: u32, id: u16, proto: u8, scope: u8, addr: u32) {
    let value = FragValue { addr, _pad: 0 };
    let _ = HM_FRAGS.insert(&key(saddr, daddr, id, proto, scope), &value, 0);
}

/// What the first fragment of this datagram got, if it was seen.
#[inline(always)]
pub(crate) fn lookup(saddr: u32, daddr: u32, id: u16, proto: u8, scope: u8) -> Option<FragValue> {
    // SAFETY: a pointer from a map lookup is valid for the program's run; plain data.
    HM_FRAGS
        .get_ptr(&key(saddr, daddr, id, proto, scope))
        .map(|v| unsafe { *v })
}
