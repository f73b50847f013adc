//! CI/CD pipelines end to end, as a user drives them: a bare git repository the test commits
//! to, served over `file://` and over smart HTTP (with a token) from the test's namespace; the
//! test and build commands run in containers on the real containerd; the output becomes a
//! layer on the test app image; the app serves the commit it was built from.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use hivemind_tests::daemon::{Daemon, api_json, api_url, eventually, free_port, http, http_with};
use hivemind_tests::git::{GitServer, Repo};
use hivemind_tests::netns::NetNs;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use super::{assert_cli_ok, container_ip, fetch, running_ids};

const TEST_SCRIPT: &str = "v=$(cat VERSION)\necho \"VERSION is $v\"\n[ \"$v\" != broken ]\n";
/// Version `three` builds slowly, so that its log can be read while the step runs.
const BUILD_SCRIPT: &str = "echo \"building $(cat VERSION)\"\n[ \"$(cat VERSION)\" = three ] && sleep 8\n\
    mkdir -p public\ncp VERSION public/version\necho \"$HIVEMIND_COMMIT\" > public/commit\n";
const HOOK_KEY: &str = "a webhook key the Git host shares";
const TOKEN: &str = "glpat-test-token-1234";

fn files(version: &str) -> [(&'static str, String); 3] {
    [
        ("VERSION", format!("{version}\n")),
        ("test.sh", TEST_SCRIPT.to_string()),
        ("build.sh", BUILD_SCRIPT.to_string()),
    ]
}

fn commit(repo: &Repo, version: &str) -> Result<String> {
    let files = files(version);
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    repo.commit("main", &files, &format!("version {version}"))
}

/// `X-Hub-Signature-256` of `body`, as a Git host computes it.
fn signature(key: &str, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn deliver(ns: &NetNs, key: Option<&str>, body: &str) -> Result<(u16, Value)> {
    let signed = key.map(|k| signature(k, body));
    let headers: Vec<(&str, &str)> = signed
        .as_deref()
        .map(|s| vec![("X-Hub-Signature-256", s), ("X-GitHub-Event", "push")])
        .unwrap_or_default();
    // No API token: a Git host has none.
    let (status, answer) = http_with(
        ns,
        None,
        &headers,
        "POST",
        &api_url("/api/cicd/pipelines/site/webhook"),
        Some(body),
    )?;
    Ok((status, serde_json::from_str(&answer).unwrap_or(Value::Null)))
}

/// Run `number` of pipeline `site` once it has ended.
fn ended_run(ns: &NetNs, number: u64) -> Result<Value> {
    eventually(
        &format!("run #{number} ends"),
        Duration::from_secs(180),
        || {
            let run = api_json(ns, &format!("/api/cicd/pipelines/site/runs/{number}"))?;
            Ok(matches!(run["status"].as_str(), Some("succeeded" | "failed")).then_some(run))
        },
    )
}

fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

/// What the app `site` serves at `path` from one of its running containers.
fn served(ns: &NetNs, path: &str) -> Result<String> {
    let id = running_ids(ns, "site")?
        .into_iter()
        .next()
        .context("no running container of site")?;
    fetch(ns, &container_ip(ns, &id)?, path)
}

/// The app serves `commit` (its `/site/commit`), on its current containers.
fn wait_serving(ns: &NetNs, commit: &str) -> Result<()> {
    eventually(
        &format!("site serves {commit}"),
        Duration::from_secs(90),
        || {
            let ids = running_ids(ns, "site")?;
            if ids.len() != 1 {
                return Ok(None);
            }
            Ok((served(ns, "site/commit")? == commit).then_some(()))
        },
    )
}

pub fn pipelines(
    ns: &NetNs,
    daemon: &Daemon,
    base: &str,
    registry: &str,
    dir: &Path,
) -> Result<()> {
    let repo = Repo::create(dir, "site")?;
    let first = commit(&repo, "one")?;

    assert_cli_ok(
        &daemon.cli(&[
            "security",
            "create-secret",
            "--name",
            "site-hook",
            "--value",
            HOOK_KEY,
        ]),
        "create the webhook key",
    );
    let created = assert_cli_ok(
        &daemon.cli(&[
            "cicd",
            "create-pipeline",
            "--name",
            "site",
            "--repository",
            &repo.url(),
            "--branch",
            "main",
        ]),
        "create-pipeline",
    );
    ensure!(created.contains("Created pipeline site"), "{created}");

    // Bad settings are refused, naming the field, and change nothing.
    let bad = daemon.cli(&[
        "cicd",
        "configure-pipeline",
        "--name",
        "site",
        "--output-path",
        "www",
    ]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    ensure!(
        !bad.status.success() && stderr.contains("output_path"),
        "{stderr}"
    );
    let bad = daemon.cli(&[
        "cicd",
        "configure-pipeline",
        "--name",
        "site",
        "--webhook-secret",
        "no-such-secret",
    ]);
    ensure!(!bad.status.success(), "a missing secret was accepted");
    let view = api_json(ns, "/api/cicd/pipelines/site")?;
    ensure!(
        view["output_path"] == "/app" && view["webhook_secret"].is_null(),
        "{view}"
    );

    assert_cli_ok(
        &daemon.cli(&[
            "cicd",
            "configure-pipeline",
            "--name",
            "site",
            "--test-command",
            "sh test.sh",
            "--build-command",
            "sh build.sh",
            "--base-image",
            base,
            "--output-dir",
            "public",
            "--output-path",
            "/www/site",
            "--webhook-secret",
            "site-hook",
            "--memory",
            "256M",
        ]),
        "configure-pipeline",
    );
    assert_cli_ok(
        &daemon.cli(&[
            "cicd",
            "set-deployment-strategy",
            "--name",
            "site",
            "--strategy",
            "rolling-update",
            "--max-unavailable",
            "0",
            "--max-surge",
            "1",
        ]),
        "set-deployment-strategy",
    );

    // Run 1, from the CLI: fetched over file://, tested, built, layered on the base image and
    // deployed; the app serves the commit it was built from.
    let out = assert_cli_ok(
        &daemon.cli(&["cicd", "trigger-pipeline", "--name", "site", "--wait"]),
        "trigger-pipeline --wait",
    );
    ensure!(out.contains("succeeded") && out.contains(&first), "{out}");
    wait_serving(ns, &first)?;
    ensure!(served(ns, "site/version")? == "one");
    let run = ended_run(ns, 1)?;
    for name in ["fetch", "test", "build", "image", "deploy"] {
        ensure!(step(&run, name)["status"] == "succeeded", "{name}: {run}");
    }
    ensure!(
        step(&run, "test")["log"]
            .as_str()
            .is_some_and(|l| l.contains("VERSION is one")),
        "{run}"
    );
    let image = format!("hivemind.local/cicd/site:{}", &first[..12]);
    ensure!(run["image"] == image.as_str(), "{run}");
    let app = api_json(ns, "/api/apps/site")?;
    ensure!(app["image"] == image.as_str(), "{app}");
    let rollout = api_json(ns, "/api/apps/site/rollout")?;
    ensure!(rollout["strategy"] == "rolling-update", "{rollout}");

    // Webhooks: unsigned or signed with another key is 401 and queues nothing; a push to
    // another branch is answered and ignored; a push to main queues run 2.
    let second = commit(&repo, "broken")?;
    let push = json!({"ref": "refs/heads/main", "after": second}).to_string();
    let (status, _) = deliver(ns, None, &push)?;
    ensure!(status == 401, "unsigned delivery: {status}");
    let (status, _) = deliver(ns, Some("another key"), &push)?;
    ensure!(status == 401, "wrongly signed delivery: {status}");
    let other = json!({"ref": "refs/heads/dev", "after": second}).to_string();
    let (status, answer) = deliver(ns, Some(HOOK_KEY), &other)?;
    ensure!(
        status == 200 && answer["queued"] == false,
        "{status} {answer}"
    );
    ensure!(
        api_json(ns, "/api/cicd/pipelines/site/runs")?
            .as_array()
            .map(Vec::len)
            == Some(1),
        "a refused delivery queued a run"
    );
    let (status, answer) = deliver(ns, Some(HOOK_KEY), &push)?;
    ensure!(status == 202 && answer["run"] == 2, "{status} {answer}");

    // Run 2's test fails: the run stops there with the exit code and the log's end; the app
    // keeps serving the first commit.
    let run = ended_run(ns, 2)?;
    ensure!(
        run["status"] == "failed" && run["trigger"] == "webhook",
        "{run}"
    );
    ensure!(run["commit"] == second.as_str(), "{run}");
    let test = step(&run, "test");
    ensure!(
        test["status"] == "failed" && test["exit_code"] == 1,
        "{run}"
    );
    ensure!(
        step(&run, "build").is_null() && step(&run, "deploy").is_null(),
        "{run}"
    );
    ensure!(
        run["error"]
            .as_str()
            .is_some_and(|e| e.contains("exited with code 1")),
        "{run}"
    );
    let logs = assert_cli_ok(
        &daemon.cli(&["cicd", "logs", "--name", "site", "--run", "2"]),
        "cicd logs",
    );
    ensure!(
        logs.contains("==> test (failed, exit code 1)") && logs.contains("VERSION is broken"),
        "{logs}"
    );
    ensure!(served(ns, "site/commit")? == first, "a failed run deployed");

    // Smart HTTP with a token: without it the fetch is refused by the server; with the token
    // (a secret) the run builds the new commit.
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let server = GitServer::start(
        ns,
        addr,
        repo.bare.parent().context("repo dir")?,
        Some(TOKEN),
    )?;
    assert_cli_ok(
        &daemon.cli(&[
            "cicd",
            "configure-pipeline",
            "--name",
            "site",
            "--repository",
            &server.url("site"),
        ]),
        "point at the HTTP server",
    );
    let third = commit(&repo, "three")?;
    let failed = daemon.cli(&["cicd", "trigger-pipeline", "--name", "site", "--wait"]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    ensure!(
        !failed.status.success() && stderr.contains("fetch failed"),
        "without the token: {stderr}"
    );
    ensure!(server.refused() > 0, "the server never refused a request");
    assert_cli_ok(
        &daemon.cli(&[
            "security",
            "create-secret",
            "--name",
            "site-token",
            "--value",
            TOKEN,
        ]),
        "create the token secret",
    );
    // This run also pushes its image to the registry, where every node can pull it.
    let repository = format!("{registry}/hm/site");
    assert_cli_ok(
        &daemon.cli(&[
            "cicd",
            "configure-pipeline",
            "--name",
            "site",
            "--token-secret",
            "site-token",
            "--push-to",
            &repository,
        ]),
        "set the token and the registry",
    );
    let queued = assert_cli_ok(
        &daemon.cli(&["cicd", "trigger-pipeline", "--name", "site"]),
        "trigger over HTTP",
    );
    let number: u64 = queued
        .split('#')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("run number in {queued:?}"))?;
    // While the build runs, its output so far is in the run record (`cicd logs`).
    eventually("the running build's log", Duration::from_secs(90), || {
        let run = api_json(ns, &format!("/api/cicd/pipelines/site/runs/{number}"))?;
        let build = step(&run, "build");
        Ok((build["status"] == "running"
            && build["log"]
                .as_str()
                .is_some_and(|l| l.contains("building three")))
        .then_some(()))
    })?;
    let logs = assert_cli_ok(
        &daemon.cli(&["cicd", "logs", "--name", "site"]),
        "cicd logs while running",
    );
    ensure!(
        logs.contains("==> build (running)") && logs.contains("building three"),
        "{logs}"
    );
    let run = ended_run(ns, number)?;
    ensure!(run["status"] == "succeeded", "{run}");
    ensure!(server.served() > 0);
    wait_serving(ns, &third)?;
    ensure!(served(ns, "site/version")? == "three");
    let pushed = format!("{repository}:{}", &third[..12]);
    let app = api_json(ns, "/api/apps/site")?;
    ensure!(app["image"] == pushed.as_str(), "{app}");
    let (status, tags) = http(
        ns,
        "GET",
        &format!("http://{registry}/v2/hm/site/tags/list"),
        None,
    )?;
    ensure!(
        status == 200 && tags.contains(&third[..12]),
        "{status} {tags}"
    );
    // The registry serves what was pushed: a pull of it (always from the registry) works.
    assert_cli_ok(
        &daemon.cli(&["image", "pull", "--image", &pushed]),
        "pull the pushed image",
    );
    assert_cli_ok(
        &daemon.cli(&[
            "cicd",
            "configure-pipeline",
            "--name",
            "site",
            "--push-to",
            "",
        ]),
        "stop pushing",
    );

    // Polling: the branch moves, a run follows by itself.
    assert_cli_ok(
        &daemon.cli(&[
            "cicd",
            "configure-pipeline",
            "--name",
            "site",
            "--poll-interval",
            "10",
        ]),
        "poll",
    );
    let fourth = commit(&repo, "four")?;
    wait_serving(ns, &fourth)?;
    assert_cli_ok(
        &daemon.cli(&[
            "cicd",
            "configure-pipeline",
            "--name",
            "site",
            "--poll-interval",
            "0",
        ]),
        "poll off",
    );
    let runs = api_json(ns, "/api/cicd/pipelines/site/runs")?;
    ensure!(runs[0]["trigger"] == "poll", "{runs}");
    let run = ended_run(ns, runs[0]["number"].as_u64().context("run number")?)?;
    ensure!(
        run["status"] == "succeeded" && run["commit"] == fourth.as_str(),
        "{run}"
    );
    let table = assert_cli_ok(&daemon.cli(&["cicd", "ls"]), "cicd ls");
    ensure!(
        table.contains("site") && table.contains("rolling-update"),
        "{table}"
    );

    // Deleting the pipeline keeps the app it deployed.
    assert_cli_ok(
        &daemon.cli(&["cicd", "delete-pipeline", "--name", "site"]),
        "delete-pipeline",
    );
    let (status, _) = http_with(
        ns,
        Some(hivemind_tests::daemon::TEST_TOKEN),
        &[],
        "GET",
        &api_url("/api/cicd/pipelines/site"),
        None,
    )?;
    ensure!(status == 404, "the pipeline is still there: {status}");
    ensure!(served(ns, "site/version")? == "four");
    assert_cli_ok(
        &daemon.cli(&["app", "delete", "--name", "site"]),
        "delete app",
    );
    Ok(())
}
