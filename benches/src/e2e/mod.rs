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

use anyhow::{Result, bail};
use hivemind::dataplane::UnderlayProgram;

mod iperf;
mod topology;

use iperf::{Server, iperf, tcp_gbits, tx_stats, udp_perf, udp_pps, udp_profile};
use topology::{Topology, hivemind_services, vip};

use crate::report::{Row, Target, number};

const SECTION: &str =
    "End to end across the overlay (iperf3, container to container or through a VIP)";
const MTU: &str = "1450";
const PORT: &str = "5201";
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const HOST_IF: &str = "hmc0";
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
    /// Hivemind, the client going through a service VIP; `n` services.
    HivemindVip(usize),
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
        }
    }

    /// Where the client connects: the last service's VIP, or container B itself.
    fn target(self) -> Ipv4Addr {
        match self {
            Self::IptablesVip(n) | Self::NftablesVip(n) | Self::HivemindVip(n) => {
                vip(n.saturating_sub(1))
            }
            _ => SERVER,
        }
    }
}

/// `n` with thousands separators (`number` prints small values with decimals).
fn count(n: usize) -> String {
    if n >= 1000 {
        number(n as f64)
    } else {
        n.to_string()
    }
}

fn measure_config(prefix: &str, kind: Kind, seconds: u32) -> Result<Figures> {
    let topo = Topology::new(prefix)?;
    let _planes = match kind {
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
            planes
        }
    };
    let target = kind.target();
    let _server = Server::start(&topo.cb)?;
    let mut f = Figures::default();
    let mut errors = Vec::new();
    let before = tx_stats(&topo.na);
    match iperf(&topo.ca, target, seconds, &[]).and_then(|j| tcp_gbits(&j)) {
        Ok(v) => {
            f.tcp1 = Some(v);
            if let (Ok((b0, p0)), Ok((b1, p1))) = (before, tx_stats(&topo.na))
                && p1 > p0
            {
                f.tcp1_frame = Some((b1 - b0) as f64 / (p1 - p0) as f64);
            }
        }
        Err(e) => errors.push(format!("TCP 1 stream: {e:#}")),
    }
    match iperf(&topo.ca, target, seconds, &["-P", "4"]).and_then(|j| tcp_gbits(&j)) {
        Ok(v) => f.tcp4 = Some(v),
        Err(e) => errors.push(format!("TCP 4 streams: {e:#}")),
    }
    match iperf(&topo.ca, target, seconds, &["-u", "-l", "64", "-b", "0"]).and_then(|j| udp_pps(&j))
    {
        Ok(v) => f.udp_pps = Some(v),
        Err(e) => errors.push(format!("UDP: {e:#}")),
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(f)
}

pub fn run(prefix: &str, cfg: &Config, notes: &mut Vec<String>) -> Result<Vec<Row>> {
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
    match udp_profile(prefix, cfg.seconds) {
        Ok(note) => notes.push(note),
        Err(e) => notes.push(format!("End to end, UDP profile: failed: {e:#}")),
    }
    match udp_perf(prefix, cfg.seconds) {
        Ok(note) => notes.push(note),
        Err(e) => notes.push(format!("End to end, UDP CPU profile: failed: {e:#}")),
    }
    let mut results: Vec<(Kind, Figures)> = Vec::new();
    let mut raw = Vec::new();
    for (kind, runs) in measured {
        let f = Figures::median(&runs);
        let show = |v: Option<f64>, unit: &str| {
            v.map_or("—".into(), |v| format!("{} {unit}", number(v)))
        };
        raw.push(format!(
            "{}: TCP 1 stream {} (underlay A→B {} per packet), TCP 4 streams {}, UDP 64 B {}",
            kind.label(),
            show(f.tcp1, "Gbit/s"),
            show(f.tcp1_frame, "B"),
            show(f.tcp4, "Gbit/s"),
            show(f.udp_pps.map(|p| p / 1e3), "kpps")
        ));
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
    let largest = cfg.rules.iter().copied().max().unwrap_or(0);
    type Pick = fn(&Figures) -> Option<f64>;
    let figures: [(&str, &'static str, Pick, bool); 3] = [
        ("TCP 1 stream", "Gbit/s", |f| f.tcp1, true),
        ("TCP 4 streams", "Gbit/s", |f| f.tcp4, true),
        (
            "UDP 64 B, received",
            "kpps",
            |f| f.udp_pps.map(|p| p / 1e3),
            false,
        ),
    ];
    let mut rows = Vec::new();
    for (what, unit, pick, tcp) in figures {
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
            Target::RatioAtLeast(1.0),
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
            if tcp {
                Target::RatioAtLeast(0.85)
            } else {
                Target::None
            },
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
                    Target::RatioAtLeast(3.0)
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
                    Target::RatioAtLeast(1.0)
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
                    Target::RatioAtLeast(3.0)
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
                    Target::RatioAtLeast(1.0)
                } else {
                    Target::None
                },
            ));
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
         this machine is large (tens of percent for single runs), hence the rounds. \
         \"underlay A→B per packet\" is the mean size of what node A's underlay veth sent during \
         the single TCP stream (a GSO super-packet counts once, so a figure far above the MTU \
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
         set_node_config, attach_endpoint on each container's host veth; the N rules are \
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
         for N VIPs on node A; hm_lxc_from_container translates on container A's veth and \
         hm_lxc_to_container restores the VIP on replies."
            .into(),
    );
    notes.push(
        "End to end on this machine: with 2 cores, the iperf3 client and server compete with \
         the kernel (softirq, both nodes' forwarding and the VXLAN encapsulation all run on the \
         same CPUs), so these figures measure CPU cost per byte/packet more than link speed; \
         the UDP figure in particular is limited by the sender and receiver processes."
            .into(),
    );
    Ok(rows)
}
