//! The flow events the kernel reports: to subscribers of `GET /api/flows`
//! and a buffer of recent ones.

use super::{Node, NodeError};

/// Recent flow events kept for `GET /api/flows/recent`.
pub const RECENT_FLOWS: usize = 1000;

impl Node {
    /// Flow events as they arrive.
    pub fn subscribe_flows(&self) -> tokio::sync::broadcast::Receiver<serde_json::Value> {
        self.flows.subscribe()
    }

    /// The most recent flow events, oldest first, and how many the kernel
    /// could not hand over.
    pub fn recent_flows(&self) -> (Vec<serde_json::Value>, u64) {
        let recent = self
            .recent_flows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let lost = self.flows_lost.load(std::sync::atomic::Ordering::Relaxed);
        (recent, lost)
    }

    /// Moves the kernel's flow events to subscribers and the recent buffer.
    pub fn pump_flows(&self) -> Result<(), NodeError> {
        let Some(dataplane) = &self.dataplane else {
            return Ok(());
        };
        let (events, lost) = {
            let mut dataplane = match dataplane.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            dataplane.drain_flows()?
        };
        self.flows_lost
            .store(lost, std::sync::atomic::Ordering::Relaxed);
        if events.is_empty() {
            return Ok(());
        }
        self.count_flow_edges(&events);
        let mut recent = match self.recent_flows.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        {
            let mut counts = super::lock(&self.flow_counts);
            for event in &events {
                *counts
                    .entry((event.verdict, event.direction, event.proto))
                    .or_default() += 1;
            }
        }
        for event in events {
            let value = serde_json::to_value(&event).unwrap_or_default();
            let _ = self.flows.send(value.clone());
            recent.push_back(value);
            while recent.len() > RECENT_FLOWS {
                recent.pop_front();
            }
        }
        Ok(())
    }
}
