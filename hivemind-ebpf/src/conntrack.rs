//! Connection tracking (`HM_CT`, a hash map: nothing is evicted behind anyone's back).
//!
//! A translated connection has two entries, written together when its first packet is
//! translated: the original direction `{client, VIP, client port, service port}` remembering the
//! backend, and the reply direction `{backend, client, backend port, client port}` remembering
//! the VIP:port to restore. The policy checks keep their own entries (other scopes).
//!
//! Every entry records what its packets showed (`ct_state`, from TCP flags) and when the last
//! one came; the daemon's collector removes a connection (both entries) once it has been idle
//! longer than its protocol and state allow (closed TCP after seconds, established after
//! hours). Each entry counts against an owner (the local endpoint that opened the connection,
//! or the outside); once the table is three quarters full (`CT_PRESSURE`), an owner holds at
//! most `CT_OWNER_BUDGET` entries: one container cannot fill the table the others need, and
//! none is cut off while there is room.

use aya_ebpf::{
    bindings::{BPF_EXIST, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::HashMap,
};
use hivemind_common::{
    CT_OWNER_BUDGET, CT_OWNER_NODE, CT_PRESSURE, CT_TOTAL, CT_TOUCH_NS, CtKey, CtValue,
    MAX_CT_ENTRIES, MAX_ENDPOINTS, ct_state, reason,
};

/// 5-tuple -> backend / VIP to restore, state and last packet. Written by the data path; the
/// daemon reads it and removes what is over.
#[map(name = "HM_CT")]
static HM_CT: HashMap<CtKey, CtValue> = HashMap::with_max_entries(MAX_CT_ENTRIES, 0);

/// Owner -> entries it holds (a u64: the data path's atomics are 64-bit), and `CT_TOTAL` ->
/// entries of every owner. Counted up here, recounted by the daemon's collector.
#[map(name = "HM_CT_BUDGET")]
static HM_CT_BUDGET: HashMap<u32, u64> = HashMap::with_max_entries(MAX_ENDPOINTS + 3, 0);

const EEXIST: i32 = 17;

/// The entry of `key` for a packet with `tcp_flags` (0 for other protocols): its state takes
/// the packet's flags and its last-seen time moves on (written at most once a second unless
/// the state changes).
#[inline(always)]
pub(crate) fn touch(key: &CtKey, tcp_flags: u8) -> Option<CtValue> {
    touch_and_tell(key, tcp_flags).map(|(value, _)| value)
}

/// `touch`, and whether the entry was written (its state changed, or its last-seen time moved
/// on: at most once a second while packets flow).
#[inline(always)]
pub(crate) fn touch_and_tell(key: &CtKey, tcp_flags: u8) -> Option<(CtValue, bool)> {
    let ptr = HM_CT.get_ptr_mut(key)?;
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a pointer returned by a map lookup is valid for the program's run; the value is
    // plain data. The writes race only with other packets of the same connection, and either
    // value is right.
    unsafe {
        let mut value = *ptr;
        let state = value.state | ct_state::from_tcp_flags(tcp_flags);
        let refresh = state != value.state || now.wrapping_sub(value.last_seen_ns) >= CT_TOUCH_NS;
        if refresh {
            value.state = state;
            value.last_seen_ns = now;
            (*ptr).state = state;
            (*ptr).last_seen_ns = now;
        }
        Some((value, refresh))
    }
}

/// Creates the entry of `key` for a packet with `tcp_flags`, counted against `value.owner`, or
/// replaces the one there. `Err` holds the drop reason: the owner's budget is spent, or the map
/// is full.
#[inline(always)]
pub(crate) fn create(key: &CtKey, value: &CtValue, tcp_flags: u8) -> Result<(), u8> {
    insert(key, value, tcp_flags, true).map(|_| ())
}

/// Creates the entry of `key` as `create` does, unless there is one: `Ok(false)` then, and the
/// entry there is left alone (a key claimed at most once, even by two CPUs at the same time).
#[inline(always)]
pub(crate) fn create_new(key: &CtKey, value: &CtValue, tcp_flags: u8) -> Result<bool, u8> {
    insert(key, value, tcp_flags, false)
}

/// `create` (`replace`) or `create_new`; whether the entry is new.
#[inline(always)]
fn insert(key: &CtKey, value: &CtValue, tcp_flags: u8, replace: bool) -> Result<bool, u8> {
    let mut value = *value;
    // SAFETY: a plain helper call.
    value.last_seen_ns = unsafe { bpf_ktime_get_ns() };
    value.state = ct_state::from_tcp_flags(tcp_flags);
    let owner = value.owner;
    // SAFETY: as in `touch`; a copy of the count, no pointer kept across the insert.
    let held = HM_CT_BUDGET.get_ptr(&owner).map(|count| unsafe { *count });
    if owner != CT_OWNER_NODE
        && held.is_some_and(|count| count >= u64::from(CT_OWNER_BUDGET))
        && under_pressure()
    {
        return Err(reason::DROP_CT_BUDGET);
    }
    match HM_CT.insert(key, &value, u64::from(BPF_NOEXIST)) {
        Ok(()) => {
            if owner != CT_OWNER_NODE {
                count_one_more(owner);
            }
            count_one_more(CT_TOTAL);
            Ok(true)
        }
        Err(e) if e == -EEXIST && !replace => Ok(false),
        Err(e) if e == -EEXIST => HM_CT
            .insert(key, &value, u64::from(BPF_EXIST))
            .map(|()| false)
            .map_err(|_| reason::DROP_CT_FULL),
        Err(_) => Err(reason::DROP_CT_FULL),
    }
}

/// Whether the table holds `CT_PRESSURE` entries or more (as counted since the last
/// collection): the owners' budgets apply only then.
#[inline(always)]
fn under_pressure() -> bool {
    // SAFETY: as in `insert`: a copy of the count.
    HM_CT_BUDGET
        .get_ptr(&CT_TOTAL)
        .is_some_and(|count| unsafe { *count } >= u64::from(CT_PRESSURE))
}

/// One more entry for `owner`. Not atomic (this target has no atomic read-modify-write in
/// Rust): two CPUs counting the same owner at once may lose one, which the collector's recount
/// restores.
#[inline(never)]
fn count_one_more(owner: u32) {
    match HM_CT_BUDGET.get_ptr_mut(&owner) {
        // SAFETY: a pointer from a map lookup is valid for the program's run.
        Some(count) => unsafe { *count += 1 },
        None => {
            let _ = HM_CT_BUDGET.insert(&owner, &1u64, u64::from(BPF_NOEXIST));
        }
    }
}

/// Creates the entry of `key` unless one exists already (then it is only touched).
#[inline(always)]
pub(crate) fn ensure(key: &CtKey, value: &CtValue, tcp_flags: u8) {
    if touch(key, tcp_flags).is_none() {
        let _ = create(key, value, tcp_flags);
    }
}
