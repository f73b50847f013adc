//! Turning the per-CPU `HM_METRICS` entries into [`EndpointCounters`] (one endpoint) and
//! [`OverlayCounters`] (the node's overlay).

use std::{collections::BTreeMap, net::Ipv4Addr};

use hivemind_common::{
    DIR_FROM_CONTAINER, DIR_FROM_OVERLAY, DIR_SERVICE, DIR_TO_CONTAINER, DIR_TO_OVERLAY,
    DIR_UNDERLAY, MetricsKey, MetricsValue, reason,
};
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
    /// Dropped packets the container sent, every reason together.
    pub from_container_dropped: u64,
    /// Dropped packets on their way into the container, every reason together.
    pub to_container_dropped: u64,
    /// TCP segments with RST the container sent (also counted in `from_container`).
    pub tcp_resets_sent: u64,
    /// TCP SYNs delivered into the container, and the SYN-ACKs it sent (also counted in
    /// `to_container` and `from_container`).
    pub tcp_syns_received: u64,
    pub tcp_synacks_sent: u64,
}

impl EndpointCounters {
    /// Adds one entry of `HM_METRICS` (already summed over CPUs). Entries of other endpoints
    /// and of unknown directions are the caller's to filter out; unknown directions are ignored.
    pub(super) fn add(&mut self, key: &MetricsKey, value: &MetricsValue) {
        if !is_endpoint_direction(key.direction) {
            return;
        }
        if reason::is_drop(key.reason) {
            let drops = self.drops.entry(key.reason).or_default();
            *drops = drops.saturating_add(value.packets);
            let direction = if key.direction == DIR_FROM_CONTAINER {
                &mut self.from_container_dropped
            } else {
                &mut self.to_container_dropped
            };
            *direction = direction.saturating_add(value.packets);
            return;
        }
        let event = match key.reason {
            reason::TCP_RESET_SENT => &mut self.tcp_resets_sent,
            reason::TCP_SYN_RECEIVED => &mut self.tcp_syns_received,
            reason::TCP_SYNACK_SENT => &mut self.tcp_synacks_sent,
            _ => match key.direction {
                DIR_FROM_CONTAINER => return self.from_container.add(value),
                DIR_TO_CONTAINER => return self.to_container.add(value),
                _ => return,
            },
        };
        *event = event.saturating_add(value.packets);
    }

    /// SYNs the container answered with neither a SYN-ACK nor a reset: their clients timed out
    /// (a retransmitted SYN counts again).
    pub fn unanswered_syns(&self) -> u64 {
        self.tcp_syns_received
            .saturating_sub(self.tcp_synacks_sent)
            .saturating_sub(self.tcp_resets_sent)
    }
}

/// Whether `direction` is one of a container endpoint's (its entries are keyed by endpoint id;
/// the overlay's are keyed by node address and must not be mixed in).
pub(super) fn is_endpoint_direction(direction: u8) -> bool {
    matches!(direction, DIR_FROM_CONTAINER | DIR_TO_CONTAINER)
}

/// Whether `direction` is one of the overlay's.
pub(super) fn is_overlay_direction(direction: u8) -> bool {
    matches!(direction, DIR_TO_OVERLAY | DIR_FROM_OVERLAY | DIR_UNDERLAY)
}

/// Everything the overlay programs of this node counted since the data plane was loaded.
///
/// A "packet" is one skb as the program saw it: a GSO super-packet the VXLAN driver later
/// splits into several datagrams counts once (with all its bytes) in `sent`/`received`, while
/// `underlay_vxlan` (XDP, before GRO) counts wire frames.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct OverlayCounters {
    /// Packets handed to the VXLAN device for encapsulation (`hm_overlay_egress`), inner frame
    /// sizes, all remote nodes together.
    pub sent: Counter,
    /// Decapsulated packets accepted from the VXLAN device (`hm_overlay_ingress`), inner frame
    /// sizes.
    pub received: Counter,
    /// VXLAN packets that passed validation on the underlay interface (`hm_xdp_underlay`),
    /// outer frame sizes.
    pub underlay_vxlan: Counter,
    /// `sent`, by the destination node's underlay address.
    pub sent_by_node: BTreeMap<Ipv4Addr, Counter>,
    /// `received`, by the source node's underlay address.
    pub received_by_node: BTreeMap<Ipv4Addr, Counter>,
    /// Dropped packets of the three programs, by drop reason (`hivemind_common::reason`).
    pub drops: BTreeMap<u8, u64>,
}

impl OverlayCounters {
    /// Adds one entry of `HM_METRICS` (already summed over CPUs); entries of other directions
    /// are ignored.
    pub(super) fn add(&mut self, key: &MetricsKey, value: &MetricsValue) {
        if !is_overlay_direction(key.direction) {
            return;
        }
        if reason::is_drop(key.reason) {
            let drops = self.drops.entry(key.reason).or_default();
            *drops = drops.saturating_add(value.packets);
            return;
        }
        let node = Ipv4Addr::from(key.endpoint_id);
        match key.direction {
            DIR_TO_OVERLAY => {
                self.sent.add(value);
                self.sent_by_node.entry(node).or_default().add(value);
            }
            DIR_FROM_OVERLAY => {
                self.received.add(value);
                self.received_by_node.entry(node).or_default().add(value);
            }
            _ => self.underlay_vxlan.add(value),
        }
    }
}

/// What the service load balancer did since the data plane was loaded, every endpoint and the
/// overlay together.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ServiceCounters {
    /// Packets to a VIP:port whose destination was rewritten to a backend.
    pub translated: Counter,
    /// Replies whose source was restored to the VIP:port.
    pub reverse_translated: Counter,
    /// New connections (a backend picked, conntrack entries created).
    pub new_connections: u64,
    /// Connects (and datagrams) sent to a backend by the socket programs; their packets are
    /// not translated (they are not in `translated`), and each is also a new connection.
    pub socket_translated: u64,
    /// Packets to a service without a usable backend (`reason::DROP_NO_BACKEND`).
    pub no_backend_drops: u64,
    /// Every service drop by reason (`DROP_NO_BACKEND`, `DROP_CT_FULL`, `DROP_CT_BUDGET`,
    /// `DROP_SERVICE_UNSUPPORTED`), whichever program dropped.
    pub drops: BTreeMap<u8, u64>,
}

impl ServiceCounters {
    /// Adds one entry of `HM_METRICS` (already summed over CPUs); entries that are neither
    /// service translations nor service drops are ignored.
    pub(super) fn add(&mut self, key: &MetricsKey, value: &MetricsValue) {
        if is_service_drop(key.reason) {
            let drops = self.drops.entry(key.reason).or_default();
            *drops = drops.saturating_add(value.packets);
            if key.reason == reason::DROP_NO_BACKEND {
                self.no_backend_drops = self.no_backend_drops.saturating_add(value.packets);
            }
            return;
        }
        if key.direction != DIR_SERVICE {
            return;
        }
        match key.reason {
            reason::SERVICE_TRANSLATED => self.translated.add(value),
            reason::SERVICE_REVERSE_TRANSLATED => self.reverse_translated.add(value),
            reason::SERVICE_NEW_CONNECTION => {
                self.new_connections = self.new_connections.saturating_add(value.packets);
            }
            reason::SERVICE_SOCKET_TRANSLATED => {
                self.socket_translated = self.socket_translated.saturating_add(value.packets);
            }
            _ => {}
        }
    }
}

/// Whether `code` is a drop reason of the load balancer.
fn is_service_drop(code: u8) -> bool {
    matches!(
        code,
        reason::DROP_NO_BACKEND
            | reason::DROP_CT_FULL
            | reason::DROP_CT_BUDGET
            | reason::DROP_SERVICE_UNSUPPORTED
    )
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
        // Resets the container sent are counted apart (they are in FORWARDED already).
        counters.add(
            &MetricsKey::new(7, DIR_FROM_CONTAINER, reason::TCP_RESET_SENT),
            &value(2, 0),
        );
        counters.add(
            &MetricsKey::new(7, DIR_TO_CONTAINER, reason::TCP_SYN_RECEIVED),
            &value(9, 0),
        );
        counters.add(
            &MetricsKey::new(7, DIR_FROM_CONTAINER, reason::TCP_SYNACK_SENT),
            &value(4, 0),
        );
        counters.add(&MetricsKey::new(7, 9, reason::FORWARDED), &value(50, 50));
        // Overlay entries are keyed by node, not endpoint: never mixed in.
        counters.add(&MetricsKey::new(7, DIR_TO_OVERLAY, 130), &value(8, 8));
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
                from_container_dropped: 1,
                to_container_dropped: 4,
                tcp_resets_sent: 2,
                tcp_syns_received: 9,
                tcp_synacks_sent: 4,
            }
        );
        // 9 SYNs: 4 accepted, 2 refused, 3 left to time out.
        assert_eq!(counters.unanswered_syns(), 3);
    }

    #[test]
    fn service_counters_take_translations_and_service_drops() {
        let mut c = ServiceCounters::default();
        c.add(
            &MetricsKey::new(7, DIR_SERVICE, reason::SERVICE_TRANSLATED),
            &value(3, 300),
        );
        c.add(
            &MetricsKey::new(0, DIR_SERVICE, reason::SERVICE_TRANSLATED),
            &value(1, 100),
        );
        c.add(
            &MetricsKey::new(7, DIR_SERVICE, reason::SERVICE_REVERSE_TRANSLATED),
            &value(2, 120),
        );
        c.add(
            &MetricsKey::new(7, DIR_SERVICE, reason::SERVICE_NEW_CONNECTION),
            &value(1, 60),
        );
        c.add(
            &MetricsKey::new(7, DIR_FROM_CONTAINER, reason::DROP_NO_BACKEND),
            &value(4, 240),
        );
        c.add(
            &MetricsKey::new(0, DIR_TO_OVERLAY, reason::DROP_NO_BACKEND),
            &value(1, 60),
        );
        c.add(
            &MetricsKey::new(7, DIR_FROM_CONTAINER, reason::DROP_SERVICE_UNSUPPORTED),
            &value(2, 80),
        );
        // Not the load balancer's.
        c.add(
            &MetricsKey::new(7, DIR_FROM_CONTAINER, reason::FORWARDED),
            &value(9, 900),
        );
        c.add(
            &MetricsKey::new(0, DIR_TO_OVERLAY, reason::DROP_NO_TUNNEL),
            &value(9, 900),
        );
        assert_eq!(
            c.translated,
            Counter {
                packets: 4,
                bytes: 400
            }
        );
        assert_eq!(c.reverse_translated.packets, 2);
        assert_eq!(c.new_connections, 1);
        assert_eq!(c.no_backend_drops, 5);
        assert_eq!(
            c.drops,
            BTreeMap::from([
                (reason::DROP_NO_BACKEND, 5),
                (reason::DROP_SERVICE_UNSUPPORTED, 2)
            ])
        );
        // Service entries never leak into an endpoint's counters.
        let mut e = EndpointCounters::default();
        e.add(
            &MetricsKey::new(7, DIR_SERVICE, reason::SERVICE_TRANSLATED),
            &value(3, 300),
        );
        assert_eq!(e, EndpointCounters::default());
    }

    #[test]
    fn overlay_splits_nodes_directions_and_drops() {
        let node_b = u32::from(Ipv4Addr::new(192, 168, 77, 2));
        let mut counters = OverlayCounters::default();
        counters.add(
            &MetricsKey::new(node_b, DIR_TO_OVERLAY, reason::FORWARDED),
            &value(3, 300),
        );
        counters.add(
            &MetricsKey::new(node_b, DIR_FROM_OVERLAY, reason::FORWARDED),
            &value(2, 200),
        );
        counters.add(
            &MetricsKey::new(0, DIR_UNDERLAY, reason::FORWARDED),
            &value(2, 300),
        );
        counters.add(
            &MetricsKey::new(0, DIR_TO_OVERLAY, reason::DROP_NO_TUNNEL),
            &value(4, 400),
        );
        counters.add(
            &MetricsKey::new(0, DIR_UNDERLAY, reason::DROP_MALFORMED_VXLAN),
            &value(1, 60),
        );
        // Container entries are not the overlay's.
        counters.add(
            &MetricsKey::new(0, DIR_FROM_CONTAINER, reason::DROP_NO_TUNNEL),
            &value(9, 9),
        );
        let b = Ipv4Addr::from(node_b);
        assert_eq!(
            counters.sent,
            Counter {
                packets: 3,
                bytes: 300
            }
        );
        assert_eq!(
            counters.received,
            Counter {
                packets: 2,
                bytes: 200
            }
        );
        assert_eq!(
            counters.underlay_vxlan,
            Counter {
                packets: 2,
                bytes: 300
            }
        );
        assert_eq!(counters.sent_by_node[&b], counters.sent);
        assert_eq!(counters.received_by_node[&b], counters.received);
        assert_eq!(
            counters.drops,
            BTreeMap::from([
                (reason::DROP_NO_TUNNEL, 4),
                (reason::DROP_MALFORMED_VXLAN, 1)
            ])
        );
        let json = serde_json::to_value(&counters).expect("serializes");
        assert_eq!(json["sent_by_node"]["192.168.77.2"]["packets"], 3);
        assert_eq!(json["drops"]["130"], 4);
    }
}
