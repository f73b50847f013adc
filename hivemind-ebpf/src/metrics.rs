//! Packet and byte counters. The hot ones are array elements, which the verifier inlines into
//! a few instructions: each endpoint's forwarded packets at the slot the daemon gave it
//! (`HM_EP_METRICS`), the node's own successes by direction and reason (`HM_NODE_METRICS`).
//! Everything else (drops, TCP events, the overlay's per-node counters) is keyed by endpoint (or
//! node), direction and reason in a per-CPU hash (`HM_METRICS`).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::TcContext,
};
use hivemind_common::{
    ENDPOINT_ID_UNKNOWN, ENDPOINT_METRICS_ENTRIES, EndpointInfo, MAX_ENDPOINTS,
    MAX_METRICS_ENTRIES, MetricsKey, MetricsValue, NODE_METRICS_ENTRIES, endpoint_metrics_index,
    endpoint_roles, node_metrics_index,
};

/// Host-side veth ifindex -> endpoint. Written by the daemon.
#[map(name = "HM_ENDPOINTS")]
static HM_ENDPOINTS: HashMap<u32, EndpointInfo> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

/// {endpoint, direction, reason} -> packets, bytes; one value per CPU, summed by the daemon.
#[map(name = "HM_METRICS")]
static HM_METRICS: PerCpuHashMap<MetricsKey, MetricsValue> =
    PerCpuHashMap::with_max_entries(MAX_METRICS_ENTRIES, 0);

/// Forwarded packets of each endpoint, two elements per slot (`endpoint_metrics_index`); one
/// value per CPU, read by the daemon for the slots it handed out.
#[map(name = "HM_EP_METRICS")]
static HM_EP_METRICS: PerCpuArray<MetricsValue> =
    PerCpuArray::with_max_entries(ENDPOINT_METRICS_ENTRIES, 0);

/// The node-wide directions' successes (`node_metrics_index`); one value per CPU.
#[map(name = "HM_NODE_METRICS")]
static HM_NODE_METRICS: PerCpuArray<MetricsValue> =
    PerCpuArray::with_max_entries(NODE_METRICS_ENTRIES, 0);

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
            metrics_slot: 0,
            // Nothing known of it: its replies are looked up for reverse NAT.
            roles: endpoint_roles::BACKEND,
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

/// Adds one forwarded packet of `bytes` bytes to `info`'s endpoint in `direction`
/// (`DIR_FROM_CONTAINER` or `DIR_TO_CONTAINER`), at its slot: slot 0 is every interface the
/// daemon did not attach (`ENDPOINT_ID_UNKNOWN`). One branch, no hash path: the container
/// programs are near the verifier's budget.
#[inline(always)]
pub(crate) fn forwarded(info: &EndpointInfo, direction: u8, bytes: u64) {
    if let Some(value) =
        HM_EP_METRICS.get_ptr_mut(endpoint_metrics_index(info.metrics_slot, direction))
    {
        bump(value, bytes);
    }
}

/// Adds one packet of `bytes` bytes to a node-wide direction (`DIR_UNDERLAY`, `DIR_SERVICE`,
/// `DIR_NAT`) with a success `reason` (below `NODE_METRICS_REASONS`; drops go to `count`
/// under endpoint 0).
#[inline(always)]
pub(crate) fn count_node(direction: u8, reason: u8, bytes: u64) {
    if let Some(value) = HM_NODE_METRICS.get_ptr_mut(node_metrics_index(direction, reason)) {
        bump(value, bytes);
    }
}

#[inline(always)]
fn bump(value: *mut MetricsValue, bytes: u64) {
    // SAFETY: this CPU's element of a per-CPU array, valid for the program's run; a program is
    // not preempted by another touching the same CPU's element.
    unsafe {
        (*value).packets += 1;
        (*value).bytes += bytes;
    }
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
