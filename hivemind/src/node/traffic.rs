//! Live traffic for the dashboard, kept in the daemon: once a second each node turns its
//! containers' data-plane counters into rates (bytes, packets and drops per second, in and
//! out), summed per app and for the node, and keeps the last 15 minutes. The browser gets
//! these summaries, never the packets or flow events behind them; `GET /api/traffic` gathers
//! every node's.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Node, lock};
use crate::dataplane::EndpointCounters;

/// Samples kept: one a second for 15 minutes.
pub const TRAFFIC_WINDOW: usize = 900;

/// One second of traffic: rates per second over the second that ends at `t`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrafficSample {
    /// End of the second, in seconds since the epoch.
    pub t: u64,
    /// Into the containers.
    pub rx_bytes: f64,
    pub rx_packets: f64,
    /// Out of the containers.
    pub tx_bytes: f64,
    pub tx_packets: f64,
    /// Packets dropped (both ways, every reason).
    pub drops: f64,
}

impl TrafficSample {
    fn add(&mut self, other: &TrafficSample) {
        self.rx_bytes += other.rx_bytes;
        self.rx_packets += other.rx_packets;
        self.tx_bytes += other.tx_bytes;
        self.tx_packets += other.tx_packets;
        self.drops += other.drops;
    }
}

/// One node's traffic history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeTraffic {
    /// The node's own containers together.
    pub total: Vec<TrafficSample>,
    /// Per app (of the containers on this node).
    pub apps: BTreeMap<String, Vec<TrafficSample>>,
}

/// Container id -> its app and its counters, as read at one second.
pub type Reading = BTreeMap<String, (String, EndpointCounters)>;

/// What the sampler keeps between two seconds.
#[derive(Debug, Default)]
pub struct TrafficHistory {
    last: Option<(Instant, Reading)>,
    total: VecDeque<TrafficSample>,
    apps: BTreeMap<String, VecDeque<TrafficSample>>,
}

impl TrafficHistory {
    /// Adds the second that ends now, from the counters of each container (id -> app and
    /// counters). A container seen for the first time adds nothing yet; one that is gone is
    /// forgotten; an app with no container left loses its history.
    pub fn record(&mut self, now: Instant, t: u64, counters: Reading) {
        if let Some((then, previous)) = &self.last {
            let seconds = now.duration_since(*then).as_secs_f64().max(0.001);
            let mut total = TrafficSample {
                t,
                ..TrafficSample::default()
            };
            let mut apps: BTreeMap<&str, TrafficSample> = BTreeMap::new();
            for (id, (app, now_counters)) in &counters {
                let Some((_, before)) = previous.get(id) else {
                    continue;
                };
                let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
                let sample = TrafficSample {
                    t,
                    rx_bytes: rate(now_counters.to_container.bytes, before.to_container.bytes),
                    rx_packets: rate(
                        now_counters.to_container.packets,
                        before.to_container.packets,
                    ),
                    tx_bytes: rate(
                        now_counters.from_container.bytes,
                        before.from_container.bytes,
                    ),
                    tx_packets: rate(
                        now_counters.from_container.packets,
                        before.from_container.packets,
                    ),
                    drops: rate(
                        now_counters.drops.values().sum(),
                        before.drops.values().sum(),
                    ),
                };
                total.add(&sample);
                apps.entry(app.as_str())
                    .or_insert(TrafficSample {
                        t,
                        ..TrafficSample::default()
                    })
                    .add(&sample);
            }
            push(&mut self.total, total);
            self.apps
                .retain(|app, _| counters.values().any(|(a, _)| a == app));
            for (app, sample) in apps {
                push(self.apps.entry(app.to_string()).or_default(), sample);
            }
        }
        self.last = Some((now, counters));
    }

    /// The samples after `since` (seconds since the epoch).
    pub fn since(&self, since: u64) -> NodeTraffic {
        let after = |samples: &VecDeque<TrafficSample>| -> Vec<TrafficSample> {
            samples.iter().filter(|s| s.t > since).copied().collect()
        };
        NodeTraffic {
            total: after(&self.total),
            apps: self
                .apps
                .iter()
                .map(|(app, samples)| (app.clone(), after(samples)))
                .collect(),
        }
    }
}

fn push(samples: &mut VecDeque<TrafficSample>, sample: TrafficSample) {
    samples.push_back(sample);
    while samples.len() > TRAFFIC_WINDOW {
        samples.pop_front();
    }
}

/// Per-app series of several nodes, summed second by second.
pub fn apps_of_cluster<'a>(
    nodes: impl Iterator<Item = &'a NodeTraffic>,
) -> BTreeMap<String, Vec<TrafficSample>> {
    let mut sums: BTreeMap<String, BTreeMap<u64, TrafficSample>> = BTreeMap::new();
    for node in nodes {
        for (app, samples) in &node.apps {
            let app = sums.entry(app.clone()).or_default();
            for sample in samples {
                app.entry(sample.t)
                    .or_insert(TrafficSample {
                        t: sample.t,
                        ..TrafficSample::default()
                    })
                    .add(sample);
            }
        }
    }
    sums.into_iter()
        .map(|(app, by_t)| (app, by_t.into_values().collect()))
        .collect()
}

impl Node {
    /// Takes this second's sample (the traffic loop calls it once a second).
    pub fn sample_traffic(&self) {
        let apps: BTreeMap<String, String> = self
            .store
            .containers()
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.id, c.app))
            .collect();
        let counters = self
            .counters()
            .into_iter()
            .filter_map(|(id, counters)| {
                let app = apps.get(&id)?.clone();
                Some((id, (app, counters)))
            })
            .collect();
        let t = crate::state::now_secs();
        lock(&self.traffic).record(Instant::now(), t, counters);
    }

    /// This node's samples after `since`.
    pub fn traffic_since(&self, since: u64) -> NodeTraffic {
        lock(&self.traffic).since(since)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dataplane::Counter;

    fn counters(rx: u64, tx: u64, drops: u64) -> EndpointCounters {
        EndpointCounters {
            to_container: Counter {
                packets: rx,
                bytes: rx * 100,
            },
            from_container: Counter {
                packets: tx,
                bytes: tx * 100,
            },
            drops: BTreeMap::from([(1, drops)]),
            to_container_dropped: drops,
            ..EndpointCounters::default()
        }
    }

    #[test]
    fn rates_per_app_and_node_from_the_counters_of_two_seconds() {
        let mut history = TrafficHistory::default();
        let start = Instant::now();
        let at = |rx, tx, drops| {
            BTreeMap::from([
                (
                    "a1".to_string(),
                    ("web".to_string(), counters(rx, tx, drops)),
                ),
                ("b1".to_string(), ("db".to_string(), counters(rx, 0, 0))),
            ])
        };
        history.record(start, 100, at(10, 5, 0));
        assert!(
            history.since(0).total.is_empty(),
            "one reading is no rate yet"
        );
        history.record(start + Duration::from_secs(2), 102, at(30, 9, 4));
        let traffic = history.since(0);
        let web = traffic.apps["web"][0];
        assert_eq!(
            (web.t, web.rx_packets, web.tx_packets, web.drops),
            (102, 10.0, 2.0, 2.0)
        );
        assert_eq!(web.rx_bytes, 1000.0);
        let total = traffic.total[0];
        assert_eq!(total.rx_packets, 20.0, "web and db");
        assert!(history.since(102).total.is_empty());
        // db's container went: its history goes too.
        let only_web =
            BTreeMap::from([("a1".to_string(), ("web".to_string(), counters(40, 9, 4)))]);
        history.record(start + Duration::from_secs(3), 103, only_web);
        assert!(!history.since(0).apps.contains_key("db"));
        let cluster = apps_of_cluster([history.since(0), history.since(0)].iter());
        assert_eq!(cluster["web"].len(), 2);
        assert_eq!(cluster["web"][1].rx_packets, 20.0, "two nodes summed");
    }
}
