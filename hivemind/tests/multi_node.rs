//! End to end on a 3-node testbed: membership, replicated state, spread
//! placement, container traffic across the eBPF VXLAN overlay, and failover
//! when a node's daemon is killed.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hivemind_tests::daemon::{ctr, eventually};
use hivemind_tests::image::build_test_image;
use hivemind_tests::testbed::{Testbed, run_on_testbed};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hivemind");

fn running(containers: &[Value], app: &str) -> Vec<Value> {
    containers
        .iter()
        .filter(|c| c["app"] == app && c["status"] == "running")
        .cloned()
        .collect()
}

/// The id of the replica on `node`.
fn on_node(containers: &[Value], node: &str) -> Result<String> {
    containers
        .iter()
        .find(|c| c["node"] == node)
        .and_then(|c| c["id"].as_str())
        .map(str::to_string)
        .with_context(|| format!("no replica on {node}"))
}

fn nodes_of(containers: &[Value]) -> Vec<String> {
    let mut nodes: Vec<String> = containers
        .iter()
        .filter_map(|c| c["node"].as_str().map(str::to_string))
        .collect();
    nodes.sort();
    nodes
}

#[test]
fn three_nodes_spread_talk_across_the_overlay_and_fail_over() -> Result<()> {
    run_on_testbed(
        "three_nodes_spread_talk_across_the_overlay_and_fail_over",
        3,
        Path::new(BIN),
        scenario,
    )
}

fn scenario(testbed: &mut Testbed, dir: &Path) -> Result<()> {
    // Membership: every node sees all three, each with its own /24.
    let nodes = testbed.node(2).daemon.get("/api/nodes")?;
    let mut subnets: Vec<&str> = nodes
        .as_array()
        .context("nodes")?
        .iter()
        .filter_map(|n| n["subnet"].as_str())
        .collect();
    subnets.sort();
    subnets.dedup();
    assert_eq!(subnets.len(), 3, "distinct subnets: {nodes}");
    // Nodes 1 and 2 route in eBPF and balance at the socket, node 3 does neither (see the
    // testbed).
    for (index, on) in [(1, true), (2, true), (3, false)] {
        let health = testbed.node(index).daemon.get("/api/health")?;
        assert_eq!(
            health["network"]["host_routing"], on,
            "node {index}: {health}"
        );
        assert_eq!(health["network"]["socket_lb"], on, "node {index}: {health}");
    }

    let image = build_test_image(&dir.join("image"))?;
    let reference = testbed.serve_image(&image, "hm/test-app", "1")?;

    // A write on node 1 is visible on node 3.
    let output = testbed.node(1).daemon.cli(&[
        "app",
        "deploy",
        "--image",
        &reference,
        "--name",
        "web",
        "--replicas",
        "3",
        "--env",
        "GREETING=hello",
    ]);
    assert!(
        output.status.success(),
        "deploy: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eventually(
        "the app is replicated to node 3",
        Duration::from_secs(10),
        || Ok(testbed.node(3).daemon.get("/api/apps/web").ok().map(|_| ())),
    )?;

    // Spread: one replica on each node, all running.
    let containers = eventually("3 running replicas", Duration::from_secs(90), || {
        let all = testbed.containers(2)?;
        let web = running(&all, "web");
        Ok((web.len() == 3).then_some(web))
    })?;
    assert_eq!(
        nodes_of(&containers),
        vec!["node-1", "node-2", "node-3"],
        "spread"
    );

    // Any node answers for the whole cluster: replicas counted on every
    // node, and the logs of every container, wherever it runs.
    eventually(
        "node-1 counts the 3 replicas of every node",
        Duration::from_secs(20),
        || {
            let app = testbed.node(1).daemon.get("/api/apps/web")?;
            Ok((app["running"] == 3 && app["status"] == "running").then_some(()))
        },
    )?;
    let logs = testbed
        .node(1)
        .daemon
        .cli(&["app", "logs", "--name", "web"]);
    let logs = String::from_utf8_lossy(&logs.stdout).into_owned();
    for container in &containers {
        let id = container["id"].as_str().context("id")?;
        assert!(
            logs.contains(&format!("[{id}] serving as {id}")),
            "node-1's app logs show {id}: {logs}"
        );
    }
    let remote = on_node(&containers, "node-3")?;
    let (status, body) = testbed.get_from(
        1,
        &testbed
            .node(1)
            .daemon
            .url(&format!("/api/containers/{remote}/logs")),
    )?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.trim(), format!("serving as {remote}"));

    // The cluster key rotates on every node while containers serve, and no
    // node is ever seen down.
    let rotation = std::thread::scope(|scope| -> Result<std::process::Output> {
        let rotating = scope.spawn(|| {
            testbed
                .node(2)
                .daemon
                .cli(&["cluster", "gossip-key", "rotate"])
        });
        while !rotating.is_finished() {
            none_down_anywhere(testbed)?;
            for container in &containers {
                let ip = container["ip"].as_str().context("ip")?;
                let (status, _) = testbed.get_from(1, &format!("http://{ip}/greeting"))?;
                anyhow::ensure!(
                    status == 200,
                    "a container stopped serving during the rotation"
                );
            }
        }
        rotating
            .join()
            .map_err(|_| anyhow::anyhow!("the rotation thread panicked"))
    })?;
    assert!(
        rotation.status.success(),
        "rotate: {}\n{}",
        String::from_utf8_lossy(&rotation.stdout),
        String::from_utf8_lossy(&rotation.stderr)
    );
    let primary = testbed.node(1).daemon.get("/api/cluster/gossip-key")?["primary"].clone();
    for index in 1..=3 {
        let keys = testbed.node(index).daemon.get("/api/cluster/gossip-key")?;
        assert_eq!(
            keys["keys"],
            serde_json::json!([primary]),
            "node-{index}: {keys}"
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    none_down_anywhere(testbed)?;

    // Every node reaches every container, across the overlay.
    for container in &containers {
        let ip = container["ip"].as_str().context("ip")?;
        for index in 1..=3 {
            let body = eventually(
                &format!("node-{index} -> {ip}"),
                Duration::from_secs(20),
                || match testbed.get_from(index, &format!("http://{ip}/greeting")) {
                    Ok((200, body)) => Ok(Some(body)),
                    Ok((status, body)) => bail!("{status}: {body}"),
                    Err(e) => Err(e),
                },
            )?;
            assert_eq!(body.trim(), "hello");
        }
    }

    // Container to container across nodes, from inside a container on node 1.
    let on = |node: &str| -> Result<&Value> {
        containers
            .iter()
            .find(|c| c["node"] == node)
            .with_context(|| format!("no replica on {node}"))
    };
    let client = on("node-1")?["id"].as_str().context("id")?.to_string();
    let server_ip = on("node-2")?["ip"].as_str().context("ip")?.to_string();
    let socket = testbed.node(1).data_dir.join("containerd.sock");
    let before = overlay_sent(testbed, 1)?;
    let answer = ctr(
        &socket,
        &[
            "tasks",
            "exec",
            "--exec-id",
            "probe",
            &client,
            "sh",
            "-c",
            // busybox nc: static wget resolves the "http" service through NSS,
            // which a static binary cannot load in this minimal image.
            &format!("printf 'GET /greeting HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {server_ip} 80"),
        ],
    )?;
    assert!(
        answer.starts_with("HTTP/1.") && answer.trim_end().ends_with("hello"),
        "container on node-1 reached node-2's container: {answer}"
    );
    let after = overlay_sent(testbed, 1)?;
    assert!(
        after > before,
        "the packets went through hm_overlay_egress ({before} -> {after})"
    );
    prometheus_scrapes_every_node(testbed, dir)?;
    let received = testbed.node(2).daemon.get("/api/metrics/overlay")?;
    assert!(
        received["counters"]["received"]["packets"].as_u64() > Some(0),
        "node-2 decapsulated through hm_overlay_ingress: {received}"
    );

    // kill -9 node 3's daemon: it is declared down and its replica replaced.
    let killed_at = Instant::now();
    testbed.node_mut(3).daemon.kill9();
    node3_state(testbed, "down", 30)?;
    let detected = killed_at.elapsed();
    let replaced = eventually(
        "3 replicas on nodes 1 and 2",
        Duration::from_secs(90),
        || {
            let web = running(&testbed.containers(1)?, "web");
            let live: Vec<Value> = web.into_iter().filter(|c| c["node"] != "node-3").collect();
            Ok((live.len() == 3).then_some(live))
        },
    )?;
    for container in &replaced {
        let ip = container["ip"].as_str().context("ip")?;
        let (status, body) = testbed.get_from(1, &format!("http://{ip}/greeting"))?;
        assert_eq!((status, body.trim()), (200, "hello"), "replacement serves");
    }
    let serving = killed_at.elapsed();
    eprintln!(
        "failover: node-3 declared down after {:.1}s, replacements serving after {:.1}s",
        detected.as_secs_f64(),
        serving.as_secs_f64()
    );

    // Node 3 comes back: the cluster converges, no duplicates, and node 3
    // stops the copy it kept running while its daemon was dead.
    let node3 = testbed.node(3);
    let ns = hivemind_tests::netns::NetNs::existing(&node3.ns.name);
    testbed.node_mut(3).daemon.restart(&ns)?;
    testbed.wait_converged(3)?;
    eventually(
        "exactly 3 replicas after node-3 returned",
        Duration::from_secs(60),
        || {
            let all = testbed.containers(3)?;
            let web: Vec<Value> = all.into_iter().filter(|c| c["app"] == "web").collect();
            Ok((web.len() == 3 && running(&web, "web").len() == 3).then_some(()))
        },
    )?;
    let socket3 = testbed.node(3).data_dir.join("containerd.sock");
    eventually(
        "node-3 stopped its stale task",
        Duration::from_secs(30),
        || {
            Ok(hivemind_tests::daemon::ctr_ids(&socket3, &["tasks", "ls"])?
                .is_empty()
                .then_some(()))
        },
    )?;

    // Bin-pack puts both replicas on one node.
    let output = testbed.node(1).daemon.cli(&[
        "app",
        "deploy",
        "--image",
        &reference,
        "--name",
        "packed",
        "--replicas",
        "2",
        "--placement",
        "binpack",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let packed = eventually("2 packed replicas", Duration::from_secs(60), || {
        let web = running(&testbed.containers(1)?, "packed");
        Ok((web.len() == 2).then_some(web))
    })?;
    let nodes = nodes_of(&packed);
    assert_eq!(nodes[0], nodes[1], "binpack: one node");
    let output = testbed
        .node(1)
        .daemon
        .cli(&["app", "delete", "--name", "packed"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    secrets_on_every_node(testbed, &reference)?;

    // Delete from node 2: gone everywhere.
    let output = testbed
        .node(2)
        .daemon
        .cli(&["app", "delete", "--name", "web"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eventually("no containers left", Duration::from_secs(60), || {
        Ok(testbed.containers(1)?.is_empty().then_some(()))
    })?;

    // A graceful stop announces leave: the others show it as left.
    testbed.node_mut(3).daemon.terminate()?;
    node3_state(testbed, "left", 15)?;
    Ok(())
}

/// A secret made on node 2 (which got the secrets key from node 1 when it
/// joined) reaches a container on every node as a file, and a rotation
/// sent to node 3 reaches all of them without a restart.
fn secrets_on_every_node(testbed: &Testbed, reference: &str) -> Result<()> {
    let cli_ok = |index: usize, args: &[&str]| -> Result<String> {
        let output = testbed.node(index).daemon.cli(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            bail!(
                "{args:?} on node {index}: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(stdout)
    };
    cli_ok(
        2,
        &[
            "security",
            "create-secret",
            "--name",
            "token",
            "--value",
            "first-value",
        ],
    )?;
    cli_ok(
        1,
        &[
            "app",
            "deploy",
            "--image",
            reference,
            "--name",
            "vault",
            "--replicas",
            "3",
            "--secret",
            "token:/run/token",
        ],
    )?;
    let vault = eventually("3 running vault replicas", Duration::from_secs(60), || {
        let all = running(&testbed.containers(1)?, "vault");
        Ok((all.len() == 3).then_some(all))
    })?;
    assert_eq!(
        nodes_of(&vault),
        vec!["node-1", "node-2", "node-3"],
        "spread"
    );
    let read = |container: &Value, exec_id: &str| -> Result<String> {
        let node = container["node"].as_str().context("node")?;
        let index: usize = node.trim_start_matches("node-").parse()?;
        let socket = testbed.node(index).data_dir.join("containerd.sock");
        let id = container["id"].as_str().context("id")?;
        ctr(
            &socket,
            &[
                "tasks",
                "exec",
                "--exec-id",
                exec_id,
                id,
                "cat",
                "/run/token",
            ],
        )
    };
    for container in &vault {
        assert_eq!(read(container, "t1")?, "first-value", "{container}");
    }
    cli_ok(
        3,
        &[
            "security",
            "rotate",
            "--name",
            "token",
            "--value",
            "second-value",
        ],
    )?;
    for (n, container) in vault.iter().enumerate() {
        eventually(
            "the rotated secret on every node",
            Duration::from_secs(30),
            || Ok((read(container, &format!("t2-{n}"))? == "second-value").then_some(())),
        )?;
    }
    let after = running(&testbed.containers(1)?, "vault");
    assert_eq!(nodes_of(&after).len(), 3);
    for container in &after {
        assert_eq!(container["restarts"], 0, "no restart: {container}");
        assert!(
            vault.iter().any(|c| c["id"] == container["id"]),
            "same containers"
        );
    }
    cli_ok(1, &["app", "delete", "--name", "vault"])?;
    cli_ok(1, &["security", "delete", "--name", "token"])?;
    Ok(())
}

/// A Prometheus process, killed on drop.
struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real Prometheus in node 1's namespace scrapes every node's `/metrics`
/// over HTTPS (the cluster CA, a bearer token) and finds the web app's
/// container series on each node, flow accounting and the overlay.
fn prometheus_scrapes_every_node(testbed: &Testbed, dir: &Path) -> Result<()> {
    let home = dir.join("prometheus");
    std::fs::create_dir_all(&home)?;
    let targets: Vec<String> = (1..=3)
        .map(|i| format!("'{}:3000'", testbed.node(i).ip()))
        .collect();
    let config = home.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
             - job_name: hivemind\n    scheme: https\n    tls_config:\n      ca_file: {}\n    \
             authorization:\n      credentials: {}\n    static_configs:\n      \
             - targets: [{}]\n",
            testbed.node(1).daemon.ca_cert().display(),
            hivemind_tests::daemon::TEST_TOKEN,
            targets.join(", ")
        ),
    )?;
    let log = std::fs::File::create(home.join("prometheus.log"))?;
    let ns = &testbed.node(1).ns;
    let _prometheus = Prometheus(
        ns.command("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                home.join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:9090")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start prometheus (apt-get install prometheus)")?,
    );
    let query = |q: &str| -> Result<Vec<Value>> {
        let url =
            reqwest::Url::parse_with_params("http://127.0.0.1:9090/api/v1/query", &[("query", q)])?;
        let (status, body) = hivemind_tests::daemon::http(ns, "GET", url.as_str(), None)?;
        if status != 200 {
            bail!("prometheus answered {status}: {body}");
        }
        let answer: Value = serde_json::from_str(&body)?;
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    };
    let scraped = |q: &str, what: &str, want: usize| {
        eventually(what, Duration::from_secs(60), || {
            Ok(query(q).ok().filter(|r| r.len() == want).map(|_| ()))
        })
        .with_context(|| {
            let targets = hivemind_tests::daemon::http(
                ns,
                "GET",
                "http://127.0.0.1:9090/api/v1/targets",
                None,
            )
            .map(|(_, body)| body)
            .unwrap_or_default();
            format!(
                "{what}: {:?}\ntargets: {targets}\nprometheus log:\n{}",
                query(q),
                std::fs::read_to_string(home.join("prometheus.log")).unwrap_or_default()
            )
        })
    };
    scraped("up == 1", "prometheus scrapes the 3 nodes", 3)?;
    scraped(
        r#"count by (node) (container_network_receive_packets_total{app="web"} > 0)"#,
        "the web containers' packets on each node",
        3,
    )?;
    scraped(
        r#"count by (node) (container_memory_working_set_bytes{app="web"} > 0)"#,
        "the web containers' memory on each node",
        3,
    )?;
    // Flow accounting on every node (flow events by verdict are checked
    // where policies make them, in policy.rs).
    scraped(
        "count by (node) (hivemind_flows_lost_total)",
        "flow accounting on each node",
        3,
    )?;
    scraped(
        r#"sum(hivemind_overlay_packets_total{node="node-1",direction="sent"}) > 0"#,
        "node-1's overlay traffic",
        1,
    )?;

    // The dashboard's longer history: node 1 reads it from this Prometheus once configured
    // (before, a 404 that says how); node 2, which cannot reach node 1's loopback, says so.
    let daemon = &testbed.node(1).daemon;
    let (status, body) = testbed.get_from(1, &daemon.url("/api/traffic/history?range=1h"))?;
    assert!(
        status == 404 && body.contains("configure-dashboard"),
        "{status} {body}"
    );
    let set = daemon.cli(&[
        "observability",
        "configure-dashboard",
        "--prometheus",
        "http://127.0.0.1:9090",
    ]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let (status, body) = testbed.get_from(1, &daemon.url("/api/traffic/history?range=2h"))?;
    assert!(status == 400 && body.contains("`range`"), "{status} {body}");
    // Requests to web while Prometheus watches: its rates are not zero.
    let web: Vec<String> = daemon
        .get("/api/containers")?
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["app"] == "web")
        .filter_map(|c| c["ip"].as_str().map(str::to_string))
        .collect();
    let mut last = Value::Null;
    let history = eventually(
        "web's traffic in the history from Prometheus",
        Duration::from_secs(60),
        || {
            for ip in &web {
                let _ = testbed.get_from(1, &format!("http://{ip}/greeting"));
            }
            let answer = daemon.get("/api/traffic/history?range=1h")?;
            last = answer.clone();
            let moved = |samples: &Value| {
                samples.as_array().is_some_and(|s| {
                    s.iter()
                        .any(|p| p["rx_packets"].as_f64().is_some_and(|v| v > 0.0))
                })
            };
            let nodes = answer["nodes"].as_object().map_or(0, |n| n.len());
            Ok((moved(&answer["apps"]["web"]) && nodes == 3).then_some(answer))
        },
    )
    .with_context(|| format!("the last answer: {last}"))?;
    assert_eq!(history["window_s"], 3600, "{history}");
    assert_eq!(history["source"], "http://127.0.0.1:9090", "{history}");
    let elsewhere = eventually(
        "node 2 follows the setting",
        Duration::from_secs(10),
        || {
            let (status, body) = testbed.get_from(
                2,
                &testbed.node(2).daemon.url("/api/traffic/history?range=1h"),
            )?;
            Ok((status == 502).then_some(body))
        },
    )?;
    assert!(
        elsewhere.contains("http://127.0.0.1:9090") && elsewhere.contains("prometheus_unavailable"),
        "{elsewhere}"
    );
    Ok(())
}

/// Waits until node-1 shows node-3 in `state`.
/// Every node sees all three as members: alive, or suspect for a moment
/// (a probe lost on a busy machine), never down.
fn none_down_anywhere(testbed: &Testbed) -> Result<()> {
    for index in 1..=3 {
        let nodes = testbed.node(index).daemon.get("/api/nodes")?;
        let states: Vec<&str> = nodes
            .as_array()
            .context("nodes")?
            .iter()
            .filter_map(|n| n["state"].as_str())
            .collect();
        anyhow::ensure!(
            states.len() == 3 && states.iter().all(|s| *s == "alive" || *s == "suspect"),
            "node-{index} sees {states:?}"
        );
    }
    Ok(())
}

fn node3_state(testbed: &Testbed, state: &str, limit_s: u64) -> Result<()> {
    eventually(
        &format!("node-3 {state} on node-1"),
        Duration::from_secs(limit_s),
        || {
            let nodes = testbed.node(1).daemon.get("/api/nodes")?;
            let seen = nodes.as_array().is_some_and(|n| {
                n.iter()
                    .any(|n| n["name"] == "node-3" && n["state"] == state)
            });
            Ok(seen.then_some(()))
        },
    )
}

fn overlay_sent(testbed: &Testbed, index: usize) -> Result<u64> {
    let overlay = testbed.node(index).daemon.get("/api/metrics/overlay")?;
    overlay["counters"]["sent"]["packets"]
        .as_u64()
        .with_context(|| format!("overlay counters: {overlay}"))
}
