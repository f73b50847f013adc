//! A container's endpoint: its egress and ingress with no policy and no service, then its
//! ingress policy on `hm_lxc_to_container` (an allowed established flow and a denied packet,
//! with growing numbers of CIDR rules). The programs find the endpoint by the skb's interface,
//! so the figures need one: a veth in a namespace of their own, attached with
//! `attach_endpoint`, whose ifindex each run carries in its `__sk_buff`.

use std::{collections::BTreeSet, net::Ipv4Addr};

use anyhow::{Context as _, Result, ensure};
use hivemind::{
    dataplane::{Dataplane, PROG_FROM_CONTAINER, PROG_TC_PASS, PROG_TO_CONTAINER},
    policy::{Allow, EndpointRules, PeerMatch, Protocol},
};
use hivemind_common::{MAX_POLICY_CIDR_ENTRIES, reason};
use hivemind_tests::netns::{NetNs, run as run_cmd};

use super::{
    ACK, Config, MAX_FLOOR_RATIO, PAYLOAD, SIZES, SYN, TC_ACT_SHOT, count, row, runs, scale_rows,
    sizes_text, time_repeat_on,
};
use crate::{
    bpf::{TC_ACT_OK, test_run_on},
    packets::{tcp_frame, udp_frame},
    rate::ifindex,
    report::{Row, Target},
};

const POLICY_ENDPOINT: u32 = 7;
/// The endpoint's container: destination of every policy figure's packet.
const POLICY_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);
/// Peers of the CIDR rules: one /32 per rule from 10.200.0.0 upwards, TCP `ALLOWED_PORT`.
const FIRST_RULE_PEER: u32 = u32::from_be_bytes([10, 200, 0, 0]);
/// Peer of the established flow: allowed by a rule of its own only for its first packet.
const ESTABLISHED_PEER: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const ALLOWED_PORT: u16 = 8080;
const DENIED_PORT: u16 = 9090;
/// Host-side veth standing in for the endpoint's. It stays down, so the only packets its
/// programs count are the timed ones.
const POLICY_VETH: &str = "hmpp0";

/// Ingress rules of `n` CIDR peers (plus `extra`), each a /32 on TCP `ALLOWED_PORT`.
fn cidr_rules(n: u32, extra: Option<Ipv4Addr>) -> EndpointRules {
    let allow = |ip| Allow {
        peer: PeerMatch::Cidr(ip, 32),
        protocol: Protocol::Tcp,
        port_min: ALLOWED_PORT,
        port_max: ALLOWED_PORT,
    };
    let mut ingress: BTreeSet<Allow> = (0..n)
        .map(|i| allow(Ipv4Addr::from(FIRST_RULE_PEER + i)))
        .collect();
    ingress.extend(extra.map(allow));
    EndpointRules {
        ingress: Some(ingress),
        egress: None,
    }
}

/// What every packet of a container with no policy and no service costs, both ways: UDP from
/// the endpoint's own address and MAC to a peer, and back (no service: nothing to translate,
/// nothing to restore). The endpoint must count every run as forwarded.
fn container_paths(
    dp: &Dataplane,
    (from, to, pass): (i32, i32, i32),
    ifindex: u32,
    cfg: &Config,
) -> Result<Vec<Row>> {
    let out = udp_frame(POLICY_POD, 8080, ESTABLISHED_PEER, 40000, PAYLOAD);
    let back = udp_frame(ESTABLISHED_PEER, 40000, POLICY_POD, 8080, PAYLOAD);
    let floor = time_repeat_on(pass, &out, ifindex, TC_ACT_OK, cfg)?;
    let before = dp.endpoint_counters(POLICY_ENDPOINT)?;
    let egress = time_repeat_on(from, &out, ifindex, TC_ACT_OK, cfg)?;
    let ingress = time_repeat_on(to, &back, ifindex, TC_ACT_OK, cfg)?;
    let after = dp.endpoint_counters(POLICY_ENDPOINT)?;
    ensure!(
        after.from_container.packets - before.from_container.packets == runs(cfg)
            && after.to_container.packets - before.to_container.packets == runs(cfg)
            && after.drops == before.drops,
        "the container's programs did not count every run as forwarded: {after:?}"
    );
    let target = Target::RatioAtMost(MAX_FLOOR_RATIO);
    Ok(vec![
        row(
            "hm_lxc_from_container: container egress, no policy, no service".into(),
            egress,
            floor,
            "hm_tc_pass",
            target,
        ),
        row(
            "hm_lxc_to_container: container ingress, no policy, no service".into(),
            ingress,
            floor,
            "hm_tc_pass",
            target,
        ),
    ])
}

/// The endpoint's ingress policy on `hm_lxc_to_container`, in a namespace of its own (see the
/// module documentation) with a data plane of its own.
pub(super) fn paths(cfg: &Config, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    // `hmbench-<pid>-` like every namespace of the harness, so a killed run's is cleaned up.
    let ns = NetNs::create(&format!("hmbench-{}-pp", std::process::id()))?;
    run_cmd(ns.command("ip").args([
        "link",
        "add",
        POLICY_VETH,
        "type",
        "veth",
        "peer",
        "name",
        "hmpp0p",
    ]))?;
    let cfg = *cfg;
    let (rows, more) = ns.run(move || policy_in_namespace(&cfg))??;
    notes.extend(more);
    Ok(rows)
}

fn policy_in_namespace(cfg: &Config) -> Result<(Vec<Row>, Vec<String>)> {
    let ifindex = ifindex(POLICY_VETH)?;
    let mut dp = Dataplane::load().context("loading the data plane")?;
    dp.load_floor_programs()?;
    let pass = dp.program_fd_for_test(PROG_TC_PASS)?;
    let from = dp.program_fd_for_test(PROG_FROM_CONTAINER)?;
    let to = dp.program_fd_for_test(PROG_TO_CONTAINER)?;
    dp.attach_endpoint(ifindex, POLICY_ENDPOINT, POLICY_POD)
        .context("attaching the policy endpoint")?;
    let mut rows = container_paths(&dp, (from, to, pass), ifindex, cfg)?;
    let established = tcp_frame(
        ESTABLISHED_PEER,
        40000,
        POLICY_POD,
        ALLOWED_PORT,
        ACK,
        PAYLOAD - 12,
    );
    let floor = time_repeat_on(pass, &established, ifindex, TC_ACT_OK, cfg)?;

    // The established flow passes on a rule of its own in every policy: a changed policy
    // forgets the endpoint's flows, so each size's first (untimed) packet is checked against
    // the rules and makes the conntrack entry every timed packet then passes on.

    // HM_POLICY_CIDR holds one entry per /32 rule here: the largest size is what it holds
    // beside the established flow's rule.
    let largest = SIZES[SIZES.len() - 1].min(MAX_POLICY_CIDR_ENTRIES - 1);
    let mut sizes: Vec<u32> = SIZES.iter().map(|&n| n.min(largest)).collect();
    sizes.dedup();
    let (mut allowed, mut denied) = (Vec::new(), Vec::new());
    for &n in &sizes {
        dp.set_endpoint_policy(POLICY_ENDPOINT, &cidr_rules(n, Some(ESTABLISHED_PEER)))
            .with_context(|| format!("loading {n} CIDR rules"))?;
        let first = test_run_on(to, &established, ifindex, 1).context("BPF_PROG_TEST_RUN")?;
        ensure!(
            first.retval == TC_ACT_OK,
            "the established flow's first packet was not allowed with {n} rules"
        );
        let before = dp.endpoint_counters(POLICY_ENDPOINT)?;
        let a = time_repeat_on(to, &established, ifindex, TC_ACT_OK, cfg)?;
        let mid = dp.endpoint_counters(POLICY_ENDPOINT)?;
        ensure!(
            mid.to_container.packets - before.to_container.packets == runs(cfg)
                && mid.drops == before.drops,
            "established flow with {n} rules: not every run delivered: {mid:?}"
        );
        // The last rule's peer on a port no rule allows: the CIDR lookup finds its /32, whose
        // port range does not match.
        let peer = Ipv4Addr::from(FIRST_RULE_PEER + n - 1);
        let deny = tcp_frame(peer, 40001, POLICY_POD, DENIED_PORT, SYN, PAYLOAD - 12);
        let d = time_repeat_on(to, &deny, ifindex, TC_ACT_SHOT, cfg)?;
        let after = dp.endpoint_counters(POLICY_ENDPOINT)?;
        let mut expected = mid.drops.clone();
        *expected.entry(reason::DROP_POLICY).or_default() += runs(cfg);
        ensure!(
            after.drops == expected && after.to_container == mid.to_container,
            "denied packet with {n} rules: not every run dropped as DROP_POLICY: {after:?}"
        );
        allowed.push((n, a));
        denied.push((n, d));
    }
    let mut notes = vec![format!(
        "Container egress and ingress, no policy, no service: the endpoint below before any \
         policy is written (the daemon's attach_endpoint, no service lists it), a 64-byte UDP \
         frame from its address and MAC to {ESTABLISHED_PEER}:40000 (hm_lxc_from_container, \
         host routing off: the kernel routes it) and the same flow back \
         (hm_lxc_to_container); every run must count as forwarded for the endpoint. Timed as \
         above against hm_tc_pass on the same frame and context. Endpoint ingress policy (hm_lxc_to_container): a down veth in a namespace of its own, \
         attached as an endpoint with {} ingress rules of one /32 CIDR peer each (10.200.0.0 \
         upwards, TCP {ALLOWED_PORT}; {} HM_POLICY_CIDR entries); every run carries the veth's \
         ifindex in its __sk_buff. Timed as above (repeat {}, {} calls, median); the baseline is \
         hm_tc_pass on the same frame with the same context. Allowed: a TCP ACK of a flow whose \
         first packet passed on a rule that no measured policy contains, so every timed run \
         passes on its conntrack entry alone; the endpoint must count every run as delivered. \
         Denied: a TCP SYN from the last rule's peer to port {DENIED_PORT}, so the CIDR lookup \
         finds that peer's entry and its port range refuses; the endpoint must count every run \
         as a DROP_POLICY drop (the rate-limited flow record, one per second, is part of the \
         path).",
        sizes_text(&allowed),
        sizes_text(&allowed),
        cfg.repeat,
        cfg.rounds
    )];
    // If the map cannot hold the largest size asked for, show that it refuses one entry more.
    if largest < SIZES[SIZES.len() - 1] {
        let refused = dp.set_endpoint_policy(POLICY_ENDPOINT, &cidr_rules(largest + 1, None));
        ensure!(
            refused.is_err(),
            "HM_POLICY_CIDR took {} entries, more than MAX_POLICY_CIDR_ENTRIES",
            largest + 1
        );
        notes.push(format!(
            "HM_POLICY_CIDR holds hivemind_common::MAX_POLICY_CIDR_ENTRIES = {} entries for all \
             endpoints together, and one /32 rule is one entry: {} rules cannot be loaded \
             (checked: {} are refused), so {} rules is the largest size measured.",
            count(MAX_POLICY_CIDR_ENTRIES),
            count(SIZES[SIZES.len() - 1]),
            count(largest + 1),
            count(largest)
        ));
    }
    rows.extend(scale_rows(
        &allowed,
        (
            "hm_lxc_to_container",
            "ingress policy, allowed established flow (conntrack hit)",
            "CIDR rules",
        ),
        floor,
        "hm_tc_pass",
    ));
    rows.extend(scale_rows(
        &denied,
        (
            "hm_lxc_to_container",
            "ingress policy, denied (DROP_POLICY)",
            "CIDR rules",
        ),
        floor,
        "hm_tc_pass",
    ));
    Ok((rows, notes))
}
