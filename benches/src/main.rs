//! `hivemind-bench`: the benchmark harness behind `cargo xtask bench`.
//!
//! Measures, each against a baseline taken in the same run: the per-packet cost of the eBPF
//! programs (BPF_PROG_TEST_RUN), the XDP packet rate (live frames), scheduler throughput,
//! the daemon's idle memory, SWIM membership at scale (simulated members, virtual time) and
//! end-to-end throughput across a two-node overlay (iperf3).
//! Prints a markdown report and writes the same text to `--out`.
//!
//! Runs as root only (BPF programs, network namespaces). Everything it creates (namespaces,
//! processes, temporary directories) is removed when it returns, errors included; namespaces
//! left by a killed earlier run are removed at start.
//!
//! Usage: `hivemind-bench [--quick] [--only SECTION,...] [--out FILE] [--command TEXT]
//! [--hivemind BINARY]`; sections: per-packet, rate, scheduler, memory, deploy, scan, failover, rollouts,
//! membership, e2e. A report of some sections says so in its header.

mod bpf;
mod control;
mod deploy;
mod e2e;
mod failover;
mod membership;
mod packets;
mod per_packet;
mod rate;
mod report;
mod rollouts;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, bail};
use hivemind_tests::daemon::netns_with_prefix;

use crate::report::{Machine, render};

/// Prefix of every namespace this harness creates: `hmbench-<pid>-<what>`.
const NS_PREFIX: &str = "hmbench-";

/// The sections of a run, in order.
const SECTIONS: [&str; 11] = [
    "per-packet",
    "rate",
    "scheduler",
    "memory",
    "deploy",
    "failover",
    "scan",
    "rollouts",
    "membership",
    "e2e",
    // HTTP through the ingress and its baseline alone (part of e2e; only when asked for).
    "ingress",
];

struct Args {
    quick: bool,
    /// Sections to run; empty: all.
    only: Vec<String>,
    out: Option<PathBuf>,
    command: String,
    hivemind: PathBuf,
}

fn parse_args() -> Result<Args> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("benches/ has no parent")?
        .to_path_buf();
    let mut args = Args {
        quick: false,
        only: Vec::new(),
        out: None,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        hivemind: root.join("target/release/hivemind"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--only" => {
                let list = it.next().context("--only needs a list of sections")?;
                for section in list.split(',') {
                    if !SECTIONS.contains(&section) {
                        bail!("--only: unknown section {section:?}; sections: {SECTIONS:?}");
                    }
                    args.only.push(section.to_string());
                }
            }
            "--out" => args.out = Some(it.next().context("--out needs a path")?.into()),
            "--command" => args.command = it.next().context("--command needs a text")?,
            "--hivemind" => args.hivemind = it.next().context("--hivemind needs a path")?.into(),
            other => bail!(
                "unknown argument {other}; usage: hivemind-bench [--quick] [--only SECTION,...] [--out FILE] \
                 [--command TEXT] [--hivemind BINARY]"
            ),
        }
    }
    Ok(args)
}

/// Deletes `hmbench-<pid>-*` namespaces whose process is gone (a run killed before its
/// cleanup).
fn remove_stale_namespaces() {
    for name in netns_with_prefix(NS_PREFIX) {
        let pid = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !PathBuf::from(format!("/proc/{pid}")).exists()) {
            eprintln!("bench: removing namespace {name} left by an earlier run");
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &name])
                .status();
        }
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "bench: must run as root: it loads eBPF programs, runs BPF_PROG_TEST_RUN and \
             creates network namespaces"
        );
        std::process::exit(2);
    }
    remove_stale_namespaces();
    // Before any work, so the load average is the machine's, not ours.
    let machine = Machine::detect();
    let pid = std::process::id();
    let quick = args.quick;
    let mut notes = Vec::new();
    let mut rows = Vec::new();

    let wanted = |section: &str| args.only.is_empty() || args.only.iter().any(|s| s == section);
    if wanted("per-packet") {
        eprintln!("bench: per-packet cost (BPF_PROG_TEST_RUN)");
        let cfg = if quick {
            per_packet::Config {
                repeat: 100_000,
                rounds: 3,
                single_runs: 2_000,
            }
        } else {
            per_packet::Config {
                repeat: 2_000_000,
                rounds: 7,
                single_runs: 8_000,
            }
        };
        rows.extend(per_packet::run(&cfg, &mut notes)?);
    }

    if wanted("rate") {
        eprintln!("bench: packet rate (XDP live frames)");
        let cfg = if quick {
            rate::Config {
                frames: 1_000_000,
                rounds: 3,
            }
        } else {
            rate::Config {
                frames: 10_000_000,
                rounds: 7,
            }
        };
        rows.extend(rate::run(
            &format!("{NS_PREFIX}{pid}-rate"),
            &cfg,
            &mut notes,
        )?);
    }

    if wanted("scheduler") {
        eprintln!("bench: scheduler throughput");
        let budget = Duration::from_millis(if quick { 300 } else { 3000 });
        rows.extend(control::scheduler(budget, &mut notes)?);
    }

    if wanted("memory") {
        eprintln!("bench: daemon memory");
        let idle = Duration::from_secs(if quick { 1 } else { 5 });
        rows.extend(control::daemon_memory(
            &args.hivemind,
            &format!("{NS_PREFIX}{pid}-web"),
            idle,
            &mut notes,
        )?);
    }

    if wanted("deploy") {
        eprintln!("bench: deploy latency and daemon memory with containers (containerd)");
        let cfg = if quick {
            deploy::Config {
                runs: 3,
                idle: Duration::from_secs(1),
                containers: 10,
                window: Duration::from_secs(3),
            }
        } else {
            deploy::Config {
                runs: 20,
                idle: Duration::from_secs(5),
                containers: 500,
                window: Duration::from_secs(15),
            }
        };
        rows.extend(deploy::run(
            &args.hivemind,
            &format!("{NS_PREFIX}{pid}-deploy"),
            &cfg,
            &mut notes,
        )?);
    }

    if wanted("scan") {
        eprintln!("bench: offline image scan (containerd)");
        rows.extend(deploy::scan(
            &args.hivemind,
            &format!("{NS_PREFIX}{pid}-scan"),
            if quick { 10 } else { 100 },
        )?);
    }

    if wanted("failover") {
        eprintln!("bench: failure detection and replacement (3-node testbed)");
        rows.extend(failover::run(
            &args.hivemind,
            if quick { 1 } else { 3 },
            &mut notes,
        )?);
    }

    if wanted("rollouts") {
        eprintln!("bench: rollouts under load (3-node testbed)");
        rows.extend(rollouts::run(&args.hivemind, &mut notes)?);
    }

    if wanted("membership") {
        eprintln!("bench: SWIM membership at scale (simulated members, virtual time)");
        rows.extend(membership::run(
            if quick { &[100] } else { &[100, 1000] },
            &mut notes,
        )?);
    }

    if wanted("e2e") {
        eprintln!("bench: end to end across the overlay (iperf3)");
        let cfg = if quick {
            e2e::Config {
                seconds: 1,
                rounds: 1,
                rules: vec![10, 1_000],
                http_only: false,
            }
        } else {
            e2e::Config {
                seconds: 3,
                rounds: 7,
                rules: vec![10, 1_000, 10_000],
                http_only: false,
            }
        };
        rows.extend(e2e::run(
            &format!("{NS_PREFIX}{pid}-e2e"),
            &cfg,
            &mut notes,
        )?);
    }

    if args.only.iter().any(|s| s == "ingress") {
        eprintln!("bench: HTTP through the ingress");
        rows.extend(e2e::run(
            &format!("{NS_PREFIX}{pid}-http"),
            &e2e::Config {
                seconds: if quick { 1 } else { 3 },
                rounds: if quick { 1 } else { 7 },
                rules: Vec::new(),
                http_only: true,
            },
            &mut notes,
        )?);
    }

    notes.push(
        "Not measured by the harness: IPVS (this kernel has none), and anything across more \
         than two nodes on the wire."
            .into(),
    );
    let doc = render(&machine, &args.command, quick, &args.only, &rows, &notes);
    print!("{doc}");
    if let Some(out) = &args.out {
        std::fs::write(out, &doc).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("bench: wrote {}", out.display());
    }
    Ok(())
}
