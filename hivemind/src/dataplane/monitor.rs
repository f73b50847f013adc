//! The packet trace monitor: `HM_MONITOR` switches the programs' tracing on (with a filter)
//! while someone watches, and `HM_TRACE` carries what they saw. Neither map is pinned: a new
//! daemon starts with the monitor off. Behind the same switch, the programs explain some drops
//! in words through `aya-log` (`AYA_LOGS`), which `drain_kernel_log` reads.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use aya::Ebpf;
use aya::maps::{Array, MapData, PerCpuArray, ProgramArray, RingBuf};
use aya_log::EbpfLogger;
use hivemind_common::{
    MAP_EXPLAIN, MAP_MONITOR, MAP_TRACE, MAP_TRACE_LOST, MonitorConfig, TraceRecord, reason,
    trace_program,
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
    /// Holds `hm_tc_explain` for the tail call (the kernel empties a program array when the
    /// last file descriptor of it closes).
    _explain: ProgramArray<MapData>,
    /// The programs' `aya-log` lines (`AYA_LOGS`); `None` when the object has none, or after a
    /// record could not be read.
    kernel_log: Option<EbpfLogger<KernelLines>>,
    kernel_lines: KernelLines,
}

/// A line a program wrote with `aya-log` (only while a monitor is attached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelLine {
    pub level: log::Level,
    pub message: String,
}

/// Lines kept between two drains; older ones are dropped first.
const KERNEL_LINES: usize = 1000;

/// Where `aya-log` puts the lines it decodes, until the daemon drains them.
#[derive(Debug, Clone, Default)]
struct KernelLines(Arc<Mutex<VecDeque<KernelLine>>>);

impl log::Log for KernelLines {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() >= KERNEL_LINES {
            lines.pop_front();
        }
        lines.push_back(KernelLine {
            level: record.level(),
            message: record.args().to_string(),
        });
    }

    fn flush(&self) {}
}

impl MonitorMaps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let kernel_lines = KernelLines::default();
        let program_error = |e: aya::programs::ProgramError| DataplaneError::ProgramLoad {
            program: super::PROG_EXPLAIN,
            source: Box::new(e),
        };
        let explain_fd = super::classifier(ebpf, super::PROG_EXPLAIN)?
            .fd()
            .map_err(program_error)?
            .try_clone()
            .map_err(|e| program_error(e.into()))?;
        let mut explain = ProgramArray::try_from(
            ebpf.take_map(MAP_EXPLAIN)
                .ok_or(DataplaneError::MapMissing { map: MAP_EXPLAIN })?,
        )
        .map_err(DataplaneError::map(MAP_EXPLAIN, "opening"))?;
        explain
            .set(0, &explain_fd, 0)
            .map_err(DataplaneError::map(MAP_EXPLAIN, "writing"))?;
        let mut take =
            |map: &'static str| ebpf.take_map(map).ok_or(DataplaneError::MapMissing { map });
        Ok(Self {
            config: Array::try_from(take(MAP_MONITOR)?)
                .map_err(DataplaneError::map(MAP_MONITOR, "opening"))?,
            trace: RingBuf::try_from(take(MAP_TRACE)?)
                .map_err(DataplaneError::map(MAP_TRACE, "opening"))?,
            lost: PerCpuArray::try_from(take(MAP_TRACE_LOST)?)
                .map_err(DataplaneError::map(MAP_TRACE_LOST, "opening"))?,
            kernel_log: match EbpfLogger::init_with_logger(ebpf, kernel_lines.clone()) {
                Ok(logger) => Some(logger),
                Err(e) => {
                    tracing::warn!(error = %e, "the programs' log (AYA_LOGS) cannot be read: their diagnostic lines are lost");
                    None
                }
            },
            kernel_lines,
            _explain: explain,
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

    /// The lines the programs wrote with `aya-log` since the last call, oldest first.
    pub fn drain_kernel_log(&mut self) -> Vec<KernelLine> {
        if let Some(logger) = &mut self.monitor.kernel_log {
            // aya-log panics on a record it cannot decode; one bad record must not end the
            // caller, so the log is given up instead.
            let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| logger.flush()));
            if read.is_err() {
                tracing::error!(
                    "a record of the programs' log could not be decoded; their diagnostic lines are off until the next start"
                );
                self.monitor.kernel_log = None;
            }
        }
        let mut lines = self
            .monitor
            .kernel_lines
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        lines.drain(..).collect()
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
