//! Failure detection and replacement on a 3-node testbed (the one `cargo xtask testbed up`
//! builds: nodes in namespaces on a bridge, each with its own containerd): an app of 3
//! replicas spread over the nodes, then kill -9 of node 3's daemon. Measured from the kill:
//! node 1 lists node 3 as `down`, and 3 replicas on nodes 1 and 2 answer HTTP.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use hivemind_tests::image::build_test_image;
use hivemind_tests::testbed::Testbed;
use serde_json::Value;

use crate::report::{Row, Target};

const SECTION: &str = "Control plane";
/// Poll period of the measurement: the resolution of the figures.
const POLL: Duration = Duration::from_millis(50);

fn running_web(testbed: &Testbed) -> Result<Vec<Value>> {
    Ok(testbed
        .containers(1)?
        .into_iter()
        .filter(|c| c["app"] == "web" && c["status"] == "running")
        .collect())
}

/// Polls `check` every [`POLL`] until it is true or `limit` passes.
fn wait(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > limit {
            bail!("{what}: not within {} s", limit.as_secs());
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// One round on a fresh testbed: (detection, replacement serving).
fn round(binary: &Path, tag: &str, dir: &Path) -> Result<(Duration, Duration)> {
    let mut testbed = Testbed::up(tag, 3, binary, dir)?;
    let image = build_test_image(&dir.join("image"))?;
    let reference = testbed.serve_image(&image, "hm/test-app", "1")?;
    let deploy = testbed.node(1).daemon.cli(&[
        "app",
        "deploy",
        "--image",
        &reference,
        "--name",
        "web",
        "--replicas",
        "3",
    ]);
    if !deploy.status.success() {
        bail!("deploy: {}", String::from_utf8_lossy(&deploy.stderr));
    }
    wait("3 replicas on 3 nodes", Duration::from_secs(120), || {
        running_web(&testbed).is_ok_and(|web| {
            let mut nodes: Vec<&str> = web.iter().filter_map(|c| c["node"].as_str()).collect();
            nodes.sort();
            nodes == ["node-1", "node-2", "node-3"]
        })
    })?;

    let killed = Instant::now();
    testbed.node_mut(3).daemon.kill9();
    wait("node-3 down on node-1", Duration::from_secs(60), || {
        testbed.node(1).daemon.get("/api/nodes").is_ok_and(|nodes| {
            nodes.as_array().is_some_and(|list| {
                list.iter()
                    .any(|n| n["name"] == "node-3" && n["state"] == "down")
            })
        })
    })?;
    let detected = killed.elapsed();
    wait(
        "3 replicas on nodes 1 and 2 serving",
        Duration::from_secs(120),
        || {
            let Ok(web) = running_web(&testbed) else {
                return false;
            };
            let live: Vec<&Value> = web.iter().filter(|c| c["node"] != "node-3").collect();
            live.len() == 3
                && live.iter().all(|c| {
                    c["ip"].as_str().is_some_and(|ip| {
                        matches!(
                            testbed.get_from(1, &format!("http://{ip}/greeting")),
                            Ok((200, _))
                        )
                    })
                })
        },
    )?;
    Ok((detected, killed.elapsed()))
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

pub fn run(binary: &Path, rounds: usize, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    if !binary.exists() {
        bail!("{} is missing: build it first", binary.display());
    }
    let mut detected = Vec::new();
    let mut replaced = Vec::new();
    for i in 0..rounds {
        eprintln!("bench: failover round {}/{rounds}", i + 1);
        let dir = std::env::temp_dir().join(format!(
            "hivemind-bench-failover-{}-{i}",
            std::process::id()
        ));
        // Namespace names are short: `hmtb-<tag>-...`.
        let tag = format!("f{}{i}", std::process::id() % 10_000);
        let result = round(binary, &tag, &dir).with_context(|| format!("failover round {}", i + 1));
        let _ = std::fs::remove_dir_all(&dir);
        let (d, r) = result?;
        detected.push(d);
        replaced.push(r);
    }
    let list = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.1}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    notes.push(format!(
        "Failure detection: {rounds} rounds, each on a fresh 3-node testbed (the nodes of \
         `cargo xtask testbed up`: namespaces on a bridge, a containerd each, images from a \
         registry on the bridge). An app of 3 replicas spread one per node, then kill -9 of \
         node 3's daemon; from the kill, polled every {} ms: node 1's GET /api/nodes shows \
         node 3 `down` (detection), and 3 replicas on nodes 1 and 2 are running and each \
         answers GET /greeting from node 1 (replacement). Medians reported; per round, in s: \
         detection [{}], replacement [{}]. SWIM settings: probe every 1 s, 300 ms probe \
         timeout, 3 indirect probes, suspect for 2 s before down. No baseline process: the \
         targets are absolute.",
        POLL.as_millis(),
        list(&detected),
        list(&replaced)
    ));
    let row = |name: &str, value: Duration, limit_s: f64| Row {
        section: SECTION,
        name: name.into(),
        value: value.as_secs_f64(),
        baseline: None,
        baseline_name: "none".into(),
        unit: "s",
        target: Target::ValueAtMost(limit_s),
    };
    Ok(vec![
        row(
            "Failure detection: kill -9 of a node's daemon to `down` on the others (3 nodes)",
            median(detected),
            5.0,
        ),
        row(
            "Replacement: kill -9 to replacement replicas serving (3 nodes)",
            median(replaced),
            15.0,
        ),
    ])
}
