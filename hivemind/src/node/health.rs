//! Health orchestration: the checks of this node's containers, readiness
//! into their endpoint records, failed liveness into restarts.

use super::{Node, NodeError};
use crate::state::{AppRecord, ContainerStatus, ENDPOINTS, EndpointRecord};

impl Node {
    /// Publishes (or withdraws, with `None`) the endpoint of a local container.
    pub async fn publish_endpoint(
        &self,
        container: &str,
        endpoint: Option<&EndpointRecord>,
    ) -> Result<(), NodeError> {
        let current: Option<EndpointRecord> = self.store.value(ENDPOINTS, container)?;
        if current.as_ref() == endpoint {
            return Ok(());
        }
        self.write(ENDPOINTS, container, endpoint).await
    }

    /// Publishes a local container's endpoint with its status (readiness
    /// checks refine a running one).
    pub async fn publish_local_endpoint(
        &self,
        record: &crate::state::ContainerRecord,
        status: ContainerStatus,
    ) -> Result<(), NodeError> {
        let (ready, reason) = match status {
            ContainerStatus::Running => self.readiness(&record.id),
            ContainerStatus::Failed => (
                false,
                Some(
                    record
                        .message
                        .clone()
                        .unwrap_or_else(|| "failed".to_string()),
                ),
            ),
            _ => (false, Some("not running".to_string())),
        };
        let (resets, unanswered_syns) = self.tcp_failures_for_analysis(record);
        let endpoint = EndpointRecord {
            container: record.id.clone(),
            app: record.app.clone(),
            node: self.name.clone(),
            node_id: self.id.clone(),
            ip: record.ip,
            status,
            generation: record.generation,
            ready,
            reason,
            restarts: record.restarts,
            resets,
            unanswered_syns,
            variant: record.variant.clone(),
        };
        self.publish_endpoint(&record.id, Some(&endpoint)).await
    }

    /// The TCP resets a container sent and the SYNs it left unanswered, while its app is under
    /// a rollout whose strategy analyses failures or serves an A/B test's variants (0
    /// otherwise, so that the endpoint record does not change with every connection).
    fn tcp_failures_for_analysis(&self, record: &crate::state::ContainerRecord) -> (u64, u64) {
        let analysed = self
            .store
            .app(&record.app)
            .ok()
            .flatten()
            .map(|app| {
                !app.spec.variants().is_empty()
                    || app
                        .active_rollout()
                        .is_some_and(|r| crate::rollout::ANALYSED.contains(&r.strategy.as_str()))
            })
            .unwrap_or(false);
        let Some(dataplane) = self.dataplane.as_ref().filter(|_| analysed) else {
            return (0, 0);
        };
        super::apps::lock(dataplane)
            .tcp_events(super::endpoint_id(record))
            .map_or((0, 0), |e| (e.tcp_resets_sent, e.unanswered_syns()))
    }

    /// Whether a running container serves: its readiness check's verdict
    /// (ready at once without checks).
    pub fn readiness(&self, container: &str) -> (bool, Option<String>) {
        match self.monitor.status(container) {
            None => (true, None),
            Some(health) if health.ready => (true, None),
            Some(health) => {
                let reason = health
                    .last
                    .map(|probe| probe.message)
                    .unwrap_or_else(|| "waiting for the first readiness check".to_string());
                (false, Some(reason))
            }
        }
    }

    /// Starts the checks of a running container unless they run already.
    pub fn watch_health(&self, app: &AppRecord, record: &crate::state::ContainerRecord) {
        if app.spec.health.is_empty() || self.monitor.watched().contains(&record.id) {
            return;
        }
        self.monitor
            .watch(&record.id, record.ip, app.spec.health.clone());
    }

    /// Carries out a health event: readiness into the endpoint record, a
    /// failed liveness check into a restart after the backoff.
    pub async fn on_health_event(
        self: &std::sync::Arc<Self>,
        event: crate::health::HealthEvent,
    ) -> Result<(), NodeError> {
        use crate::health::HealthEvent;
        match event {
            HealthEvent::ReadinessChanged { id, ready } => {
                tracing::info!(container = %id, ready, "readiness changed");
                if ready {
                    self.end_ready(&id, true);
                }
                if let Some(record) = self.store.container(&id)? {
                    self.publish_local_endpoint(&record, ContainerStatus::Running)
                        .await?;
                }
                self.wake.notify_one();
            }
            HealthEvent::LivenessFailed { id, restart_after } => {
                tracing::warn!(container = %id, restart_after_s = restart_after.as_secs(), "liveness check failed; restarting");
                let node = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(restart_after).await;
                    if let Err(e) = node.runtime.stop(&id, node.stop_grace).await {
                        tracing::warn!(container = %id, error = %e, "stop for liveness restart failed");
                    }
                    node.wake.notify_one();
                });
            }
        }
        Ok(())
    }

    /// The ready endpoints of an app, cluster-wide.
    pub fn ready_endpoints(&self, app: &str) -> Result<Vec<EndpointRecord>, NodeError> {
        Ok(self
            .store
            .values::<EndpointRecord>(ENDPOINTS)?
            .into_iter()
            .filter(|e| e.app == app && e.ready)
            .collect())
    }
}
