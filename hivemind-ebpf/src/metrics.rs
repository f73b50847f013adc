//! Packet and byte counters (`HM_METRICS`), keyed by endpoint (or node, for the overlay
//! directions), direction and reason.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{HashMap, PerCpuHashMap},
    programs::TcContext,
};
use hivemind_common::{
    ENDPOINT_ID_UNKNOWN, EndpointInfo, MAX_ENDPOINTS, MAX_METRICS_ENTRIES, MetricsKey, MetricsValue,
};

/// Host-side veth ifindex -> endpoint. Written by the daemon.
#[map(name = "HM_ENDPOINTS")]
static HM_ENDPOINTS: HashMap<u32, EndpointInfo> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

/// {endpoint, direction, reason} -> packets, bytes; one value per CPU, summed by the daemon.
#[map(name = "HM_METRICS")]
static HM_METRICS: PerCpuHashMap<MetricsKey, MetricsValue> =
    PerCpuHashMap::with_max_entries(MAX_METRICS_ENTRIES, 0);

/// The endpoint of the interface the packet is on; traffic on an interface the daemon does not
/// know is counted under `ENDPOINT_ID_UNKNOWN` (and still passes: no flags, no policy).
#[inline(always)]
pub(crate) fn endpoint(ctx: &TcContext) -> EndpointInfo {
    // SAFETY: `ctx.skb.skb` is the context pointer the kernel handed to the program; reading a
    // field of `__sk_buff` is a verifier-checked context access, not a packet access.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    match HM_ENDPOINTS.get_ptr(ifindex) {
        // SAFETY: a pointer returned by a map lookup is valid for the program's run; the value
        // is plain data, so a concurrent update can at worst give a stale copy.
        Some(info) => unsafe { *info },
        None => EndpointInfo {
            endpoint_id: ENDPOINT_ID_UNKNOWN,
            flags: 0,
            identity: 0,
            ip: 0,
        },
    }
}

/// The endpoint on host-side veth `ifindex`, if the daemon attached one there.
#[inline(always)]
pub(crate) fn endpoint_at(ifindex: u32) -> Option<EndpointInfo> {
    // SAFETY: as in `endpoint`.
    HM_ENDPOINTS.get_ptr(ifindex).map(|info| unsafe { *info })
}

/// Adds one packet of `bytes` bytes to `{endpoint_id, direction, reason}`; usable from any
/// program type (TC and XDP alike).
#[inline(always)]
pub(crate) fn count(endpoint_id: u32, direction: u8, reason: u8, bytes: u64) {
    add(&MetricsKey::new(endpoint_id, direction, reason), bytes);
}

#[inline(always)]
fn add(key: &MetricsKey, bytes: u64) {
    if let Some(value) = HM_METRICS.get_ptr_mut(key) {
        // SAFETY: per-CPU value of this CPU, valid for the program's run; BPF programs are not
        // preempted by another program touching the same CPU slot in TC context.
        unsafe {
            (*value).packets += 1;
            (*value).bytes += bytes;
        }
        return;
    }
    let first = MetricsValue { packets: 1, bytes };
    if HM_METRICS
        .insert(key, first, u64::from(BPF_NOEXIST))
        .is_err()
    {
        // Another CPU created the entry in between (or the map is full): add to whatever
        // is there now; if the map is full the packet goes uncounted.
        if let Some(value) = HM_METRICS.get_ptr_mut(key) {
            // SAFETY: as above.
            unsafe {
                (*value).packets += 1;
                (*value).bytes += bytes;
            }
        }
    }
}
