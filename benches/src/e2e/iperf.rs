//! iperf3 runs between the containers of a [`Topology`], what they report, and a profile of
//! Hivemind's programs during a UDP run.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use hivemind::dataplane::UnderlayProgram;
use hivemind_tests::netns::{NetNs, run as run_cmd};

use super::topology::Topology;
use super::{PORT, SERVER};
use crate::report::number;

/// The iperf3 server in container B; killed (by its own pid) when dropped.
pub(super) struct Server(Child);

impl Server {
    pub(super) fn start(ns: &NetNs) -> Result<Self> {
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
pub(super) fn iperf(
    ns: &NetNs,
    target: Ipv4Addr,
    seconds: u32,
    extra: &[&str],
) -> Result<serde_json::Value> {
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
            // Client and server on different CPUs, the same for every configuration.
            "-A",
            "0,1",
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

pub(super) fn tcp_gbits(json: &serde_json::Value) -> Result<f64> {
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .context("iperf3 JSON without end.sum_received.bits_per_second")
}

/// Packets per second the receiver got: `sum_received` where iperf3 has it, else the
/// client's `sum` (packets sent minus the server's lost count).
pub(super) fn udp_pps(json: &serde_json::Value) -> Result<f64> {
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
pub(super) fn udp_profile(prefix: &str, seconds: u32) -> Result<String> {
    let topo = Topology::new(prefix)?;
    let _planes = topo.hivemind(0, UnderlayProgram::Auto, true)?;
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
pub(super) fn tx_stats(node: &NetNs) -> Result<(u64, u64)> {
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

/// What a profiled run measures: 64-byte UDP (its rate in packets per second) or one TCP
/// stream (in Gbit/s).
#[derive(Clone, Copy)]
enum Load {
    Udp,
    Tcp,
}

impl Load {
    fn args(self) -> &'static [&'static str] {
        match self {
            Self::Udp => &["-u", "-l", "64", "-b", "0"],
            Self::Tcp => &[],
        }
    }

    /// The run's rate as the profile note gives it.
    fn rate(self, json: &serde_json::Value) -> Result<String> {
        Ok(match self {
            Self::Udp => format!("{} kpps", number(udp_pps(json)? / 1e3)),
            Self::Tcp => format!("{} Gbit/s", number(tcp_gbits(json)?)),
        })
    }
}

/// The symbols that took at least 0.7% of the samples of `perf record -a` (the whole machine;
/// at most 14, the idle loop included)
/// during one run of `load` on Hivemind without policy (`hivemind`) or on the kernel overlay,
/// with the rate the run reached. A run of its own, outside the figures: sampling costs time.
fn perf_top(
    prefix: &str,
    seconds: u32,
    hivemind: bool,
    load: Load,
) -> Result<(String, Vec<String>)> {
    let topo = Topology::new(prefix)?;
    let _planes = if hivemind {
        topo.hivemind(0, UnderlayProgram::Auto, true)?
    } else {
        topo.kernel_overlay()?;
        Vec::new()
    };
    let _server = Server::start(&topo.cb)?;
    let data = std::env::temp_dir().join(format!("{prefix}-perf.data"));
    let mut record = Command::new("perf")
        .arg("record")
        .arg("-a")
        .arg("-q")
        .arg("-o")
        .arg(&data)
        .args(["--", "sleep", &(seconds + 1).to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("perf record (apt install linux-perf)")?;
    let json = iperf(&topo.ca, SERVER, seconds, load.args());
    let recorded = record.wait();
    let rate = load.rate(&json?)?;
    if !recorded.context("perf record")?.success() {
        bail!("perf record failed");
    }
    let report = Command::new("perf")
        .arg("report")
        .arg("-i")
        .arg(&data)
        .args([
            "--stdio",
            "--no-children",
            "--sort",
            "sym",
            "--percent-limit",
            "0.7",
            "-q",
        ])
        .output()
        .context("perf report");
    let _ = std::fs::remove_file(&data);
    let report = report?;
    let top = String::from_utf8_lossy(&report.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let percent = words.next()?.strip_suffix('%')?;
            let symbol: Vec<&str> = words.filter(|w| !w.starts_with('[')).collect();
            Some(format!("{percent}% {}", symbol.join(" ")))
        })
        .take(14)
        .collect();
    Ok((rate, top))
}

/// Where the CPU goes in a UDP run and in one TCP stream, Hivemind against the kernel overlay
/// (perf, whole machine).
pub(super) fn perf_profiles(prefix: &str, seconds: u32) -> Result<String> {
    let mut parts = Vec::new();
    for (load, what) in [
        (Load::Udp, "`iperf3 -u -l 64 -b 0`"),
        (Load::Tcp, "`iperf3` (one TCP stream)"),
    ] {
        let (kernel_rate, kernel) = perf_top(prefix, seconds, false, load)?;
        let (hm_rate, hm) = perf_top(prefix, seconds, true, load)?;
        parts.push(format!(
            "{what}: kernel overlay ({kernel_rate}): {}. Hivemind without policy ({hm_rate}): {}.",
            kernel.join(", "),
            hm.join(", ")
        ));
    }
    Ok(format!(
        "End to end, CPU profiles (separate {seconds} s runs under `perf record -a`, whole \
         machine, the symbols with the most samples, at least 0.7%; not the figures above; in \
         this VM perf samples on a timer, so interrupt-enable points such as \
         _raw_spin_unlock_irqrestore collect samples that belong to the work done with \
         interrupts off, and pv_native_safe_halt is idle time). {}",
        parts.join(" ")
    ))
}
