//! The flow events the kernel reports: numbered and timed as they arrive, the newest
//! `RECENT_FLOWS` kept for `GET /api/flows/recent`, handed to subscribers of `GET /api/flows`
//! in batches, and counted for the service map and `/metrics`.
//!
//! Numbers (`seq`) grow on each node, also across restarts (they start at the start time in
//! microseconds), so a client's cursor stays valid when a daemon restarts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Node, NodeError, lock};
use crate::contract::{FlowReasonView, FlowView};
use crate::dataplane::FlowEvent;
use crate::policy::NetworkPolicy;
use crate::state::{AppRecord, POLICIES};

/// Flow events each node keeps for `GET /api/flows/recent` (10 s at 1,000 new flows a second).
pub const RECENT_FLOWS: usize = 10_000;

/// One event as kept: its number on this node, its wall-clock time and the event.
#[derive(Debug, Clone)]
pub struct KeptFlow {
    pub seq: u64,
    pub time_ms: u64,
    pub event: FlowEvent,
}

/// Which events a query wants; every part given must match.
#[derive(Debug, Clone, Default)]
pub struct FlowFilter {
    /// From or to this app.
    pub app: Option<String>,
    pub from_app: Option<String>,
    pub to_app: Option<String>,
    /// From or to an address in this network.
    pub net: Option<(Ipv4Addr, u8)>,
    /// From or to this port.
    pub port: Option<u16>,
    pub proto: Option<u8>,
    /// `allowed` or `denied`.
    pub verdict: Option<&'static str>,
}

impl FlowFilter {
    /// Whether `kept` matches, its addresses named by `names` (no allocation: the daemon runs
    /// this over every kept event of a query).
    pub fn keeps(&self, kept: &KeptFlow, names: &FlowNames) -> bool {
        let e = &kept.event;
        let in_net = |ip: Ipv4Addr| {
            self.net.is_none_or(|(net, prefix)| {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(ip) & mask == u32::from(net) & mask
            })
        };
        if !(self.verdict.is_none_or(|v| v == e.verdict)
            && self.proto.is_none_or(|p| p == e.proto)
            && self.port.is_none_or(|p| p == e.dport || p == e.sport)
            && (in_net(e.src) || in_net(e.dst)))
        {
            return false;
        }
        if self.app.is_none() && self.from_app.is_none() && self.to_app.is_none() {
            return true;
        }
        let (src, dst) = (names.addresses.get(&e.src), names.addresses.get(&e.dst));
        let is = |want: &Option<String>, app: Option<&String>| {
            want.as_ref().is_none_or(|w| app == Some(w))
        };
        is(&self.from_app, src)
            && is(&self.to_app, dst)
            && (is(&self.app, src) || is(&self.app, dst))
    }
}

/// What presenting events needs: the names of the cluster's addresses (apps, nodes) and, per
/// app, the policies that select it for ingress and for egress.
#[derive(Debug, Default)]
pub struct FlowNames {
    node: String,
    addresses: BTreeMap<Ipv4Addr, String>,
    selecting: HashMap<(String, &'static str), String>,
}

impl FlowNames {
    /// `kept` as the API shows it.
    pub fn view(&self, kept: &KeptFlow) -> FlowView {
        let e = &kept.event;
        let src_app = self.addresses.get(&e.src).cloned();
        let dst_app = self.addresses.get(&e.dst).cloned();
        let policy = if e.reason.code == hivemind_common::reason::DROP_POLICY {
            let own = if e.direction == "ingress" {
                &dst_app
            } else {
                &src_app
            };
            own.as_ref()
                .and_then(|app| self.selecting.get(&(app.clone(), e.direction)).cloned())
        } else {
            None
        };
        FlowView {
            node: self.node.clone(),
            seq: kept.seq,
            time_ms: kept.time_ms,
            src: e.src,
            sport: e.sport,
            dst: e.dst,
            dport: e.dport,
            proto: e.proto,
            protocol: protocol_name(e.proto),
            direction: e.direction.to_string(),
            verdict: e.verdict.to_string(),
            reason: FlowReasonView {
                code: e.reason.code,
                name: e.reason.name.to_string(),
            },
            endpoint_id: e.endpoint_id,
            peer_identity: e.peer_identity,
            src_app,
            dst_app,
            policy,
        }
    }
}

/// `tcp`, `udp`, `icmp` or the number.
pub fn protocol_name(proto: u8) -> String {
    match proto {
        1 => "icmp".to_string(),
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        other => other.to_string(),
    }
}

/// The protocol number of `tcp`, `udp`, `icmp` or a number.
pub fn protocol_number(name: &str) -> Option<u8> {
    match name.to_ascii_lowercase().as_str() {
        "icmp" => Some(1),
        "tcp" => Some(6),
        "udp" => Some(17),
        other => other.parse().ok(),
    }
}

/// Milliseconds since the epoch of a `CLOCK_MONOTONIC` time in nanoseconds (what
/// `bpf_ktime_get_ns` gives).
pub fn wall_ms(monotonic_ns: u64) -> u64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    let now_ns = if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } == 0 {
        now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
    } else {
        monotonic_ns
    };
    now_ms.saturating_sub(now_ns.saturating_sub(monotonic_ns) / 1_000_000)
}

/// The first number of a daemon's events: its start time in microseconds.
pub(super) fn first_seq() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Node {
    /// Flow events as they arrive, a batch at a time.
    pub fn subscribe_flows(&self) -> tokio::sync::broadcast::Receiver<Arc<Vec<KeptFlow>>> {
        self.flows.subscribe()
    }

    /// What `FlowNames::view` needs, from the replicated state.
    pub fn flow_names(&self) -> FlowNames {
        let apps: Vec<AppRecord> = self.store.apps().unwrap_or_default();
        let policies: Vec<NetworkPolicy> = self.store.values(POLICIES).unwrap_or_default();
        let mut selecting = HashMap::new();
        for app in &apps {
            for (direction, rules_of) in [
                (
                    "ingress",
                    (|p: &NetworkPolicy| p.ingress_rules.is_some()) as fn(&_) -> bool,
                ),
                ("egress", |p: &NetworkPolicy| p.egress_rules.is_some()),
            ] {
                let names: Vec<&str> = policies
                    .iter()
                    .filter(|p| rules_of(p) && p.selector.matches(&app.spec.labels))
                    .map(|p| p.name.as_str())
                    .collect();
                if !names.is_empty() {
                    selecting.insert((app.spec.name.clone(), direction), names.join(", "));
                }
            }
        }
        FlowNames {
            node: self.name().to_string(),
            addresses: self.flow_map_names(),
            selecting,
        }
    }

    /// This node's kept events numbered above `after` that `filter` keeps: the newest `limit`
    /// of them (oldest first), how many matched, and the highest number kept.
    pub fn flows_after(
        &self,
        after: u64,
        filter: &FlowFilter,
        limit: usize,
    ) -> (Vec<FlowView>, u64, u64) {
        let names = self.flow_names();
        let recent = lock(&self.recent_flows);
        let last = recent.back().map_or(after, |k| k.seq.max(after));
        let mut shown = VecDeque::new();
        let mut matched = 0;
        for kept in recent.iter().rev().take_while(|k| k.seq > after) {
            if filter.keeps(kept, &names) {
                matched += 1;
                if shown.len() < limit {
                    shown.push_front(names.view(kept));
                }
            }
        }
        (shown.into(), matched, last)
    }

    /// Events the kernel could not hand over since the start.
    pub fn flows_lost(&self) -> u64 {
        self.flows_lost.load(Ordering::Relaxed)
    }

    /// Moves the kernel's flow events to subscribers and the recent buffer.
    pub fn pump_flows(&self) -> Result<(), NodeError> {
        let Some(dataplane) = &self.dataplane else {
            return Ok(());
        };
        let (events, lost) = lock(dataplane).drain_flows()?;
        self.flows_lost.store(lost, Ordering::Relaxed);
        if events.is_empty() {
            return Ok(());
        }
        self.count_flow_edges(&events);
        {
            let mut counts = lock(&self.flow_counts);
            for event in &events {
                *counts
                    .entry((event.verdict, event.direction, event.proto))
                    .or_default() += 1;
            }
        }
        let batch: Vec<KeptFlow> = events
            .into_iter()
            .map(|event| KeptFlow {
                seq: self.flow_seq.fetch_add(1, Ordering::Relaxed),
                time_ms: wall_ms(event.time_ns),
                event,
            })
            .collect();
        {
            let mut recent = lock(&self.recent_flows);
            recent.extend(batch.iter().cloned());
            let excess = recent.len().saturating_sub(RECENT_FLOWS);
            recent.drain(..excess);
        }
        if self.flows.receiver_count() > 0 {
            let _ = self.flows.send(Arc::new(batch));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::FlowReason;
    use hivemind_common::reason;

    fn kept(seq: u64, src: [u8; 4], dst: [u8; 4], dport: u16, code: u8) -> KeptFlow {
        let denied = reason::is_drop(code);
        KeptFlow {
            seq,
            time_ms: 1_000 + seq,
            event: FlowEvent {
                time_ns: 0,
                src: Ipv4Addr::from(src),
                dst: Ipv4Addr::from(dst),
                sport: 40000,
                dport,
                proto: 6,
                endpoint_id: 7,
                direction: "ingress",
                peer_identity: 0,
                verdict: if denied { "denied" } else { "allowed" },
                reason: FlowReason {
                    code,
                    name: reason::name(code),
                },
            },
        }
    }

    #[test]
    fn filters_match_names_cidr_port_and_verdict_and_denials_name_their_policy() {
        let (web, db, outside) = ([10, 244, 0, 2], [10, 244, 1, 3], [192, 0, 2, 1]);
        let names = FlowNames {
            node: "node-1".into(),
            addresses: BTreeMap::from([
                (Ipv4Addr::from(web), "web".to_string()),
                (Ipv4Addr::from(db), "db".to_string()),
            ]),
            selecting: HashMap::from([(("db".to_string(), "ingress"), "db-in, lockdown".into())]),
        };
        let flows = [
            kept(1, web, db, 5432, reason::DROP_POLICY),
            kept(2, web, db, 5432, reason::POLICY_ALLOWED),
            kept(3, outside, web, 80, reason::UNPOLICED),
        ];
        let shown = |filter: FlowFilter| -> Vec<u64> {
            flows
                .iter()
                .filter(|k| filter.keeps(k, &names))
                .map(|k| k.seq)
                .collect()
        };
        assert_eq!(shown(FlowFilter::default()), [1, 2, 3]);
        let app = |a: &str| Some(a.to_string());
        assert_eq!(
            shown(FlowFilter {
                app: app("web"),
                ..Default::default()
            }),
            [1, 2, 3]
        );
        assert_eq!(
            shown(FlowFilter {
                to_app: app("db"),
                ..Default::default()
            }),
            [1, 2]
        );
        assert_eq!(
            shown(FlowFilter {
                from_app: app("db"),
                ..Default::default()
            }),
            [0u64; 0]
        );
        assert_eq!(
            shown(FlowFilter {
                verdict: Some("denied"),
                ..Default::default()
            }),
            [1]
        );
        assert_eq!(
            shown(FlowFilter {
                net: Some((Ipv4Addr::new(192, 0, 2, 0), 24)),
                ..Default::default()
            }),
            [3]
        );
        assert_eq!(
            shown(FlowFilter {
                net: Some((Ipv4Addr::UNSPECIFIED, 0)),
                port: Some(80),
                ..Default::default()
            }),
            [3]
        );
        assert_eq!(
            shown(FlowFilter {
                proto: Some(17),
                ..Default::default()
            }),
            [0u64; 0]
        );

        let denied = names.view(&flows[0]);
        assert_eq!(denied.policy.as_deref(), Some("db-in, lockdown"));
        assert_eq!(
            (denied.src_app.as_deref(), denied.dst_app.as_deref()),
            (Some("web"), Some("db"))
        );
        assert_eq!(
            (denied.node.as_str(), denied.protocol.as_str()),
            ("node-1", "tcp")
        );
        let outsider = names.view(&flows[2]);
        assert_eq!((outsider.src_app, outsider.policy), (None, None));
        assert_eq!(outsider.reason.name, "no_policy");
    }
}
