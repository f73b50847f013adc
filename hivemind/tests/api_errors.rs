//! Extractor rejections (query string, path, body, method) answer the
//! documented JSON error body with a 4xx, and request heads that are slow
//! or too large are cut off, checked against `hivemind web --mock`
//! (in-memory runtime, no kernel features: no root needed). The real-daemon
//! fuzzing is `api_fuzz.rs`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hivemind::contract::ErrorBody;
use hivemind_tests::daemon::{MockWeb, TEST_TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_hivemind");

fn request(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {TEST_TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

#[test]
fn rejections_answer_the_json_error_body() {
    let web = MockWeb::start(std::path::Path::new(BIN), |port| {
        request(port, "GET", "/api/health", "").is_some_and(|(status, _)| status == 200)
    })
    .expect("hivemind web --mock");
    let port = web.port;
    for (method, path, body, status, code, names) in [
        (
            "GET",
            "/api/apps/web/logs?tail=-1",
            "",
            400,
            "invalid_query",
            "tail",
        ),
        (
            "GET",
            "/api/apps/web/logs?follow=maybe",
            "",
            400,
            "invalid_query",
            "follow",
        ),
        (
            "GET",
            "/api/containers/x/logs?unknown=1",
            "",
            400,
            "invalid_query",
            "unknown",
        ),
        (
            "GET",
            "/api/containers?scope=everywhere",
            "",
            400,
            "invalid_field",
            "scope",
        ),
        ("GET", "/api/apps/%FF", "", 400, "invalid_path", "utf-8"),
        (
            "POST",
            "/api/scale",
            r#"{"name":"web","replicas":-1}"#,
            400,
            "invalid_body",
            "replicas",
        ),
        (
            "POST",
            "/api/scale",
            r#"{"name":"web","replicas":1,"x":1}"#,
            400,
            "invalid_body",
            "x",
        ),
        (
            "DELETE",
            "/api/apps",
            "",
            405,
            "method_not_allowed",
            "DELETE",
        ),
        ("GET", "/api/nothing", "", 404, "not_found", "/api/nothing"),
        // Image security: a file that is not OSV data, a policy or key that is not one.
        (
            "POST",
            "/api/security/vulndb",
            "{not json",
            400,
            "invalid_field",
            "not OSV data",
        ),
        (
            "POST",
            "/api/security/vulndb",
            r#"[{"id":"X-1","affected":[{"package":{"ecosystem":"Ubuntu:22.04","name":"bash"}}]}]"#,
            400,
            "invalid_field",
            "no record of an ecosystem the scanner reads",
        ),
        (
            "POST",
            "/api/security/scan-policy",
            r#"{"mode":"block","max_severity":"unknown"}"#,
            400,
            "invalid_field",
            "max_severity",
        ),
        (
            "POST",
            "/api/security/scan-policy",
            r#"{"mode":"sometimes"}"#,
            400,
            "invalid_body",
            "sometimes",
        ),
        (
            "POST",
            "/api/security/trust/keys",
            r#"{"name":"release","public_key":"ssh-ed25519 AAAA"}"#,
            400,
            "invalid_field",
            "PUBLIC KEY",
        ),
        (
            "POST",
            "/api/deploy",
            r#"{"image":"busybox","name":"web","scan_policy":{"mode":"block","max_severity":"none"}}"#,
            400,
            "invalid_field",
            "scan_policy.max_severity",
        ),
        // Pipelines: what git may not fetch, a path out of the checkout, a missing field, an
        // unknown one.
        (
            "POST",
            "/api/cicd/pipelines",
            r#"{"name":"site","repository":"ext::sh -c id"}"#,
            400,
            "invalid_field",
            "repository",
        ),
        (
            "POST",
            "/api/cicd/pipelines",
            r#"{"name":"site","repository":"https://git.example.com/site.git","build_command":"make","build_image":"busybox","output_dir":"../etc"}"#,
            400,
            "invalid_field",
            "output_dir",
        ),
        (
            "POST",
            "/api/cicd/pipelines",
            r#"{"name":"site"}"#,
            400,
            "invalid_field",
            "repository",
        ),
        (
            "POST",
            "/api/cicd/pipelines",
            r#"{"name":"site","repository":"https://git.example.com/site.git","buld_command":"make"}"#,
            400,
            "invalid_body",
            "buld_command",
        ),
        (
            "POST",
            "/api/cicd/pipelines/site/webhook",
            r#"{"ref":"refs/heads/main"}"#,
            404,
            "not_found",
            "takes no webhooks",
        ),
        // Cloud: a provider Hivemind does not drive, a malformed region.
        (
            "POST",
            "/api/cloud/providers",
            r#"{"provider":"gcp","access_key":"AKIAIOSFODNN7EXAMPLE","secret_key":"x","region":"us-east-1"}"#,
            400,
            "invalid_field",
            "provider",
        ),
        (
            "POST",
            "/api/cloud/instances",
            r#"{"name":"w","instance_type":"t3 medium","image_id":"ami-1","region":"us-east-1"}"#,
            400,
            "invalid_field",
            "instance_type",
        ),
        // Helm: a repository that is not HTTP, a release name Hivemind cannot use, a chart
        // from no repository, a package that is not base64 or not a chart, a revision of no
        // release.
        (
            "POST",
            "/api/helm/repositories",
            r#"{"name":"local","url":"ftp://charts.example.com"}"#,
            400,
            "invalid_field",
            "url",
        ),
        (
            "POST",
            "/api/helm/releases",
            r#"{"name":"Shop_1","chart":"local/web"}"#,
            400,
            "invalid_field",
            "name",
        ),
        (
            "POST",
            "/api/helm/releases",
            r#"{"name":"shop","chart":"nowhere/web"}"#,
            400,
            "invalid_field",
            "no repository nowhere",
        ),
        (
            "POST",
            "/api/helm/releases",
            r#"{"name":"shop","package":"%%%"}"#,
            400,
            "invalid_field",
            "not base64",
        ),
        (
            "POST",
            "/api/helm/releases",
            r#"{"name":"shop","package":"aGVsbG8="}"#,
            422,
            "chart",
            "gzip",
        ),
        (
            "POST",
            "/api/helm/releases",
            r#"{"name":"shop","chart":"local/web","sett":["a=1"]}"#,
            400,
            "invalid_body",
            "sett",
        ),
        (
            "POST",
            "/api/helm/releases/default/ghost/rollback",
            r#"{"revision":1}"#,
            404,
            "not_found",
            "default/ghost",
        ),
        // Strategies: bad bounds and flags of another strategy are refused by field.
        (
            "POST",
            "/api/deploy",
            r#"{"image":"busybox","name":"web","strategy":{"name":"ab-testing"}}"#,
            400,
            "invalid_field",
            "at least two",
        ),
        (
            "POST",
            "/api/deploy",
            r#"{"name":"web","strategy":{"name":"ab-testing","variants":[{"name":"a","image":"busybox","percentage":50},{"name":"b","image":"busybox:1","percentage":40}]}}"#,
            400,
            "invalid_field",
            "add up to 90%",
        ),
        (
            "POST",
            "/api/deploy",
            r#"{"name":"web","strategy":{"name":"ab-testing","variants":[{"name":"a","image":"busybox","percentage":50},{"name":"a","image":"busybox:1","percentage":50}]}}"#,
            400,
            "invalid_field",
            "named twice",
        ),
        (
            "POST",
            "/api/deploy",
            r#"{"name":"web","strategy":{"name":"ab-testing","variants":[{"name":"a","image":"busybox","percentage":50},{"name":"b","image":"busybox:1","percentage":50,"weight":2}]}}"#,
            400,
            "invalid_body",
            "weight",
        ),
        (
            "POST",
            "/api/deploy",
            r#"{"image":"busybox","name":"web","strategy":{"name":"canary","percentage":10,"duration":60}}"#,
            400,
            "invalid_field",
            "ab-testing only",
        ),
        (
            "POST",
            "/api/apps/nosuch/rollout/promote",
            r#"{"variant":"a"}"#,
            404,
            "not_found",
            "nosuch",
        ),
        (
            "POST",
            "/api/apps/nosuch/rollout/promote",
            r#"{"varient":"a"}"#,
            400,
            "invalid_body",
            "varient",
        ),
        (
            "POST",
            "/api/deploy",
            r#"{"image":"busybox","name":"web","strategy":{"name":"canary"}}"#,
            400,
            "invalid_field",
            "--percentage or --steps",
        ),
        (
            "POST",
            "/api/deploy",
            r#"{"image":"busybox","name":"web","strategy":{"name":"canary","percentage":12.34}}"#,
            400,
            "invalid_field",
            "to 0.1",
        ),
        (
            "POST",
            "/api/deploy",
            r#"{"image":"busybox","name":"web","strategy":{"name":"canary","steps":[50,20]}}"#,
            400,
            "invalid_field",
            "must rise",
        ),
        (
            "POST",
            "/api/deploy",
            r#"{"image":"busybox","name":"web","strategy":{"name":"canary","percentage":10,"manual_promotion":true}}"#,
            400,
            "invalid_field",
            "blue-green only",
        ),
        (
            "POST",
            "/api/deploy",
            r#"{"image":"busybox","name":"web","strategy":{"name":"rolling-update","max_surge":"lots"}}"#,
            400,
            "invalid_field",
            "strategy.max_surge",
        ),
        (
            "POST",
            "/api/deploy",
            r#"{"image":"busybox","name":"web","strategy":{"name":"rolling-update","max_surge":0,"max_unavailable":"0%"}}"#,
            400,
            "invalid_field",
            "cannot both be 0",
        ),
        (
            "POST",
            "/api/deploy",
            r#"{"image":"busybox","name":"web","strategy":{"name":"simple","max_unavailable":1}}"#,
            400,
            "invalid_field",
            "rolling-update only",
        ),
        (
            "POST",
            "/api/deploy",
            r#"{"image":"busybox","name":"web","strategy":{"name":"rolling-update","surge":1}}"#,
            400,
            "invalid_body",
            "surge",
        ),
        (
            "POST",
            "/api/apps/nosuch/rollout/pause",
            "",
            404,
            "not_found",
            "nosuch",
        ),
        // A connectivity test refuses bad input before it deploys anything, and a node with
        // no data plane (the mock) has no container network to check.
        (
            "POST",
            "/api/debug/connectivity",
            r#"{"egress":"nowhere"}"#,
            400,
            "invalid_field",
            "egress",
        ),
        (
            "POST",
            "/api/debug/connectivity",
            r#"{"check_timeout_s":600}"#,
            400,
            "invalid_field",
            "check_timeout_s",
        ),
        (
            "POST",
            "/api/debug/connectivity",
            r#"{"probes":2}"#,
            400,
            "invalid_body",
            "probes",
        ),
        (
            "POST",
            "/api/debug/connectivity",
            "{}",
            409,
            "conflict",
            "without a data plane",
        ),
    ] {
        let (got, text) = request(port, method, path, body).expect("an answer");
        let error: ErrorBody = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not the JSON error body ({e}): {text}"));
        assert_eq!(
            (got, error.success, error.error.code.as_str()),
            (status, false, code),
            "{method} {path}: {text}"
        );
        assert!(
            error
                .error
                .message
                .to_lowercase()
                .contains(&names.to_lowercase()),
            "{method} {path}: the message does not name {names:?}: {text}"
        );
    }

    // A client that never finishes its headers is cut off, and one whose
    // headers are too large is refused; the server keeps answering others.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n")
        .expect("send half a request");
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(25),
        "a half-sent request head was not cut off ({waited:?})"
    );
    let mut big = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    big.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let padding = "x".repeat(100 << 10);
    let _ = write!(
        big,
        "GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Padding: {padding}\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = big.read_to_string(&mut answer);
    assert!(
        !answer.starts_with("HTTP/1.1 200"),
        "a 100 KiB header was accepted: {}",
        answer.lines().next().unwrap_or_default()
    );
    assert_eq!(
        request(port, "GET", "/api/health", "").map(|(status, _)| status),
        Some(200),
        "still serving"
    );
    // A Host the node does not answer to (DNS rebinding) is refused.
    let mut rebound = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    rebound
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        rebound,
        "GET /api/apps HTTP/1.1\r\nHost: attacker.example:{port}\r\nAuthorization: Bearer {TEST_TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    let _ = rebound.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    assert!(answer.contains("host_not_allowed"), "{answer}");
}
