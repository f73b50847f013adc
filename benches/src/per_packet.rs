//! Tier 1: cost per packet of each program under BPF_PROG_TEST_RUN, in nanoseconds from the
//! kernel's `duration`, against the empty programs of the same kind (the floor).
//!
//! `repeat` reruns a program on the same buffer, so a path is only timed this way when a rerun
//! takes the same path again (the overlay's MAC rewrite is idempotent; a service DNAT is not:
//! its first run rewrites the VIP away). After every timing the program's counters must have
//! grown by exactly the number of runs on the success path, or the harness fails.

use std::{net::Ipv4Addr, os::fd::RawFd};

use anyhow::{Context as _, Result, bail, ensure};
use hivemind::dataplane::{
    Dataplane, PROG_FROM_CONTAINER, PROG_OVERLAY_EGRESS, PROG_TC_PASS, PROG_TC_UNDERLAY,
    PROG_TO_CONTAINER, PROG_XDP_PASS, PROG_XDP_UNDERLAY, ServiceBackend,
};

use crate::{
    bpf::{TC_ACT_OK, XDP_PASS, test_run},
    packets::{VNI, tcp_frame, udp_frame, vxlan_frame},
    report::{Row, Target},
};

const SECTION: &str = "Per-packet cost (BPF_PROG_TEST_RUN)";
/// Each common path within 3x the floor.
const MAX_FLOOR_RATIO: f64 = 3.0;
/// No more than 20% growth from 10 tunnels to the largest table.
const MAX_GROWTH: f64 = 1.2;
/// Container subnets of the simulated remote nodes: 10.128.0.0/24, 10.128.1.0/24, ...
const FIRST_REMOTE_SUBNET: u32 = u32::from_be_bytes([10, 128, 0, 0]);
const SERVICE_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
/// Source of the established service flow: no new flow (from `CLIENT` upwards) shares it.
const ESTABLISHED_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 200);
const UNDERLAY_PEER: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const TCP: u8 = 6;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
/// Payload of the timed frames: 64-byte UDP frames (14 + 20 + 8 + 22).
const PAYLOAD: usize = 22;

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
    let mut samples = Vec::with_capacity(cfg.rounds);
    for _ in 0..cfg.rounds {
        let r = test_run(fd, packet, cfg.repeat).context("BPF_PROG_TEST_RUN")?;
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
    let mut samples = Vec::with_capacity(cfg.rounds);
    let mut i = 0u32;
    for _ in 0..cfg.rounds {
        let mut total = 0u64;
        for _ in 0..cfg.single_runs {
            let r = test_run(fd, &packet(i), 1).context("BPF_PROG_TEST_RUN")?;
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

fn add_tunnels(dp: &mut Dataplane, from: u32, to: u32) -> Result<()> {
    for i in from..to {
        let subnet = Ipv4Addr::from(FIRST_REMOTE_SUBNET + (i << 8));
        dp.set_tunnel(subnet, 24, UNDERLAY_PEER, VNI)
            .with_context(|| format!("adding tunnel {i} ({subnet}/24)"))?;
    }
    Ok(())
}

/// A frame to the last of `tunnels` remote subnets.
fn overlay_frame(tunnels: u32) -> Vec<u8> {
    let last = FIRST_REMOTE_SUBNET + ((tunnels - 1) << 8);
    udp_frame(CLIENT, 40000, Ipv4Addr::from(last + 2), 8080, PAYLOAD)
}

/// Every tier-1 figure, and notes on how they were taken.
pub fn run(cfg: &Config, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let mut dp = Dataplane::load().context("loading the data plane")?;
    let fd = |dp: &Dataplane, name: &'static str| {
        dp.program_fd_for_test(name)
            .with_context(|| format!("program {name}"))
    };
    let tc_pass = fd(&dp, PROG_TC_PASS)?;
    let xdp_pass = fd(&dp, PROG_XDP_PASS)?;
    let from = fd(&dp, PROG_FROM_CONTAINER)?;
    let to = fd(&dp, PROG_TO_CONTAINER)?;
    let egress = fd(&dp, PROG_OVERLAY_EGRESS)?;
    let underlay = fd(&dp, PROG_XDP_UNDERLAY)?;
    let tc_underlay = fd(&dp, PROG_TC_UNDERLAY)?;
    let mut rows = Vec::new();

    // The floor, on the frame the TC programs see.
    let frame = udp_frame(CLIENT, 40000, Ipv4Addr::new(10, 244, 1, 3), 8080, PAYLOAD);
    let tc_floor = time_repeat(tc_pass, &frame, TC_ACT_OK, cfg)?;

    // Container egress and ingress, no service: load balancer lookups and counters.
    let before = dp.endpoint_counters(0)?;
    let v = time_repeat(from, &frame, TC_ACT_OK, cfg)?;
    let w = time_repeat(to, &frame, TC_ACT_OK, cfg)?;
    let after = dp.endpoint_counters(0)?;
    ensure!(
        after.from_container.packets - before.from_container.packets == runs(cfg)
            && after.to_container.packets - before.to_container.packets == runs(cfg)
            && after.drops == before.drops,
        "container programs did not count every run as forwarded: {after:?}"
    );
    let floor_name = "hm_tc_pass";
    rows.push(row(
        "hm_lxc_from_container: container egress, no service".into(),
        v,
        tc_floor,
        floor_name,
        Target::RatioAtMost(MAX_FLOOR_RATIO),
    ));
    rows.push(row(
        "hm_lxc_to_container: container ingress, no service reply".into(),
        w,
        tc_floor,
        floor_name,
        Target::RatioAtMost(MAX_FLOOR_RATIO),
    ));

    // Overlay egress (tunnel lookup, tunnel key, MAC rewrite) with a growing HM_TUNNELS.
    let mut loaded = 0;
    let mut by_size = Vec::new();
    for size in [10u32, 1000] {
        add_tunnels(&mut dp, loaded, size)?;
        loaded = size;
        by_size.push((size, overlay_egress(&dp, egress, size, cfg)?));
    }
    // As many as the map takes (its max_entries, hivemind_common::MAX_TUNNELS).
    while loaded < 1 << 20 {
        if add_tunnels(&mut dp, loaded, loaded + 1).is_err() {
            break;
        }
        loaded += 1;
    }
    ensure!(loaded > 1000, "HM_TUNNELS took only {loaded} entries");
    by_size.push((loaded, overlay_egress(&dp, egress, loaded, cfg)?));
    notes.push(format!(
        "HM_TUNNELS (LPM trie) took {loaded} entries before the kernel refused the next one: \
         that is the largest size measured. Tunnels are /24 subnets 10.128.0.0/24 upwards; the \
         timed frame goes to the last one added."
    ));
    for (size, ns) in &by_size {
        rows.push(row(
            format!("hm_overlay_egress: encapsulation decision, {size} tunnels"),
            *ns,
            tc_floor,
            floor_name,
            Target::RatioAtMost(MAX_FLOOR_RATIO),
        ));
    }
    if let (Some((small, a)), Some((large, b))) = (by_size.first(), by_size.last()) {
        rows.push(row(
            format!("hm_overlay_egress growth: {large} vs {small} tunnels"),
            *b,
            *a,
            &format!("{small} tunnels"),
            Target::RatioAtMost(MAX_GROWTH),
        ));
    }

    // Underlay XDP: validation of a valid VXLAN frame.
    let vxlan = vxlan_frame(PAYLOAD);
    let xdp_floor = time_repeat(xdp_pass, &vxlan, XDP_PASS, cfg)?;
    let before = dp.overlay_counters()?;
    let v = time_repeat(underlay, &vxlan, XDP_PASS, cfg)?;
    let after = dp.overlay_counters()?;
    ensure!(
        after.underlay_vxlan.packets - before.underlay_vxlan.packets == runs(cfg)
            && after.drops == before.drops,
        "hm_xdp_underlay did not count every run as valid VXLAN: {after:?}"
    );
    rows.push(row(
        "hm_xdp_underlay: valid VXLAN frame (decap validation)".into(),
        v,
        xdp_floor,
        "hm_xdp_pass",
        Target::RatioAtMost(MAX_FLOOR_RATIO),
    ));
    // The same checks at TC ingress (what `auto` picks on a veth underlay).
    let tc_vxlan_floor = time_repeat(tc_pass, &vxlan, TC_ACT_OK, cfg)?;
    let before = dp.overlay_counters()?;
    let v = time_repeat(tc_underlay, &vxlan, TC_ACT_OK, cfg)?;
    let after = dp.overlay_counters()?;
    ensure!(
        after.underlay_vxlan.packets - before.underlay_vxlan.packets == runs(cfg)
            && after.drops == before.drops,
        "hm_tc_underlay did not count every run as valid VXLAN: {after:?}"
    );
    rows.push(row(
        "hm_tc_underlay: valid VXLAN frame (decap validation at TC ingress)".into(),
        v,
        tc_vxlan_floor,
        "hm_tc_pass",
        Target::RatioAtMost(MAX_FLOOR_RATIO),
    ));
    notes.push(format!(
        "Per-packet cost: BPF_PROG_TEST_RUN with repeat = {} on a {}-byte frame ({}-byte VXLAN \
         frame for the underlay programs), {} calls per figure, median of the kernel's `duration` (mean ns per \
         run, program only). Baseline: the empty program of the same kind (hm_tc_pass, \
         hm_xdp_pass) on the same frame in the same run. After each timing the program's \
         counters must have grown by exactly the number of runs on the forwarded path, so the \
         timed path is the success path.",
        cfg.repeat,
        frame.len(),
        vxlan.len(),
        cfg.rounds
    ));

    rows.extend(service_paths(&mut dp, from, tc_pass, tc_floor, cfg, notes)?);
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
    dp.set_service(SERVICE_VIP, 80, TCP, &backends)
        .context("adding the benchmark service")?;
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

    let before = dp.service_counters()?;
    // The flow of `established` gets its conntrack entry from its first packet.
    let ct = time_single(from, &mut |_| established.clone(), TC_ACT_OK, cfg)?;
    let mid = dp.service_counters()?;
    // New flows: a fresh source port each time; the caller keeps rounds * single_runs * 2
    // conntrack entries below HM_CT's size, so nothing is evicted.
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
    let calls = u64::from(cfg.single_runs) * cfg.rounds as u64;
    ensure!(
        mid.translated.packets - before.translated.packets == calls
            && mid.new_connections - before.new_connections == 1
            && after.translated.packets - mid.translated.packets == calls
            && after.new_connections - mid.new_connections == calls
            && after.drops == before.drops,
        "service paths did not translate every packet: {after:?}"
    );
    notes.push(format!(
        "Service DNAT (4 backends): each packet is one BPF_PROG_TEST_RUN call with repeat 1 \
         ({} calls per round, {} rounds, median of the round means), because a rerun on the \
         same buffer would see the backend address instead of the VIP. The timer overhead of a \
         single-run call ({:.1} ns here: hm_tc_pass with repeat 1 minus with repeat {}) is \
         subtracted; the baseline is hm_tc_pass with repeat {}. Translations and new \
         connections are checked in the service counters afterwards.",
        cfg.single_runs, cfg.rounds, overhead, cfg.repeat, cfg.repeat
    ));
    Ok(vec![
        row(
            "hm_lxc_from_container: service VIP, established flow (conntrack hit, DNAT)".into(),
            (ct - overhead).max(0.0),
            tc_floor,
            "hm_tc_pass",
            Target::RatioAtMost(MAX_FLOOR_RATIO),
        ),
        row(
            "hm_lxc_from_container: service VIP, new flow (backend pick, 2 conntrack inserts)"
                .into(),
            (new - overhead).max(0.0),
            tc_floor,
            "hm_tc_pass",
            Target::None,
        ),
    ])
}
