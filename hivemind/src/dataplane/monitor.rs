//! The packet trace monitor: `HM_MONITOR` switches the programs' tracing on (with a filter)
//! while someone watches, and `HM_TRACE` carries what they saw. Neither map is pinned: a new
//! daemon starts with the monitor off.

use std::net::Ipv4Addr;

use aya::Ebpf;
use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use hivemind_common::{
    MAP_MONITOR, MAP_TRACE, MAP_TRACE_LOST, MonitorConfig, TraceRecord, reason, trace_program,
};
use serde::Serialize;

use super::{Dataplane, DataplaneError, FlowReason};

/// One packet the programs decided on while the monitor was on.
#[derive(Debug, Clone, Serialize)]
pub struct TraceEvent {
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
    pub time_ns: u64,
    /// `from_container`, `to_container` or `delivered` (host routing's local delivery).
    pub program: &'static str,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    pub endpoint_id: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub len: u32,
    /// `forwarded`, or why it was dropped.
    pub reason: FlowReason,
}

impl TraceEvent {
    fn from_record(r: &TraceRecord) -> Self {
        Self {
            time_ns: r.time_ns,
            program: match r.program {
                trace_program::FROM_CONTAINER => "from_container",
                trace_program::TO_CONTAINER => "to_container",
                trace_program::DELIVERED => "delivered",
                _ => "unknown",
            },
            src: Ipv4Addr::from(r.saddr.to_ne_bytes()),
            dst: Ipv4Addr::from(r.daddr.to_ne_bytes()),
            sport: u16::from_be(r.sport),
            dport: u16::from_be(r.dport),
            proto: r.proto,
            tcp_flags: r.tcp_flags,
            endpoint_id: r.endpoint_id,
            src_identity: r.src_identity,
            dst_identity: r.dst_identity,
            len: r.len,
            reason: FlowReason {
                code: r.reason,
                name: reason::name(r.reason),
            },
        }
    }
}

/// The monitor's maps.
pub(super) struct MonitorMaps {
    config: Array<MapData, MonitorConfig>,
    trace: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
}

impl MonitorMaps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let mut take =
            |map: &'static str| ebpf.take_map(map).ok_or(DataplaneError::MapMissing { map });
        Ok(Self {
            config: Array::try_from(take(MAP_MONITOR)?)
                .map_err(DataplaneError::map(MAP_MONITOR, "opening"))?,
            trace: RingBuf::try_from(take(MAP_TRACE)?)
                .map_err(DataplaneError::map(MAP_TRACE, "opening"))?,
            lost: PerCpuArray::try_from(take(MAP_TRACE_LOST)?)
                .map_err(DataplaneError::map(MAP_TRACE_LOST, "opening"))?,
        })
    }
}

impl Dataplane {
    /// Switches the monitor on with `config` (its `enabled` set here), or off with `None`.
    pub fn set_monitor(&mut self, config: Option<MonitorConfig>) -> Result<(), DataplaneError> {
        let value = match config {
            Some(config) => MonitorConfig {
                enabled: 1,
                ..config
            },
            None => MonitorConfig::default(),
        };
        self.monitor
            .config
            .set(0, value, 0)
            .map_err(DataplaneError::map(MAP_MONITOR, "writing"))
    }

    /// Whether the monitor is on, and with what.
    pub fn monitor(&self) -> Result<Option<MonitorConfig>, DataplaneError> {
        let value = self
            .monitor
            .config
            .get(&0, 0)
            .map_err(DataplaneError::map(MAP_MONITOR, "reading"))?;
        Ok((value.enabled != 0).then_some(value))
    }

    /// The trace records written since the last call, and how many were lost since the load.
    pub fn drain_trace(&mut self) -> Result<(Vec<TraceEvent>, u64), DataplaneError> {
        let mut events = Vec::new();
        while let Some(item) = self.monitor.trace.next() {
            if item.len() >= size_of::<TraceRecord>() {
                // SAFETY: the kernel wrote a whole TraceRecord (plain integers, any bit pattern
                // valid); read_unaligned copes with any alignment of the ring buffer slot.
                let record =
                    unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<TraceRecord>()) };
                events.push(TraceEvent::from_record(&record));
            }
        }
        let lost = self
            .monitor
            .lost
            .get(&0, 0)
            .map_err(DataplaneError::map(MAP_TRACE_LOST, "reading"))?
            .iter()
            .fold(0u64, |a, v| a.saturating_add(*v));
        Ok((events, lost))
    }
}
