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

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use hivemind::{
    dataplane::{Dataplane, ServiceBackend, UnderlayProgram},
    policy::{Allow, EndpointRules, PeerMatch, Protocol},
};
use hivemind_common::{IPPROTO_TCP, IPPROTO_UDP, OVERLAY_DEVICE, OVERLAY_MAC, VXLAN_PORT, vni};
use hivemind_tests::netns::{NetNs, run as run_cmd};

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

/// The four namespaces of one configuration; dropping them deletes every link and address.
struct Topology {
    na: NetNs,
    nb: NetNs,
    ca: NetNs,
    cb: NetNs,
}

fn ipn(ns: &NetNs, args: &[&str]) -> Result<()> {
    run_cmd(Command::new("ip").arg("-n").arg(&ns.name).args(args)).map(|_| ())
}

fn sysctl(ns: &NetNs, setting: &str) -> Result<()> {
    run_cmd(ns.command("sysctl").args(["-qw", setting])).map(|_| ())
}

impl Topology {
    /// Namespaces, underlay veth, bridge `hm0` with the gateway, one container per node.
    fn new(prefix: &str) -> Result<Self> {
        let t = Self {
            na: NetNs::create(&format!("{prefix}-na"))?,
            nb: NetNs::create(&format!("{prefix}-nb"))?,
            ca: NetNs::create(&format!("{prefix}-ca"))?,
            cb: NetNs::create(&format!("{prefix}-cb"))?,
        };
        ipn(
            &t.na,
            &[
                "link", "add", "underlay", "type", "veth", "peer", "name", "underlay", "netns",
                &t.nb.name,
            ],
        )?;
        for (i, node, ctr) in [(1u8, &t.na, &t.ca), (2, &t.nb, &t.cb)] {
            ipn(
                node,
                &[
                    "addr",
                    "add",
                    &format!("192.168.77.{i}/24"),
                    "dev",
                    "underlay",
                ],
            )?;
            ipn(node, &["link", "set", "underlay", "up"])?;
            ipn(node, &["link", "set", "lo", "up"])?;
            ipn(node, &["link", "add", "hm0", "type", "bridge"])?;
            ipn(
                node,
                &["addr", "add", &format!("10.244.{i}.1/24"), "dev", "hm0"],
            )?;
            ipn(node, &["link", "set", "hm0", "up"])?;
            ipn(
                node,
                &[
                    "link", "add", HOST_IF, "mtu", MTU, "type", "veth", "peer", "name", "eth0",
                    "mtu", MTU, "netns", &ctr.name,
                ],
            )?;
            ipn(node, &["link", "set", HOST_IF, "master", "hm0", "up"])?;
            ipn(
                ctr,
                &["addr", "add", &format!("10.244.{i}.2/24"), "dev", "eth0"],
            )?;
            ipn(ctr, &["link", "set", "eth0", "up"])?;
            ipn(ctr, &["link", "set", "lo", "up"])?;
            ipn(
                ctr,
                &["route", "add", "default", "via", &format!("10.244.{i}.1")],
            )?;
            sysctl(node, "net.ipv4.ip_forward=1")?;
            sysctl(node, "net.ipv4.conf.all.rp_filter=2")?;
        }
        Ok(t)
    }

    fn nodes(&self) -> [(u8, u8, &NetNs); 2] {
        [(1, 2, &self.na), (2, 1, &self.nb)]
    }

    /// (1) Each node routes the other's container subnet via the underlay veth.
    fn plain(&self) -> Result<()> {
        for (_, peer, node) in self.nodes() {
            ipn(
                node,
                &[
                    "route",
                    "add",
                    &format!("10.244.{peer}.0/24"),
                    "via",
                    &format!("192.168.77.{peer}"),
                    "dev",
                    "underlay",
                ],
            )?;
        }
        Ok(())
    }

    /// (2) The kernel's overlay as flannel's vxlan backend sets it up.
    fn kernel_overlay(&self) -> Result<()> {
        let mac = |i: u8| format!("02:00:0a:f4:{i:02x}:00");
        for (me, peer, node) in self.nodes() {
            let port = VXLAN_PORT.to_string();
            ipn(
                node,
                &[
                    "link",
                    "add",
                    "vx0",
                    "address",
                    &mac(me),
                    "mtu",
                    MTU,
                    "type",
                    "vxlan",
                    "id",
                    "1",
                    "local",
                    &format!("192.168.77.{me}"),
                    "dev",
                    "underlay",
                    "dstport",
                    &port,
                    "nolearning",
                ],
            )?;
            ipn(
                node,
                &["addr", "add", &format!("10.244.{me}.0/32"), "dev", "vx0"],
            )?;
            ipn(node, &["link", "set", "vx0", "up"])?;
            let peer_gw = format!("10.244.{peer}.0");
            ipn(
                node,
                &[
                    "route",
                    "add",
                    &format!("10.244.{peer}.0/24"),
                    "via",
                    &peer_gw,
                    "dev",
                    "vx0",
                    "onlink",
                ],
            )?;
            ipn(
                node,
                &[
                    "neigh",
                    "replace",
                    &peer_gw,
                    "lladdr",
                    &mac(peer),
                    "dev",
                    "vx0",
                    "nud",
                    "permanent",
                ],
            )?;
            run_cmd(node.command("bridge").args([
                "fdb",
                "append",
                &mac(peer),
                "dev",
                "vx0",
                "dst",
                &format!("192.168.77.{peer}"),
            ]))?;
        }
        Ok(())
    }

    /// (3) The allow-policy as a linear FORWARD chain on node B: replies from B first, then
    /// `n - 2` rules for other sources, then client TCP and UDP; everything else dropped.
    fn iptables(&self, n: usize) -> Result<()> {
        let mut text = String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n");
        text.push_str(":OUTPUT ACCEPT [0:0]\n");
        text.push_str(&format!("-A FORWARD -s {SERVER}/32 -j ACCEPT\n"));
        for i in 0..n.saturating_sub(2) {
            text.push_str(&format!(
                "-A FORWARD -s {}/32 -d {SERVER}/32 -p tcp --dport {PORT} -j ACCEPT\n",
                filler(i)
            ));
        }
        for proto in ["tcp", "udp"] {
            text.push_str(&format!(
                "-A FORWARD -s {CLIENT}/32 -d {SERVER}/32 -p {proto} --dport {PORT} -j ACCEPT\n"
            ));
        }
        text.push_str("COMMIT\n");
        pipe(&mut self.nb.command("iptables-restore"), &text)
    }

    /// (4) The same policy as one nftables verdict-map lookup (source . protocol . port).
    fn nftables(&self, n: usize) -> Result<()> {
        let mut elements: Vec<String> = (0..n.saturating_sub(2))
            .map(|i| format!("{} . tcp . {PORT} : accept", filler(i)))
            .collect();
        elements.push(format!("{CLIENT} . tcp . {PORT} : accept"));
        elements.push(format!("{CLIENT} . udp . {PORT} : accept"));
        let text = format!(
            "table ip hmbench {{\n  map allow {{\n    type ipv4_addr . inet_proto . inet_service \
             : verdict\n    elements = {{ {} }}\n  }}\n  chain forward {{\n    type filter \
             hook forward priority 0; policy drop;\n    ip saddr {SERVER} accept\n    ip daddr \
             {SERVER} ip saddr . meta l4proto . th dport vmap @allow\n  }}\n}}\n",
            elements.join(", ")
        );
        pipe(self.nb.command("nft").args(["-f", "-"]), &text)
    }

    /// (6) kube-proxy's iptables mode on node A for `n` services of one backend each (container
    /// B): PREROUTING jumps to KUBE-SERVICES, one rule per service port to its KUBE-SVC chain,
    /// which jumps to its KUBE-SEP chain, which DNATs. The measured service (the last) has a
    /// TCP and a UDP port, the others TCP. With one endpoint kube-proxy writes no statistic
    /// match (it does for several: `-m statistic --mode random --probability 1/k`).
    fn iptables_dnat(&self, n: usize) -> Result<()> {
        let mut text = String::from(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n",
        );
        let protos = |i: usize| {
            if i + 1 == n {
                &["tcp", "udp"][..]
            } else {
                &["tcp"][..]
            }
        };
        for i in 0..n {
            for proto in protos(i) {
                text.push_str(&format!(
                    ":KUBE-SVC-{i}-{proto} - [0:0]\n:KUBE-SEP-{i}-{proto} - [0:0]\n"
                ));
            }
        }
        text.push_str("-A PREROUTING -j KUBE-SERVICES\n");
        for i in 0..n {
            for proto in protos(i) {
                text.push_str(&format!(
                    "-A KUBE-SERVICES -d {}/32 -p {proto} --dport {PORT} -j KUBE-SVC-{i}-{proto}\n\
                     -A KUBE-SVC-{i}-{proto} -j KUBE-SEP-{i}-{proto}\n\
                     -A KUBE-SEP-{i}-{proto} -p {proto} -j DNAT --to-destination {SERVER}:{PORT}\n",
                    vip(i)
                ));
            }
        }
        text.push_str("COMMIT\n");
        pipe(&mut self.na.command("iptables-restore"), &text)
    }

    /// (7) kube-proxy's nftables mode on node A: one verdict map from VIP . protocol . port to
    /// a chain per service that DNATs to container B.
    fn nftables_dnat(&self, n: usize) -> Result<()> {
        let protos = |i: usize| {
            if i + 1 == n {
                &["tcp", "udp"][..]
            } else {
                &["tcp"][..]
            }
        };
        let mut elements = Vec::new();
        let mut chains = String::new();
        for i in 0..n {
            for proto in protos(i) {
                elements.push(format!(
                    "{} . {proto} . {PORT} : goto service-{i}-{proto}",
                    vip(i)
                ));
                chains.push_str(&format!(
                    "  chain service-{i}-{proto} {{\n    meta l4proto {proto} dnat to \
                     {SERVER}:{PORT}\n  }}\n"
                ));
            }
        }
        let text = format!(
            "table ip hmbench {{\n{chains}  map service-ips {{\n    type ipv4_addr . inet_proto \
             . inet_service : verdict\n    elements = {{ {} }}\n  }}\n  chain prerouting {{\n    \
             type nat hook prerouting priority dstnat;\n    ip daddr . meta l4proto . th dport \
             vmap @service-ips\n  }}\n}}\n",
            elements.join(", ")
        );
        pipe(self.na.command("nft").args(["-f", "-"]), &text)
    }

    /// (5) Hivemind: hm-vxlan as the daemon creates it, the data plane per node with the
    /// underlay validation where `underlay` says; `n` ingress CIDR rules on container B when
    /// `n > 0`.
    fn hivemind(&self, n: usize, underlay: UnderlayProgram) -> Result<Vec<Dataplane>> {
        let mac = OVERLAY_MAC.map(|b| format!("{b:02x}")).join(":");
        let port = VXLAN_PORT.to_string();
        let mut planes = Vec::new();
        for (me, peer, node) in self.nodes() {
            ipn(
                node,
                &[
                    "link",
                    "add",
                    OVERLAY_DEVICE,
                    "address",
                    &mac,
                    "mtu",
                    MTU,
                    "type",
                    "vxlan",
                    "external",
                    "dstport",
                    &port,
                    "nolearning",
                ],
            )?;
            ipn(node, &["link", "set", OVERLAY_DEVICE, "arp", "off"])?;
            sysctl(
                node,
                &format!("net.ipv6.conf.{OVERLAY_DEVICE}.disable_ipv6=1"),
            )?;
            ipn(node, &["link", "set", OVERLAY_DEVICE, "up"])?;
            // The cluster and service CIDRs, as the daemon routes them.
            for cidr in ["10.244.0.0/16", "10.96.0.0/16"] {
                ipn(
                    node,
                    &[
                        "route",
                        "add",
                        cidr,
                        "dev",
                        OVERLAY_DEVICE,
                        "src",
                        &format!("10.244.{me}.1"),
                    ],
                )?;
            }
            let endpoint = if me == 1 { ENDPOINT_A } else { ENDPOINT_B };
            let dp = node.run(move || -> Result<Dataplane> {
                let mut dp = Dataplane::load().context("loading the data plane")?;
                dp.attach_overlay(
                    crate::rate::ifindex(OVERLAY_DEVICE)?,
                    crate::rate::ifindex("underlay")?,
                    underlay,
                )?;
                dp.set_tunnel(
                    Ipv4Addr::new(10, 244, peer, 0),
                    24,
                    Ipv4Addr::new(192, 168, 77, peer),
                    vni::DEFAULT,
                )?;
                dp.set_node_config(
                    crate::rate::ifindex("hm0")?,
                    Ipv4Addr::new(10, 244, me, 1),
                    24,
                )?;
                dp.attach_endpoint(crate::rate::ifindex(HOST_IF)?, endpoint)?;
                Ok(dp)
            })??;
            planes.push(dp);
        }
        if n > 0 {
            let mut ingress = BTreeSet::new();
            let allow = |peer, protocol| Allow {
                peer,
                protocol,
                port_min: 5201,
                port_max: 5201,
            };
            for i in 0..n.saturating_sub(2) {
                ingress.insert(allow(PeerMatch::Cidr(filler(i), 32), Protocol::Tcp));
            }
            ingress.insert(allow(PeerMatch::Cidr(CLIENT, 32), Protocol::Tcp));
            ingress.insert(allow(PeerMatch::Cidr(CLIENT, 32), Protocol::Udp));
            let rules = EndpointRules {
                ingress: Some(ingress),
                egress: None,
            };
            planes[1]
                .set_endpoint_policy(ENDPOINT_B, &rules)
                .with_context(|| format!("loading {n} policy rules"))?;
        }
        Ok(planes)
    }
}

/// VIP of service `i`: 10.96.0.1 upwards (Hivemind's service CIDR).
fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + i as u32)
}

/// Loads `n` services of one backend (container B, port 5201) into node A's data plane: TCP
/// for each, UDP too for the measured (last) one.
fn hivemind_services(plane: &mut Dataplane, n: usize) -> Result<()> {
    let port: u16 = PORT.parse()?;
    let backend = ServiceBackend {
        id: 1,
        ip: SERVER,
        port,
        weight: 1,
    };
    for i in 0..n {
        plane
            .set_service(vip(i), port, IPPROTO_TCP, &[backend])
            .with_context(|| format!("service {i} of {n}"))?;
    }
    plane.set_service(vip(n.saturating_sub(1)), port, IPPROTO_UDP, &[backend])?;
    Ok(())
}

/// `n` with thousands separators (`number` prints small values with decimals).
fn count(n: usize) -> String {
    if n >= 1000 {
        number(n as f64)
    } else {
        n.to_string()
    }
}

/// The source address of filler rule `i`: 10.250.0.0/16 onwards, never the client.
fn filler(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 250, 0, 1)) + i as u32)
}

fn pipe(command: &mut Command, input: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {command:?}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The iperf3 server in container B; killed (by its own pid) when dropped.
struct Server(Child);

impl Server {
    fn start(ns: &NetNs) -> Result<Self> {
        let child = ns
            .command("iperf3")
            .args(["-s", "-p", PORT])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s (is iperf3 installed? cargo xtask setup)")?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self(child))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One iperf3 client run from container A to `target`; the parsed JSON.
fn iperf(ns: &NetNs, target: Ipv4Addr, seconds: u32, extra: &[&str]) -> Result<serde_json::Value> {
    let limit = (seconds + 20).to_string();
    let secs = seconds.to_string();
    let server = target.to_string();
    let out = ns
        .command("timeout")
        .args([
            &limit,
            "iperf3",
            "-J",
            "-c",
            &server,
            "-p",
            PORT,
            "-t",
            &secs,
            "--connect-timeout",
            "3000",
        ])
        .args(extra)
        .output()
        .context("running iperf3")?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 output: {}", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(e) = json.get("error") {
        bail!("iperf3 {}: {e}", extra.join(" "));
    }
    Ok(json)
}

fn tcp_gbits(json: &serde_json::Value) -> Result<f64> {
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .context("iperf3 JSON without end.sum_received.bits_per_second")
}

/// Packets per second the receiver got: `sum_received` where iperf3 has it, else the
/// client's `sum` (packets sent minus the server's lost count).
fn udp_pps(json: &serde_json::Value) -> Result<f64> {
    let end = &json["end"];
    let (packets, seconds) = if let Some(p) = end["sum_received"]["packets"].as_f64() {
        (p, end["sum_received"]["seconds"].as_f64())
    } else {
        let sum = &end["sum"];
        let sent = sum["packets"].as_f64().context("end.sum.packets")?;
        let lost = sum["lost_packets"].as_f64().unwrap_or(0.0);
        (sent - lost, sum["seconds"].as_f64())
    };
    let seconds = seconds
        .filter(|s| *s > 0.0)
        .context("iperf3 JSON without seconds")?;
    Ok(packets / seconds)
}

/// Run time and run count of every loaded `hm_*` program, summed by name (the kernel keeps
/// the first 15 characters of a name).
fn program_stats() -> Result<BTreeMap<String, (u64, u64)>> {
    let mut stats = BTreeMap::new();
    for info in aya::programs::loaded_programs() {
        let info = info.context("listing loaded programs")?;
        let Some(name) = info.name_as_str().filter(|n| n.starts_with("hm_")) else {
            continue;
        };
        let entry: &mut (u64, u64) = stats.entry(name.to_string()).or_default();
        entry.0 += info.run_time().as_nanos() as u64;
        entry.1 += info.run_count();
    }
    Ok(stats)
}

/// One UDP run over Hivemind's overlay (no policy) with the kernel's BPF run-time statistics
/// on: how much of the time per packet Hivemind's programs take. A run of its own, outside
/// the figures: the statistics themselves cost time per program run.
fn udp_profile(prefix: &str, seconds: u32) -> Result<String> {
    let topo = Topology::new(prefix)?;
    let _planes = topo.hivemind(0, UnderlayProgram::Auto)?;
    let _server = Server::start(&topo.cb)?;
    let before = program_stats()?;
    let stats_on = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let json = iperf(&topo.ca, SERVER, seconds, &["-u", "-l", "64", "-b", "0"])?;
    drop(stats_on);
    let after = program_stats()?;
    let sent = json["end"]["sum"]["packets"]
        .as_f64()
        .context("end.sum.packets")?;
    let received = udp_pps(&json)? * f64::from(seconds);
    let mut total_ns = 0.0;
    let mut parts = Vec::new();
    for (name, (time, runs)) in &after {
        let (time0, runs0) = before.get(name).copied().unwrap_or_default();
        let (time, runs) = (time - time0, runs - runs0);
        if runs == 0 {
            continue;
        }
        total_ns += time as f64;
        parts.push(format!(
            "{name} {} ns per run, {:.2} runs per packet sent",
            number(time as f64 / runs as f64),
            runs as f64 / sent
        ));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let budget_ns = cores * f64::from(seconds) * 1e9 / sent;
    Ok(format!(
        "End to end, where Hivemind's UDP time goes (a separate {seconds} s run of `iperf3 -u -l \
         64 -b 0` on the Hivemind configuration without policy, BPF_ENABLE_STATS on; not one of \
         the figures above): {} packets sent, {} received; {}. All of Hivemind's programs \
         together: {} ns per packet sent, against {} ns of CPU time per packet sent ({} cores \
         for {seconds} s): the programs account for {:.0}% of it, the rest is the kernel's \
         path (veth, bridge, routing, VXLAN) and iperf3 itself.",
        number(sent),
        number(received),
        parts.join("; "),
        number(total_ns / sent),
        number(budget_ns),
        cores,
        100.0 * total_ns / sent / budget_ns
    ))
}

/// (tx bytes, tx packets) of the underlay veth of `node`.
fn tx_stats(node: &NetNs) -> Result<(u64, u64)> {
    let out = run_cmd(
        Command::new("ip").args(["-j", "-s", "-n", &node.name, "link", "show", "underlay"]),
    )?;
    let json: serde_json::Value = serde_json::from_str(&out)?;
    let tx = &json[0]["stats64"]["tx"];
    Ok((
        tx["bytes"].as_u64().context("tx bytes")?,
        tx["packets"].as_u64().context("tx packets")?,
    ))
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
        Kind::Hivemind(n) => topo.hivemind(n, UnderlayProgram::Auto)?,
        Kind::HivemindXdp => topo.hivemind(0, UnderlayProgram::Xdp)?,
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
            let mut planes = topo.hivemind(0, UnderlayProgram::Auto)?;
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
