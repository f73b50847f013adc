//! Flow events (`HM_FLOWS` ring buffer): one record per new flow the policy code allowed and per
//! denied packet, the denied ones rate-limited to one per 5-tuple and direction per second
//! (`HM_FLOW_DROPS`). Endpoints no policy selects keep no conntrack, so their new flows are told
//! apart here: a TCP SYN, or a UDP/ICMP tuple `HM_FLOW_SEEN` (a direct-mapped per-CPU cache,
//! `first_of_flow`) does not hold yet in either direction. A record that does not fit the ring buffer is counted in `HM_FLOWS_LOST`.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};
use hivemind_common::{
    CtKey, DIR_FROM_CONTAINER, FLOW_DROP_INTERVAL_NS, FLOW_SEEN_BITS, FLOWS_RING_BYTES,
    FlowRecord, MAX_FLOW_DROPS, MAX_FLOW_SEEN, reason, verdict,
};

/// Flow records for the daemon (`drain_flows`).
#[map(name = "HM_FLOWS")]
static HM_FLOWS: RingBuf = RingBuf::with_byte_size(FLOWS_RING_BYTES, 0);

/// Index 0: records lost because the ring buffer was full (per CPU).
#[map(name = "HM_FLOWS_LOST")]
static HM_FLOWS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// 5-tuple (scope = direction) -> time of the last denied-flow record.
#[map(name = "HM_FLOW_DROPS")]
static HM_FLOW_DROPS: LruHashMap<CtKey, u64> = LruHashMap::with_max_entries(MAX_FLOW_DROPS, 0);

/// UDP and ICMP flows seen at endpoints no policy selects (scope: `ct_scope::EGRESS` /
/// `INGRESS`), each in the slot its hash picks (`slot`).
#[map(name = "HM_FLOW_SEEN")]
static HM_FLOW_SEEN: PerCpuArray<CtKey> = PerCpuArray::with_max_entries(MAX_FLOW_SEEN, 0);

/// The slot of `key` in `HM_FLOW_SEEN`: a multiplicative hash of the tuple and scope.
#[inline(always)]
fn slot(key: &CtKey) -> u32 {
    let ports = (u32::from(key.sport) << 16) | u32::from(key.dport);
    let h = key.saddr
        ^ key.daddr.rotate_left(7)
        ^ ports.rotate_left(13)
        ^ ((u32::from(key.proto) << 8) | u32::from(key.scope));
    h.wrapping_mul(0x9e37_79b1) >> (32 - FLOW_SEEN_BITS)
}

/// Whether `key` (UDP or ICMP, scope = `own`) starts a flow this CPU has not seen: not in its
/// slot, and not the reply of a flow seen the other way (`other`). Remembers it either way.
/// Inlined: a hit costs two array loads and a compare.
#[inline(always)]
pub(crate) fn first_of_flow(key: &CtKey, own: u8, other: u8) -> bool {
    let mine = key.with_scope(own);
    let Some(entry) = HM_FLOW_SEEN.get_ptr_mut(slot(&mine)) else {
        return false;
    };
    // SAFETY: this CPU's slot of a per-CPU array, valid for the program's run; plain data.
    unsafe {
        if *entry == mine {
            return false;
        }
        *entry = mine;
    }
    let reverse =
        CtKey::new(key.daddr, key.saddr, key.dport, key.sport, key.proto).with_scope(other);
    // SAFETY: as above.
    !HM_FLOW_SEEN
        .get_ptr(slot(&reverse))
        .is_some_and(|e| unsafe { *e == reverse })
}

/// What a record says about a packet, besides the verdict.
#[derive(Clone, Copy)]
pub(crate) struct Flow {
    pub(crate) key: CtKey,
    pub(crate) endpoint_id: u32,
    pub(crate) direction: u8,
    pub(crate) peer_identity: u32,
}

impl Flow {
    #[inline(always)]
    fn record(&self, now: u64, verdict: u8, reason: u8) -> FlowRecord {
        FlowRecord {
            time_ns: now,
            saddr: self.key.saddr,
            daddr: self.key.daddr,
            sport: self.key.sport,
            dport: self.key.dport,
            proto: self.key.proto,
            direction: self.direction,
            verdict,
            reason,
            endpoint_id: self.endpoint_id,
            peer_identity: self.peer_identity,
        }
    }
}

/// Records a new allowed flow.
#[inline(always)]
pub(crate) fn allowed(flow: &Flow) {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    emit(&flow.record(now, verdict::ALLOWED, reason::POLICY_ALLOWED));
}

/// Records a new flow of an endpoint no policy selects (the caller decided it is new: a TCP
/// SYN, or `first_of_flow`). A `peer_identity` of 0 in `flow` is looked up here. A subprogram:
/// the caller's hot path stays small.
#[inline(never)]
pub(crate) fn unpoliced(flow: &Flow) {
    let k = &flow.key;
    let peer = if flow.peer_identity != 0 {
        flow.peer_identity
    } else if flow.direction == DIR_FROM_CONTAINER {
        crate::policy::identity_of(k.daddr)
    } else {
        crate::policy::identity_of(k.saddr)
    };
    // Written in place in the ring buffer, not built on the stack.
    let Some(mut entry) = HM_FLOWS.reserve::<FlowRecord>(0) else {
        if let Some(lost) = HM_FLOWS_LOST.get_ptr_mut(0) {
            // SAFETY: this CPU's slot of a per-CPU array, valid for the program's run.
            unsafe { *lost += 1 };
        }
        return;
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    entry.write(FlowRecord {
        peer_identity: peer,
        ..flow.record(now, verdict::ALLOWED, reason::UNPOLICED)
    });
    entry.submit(0);
}

/// Records a denied packet, unless one of the same 5-tuple and direction was recorded less
/// than `FLOW_DROP_INTERVAL_NS` ago.
#[inline(always)]
pub(crate) fn denied(flow: &Flow, why: u8) {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let key = flow.key.with_scope(flow.direction);
    if let Some(last) = HM_FLOW_DROPS.get_ptr_mut(&key) {
        // SAFETY: a map value pointer, valid for the program's run; a race with another CPU at
        // worst lets two records through.
        unsafe {
            if now.wrapping_sub(*last) < FLOW_DROP_INTERVAL_NS {
                return;
            }
            *last = now;
        }
    } else {
        let _ = HM_FLOW_DROPS.insert(&key, &now, 0);
    }
    emit(&flow.record(now, verdict::DENIED, why));
}

#[inline(always)]
fn emit(record: &FlowRecord) {
    if HM_FLOWS.output::<FlowRecord>(record, 0).is_err()
        && let Some(lost) = HM_FLOWS_LOST.get_ptr_mut(0)
    {
        // SAFETY: this CPU's slot of a per-CPU array, valid for the program's run.
        unsafe { *lost += 1 };
    }
}
