//! The trace monitor's switch (`HM_MONITOR`), apart from the monitor itself so that the floor
//! object (`floor.rs`) times the very check every container program makes.

use aya_ebpf::{macros::map, maps::Array};
use hivemind_common::MonitorConfig;

/// Index 0: whether a monitor is attached, and what it wants. Written by the daemon.
#[map(name = "HM_MONITOR")]
pub(crate) static HM_MONITOR: Array<MonitorConfig> = Array::with_max_entries(1, 0);

/// Whether a monitor is attached: the only cost of the monitor when none is.
#[inline(always)]
pub(crate) fn on() -> bool {
    HM_MONITOR.get(0).is_some_and(|c| c.enabled != 0)
}
