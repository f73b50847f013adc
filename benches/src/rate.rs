//! Tier 2: packet rate with XDP live frames (`BPF_F_TEST_XDP_LIVE_FRAMES`): the kernel builds
//! real xdp_frames and, for XDP_PASS, hands them to the stack of the ingress device. The
//! device is one end of a veth pair in a namespace this harness creates and deletes, never the
//! root namespace's.

use std::ffi::CString;

use anyhow::{Context as _, Result, bail, ensure};
use hivemind::dataplane::{Dataplane, PROG_XDP_PASS, PROG_XDP_UNDERLAY};
use hivemind_tests::netns::{NetNs, run as run_cmd};

use crate::{
    bpf::xdp_live_frames,
    packets::vxlan_frame,
    report::{Row, Target},
};

const SECTION: &str = "Packet rate (XDP live frames)";
/// hm_xdp_underlay keeps at least 70% of the empty program's rate.
const MIN_RATE_RATIO: f64 = 0.7;
const PAYLOAD: usize = 22;

pub struct Config {
    /// Frames per BPF_PROG_TEST_RUN call.
    pub frames: u32,
    /// Calls per program, alternating between the two; the median is reported.
    pub rounds: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub(crate) fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name)?;
    // SAFETY: a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("if_nametoindex {name}: {}", std::io::Error::last_os_error());
    }
    Ok(index)
}

pub fn run(ns_name: &str, cfg: &Config, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let ns = NetNs::create(ns_name)?;
    run_cmd(ns.command("ip").args([
        "link", "add", "hmb-rx", "type", "veth", "peer", "name", "hmb-tx",
    ]))?;
    run_cmd(ns.command("ip").args(["link", "set", "hmb-rx", "up"]))?;
    run_cmd(ns.command("ip").args(["link", "set", "hmb-tx", "up"]))?;

    let mut dp = Dataplane::load().context("loading the data plane")?;
    dp.load_floor_programs()?;
    let pass = dp.program_fd_for_test(PROG_XDP_PASS)?;
    let underlay = dp.program_fd_for_test(PROG_XDP_UNDERLAY)?;
    let frame = vxlan_frame(PAYLOAD);
    let before = dp.overlay_counters()?;
    let frames = cfg.frames;
    let rounds = cfg.rounds;
    let frame_len = frame.len();
    let (pass_rates, underlay_rates) = ns.run(move || -> Result<(Vec<f64>, Vec<f64>)> {
        let index = ifindex("hmb-rx")?;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            a.push(xdp_live_frames(pass, &frame, index, frames).context("live frames")?);
            b.push(xdp_live_frames(underlay, &frame, index, frames).context("live frames")?);
        }
        Ok((a, b))
    })??;
    let after = dp.overlay_counters()?;
    let expected = u64::from(cfg.frames) * cfg.rounds as u64;
    ensure!(
        after.underlay_vxlan.packets - before.underlay_vxlan.packets == expected
            && after.drops == before.drops,
        "hm_xdp_underlay did not pass every live frame as valid VXLAN: {after:?}"
    );
    drop(ns);

    notes.push(format!(
        "Packet rate: BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES, {} frames of {} bytes \
         per call, ingress_ifindex = one end of a veth pair in the harness's own namespace, \
         {} calls per program alternating, median of frames / wall-clock time of the call. \
         Both programs return XDP_PASS, so every frame is turned into an skb and handed to the \
         veth's stack, where it is dropped as addressed to another host (destination MAC of \
         no device): the rate includes that stack entry, for both programs alike. \
         hm_xdp_underlay's counter is checked to have grown by every frame.",
        cfg.frames, frame_len, cfg.rounds
    ));
    Ok(vec![Row {
        section: SECTION,
        name: "hm_xdp_underlay: valid VXLAN frames, XDP_PASS to the stack".into(),
        value: median(underlay_rates) / 1e6,
        baseline: Some(median(pass_rates) / 1e6),
        baseline_name: "hm_xdp_pass".into(),
        unit: "Mpps",
        target: Target::RatioAtLeast(MIN_RATE_RATIO),
    }])
}
