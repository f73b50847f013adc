//! Turning the per-CPU `HM_METRICS` entries of one endpoint into [`EndpointCounters`].

use std::collections::BTreeMap;

use hivemind_common::{DIR_FROM_CONTAINER, DIR_TO_CONTAINER, MetricsKey, MetricsValue, reason};
use serde::Serialize;

/// Packets and bytes.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    fn add(&mut self, value: &MetricsValue) {
        self.packets = self.packets.saturating_add(value.packets);
        self.bytes = self.bytes.saturating_add(value.bytes);
    }
}

/// Everything the data plane counted for one endpoint since it was attached.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct EndpointCounters {
    /// Packets that left the container and were passed on.
    pub from_container: Counter,
    /// Packets that were delivered into the container.
    pub to_container: Counter,
    /// Dropped packets (both directions) by drop reason (`hivemind_common::reason`).
    pub drops: BTreeMap<u8, u64>,
}

impl EndpointCounters {
    /// Adds one entry of `HM_METRICS` (already summed over CPUs). Entries of other endpoints
    /// and of unknown directions are the caller's to filter out; unknown directions are ignored.
    pub(super) fn add(&mut self, key: &MetricsKey, value: &MetricsValue) {
        if reason::is_drop(key.reason) {
            let drops = self.drops.entry(key.reason).or_default();
            *drops = drops.saturating_add(value.packets);
            return;
        }
        match key.direction {
            DIR_FROM_CONTAINER => self.from_container.add(value),
            DIR_TO_CONTAINER => self.to_container.add(value),
            _ => {}
        }
    }
}

/// Sums the per-CPU values of one map entry.
pub(super) fn sum_cpus<'a>(values: impl IntoIterator<Item = &'a MetricsValue>) -> MetricsValue {
    values
        .into_iter()
        .fold(MetricsValue::default(), |acc, v| MetricsValue {
            packets: acc.packets.saturating_add(v.packets),
            bytes: acc.bytes.saturating_add(v.bytes),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(packets: u64, bytes: u64) -> MetricsValue {
        MetricsValue { packets, bytes }
    }

    #[test]
    fn sums_cpus() {
        let per_cpu = [value(1, 100), value(0, 0), value(2, 60)];
        assert_eq!(sum_cpus(&per_cpu), value(3, 160));
    }

    #[test]
    fn splits_directions_and_drops() {
        let mut counters = EndpointCounters::default();
        let from = MetricsKey::new(7, DIR_FROM_CONTAINER, reason::FORWARDED);
        let to = MetricsKey::new(7, DIR_TO_CONTAINER, reason::FORWARDED);
        let dropped = MetricsKey::new(7, DIR_TO_CONTAINER, 130);
        let dropped_other_dir = MetricsKey::new(7, DIR_FROM_CONTAINER, 130);
        counters.add(&from, &value(3, 300));
        counters.add(&to, &value(2, 200));
        counters.add(&dropped, &value(4, 400));
        counters.add(&dropped_other_dir, &value(1, 10));
        counters.add(&MetricsKey::new(7, 9, reason::FORWARDED), &value(50, 50));
        assert_eq!(
            counters,
            EndpointCounters {
                from_container: Counter {
                    packets: 3,
                    bytes: 300
                },
                to_container: Counter {
                    packets: 2,
                    bytes: 200
                },
                drops: BTreeMap::from([(130, 5)]),
            }
        );
    }
}
