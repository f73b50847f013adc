//! Network policy end to end on a 2-node testbed: an allow/deny matrix
//! (same node, across nodes, through a service VIP, CIDR rules, egress
//! rules), live updates and deletes, and denied attempts visible as counted
//! drops and flow events.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hivemind_tests::daemon::{ctr_sh, eventually, http};
use hivemind_tests::image::build_test_image;
use hivemind_tests::netns::run;
use hivemind_tests::testbed::{BRIDGE_IP, CONTAINER_MTU, REGISTRY_PORT, Testbed, run_on_testbed};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_hivemind");

#[test]
fn policies_allow_deny_update_and_report() -> Result<()> {
    run_on_testbed(
        "policies_allow_deny_update_and_report",
        2,
        Path::new(BIN),
        scenario,
    )
}

struct Container {
    id: String,
    ip: String,
    node: usize,
}

fn find(testbed: &Testbed, app: &str) -> Result<Vec<Container>> {
    let mut out = Vec::new();
    for c in testbed.containers(1)? {
        if c["app"] == app && c["status"] == "running" {
            let node = c["node"].as_str().context("node")?;
            out.push(Container {
                id: c["id"].as_str().context("id")?.to_string(),
                ip: c["ip"].as_str().context("ip")?.to_string(),
                node: node.trim_start_matches("node-").parse()?,
            });
        }
    }
    out.sort_by_key(|c| c.node);
    Ok(out)
}

/// Whether `from` gets an HTTP answer from `ip`:80 within 2 s.
fn reaches(testbed: &Testbed, from: &Container, ip: &str) -> Result<bool> {
    let script = format!("printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 80");
    let output = exec_in(testbed, from, &script).unwrap_or_default();
    Ok(output.starts_with("HTTP/1.") && output.contains("200"))
}

/// Retries until `from` -> `ip` is `expected` (policies apply within a
/// reconcile period on every node).
fn expect(testbed: &Testbed, what: &str, from: &Container, ip: &str, expected: bool) -> Result<()> {
    eventually(what, Duration::from_secs(20), || {
        Ok((reaches(testbed, from, ip)? == expected).then_some(()))
    })
}

/// Runs `sh -c script` in `container`.
fn exec_in(testbed: &Testbed, container: &Container, script: &str) -> Result<String> {
    ctr_sh(
        &testbed.node(container.node).containerd_socket(),
        &container.id,
        script,
    )
}

/// kill -9 of node 1's daemon: its data plane is pinned on bpffs, so while it is down a
/// denied flow stays denied, new connections to the VIP are still balanced and one opened
/// before keeps working; the next daemon takes the pinned state over. Returns web's containers
/// once settled after the restart (the cluster may have moved a replica while node 1 was away).
fn kill9_keeps_the_data_plane(
    testbed: &mut Testbed,
    web: &[Container],
    client: &Container,
    other: &Container,
    vip: &str,
) -> Result<Vec<Container>> {
    let health = testbed.node(1).daemon.get("/api/health")?;
    assert!(
        health["network"]["bpf_pins"].as_str().is_some(),
        "pinned data plane: {health}"
    );
    // Connected now, its request sent once the daemon is gone.
    let answer = "/tmp/kill9-answer";
    exec_in(
        testbed,
        client,
        &format!(
            "((sleep 8; printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n') | nc -w 20 {vip} 80 > {answer} 2>&1) </dev/null >/dev/null 2>&1 &"
        ),
    )?;
    std::thread::sleep(Duration::from_secs(1));
    testbed.node_mut(1).daemon.kill9();
    for _ in 0..3 {
        assert!(
            !reaches(testbed, other, &web[0].ip)?,
            "other -> web must stay denied while the daemon is down"
        );
    }
    assert!(
        reaches(testbed, client, vip)?,
        "a new connection to the VIP is balanced while the daemon is down"
    );
    let answered = eventually(
        "the connection opened before kill -9 is answered",
        Duration::from_secs(30),
        || {
            let out = exec_in(testbed, client, &format!("cat {answer}"))?;
            Ok(out.contains("200 OK").then_some(out))
        },
    )?;
    assert!(answered.starts_with("HTTP/1."), "{answered}");
    let hivemind_tests::testbed::TestNode { daemon, ns, .. } = testbed.node_mut(1);
    daemon.restart(ns)?;
    let web = eventually(
        "web settled after the restart",
        Duration::from_secs(90),
        || {
            // Placement is sticky: the replicas stay where the cluster put them meanwhile.
            let web = find(testbed, "web")?;
            Ok((web.len() == 2).then_some(web))
        },
    )?;
    expect(
        testbed,
        "client -> web after the restart",
        client,
        &web[0].ip,
        true,
    )?;
    expect(
        testbed,
        "other -> web denied after the restart",
        other,
        &web[0].ip,
        false,
    )?;
    expect(
        testbed,
        "client -> web VIP after the restart",
        client,
        vip,
        true,
    )?;
    Ok(web)
}

fn put_policy(testbed: &Testbed, policy: &Value) -> Result<()> {
    let node = testbed.node(2);
    let (status, body) = http(
        &node.ns,
        "POST",
        &node.daemon.url("/api/security/network-policies"),
        Some(&policy.to_string()),
    )?;
    if !(200..300).contains(&status) {
        bail!("policy {status}: {body}");
    }
    Ok(())
}

fn scenario(testbed: &mut Testbed, dir: &Path) -> Result<()> {
    let image = build_test_image(&dir.join("image"))?;
    let reference = testbed.serve_image(&image, "hm/test-app", "1")?;
    for args in [
        vec!["--name", "web", "--replicas", "2"],
        vec!["--name", "db", "--node", "node-2"],
        vec!["--name", "client", "--node", "node-1"],
        vec!["--name", "other", "--node", "node-1"],
    ] {
        let mut full = vec!["app", "deploy", "--image", reference.as_str()];
        full.extend(args);
        let output = testbed.node(1).daemon.cli(&full);
        if !output.status.success() {
            bail!("{full:?}: {}", String::from_utf8_lossy(&output.stderr));
        }
    }
    eventually("all containers running", Duration::from_secs(90), || {
        let ok = find(testbed, "web")?.len() == 2
            && find(testbed, "db")?.len() == 1
            && find(testbed, "client")?.len() == 1
            && find(testbed, "other")?.len() == 1;
        Ok(ok.then_some(()))
    })?;
    let web = find(testbed, "web")?;
    let db = &find(testbed, "db")?[0];
    let client = &find(testbed, "client")?[0];
    let other = &find(testbed, "other")?[0];
    assert_eq!((web[0].node, web[1].node, client.node), (1, 2, 1));
    let vip = eventually("web service", Duration::from_secs(20), || {
        let service = testbed.node(1).daemon.get("/api/services/web/endpoints")?;
        Ok(service["vip"].as_str().map(str::to_string))
    })?;

    // No policy: everything flows.
    for target in [&web[0].ip, &web[1].ip, &vip] {
        expect(
            testbed,
            &format!("client -> {target} open"),
            client,
            target,
            true,
        )?;
        expect(
            testbed,
            &format!("other -> {target} open"),
            other,
            target,
            true,
        )?;
    }

    // `--mtu` (the testbed gives every node one) reaches the containers and the overlay.
    let mtu = exec_in(testbed, client, "cat /sys/class/net/eth0/mtu")?;
    assert_eq!(mtu.trim(), CONTAINER_MTU.to_string(), "client's eth0");
    let overlay = run(testbed
        .node(1)
        .ns
        .command("ip")
        .args(["-o", "link", "show", "hm-vxlan"]))?;
    assert!(
        overlay.contains(&format!(" mtu {CONTAINER_MTU} ")),
        "hm-vxlan: {overlay}"
    );
    connectivity_passes_then_names_what_a_policy_blocks(testbed)?;

    // Ingress of web: only from client, TCP 80.
    put_policy(
        testbed,
        &json!({
            "name": "web-ingress",
            "selector": {"labels": {"app": "web"}},
            "ingress_rules": [{"ports": [{"protocol": "TCP", "port_min": 80, "port_max": 80}],
                               "from": [{"selector": {"labels": {"app": "client"}}}]}],
        }),
    )?;
    expect(
        testbed,
        "other -> web same node denied",
        other,
        &web[0].ip,
        false,
    )?;
    expect(
        testbed,
        "other -> web across nodes denied",
        other,
        &web[1].ip,
        false,
    )?;
    expect(testbed, "other -> web VIP denied", other, &vip, false)?;
    expect(
        testbed,
        "client -> web same node allowed",
        client,
        &web[0].ip,
        true,
    )?;
    expect(
        testbed,
        "client -> web across nodes allowed",
        client,
        &web[1].ip,
        true,
    )?;
    expect(testbed, "client -> web VIP allowed", client, &vip, true)?;
    expect(testbed, "db is not selected", other, &db.ip, true)?;

    // Denied attempts are counted drops and flow events.
    let info = testbed
        .node(1)
        .daemon
        .get(&format!("/api/containers/{}", web[0].id))?;
    let drops = &info["network"]["drops"];
    assert!(
        drops.as_object().is_some_and(|d| !d.is_empty()),
        "denied attempts counted on the selected endpoint: {info}"
    );
    let flows = testbed.node(1).daemon.get("/api/flows/recent")?;
    let denied = flows["flows"]
        .as_array()
        .map(|f| f.iter().filter(|e| e["verdict"] == "denied").count())
        .unwrap_or(0);
    assert!(denied > 0, "denied flow events: {flows}");
    // And as an operator asks for it: denied flows into web, with app names.
    let observed =
        testbed
            .node(1)
            .daemon
            .cli(&["flows", "observe", "--verdict", "denied", "--to-app", "web"]);
    let shown = String::from_utf8_lossy(&observed.stdout);
    assert!(
        observed.status.success()
            && shown.lines().count() > 0
            && shown
                .lines()
                .all(|l| l.starts_with("denied") && l.contains("(web)")),
        "flows observe: {shown}{}",
        String::from_utf8_lossy(&observed.stderr)
    );
    assert!(
        shown.contains("(other)") && shown.contains("(policy web-ingress)"),
        "the denied peer and the policy are named: {shown}"
    );
    // Every node's flows from any node: web's replicas on node 1 and node 2 both denied
    // `other`, each naming the policy; db, selected by no policy, reports its new flows too.
    let denied = testbed
        .node(2)
        .daemon
        .get("/api/flows/recent?to_app=web&verdict=dropped&limit=1000")?;
    let seen_on: std::collections::BTreeSet<&str> = denied["flows"]
        .as_array()
        .into_iter()
        .flatten()
        .inspect(|f| {
            assert!(
                f["verdict"] == "denied"
                    && f["dst_app"] == "web"
                    && f["policy"] == "web-ingress"
                    && f["src_app"] == "other",
                "{f}"
            )
        })
        .filter_map(|f| f["node"].as_str())
        .collect();
    assert_eq!(
        seen_on,
        ["node-1", "node-2"].into(),
        "denials from both nodes: {denied}"
    );
    assert!(
        denied["cursor"]
            .as_str()
            .is_some_and(|c| c.contains("node-1:")),
        "{denied}"
    );
    // The daemons read the kernel's events every 200 ms.
    let unselected = eventually(
        "db's flows, selected by no policy",
        Duration::from_secs(5),
        || {
            let flows = testbed
                .node(1)
                .daemon
                .get("/api/flows/recent?to_app=db&protocol=tcp")?;
            Ok(flows["flows"]
                .as_array()
                .is_some_and(|f| {
                    f.iter()
                        .any(|f| f["verdict"] == "allowed" && f["reason"]["name"] == "no_policy")
                })
                .then_some(flows))
        },
    )?;
    // Only newer events after a cursor: a new connection's, none of the ones seen before. A
    // query the daemon cannot read is a 400 naming the field.
    std::thread::sleep(Duration::from_millis(500));
    let settled = testbed
        .node(1)
        .daemon
        .get("/api/flows/recent?to_app=db&protocol=tcp&limit=1000")?;
    let ports = |answer: &serde_json::Value| -> std::collections::BTreeSet<u64> {
        answer["flows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["sport"].as_u64())
            .collect()
    };
    assert!(ports(&settled).len() >= ports(&unselected).len());
    let cursor = settled["cursor"].as_str().unwrap_or_default().to_string();
    assert!(reaches(testbed, other, &db.ip)?, "other -> db");
    let after = eventually(
        "db's new flow after the cursor",
        Duration::from_secs(5),
        || {
            let after = testbed.node(1).daemon.get(&format!(
                "/api/flows/recent?to_app=db&protocol=tcp&cursor={cursor}"
            ))?;
            Ok((!ports(&after).is_empty()).then_some(after))
        },
    )?;
    assert!(
        ports(&after).is_disjoint(&ports(&settled)) && ports(&after).len() == 1,
        "after the cursor, only the new connection: {after}\nbefore: {settled}"
    );
    let (status, body) = testbed.get_from(
        1,
        &testbed
            .node(1)
            .daemon
            .url("/api/flows/recent?ip=10.0.0.300"),
    )?;
    assert!(status == 400 && body.contains("`ip`"), "{status} {body}");
    debug_tables_and_traces_agree(testbed, &web, client, other, db, &vip)?;
    // The same, as Prometheus sees it: flow events by verdict, and the drops
    // of the selected container by reason name.
    let (status, metrics) = testbed.get_from(1, &testbed.node(1).daemon.url("/metrics"))?;
    assert_eq!(status, 200, "{metrics}");
    let series = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        series("hivemind_flows_processed_total{node=\"node-1\",verdict=\"denied\"") > 0.0,
        "denied flows in /metrics: {metrics}"
    );
    assert!(
        series(&format!(
            "hivemind_container_drops_total{{app=\"web\",container=\"{}\"",
            web[0].id
        )) > 0.0,
        "the web container's drops in /metrics: {metrics}"
    );

    // Node 1 was away long enough for web's replica to move; its containers are settled again.
    let web = kill9_keeps_the_data_plane(testbed, &web, client, other, &vip)?;

    // Update: a CIDR rule lets node-1's subnet in on port 80.
    let node1_subnet = testbed
        .node(1)
        .daemon
        .get("/api/nodes")?
        .as_array()
        .and_then(|n| {
            n.iter()
                .find(|n| n["name"] == "node-1")
                .and_then(|n| n["subnet"].as_str().map(str::to_string))
        })
        .context("node-1 subnet")?;
    put_policy(
        testbed,
        &json!({
            "name": "web-ingress",
            "selector": {"labels": {"app": "web"}},
            "ingress_rules": [{"ports": [{"protocol": "TCP", "port_min": 79, "port_max": 81}],
                               "from": [{"ip_block": node1_subnet}]}],
        }),
    )?;
    expect(
        testbed,
        "other -> web across nodes allowed by CIDR",
        other,
        &web[1].ip,
        true,
    )?;

    // Egress of client: only to db.
    put_policy(
        testbed,
        &json!({
            "name": "client-egress",
            "selector": {"labels": {"app": "client"}},
            "egress_rules": [{"ports": [{"protocol": "TCP", "port_min": 80, "port_max": 80}],
                              "to": [{"selector": {"labels": {"app": "db"}}}]}],
        }),
    )?;
    expect(
        testbed,
        "client -> web denied by egress",
        client,
        &web[1].ip,
        false,
    )?;
    expect(
        testbed,
        "client -> db allowed by egress",
        client,
        &db.ip,
        true,
    )?;

    // The CLI lists them; deleting restores everything.
    let listed = testbed
        .node(1)
        .daemon
        .cli(&["security", "list-network-policies"]);
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        table.contains("web-ingress") && table.contains("client-egress"),
        "{table}"
    );
    for name in ["web-ingress", "client-egress"] {
        let output =
            testbed
                .node(1)
                .daemon
                .cli(&["security", "delete-network-policy", "--name", name]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    expect(
        testbed,
        "client -> web open again",
        client,
        &web[1].ip,
        true,
    )?;
    expect(testbed, "other -> web open again", other, &web[0].ip, true)?;

    // Bad policies are refused and change nothing.
    let node = testbed.node(1);
    let (status, body) = http(
        &node.ns,
        "POST",
        &node.daemon.url("/api/security/network-policies"),
        Some(
            r#"{"name":"bad","selector":{},"ingress_rules":[{"from":[{"ip_block":"10.0.0.300/8"}]}]}"#,
        ),
    )?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("ip_block"), "{body}");
    // Policies that would not fit in the data plane's maps are refused up front, naming the
    // limit: more port ranges for one peer than an entry holds, more CIDR rules than a node's
    // map holds.
    let ranges: Vec<Value> = (0..9)
        .map(|i| json!({"protocol": "TCP", "port_min": 1000 + 10 * i, "port_max": 1000 + 10 * i}))
        .collect();
    let too_many_ranges = json!({
        "name": "ranges", "selector": {"labels": {"app": "web"}},
        "ingress_rules": [{"ports": ranges, "from": [{"ip_block": "10.9.0.0/16"}]}],
    });
    let blocks: Vec<Value> = (0..16_385u32)
        .map(|i| json!({"ip_block": format!("10.{}.{}.{}/32", 100 + i / 65_536, (i / 256) % 256, i % 256)}))
        .collect();
    let too_many_blocks = json!({
        "name": "blocks", "selector": {"labels": {"app": "web"}},
        "ingress_rules": [{"from": blocks}],
    });
    for (policy, limit) in [
        (too_many_ranges, "port ranges"),
        (too_many_blocks, "HM_POLICY_CIDR"),
    ] {
        let (status, body) = http(
            &node.ns,
            "POST",
            &node.daemon.url("/api/security/network-policies"),
            Some(&policy.to_string()),
        )?;
        assert_eq!(status, 422, "{body}");
        assert!(
            body.contains("over_limit") && body.contains(limit),
            "{body}"
        );
    }
    let policies = node.daemon.get("/api/security/network-policies")?;
    assert_eq!(policies, json!([]));
    Ok(())
}

/// `hivemind debug`: the data plane's tables list what the test deployed, named, from every
/// node; policy traces from the kernel's maps agree with what the connections above did.
fn debug_tables_and_traces_agree(
    testbed: &Testbed,
    web: &[Container],
    client: &Container,
    other: &Container,
    db: &Container,
    vip: &str,
) -> Result<()> {
    let daemon = &testbed.node(1).daemon;
    let table = |name: &str, query: &str| -> Result<Vec<Value>> {
        let answer = daemon.get(&format!("/api/debug/bpf/{name}{query}"))?;
        Ok(answer["tables"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| t["rows"].as_array().cloned().unwrap_or_default())
            .collect())
    };
    // Endpoints of node 1, with their containers, apps and identities; web's ingress enforced.
    let endpoints = table("endpoints", "")?;
    for (container, app) in [(&web[0], "web"), (client, "client"), (other, "other")] {
        assert!(
            endpoints
                .iter()
                .any(|e| e["container"] == container.id.as_str()
                    && e["app"] == app
                    && e["ip"] == container.ip.as_str()
                    && e["identity_name"].as_str().is_some_and(|n| n.contains(app))),
            "{app} in endpoints: {endpoints:?}"
        );
    }
    assert!(
        endpoints
            .iter()
            .any(|e| e["app"] == "web" && e["ingress_enforced"] == true)
    );
    // Policy rules of web's replicas on both nodes: identity of client, TCP 80.
    let rules = table("policy", "?node=all")?;
    for replica in web {
        assert!(
            rules.iter().any(|r| r["container"] == replica.id.as_str()
                && r["direction"] == "ingress"
                && r["peer_name"] == "client"
                && r["protocol"] == "tcp"
                && r["ports"] == "80"),
            "web's rule on node {}: {rules:?}",
            replica.node
        );
    }
    // The VIP with web's backends; ipcache, tunnels and backends name what they hold.
    let services = table("services", "")?;
    let web_service = services
        .iter()
        .find(|s| s["vip"] == vip && s["port"] == 80 && s["app"] == "web")
        .with_context(|| format!("web's VIP in services: {services:?}"))?;
    for replica in web {
        assert!(
            web_service["backends"]
                .to_string()
                .contains(&format!("{}:80", replica.ip)),
            "{web_service}"
        );
    }
    let ipcache = table("ipcache", "")?;
    assert!(
        ipcache
            .iter()
            .any(|e| e["address"] == db.ip.as_str() && e["name"] == "db"),
        "{ipcache:?}"
    );
    let tunnels = table("tunnels", "")?;
    let node_2 = tunnels
        .iter()
        .find(|t| t["node"] == "node-2" && t["subnet"].is_string())
        .with_context(|| format!("a tunnel to node-2: {tunnels:?}"))?;
    // The ipcache places web's replica on node 2 there (the overlay's one lookup), and the
    // one on node 1 nowhere.
    let placed = |c: &Container| {
        ipcache
            .iter()
            .find(|e| e["address"] == c.ip.as_str())
            .map(|e| e["tunnel_endpoint"].clone())
    };
    assert_eq!(
        placed(&web[1]),
        Some(node_2["underlay"].clone()),
        "{ipcache:?}"
    );
    assert_eq!(placed(&web[0]), Some(Value::Null), "{ipcache:?}");
    let backends = table("backends", "")?;
    assert!(backends.iter().any(|b| b["app"] == "web"), "{backends:?}");
    // Conntrack of web's first replica: a connection from client just allowed (kept 10 s after
    // its FIN).
    assert!(reaches(testbed, client, &web[0].ip)?, "client -> web");
    let conntrack = table("conntrack", &format!("?container={}", web[0].id))?;
    assert!(
        conntrack
            .iter()
            .any(|c| c["scope"] == "ingress" && c["src"] == client.ip.as_str()),
        "{conntrack:?}"
    );
    let answer = daemon.get("/api/debug/bpf/conntrack")?;
    assert!(
        answer["tables"][0]["maps"][0]["map"] == "HM_CT"
            && answer["tables"][0]["maps"][0]["capacity"].as_u64() > Some(0),
        "map fill: {answer}"
    );
    let (status, body) = testbed.get_from(1, &daemon.url("/api/debug/bpf/routes"))?;
    assert!(
        status == 400 && body.contains("conntrack"),
        "{status} {body}"
    );
    // The CLI's table.
    let shown = daemon.cli(&["debug", "bpf", "policy", "--node", "all"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success() && text.contains("# policy on node-1") && text.contains("client"),
        "{text}{}",
        String::from_utf8_lossy(&shown.stderr)
    );

    // Traces: client -> web allowed by its identity rule on both nodes; other -> web denied,
    // naming the policy; other -> db passes, nothing selects db.
    let trace = |from: &str, to: &str| {
        daemon.get(&format!(
            "/api/debug/policy-trace?from_app={from}&to_app={to}&port=80"
        ))
    };
    let allowed = trace("client", "web")?;
    assert_eq!(allowed["verdict"], "allowed", "{allowed}");
    let nodes: std::collections::BTreeSet<&str> = allowed["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["direction"] == "ingress")
        .filter_map(|c| c["node"].as_str())
        .collect();
    assert_eq!(nodes, ["node-1", "node-2"].into(), "{allowed}");
    assert!(
        allowed.to_string().contains("HM_POLICY allows identity"),
        "{allowed}"
    );
    let denied = trace("other", "web")?;
    assert_eq!(denied["verdict"], "denied", "{denied}");
    assert!(
        denied["checks"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["allowed"] == false
                && c["direction"] == "ingress"
                && c["policies"][0] == "web-ingress"
                && c["decided_by"]
                    .as_str()
                    .is_some_and(|d| d.contains("drop_policy")))),
        "{denied}"
    );
    let open = trace("other", "db")?;
    assert_eq!(open["verdict"], "allowed", "{open}");
    assert!(open.to_string().contains("no policy selects"), "{open}");
    let shown = daemon.cli(&[
        "debug",
        "policy-trace",
        "--from-app",
        "other",
        "--to-app",
        "web",
        "--port",
        "80",
    ]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success() && text.contains("verdict: denied") && text.contains("web-ingress"),
        "{text}{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    println!("debug policy-trace --from-app other --to-app web --port 80:\n{text}");

    // The monitor, watching drops into web: other's denied attempt shows with the policy
    // reason, client's allowed requests to web and other's to db do not.
    let mut monitor = daemon
        .cli_command(&["debug", "monitor", "--to-app", "web", "--type", "drop"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("start debug monitor")?;
    let stdout = monitor.stdout.take().context("the monitor's output")?;
    // Meanwhile the node's flow events as server-sent events, filtered the same way.
    let stream = testbed
        .node(1)
        .ns
        .command("curl")
        .args(["-sN", "--max-time", "6", "--cacert"])
        .arg(daemon.ca_cert())
        .args([
            "-H",
            &format!(
                "Authorization: Bearer {}",
                hivemind_tests::daemon::TEST_TOKEN
            ),
            &daemon.url("/api/flows?to_app=web&verdict=denied"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("curl /api/flows")?;
    let started = std::time::Instant::now();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .map(|l| (started.elapsed(), l))
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(reaches(testbed, client, &web[0].ip)?, "client -> web");
    assert!(reaches(testbed, other, &db.ip)?, "other -> db");
    let attempt = started.elapsed();
    assert!(!reaches(testbed, other, &web[0].ip)?, "other -> web");
    std::thread::sleep(Duration::from_secs(1));
    let _ = monitor.kill();
    let _ = monitor.wait();
    let streamed = String::from_utf8_lossy(&stream.wait_with_output()?.stdout).to_string();
    let flows: Vec<Value> = streamed
        .lines()
        .filter_map(|l| serde_json::from_str(l.strip_prefix("data:")?.trim()).ok())
        .collect();
    assert!(
        flows
            .iter()
            .any(|f| f["src_app"] == "other" && f["policy"] == "web-ingress")
            && flows
                .iter()
                .all(|f| f["dst_app"] == "web" && f["verdict"] == "denied"),
        "GET /api/flows?to_app=web&verdict=denied: {streamed}"
    );
    let lines = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader panicked"))?;
    let shown: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    let (seen_at, _) = lines
        .iter()
        .find(|(_, l)| l.contains("(other)") && l.contains("(web)") && l.ends_with("drop_policy"))
        .with_context(|| format!("other's drop in the monitor: {shown:#?}"))?;
    println!(
        "debug monitor --to-app web --type drop, other's dropped SYN shown {:?} after the \
         attempt began:\n{}",
        seen_at.saturating_sub(attempt),
        shown.join("\n")
    );
    assert!(
        shown
            .iter()
            .all(|l| l.starts_with("dropped") && l.contains("(web)")),
        "only drops into web: {shown:#?}"
    );
    Ok(())
}

/// `hivemind debug connectivity` from node 1: on the healthy testbed every check passes (the
/// server probe on node 2, egress to the registry's address outside the cluster, a published
/// port); with a policy that blocks the client probe's egress, the run fails and names the
/// checks the policy blocks, and passes the ones it leaves alone. Both runs remove their probes.
fn connectivity_passes_then_names_what_a_policy_blocks(testbed: &Testbed) -> Result<()> {
    let daemon = &testbed.node(1).daemon;
    let egress = format!("{}:{}", BRIDGE_IP, REGISTRY_PORT);
    let run = || -> Result<(bool, Value, String)> {
        let output = daemon.cli(&[
            "-o",
            "json",
            "debug",
            "connectivity",
            "--egress",
            &egress,
            "--publish-port",
            "30080",
        ]);
        let report: Value = serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "a JSON report: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
        Ok((
            output.status.success(),
            report,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    };
    let results = |report: &Value| -> Vec<(String, String)> {
        report["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or("").to_string(),
                    c["result"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let probes_gone = || -> Result<()> {
        let apps = daemon.get("/api/apps")?;
        assert!(
            !apps.to_string().contains("hm-connectivity"),
            "the probe apps are removed: {apps}"
        );
        for index in [1, 2] {
            let containers = testbed.containers(index)?;
            assert!(
                !containers.iter().any(|c| c["app"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("hm-connectivity"))),
                "no probe container left on node {index}: {containers:?}"
            );
        }
        Ok(())
    };

    let (success, report, stderr) = run()?;
    let all_passed: Vec<(String, String)> = [
        "probe-image",
        "deploy-probes",
        "container-to-container",
        "large-answer",
        "container-to-service",
        "dns",
        "node-to-container",
        "node-to-service",
        "egress",
        "published-port",
        "cleanup",
    ]
    .iter()
    .map(|name| (name.to_string(), "passed".to_string()))
    .collect();
    assert_eq!(
        results(&report),
        all_passed,
        "healthy testbed: {report:#}\n{stderr}"
    );
    assert!(
        success && report["passed"] == true && report["cross_node"] == true,
        "{report:#}"
    );
    assert_eq!(report["client"]["node"], "node-1", "{report:#}");
    assert_eq!(report["server"]["node"], "node-2", "{report:#}");
    for check in report["checks"].as_array().into_iter().flatten() {
        assert!(check["ms"].is_u64(), "each check has its time: {check}");
    }
    probes_gone()?;

    put_policy(
        testbed,
        &json!({
            "name": "block-probes",
            "selector": {"labels": {"app": "hm-connectivity-client"}},
            "egress_rules": [],
        }),
    )?;
    let (success, report, stderr) = run()?;
    let got = results(&report);
    let result_of = |name: &str| {
        got.iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.as_str())
            .unwrap_or("missing")
    };
    assert!(!success && report["passed"] == false, "{report:#}");
    for blocked in [
        "container-to-container",
        "large-answer",
        "container-to-service",
        "egress",
    ] {
        assert_eq!(result_of(blocked), "failed", "{blocked}: {report:#}");
        assert!(
            stderr.contains(blocked),
            "the error names {blocked}: {stderr}"
        );
    }
    // DNS to the node is always allowed; the node and published ports are not the client's
    // egress.
    for open in [
        "dns",
        "node-to-container",
        "node-to-service",
        "published-port",
        "cleanup",
    ] {
        assert_eq!(result_of(open), "passed", "{open}: {report:#}");
    }
    probes_gone()?;
    let deleted = daemon.cli(&[
        "security",
        "delete-network-policy",
        "--name",
        "block-probes",
    ]);
    assert!(deleted.status.success(), "{deleted:?}");
    Ok(())
}
