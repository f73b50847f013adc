//! The packet trace monitor (`hivemind debug monitor`): while a monitor is attached, the
//! daemon switches `HM_MONITOR` on with its filter, and each packet a container's programs
//! decide on (passed or dropped, with the reason) that matches becomes a `TraceRecord` in
//! `HM_TRACE`. Off, the fast path pays one array load and one branch (`on`).

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{PerCpuArray, ProgramArray, RingBuf},
    programs::TcContext,
};
use hivemind_common::{
    IPPROTO_TCP, IPPROTO_UDP, TRACE_RING_BYTES, TraceRecord, monitor_types, reason,
};

use aya_log_ebpf::warn;

pub(crate) use crate::switch::on;
use crate::{pkt::Headers, switch::HM_MONITOR};

/// Trace records for the daemon.
#[map(name = "HM_TRACE")]
static HM_TRACE: RingBuf = RingBuf::with_byte_size(TRACE_RING_BYTES, 0);

/// Index 0: records lost because the ring buffer was full (per CPU).
#[map(name = "HM_TRACE_LOST")]
static HM_TRACE_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Records the packet `headers` describes if the attached monitor wants it: `program` is a
/// `hivemind_common::trace_program`, `why` the outcome (`FORWARDED` or a drop reason). Call
/// only when `on`.
#[inline(always)]
pub(crate) fn trace(
    ctx: &TcContext,
    headers: &Headers,
    endpoint_id: u32,
    program: u8,
    why: u8,
) -> bool {
    let Headers::Ipv4(ip) = headers else {
        return false;
    };
    let (sport, dport) = if (ip.proto == IPPROTO_TCP || ip.proto == IPPROTO_UDP) && ip.l4_avail >= 4
    {
        (ip.l4_u16(0), ip.l4_u16(2))
    } else {
        (0, 0)
    };
    // Scalars only across the call: the callers' headers stay in registers.
    let addrs = u64::from(ip.saddr) | (u64::from(ip.daddr) << 32);
    let rest = u64::from(sport)
        | (u64::from(dport) << 16)
        | (u64::from(ip.proto) << 32)
        | (u64::from(ip.tcp_flags) << 40);
    let meta = u32::from(program) | (u32::from(why) << 8);
    emit(ctx, addrs, rest, meta, endpoint_id)
}

/// `trace`'s out-of-line part: the filter and the record. Whether the monitor wanted the
/// packet.
#[inline(never)]
fn emit(ctx: &TcContext, addrs: u64, rest: u64, meta: u32, endpoint_id: u32) -> bool {
    let Some(config) = HM_MONITOR.get(0) else {
        return false;
    };
    let why = (meta >> 8) as u8;
    let kind = if reason::is_drop(why) {
        monitor_types::DROP
    } else {
        monitor_types::TRACE
    };
    if config.types & kind == 0 {
        return false;
    }
    let (saddr, daddr) = (addrs as u32, (addrs >> 32) as u32);
    let src_identity = crate::policy::identity_of(saddr);
    let dst_identity = crate::policy::identity_of(daddr);
    if (config.src_identity != 0 && config.src_identity != src_identity)
        || (config.dst_identity != 0 && config.dst_identity != dst_identity)
    {
        return false;
    }
    let Some(mut entry) = HM_TRACE.reserve::<TraceRecord>(0) else {
        if let Some(lost) = HM_TRACE_LOST.get_ptr_mut(0) {
            // SAFETY: this CPU's slot of a per-CPU array, valid for the program's run.
            unsafe { *lost += 1 };
        }
        return true;
    };
    entry.write(TraceRecord {
        // SAFETY: a helper without arguments.
        time_ns: unsafe { bpf_ktime_get_ns() },
        saddr,
        daddr,
        sport: rest as u16,
        dport: (rest >> 16) as u16,
        proto: (rest >> 32) as u8,
        program: meta as u8,
        reason: why,
        tcp_flags: (rest >> 40) as u8,
        endpoint_id,
        src_identity,
        dst_identity,
        len: ctx.len(),
    });
    entry.submit(0);
    true
}

/// `hm_tc_explain`, in slot 0 (written by the daemon).
#[map(name = "HM_EXPLAIN")]
static HM_EXPLAIN: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// What a container program's body returns for a drop the monitor wants explained: not a TC
/// action; the program's entry turns it into the tail call (`finish`).
pub(crate) const EXPLAIN: i32 = 0x4845_0000;

/// Whether a drop is explained in words: those that mean a limit or a gap in the node's state
/// rather than a decision (no backend, a full table, no tunnel).
#[inline(always)]
pub(crate) fn explains(why: u8) -> bool {
    matches!(
        why,
        reason::DROP_NO_BACKEND
            | reason::DROP_CT_FULL
            | reason::DROP_CT_BUDGET
            | reason::DROP_NAT_NO_PORT
            | reason::DROP_NAT_FULL
            | reason::DROP_NO_TUNNEL
    )
}

/// Leaves the dropped packet's facts in the skb's control block for `hm_tc_explain`.
#[inline(always)]
pub(crate) fn stash(ctx: &TcContext, headers: &Headers, why: u8) {
    let Headers::Ipv4(ip) = headers else {
        return;
    };
    let ports = if (ip.proto == IPPROTO_TCP || ip.proto == IPPROTO_UDP) && ip.l4_avail >= 4 {
        u32::from(ip.l4_u16(0)) | (u32::from(ip.l4_u16(2)) << 16)
    } else {
        0
    };
    // SAFETY: the context's skb, writable in a TC program for the length of its run; cb has
    // five words.
    unsafe {
        let cb = &mut (*ctx.skb.skb).cb;
        cb[0] = u32::from(why);
        cb[1] = ip.saddr;
        cb[2] = ip.daddr;
        cb[3] = ports;
        cb[4] = u32::from(ip.proto);
    }
}

/// A container program's verdict: `EXPLAIN` becomes the tail call into `hm_tc_explain` (and a
/// drop, should the call fail); anything else is returned as it is.
#[inline(always)]
pub(crate) fn finish(ctx: &TcContext, ret: i32) -> i32 {
    if ret == EXPLAIN {
        // SAFETY: a tail call with the program's own context; on success it does not return.
        unsafe { HM_EXPLAIN.tail_call(ctx, 0) };
        return TC_ACT_SHOT;
    }
    ret
}

/// `hm_tc_explain`'s body: the line in words, through `aya-log` to the daemon's log, from what
/// `stash` left. A program of its own, so that the verifier checks the logging code once and
/// not in every path of the container programs.
#[inline(always)]
pub(crate) fn explain_stashed(ctx: &TcContext) {
    // SAFETY: the context's skb, readable for the length of the run.
    let [why, saddr, daddr, ports, proto] = unsafe { (*ctx.skb.skb).cb };
    let what = match why as u8 {
        reason::DROP_NO_BACKEND => "the service has no backend",
        reason::DROP_CT_FULL => "the conntrack table is full",
        reason::DROP_CT_BUDGET => "the connection's owner is over its conntrack budget",
        reason::DROP_NAT_NO_PORT => "egress NAT found no free port",
        reason::DROP_NAT_FULL => "the egress NAT table is full",
        reason::DROP_NO_TUNNEL => "no tunnel covers the destination",
        _ => return,
    };
    warn!(
        ctx,
        "dropped: {}: {:i}:{} -> {:i}:{} protocol {}",
        what,
        u32::from_be(saddr),
        u16::from_be(ports as u16),
        u32::from_be(daddr),
        u16::from_be((ports >> 16) as u16),
        proto
    );
}
