//! The packet trace monitor of this node: while at least one client watches (`GET
//! /api/debug/monitor`), the data plane's `HM_MONITOR` is on and its records go to the
//! watchers in batches; the last watcher to leave switches it off. With one watcher the
//! kernel filters by its identities and types; with several, the kernel sends everything and
//! each watcher filters its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hivemind_common::{MonitorConfig, monitor_types};

use super::{Node, NodeError, lock};
use crate::dataplane::TraceEvent;

/// What one watcher wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonitorFilter {
    /// From this identity (0: any).
    pub src_identity: u32,
    /// To this identity (0: any).
    pub dst_identity: u32,
    /// `monitor_types` bits.
    pub types: u32,
    /// Only drops by policy.
    pub policy_only: bool,
}

impl MonitorFilter {
    pub fn keeps(&self, event: &TraceEvent) -> bool {
        let dropped = hivemind_common::reason::is_drop(event.reason.code);
        let kind = if dropped {
            monitor_types::DROP
        } else {
            monitor_types::TRACE
        };
        self.types & kind != 0
            && (self.src_identity == 0 || self.src_identity == event.src_identity)
            && (self.dst_identity == 0 || self.dst_identity == event.dst_identity)
            && (!self.policy_only || event.reason.code == hivemind_common::reason::DROP_POLICY)
    }
}

/// The watchers of this node.
#[derive(Debug, Default)]
pub struct Monitors {
    next: AtomicU64,
    watching: std::sync::Mutex<Vec<(u64, MonitorFilter)>>,
}

/// One watcher: its batches, and its place among the watchers (left when dropped).
pub struct MonitorHandle {
    node: Arc<Node>,
    id: u64,
    pub filter: MonitorFilter,
    pub batches: tokio::sync::broadcast::Receiver<Arc<Vec<TraceEvent>>>,
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        lock(&self.node.monitors.watching).retain(|(id, _)| *id != self.id);
        if let Err(e) = self.node.configure_monitor() {
            tracing::warn!(error = %e, "switching the trace monitor failed");
        }
    }
}

impl Node {
    /// Starts watching with `filter`; the monitor is on until the handle is dropped.
    pub fn watch_packets(
        self: &Arc<Self>,
        filter: MonitorFilter,
    ) -> Result<MonitorHandle, NodeError> {
        let id = self.monitors.next.fetch_add(1, Ordering::Relaxed);
        let batches = self.traces.subscribe();
        lock(&self.monitors.watching).push((id, filter));
        let handle = MonitorHandle {
            node: self.clone(),
            id,
            filter,
            batches,
        };
        self.configure_monitor()?;
        Ok(handle)
    }

    /// Whether the monitor is on (someone watches).
    pub fn monitor_on(&self) -> bool {
        !lock(&self.monitors.watching).is_empty()
    }

    /// Writes the kernel's switch for the watchers there are now.
    fn configure_monitor(&self) -> Result<(), NodeError> {
        let Some(dataplane) = &self.dataplane else {
            return Ok(());
        };
        let watching = lock(&self.monitors.watching).clone();
        let config = match watching.as_slice() {
            [] => None,
            [(_, only)] => Some(MonitorConfig {
                enabled: 1,
                types: only.types,
                src_identity: only.src_identity,
                dst_identity: only.dst_identity,
            }),
            _ => Some(MonitorConfig {
                enabled: 1,
                types: monitor_types::TRACE | monitor_types::DROP,
                src_identity: 0,
                dst_identity: 0,
            }),
        };
        lock(dataplane).set_monitor(config)?;
        Ok(())
    }

    /// Moves the kernel's trace records to the watchers (nothing to do when none watches), and the
    /// programs' log lines into the daemon's log.
    pub fn pump_traces(&self) -> Result<(), NodeError> {
        let Some(dataplane) = &self.dataplane else {
            return Ok(());
        };
        // The programs write these only while a monitor is on; one may be left from just
        // before it went off.
        for line in lock(dataplane).drain_kernel_log() {
            kernel_log(&line);
        }
        if !self.monitor_on() {
            return Ok(());
        }
        let (events, _lost) = lock(dataplane).drain_trace()?;
        if !events.is_empty() {
            let _ = self.traces.send(Arc::new(events));
        }
        Ok(())
    }
}

/// A line of the programs' `aya-log`, into the daemon's own log at its level.
fn kernel_log(line: &crate::dataplane::KernelLine) {
    let message = &line.message;
    match line.level {
        log::Level::Error => tracing::error!(target: "hivemind::ebpf", "{message}"),
        log::Level::Warn => tracing::warn!(target: "hivemind::ebpf", "{message}"),
        log::Level::Info => tracing::info!(target: "hivemind::ebpf", "{message}"),
        log::Level::Debug => tracing::debug!(target: "hivemind::ebpf", "{message}"),
        log::Level::Trace => tracing::trace!(target: "hivemind::ebpf", "{message}"),
    }
}
