//! Flow events (`HM_FLOWS` ring buffer): one record per new flow the policy code allowed and per
//! denied packet, the denied ones rate-limited to one per 5-tuple and direction per second
//! (`HM_FLOW_DROPS`). A record that does not fit the ring buffer is counted in `HM_FLOWS_LOST`.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};
use hivemind_common::{
    CtKey, FLOW_DROP_INTERVAL_NS, FLOWS_RING_BYTES, FlowRecord, MAX_FLOW_DROPS, reason, verdict,
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

/// What a record says about a packet, besides the verdict.
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
