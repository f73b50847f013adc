//! Control plane, in process: scheduler throughput over simulated nodes, and the idle memory
//! of `hivemind web --mock`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use hivemind::scheduler::{BinPack, NodeView, PlacementRequest, SchedulingStrategy, Spread, place};
use hivemind_tests::{daemon::http, netns::NetNs};

use crate::report::{Row, Target};

const SECTION: &str = "Control plane";
const NODES: usize = 1000;
const REPLICAS: u32 = 3;
/// Placements (replicas) per second.
const MIN_PLACEMENTS: f64 = 10_000.0;

fn nodes() -> Vec<NodeView> {
    (0..NODES)
        .map(|i| NodeView {
            id: format!("node-{i:04}"),
            name: format!("n{i}"),
            labels: BTreeMap::from([("zone".to_string(), format!("z{}", i % 3))]),
            cpu_cores: 16.0,
            memory_bytes: 64 << 30,
            // Varied load, so the strategies have something to compare.
            cpu_used: (i % 13) as f64,
            memory_used: ((i % 29) as u64) << 30,
        })
        .collect()
}

fn request(i: usize) -> PlacementRequest {
    PlacementRequest {
        app: format!("app-{i}"),
        replicas: REPLICAS,
        cpu: 0.5,
        memory: 256 << 20,
        node: None,
        node_labels: BTreeMap::new(),
    }
}

/// The simplest scheduler that still looks at every node: per replica, the first node (in id
/// order) with room, one pass, no scoring.
fn first_fit(request: &PlacementRequest, nodes: &[NodeView]) -> Vec<String> {
    let mut free: Vec<(f64, u64)> = nodes
        .iter()
        .map(|n| (n.cpu_cores - n.cpu_used, n.memory_bytes - n.memory_used))
        .collect();
    let mut placed = Vec::new();
    for _ in 0..request.replicas {
        if let Some(i) = free
            .iter()
            .position(|(c, m)| *c >= request.cpu && *m >= request.memory)
        {
            free[i].0 -= request.cpu;
            free[i].1 -= request.memory;
            placed.push(nodes[i].id.clone());
        }
    }
    placed
}

/// Replicas placed per second by `f`, called for `budget` of wall-clock time.
fn rate(budget: Duration, mut f: impl FnMut(usize) -> Result<usize>) -> Result<f64> {
    let start = Instant::now();
    let mut replicas = 0;
    let mut calls = 0;
    while start.elapsed() < budget {
        replicas += f(calls)?;
        calls += 1;
    }
    Ok(replicas as f64 / start.elapsed().as_secs_f64())
}

pub fn scheduler(budget: Duration, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let nodes = nodes();
    let baseline = rate(budget, |i| {
        Ok(std::hint::black_box(first_fit(&request(i), &nodes)).len())
    })?;
    let mut rows = Vec::new();
    let strategies: [(&str, &dyn SchedulingStrategy); 2] =
        [("spread", &Spread), ("bin-pack", &BinPack)];
    for (name, strategy) in strategies {
        let value = rate(budget, |i| {
            let placed = place(&request(i), &nodes, &[], strategy)
                .with_context(|| format!("{name} placement"))?;
            Ok(std::hint::black_box(placed).len())
        })?;
        rows.push(Row {
            section: SECTION,
            name: format!("Scheduler throughput, {name}, {NODES} nodes ({REPLICAS}-replica apps)"),
            value,
            baseline: Some(baseline),
            baseline_name: "first-fit scan".into(),
            unit: "placements/s",
            target: Target::ValueAtLeast(MIN_PLACEMENTS),
        });
    }
    notes.push(format!(
        "Scheduler: `hivemind::scheduler::place` called in a loop for {:.1} s per strategy, one \
         app of {REPLICAS} replicas (0.5 cpu, 256 MiB) per call on the same {NODES} simulated \
         nodes (16 cores, 64 GiB, varied load, no constraints), placements = replicas placed. \
         Baseline: a first-fit scan of the same nodes per replica (no scoring) in the same run.",
        budget.as_secs_f64()
    ));
    Ok(rows)
}

/// A child process killed and reaped on drop, and a directory removed on drop.
struct Guard {
    child: Option<Child>,
    dir: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn vm_rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

pub fn daemon_memory(
    binary: &Path,
    ns_name: &str,
    idle: Duration,
    notes: &mut Vec<String>,
) -> Result<Vec<Row>> {
    if !binary.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p hivemind`",
            binary.display()
        );
    }
    let ns = NetNs::create(ns_name)?;
    let dir = std::env::temp_dir().join(format!("hivemind-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut guard = Guard {
        child: None,
        dir: dir.clone(),
    };
    let log = std::fs::File::create(dir.join("web.log"))?;
    let child = ns
        .command(&binary.display().to_string())
        .args(["web", "--mock", "--bind", "127.0.0.1", "--port", "3000"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--containerd")
        .arg(dir.join("no-containerd.sock"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("spawning hivemind web --mock")?;
    let pid = child.id();
    guard.child = Some(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = http(&ns, "GET", "http://127.0.0.1:3000/api/health", None) {
            break;
        }
        if let Some(status) = guard
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            let log = std::fs::read_to_string(dir.join("web.log")).unwrap_or_default();
            bail!("hivemind web --mock exited with {status}: {log}");
        }
        if Instant::now() > deadline {
            bail!("hivemind web --mock did not answer /api/health within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(idle);
    let rss_mb = vm_rss_kb(pid)? as f64 / 1024.0;
    // target/<profile>/hivemind: the part of the path that does not depend on the checkout.
    let tail: Vec<_> = binary.components().rev().take(3).collect();
    let shown: PathBuf = tail.into_iter().rev().collect();
    let shown = shown.display();
    drop(guard);
    drop(ns);
    notes.push(format!(
        "Daemon memory: `{shown} web --mock --bind 127.0.0.1 --port 3000` started in a \
         network namespace of the harness, VmRSS from /proc/PID/status {:.0} s after \
         /api/health first answered (no request in between), then the process is killed. No \
         baseline process.",
        idle.as_secs_f64()
    ));
    Ok(vec![Row {
        section: SECTION,
        name: "Idle memory (VmRSS), hivemind web --mock (info: no runtime, no data plane)".into(),
        value: rss_mb,
        baseline: None,
        baseline_name: "none".into(),
        unit: "MB",
        target: Target::None,
    }])
}
