//! `GET /metrics`: Prometheus metrics of this node, gathered at each scrape.
//!
//! Containers, as cAdvisor names them (labels `app`, `container`, `node`):
//! CPU and memory from the container's cgroup, network packets and bytes
//! from the eBPF counters. Then the data plane's drops by reason, the
//! overlay by peer node, flow events by verdict, the cluster's membership
//! and replication counters, the apps' replicas, and the API's requests.
//! A container's series go with the container: nothing is kept between
//! scrapes but the API's own histogram.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{ApiError, AppState};
use crate::metrics::{Labels, OPENMETRICS, TEXT, expose};
use crate::state::ContainerStatus;

type Counters = Family<Labels, Counter>;
type Seconds = Family<Labels, Counter<f64, AtomicU64>>;
type Gauges = Family<Labels, Gauge>;
type Ratios = Family<Labels, Gauge<f64, AtomicU64>>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Registers a family and hands it back to be filled.
fn family<
    M: prometheus_client::metrics::TypedMetric
        + prometheus_client::encoding::EncodeMetric
        + Default
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> Family<Labels, M> {
    let family = Family::<Labels, M>::default();
    registry.register(name, help, family.clone());
    family
}

/// The metrics of this node, in OpenMetrics when the scraper asks for it
/// (Prometheus does), else in the classic text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "nodes",
    responses((status = 200, description = "Prometheus metrics of this node", content_type = "text/plain", body = String))
)]
pub async fn serve(State(node): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let mut registry = Registry::default();
    let here = node.name().to_string();

    // Containers of this node.
    let cpu: Seconds = family(
        &mut registry,
        "container_cpu_usage_seconds",
        "CPU time the container's processes used",
    );
    let memory: Gauges = family(
        &mut registry,
        "container_memory_working_set_bytes",
        "Memory in use, less inactive file pages",
    );
    let rx_bytes: Counters = family(
        &mut registry,
        "container_network_receive_bytes",
        "Bytes delivered into the container (eBPF)",
    );
    let rx_packets: Counters = family(
        &mut registry,
        "container_network_receive_packets",
        "Packets delivered into the container (eBPF)",
    );
    let tx_bytes: Counters = family(
        &mut registry,
        "container_network_transmit_bytes",
        "Bytes the container sent that were passed on (eBPF)",
    );
    let tx_packets: Counters = family(
        &mut registry,
        "container_network_transmit_packets",
        "Packets the container sent that were passed on (eBPF)",
    );
    let rx_dropped: Counters = family(
        &mut registry,
        "container_network_receive_packets_dropped",
        "Packets on their way into the container the data plane dropped (eBPF)",
    );
    let tx_dropped: Counters = family(
        &mut registry,
        "container_network_transmit_packets_dropped",
        "Packets the container sent that the data plane dropped (eBPF)",
    );
    let container_drops: Counters = family(
        &mut registry,
        "hivemind_container_drops",
        "Packets of the container the data plane dropped, by reason",
    );
    let statuses: Gauges = family(
        &mut registry,
        "hivemind_containers",
        "Containers of this node by status",
    );
    let counters = node.counters();
    let mut by_status = std::collections::BTreeMap::new();
    for record in node.store().containers()? {
        *by_status.entry(record.status.as_str()).or_insert(0i64) += 1;
        if record.status != ContainerStatus::Running {
            continue;
        }
        let base = [
            ("app", record.app.as_str()),
            ("container", record.id.as_str()),
            ("node", here.as_str()),
        ];
        let of = labels(&base);
        if let Some(usage) = crate::runtime::cgroup::usage(&record.id) {
            cpu.get_or_create(&of).inc_by(usage.cpu_seconds);
            memory
                .get_or_create(&of)
                .set(usage.memory_working_set as i64);
        }
        if let Some(c) = counters.get(&record.id) {
            rx_bytes.get_or_create(&of).inc_by(c.to_container.bytes);
            rx_packets.get_or_create(&of).inc_by(c.to_container.packets);
            tx_bytes.get_or_create(&of).inc_by(c.from_container.bytes);
            tx_packets
                .get_or_create(&of)
                .inc_by(c.from_container.packets);
            rx_dropped.get_or_create(&of).inc_by(c.to_container_dropped);
            tx_dropped
                .get_or_create(&of)
                .inc_by(c.from_container_dropped);
            for (reason, count) in &c.drops {
                let mut with = base.to_vec();
                with.push(("reason", hivemind_common::reason::name(*reason)));
                container_drops.get_or_create(&labels(&with)).inc_by(*count);
            }
        }
    }
    for (status, count) in by_status {
        statuses
            .get_or_create(&labels(&[("node", &here), ("status", status)]))
            .set(count);
    }

    // The overlay, by peer node (underlay address).
    if let Some((overlay, _)) = node.overlay()? {
        let bytes: Counters = family(
            &mut registry,
            "hivemind_overlay_bytes",
            "Bytes of inner frames through the overlay, by peer node and direction",
        );
        let packets: Counters = family(
            &mut registry,
            "hivemind_overlay_packets",
            "Packets through the overlay, by peer node and direction",
        );
        let drops: Counters = family(
            &mut registry,
            "hivemind_overlay_drops",
            "Packets the overlay programs dropped, by reason",
        );
        for (direction, peers) in [
            ("sent", &overlay.sent_by_node),
            ("received", &overlay.received_by_node),
        ] {
            for (peer, counter) in peers {
                let peer = peer.to_string();
                let of = labels(&[("node", &here), ("peer", &peer), ("direction", direction)]);
                bytes.get_or_create(&of).inc_by(counter.bytes);
                packets.get_or_create(&of).inc_by(counter.packets);
            }
        }
        for (reason, count) in &overlay.drops {
            let of = labels(&[
                ("node", &here),
                ("reason", hivemind_common::reason::name(*reason)),
            ]);
            drops.get_or_create(&of).inc_by(*count);
        }
    }

    // How full the data plane's maps are.
    let pressure = node.map_pressure();
    if !pressure.is_empty() {
        let entries: Gauges = family(
            &mut registry,
            "hivemind_bpf_map_entries",
            "Entries in a data-plane map",
        );
        let capacity: Gauges = family(
            &mut registry,
            "hivemind_bpf_map_capacity",
            "Entries a data-plane map holds at most (a full map refuses new entries; an LRU \
             map, HM_CT, evicts the oldest)",
        );
        let ratio: Ratios = family(
            &mut registry,
            "hivemind_bpf_map_pressure",
            "Entries of a data-plane map over its capacity (1 is full)",
        );
        for map in pressure {
            let of = labels(&[("node", &here), ("map", map.map)]);
            entries
                .get_or_create(&of)
                .set(i64::try_from(map.entries).unwrap_or(i64::MAX));
            capacity.get_or_create(&of).set(i64::from(map.capacity));
            ratio
                .get_or_create(&of)
                .set(map.entries as f64 / f64::from(map.capacity.max(1)));
        }
    }

    // Service load balancing: where connections were sent to a backend.
    if let Some(services) = node.service_counters()? {
        let connections: Counters = family(
            &mut registry,
            "hivemind_service_connections",
            "New connections to a service VIP sent to a backend, by where: at the socket \
             (connect or send, no per-packet translation) or per packet",
        );
        let per_packet = services
            .new_connections
            .saturating_sub(services.socket_translated);
        for (path, count) in [
            ("socket", services.socket_translated),
            ("packet", per_packet),
        ] {
            connections
                .get_or_create(&labels(&[("node", &here), ("path", path)]))
                .inc_by(count);
        }
        let translated: Counters = family(
            &mut registry,
            "hivemind_service_translated_packets",
            "Packets whose destination (to a VIP) or source (replies) the per-packet load \
             balancer rewrote",
        );
        for (direction, counter) in [
            ("to_backend", &services.translated),
            ("reply", &services.reverse_translated),
        ] {
            translated
                .get_or_create(&labels(&[("node", &here), ("direction", direction)]))
                .inc_by(counter.packets);
        }
    }

    // Egress NAT.
    if let Some((_, (mappings, _), nat)) = node.masquerade() {
        let packets: Counters = family(
            &mut registry,
            "hivemind_nat_packets",
            "Packets egress NAT translated: out (source set to the node) and in (replies \
             given back to the container)",
        );
        for (direction, count) in [("out", nat.masqueraded), ("in", nat.reversed)] {
            packets
                .get_or_create(&labels(&[("node", &here), ("direction", direction)]))
                .inc_by(count);
        }
        let active: Gauges = family(
            &mut registry,
            "hivemind_nat_mappings",
            "Egress NAT mappings (flows) in use",
        );
        active
            .get_or_create(&labels(&[("node", &here)]))
            .set(i64::try_from(mappings).unwrap_or(i64::MAX));
        let drops: Counters = family(
            &mut registry,
            "hivemind_nat_drops",
            "Packets egress NAT dropped, by reason",
        );
        for (why, count) in &nat.drops {
            let of = labels(&[
                ("node", &here),
                ("reason", hivemind_common::reason::name(*why)),
            ]);
            drops.get_or_create(&of).inc_by(*count);
        }
    }

    // Flow events.
    let flows: Counters = family(
        &mut registry,
        "hivemind_flows_processed",
        "Flow events (new flows a policy decided), by verdict, direction and protocol",
    );
    let (counts, lost) = node.flow_counts();
    for ((verdict, direction, proto), count) in counts {
        let proto = crate::node::protocol_name(proto);
        let of = labels(&[
            ("node", &here),
            ("verdict", verdict),
            ("direction", direction),
            ("protocol", &proto),
        ]);
        flows.get_or_create(&of).inc_by(count);
    }
    let flows_lost: Counters = family(
        &mut registry,
        "hivemind_flows_lost",
        "Flow events the kernel could not hand over (ring buffer full)",
    );
    flows_lost
        .get_or_create(&labels(&[("node", &here)]))
        .inc_by(lost);

    // Apps, cluster-wide.
    let desired: Gauges = family(
        &mut registry,
        "hivemind_app_replicas_desired",
        "Replicas an app asks for",
    );
    let ready: Gauges = family(
        &mut registry,
        "hivemind_app_replicas_ready",
        "Replicas of an app's current generation that serve, cluster-wide",
    );
    let replicas = node.replica_counts()?;
    for app in node.store().apps()? {
        let of = labels(&[("app", &app.spec.name)]);
        desired.get_or_create(&of).set(i64::from(app.spec.replicas));
        let count = replicas.get(&app.spec.name).map_or(0, |r| r.ready);
        ready.get_or_create(&of).set(i64::from(count));
    }

    // The cluster.
    if let Some(cluster) = node.cluster() {
        let members: Gauges = family(
            &mut registry,
            "hivemind_cluster_member_up",
            "1 when this node sees the member alive or suspect, by member and state",
        );
        for member in cluster.members() {
            let state = format!("{:?}", member.state).to_lowercase();
            let of = labels(&[("node", &here), ("member", &member.id), ("state", &state)]);
            members
                .get_or_create(&of)
                .set(i64::from(member.state.is_live()));
        }
        for (name, help, value) in [
            (
                "hivemind_cluster_bad_frames",
                "Gossip datagrams dropped (not sealed with a cluster key, malformed)",
                cluster.bad_frames(),
            ),
            (
                "hivemind_cluster_rejected_records",
                "Records from peers refused on their own (rules, signatures)",
                cluster.rejected_records(),
            ),
            (
                "hivemind_cluster_purged_tombstones",
                "Deletion markers purged once every live member had them",
                cluster.purged_tombstones(),
            ),
        ] {
            let counter: Counters = family(&mut registry, name, help);
            counter
                .get_or_create(&labels(&[("node", &here)]))
                .inc_by(value);
        }
    }

    node.api_stats().register(&mut registry);
    node.ingress().stats().register(&mut registry);
    crate::shipping::stats().register(&mut registry);
    let body = expose(&registry, openmetrics).map_err(|e| ApiError::internal(e.to_string()))?;
    let content_type = if openmetrics { OPENMETRICS } else { TEXT };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// Counts every routed request with its status and latency, in a span named by its method and
/// route (what a deploy does happens inside it; see `telemetry`).
pub async fn measure(State(node): State<AppState>, request: Request, next: Next) -> Response {
    use tracing::Instrument as _;
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    node.api_stats().observe(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
