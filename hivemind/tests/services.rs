//! Services end to end on a 3-node testbed: DNS names resolve from inside a
//! container, connections to the VIP spread over backends on every node
//! with the client's real address, readiness steers traffic and liveness
//! restarts a stuck backend.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hivemind_tests::daemon::{ctr, eventually};
use hivemind_tests::image::build_test_image;
use hivemind_tests::testbed::{Testbed, run_on_testbed};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hivemind");

#[test]
fn services_resolve_balance_and_follow_health() -> Result<()> {
    run_on_testbed(
        "services_resolve_balance_and_follow_health",
        3,
        Path::new(BIN),
        scenario,
    )
}

/// Runs `sh -c script` in `container` on node `index`.
fn exec(testbed: &Testbed, index: usize, container: &str, script: &str) -> Result<String> {
    let socket = testbed.node(index).containerd_socket();
    let exec_id = format!(
        "t{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    ctr(
        &socket,
        &[
            "tasks",
            "exec",
            "--exec-id",
            &exec_id,
            container,
            "sh",
            "-c",
            script,
        ],
    )
}

fn node_index(name: &str) -> Result<usize> {
    name.strip_prefix("node-")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("node name {name}"))
}

fn endpoints(testbed: &Testbed) -> Result<Vec<Value>> {
    Ok(
        testbed.node(1).daemon.get("/api/services/web/endpoints")?["endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    )
}

/// `count` HTTP requests from the client container to VIP:80/cgi-bin/whoami;
/// returns how many each backend hostname answered, checking that every
/// backend saw the client's own address.
fn spread(
    testbed: &Testbed,
    client: &str,
    client_ip: &str,
    vip: &str,
    count: usize,
) -> Result<BTreeMap<String, usize>> {
    let script = format!(
        "i=0; while [ $i -lt {count} ]; do printf 'GET /cgi-bin/whoami HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {vip} 80 | tail -n 1; i=$((i+1)); done"
    );
    let output = exec(testbed, 1, client, &script)?;
    let mut seen = BTreeMap::new();
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        let (addr, host) = line
            .split_once(' ')
            .with_context(|| format!("answer {line:?}"))?;
        // busybox httpd listens on IPv6 and shows IPv4 peers as [::ffff:a.b.c.d].
        let addr = addr.trim_start_matches("[::ffff:").trim_end_matches(']');
        assert_eq!(
            addr, client_ip,
            "the backend sees the client's real address"
        );
        *seen.entry(host.trim().to_string()).or_insert(0) += 1;
    }
    Ok(seen)
}

/// The value of the first sample of `name` whose labels contain `label` (0 if none).
fn sample(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn scenario(testbed: &mut Testbed, dir: &Path) -> Result<()> {
    let image = build_test_image(&dir.join("image"))?;
    let reference = testbed.serve_image(&image, "hm/test-app", "1")?;
    let deploy = |args: &[&str]| -> Result<()> {
        let output = testbed.node(1).daemon.cli(args);
        if !output.status.success() {
            bail!("{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(())
    };
    deploy(&[
        "app",
        "deploy",
        "--image",
        &reference,
        "--name",
        "web",
        "--replicas",
        "3",
        "--port",
        "80",
        "--ready-http",
        "/ready",
        "--health-http",
        "/alive",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        "--ready-interval",
        "1s",
        "--ready-retries",
        "1",
    ])?;
    deploy(&[
        "app", "deploy", "--image", &reference, "--name", "client", "--node", "node-1",
    ])?;

    // Every backend ready, on every node.
    let ready = eventually("3 ready endpoints", Duration::from_secs(90), || {
        let list = endpoints(testbed)?;
        let ready: Vec<Value> = list.into_iter().filter(|e| e["ready"] == true).collect();
        Ok((ready.len() == 3).then_some(ready))
    })?;
    let mut nodes: Vec<&str> = ready.iter().filter_map(|e| e["node"].as_str()).collect();
    nodes.sort();
    assert_eq!(nodes, vec!["node-1", "node-2", "node-3"]);
    let service = testbed.node(2).daemon.get("/api/services/web/endpoints")?;
    let vip = service["vip"].as_str().context("vip")?.to_string();
    // The testbed's --service-cidr, not the default.
    assert!(
        vip.starts_with("10.112."),
        "vip {vip} outside {}",
        hivemind_tests::testbed::SERVICE_CIDR
    );
    let services = testbed.node(3).daemon.cli(&["app", "services"]);
    let table = String::from_utf8_lossy(&services.stdout);
    assert!(
        table.contains(&vip) && table.contains("web.hivemind.local"),
        "{table}"
    );

    let containers = testbed.containers(1)?;
    let client = containers
        .iter()
        .find(|c| c["app"] == "client" && c["status"] == "running")
        .context("client container")?;
    let client_id = client["id"].as_str().context("id")?.to_string();
    let client_ip = client["ip"].as_str().context("ip")?.to_string();

    // DNS from inside a container: the name gives the VIP.
    let answer = eventually(
        "nslookup web.hivemind.local",
        Duration::from_secs(20),
        || {
            let out = exec(testbed, 1, &client_id, "nslookup web.hivemind.local")?;
            Ok(out.contains(&vip).then_some(out))
        },
    )?;
    assert!(answer.contains(&vip), "{answer}");

    // Many connections reach every backend, each seeing the client's address.
    let seen = spread(testbed, &client_id, &client_ip, &vip, 30)?;
    assert_eq!(seen.len(), 3, "all backends answered: {seen:?}");
    // Node 1 balances at the socket (the default): the client's connections went to a backend
    // at connect, without per-packet translation.
    let (status, metrics) = testbed.get_from(1, &testbed.node(1).daemon.url("/metrics"))?;
    assert_eq!(status, 200, "{metrics}");
    let at_socket = sample(
        &metrics,
        "hivemind_service_connections_total",
        "path=\"socket\"",
    );
    assert!(
        at_socket >= 30.0,
        "socket-balanced connections on node 1: {metrics}"
    );

    // A node reaches the VIP too.
    let (status, body) = testbed.get_from(2, &format!("http://{vip}/greeting"))?;
    assert_eq!(status, 200, "{body}");

    // Readiness: an unready backend gets no new connections, then returns.
    let victim = ready[0].clone();
    let victim_id = victim["container"]
        .as_str()
        .context("container")?
        .to_string();
    let victim_node = node_index(victim["node"].as_str().context("node")?)?;
    exec(testbed, victim_node, &victim_id, "rm /www/ready")?;
    eventually(
        "victim out of the endpoints",
        Duration::from_secs(15),
        || {
            let list = endpoints(testbed)?;
            Ok(list
                .iter()
                .any(|e| e["container"] == victim_id.as_str() && e["ready"] == false)
                .then_some(()))
        },
    )?;
    std::thread::sleep(Duration::from_secs(2)); // the data plane follows within a reconcile period
    let seen = spread(testbed, &client_id, &client_ip, &vip, 20)?;
    assert!(
        !seen.contains_key(&victim_id),
        "unready backend got traffic: {seen:?}"
    );
    exec(testbed, victim_node, &victim_id, "echo ok > /www/ready")?;
    eventually("victim back", Duration::from_secs(15), || {
        let list = endpoints(testbed)?;
        Ok(list
            .iter()
            .any(|e| e["container"] == victim_id.as_str() && e["ready"] == true)
            .then_some(()))
    })?;

    // Liveness: a backend whose check fails is restarted.
    exec(testbed, victim_node, &victim_id, "rm /www/alive")?;
    eventually(
        "victim restarted by its liveness check",
        Duration::from_secs(60),
        || {
            let info = testbed
                .node(victim_node)
                .daemon
                .get(&format!("/api/containers/{victim_id}"))?;
            Ok((info["restarts"].as_u64() >= Some(1) && info["status"] == "running").then_some(()))
        },
    )?;
    eventually(
        "victim ready after restart",
        Duration::from_secs(30),
        || {
            let list = endpoints(testbed)?;
            Ok(list
                .iter()
                .any(|e| e["container"] == victim_id.as_str() && e["ready"] == true)
                .then_some(()))
        },
    )?;
    Ok(())
}
