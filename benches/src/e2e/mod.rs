//! Tier 3: end to end across an overlay between two "nodes", container namespace to container
//! namespace, with iperf3 (server in container B, client in container A, `iperf3 -J`).
//!
//! Every configuration is built from scratch in namespaces this harness creates and deletes
//! (`hmbench-<pid>-e2e-{na,nb,ca,cb}`); no address or route touches the root namespace.
//!
//! ```text
//!  ca 10.244.1.2 ── hm0 10.244.1.1 [na] 192.168.77.1 ══ underlay veth ══
//!  ══ 192.168.77.2 [nb] hm0 10.244.2.1 ── cb 10.244.2.2 (iperf3 server)
//! ```
//!
//! Configurations: plain routing over the underlay (no encapsulation, the ceiling); the
//! kernel's own overlay (a non-external vxlan device routed the way flannel's vxlan backend
//! does it: /32 address, onlink route, permanent neighbour, `bridge fdb`); that overlay plus
//! the allow-policy as a linear iptables FORWARD chain or as an nftables verdict map; Hivemind
//! (the eBPF data plane wired as `hivemind/tests/overlay.rs` does) without and with policy.

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result, bail};
use hivemind::dataplane::UnderlayProgram;

mod http;
mod iperf;
mod rr;
mod topology;

use http::{HttpServer, IngressProxy};
use iperf::{Server, iperf, perf_profiles, tcp_gbits, tx_stats, udp_pps, udp_profile};
use rr::{RrServer, tcp_crr, tcp_rr};
use topology::{Topology, hivemind_services, vip};

use crate::report::{Row, Target, number};

const SECTION: &str =
    "End to end across the overlay (iperf3, container to container or through a VIP)";
const MTU: &str = "1450";
const PORT: &str = "5201";
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const HOST_IF: &str = "hmc0";
/// Seconds of each TCP_RR and TCP_CRR run (at most the iperf3 runs' length).
const RATE_SECONDS: u32 = 2;
/// Endpoint id of container B in Hivemind's data plane on node B.
const ENDPOINT_B: u32 = 202;
const ENDPOINT_A: u32 = 102;

pub struct Config {
    /// Seconds per iperf3 run.
    pub seconds: u32,
    /// Rounds over every configuration; each figure is the median of its rounds.
    pub rounds: usize,
    /// Policy sizes measured (iptables, nftables, Hivemind).
    pub rules: Vec<usize>,
    /// Only HTTP through the ingress and its baseline (`--only ingress`).
    pub http_only: bool,
}

/// The three figures of one configuration; `None` where the run failed.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    tcp1: Option<f64>,
    tcp4: Option<f64>,
    udp_pps: Option<f64>,
    /// Mean bytes per packet node A's underlay veth sent during the single TCP stream (a
    /// GSO/TSO super-packet counts once, so more than the MTU means segmentation is deferred).
    tcp1_frame: Option<f64>,
    /// CPU time (both CPUs, busy = not idle or iowait) per gigabyte received during the single
    /// TCP stream, seconds.
    tcp1_cpu_per_gb: Option<f64>,
    /// Softnet `time_squeeze` events (both CPUs) during the single TCP stream.
    tcp1_squeeze: Option<f64>,
    /// TCP_RR: transactions per second.
    rr: Option<f64>,
    /// TCP_CRR: connections per second.
    crr: Option<f64>,
    /// HTTP/1.1 requests per second on one kept-alive connection (1-byte answers).
    http_rps: Option<f64>,
    /// HTTP/1.1 `GET` of 1 MiB answers on one kept-alive connection, Gbit/s.
    http_gbits: Option<f64>,
}

impl Figures {
    /// Field by field, the median of the rounds that measured it.
    fn median(rounds: &[Figures]) -> Figures {
        let pick = |field: fn(&Figures) -> Option<f64>| {
            let mut values: Vec<f64> = rounds.iter().filter_map(field).collect();
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied()
        };
        Figures {
            tcp1: pick(|f| f.tcp1),
            tcp4: pick(|f| f.tcp4),
            udp_pps: pick(|f| f.udp_pps),
            tcp1_frame: pick(|f| f.tcp1_frame),
            tcp1_cpu_per_gb: pick(|f| f.tcp1_cpu_per_gb),
            tcp1_squeeze: pick(|f| f.tcp1_squeeze),
            rr: pick(|f| f.rr),
            crr: pick(|f| f.crr),
            http_rps: pick(|f| f.http_rps),
            http_gbits: pick(|f| f.http_gbits),
        }
    }

    /// "median (min–max of n)" of one field over the rounds, scaled by `scale`.
    fn spread(rounds: &[Figures], field: fn(&Figures) -> Option<f64>, scale: f64) -> String {
        let mut values: Vec<f64> = rounds.iter().filter_map(field).map(|v| v * scale).collect();
        values.sort_by(f64::total_cmp);
        match (values.first(), values.get(values.len() / 2), values.last()) {
            (Some(lo), Some(mid), Some(hi)) => format!(
                "{} ({}–{} over {})",
                number(*mid),
                number(*lo),
                number(*hi),
                values.len()
            ),
            _ => "—".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Plain,
    Kernel,
    Iptables(usize),
    Nftables(usize),
    Hivemind(usize),
    /// Hivemind without policy, its underlay validation forced into XDP.
    HivemindXdp,
    /// Hivemind without policy, host routing off: the kernel's bridge and IP forwarding
    /// between the programs, as before host routing.
    HivemindKernelPath,
    /// Kernel overlay, the client going through a service VIP that node A DNATs as
    /// kube-proxy's iptables mode does; `n` services.
    IptablesVip(usize),
    /// The same with kube-proxy's nftables mode (a verdict map to per-service chains).
    NftablesVip(usize),
    /// Hivemind, the client going through a service VIP; `n` services; load balancing at the
    /// socket for the client's namespace, as the daemon does by default.
    HivemindVip(usize),
    /// The same with the socket programs off: every packet translated on its way.
    HivemindVipPerPacket(usize),
    /// Kernel overlay, node B's own namespace (outside node A's containers) reaching
    /// container A through node A's address and a kube-proxy iptables NodePort.
    IptablesPublished,
    /// The same through Hivemind's published port on node A.
    HivemindPublished,
    /// HTTP from node B's namespace to container A's server through node A's iptables NodePort
    /// DNAT (kernel overlay).
    IptablesHttp,
    /// The same through Hivemind's HTTP ingress on node A (Hivemind data plane).
    HivemindIngress,
}

impl Kind {
    fn label(self) -> String {
        match self {
            Self::Plain => "plain veth routing".into(),
            Self::Kernel => "kernel overlay".into(),
            Self::Iptables(n) => format!("kernel overlay + iptables {} rules", count(n)),
            Self::Nftables(n) => format!("kernel overlay + nftables {} rules", count(n)),
            Self::Hivemind(0) => "Hivemind, no policy".into(),
            Self::Hivemind(n) => format!("Hivemind + {} policy rules", count(n)),
            Self::HivemindXdp => "Hivemind, no policy, underlay in XDP".into(),
            Self::HivemindKernelPath => "Hivemind, no policy, host routing off".into(),
            Self::IptablesVip(n) => {
                format!("kernel overlay + iptables DNAT, {} services", count(n))
            }
            Self::NftablesVip(n) => {
                format!("kernel overlay + nftables DNAT, {} services", count(n))
            }
            Self::HivemindVip(n) => format!("Hivemind service VIP, {} services", count(n)),
            Self::HivemindVipPerPacket(n) => format!(
                "Hivemind service VIP, {} services, socket load balancing off",
                count(n)
            ),
            Self::IptablesPublished => "kernel overlay + iptables NodePort DNAT".into(),
            Self::HivemindPublished => "Hivemind published port".into(),
            Self::IptablesHttp => "HTTP via kernel overlay + iptables NodePort DNAT".into(),
            Self::HivemindIngress => "HTTP via Hivemind ingress".into(),
        }
    }

    /// Whether HTTP is measured (not iperf3 and the rates).
    fn http(self) -> bool {
        matches!(self, Self::IptablesHttp | Self::HivemindIngress)
    }

    /// Whether the client is outside the cluster (node B's namespace) and the server is
    /// container A, behind node A's published port.
    fn published(self) -> bool {
        matches!(self, Self::IptablesPublished | Self::HivemindPublished)
    }

    /// Whether container-to-container packets take host routing (the programs deliver and
    /// encapsulate them; neither node's kernel forwards them).
    fn host_routed(self) -> bool {
        matches!(
            self,
            Self::Hivemind(_)
                | Self::HivemindXdp
                | Self::HivemindVip(_)
                | Self::HivemindVipPerPacket(_)
        )
    }

    /// Whether the request/response and connection rates are measured: the configurations
    /// without policy, and the service VIPs (where they compare per-connection costs).
    fn measures_rates(self) -> bool {
        matches!(
            self,
            Self::Plain
                | Self::Kernel
                | Self::Hivemind(0)
                | Self::HivemindKernelPath
                | Self::IptablesVip(_)
                | Self::NftablesVip(_)
                | Self::HivemindVip(_)
                | Self::HivemindVipPerPacket(_)
                | Self::IptablesPublished
                | Self::HivemindPublished
        )
    }

    /// Where the client connects: the last service's VIP, or container B itself.
    fn target(self) -> Ipv4Addr {
        match self {
            Self::IptablesVip(n)
            | Self::NftablesVip(n)
            | Self::HivemindVip(n)
            | Self::HivemindVipPerPacket(n) => vip(n.saturating_sub(1)),
            Self::IptablesPublished | Self::HivemindPublished => topology::NODE_A,
            _ => SERVER,
        }
    }
}

/// One measured quantity and the targets its rows carry (a ratio Hivemind / baseline at least
/// this; `None`: information only).
struct Figure {
    what: &'static str,
    unit: &'static str,
    pick: fn(&Figures) -> Option<f64>,
    /// Hivemind against the kernel overlay.
    overlay_target: Option<f64>,
    /// Hivemind against plain veth routing.
    veth_target: Option<f64>,
    /// Hivemind's VIP at the largest service count (10,000 or more) against kube-proxy's
    /// iptables and nftables modes.
    vip_targets: (Option<f64>, Option<f64>),
    /// Hivemind's policy at the largest rule count against iptables and nftables.
    rules_targets: (Option<f64>, Option<f64>),
}

/// The figures and the issue's targets: across the overlay 1.10x the kernel's, TCP within 5% of
/// plain veth; at 10,000 rules 1.10x nftables (3x a linear iptables chain); at 10,000 services
/// a connection rate 1.5x kube-proxy's iptables mode and at least its nftables mode (a long
/// stream cannot show a DNAT chain's cost: iptables translates only the first packet).
const FIGURES: [Figure; 5] = [
    Figure {
        what: "TCP 1 stream",
        unit: "Gbit/s",
        pick: |f| f.tcp1,
        overlay_target: Some(1.1),
        veth_target: Some(0.95),
        vip_targets: (None, None),
        rules_targets: (Some(3.0), Some(1.1)),
    },
    Figure {
        what: "TCP 4 streams",
        unit: "Gbit/s",
        pick: |f| f.tcp4,
        overlay_target: Some(1.1),
        veth_target: Some(0.95),
        vip_targets: (None, None),
        rules_targets: (Some(3.0), Some(1.1)),
    },
    Figure {
        what: "UDP 64 B, received",
        unit: "kpps",
        pick: |f| f.udp_pps.map(|p| p / 1e3),
        overlay_target: Some(1.1),
        veth_target: None,
        vip_targets: (None, None),
        rules_targets: (Some(3.0), Some(1.1)),
    },
    Figure {
        what: "TCP_RR",
        unit: "trans/s",
        pick: |f| f.rr,
        overlay_target: None,
        veth_target: None,
        vip_targets: (None, None),
        rules_targets: (None, None),
    },
    Figure {
        what: "TCP_CRR",
        unit: "conn/s",
        pick: |f| f.crr,
        overlay_target: None,
        veth_target: None,
        vip_targets: (Some(1.5), Some(1.0)),
        rules_targets: (None, None),
    },
];

/// CPU time the machine spent busy (not idle, not in iowait) since boot, all CPUs, seconds.
fn busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().context("empty /proc/stat")?;
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap_or(0))
        .collect();
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((total - idle) as f64 / hz)
}

/// Softnet `time_squeeze` (the third column of /proc/net/softnet_stat, hexadecimal) summed over
/// CPUs: how often a NAPI poll ran out of budget or time with work left.
fn time_squeeze() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/net/softnet_stat")?;
    Ok(stat
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter_map(|v| u64::from_str_radix(v, 16).ok())
        .sum())
}

/// `n` with thousands separators (`number` prints small values with decimals).
fn count(n: usize) -> String {
    if n >= 1000 {
        number(n as f64)
    } else {
        n.to_string()
    }
}

/// Port of Hivemind's ingress on node A in the HTTP configuration.
const INGRESS_PORT: u16 = 8080;

/// HTTP from node B's namespace to container A: through iptables NodePort DNAT, or through
/// Hivemind's ingress on node A.
fn measure_http(prefix: &str, kind: Kind, seconds: u32) -> Result<Figures> {
    let topo = Topology::new(prefix)?;
    let port: u16 = PORT.parse()?;
    let mut _planes = Vec::new();
    let mut _proxy = None;
    let to = if kind == Kind::HivemindIngress {
        _planes = topo.hivemind(0, UnderlayProgram::Auto, true)?;
        let listen = std::net::SocketAddr::from((topology::NODE_A, INGRESS_PORT));
        _proxy = Some(IngressProxy::start(&topo.na, listen, CLIENT, port)?);
        listen
    } else {
        topo.kernel_overlay()?;
        topo.iptables_published()?;
        std::net::SocketAddr::from((topology::NODE_A, port))
    };
    let _server = HttpServer::start(&topo.ca, port)?;
    let (rps, gbits) = http::measure(&topo.nb, to, seconds)?;
    Ok(Figures {
        http_rps: Some(rps),
        http_gbits: Some(gbits),
        ..Figures::default()
    })
}

fn measure_config(prefix: &str, kind: Kind, seconds: u32) -> Result<Figures> {
    if kind.http() {
        return measure_http(prefix, kind, seconds);
    }
    let topo = Topology::new(prefix)?;
    let planes = match kind {
        Kind::Plain => {
            topo.plain()?;
            Vec::new()
        }
        Kind::Kernel => {
            topo.kernel_overlay()?;
            Vec::new()
        }
        Kind::Iptables(n) => {
            topo.kernel_overlay()?;
            topo.iptables(n)?;
            Vec::new()
        }
        Kind::Nftables(n) => {
            topo.kernel_overlay()?;
            topo.nftables(n)?;
            Vec::new()
        }
        Kind::Hivemind(n) => topo.hivemind(n, UnderlayProgram::Auto, true)?,
        Kind::HivemindXdp => topo.hivemind(0, UnderlayProgram::Xdp, true)?,
        Kind::HivemindKernelPath => topo.hivemind(0, UnderlayProgram::Auto, false)?,
        Kind::IptablesVip(n) => {
            topo.kernel_overlay()?;
            topo.iptables_dnat(n)?;
            Vec::new()
        }
        Kind::NftablesVip(n) => {
            topo.kernel_overlay()?;
            topo.nftables_dnat(n)?;
            Vec::new()
        }
        Kind::HivemindVip(n) => {
            let mut planes = topo.hivemind(0, UnderlayProgram::Auto, true)?;
            hivemind_services(&mut planes[0], n)?;
            topo.socket_lb(&mut planes[0])?;
            planes
        }
        Kind::HivemindVipPerPacket(n) => {
            let mut planes = topo.hivemind(0, UnderlayProgram::Auto, true)?;
            hivemind_services(&mut planes[0], n)?;
            planes
        }
        Kind::IptablesPublished => {
            topo.kernel_overlay()?;
            topo.iptables_published()?;
            Vec::new()
        }
        Kind::HivemindPublished => {
            let mut planes = topo.hivemind(0, UnderlayProgram::Auto, true)?;
            topology::hivemind_published(&mut planes[0])?;
            planes
        }
        Kind::IptablesHttp | Kind::HivemindIngress => bail!("HTTP is measured on its own"),
    };
    let target = kind.target();
    let (client_ns, server_ns) = if kind.published() {
        (&topo.nb, &topo.ca)
    } else {
        (&topo.ca, &topo.cb)
    };
    let server = Server::start(server_ns)?;
    let mut f = Figures::default();
    let mut errors = Vec::new();
    let before = tx_stats(&topo.na);
    let forwarded_before = forwarded(&topo)?;
    let host_before = (busy_seconds(), time_squeeze());
    match iperf(client_ns, target, seconds, &[]).and_then(|j| Ok((tcp_gbits(&j)?, j))) {
        Ok((v, json)) => {
            f.tcp1 = Some(v);
            if let (Ok((b0, p0)), Ok((b1, p1))) = (before, tx_stats(&topo.na))
                && p1 > p0
            {
                f.tcp1_frame = Some((b1 - b0) as f64 / (p1 - p0) as f64);
            }
            if let ((Ok(busy0), Ok(sq0)), Ok(busy1), Ok(sq1), Some(bytes)) = (
                host_before,
                busy_seconds(),
                time_squeeze(),
                json["end"]["sum_received"]["bytes"].as_f64(),
            ) && bytes > 0.0
            {
                f.tcp1_cpu_per_gb = Some((busy1 - busy0) / (bytes / 1e9));
                f.tcp1_squeeze = Some(sq1.saturating_sub(sq0) as f64);
            }
        }
        Err(e) => errors.push(format!("TCP 1 stream: {e:#}")),
    }
    // A host-routed configuration must have been measured on host routing, not on the
    // kernel's path it falls back to (an address the ipcache does not place, say): the
    // kernels forward next to nothing of a stream of hundreds of thousands of segments.
    let forwarded = forwarded(&topo)?.saturating_sub(forwarded_before);
    if kind.host_routed() && forwarded > HOST_ROUTED_LEAK {
        errors.push(format!(
            "host routing is on, but the kernels forwarded {forwarded} datagrams of the TCP \
             stream"
        ));
    }
    match iperf(client_ns, target, seconds, &["-P", "4"]).and_then(|j| tcp_gbits(&j)) {
        Ok(v) => f.tcp4 = Some(v),
        Err(e) => errors.push(format!("TCP 4 streams: {e:#}")),
    }
    match iperf(client_ns, target, seconds, &["-u", "-l", "64", "-b", "0"])
        .and_then(|j| udp_pps(&j))
    {
        Ok(v) => f.udp_pps = Some(v),
        Err(e) => errors.push(format!("UDP: {e:#}")),
    }
    if kind.measures_rates() {
        drop(server);
        let port: u16 = PORT.parse()?;
        let _rr_server = RrServer::start(server_ns, port)?;
        let to = std::net::SocketAddr::from((target, port));
        let rate_seconds = seconds.min(RATE_SECONDS);
        match tcp_rr(client_ns, to, rate_seconds) {
            Ok(v) => f.rr = Some(v),
            Err(e) => errors.push(format!("TCP_RR: {e:#}")),
        }
        match tcp_crr(client_ns, to, rate_seconds) {
            Ok(v) => f.crr = Some(v),
            Err(e) => errors.push(format!("TCP_CRR: {e:#}")),
        }
    }
    // The socket configuration must have been measured at the socket, not on the fallback.
    if let (Kind::HivemindVip(_), Some(plane)) = (kind, planes.first()) {
        let services = plane.service_counters()?;
        if services.socket_translated == 0 {
            errors.push(format!(
                "no connection was balanced at the socket: {services:?}"
            ));
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(f)
}

/// Datagrams both nodes' kernels may forward during a host-routed TCP stream (a stray
/// neighbour probe, say): far below the stream's own.
const HOST_ROUTED_LEAK: u64 = 100;

/// IPv4 datagrams both nodes' kernels forwarded so far.
fn forwarded(topo: &Topology) -> Result<u64> {
    Ok(topo.na.forwarded_datagrams()? + topo.nb.forwarded_datagrams()?)
}

pub fn run(prefix: &str, cfg: &Config, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    if cfg.http_only {
        return run_kinds(
            prefix,
            cfg,
            notes,
            vec![Kind::IptablesHttp, Kind::HivemindIngress],
        );
    }
    let mut kinds = vec![Kind::Plain, Kind::Kernel];
    kinds.extend(cfg.rules.iter().map(|&n| Kind::Iptables(n)));
    kinds.extend(cfg.rules.iter().map(|&n| Kind::Nftables(n)));
    kinds.push(Kind::Hivemind(0));
    kinds.push(Kind::HivemindXdp);
    kinds.push(Kind::HivemindKernelPath);
    kinds.extend(cfg.rules.iter().map(|&n| Kind::Hivemind(n)));
    kinds.extend(cfg.rules.iter().map(|&n| Kind::IptablesVip(n)));
    kinds.extend(cfg.rules.iter().map(|&n| Kind::NftablesVip(n)));
    kinds.extend(cfg.rules.iter().map(|&n| Kind::HivemindVip(n)));
    let largest = cfg.rules.iter().copied().max().unwrap_or(0);
    kinds.push(Kind::HivemindVipPerPacket(largest));
    kinds.push(Kind::IptablesPublished);
    kinds.push(Kind::HivemindPublished);
    kinds.push(Kind::IptablesHttp);
    kinds.push(Kind::HivemindIngress);
    run_kinds(prefix, cfg, notes, kinds)
}

fn run_kinds(
    prefix: &str,
    cfg: &Config,
    notes: &mut Vec<String>,
    kinds: Vec<Kind>,
) -> Result<Vec<Row>> {
    let largest = cfg.rules.iter().copied().max().unwrap_or(0);
    // Rounds go over every configuration in turn, so a slow spell of the machine hits all of
    // them alike rather than one configuration's every run.
    let mut measured: Vec<(Kind, Vec<Figures>)> = kinds.iter().map(|&k| (k, Vec::new())).collect();
    for round in 1..=cfg.rounds {
        for (kind, runs) in &mut measured {
            eprintln!(
                "bench: end to end, round {round}/{}: {}",
                cfg.rounds,
                kind.label()
            );
            match measure_config(prefix, *kind, cfg.seconds) {
                Ok(f) => runs.push(f),
                Err(e) => {
                    eprintln!("bench: end to end: {}: {e:#}", kind.label());
                    notes.push(format!(
                        "End to end, {}, round {round}: failed, figures missing: {e:#}",
                        kind.label()
                    ));
                }
            }
        }
    }
    if !cfg.http_only {
        match udp_profile(prefix, cfg.seconds) {
            Ok(note) => notes.push(note),
            Err(e) => notes.push(format!("End to end, UDP profile: failed: {e:#}")),
        }
        match perf_profiles(prefix, cfg.seconds) {
            Ok(note) => notes.push(note),
            Err(e) => notes.push(format!("End to end, CPU profiles: failed: {e:#}")),
        }
    }
    let mut results: Vec<(Kind, Figures)> = Vec::new();
    let mut raw = Vec::new();
    for (kind, runs) in measured {
        let f = Figures::median(&runs);
        let spread =
            |field: fn(&Figures) -> Option<f64>, scale: f64| Figures::spread(&runs, field, scale);
        if kind.http() {
            raw.push(format!(
                "{}: {} requests/s, 1 MiB GETs {} Gbit/s",
                kind.label(),
                spread(|f| f.http_rps, 1.0),
                spread(|f| f.http_gbits, 1.0),
            ));
            results.push((kind, f));
            continue;
        }
        let mut line = format!(
            "{}: TCP 1 stream {} Gbit/s (underlay A→B {} B per packet, {} CPU-s per GB, {} \
             time_squeeze), TCP 4 streams {} Gbit/s, UDP 64 B {} kpps",
            kind.label(),
            spread(|f| f.tcp1, 1.0),
            spread(|f| f.tcp1_frame, 1.0),
            spread(|f| f.tcp1_cpu_per_gb, 1.0),
            spread(|f| f.tcp1_squeeze, 1.0),
            spread(|f| f.tcp4, 1.0),
            spread(|f| f.udp_pps, 1e-3),
        );
        if kind.measures_rates() {
            line.push_str(&format!(
                ", TCP_RR {} /s, TCP_CRR {} /s",
                spread(|f| f.rr, 1.0),
                spread(|f| f.crr, 1.0)
            ));
        }
        raw.push(line);
        results.push((kind, f));
    }
    let get = |k: Kind| {
        results
            .iter()
            .find(|(x, _)| *x == k)
            .map(|(_, f)| *f)
            .unwrap_or_default()
    };
    let plain = get(Kind::Plain);
    let kernel = get(Kind::Kernel);
    let mut rows = Vec::new();
    for Figure {
        what,
        unit,
        pick,
        overlay_target,
        veth_target,
        vip_targets,
        rules_targets,
    } in FIGURES
    {
        let target = |t: Option<f64>| t.map_or(Target::None, Target::RatioAtLeast);
        let row = |name: String, value: Option<f64>, baseline: Option<f64>, base: &str, target| {
            value.map(|value| Row {
                section: SECTION,
                name,
                value,
                baseline,
                baseline_name: base.to_string(),
                unit,
                target,
            })
        };
        rows.extend(row(
            format!("{what}: kernel overlay (info) vs plain veth"),
            pick(&kernel),
            pick(&plain),
            "plain veth",
            Target::None,
        ));
        let hm = get(Kind::Hivemind(0));
        rows.extend(row(
            format!("{what}: Hivemind vs kernel overlay"),
            pick(&hm),
            pick(&kernel),
            "kernel overlay",
            target(overlay_target),
        ));
        rows.extend(row(
            format!("{what}: Hivemind host routing off (info) vs on (default)"),
            pick(&get(Kind::HivemindKernelPath)),
            pick(&hm),
            "host routing on",
            Target::None,
        ));
        rows.extend(row(
            format!("{what}: Hivemind underlay in XDP (info) vs default (TC on a veth)"),
            pick(&get(Kind::HivemindXdp)),
            pick(&hm),
            "Hivemind default",
            Target::None,
        ));
        rows.extend(row(
            format!("{what}: Hivemind vs plain veth ceiling"),
            pick(&hm),
            pick(&plain),
            "plain veth",
            target(veth_target),
        ));
        rows.extend(row(
            format!(
                "{what}: Hivemind VIP, {} services, per packet (socket LB off, info) vs at the \
                 socket",
                count(largest)
            ),
            pick(&get(Kind::HivemindVipPerPacket(largest))),
            pick(&get(Kind::HivemindVip(largest))),
            "socket load balancing",
            Target::None,
        ));
        rows.extend(row(
            format!("{what}: Hivemind published port vs iptables NodePort DNAT"),
            pick(&get(Kind::HivemindPublished)),
            pick(&get(Kind::IptablesPublished)),
            "kube-proxy iptables NodePort",
            Target::None,
        ));
        for &n in &cfg.rules {
            let hm = get(Kind::HivemindVip(n));
            let big = n == largest && n >= 10_000;
            let services = count(n);
            rows.extend(row(
                format!("{what}: Hivemind VIP, {services} services vs iptables DNAT"),
                pick(&hm),
                pick(&get(Kind::IptablesVip(n))),
                "kube-proxy iptables",
                if big {
                    target(vip_targets.0)
                } else {
                    Target::None
                },
            ));
            rows.extend(row(
                format!("{what}: Hivemind VIP, {services} services vs nftables DNAT"),
                pick(&hm),
                pick(&get(Kind::NftablesVip(n))),
                "kube-proxy nftables",
                if big {
                    target(vip_targets.1)
                } else {
                    Target::None
                },
            ));
        }
        for &n in &cfg.rules {
            let hm = get(Kind::Hivemind(n));
            let big = n == largest && n >= 10_000;
            let rules = count(n);
            rows.extend(row(
                format!("{what}: Hivemind {rules} rules vs iptables {rules} rules"),
                pick(&hm),
                pick(&get(Kind::Iptables(n))),
                "iptables",
                if big {
                    target(rules_targets.0)
                } else {
                    Target::None
                },
            ));
            rows.extend(row(
                format!("{what}: Hivemind {rules} rules vs nftables {rules} rules"),
                pick(&hm),
                pick(&get(Kind::Nftables(n))),
                "nftables",
                if big {
                    target(rules_targets.1)
                } else {
                    Target::None
                },
            ));
        }
    }

    let (ingress, nodeport) = (get(Kind::HivemindIngress), get(Kind::IptablesHttp));
    for (what, unit, pick) in [
        (
            "HTTP requests, 1 kept-alive connection",
            "requests/s",
            (|f: &Figures| f.http_rps) as fn(&Figures) -> Option<f64>,
        ),
        (
            "HTTP 1 MiB GETs, 1 kept-alive connection",
            "Gbit/s",
            |f: &Figures| f.http_gbits,
        ),
    ] {
        if let Some(value) = pick(&ingress) {
            rows.push(Row {
                section: SECTION,
                name: format!(
                    "{what}: Hivemind HTTP ingress (L7 proxy, info) vs iptables NodePort DNAT (L4)"
                ),
                value,
                baseline: pick(&nodeport),
                baseline_name: "kube-proxy iptables NodePort".to_string(),
                unit,
                target: Target::None,
            });
        }
    }
    if let (Some(hm), Some(xdp)) = (
        get(Kind::Hivemind(0)).tcp1_frame,
        get(Kind::HivemindXdp).tcp1_frame,
    ) {
        notes.push(format!(
            "End to end, the underlay hook: the underlays here are veths, so Hivemind's default \
             (`--underlay-program auto`) validates VXLAN at TC ingress (hm_tc_underlay). With \
             the validation in native XDP instead (hm_xdp_underlay), node A's underlay veth \
             sent {} bytes per packet during the single TCP stream against {} by default: the \
             veth driver turns GSO off on the peer of a veth that runs a native XDP program \
             (veth_xdp_set clears NETIF_F_GSO_SOFTWARE from the peer's features, with or \
             without multi-buffer support), so every MTU-sized segment is encapsulated and \
             crosses on its own. On a physical NIC there is no peer to slow down and `auto` \
             keeps XDP.",
            number(xdp),
            number(hm)
        ));
    }
    notes.push(format!(
        "End to end: {} rounds over all configurations, one iperf3 3 run per figure, \
         configuration and round, {} s each, the median of the rounds reported (`iperf3 -J -c \
         10.244.2.2 -t {}`; `-P 4` for 4 streams; `-u -l 64 -b 0` for UDP, reported as the \
         packets the receiver got per second: packets sent minus the server's lost count). \
         Server in container B's namespace, client in container A's; every configuration is \
         built from scratch in four fresh namespaces (two nodes joined by an underlay veth, \
         bridge hm0 with the /24 gateway, one container per node on a veth of MTU 1450 in every \
         configuration, ip_forward=1, rp_filter=2) and deleted after. Run-to-run spread on \
         this machine is large (tens of percent for single runs), hence the rounds; each raw \
         figure below reads \"median (lowest–highest over rounds)\". iperf3 runs with `-A 0,1` \
         (client on CPU 0, server on CPU 1). CPU-s per GB: the machine's busy time (all CPUs, \
         /proc/stat less idle and iowait) during the single TCP stream per gigabyte received; \
         time_squeeze: /proc/net/softnet_stat's third column summed over CPUs, during the same \
         run. TCP_RR and TCP_CRR ({RATE_SECONDS} s each, configurations without policy and the \
         service VIPs; netperf is not in Debian's main archive, so a client and server of the \
         harness's own, benches/src/e2e/rr.rs): RR is one connection exchanging one byte each \
         way per transaction, CRR is connect, one byte each way, close (with a reset, \
         SO_LINGER 0, so no TIME_WAIT runs the ports out; every configuration alike); client \
         pinned to CPU 0, server to CPU 1. \"underlay A→B per packet\" is the mean size of \
         what node A's underlay veth sent during the single TCP stream (a GSO super-packet counts once, so a figure far above the MTU \
         means segmentation is deferred past the veth; one near it means every segment \
         crossed on its own). The raw figures: {}.",
        cfg.rounds,
        cfg.seconds,
        cfg.seconds,
        raw.join("; ")
    ));
    notes.push(
        "End to end configurations: plain veth = each node routes the other's container /24 \
         via the other's underlay address (no encapsulation; the ceiling). Kernel overlay = \
         flannel's vxlan backend: a non-external vxlan device vx0 (VNI 1, UDP 4789, \
         nolearning, local = underlay address) with the node's x.x.x.0/32, an onlink route of \
         the peer /24 via the peer's .0, a permanent neighbour entry and a `bridge fdb` entry \
         to the peer's underlay address. iptables = that overlay plus, on node B, FORWARD \
         policy DROP and a linear chain (iptables-restore; the distribution's iptables-nft): \
         first `-s 10.244.2.2 -j ACCEPT` for the replies, then N-2 TCP/5201 rules from other \
         /32 sources, then the client's TCP and UDP rules last, so every forwarded packet to B \
         walks the whole chain (no ESTABLISHED shortcut). nftables = the same N rules as one \
         verdict map `ip saddr . meta l4proto . th dport vmap @allow` in a forward chain with \
         policy drop. Hivemind = hm-vxlan (external) as the daemon creates it, Dataplane::load \
         per node, attach_overlay(hm-vxlan, underlay, auto), set_tunnel to the peer, \
         set_node_config, attach_endpoint on each container's host veth, the ipcache as the \
         daemon writes it (both containers and gateways, the peer's placed on its underlay \
         address), host routing on (the default; each host-routed configuration fails if the \
         kernels forwarded more than 100 datagrams of its TCP stream); the N rules are \
         ingress CIDR rules (N-2 other /32s TCP/5201, the client's /32 TCP and UDP 5201) \
         through set_endpoint_policy on container B. Hivemind checks the rules once per flow \
         (its conntrack passes the rest), the iptables chain is walked by every packet. \
         Services: the client connects to the VIP of the last of N services (10.96.0.1 \
         upwards, port 5201, one backend each: container B). iptables DNAT = kube-proxy's \
         iptables mode on node A: PREROUTING -> KUBE-SERVICES (one rule per service port) -> \
         KUBE-SVC -> KUBE-SEP -> DNAT (no statistic match: one endpoint); nftables DNAT = \
         kube-proxy's nftables mode: a verdict map VIP . protocol . port -> a chain per service \
         that DNATs. Both translate the first packet of a connection and leave the rest to \
         conntrack, so N costs them per connection, not per packet. Hivemind = set_service \
         for N VIPs on node A with load balancing at the socket (the daemon's default): the \
         cgroup programs on the machine's cgroup2 root send container A's connect to a backend \
         once, and its packets cross untranslated; \"socket load balancing off\" = every \
         packet translated by hm_lxc_from_container on container A's veth, replies restored by \
         hm_overlay_ingress. Published ports: the client is node B's own namespace (outside \
         node A's containers) and connects to node A's underlay address 192.168.77.1:5201; \
         the server is container A. iptables NodePort = the kernel overlay plus kube-proxy's \
         iptables NodePort DNAT on node A (PREROUTING -d 192.168.77.1 -> KUBE-NODEPORTS -> \
         DNAT to container A, TCP and UDP; a local endpoint, so no SNAT), replies restored by \
         conntrack on the kernel's forwarding path. Hivemind = set_node_address, set_service on \
         the node address and set_published on node A, as the daemon writes `--publish \
         5201:5201`: DNAT in hm_tc_underlay, replies restored in hm_lxc_from_container and sent \
         out by bpf_fib_lookup and bpf_redirect."
            .into(),
    );
    notes.push(format!(
        "End to end, HTTP: the client is node B's own namespace and sends `GET /small` (a \
         1-byte answer) for {s} s, then `GET /big` (1 MiB) for {s} s, one request at a time on \
         one kept-alive HTTP/1.1 connection with `Host: {domain}`; the server is container A \
         (a threaded HTTP/1.1 server of the harness's own, benches/src/e2e/http.rs). iptables \
         NodePort = the kernel overlay plus the NodePort DNAT above (node A's address, port \
         5201): the kernel translates the connection, nothing reads the requests. Hivemind \
         ingress = the Hivemind data plane (as in \"Hivemind, no policy\") plus the daemon's \
         ingress code (`hivemind::ingress::Ingress`, the same the daemon serves on :80) on \
         node A at 192.168.77.1:{port} on a current-thread Tokio runtime, routing {domain} to \
         container A: it parses every request, adds X-Forwarded-*, and forwards it on a pooled \
         connection. An L7 proxy against an L4 translation: the ratio is the price of reading \
         HTTP, not a target.",
        s = cfg.seconds,
        domain = http::DOMAIN,
        port = INGRESS_PORT,
    ));
    notes.push(
        "End to end on this machine: with 2 cores, the iperf3 client and server compete with \
         the kernel (softirq, both nodes' forwarding and the VXLAN encapsulation all run on the \
         same CPUs), so these figures measure CPU cost per byte/packet more than link speed; \
         the UDP figure in particular is limited by the sender and receiver processes."
            .into(),
    );
    Ok(rows)
}
