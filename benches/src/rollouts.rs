//! Rollouts under load on a 3-node testbed (the one `cargo xtask testbed up` builds): an app
//! of 6 replicas and a client in a container on node 1 requesting the service VIP one request
//! after another, all along. A rolling update (max-unavailable 1, max-surge 1), a blue-green
//! update switched by `rollout promote` and undone, and a 50% canary aborted. Measured: the
//! requests that failed over all of it, and the time from `promote` to the last node whose
//! eBPF service map gives the VIP to the new version alone.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use hivemind_tests::image::build_test_image;
use hivemind_tests::load::Load;
use hivemind_tests::testbed::Testbed;
use serde_json::Value;

use crate::report::{Row, Target};

const SECTION: &str = "Control plane";
const APP: &str = "web";
const REPLICAS: u64 = 6;
/// Poll period of the switch measurement.
const POLL: Duration = Duration::from_millis(10);

/// Polls `check` every 250 ms until it gives a value or `limit` passes.
fn wait<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if start.elapsed() > limit {
            bail!("{what}: not within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn cli(testbed: &Testbed, args: &[&str]) -> Result<()> {
    let output = testbed.node(1).daemon.cli(args);
    if !output.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

fn deploy(testbed: &Testbed, reference: &str, greeting: &str, strategy: &[&str]) -> Result<()> {
    let env = format!("GREETING={greeting}");
    let replicas = REPLICAS.to_string();
    let mut args = vec![
        "app",
        "deploy",
        "--image",
        reference,
        "--name",
        APP,
        "--replicas",
        &replicas,
        "--env",
        &env,
        "--ready-http",
        "/ready",
        "--ready-interval",
        "1s",
        "--ready-retries",
        "1",
    ];
    args.extend(strategy);
    cli(testbed, &args)
}

fn status(testbed: &Testbed) -> Option<Value> {
    testbed
        .node(2)
        .daemon
        .get(&format!("/api/apps/{APP}/rollout"))
        .ok()
}

/// Waits until the rollout is in `phase` with every replica of the current generation ready
/// and no other left.
fn settled(testbed: &Testbed, phase: &str) -> Result<()> {
    wait(
        &format!("the rollout {phase}"),
        Duration::from_secs(180),
        || status(testbed).filter(|s| s["phase"] == phase && s["complete"] == true),
    )
    .map(|_| ())
}

/// The backends (`ip:port`) node `index`'s eBPF service map gives `vip`:80.
fn backends(testbed: &Testbed, index: usize, vip: &str) -> Option<BTreeSet<String>> {
    let table = testbed
        .node(index)
        .daemon
        .get("/api/debug/bpf/services?local=true")
        .ok()?;
    let rows = table["tables"]
        .as_array()?
        .iter()
        .filter_map(|n| n["rows"].as_array())
        .flatten()
        .find(|r| r["vip"] == vip && r["port"] == 80)?
        .clone();
    Some(
        rows["backends"]
            .as_array()?
            .iter()
            .filter_map(|b| b.as_str().map(str::to_string))
            .collect(),
    )
}

/// One run: (failed requests, all requests, promote to the last node switched).
fn round(binary: &Path, tag: &str, dir: &Path) -> Result<(usize, usize, Duration)> {
    let mut testbed = Testbed::up(tag, 3, binary, dir)?;
    let image = build_test_image(&dir.join("image"))?;
    let reference = testbed.serve_image(&image, "hm/test-app", "1")?;
    cli(
        &testbed,
        &[
            "app", "deploy", "--image", &reference, "--name", "client", "--node", "node-1",
        ],
    )?;
    let rolling = [
        "--strategy",
        "rolling-update",
        "--max-unavailable",
        "1",
        "--max-surge",
        "1",
    ];
    deploy(&testbed, &reference, "v1", &rolling)?;
    let vip = wait("6 ready replicas", Duration::from_secs(180), || {
        let service = testbed
            .node(1)
            .daemon
            .get(&format!("/api/services/{APP}/endpoints"))
            .ok()?;
        let ready = service["endpoints"]
            .as_array()?
            .iter()
            .filter(|e| e["ready"] == true)
            .count() as u64;
        (ready == REPLICAS)
            .then(|| service["vip"].as_str().map(str::to_string))
            .flatten()
    })?;
    let client = testbed
        .containers(1)?
        .iter()
        .find(|c| c["app"] == "client" && c["status"] == "running")
        .and_then(|c| c["id"].as_str().map(str::to_string))
        .context("client container")?;
    let pid = testbed.task_pid(1, &client)?;
    let load = Load::start(pid, &vip);
    std::thread::sleep(Duration::from_secs(1));

    // A rolling update.
    deploy(&testbed, &reference, "v2", &rolling)?;
    settled(&testbed, "complete")?;

    // Blue-green: the switch, measured on every node's map, then the undo.
    deploy(
        &testbed,
        &reference,
        "v3",
        &[
            "--strategy",
            "blue-green",
            "--manual-promotion",
            "--scale-down-delay",
            "600",
        ],
    )?;
    wait("green whole", Duration::from_secs(180), || {
        status(&testbed).filter(|s| s["ready"] == REPLICAS && s["updated"] == REPLICAS)
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let blue = backends(&testbed, 1, &vip).context("the VIP's backends on node 1")?;
    let promoted = Instant::now();
    cli(&testbed, &["app", "rollout", "promote", "--name", APP])?;
    let mut switched = [None; 3];
    while switched.iter().any(Option::is_none) {
        if promoted.elapsed() > Duration::from_secs(30) {
            bail!("not every node switched within 30 s: {switched:?}");
        }
        for (i, at) in switched.iter_mut().enumerate() {
            if at.is_none()
                && backends(&testbed, i + 1, &vip)
                    .is_some_and(|now| !now.is_empty() && now.is_disjoint(&blue))
            {
                *at = Some(promoted.elapsed());
            }
        }
        std::thread::sleep(POLL);
    }
    let last = switched.into_iter().flatten().max().unwrap_or_default();
    cli(&testbed, &["app", "rollout", "undo", "--name", APP])?;
    settled(&testbed, "rolled-back")?;

    // A canary at 50%, aborted.
    deploy(
        &testbed,
        &reference,
        "v4",
        &[
            "--strategy",
            "canary",
            "--percentage",
            "50",
            "--interval",
            "3600",
        ],
    )?;
    wait("the canary at 50%", Duration::from_secs(180), || {
        status(&testbed).filter(|s| s["traffic_percent"] == 50.0)
    })?;
    cli(&testbed, &["app", "rollout", "abort", "--name", APP])?;
    settled(&testbed, "rolled-back")?;
    std::thread::sleep(Duration::from_secs(2));

    let answers = load.finish();
    let failed = answers.failed.len();
    Ok((failed, failed + answers.ok.len(), last))
}

pub fn run(binary: &Path, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    if !binary.exists() {
        bail!("{} is missing: build it first", binary.display());
    }
    let dir = std::env::temp_dir().join(format!("hivemind-bench-rollouts-{}", std::process::id()));
    let tag = format!("r{}", std::process::id() % 10_000);
    let result = round(binary, &tag, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let (failed, total, switch) = result.context("rollouts")?;
    notes.push(format!(
        "Rollouts: a fresh 3-node testbed, an app of 6 replicas and a client container on node \
         1 requesting the service VIP one request after another (a new connection each) \
         through a rolling update (max-unavailable 1, max-surge 1), a blue-green update \
         switched by `rollout promote` and undone, and a 50% canary aborted: {failed} of \
         {total} requests failed. The switch time runs from just before the promote command \
         to the last node whose eBPF service map (read through `GET \
         /api/debug/bpf/services?local=true`, polled every {} ms on each node in turn) gives \
         the VIP to the new version's backends alone; it includes the CLI's request and the \
         replication of the app record. No baseline process: the targets are absolute.",
        POLL.as_millis()
    ));
    Ok(vec![
        Row {
            section: SECTION,
            name: "Failed requests through a rolling update, a blue-green switch and undo, and a \
                   canary abort (6 replicas, 3 nodes)"
                .into(),
            value: failed as f64,
            baseline: None,
            baseline_name: "none".into(),
            unit: "requests",
            target: Target::ValueAtMost(0.0),
        },
        Row {
            section: SECTION,
            name: "Blue-green: promote to the last node's service map switched (3 nodes)".into(),
            value: switch.as_secs_f64(),
            baseline: None,
            baseline_name: "none".into(),
            unit: "s",
            target: Target::ValueAtMost(1.0),
        },
    ])
}
