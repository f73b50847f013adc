//! Log shipping (`observability configure-logging --endpoint URL --index I`): every node sends
//! its containers' log lines and its own to an Elasticsearch-compatible `_bulk` endpoint.
//!
//! - Container lines are read from the log files (`logfile`) from where the last read ended,
//!   whole lines only, each with its time, stream, app, container and node. Containers that
//!   ran before shipping was switched on ship from that moment on; containers started later,
//!   from their first line.
//! - The daemon's own events come from a `tracing` layer (`telemetry`) that queues them, as
//!   documents with level, target, message and fields, while shipping is on (at most 10,000
//!   between two passes; more are dropped and counted).
//! - Documents wait in a buffer of at most `MAX_BUFFERED`; beyond it the oldest are dropped
//!   and counted (`hivemind_log_lines_dropped_total{reason="buffer_full"}`). They go out in
//!   batches of `BATCH` every second. A failed request (no answer, 429, 5xx) is retried with a
//!   backoff from 1 s doubling to 30 s; documents the endpoint refuses (a 4xx for the batch,
//!   or an item error in its answer) are dropped and counted (`reason="rejected"`), since
//!   sending them again would not change the answer.

use std::collections::{HashMap, VecDeque};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use crate::model::LogShipping;
use crate::node::Node;
use crate::state::{CLUSTER_SETTING, LOG_SHIPPING};

/// Most documents waiting to be sent.
pub const MAX_BUFFERED: usize = 20_000;
/// Documents per `_bulk` request, and requests per pass.
const BATCH: usize = 500;
const BATCHES_PER_PASS: usize = 20;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: &'static str,
}

/// The shipping counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct ShipStats {
    shipped: Counter,
    dropped: Family<DropLabels, Counter>,
    pending: Gauge,
}

impl ShipStats {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "hivemind_log_lines_shipped",
            "Log lines the log shipping endpoint took",
            self.shipped.clone(),
        );
        registry.register(
            "hivemind_log_lines_dropped",
            "Log lines dropped by the log shipping: buffer_full (the endpoint did not keep up), rejected (the endpoint refused them)",
            self.dropped.clone(),
        );
        registry.register(
            "hivemind_log_lines_pending",
            "Log lines waiting to be shipped",
            self.pending.clone(),
        );
    }

    fn drop_lines(&self, reason: &'static str, count: usize) {
        self.dropped
            .get_or_create(&DropLabels { reason })
            .inc_by(count as u64);
    }
}

static STATS: LazyLock<ShipStats> = LazyLock::new(ShipStats::default);

pub fn stats() -> &'static ShipStats {
    &STATS
}

/// One node's shipper: the setting it follows, where each container's file was read to, and
/// what waits to be sent.
pub struct Shipper {
    client: reqwest::Client,
    setting: Option<LogShipping>,
    /// Container id -> (offset, inode) of its log file.
    positions: HashMap<String, (u64, u64)>,
    buffer: VecDeque<String>,
    retry_at: Instant,
    backoff: Duration,
}

impl Default for Shipper {
    fn default() -> Self {
        Self::new()
    }
}

impl Shipper {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            client,
            setting: None,
            positions: HashMap::new(),
            buffer: VecDeque::new(),
            retry_at: Instant::now(),
            backoff: FIRST_BACKOFF,
        }
    }

    /// One pass: follows the setting, reads new lines, sends what it can.
    pub async fn pass(&mut self, node: &Node) {
        let wanted = match node.store().value(LOG_SHIPPING, CLUSTER_SETTING) {
            Ok(wanted) => wanted,
            Err(e) => {
                tracing::warn!(error = %e, "reading the log shipping setting");
                return;
            }
        };
        if wanted != self.setting {
            self.switch(node, wanted).await;
        }
        let Some(setting) = self.setting.clone() else {
            return;
        };
        self.read_containers(node).await;
        let (queued, overflow) = crate::telemetry::take_daemon_events();
        STATS.drop_lines("buffer_full", overflow);
        for mut doc in queued {
            doc["node"] = json!(node.name());
            self.push(doc);
        }
        self.send(&setting).await;
        STATS.pending.set(self.buffer.len() as i64);
    }

    async fn switch(&mut self, node: &Node, wanted: Option<LogShipping>) {
        let was_on = self.setting.is_some();
        self.setting = wanted;
        self.backoff = FIRST_BACKOFF;
        self.retry_at = Instant::now();
        crate::telemetry::collect_daemon_events(self.setting.is_some());
        match &self.setting {
            None => {
                self.positions.clear();
                self.buffer.clear();
                tracing::info!("log shipping off");
            }
            Some(setting) => {
                tracing::info!(endpoint = %setting.endpoint, index = %setting.index, "shipping logs");
                if !was_on {
                    // What the running containers wrote before is not shipped.
                    for record in node.store().containers().unwrap_or_default() {
                        let path = node.log_path(&record.id);
                        if let Some((_, len, inode)) =
                            crate::logfile::appended(&path, u64::MAX).await
                        {
                            self.positions.insert(record.id, (len, inode));
                        }
                    }
                }
            }
        }
    }

    /// New whole lines of every local container, as documents.
    async fn read_containers(&mut self, node: &Node) {
        let records = node.store().containers().unwrap_or_default();
        self.positions
            .retain(|id, _| records.iter().any(|r| &r.id == id));
        for record in records {
            let path = node.log_path(&record.id);
            let (offset, inode) = self.positions.get(&record.id).copied().unwrap_or((0, 0));
            let Some((new, len, now_inode)) = crate::logfile::appended(&path, offset).await else {
                continue;
            };
            if (len < offset || now_inode != inode) && offset != 0 {
                // Rotated or replaced: read the new file from its start next time.
                self.positions.insert(record.id.clone(), (0, now_inode));
                continue;
            }
            let Some(end) = new.iter().rposition(|b| *b == b'\n') else {
                self.positions
                    .insert(record.id.clone(), (offset, now_inode));
                continue;
            };
            for raw in String::from_utf8_lossy(&new[..=end]).lines() {
                let line = crate::logfile::parse(raw);
                let time = if line.time.is_empty() {
                    crate::logfile::now_rfc3339()
                } else {
                    line.time.to_string()
                };
                self.push(json!({
                    "@timestamp": time,
                    "message": line.text,
                    "stream": line.stream,
                    "app": record.app,
                    "container": record.id,
                    "node": node.name(),
                    "source": "container",
                }));
            }
            self.positions
                .insert(record.id.clone(), (offset + end as u64 + 1, now_inode));
        }
    }

    fn push(&mut self, doc: Value) {
        if self.buffer.len() >= MAX_BUFFERED {
            self.buffer.pop_front();
            STATS.drop_lines("buffer_full", 1);
        }
        self.buffer.push_back(doc.to_string());
    }

    /// Sends batches until the buffer is empty, a request fails, or the pass has sent enough.
    async fn send(&mut self, setting: &LogShipping) {
        let url = format!("{}/_bulk", setting.endpoint.trim_end_matches('/'));
        let action = json!({ "index": { "_index": setting.index } }).to_string();
        for _ in 0..BATCHES_PER_PASS {
            if self.buffer.is_empty() || Instant::now() < self.retry_at {
                return;
            }
            let count = self.buffer.len().min(BATCH);
            let mut body = String::new();
            for doc in self.buffer.iter().take(count) {
                body.push_str(&action);
                body.push('\n');
                body.push_str(doc);
                body.push('\n');
            }
            let sent = self
                .client
                .post(&url)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    let answer: Value = response.json().await.unwrap_or(Value::Null);
                    let rejected = rejected_items(&answer);
                    STATS.drop_lines("rejected", rejected);
                    STATS.shipped.inc_by((count - rejected.min(count)) as u64);
                    self.buffer.drain(..count);
                    self.backoff = FIRST_BACKOFF;
                }
                Ok(response)
                    if response.status().is_client_error()
                        && response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS =>
                {
                    tracing::warn!(status = %response.status(), %url, "the log endpoint refused a batch; dropped");
                    STATS.drop_lines("rejected", count);
                    self.buffer.drain(..count);
                }
                failed => {
                    let why = match failed {
                        Ok(response) => response.status().to_string(),
                        Err(e) => e.to_string(),
                    };
                    tracing::debug!(%url, error = %why, retry_in_s = self.backoff.as_secs(), "log shipping failed");
                    self.retry_at = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return;
                }
            }
        }
    }
}

/// How many items of a `_bulk` answer failed.
fn rejected_items(answer: &Value) -> usize {
    if answer["errors"] != Value::Bool(true) {
        return 0;
    }
    answer["items"].as_array().map_or(0, |items| {
        items
            .iter()
            .filter(|item| {
                item.as_object()
                    .and_then(|o| o.values().next())
                    .is_some_and(|result| !result["error"].is_null())
            })
            .count()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_errors_of_a_bulk_answer_are_counted() {
        assert_eq!(rejected_items(&json!({"errors": false, "items": []})), 0);
        let answer = json!({"errors": true, "items": [
            {"index": {"status": 201}},
            {"index": {"status": 400, "error": {"type": "mapper_parsing_exception"}}},
            {"create": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}},
        ]});
        assert_eq!(rejected_items(&answer), 2);
    }
}
