//! Schema-driven fuzzing and the authentication of the REST API against a
//! real node: a real containerd and `hivemind daemon` inside a network
//! namespace this test creates, and schemathesis (`pip install schemathesis`, 4.x; `cargo xtask
//! test` installs it) generating requests from `GET /api/openapi.json`.
//!
//! It passes when no answer is a 5xx and every answer matches the document
//! (status, content type, body schema), for valid and invalid input alike.
//! Bounded: a fixed number of examples per operation and a time budget.
//! Left out: `GET /api/flows` and `GET /api/apps/{name}/rollout/events` (endless event
//! streams); the log routes run
//! with `follow=false` only (`follow=true` streams until the client leaves); `POST
//! /api/debug/connectivity` (a run deploys and removes apps, seconds each).

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};
use hivemind_tests::containerd::{TestContainerd, prerequisites};
use hivemind_tests::daemon::{
    Daemon, TEST_TOKEN, api_json, api_url, ctr_purge, http, http_as, remove_netns_with_prefix,
};
use hivemind_tests::netns::NetNs;

mod member;

use member::push_as_a_member;

const BIN: &str = env!("CARGO_BIN_EXE_hivemind");

/// Examples per operation and phase.
const MAX_EXAMPLES: &str = "40";
/// Time budget of the whole run, in seconds.
const MAX_TIME: &str = "150";

/// schemathesis's configuration: the log routes never follow; a deploy may
/// answer 502 (documented: `image_pull_failed`), because a well-formed
/// reference whose registry cannot be reached (none can from this namespace)
/// is not bad input but a failing upstream (and so may an undo, which deploys a kept revision,
/// and an image scan, which pulls the image);
/// so may the traffic history when the fuzzer has set
/// a Prometheus no one runs, a cloud provider's configuration and a chart repository, whose
/// endpoints no one serves here. Every other 5xx is a failure.
const CONFIG: &str = r#"
[[operations]]
include-path-regex = "/logs$"
parameters = { "follow" = false }

[[operations]]
include-name = "POST /api/deploy"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "502"]

[[operations]]
include-name = "POST /api/apps/{name}/rollout/undo"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "502"]

[[operations]]
include-name = "POST /api/apps/{name}/rollout/promote"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "502"]

[[operations]]
include-name = "POST /api/security/scans"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "502"]

[[operations]]
include-name = "GET /api/traffic/history"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "502"]

[[operations]]
include-name = "POST /api/cloud/providers"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "502"]

[[operations]]
include-name = "POST /api/helm/repositories"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "502"]
"#;

/// Cleans up what the daemon made outside the temp dir, even on failure.
struct Cleanup {
    socket: std::path::PathBuf,
    netns_prefix: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        ctr_purge(&self.socket);
        if let Some(prefix) = &self.netns_prefix {
            remove_netns_with_prefix(prefix);
        }
    }
}

#[test]
fn schemathesis_finds_no_server_errors_or_schema_violations() -> Result<()> {
    if !prerequisites(
        "schemathesis_finds_no_server_errors_or_schema_violations",
        &["containerd", "runc", "ctr", "schemathesis"],
    ) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let ns = NetNs::create(&format!("hmfuzz-{}", std::process::id()))?;
    let containerd = TestContainerd::start(&ns, &dir.path().join("containerd"))?;
    let mut cleanup = Cleanup {
        socket: containerd.socket.clone(),
        netns_prefix: None,
    };
    let data_dir = dir.path().join("data");
    let daemon = Daemon::start(&ns, Path::new(BIN), &data_dir, &containerd.socket)?;
    let node_id = api_json(&ns, "/api/nodes")?[0]["id"]
        .as_str()
        .context("node id")?
        .to_string();
    cleanup.netns_prefix = Some(format!("hm-{node_id}-"));

    // The served document is the committed one.
    let (status, served) = http(&ns, "GET", &api_url("/api/openapi.json"), None)?;
    assert_eq!(status, 200, "{served}");
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"),
    )?;
    assert!(
        serde_json::from_str::<serde_json::Value>(&served)?
            == serde_json::from_str::<serde_json::Value>(&committed)?,
        "GET /api/openapi.json is not docs/openapi.json: regenerate it with \
         `UPDATE_OPENAPI=1 cargo test -p hivemind --test openapi`"
    );

    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG)?;
    let report = dir.path().join("report");
    let output = ns
        .command("schemathesis")
        .arg("--config-file")
        .arg(&config)
        .args([
            "run",
            &api_url("/api/openapi.json"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            MAX_EXAMPLES,
            "--max-time",
            MAX_TIME,
            "--request-timeout",
            "20",
            "--workers",
            "1",
            "--seed",
            "1",
            "--exclude-path",
            "/api/flows",
            "--exclude-path-regex",
            "/rollout/events$",
            // Revoking tokens would revoke the fuzzer's own, and rotating the
            // cluster key would leave the test's signing key behind; auth and
            // rotation have tests of their own.
            "--exclude-name",
            "DELETE /api/acl/tokens/{name}",
            "--exclude-name",
            "POST /api/cluster/gossip-key/rotate",
            // A connectivity test deploys and removes two apps and waits for them: a run takes
            // seconds, so fuzzing it would spend the budget on few cases. Its bad input is
            // refused before anything runs (unit tests of `ConnectivityPlan`, and api_errors).
            "--exclude-name",
            "POST /api/debug/connectivity",
            "--header",
            &format!("Authorization: Bearer {TEST_TOKEN}"),
            "--tls-verify",
            &daemon.ca_cert().display().to_string(),
            "--report",
            "junit",
            "--report-dir",
        ])
        .arg(&report)
        // Its cache goes to the working directory: keep it out of the tree.
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .context("run schemathesis")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "schemathesis found failures (exit {:?}); see its report above and {}\n\
         daemon log:\n{}",
        output.status.code(),
        report.display(),
        daemon.log_tail()
    );
    let checked = authentication_and_roles(&ns, &daemon);
    if checked.is_err() {
        eprintln!("--- daemon log ---\n{}", daemon.log_tail());
    }
    checked?;
    drop(daemon);
    drop(cleanup);
    drop(containerd);
    Ok(())
}

/// A route's path with its parameters filled in.
fn concrete(route: &str) -> String {
    route
        .replace("{name}", "guarded")
        .replace("{id}", "guarded-000000")
        .replace("{number}", "1")
        .replace("{namespace}", "default")
}

/// The token `hivemind acl token create` prints.
fn create_token(daemon: &Daemon, name: &str, role: &str) -> Result<String> {
    let output = daemon.cli(&["acl", "token", "create", "--name", name, "--role", role]);
    anyhow::ensure!(
        output.status.success(),
        "acl token create: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn code_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Every route refuses a missing or bad token; each role gets what its table
/// says; a viewer never sees environment values; changes are audited;
/// revoked tokens stop working; the dashboard's session cookie needs the
/// CSRF header for changes; the CLI exits 4 and 5.
fn authentication_and_roles(ns: &NetNs, daemon: &Daemon) -> Result<()> {
    // The webhook is signed by the Git host instead (pipelines/mod.rs checks its 401s).
    let public = [
        "/",
        "/api/health",
        "/api/session",
        "/api/cicd/pipelines/{name}/webhook",
    ];
    let well_formed_stranger =
        "hm_0123456789ab_0000000000000000000000000000000000000000000000000000000000000000";
    for (method, route) in hivemind::api::routes() {
        if public.contains(&route) {
            continue;
        }
        let url = api_url(&concrete(route));
        for token in [None, Some("nonsense"), Some(well_formed_stranger)] {
            let (status, body) = http_as(ns, token, method.as_str(), &url, Some("{}"))?;
            assert_eq!(
                (status, code_of(&body).as_str()),
                (401, "unauthenticated"),
                "{method} {route} with {token:?}: {body}"
            );
        }
    }
    let (status, body) = http_as(ns, None, "GET", &api_url("/api/health"), None)?;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"status":"up"}"#),
        "brief health"
    );

    // An app with a secret-looking variable, as a peer would replicate it.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let app = serde_json::json!([{
        "key": {"table": "apps", "key": "guarded"},
        "version": {"wall_ms": now_ms, "counter": 0, "node": 9},
        "value": {
            "spec": {
                "name": "guarded", "image": "localhost/none:1", "service": null, "replicas": 0,
                "resources": {"cpu": null, "memory": null}, "volumes": [],
                "env": {"DB_PASSWORD": "hunter2"}, "ports": [], "labels": {"app": "guarded"}
            },
            "generation": 1, "created_at": 0, "updated_at": 0
        }
    }]);
    let (status, body) = push_as_a_member(ns, &daemon.data_dir, &app.to_string())?;
    assert_eq!(status, 200, "{body}");

    let viewer = create_token(daemon, "auditor", "viewer")?;
    let deployer = create_token(daemon, "ci", "deployer")?;
    for (method, route) in hivemind::api::routes() {
        if public.contains(&route) || method == "GET" {
            continue;
        }
        let url = api_url(&concrete(route));
        let (status, body) = http_as(
            ns,
            Some(&viewer),
            method.as_str(),
            &url,
            Some("{\"name\":\"guarded\"}"),
        )?;
        assert_eq!(
            (status, code_of(&body).as_str()),
            (403, "forbidden"),
            "viewer {method} {route}: {body}"
        );
    }
    let (_, shown) = http_as(
        ns,
        Some(&viewer),
        "GET",
        &api_url("/api/apps/guarded"),
        None,
    )?;
    assert!(
        shown.contains("<hidden>") && !shown.contains("hunter2"),
        "a viewer sees no env values: {shown}"
    );
    let (_, listed) = http_as(ns, Some(&viewer), "GET", &api_url("/api/apps"), None)?;
    assert!(!listed.contains("hunter2"), "{listed}");
    let (_, full) = http(ns, "GET", &api_url("/api/apps/guarded"), None)?;
    assert!(full.contains("hunter2"), "an admin sees them: {full}");

    // The deployer changes apps but not the cluster or its tokens.
    let (status, body) = http_as(
        ns,
        Some(&deployer),
        "POST",
        &api_url("/api/scale"),
        Some(r#"{"name":"guarded","replicas":0}"#),
    )?;
    assert_eq!(status, 200, "deployer scales: {body}");
    // Secrets by name: the deployer makes one, the viewer sees its name,
    // nobody ever reads its value back.
    let (status, body) = http_as(
        ns,
        Some(&deployer),
        "POST",
        &api_url("/api/security/secrets"),
        Some(r#"{"name":"ci-key","value":"shh-ci-value"}"#),
    )?;
    assert_eq!(status, 201, "deployer creates a secret: {body}");
    for token in [&viewer, &deployer] {
        let (status, listed) = http_as(
            ns,
            Some(token),
            "GET",
            &api_url("/api/security/secrets"),
            None,
        )?;
        assert_eq!(status, 200, "{listed}");
        assert!(
            listed.contains("ci-key") && !listed.contains("shh-ci-value"),
            "{listed}"
        );
    }
    for (method, route, body) in [
        ("POST", "/api/nodes/join", r#"{"address":"127.0.0.1"}"#),
        (
            "POST",
            "/api/acl/tokens",
            r#"{"name":"mine","role":"admin"}"#,
        ),
        ("GET", "/api/acl/tokens", ""),
        ("GET", "/api/audit", ""),
    ] {
        let (status, answer) = http_as(ns, Some(&deployer), method, &api_url(route), Some(body))?;
        assert_eq!(status, 403, "deployer {method} {route}: {answer}");
    }

    // The audit log names who changed what.
    let audit = api_json(ns, "/api/audit?limit=50")?;
    let entries = audit.as_array().context("audit entries")?;
    assert!(
        entries
            .iter()
            .any(|e| e["who"] == "ci" && e["path"] == "/api/scale" && e["status"] == 200),
        "the deployer's scale is audited: {audit}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["who"] == "auditor" && e["status"] == 403),
        "refused changes are audited too: {audit}"
    );

    // The CLI: exit 4 without a valid token, 5 when not allowed.
    let bare = ns
        .command(env!("CARGO_BIN_EXE_hivemind"))
        .args(["--server", &daemon.url(""), "app", "ls"])
        .env_remove("HIVEMIND_TOKEN")
        .env("HIVEMIND_CA_CERT", daemon.ca_cert())
        .output()?;
    assert_eq!(
        bare.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&bare.stderr)
    );
    let refused = ns
        .command(env!("CARGO_BIN_EXE_hivemind"))
        .args([
            "--server",
            &daemon.url(""),
            "app",
            "delete",
            "--name",
            "guarded",
        ])
        .env("HIVEMIND_TOKEN", &viewer)
        .env("HIVEMIND_CA_CERT", daemon.ca_cert())
        .output()?;
    assert_eq!(
        refused.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // The dashboard's session: a cookie for reads, plus the CSRF header for changes.
    let signed_in = ns.run({
        let viewer = viewer.clone();
        let url = api_url("");
        let ca = std::fs::read(daemon.ca_cert())?;
        move || -> Result<(u16, u16, u16)> {
            let client = reqwest::blocking::Client::builder()
                .cookie_store(true)
                .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
                .tls_built_in_root_certs(false)
                .build()?;
            let answer = client
                .post(format!("{url}/api/session"))
                .json(&serde_json::json!({"token": viewer}))
                .send()?;
            let signed = answer.status().as_u16();
            let read = client
                .get(format!("{url}/api/apps"))
                .send()?
                .status()
                .as_u16();
            let change = client
                .post(format!("{url}/api/scale"))
                .json(&serde_json::json!({"name": "guarded", "replicas": 0}))
                .send()?
                .status()
                .as_u16();
            Ok((signed, read, change))
        }
    })??;
    assert_eq!(
        signed_in,
        (200, 200, 403),
        "session: sign-in, read, change without CSRF"
    );

    // `hivemind login` pins the cluster's CA and keeps the server, token
    // and pin as the current context. A pin of another CA is refused
    // before the token is sent.
    let config = daemon.data_dir.with_extension("cli-config");
    let certificate = daemon.cli(&["cluster", "certificate", "--output", "json"]);
    let certificate: serde_json::Value = serde_json::from_slice(&certificate.stdout)?;
    let ca_sha256 = certificate["ca_sha256"].as_str().context("ca_sha256")?;
    let login_with = |pin: &str| {
        ns.command(env!("CARGO_BIN_EXE_hivemind"))
            .args(["login", "--server", &daemon.url(""), "--token", &deployer])
            .args(["--ca-sha256", pin])
            .env("HIVEMIND_CONFIG", &config)
            .env_remove("HIVEMIND_TOKEN")
            .env_remove("HIVEMIND_CA_CERT")
            .output()
    };
    let wrong = login_with(&"0".repeat(64))?;
    assert_eq!(
        wrong.status.code(),
        Some(3),
        "a CA other than the pinned one: {}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("cannot trust"));
    assert!(!config.exists(), "a refused login keeps nothing");
    let login = login_with(ca_sha256)?;
    let said = String::from_utf8_lossy(&login.stdout);
    assert!(
        login.status.success() && said.contains("as ci (role deployer)"),
        "login: {said} {}",
        String::from_utf8_lossy(&login.stderr)
    );
    let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(&config)?)?;
    assert_eq!(kept["contexts"][0]["ca_sha256"], ca_sha256, "{kept}");
    // Plain HTTP to the API's port is told to use HTTPS.
    let plain = api_url("/api/health").replace("https://", "http://");
    let (status, body) = http(ns, "GET", &plain, None)?;
    assert_eq!(
        (status, code_of(&body).as_str()),
        (400, "tls_required"),
        "{body}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&config)?.permissions().mode() & 0o777,
        0o600
    );
    let with_context = ns
        .command(env!("CARGO_BIN_EXE_hivemind"))
        .args(["app", "ls", "--output", "json"])
        .env("HIVEMIND_CONFIG", &config)
        .env_remove("HIVEMIND_TOKEN")
        .env_remove("HIVEMIND_SERVER")
        .env_remove("HIVEMIND_CA_CERT")
        .output()?;
    let listed = String::from_utf8_lossy(&with_context.stdout);
    assert!(
        with_context.status.success() && listed.contains("guarded"),
        "the context's server and token are used: {listed} {}",
        String::from_utf8_lossy(&with_context.stderr)
    );
    let bad_login = ns
        .command(env!("CARGO_BIN_EXE_hivemind"))
        .args([
            "login",
            "--server",
            &daemon.url(""),
            "--token",
            well_formed_stranger,
            "--ca-cert",
            &daemon.ca_cert().display().to_string(),
        ])
        .env(
            "HIVEMIND_CONFIG",
            daemon.data_dir.with_extension("other-config"),
        )
        .output()?;
    assert_eq!(
        bad_login.status.code(),
        Some(4),
        "a bad token does not log in"
    );

    // A revoked token stops working.
    let revoked = daemon.cli(&["acl", "token", "revoke", "--name", "auditor"]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let (status, _) = http_as(ns, Some(&viewer), "GET", &api_url("/api/apps"), None)?;
    assert_eq!(status, 401, "a revoked token");
    Ok(())
}
