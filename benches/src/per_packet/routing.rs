//! Host routing's paths out of `hm_lxc_from_container`: local delivery (`bpf_redirect_peer`)
//! and encapsulation for a remote container (`bpf_redirect` to hm-vxlan), in a namespace of
//! their own with the devices host routing needs (two endpoint veths, bridge, VXLAN device,
//! underlay), every run carrying the source veth's ifindex.
//!
//! Local delivery to a container's own MAC rewrites nothing, so it is timed with `repeat`.
//! Encapsulation decrements the TTL, so a rerun on the same buffer would end on the kernel's
//! path after 63 runs: it is timed one call per packet with the timer overhead subtracted, as
//! the service figures are.

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result, ensure};
use hivemind::dataplane::{
    Dataplane, IpcacheEntry, PROG_FROM_CONTAINER, PROG_TC_PASS, UnderlayProgram,
};
use hivemind_common::container_mac;
use hivemind_tests::netns::{NetNs, run as run_cmd};

use super::{
    CLIENT, CONTAINER_IDENTITY, Config, MAX_FLOOR_RATIO, PAYLOAD, UNDERLAY_PEER, row, runs,
    time_repeat_on, time_single_on,
};
use crate::{
    bpf::TC_ACT_OK,
    packets::udp_frame,
    rate::ifindex,
    report::{Row, Target},
};

const TC_ACT_REDIRECT: u32 = 7;
const LOCAL_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);
const REMOTE_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 2);
const SOURCE_ENDPOINT: u32 = 11;
const LOCAL_ENDPOINT: u32 = 12;

pub(super) fn paths(cfg: &Config, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let ns = NetNs::create(&format!("hmbench-{}-hr", std::process::id()))?;
    for (a, b) in [
        ("hmhr0", "hmhr0p"),
        ("hmhr1", "hmhr1p"),
        ("hmhru", "hmhrup"),
    ] {
        run_cmd(
            ns.command("ip")
                .args(["link", "add", a, "type", "veth", "peer", "name", b]),
        )?;
    }
    run_cmd(
        ns.command("ip")
            .args(["link", "add", "hm0", "type", "bridge"]),
    )?;
    run_cmd(ns.command("ip").args([
        "link", "add", "hm-vxlan", "mtu", "1450", "type", "vxlan", "external", "dstport", "4789",
    ]))?;
    let cfg = *cfg;
    let (rows, note) = ns.run(move || in_namespace(&cfg))??;
    notes.push(note);
    Ok(rows)
}

fn in_namespace(cfg: &Config) -> Result<(Vec<Row>, String)> {
    let (source, local) = (ifindex("hmhr0")?, ifindex("hmhr1")?);
    let mut dp = Dataplane::load().context("loading the data plane")?;
    dp.load_floor_programs()?;
    let pass = dp.program_fd_for_test(PROG_TC_PASS)?;
    let from = dp.program_fd_for_test(PROG_FROM_CONTAINER)?;
    dp.attach_endpoint(source, SOURCE_ENDPOINT, CLIENT)?;
    dp.attach_endpoint(local, LOCAL_ENDPOINT, LOCAL_POD)?;
    dp.set_node_config(ifindex("hm0")?, Ipv4Addr::new(10, 244, 1, 1), 24)?;
    dp.attach_overlay(ifindex("hm-vxlan")?, ifindex("hmhru")?, UnderlayProgram::Tc)?;
    dp.set_tunnel(Ipv4Addr::new(10, 244, 2, 0), 24, UNDERLAY_PEER, 1)?;
    // The ipcache as the daemon writes it: the remote container placed on its node.
    for (addr, entry) in [
        (CLIENT, IpcacheEntry::local(CONTAINER_IDENTITY)),
        (LOCAL_POD, IpcacheEntry::local(CONTAINER_IDENTITY)),
        (
            REMOTE_POD,
            IpcacheEntry::remote(CONTAINER_IDENTITY, UNDERLAY_PEER),
        ),
    ] {
        dp.set_ipcache(addr, entry)?;
    }
    dp.set_host_routing(true)?;

    // Local delivery to the container's own MAC (same subnet): nothing rewritten.
    let mut to_local = udp_frame(CLIENT, 40000, LOCAL_POD, 8080, PAYLOAD);
    to_local[..6].copy_from_slice(&container_mac(LOCAL_POD.octets()));
    let floor = time_repeat_on(pass, &to_local, source, TC_ACT_OK, cfg)?;
    let before = dp.endpoint_counters(LOCAL_ENDPOINT)?;
    let local_ns = time_repeat_on(from, &to_local, source, TC_ACT_REDIRECT, cfg)?;
    let after = dp.endpoint_counters(LOCAL_ENDPOINT)?;
    ensure!(
        after.to_container.packets - before.to_container.packets == runs(cfg),
        "local delivery: not every run delivered to the destination: {after:?}"
    );

    // Encapsulation for a remote container: one call per packet.
    let to_remote = udp_frame(CLIENT, 40000, REMOTE_POD, 8080, PAYLOAD);
    let single_floor = time_single_on(pass, &to_remote, source, TC_ACT_OK, cfg)?;
    let overhead = (single_floor - floor).max(0.0);
    let sent = |dp: &Dataplane| -> Result<u64> {
        Ok(dp
            .overlay_counters()?
            .sent_by_node
            .get(&UNDERLAY_PEER)
            .map_or(0, |c| c.packets))
    };
    let before = sent(&dp)?;
    let remote_ns = time_single_on(from, &to_remote, source, TC_ACT_REDIRECT, cfg)?;
    let calls = u64::from(cfg.single_runs) * cfg.rounds as u64;
    ensure!(
        sent(&dp)? - before == calls,
        "encapsulation: not every packet counted as sent to the remote node"
    );
    let rows = vec![
        row(
            "hm_lxc_from_container: host routing, local container (bpf_redirect_peer)".into(),
            local_ns,
            floor,
            "hm_tc_pass",
            Target::RatioAtMost(MAX_FLOOR_RATIO),
        ),
        row(
            "hm_lxc_from_container: host routing, remote container (tunnel key, MACs, TTL, \
             bpf_redirect to hm-vxlan)"
                .into(),
            (remote_ns - overhead).max(0.0),
            floor,
            "hm_tc_pass",
            Target::RatioAtMost(MAX_FLOOR_RATIO),
        ),
    ];
    let note = format!(
        "Host routing (hm_lxc_from_container with --host-routing on): two endpoint veths, a \
         bridge, hm-vxlan and an underlay veth in a namespace of their own, one tunnel, the three \
         containers in the ipcache (the remote one placed on its node); every \
         run carries the source veth's ifindex, the source and destination endpoints enforce \
         no policy. Local container: a 64-byte UDP frame addressed to the destination \
         container's MAC, so nothing is rewritten and every rerun takes the same path (repeat \
         {}, {} calls, median); the destination endpoint must count every run as delivered. \
         Remote container: the TTL decrement makes reruns diverge, so each packet is one call \
         with repeat 1 ({} calls per round, {} rounds) and the single-call timer overhead \
         ({overhead:.1} ns) is subtracted; the overlay must count every packet as sent. Both \
         against hm_tc_pass with repeat {} on the same frame and context.",
        cfg.repeat, cfg.rounds, cfg.single_runs, cfg.rounds, cfg.repeat
    );
    Ok((rows, note))
}
