//! Map keys, map values and stable codes shared by the daemon and the eBPF programs.
//!
//! Invariant: this crate never depends on std; every type here is `#[repr(C)]` plain data
//! with explicit padding and a compile-time size assertion, so both sides agree on the
//! byte layout the kernel sees.
#![no_std]

use core::mem::size_of;

/// Name of the map from host-side veth ifindex (`u32`) to [`EndpointInfo`].
pub const MAP_ENDPOINTS: &str = "HM_ENDPOINTS";
/// Name of the per-CPU map from [`MetricsKey`] to [`MetricsValue`].
pub const MAP_METRICS: &str = "HM_METRICS";

/// Maximum number of local endpoints (container veths) per node.
pub const MAX_ENDPOINTS: u32 = 4096;
/// Maximum number of metrics entries per node ({endpoint, direction, reason}).
pub const MAX_METRICS_ENTRIES: u32 = 65536;

/// Packets leaving the container (TC ingress of its host-side veth).
pub const DIR_FROM_CONTAINER: u8 = 1;
/// Packets going into the container (TC egress of its host-side veth).
pub const DIR_TO_CONTAINER: u8 = 2;

/// Endpoint id used for traffic seen on an interface that has no `HM_ENDPOINTS` entry.
pub const ENDPOINT_ID_UNKNOWN: u32 = 0;

/// Value of `HM_ENDPOINTS`, keyed by the host-side veth ifindex.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    pub endpoint_id: u32,
    /// Reserved for later use (policy enforcement, ...); 0 today.
    pub flags: u32,
}
const _: () = assert!(size_of::<EndpointInfo>() == 8);

/// Key of `HM_METRICS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MetricsKey {
    pub endpoint_id: u32,
    /// One of `DIR_FROM_CONTAINER`, `DIR_TO_CONTAINER`.
    pub direction: u8,
    /// One of the codes in [`reason`].
    pub reason: u8,
    /// Always zero: hash maps compare keys byte by byte.
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<MetricsKey>() == 8);

impl MetricsKey {
    pub const fn new(endpoint_id: u32, direction: u8, reason: u8) -> Self {
        Self {
            endpoint_id,
            direction,
            reason,
            _pad: [0; 2],
        }
    }
}

/// Value of `HM_METRICS` (one per CPU; userspace sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsValue {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<MetricsValue>() == 16);

/// Verdict reasons recorded in [`MetricsKey::reason`].
///
/// Numbering: 0..=127 are non-drop outcomes, 128..=255 are drop reasons (as in cilium's
/// `drop_reasons.h`, `reason >= 128` means the packet was dropped). A code, once published,
/// keeps its meaning forever; a retired code is commented out, never reused.
pub mod reason {
    /// The packet was passed on.
    pub const FORWARDED: u8 = 0;
    /// First drop reason; every code at or above this one is a drop. Drop reasons are
    /// added here (128, 129, ...) as the programs that produce them land.
    pub const DROP_FIRST: u8 = 128;

    /// Whether `reason` is a drop reason.
    pub const fn is_drop(reason: u8) -> bool {
        reason >= DROP_FIRST
    }
}

#[cfg(feature = "user")]
mod user {
    use super::{EndpointInfo, MetricsKey, MetricsValue};

    // SAFETY: EndpointInfo is #[repr(C)], made only of u32 fields, has no padding (size
    // asserted above) and every bit pattern is a valid value.
    unsafe impl aya::Pod for EndpointInfo {}
    // SAFETY: MetricsKey is #[repr(C)], its padding is an explicit field (size asserted
    // above), and every bit pattern of its integer fields is valid.
    unsafe impl aya::Pod for MetricsKey {}
    // SAFETY: MetricsValue is #[repr(C)], two u64 fields, no padding, any bit pattern valid.
    unsafe impl aya::Pod for MetricsValue {}
}
