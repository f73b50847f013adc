//! Services end to end on a 3-node testbed: DNS names resolve from inside a
//! container, connections to the VIP spread over backends on every node
//! with the client's real address, readiness steers traffic and liveness
//! restarts a stuck backend.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hivemind_tests::daemon::{ctr_sh, eventually};
use hivemind_tests::image::build_test_image;
use hivemind_tests::netns::PeerServer;
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
    ctr_sh(&testbed.node(index).containerd_socket(), container, script)
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

/// A backend that connects to its own service's VIP gets answers, from itself among others:
/// on node 1 (balanced at the socket) and node 3 (per packet, kernel routing).
fn hairpin(testbed: &Testbed, ready: &[Value], vip: &str) -> Result<()> {
    for index in [1, 3] {
        let name = format!("node-{index}");
        let me = ready
            .iter()
            .find(|e| e["node"] == name.as_str())
            .context("a backend on the node")?;
        let id = me["container"].as_str().context("container")?;
        let script = format!(
            "i=0; while [ $i -lt 30 ]; do printf 'GET /cgi-bin/whoami HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {vip} 80 | tail -n 1; i=$((i+1)); done"
        );
        let output = exec(testbed, index, id, &script)?;
        let hosts: Vec<&str> = output
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(_, host)| host.trim()))
            .collect();
        assert_eq!(
            hosts.len(),
            30,
            "every connection answered on {name}: {output}"
        );
        let own = exec(testbed, index, id, "hostname")?;
        assert!(
            hosts.contains(&own.trim()),
            "the backend on {name} reached itself through the VIP: {hosts:?}"
        );
    }
    Ok(())
}

/// `18081` is published on every node: a client outside the cluster (the testbed's bridge
/// namespace) reaches the app through any node's address, gets answers from backends on every
/// node, and each backend saw the client's own address (direct server return).
fn published_port(testbed: &Testbed) -> Result<()> {
    let client = hivemind_tests::testbed::BRIDGE_IP.to_string();
    let mut hosts = std::collections::BTreeSet::new();
    for index in 1..=3 {
        let url = format!("http://{}:18081/cgi-bin/whoami", testbed.node(index).ip());
        for _ in 0..12 {
            let (status, body) = hivemind_tests::daemon::http(&testbed.bridge, "GET", &url, None)?;
            assert_eq!(status, 200, "{url}: {body}");
            let (addr, host) = body
                .trim()
                .split_once(' ')
                .with_context(|| format!("answer {body:?}"))?;
            let addr = addr.trim_start_matches("[::ffff:").trim_end_matches(']');
            assert_eq!(addr, client, "the backend sees the client's own address");
            hosts.insert(host.trim().to_string());
        }
    }
    assert_eq!(hosts.len(), 3, "backends on every node answered: {hosts:?}");
    let app = testbed.node(2).daemon.get("/api/apps/web")?;
    assert_eq!(
        app["publish"],
        serde_json::json!([{ "published": 18081, "target": 80 }]),
        "{app}"
    );
    Ok(())
}

/// `18082` is published in `snat` mode: a client outside the cluster reaches backends on every
/// node through any node's address, each backend sees the gateway of the node the client
/// reached (not the client), and a 2 MiB answer comes back whole through each node.
fn published_port_snat(testbed: &Testbed) -> Result<()> {
    let client = hivemind_tests::testbed::BRIDGE_IP.to_string();
    let nodes = testbed.node(1).daemon.get("/api/nodes")?;
    let mut hosts = std::collections::BTreeSet::new();
    for index in 1..=3 {
        let name = format!("node-{index}");
        let subnet = nodes
            .as_array()
            .and_then(|list| list.iter().find(|n| n["name"] == name.as_str()))
            .and_then(|n| n["subnet"].as_str())
            .with_context(|| format!("subnet of {name} in {nodes}"))?;
        let network: std::net::Ipv4Addr = subnet
            .split_once('/')
            .and_then(|(net, _)| net.parse().ok())
            .with_context(|| format!("subnet {subnet}"))?;
        let gateway = std::net::Ipv4Addr::from(u32::from(network) + 1).to_string();
        let node = testbed.node(index).ip().to_string();
        for _ in 0..12 {
            let out = curl(testbed, &[&format!("http://{node}:18082/cgi-bin/whoami")])?;
            assert!(out.ends_with("\n200 1.1"), "{node}:18082: {out}");
            let (addr, host) = out
                .lines()
                .next()
                .and_then(|l| l.trim().split_once(' '))
                .with_context(|| format!("answer {out:?}"))?;
            let addr = addr.trim_start_matches("[::ffff:").trim_end_matches(']');
            assert_ne!(addr, client, "snat: the backend must not see the client");
            assert_eq!(addr, gateway, "the backend sees {name}'s gateway");
            hosts.insert(host.trim().to_string());
        }
        let size = curl(
            testbed,
            &[
                "-o",
                "/dev/null",
                "-w",
                " %{size_download}",
                &format!("http://{node}:18082/cgi-bin/bytes?2097152"),
            ],
        )?;
        assert!(
            size.trim_end().ends_with(" 2097152"),
            "2 MiB through {name}'s snat port: {size}"
        );
    }
    assert_eq!(hosts.len(), 3, "backends on every node answered: {hosts:?}");
    let app = testbed.node(3).daemon.get("/api/apps/edge")?;
    assert_eq!(app["publish_mode"], "snat", "{app}");
    Ok(())
}

/// `curl` from the testbed's bridge namespace (outside the cluster), with
/// `\n<status> <HTTP version>` after the body.
fn curl(testbed: &Testbed, args: &[&str]) -> Result<String> {
    let output = std::process::Command::new("nsenter")
        .arg(format!("--net={}", testbed.bridge.path().display()))
        .args([
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .output()?;
    if !output.status.success() {
        bail!("curl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The HTTP(S) ingress: every node answers `Host: web.example.com` on :80 with backends on
/// every node and the client's address in `X-Forwarded-For`; no app is a 404 and no ready
/// backend a 503; after `security tls add`, :443 serves the domain's certificate by SNI
/// (HTTP/2 by ALPN) on every node.
fn ingress(testbed: &Testbed, dir: &Path) -> Result<()> {
    let client = hivemind_tests::testbed::BRIDGE_IP.to_string();
    let mut hosts = std::collections::BTreeSet::new();
    for index in 1..=3 {
        let node = testbed.node(index).ip().to_string();
        let url = format!("http://{node}/cgi-bin/headers");
        let headers = eventually(
            "the ingress routes web.example.com",
            Duration::from_secs(20),
            || {
                let out = curl(testbed, &["-H", "Host: web.example.com", &url])?;
                Ok(out.ends_with("\n200 1.1").then_some(out))
            },
        )?;
        for expected in [
            format!("HTTP_X_FORWARDED_FOR={client}\n"),
            "HTTP_X_FORWARDED_PROTO=http\n".to_string(),
            "HTTP_HOST=web.example.com\n".to_string(),
        ] {
            assert!(
                headers.contains(&expected),
                "node {index}: {expected:?} in {headers}"
            );
        }
        for _ in 0..6 {
            let out = curl(
                testbed,
                &[
                    "-H",
                    "Host: web.example.com",
                    &format!("http://{node}/cgi-bin/whoami"),
                ],
            )?;
            let host = out
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .with_context(|| format!("whoami answer {out:?}"))?;
            hosts.insert(host.to_string());
        }
    }
    assert_eq!(hosts.len(), 3, "backends on every node answered: {hosts:?}");

    let node1 = testbed.node(1).ip().to_string();
    let out = curl(
        testbed,
        &[
            "-H",
            "Host: nothing.example.com",
            &format!("http://{node1}/"),
        ],
    )?;
    assert!(
        out.ends_with("\n404 1.1") && out.contains("No app serves"),
        "{out}"
    );
    let out = curl(
        testbed,
        &["-H", "Host: idle.example.com", &format!("http://{node1}/")],
    )?;
    assert!(
        out.ends_with("\n503 1.1") && out.contains("no ready container"),
        "{out}"
    );

    // HTTPS: a certificate added on node 1 is served by every node.
    let cert = rcgen::generate_simple_self_signed(vec!["web.example.com".to_string()])?;
    let cert_file = dir.join("web.crt");
    let key_file = dir.join("web.key");
    std::fs::write(&cert_file, cert.cert.pem())?;
    std::fs::write(&key_file, cert.key_pair.serialize_pem())?;
    let added = testbed.node(1).daemon.cli(&[
        "security",
        "tls",
        "add",
        "--domain",
        "web.example.com",
        "--cert",
        &cert_file.display().to_string(),
        "--key",
        &key_file.display().to_string(),
    ]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    // A certificate that does not name the domain is refused, and says so.
    let body = serde_json::json!({
        "domain": "api.example.com",
        "cert": cert.cert.pem(),
        "key": cert.key_pair.serialize_pem(),
    })
    .to_string();
    let (status, answer) = hivemind_tests::daemon::http(
        &testbed.bridge,
        "POST",
        &testbed.node(1).daemon.url("/api/security/tls"),
        Some(&body),
    )?;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("does not name api.example.com"), "{answer}");
    let cacert = cert_file.display().to_string();
    for index in 1..=3 {
        let resolve = format!("web.example.com:443:{}", testbed.node(index).ip());
        let out = eventually("HTTPS with SNI", Duration::from_secs(20), || {
            let out = curl(
                testbed,
                &[
                    "--cacert",
                    &cacert,
                    "--resolve",
                    &resolve,
                    "https://web.example.com/cgi-bin/headers",
                ],
            );
            Ok(out.ok().filter(|o| o.ends_with("\n200 2")))
        })?;
        assert!(out.contains("HTTP_X_FORWARDED_PROTO=https\n"), "{out}");
    }
    // Another name gets no certificate at all.
    let resolve = format!("other.example.com:443:{node1}");
    let other = curl(
        testbed,
        &["-k", "--resolve", &resolve, "https://other.example.com/"],
    );
    assert!(
        other.is_err(),
        "a handshake without a certificate: {other:?}"
    );
    let certs = testbed.node(3).daemon.get("/api/security/tls")?;
    assert_eq!(certs[0]["domain"], "web.example.com", "{certs}");
    assert_eq!(certs[0]["serves"], serde_json::json!(["web"]), "{certs}");

    let health = testbed.node(2).daemon.get("/api/health")?;
    assert_eq!(health["network"]["ingress"]["routes"], 2, "{health}");
    assert_eq!(health["network"]["ingress"]["certificates"], 1, "{health}");
    let (_, metrics) = testbed.get_from(1, &testbed.node(1).daemon.url("/metrics"))?;
    assert!(
        sample(
            &metrics,
            "hivemind_ingress_request_duration_seconds_count",
            "domain=\"web.example.com\",app=\"web\",status=\"200\""
        ) >= 7.0,
        "{metrics}"
    );
    Ok(())
}

/// Egress NAT: the client container reaches a server outside the cluster (the testbed's
/// bridge namespace, on the underlay), which sees node 1's address; a burst of 10,000 short
/// connections completes with no NAT drop. Anti-spoofing: a connection from an address the
/// container does not own is dropped and counted.
fn egress_and_spoofing(testbed: &Testbed, client: &str, client_ip: &str) -> Result<()> {
    const BURST: usize = 10_000;
    let outside = std::net::SocketAddr::from((hivemind_tests::testbed::BRIDGE_IP, 18080));
    let server = PeerServer::start(&testbed.bridge, outside)?;
    let answer = exec(
        testbed,
        1,
        client,
        &format!("nc -w 3 {} {} < /dev/null", outside.ip(), outside.port()),
    )?;
    assert_eq!(
        answer.trim(),
        testbed.node(1).ip().to_string(),
        "the outside sees node 1"
    );

    let netns = format!("/proc/{}/ns/net", testbed.task_pid(1, client)?);
    let failed = hivemind_tests::netns::run_in(&netns, move || {
        use std::io::Read as _;
        let mut failed = Vec::new();
        for i in 0..BURST {
            let result = std::net::TcpStream::connect_timeout(&outside, Duration::from_secs(3))
                .and_then(|mut stream| {
                    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
                    let mut line = String::new();
                    stream.read_to_string(&mut line)?;
                    Ok(line)
                });
            if let Err(e) = result {
                failed.push(format!("connection {i}: {e}"));
            }
        }
        failed
    })?;
    assert!(
        failed.is_empty(),
        "{} of {BURST} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let peers = server.peers();
    let node_ip = std::net::IpAddr::V4(testbed.node(1).ip());
    assert_eq!(
        peers.get(&node_ip).copied(),
        Some(BURST as u64 + 1),
        "{peers:?}"
    );
    assert_eq!(
        peers.len(),
        1,
        "only node 1's address reached the outside: {peers:?}"
    );
    let health = testbed.node(1).daemon.get("/api/health")?;
    let nat = &health["network"]["masquerade"];
    assert_eq!(nat["enabled"], true, "{health}");
    assert_eq!(nat["drops"], serde_json::json!({}), "no NAT drops: {nat}");
    assert!(
        nat["masqueraded_packets"].as_u64() > Some(3 * BURST as u64),
        "{nat}"
    );

    // A source address the container does not own never leaves it.
    let pid = testbed.task_pid(1, client)?;
    let (subnet, _) = client_ip.rsplit_once('.').context("client address")?;
    let spoofed = format!("{subnet}.250");
    let nsenter = |args: &[&str]| {
        std::process::Command::new("nsenter")
            .arg("-t")
            .arg(pid.to_string())
            .arg("-n")
            .args(args)
            .output()
    };
    let added = nsenter(&["ip", "addr", "add", &format!("{spoofed}/32"), "dev", "eth0"])?;
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let url = format!("http://{}:{}/", outside.ip(), outside.port());
    let spoof = nsenter(&[
        "curl",
        "-sS",
        "--max-time",
        "2",
        "--interface",
        &spoofed,
        &url,
    ])?;
    nsenter(&["ip", "addr", "del", &format!("{spoofed}/32"), "dev", "eth0"])?;
    assert!(!spoof.status.success(), "a spoofed connection got through");
    assert_eq!(
        server.peers().len(),
        1,
        "the spoofed address never reached the outside"
    );
    let (_, metrics) = testbed.get_from(1, &testbed.node(1).daemon.url("/metrics"))?;
    let spoofed_drops: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("hivemind_container_drops")
                && l.contains(client)
                && l.contains("reason=\"drop_spoofed\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(spoofed_drops >= 1.0, "spoofed packets counted: {metrics}");
    Ok(())
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
        "--port",
        "8080",
        "--env",
        "SECOND_PORT=8080",
        "--publish",
        "18081:80",
        "--service",
        "web.example.com",
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
    deploy(&[
        "app",
        "deploy",
        "--image",
        &reference,
        "--name",
        "edge",
        "--replicas",
        "3",
        "--publish",
        "18082:80",
        "--publish-mode",
        "snat",
        "--ready-http",
        "/ready",
    ])?;
    // Never ready: its domain answers 503.
    deploy(&[
        "app",
        "deploy",
        "--image",
        &reference,
        "--name",
        "idle",
        "--node",
        "node-3",
        "--service",
        "idle.example.com",
        "--ready-http",
        "/never",
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

    // Each port of the service reaches the same port of the backends.
    let script = format!(
        "i=0; while [ $i -lt 9 ]; do printf 'GET /port HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {vip} 8080 | tail -n 1; i=$((i+1)); done"
    );
    let answers = exec(testbed, 1, &client_id, &script)?;
    assert_eq!(
        answers.lines().filter(|l| l.trim() == "8080").count(),
        9,
        "VIP:8080 answered by the backends' port 8080: {answers:?}"
    );

    // Containers carry no IPv6 (the daemon turns it off at both ends of their veth), so
    // nothing of theirs is dropped for not being IPv4.
    let (_, metrics) = testbed.get_from(1, &testbed.node(1).daemon.url("/metrics"))?;
    assert!(
        !metrics.lines().any(
            |l| l.contains("hivemind_container_drops") && l.contains("drop_not_ipv4_container")
        ),
        "{metrics}"
    );

    hairpin(testbed, &ready, &vip)?;
    published_port(testbed)?;
    eventually("3 ready edge endpoints", Duration::from_secs(60), || {
        let edge = testbed.node(1).daemon.get("/api/services/edge/endpoints")?;
        let ready = edge["endpoints"]
            .as_array()
            .map_or(0, |l| l.iter().filter(|e| e["ready"] == true).count());
        Ok((ready == 3).then_some(()))
    })?;
    published_port_snat(testbed)?;
    ingress(testbed, dir)?;
    egress_and_spoofing(testbed, &client_id, &client_ip)?;

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
