//! Connection tracking of service connections (`HM_CT`, LRU hash).
//!
//! A translated connection has two entries, written together when its first packet is
//! translated: the original direction `{client, VIP, client port, service port}` remembering the
//! backend, and the reply direction `{backend, client, backend port, client port}` remembering
//! the VIP:port to restore. Entries live until the LRU evicts them (no TCP state machine yet):
//! a connection keeps its backend for as long as its packets keep its entry warm.

use aya_ebpf::{macros::map, maps::LruHashMap};
use hivemind_common::{CtKey, CtValue, MAX_CT_ENTRIES};

/// 5-tuple -> backend / VIP to restore. Written by the data path only; the daemon reads it.
#[map(name = "HM_CT")]
static HM_CT: LruHashMap<CtKey, CtValue> = LruHashMap::with_max_entries(MAX_CT_ENTRIES, 0);

/// The entry of `key`, copied out of the map.
#[inline(always)]
pub(crate) fn lookup(key: &CtKey) -> Option<CtValue> {
    // SAFETY: a pointer returned by a map lookup is valid for the program's run; the value is
    // plain data, so a concurrent update can at worst give a stale copy.
    HM_CT.get_ptr(key).map(|value| unsafe { *value })
}

/// Creates or replaces the entry of `key`; `Err` if the map refused it.
#[inline(always)]
pub(crate) fn insert(key: &CtKey, value: &CtValue) -> Result<(), i32> {
    HM_CT.insert(key, value, 0)
}

/// Creates the entry of `key` unless one exists already (an LRU map never refuses for lack of
/// room, so a failure here means another CPU won the race: fine either way).
#[inline(always)]
pub(crate) fn ensure(key: &CtKey, value: &CtValue) {
    if HM_CT.get_ptr(key).is_none() {
        let _ = HM_CT.insert(key, value, 0);
    }
}
