//! Tier 1: cost per packet of each program under BPF_PROG_TEST_RUN, in nanoseconds from the
//! kernel's `duration`, against the empty programs of the same kind (the floor).
//!
//! `repeat` reruns a program on the same buffer, so a path is only timed this way when a rerun
//! takes the same path again (the overlay's MAC rewrite is idempotent; a service DNAT is not:
//! its first run rewrites the VIP away). After every timing the program's counters must have
//! grown by exactly the number of runs on the success path, or the harness fails.
//!
//! The endpoint policy figures need an endpoint: a veth in a namespace of their own, attached
//! with `attach_endpoint`, and each run is given that veth's ifindex in its `__sk_buff` (the
//! programs find the endpoint by the skb's interface). `hm_overlay_ingress` is not timed: see
//! `OVERLAY_INGRESS_NOTE`.

use std::{io, net::Ipv4Addr, os::fd::RawFd};

use anyhow::{Context as _, Result, bail, ensure};
use hivemind::dataplane::{
    Dataplane, IpcacheEntry, PROG_FROM_CONTAINER, PROG_OVERLAY_EGRESS, PROG_TC_MONITOR_SWITCH,
    PROG_TC_PASS, PROG_TC_UNDERLAY, PROG_XDP_PASS, PROG_XDP_UNDERLAY, ServiceBackend,
};
use hivemind_common::MAX_SERVICE_ENTRIES;

use crate::{
    bpf::{RunResult, TC_ACT_OK, XDP_PASS, test_run, test_run_on},
    packets::{VNI, tcp_frame, udp_frame, vxlan_frame},
    report::{Row, Target},
};

mod policy;
mod routing;

const SECTION: &str = "Per-packet cost (BPF_PROG_TEST_RUN)";
/// Each common path within 3x the floor.
const MAX_FLOOR_RATIO: f64 = 3.0;
/// No more than 20% growth from 10 entries (tunnels, services, rules) to the largest table.
const MAX_GROWTH: f64 = 1.2;
/// Table sizes of the scaling figures (the 10, 1,000, 10,000 and 100,000); a table
/// whose map refuses the largest is measured at the largest size it takes.
const SIZES: [u32; 4] = [10, 1_000, 10_000, 100_000];
const TC_ACT_SHOT: u32 = 2;
/// Container subnets of the simulated remote nodes: 10.128.0.0/24, 10.128.1.0/24, ...
const FIRST_REMOTE_SUBNET: u32 = u32::from_be_bytes([10, 128, 0, 0]);
const SERVICE_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
/// Source of the established service flow: no new flow (from `CLIENT` upwards) shares it.
const ESTABLISHED_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 200);
const UNDERLAY_PEER: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
/// Identity of the containers the benchmarks place in the ipcache (no policy reads it).
const CONTAINER_IDENTITY: u32 = 1000;
const TCP: u8 = 6;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
/// Payload of the timed frames: 64-byte UDP frames (14 + 20 + 8 + 22).
const PAYLOAD: usize = 22;

#[derive(Clone, Copy)]
pub struct Config {
    /// Repetitions per BPF_PROG_TEST_RUN call.
    pub repeat: u32,
    /// Calls per figure; the median is reported.
    pub rounds: usize,
    /// Single-run calls per round for the service paths.
    pub single_runs: u32,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Median ns/packet of `rounds` calls of `repeat` runs; every run must return `expect`.
fn time_repeat(fd: RawFd, packet: &[u8], expect: u32, cfg: &Config) -> Result<f64> {
    time_calls(expect, cfg, || test_run(fd, packet, cfg.repeat))
}

/// `time_repeat` on a packet received on `ifindex` (of the calling thread's namespace).
fn time_repeat_on(
    fd: RawFd,
    packet: &[u8],
    ifindex: u32,
    expect: u32,
    cfg: &Config,
) -> Result<f64> {
    time_calls(expect, cfg, || test_run_on(fd, packet, ifindex, cfg.repeat))
}

fn time_calls(
    expect: u32,
    cfg: &Config,
    mut call: impl FnMut() -> io::Result<RunResult>,
) -> Result<f64> {
    let mut samples = Vec::with_capacity(cfg.rounds);
    for _ in 0..cfg.rounds {
        let r = call().context("BPF_PROG_TEST_RUN")?;
        ensure!(
            r.retval == expect,
            "program returned {} instead of {expect}: the timed path is not the success path",
            r.retval
        );
        samples.push(f64::from(r.ns_per_run));
    }
    Ok(median(samples))
}

/// Median over rounds of the mean ns of `single_runs` calls with repeat 1, each on a fresh
/// copy of `packet(i)`.
fn time_single(
    fd: RawFd,
    packet: &mut dyn FnMut(u32) -> Vec<u8>,
    expect: u32,
    cfg: &Config,
) -> Result<f64> {
    time_single_calls(expect, cfg, &mut |i| test_run(fd, &packet(i), 1))
}

/// `time_single` on copies of one packet received on `ifindex` (of the calling thread's
/// namespace).
fn time_single_on(
    fd: RawFd,
    packet: &[u8],
    ifindex: u32,
    expect: u32,
    cfg: &Config,
) -> Result<f64> {
    time_single_calls(expect, cfg, &mut |_| test_run_on(fd, packet, ifindex, 1))
}

fn time_single_calls(
    expect: u32,
    cfg: &Config,
    call: &mut dyn FnMut(u32) -> io::Result<RunResult>,
) -> Result<f64> {
    let mut samples = Vec::with_capacity(cfg.rounds);
    let mut i = 0u32;
    for _ in 0..cfg.rounds {
        let mut total = 0u64;
        for _ in 0..cfg.single_runs {
            let r = call(i).context("BPF_PROG_TEST_RUN")?;
            ensure!(r.retval == expect, "program returned {}", r.retval);
            total += u64::from(r.ns_per_run);
            i += 1;
        }
        samples.push(total as f64 / f64::from(cfg.single_runs));
    }
    Ok(median(samples))
}

fn runs(cfg: &Config) -> u64 {
    u64::from(cfg.repeat) * cfg.rounds as u64
}

fn row(name: String, value: f64, baseline: f64, baseline_name: &str, target: Target) -> Row {
    Row {
        section: SECTION,
        name,
        value,
        baseline: Some(baseline),
        baseline_name: baseline_name.into(),
        unit: "ns",
        target,
    }
}

/// What `scale` measured: (size, ns) by growing size, and the map's refusal if it stopped early.
struct Scaled {
    by_size: Vec<(u32, f64)>,
    refused: Option<anyhow::Error>,
}

/// Grows a table through `sizes` with `add(state, i)` for entry `i` = 0, 1, ..., measuring
/// `measure(state, n)` at each size `n`. When the map refuses an entry, the table is measured
/// at the size it reached and growth stops; that refusal is returned with the figures.
fn scale<T>(
    state: &mut T,
    sizes: &[u32],
    mut add: impl FnMut(&mut T, u32) -> Result<()>,
    mut measure: impl FnMut(&mut T, u32) -> Result<f64>,
) -> Result<Scaled> {
    let mut loaded = 0;
    let mut by_size: Vec<(u32, f64)> = Vec::new();
    for &size in sizes {
        while loaded < size {
            if let Err(e) = add(state, loaded) {
                if loaded == 0 {
                    return Err(e);
                }
                if by_size.last().is_none_or(|&(n, _)| n < loaded) {
                    by_size.push((loaded, measure(state, loaded)?));
                }
                return Ok(Scaled {
                    by_size,
                    refused: Some(e),
                });
            }
            loaded += 1;
        }
        by_size.push((size, measure(state, size)?));
    }
    Ok(Scaled {
        by_size,
        refused: None,
    })
}

/// A row per size ("`program`: `path`, N `what`") and a growth row (largest against smallest).
fn scale_rows(
    by_size: &[(u32, f64)],
    (program, path, what): (&str, &str, &str),
    floor: f64,
    floor_name: &str,
) -> Vec<Row> {
    let mut rows: Vec<Row> = by_size
        .iter()
        .map(|&(n, ns)| {
            row(
                format!("{program}: {path}, {} {what}", count(n)),
                ns,
                floor,
                floor_name,
                Target::RatioAtMost(MAX_FLOOR_RATIO),
            )
        })
        .collect();
    if let (Some(&(small, a)), Some(&(large, b))) = (by_size.first(), by_size.last())
        && large > small
    {
        let small = format!("{} {what}", count(small));
        rows.push(row(
            format!("{program} growth ({path}): {} vs {small}", count(large)),
            b,
            a,
            &small,
            Target::RatioAtMost(MAX_GROWTH),
        ));
    }
    rows
}

/// "10, 1,000, 10,000 and 100,000".
fn sizes_text(by_size: &[(u32, f64)]) -> String {
    let sizes: Vec<String> = by_size.iter().map(|&(n, _)| count(n)).collect();
    match sizes.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => sizes.concat(),
    }
}

/// Says that `map` refused an entry and which size was measured instead (empty if none).
fn refusal_text(
    refused: Option<&anyhow::Error>,
    map: &str,
    largest: Option<&(u32, f64)>,
) -> String {
    match (refused, largest) {
        (Some(e), Some((n, _))) => format!(
            " {map} refused one entry more ({e:#}), so {} is the largest size measured, not \
             {}.",
            count(*n),
            count(SIZES[SIZES.len() - 1])
        ),
        _ => String::new(),
    }
}

/// 100000 -> "100,000".
fn count(n: u32) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Remote node `i` as the daemon writes it: the tunnel to its container subnet, and its
/// container (`.2`) in the ipcache, placed on it.
fn add_tunnel(dp: &mut Dataplane, i: u32) -> Result<()> {
    let subnet = Ipv4Addr::from(FIRST_REMOTE_SUBNET + (i << 8));
    dp.set_tunnel(subnet, 24, UNDERLAY_PEER, VNI)
        .with_context(|| format!("adding tunnel {i} ({subnet}/24)"))?;
    let container = remote_container(i);
    dp.set_ipcache(
        container,
        IpcacheEntry::remote(CONTAINER_IDENTITY, UNDERLAY_PEER),
    )
    .with_context(|| format!("placing {container} in the ipcache"))?;
    Ok(())
}

/// The container of remote node `i`.
fn remote_container(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(FIRST_REMOTE_SUBNET + (i << 8) + 2)
}

/// A frame to the container of the last of `tunnels` remote nodes.
fn overlay_frame(tunnels: u32) -> Vec<u8> {
    udp_frame(CLIENT, 40000, remote_container(tunnels - 1), 8080, PAYLOAD)
}

/// Every tier-1 figure, and notes on how they were taken.
pub fn run(cfg: &Config, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let mut dp = Dataplane::load().context("loading the data plane")?;
    dp.load_floor_programs()?;
    let fd = |dp: &Dataplane, name: &'static str| {
        dp.program_fd_for_test(name)
            .with_context(|| format!("program {name}"))
    };
    let tc_pass = fd(&dp, PROG_TC_PASS)?;
    let xdp_pass = fd(&dp, PROG_XDP_PASS)?;
    let from = fd(&dp, PROG_FROM_CONTAINER)?;
    let egress = fd(&dp, PROG_OVERLAY_EGRESS)?;
    let underlay = fd(&dp, PROG_XDP_UNDERLAY)?;
    let tc_underlay = fd(&dp, PROG_TC_UNDERLAY)?;
    let mut rows = Vec::new();

    // The floor, on the frame the TC programs see.
    let frame = udp_frame(CLIENT, 40000, Ipv4Addr::new(10, 244, 1, 3), 8080, PAYLOAD);
    let tc_floor = time_repeat(tc_pass, &frame, TC_ACT_OK, cfg)?;

    // The trace monitor's switch, off: the same empty program with the switch in it.
    let switch = time_repeat(fd(&dp, PROG_TC_MONITOR_SWITCH)?, &frame, TC_ACT_OK, cfg)?;
    rows.push(Row {
        section: SECTION,
        name: "Trace monitor switch, off: hm_tc_monitor_switch minus hm_tc_pass".into(),
        value: (switch - tc_floor).max(0.0),
        baseline: None,
        baseline_name: "none".into(),
        unit: "ns",
        target: Target::ValueAtMost(2.0),
    });

    // Container egress and ingress need an endpoint: measured in `policy`, on one.
    let floor_name = "hm_tc_pass";

    // Overlay egress (the ipcache's placement of the destination, the source's identity, tunnel
    // key, MAC rewrite) with a growing number of remote nodes.
    dp.set_ipcache(CLIENT, IpcacheEntry::local(CONTAINER_IDENTITY))?;
    let Scaled { by_size, refused } =
        scale(&mut dp, &SIZES, add_tunnel, |dp: &mut Dataplane, n| {
            overlay_egress(dp, egress, n, cfg)
        })?;
    rows.extend(scale_rows(
        &by_size,
        ("hm_overlay_egress", "encapsulation decision", "tunnels"),
        tc_floor,
        floor_name,
    ));

    // The underlay validation of a valid VXLAN frame, in XDP and at TC ingress (what `auto`
    // picks on a veth underlay), each against the empty program of its kind.
    let vxlan = vxlan_frame(PAYLOAD);
    for (name, program, floor, floor_name, pass) in [
        (
            "hm_xdp_underlay: valid VXLAN frame (decap validation)",
            underlay,
            xdp_pass,
            "hm_xdp_pass",
            XDP_PASS,
        ),
        (
            "hm_tc_underlay: valid VXLAN frame (decap validation at TC ingress)",
            tc_underlay,
            tc_pass,
            "hm_tc_pass",
            TC_ACT_OK,
        ),
    ] {
        let floor_ns = time_repeat(floor, &vxlan, pass, cfg)?;
        let before = dp.overlay_counters()?;
        let v = time_repeat(program, &vxlan, pass, cfg)?;
        let after = dp.overlay_counters()?;
        ensure!(
            after.underlay_vxlan.packets - before.underlay_vxlan.packets == runs(cfg)
                && after.drops == before.drops,
            "{name}: not every run counted as valid VXLAN: {after:?}"
        );
        rows.push(row(
            name.into(),
            v,
            floor_ns,
            floor_name,
            Target::RatioAtMost(MAX_FLOOR_RATIO),
        ));
    }
    notes.push(format!(
        "Per-packet cost: BPF_PROG_TEST_RUN with repeat = {} on a {}-byte frame ({}-byte VXLAN \
         frame for the underlay programs), {} calls per figure, median of the kernel's \
         `duration` (mean ns per run, program only). Baseline: the empty program of the same \
         kind (hm_tc_pass, hm_xdp_pass) on the same frame in the same run. After each timing \
         the program's counters must have grown by exactly the number of runs on the timed path \
         (forwarded; for the denied policy figures, dropped as DROP_POLICY), so the timed path \
         is the intended one. The trace monitor's switch: `hm_tc_monitor_switch` is `hm_tc_pass` \
         with the check every container program makes before tracing (one array lookup and a \
         branch, the monitor off), timed the same way; the figure is the difference.",
        cfg.repeat,
        frame.len(),
        vxlan.len(),
        cfg.rounds
    ));
    notes.push(format!(
        "hm_overlay_egress scaling: {} remote nodes as the daemon writes them, each a tunnel \
         (HM_TUNNELS, LPM trie) to its /24 subnet (consecutive from 10.128.0.0/24 upwards) and \
         its container (.2) in the ipcache (HM_IPCACHE, hash) placed on its underlay address, \
         all on one underlay address; the source container is in the ipcache too. Each figure \
         is timed as above with the frame going to the container of the last node added.{}",
        sizes_text(&by_size),
        refusal_text(refused.as_ref(), "HM_TUNNELS or HM_IPCACHE", by_size.last())
    ));

    rows.extend(service_paths(&mut dp, from, tc_pass, tc_floor, cfg, notes)?);
    drop(dp);
    rows.extend(policy::paths(cfg, notes)?);
    rows.extend(routing::paths(cfg, notes)?);
    notes.push(OVERLAY_INGRESS_NOTE.into());
    Ok(rows)
}

fn overlay_egress(dp: &Dataplane, egress: RawFd, tunnels: u32, cfg: &Config) -> Result<f64> {
    let frame = overlay_frame(tunnels);
    let before = dp.overlay_counters()?;
    let ns = time_repeat(egress, &frame, TC_ACT_OK, cfg)?;
    let after = dp.overlay_counters()?;
    let sent = after.sent.packets - before.sent.packets;
    if sent != runs(cfg) || after.drops != before.drops {
        bail!(
            "hm_overlay_egress with {tunnels} tunnels: {sent} of {} runs sent, drops {:?}",
            runs(cfg),
            after.drops
        );
    }
    Ok(ns)
}

/// First VIP of the services that fill the table (one backend each); the benchmark service
/// (`SERVICE_VIP`) is not among them.
const FILLER_VIP: u32 = u32::from_be_bytes([10, 96, 128, 0]);
const FILLER_BACKEND: u32 = u32::from_be_bytes([10, 245, 0, 0]);

/// Service `i` of the scaling figures: 0 is the benchmark service (`backends`), the others
/// fill the table with one backend each, on VIPs 10.96.128.0 upwards (32,768 VIPs, then the
/// next port).
fn add_service(dp: &mut Dataplane, i: u32, backends: &[ServiceBackend]) -> Result<()> {
    if i == 0 {
        return dp
            .set_service(SERVICE_VIP, 80, TCP, backends)
            .context("adding the benchmark service");
    }
    let vip = Ipv4Addr::from(FILLER_VIP + (i & 0x7fff));
    let port = 80 + u16::try_from(i >> 15).unwrap_or(u16::MAX);
    let backend = ServiceBackend {
        id: 1000 + i,
        ip: Ipv4Addr::from(FILLER_BACKEND + i),
        port: 8080,
        weight: 1,
    };
    dp.set_service(vip, port, TCP, &[backend])
        .with_context(|| format!("adding service {i} ({vip}:{port})"))
}

/// Service DNAT cannot be timed with `repeat` (the first run rewrites the VIP), so each packet
/// is its own call with repeat 1; the kernel's timer overhead in such a call is estimated as
/// (hm_tc_pass with repeat 1) - (hm_tc_pass with repeat N) and subtracted.
fn service_paths(
    dp: &mut Dataplane,
    from: RawFd,
    tc_pass: RawFd,
    tc_floor: f64,
    cfg: &Config,
    notes: &mut Vec<String>,
) -> Result<Vec<Row>> {
    let backends: Vec<ServiceBackend> = (1..=4u8)
        .map(|i| ServiceBackend {
            id: u32::from(i),
            ip: Ipv4Addr::new(10, 244, 2, 10 + i),
            port: 8080,
            weight: 1,
        })
        .collect();
    let established = tcp_frame(
        ESTABLISHED_CLIENT,
        30000,
        SERVICE_VIP,
        80,
        ACK,
        PAYLOAD - 12,
    );
    let single_floor = time_single(tc_pass, &mut |_| established.clone(), TC_ACT_OK, cfg)?;
    let overhead = (single_floor - tc_floor).max(0.0);
    let calls = u64::from(cfg.single_runs) * cfg.rounds as u64;

    // The established flow with a growing HM_SERVICES. Its conntrack entry comes from an
    // untimed first packet (the only new connection); every timed packet is a conntrack hit.
    add_service(dp, 0, &backends)?;
    let start = dp.service_counters()?;
    let first = test_run(from, &established, 1).context("BPF_PROG_TEST_RUN")?;
    let counted = dp.service_counters()?;
    ensure!(
        first.retval == TC_ACT_OK
            && counted.translated.packets - start.translated.packets == 1
            && counted.new_connections - start.new_connections == 1,
        "the established service flow's first packet was not translated: {counted:?}"
    );
    let Scaled { by_size, refused } = scale(
        dp,
        &SIZES,
        // Service 0, the benchmark service, is in already.
        |dp: &mut Dataplane, i| match i {
            0 => Ok(()),
            _ => add_service(dp, i, &backends),
        },
        |dp: &mut Dataplane, n| {
            let before = dp.service_counters()?;
            let ns = time_single(from, &mut |_| established.clone(), TC_ACT_OK, cfg)?;
            let after = dp.service_counters()?;
            ensure!(
                after.translated.packets - before.translated.packets == calls
                    && after.new_connections == before.new_connections
                    && after.drops == before.drops,
                "established service flow with {n} services: not every packet translated on \
                 its conntrack entry: {after:?}"
            );
            Ok((ns - overhead).max(0.0))
        },
    )?;
    let services = by_size.last().map_or(0, |&(n, _)| n);

    // New flows: a fresh source port each time; the caller keeps rounds * single_runs * 2
    // conntrack entries below HM_CT's size, so nothing is evicted. Measured last, so that
    // these entries cannot push the established flow's entry out of the LRU conntrack.
    let before = dp.service_counters()?;
    let new = time_single(
        from,
        &mut |i| {
            let sport = 1024 + u16::try_from(i % 60000).unwrap_or(0);
            let src = Ipv4Addr::from(u32::from(CLIENT) + i / 60000);
            tcp_frame(src, sport, SERVICE_VIP, 80, SYN, PAYLOAD - 12)
        },
        TC_ACT_OK,
        cfg,
    )?;
    let after = dp.service_counters()?;
    ensure!(
        after.translated.packets - before.translated.packets == calls
            && after.new_connections - before.new_connections == calls
            && after.drops == before.drops,
        "service new flows: not every packet translated as a new connection: {after:?}"
    );
    notes.push(format!(
        "Service DNAT (benchmark service: 4 backends): each packet is one BPF_PROG_TEST_RUN call \
         with repeat 1 ({} calls per round, {} rounds, median of the round means), because a \
         rerun on the same buffer would see the backend address instead of the VIP. The timer \
         overhead of a single-run call ({:.1} ns here: hm_tc_pass with repeat 1 minus with \
         repeat {}) is subtracted; the baseline is hm_tc_pass with repeat {}. Established flow: \
         one TCP ACK 5-tuple to the VIP whose conntrack entry an untimed first packet created, \
         timed with {} services loaded (the benchmark service plus services of one backend \
         each on other VIPs; a service takes one HM_SERVICES entry per backend slot plus one, \
         and the map holds hivemind_common::MAX_SERVICE_ENTRIES = {} entries); the service \
         counters must show every packet translated and no new connection. New flow: a TCP SYN \
         from a new source port per packet, timed after the established figures with {} \
         services loaded; the counters must show one new connection per packet.{}",
        cfg.single_runs,
        cfg.rounds,
        overhead,
        cfg.repeat,
        cfg.repeat,
        sizes_text(&by_size),
        count(MAX_SERVICE_ENTRIES),
        count(services),
        refusal_text(refused.as_ref(), "HM_SERVICES", by_size.last())
    ));
    let mut rows = scale_rows(
        &by_size,
        (
            "hm_lxc_from_container",
            "service VIP, established flow (conntrack hit, DNAT)",
            "services",
        ),
        tc_floor,
        "hm_tc_pass",
    );
    rows.push(row(
        format!(
            "hm_lxc_from_container: service VIP, new flow (backend pick, 2 conntrack inserts), {} \
             services",
            count(services)
        ),
        (new - overhead).max(0.0),
        tc_floor,
        "hm_tc_pass",
        Target::None,
    ));
    Ok(rows)
}

/// Why `hm_overlay_ingress` has no figure.
const OVERLAY_INGRESS_NOTE: &str = "hm_overlay_ingress (TC ingress of hm-vxlan, decapsulated \
     packets) is not timed: its first step, bpf_skb_get_tunnel_key, reads the tunnel metadata \
     the VXLAN driver attaches to a received skb, and a BPF_PROG_TEST_RUN skb has none, so \
     every test run takes the DROP_TUNNEL_KEY path. Timing that failure path would not measure \
     decapsulated delivery, so no figure is given rather than a wrong one; its cost shows only \
     in the end-to-end figures.";
