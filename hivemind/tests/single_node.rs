//! End to end on one node, as a user would drive it: a real containerd, a
//! real registry serving an image built offline, the daemon and the CLI, all
//! inside a network namespace this test creates.
//!
//! One test walks the whole life of an app because each step builds on the
//! state of the previous one (and containerd start-up is the slow part).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hivemind_tests::collector::Collector;
use hivemind_tests::containerd::{TestContainerd, prerequisites};
use hivemind_tests::daemon::{
    Daemon, api_json, api_url, ctr_ids, ctr_purge, eventually, http, netns_with_prefix,
    remove_netns_with_prefix,
};
use hivemind_tests::image::build_test_image;
use hivemind_tests::netns::NetNs;
use hivemind_tests::registry::Registry;
use serde_json::Value;

mod cloud;
mod helm;
mod member;
mod pipelines;

use member::push_as_a_member;

const BIN: &str = env!("CARGO_BIN_EXE_hivemind");
const IMAGE_REPO: &str = "hm/test-app";

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

fn containers(ns: &NetNs) -> Result<Vec<Value>> {
    Ok(api_json(ns, "/api/containers")?
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn running_ids(ns: &NetNs, app: &str) -> Result<Vec<String>> {
    Ok(containers(ns)?
        .into_iter()
        .filter(|c| c["app"] == app && c["status"] == "running")
        .filter_map(|c| c["id"].as_str().map(str::to_string))
        .collect())
}

fn container_ip(ns: &NetNs, id: &str) -> Result<String> {
    let info = api_json(ns, &format!("/api/containers/{id}"))?;
    info["ip"]
        .as_str()
        .map(str::to_string)
        .context("container without ip")
}

/// GET a file the test app serves, retrying while it starts.
fn fetch(ns: &NetNs, ip: &str, file: &str) -> Result<String> {
    eventually(
        &format!("http://{ip}/{file}"),
        Duration::from_secs(20),
        || match http(ns, "GET", &format!("http://{ip}/{file}"), None) {
            Ok((200, body)) => Ok(Some(body.trim().to_string())),
            Ok((status, body)) => bail!("status {status}: {body}"),
            Err(e) => Err(e),
        },
    )
}

fn assert_cli_ok(output: &std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed with {:?}\nstdout: {stdout}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn wait_replicas(ns: &NetNs, app: &str, n: usize) -> Result<Vec<String>> {
    eventually(
        &format!("{n} running replicas of {app}"),
        Duration::from_secs(60),
        || {
            let ids = running_ids(ns, app)?;
            Ok((ids.len() == n).then_some(ids))
        },
    )
}

#[test]
fn single_node_app_lifecycle() -> Result<()> {
    if !prerequisites(
        "single_node_app_lifecycle",
        &[
            "containerd",
            "runc",
            "ctr",
            "/usr/bin/docker-registry",
            "/bin/busybox",
            "promtool",
            "git",
            "moto_server",
            "python3",
        ],
    ) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let ns = NetNs::create(&format!("hme2e-{}", std::process::id()))?;
    let containerd = TestContainerd::start(&ns, &dir.path().join("containerd"))?;
    let mut cleanup = Cleanup {
        socket: containerd.socket.clone(),
        netns_prefix: None,
    };
    let image = build_test_image(&dir.path().join("image"))?;
    let registry = Registry::start(&ns, &dir.path().join("registry"), 5000)?;
    registry.push(&ns, &image, IMAGE_REPO, "1")?;
    let reference = format!("{}/{IMAGE_REPO}:1", registry.host());

    let data_dir = dir.path().join("data");
    let mut daemon = Daemon::start(&ns, Path::new(BIN), &data_dir, &containerd.socket)?;
    let node_id = api_json(&ns, "/api/nodes")?[0]["id"]
        .as_str()
        .context("node id")?
        .to_string();
    cleanup.netns_prefix = Some(format!("hm-{node_id}-"));

    let archive = dir.path().join("test-app.tar");
    image.write_oci_archive_named(&archive, "localhost/hm/imported:2")?;
    let result = lifecycle(
        &ns,
        &mut daemon,
        &containerd,
        &reference,
        &node_id,
        &archive,
    )
    .and_then(|()| pipelines::pipelines(&ns, &daemon, &reference, &registry.host(), dir.path()))
    .and_then(|()| cloud::cloud(&ns, &daemon, dir.path()))
    .and_then(|()| helm::helm(&ns, &daemon, &registry, dir.path()))
    .and_then(|()| image_scans(&ns, &daemon, &registry, dir.path()));
    if result.is_err() {
        eprintln!("--- daemon log ---\n{}", daemon.log_tail());
        eprintln!("--- containerd log ---\n{}", containerd.log_tail());
    }
    drop(daemon);
    drop(cleanup);
    result
}

fn lifecycle(
    ns: &NetNs,
    daemon: &mut Daemon,
    containerd: &TestContainerd,
    reference: &str,
    node_id: &str,
    archive: &Path,
) -> Result<()> {
    let socket = &containerd.socket;
    let collector = start_tracing(ns, daemon)?;
    let bulk = start_log_shipping(ns, daemon)?;

    // Deploy with env, a memory limit and a volume; the CLI shows the pull.
    let output = daemon.cli(&[
        "app",
        "deploy",
        "--image",
        reference,
        "--name",
        "web",
        "--env",
        "GREETING=hello",
        "--memory",
        "64M",
        "--cpu",
        "0.5",
        "--volume",
        "data:/data",
    ]);
    let stdout = assert_cli_ok(&output, "app deploy");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Pulling") && stderr.contains("Pulled"),
        "no pull progress: {stderr}"
    );
    assert!(stdout.contains("Deployed application web"), "{stdout}");

    let ids = wait_replicas(ns, "web", 1)?;
    deploy_spans(&collector)?;
    let first = ids[0].clone();
    let ip = container_ip(ns, &first)?;
    assert_eq!(
        fetch(ns, &ip, "greeting")?,
        "hello",
        "env reaches the container"
    );
    assert_eq!(
        fetch(ns, &ip, "memory-limit")?,
        (64u64 << 20).to_string(),
        "memory limit applied"
    );
    assert_eq!(
        fetch(ns, &ip, "boots")?.lines().count(),
        1,
        "volume written once"
    );

    // The eBPF program on the container's veth counted that traffic.
    let info = api_json(ns, &format!("/api/containers/{first}"))?;
    let to_container = info["network"]["to_container"]["packets"]
        .as_u64()
        .unwrap_or(0);
    let from_container = info["network"]["from_container"]["packets"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        to_container > 0 && from_container > 0,
        "data plane counters: {info}"
    );

    metrics_show_the_container(ns, &first)?;
    let dashboard = assert_cli_ok(
        &daemon.cli(&["observability", "open-dashboard"]),
        "observability open-dashboard",
    );
    assert_eq!(
        dashboard.trim(),
        daemon.url("/"),
        "no browser here: the URL"
    );

    // Table output names the container with its IP and limits.
    let table = assert_cli_ok(&daemon.cli(&["app", "containers"]), "app containers");
    assert!(table.contains(&first) && table.contains(&ip), "{table}");

    // Scale to 3: three containers, three addresses, all serving.
    assert_cli_ok(
        &daemon.cli(&["app", "scale", "--name", "web", "--replicas", "3"]),
        "scale 3",
    );
    let three = wait_replicas(ns, "web", 3)?;
    let mut ips = Vec::new();
    for id in &three {
        let ip = container_ip(ns, id)?;
        assert_eq!(fetch(ns, &ip, "greeting")?, "hello");
        ips.push(ip);
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "distinct addresses");
    assert_eq!(ctr_ids(socket, &["tasks", "ls"])?.len(), 3);

    // And back to 1: the first container stays, the others go.
    assert_cli_ok(
        &daemon.cli(&["app", "scale", "--name", "web", "--replicas", "1"]),
        "scale 1",
    );
    let one = wait_replicas(ns, "web", 1)?;
    assert_eq!(one, vec![first.clone()], "oldest replica kept");
    assert_eq!(ctr_ids(socket, &["tasks", "ls"])?, vec![first.clone()]);

    // Restart replaces the container; the volume keeps its data.
    assert_cli_ok(&daemon.cli(&["app", "restart", "--name", "web"]), "restart");
    let restarted = wait_replicas(ns, "web", 1)?;
    assert_ne!(restarted[0], first, "restart makes a new container");
    let ip = container_ip(ns, &restarted[0])?;
    // One boot from the first replica, two from the scale-up, one now: the
    // replicas share the volume.
    assert_eq!(
        fetch(ns, &ip, "boots")?.lines().count(),
        4,
        "volume data kept across restart"
    );
    let current = restarted[0].clone();

    // A container whose process dies is started again.
    ctr(socket, &["tasks", "kill", "--signal", "SIGKILL", &current])?;
    eventually(
        "container restarted after its process died",
        Duration::from_secs(30),
        || {
            let info = api_json(ns, &format!("/api/containers/{current}"))?;
            Ok((info["restarts"].as_u64() >= Some(1) && info["status"] == "running").then_some(()))
        },
    )?;
    assert_eq!(
        fetch(ns, &ip, "boots")?.lines().count(),
        5,
        "same container, same volume"
    );
    // On its fresh veth the container keeps the MAC its IP gives it, so the
    // node's neighbour entry for it is still right.
    let octets: Vec<u8> = ip.split('.').map(|o| o.parse()).collect::<Result<_, _>>()?;
    let expected = format!(
        "0a:58:{:02x}:{:02x}:{:02x}:{:02x}",
        octets[0], octets[1], octets[2], octets[3]
    );
    let mac = ctr(
        socket,
        &[
            "tasks",
            "exec",
            "--exec-id",
            "mac",
            &current,
            "cat",
            "/sys/class/net/eth0/address",
        ],
    )?;
    assert_eq!(mac.trim(), expected, "container MAC after a restart");
    let neighbour = ns
        .command("ip")
        .args(["neigh", "show", &ip, "dev", "hm0"])
        .output()?;
    let neighbour = String::from_utf8_lossy(&neighbour.stdout);
    assert!(
        neighbour.is_empty() || neighbour.contains(&expected),
        "the node's neighbour entry names the container's MAC: {neighbour}"
    );

    // kill -9 of the daemon: the container keeps running and is adopted.
    daemon.kill9();
    assert_eq!(
        fetch(ns, &ip, "greeting")?,
        "hello",
        "serving while the daemon is down"
    );
    daemon.restart(ns)?;
    std::thread::sleep(Duration::from_secs(5)); // two reconcile periods
    assert_eq!(
        running_ids(ns, "web")?,
        vec![current.clone()],
        "adopted, not duplicated"
    );
    assert_eq!(ctr_ids(socket, &["tasks", "ls"])?, vec![current.clone()]);
    assert_eq!(
        ctr_ids(socket, &["containers", "ls"])?,
        vec![current.clone()]
    );
    let info = api_json(ns, &format!("/api/containers/{current}"))?;
    assert_eq!(
        info["restarts"].as_u64(),
        Some(1),
        "adoption is not a restart: {info}"
    );
    // The data plane is attached again after the restart.
    fetch(ns, &ip, "greeting")?;
    eventually("counters after re-attach", Duration::from_secs(10), || {
        let info = api_json(ns, &format!("/api/containers/{current}"))?;
        Ok((info["network"]["to_container"]["packets"].as_u64() > Some(0)).then_some(()))
    })?;

    // Confined by default: Docker's seccomp profile and no new privileges.
    let status = ctr(
        socket,
        &[
            "tasks",
            "exec",
            "--exec-id",
            "confined",
            &current,
            "cat",
            "/proc/self/status",
        ],
    )?;
    assert!(
        status.contains("Seccomp:\t2"),
        "seccomp filter on: {status}"
    );
    assert!(
        status.contains("NoNewPrivs:\t1"),
        "no new privileges: {status}"
    );

    peer_records_are_checked_one_by_one(ns, &daemon.data_dir, reference)?;
    cluster_traffic_needs_a_member_certificate(ns, &daemon.data_dir, node_id)?;
    clock_behind_after_restart(ns, daemon, &current)?;

    // Bad input changes nothing and names the field.
    let bad = daemon.cli(&["app", "deploy", "--image", reference, "--name", "Bad_Name"]);
    assert_eq!(bad.status.code(), Some(2), "invalid name is a usage error");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("name"));
    let (status, body) = http(
        ns,
        "POST",
        &api_url("/api/deploy"),
        Some(r#"{"image":"x","name":"web","resources":{"memory":"lots"}}"#),
    )?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("resources.memory"), "{body}");
    let (status, body) = http(ns, "POST", &api_url("/api/deploy"), Some("{not json"))?;
    assert_eq!(status, 400, "{body}");
    let missing = daemon.cli(&[
        "app",
        "deploy",
        "--image",
        &format!("{reference}-missing"),
        "--name",
        "ghost",
    ]);
    assert_ne!(missing.status.code(), Some(0), "a missing tag fails");
    assert!(
        api_json(ns, "/api/apps/ghost").is_err(),
        "nothing recorded for a failed pull"
    );
    assert_eq!(
        running_ids(ns, "web")?,
        vec![current.clone()],
        "bad input changed nothing"
    );

    // Logs are captured by the log driver: with the times it wrote, and filtered by them.
    let logs = assert_cli_ok(&daemon.cli(&["app", "logs", "--name", "web"]), "app logs");
    assert!(logs.contains(&format!("serving as {current}")), "{logs}");
    let stamped = assert_cli_ok(
        &daemon.cli(&[
            "app",
            "logs",
            "--name",
            "web",
            "--timestamps",
            "--since",
            "1h",
        ]),
        "app logs --timestamps --since 1h",
    );
    let line = stamped
        .lines()
        .find(|l| l.ends_with(&format!("serving as {current}")))
        .with_context(|| format!("the start line in {stamped}"))?;
    let (time, _) = line.split_once(' ').context("a time first")?;
    assert!(
        time.starts_with("20") && time.ends_with('Z') && time.contains('T'),
        "an RFC 3339 time: {line}"
    );
    let later = assert_cli_ok(
        &daemon.cli(&[
            "app",
            "logs",
            "--name",
            "web",
            "--since",
            "2099-01-01T00:00:00Z",
        ]),
        "app logs --since later",
    );
    assert!(
        later.trim().is_empty(),
        "nothing written since 2099: {later}"
    );
    let bad = daemon.cli(&["app", "logs", "--name", "web", "--since", "yesterday"]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("since"),
        "a bad --since is refused: {stderr}"
    );
    shipped_lines(ns, daemon, &bulk, &current)?;

    an_update_that_never_gets_ready_leaves_the_old_version_serving(
        ns, daemon, reference, &current,
    )?;

    // Delete leaves nothing behind, in /metrics neither (within 60 s, the budget).
    assert_cli_ok(&daemon.cli(&["app", "delete", "--name", "web"]), "delete");
    assert!(containers(ns)?.is_empty(), "no container records");
    eventually(
        "no series of a deleted container in /metrics",
        Duration::from_secs(60),
        || {
            let (_, text) = http(ns, "GET", &api_url("/metrics"), None)?;
            Ok((!text.contains("app=\"web\"")).then_some(()))
        },
    )?;
    assert!(ctr_ids(socket, &["tasks", "ls"])?.is_empty(), "no tasks");
    assert!(
        ctr_ids(socket, &["containers", "ls"])?.is_empty(),
        "no containers"
    );
    let snapshots = ctr(socket, &["snapshots", "ls"])?;
    assert!(
        !snapshots.contains("web-"),
        "no container snapshots: {snapshots}"
    );
    assert!(
        netns_with_prefix(&format!("hm-{node_id}-")).is_empty(),
        "no namespaces left"
    );
    let links = hivemind_tests::netns::run(ns.command("ip").args(["-o", "link", "show"]))?;
    let veths: Vec<&str> = links
        .lines()
        .filter(|l| l.contains(": hm") && l.contains("@if"))
        .collect();
    assert!(veths.is_empty(), "no veths left: {veths:?}");
    let data_dir = &daemon.data_dir;
    let leftovers: Vec<_> = std::fs::read_dir(data_dir.join("containers"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "container dirs left: {leftovers:?}");
    let nodes = api_json(ns, "/api/health")?;
    assert_eq!(nodes["containers"]["total"], 0);

    // An image imported from an OCI archive runs without a registry.
    let archive = archive.display().to_string();
    let imported = assert_cli_ok(&daemon.cli(&["image", "import", &archive]), "image import");
    assert!(imported.contains("Imported 1 image"), "{imported}");
    assert_cli_ok(
        &daemon.cli(&[
            "app",
            "deploy",
            "--image",
            "localhost/hm/imported:2",
            "--name",
            "imported",
        ]),
        "deploy the imported image",
    );
    let ids = wait_replicas(ns, "imported", 1)?;
    let ip = container_ip(ns, &ids[0])?;
    assert_eq!(
        fetch(ns, &ip, "greeting")?,
        "default",
        "the image's own env"
    );
    rollout_history_and_undo(ns, daemon)?;
    assert_cli_ok(
        &daemon.cli(&["app", "delete", "--name", "imported"]),
        "delete imported",
    );
    let (status, body) = http(
        ns,
        "GET",
        &api_url("/api/apps/imported/rollout/history"),
        None,
    )?;
    assert_eq!(status, 404, "a deleted app has no history: {body}");
    let (status, body) = http(
        ns,
        "POST",
        &api_url("/api/images/import"),
        Some("not a tar"),
    )?;
    assert_eq!(status, 400, "a bad archive is refused: {body}");

    // The volume outlives the app and can then be deleted.
    let volumes = assert_cli_ok(&daemon.cli(&["volume", "ls"]), "volume ls");
    assert!(volumes.contains("data"), "{volumes}");
    assert_cli_ok(
        &daemon.cli(&["volume", "delete", "--name", "data"]),
        "volume delete",
    );
    secrets(ns, daemon, socket, reference)
}

/// The app `imported` runs revision 1 (the image's own GREETING): a deploy that changes the
/// environment is revision 2, scaling is none, `rollout undo` brings revision 1's spec back as
/// revision 3 and the container serves the old greeting again; bad undos are refused with the
/// reason and change nothing.
fn rollout_history_and_undo(ns: &NetNs, daemon: &Daemon) -> Result<()> {
    let greeting = |expected: &str| -> Result<()> {
        eventually(
            &format!("greeting {expected}"),
            Duration::from_secs(60),
            || {
                let ids = running_ids(ns, "imported")?;
                if ids.len() != 1 {
                    return Ok(None);
                }
                let ip = container_ip(ns, &ids[0])?;
                Ok((fetch(ns, &ip, "greeting").ok().as_deref() == Some(expected)).then_some(()))
            },
        )
    };
    let history = || -> Result<Vec<Value>> {
        let (status, body) = http(
            ns,
            "GET",
            &api_url("/api/apps/imported/rollout/history"),
            None,
        )?;
        assert_eq!(status, 200, "{body}");
        Ok(serde_json::from_str::<Vec<Value>>(&body)?)
    };
    assert_cli_ok(
        &daemon.cli(&[
            "app",
            "deploy",
            "--image",
            "localhost/hm/imported:2",
            "--name",
            "imported",
            "--env",
            "GREETING=second",
        ]),
        "deploy revision 2",
    );
    greeting("second")?;
    assert_cli_ok(
        &daemon.cli(&["app", "scale", "--name", "imported", "--replicas", "1"]),
        "scale (not a revision)",
    );
    let revisions = history()?;
    let summary: Vec<(u64, bool, Vec<String>)> = revisions
        .iter()
        .map(|r| {
            (
                r["revision"].as_u64().unwrap_or(0),
                r["current"] == true,
                serde_json::from_value(r["changes"].clone()).unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [(1, false, vec![]), (2, true, vec!["env".to_string()])],
        "{revisions:#?}"
    );

    let undone = assert_cli_ok(
        &daemon.cli(&["app", "rollout", "undo", "--name", "imported"]),
        "undo",
    );
    assert!(
        undone.contains("Rolled back application imported"),
        "{undone}"
    );
    greeting("default")?;
    let revisions = history()?;
    assert_eq!(revisions.len(), 3, "{revisions:#?}");
    assert_eq!(revisions[2]["from_revision"], 1);
    assert_eq!(revisions[2]["current"], true);
    let shown = assert_cli_ok(
        &daemon.cli(&["app", "rollout", "history", "--name", "imported"]),
        "history",
    );
    assert!(
        shown.contains("3 (current)") && shown.contains("undo to 1"),
        "{shown}"
    );

    // Bad undos: a revision never kept, and the one the app runs.
    let missing = daemon.cli(&[
        "app",
        "rollout",
        "undo",
        "--name",
        "imported",
        "--to-revision",
        "9",
    ]);
    let error = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success()
            && error.contains("revision 9")
            && error.contains("kept: 1, 2, 3"),
        "{error}"
    );
    let same = daemon.cli(&[
        "app",
        "rollout",
        "undo",
        "--name",
        "imported",
        "--to-revision",
        "1",
    ]);
    let error = String::from_utf8_lossy(&same.stderr);
    assert!(
        !same.status.success() && error.contains("runs revision 1 already"),
        "{error}"
    );
    assert_eq!(history()?.len(), 3, "a refused undo writes no revision");
    Ok(())
}

/// Secrets: a file (0400, on a tmpfs) and a variable in the container, a
/// rotation that reaches the running container, and the values nowhere
/// else: not in containerd's spec, the environment, the redb file, the
/// logs or any API answer.
fn secrets(ns: &NetNs, daemon: &Daemon, socket: &Path, reference: &str) -> Result<()> {
    let password = format!("pw-{:x}-file", std::process::id() as u64 * 7919);
    let api_key = format!("key-{:x}-env", std::process::id() as u64 * 104729);
    let rotated = format!("pw-{:x}-rotated", std::process::id() as u64 * 15485863);
    let file = daemon.data_dir.with_extension("password");
    std::fs::write(&file, &password)?;
    let created = assert_cli_ok(
        &daemon.cli(&[
            "security",
            "create-secret",
            "--name",
            "db-password",
            "--file",
            &file.display().to_string(),
        ]),
        "create-secret --file",
    );
    assert!(
        created.contains("Created secret db-password (version 1)"),
        "{created}"
    );
    std::fs::remove_file(&file)?;
    assert_cli_ok(
        &daemon.cli(&[
            "security",
            "create-secret",
            "--name",
            "api-key",
            "--value",
            &api_key,
        ]),
        "create-secret --value",
    );
    let again = daemon.cli(&[
        "security",
        "create-secret",
        "--name",
        "api-key",
        "--value",
        "x",
    ]);
    assert_eq!(
        again.status.code(),
        Some(7),
        "a second create is a conflict"
    );

    // An app that names a missing secret is refused whole.
    let missing = daemon.cli(&[
        "app",
        "deploy",
        "--image",
        reference,
        "--name",
        "ghost",
        "--secret",
        "nope:/run/nope",
    ]);
    assert_eq!(missing.status.code(), Some(6), "missing secret: not found");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("secret nope not found"));
    assert!(api_json(ns, "/api/apps/ghost").is_err(), "nothing recorded");

    assert_cli_ok(
        &daemon.cli(&[
            "app",
            "deploy",
            "--image",
            reference,
            "--name",
            "vault",
            "--secret",
            "db-password:/etc/secrets/db-password",
            "--secret-env",
            "API_KEY=api-key",
        ]),
        "deploy with secrets",
    );
    let id = wait_replicas(ns, "vault", 1)?.remove(0);
    let exec = |exec_id: &str, args: &[&str]| -> Result<String> {
        let mut all = vec!["tasks", "exec", "--exec-id", exec_id, id.as_str()];
        all.extend_from_slice(args);
        ctr(socket, &all)
    };
    assert_eq!(exec("s1", &["cat", "/etc/secrets/db-password"])?, password);
    let listing = exec("s2", &["ls", "-l", "/etc/secrets/db-password"])?;
    assert!(listing.starts_with("-r--------"), "mode 0400: {listing}");
    let env = exec("s3", &["env"])?;
    assert!(
        env.contains(&format!("API_KEY={api_key}")),
        "variable set: {env}"
    );
    assert!(
        !env.contains(&password),
        "the file secret is not in the environment"
    );
    let mounts = exec("s4", &["cat", "/proc/mounts"])?;
    let mount = mounts
        .lines()
        .find(|l| l.contains("/etc/secrets/db-password"))
        .context("secret mount")?;
    assert!(
        mount.contains("tmpfs") && mount.contains(" ro,"),
        "read-only tmpfs file: {mount}"
    );

    // A rotation reaches the running container, without a restart.
    let answer = assert_cli_ok(
        &daemon.cli(&[
            "security",
            "rotate",
            "--name",
            "db-password",
            "--value",
            &rotated,
        ]),
        "rotate",
    );
    assert!(answer.contains("version 2"), "{answer}");
    eventually(
        "the rotated secret in the container",
        Duration::from_secs(20),
        || Ok((exec("s5", &["cat", "/etc/secrets/db-password"])? == rotated).then_some(())),
    )?;
    assert_eq!(
        running_ids(ns, "vault")?,
        vec![id.clone()],
        "same container"
    );
    let info = api_json(ns, &format!("/api/containers/{id}"))?;
    assert_eq!(info["restarts"], 0, "not restarted: {info}");
    let listed = assert_cli_ok(&daemon.cli(&["security", "ls"]), "security ls");
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("db-password") && l.contains(" 2 ") && l.contains("vault")),
        "{listed}"
    );

    // The values are nowhere else.
    let values = [password.as_str(), api_key.as_str(), rotated.as_str()];
    let spec = ctr(socket, &["containers", "info", &id])?;
    for value in [password.as_str(), rotated.as_str()] {
        assert!(
            !spec.contains(value),
            "a secret file's value in containerd's spec"
        );
    }
    let redb = std::fs::read(daemon.data_dir.join("state.redb"))?;
    let answers: Vec<String> = [
        "/api/apps",
        "/api/apps/vault",
        "/api/containers",
        &format!("/api/containers/{id}"),
        "/api/security/secrets",
        "/api/security/secrets/db-password",
        "/api/audit",
        "/api/apps/vault/logs",
        "/api/health",
    ]
    .iter()
    .map(|path| http(ns, "GET", &api_url(path), None).map(|(_, body)| body))
    .collect::<Result<_>>()?;
    let log = std::fs::read_to_string(&daemon.log)?;
    for value in values {
        assert!(
            !redb.windows(value.len()).any(|w| w == value.as_bytes()),
            "a secret value in the redb file"
        );
        assert!(!log.contains(value), "a secret value in the daemon's log");
        for answer in &answers {
            assert!(
                !answer.contains(value),
                "a secret value in an API answer: {answer}"
            );
        }
    }

    // In use, a secret stays; once unused, it goes, and so do the files.
    let in_use = daemon.cli(&["security", "delete", "--name", "db-password"]);
    assert_eq!(
        in_use.status.code(),
        Some(7),
        "deleting a used secret is a conflict"
    );
    let secrets_dir = hivemind_tests::daemon::secrets_dir_for(&daemon.data_dir);
    assert!(
        secrets_dir.join(&id).exists(),
        "the container's secret files"
    );
    assert_cli_ok(
        &daemon.cli(&["app", "delete", "--name", "vault"]),
        "delete vault",
    );
    assert!(
        !secrets_dir.join(&id).exists(),
        "secret files removed with the container"
    );
    for name in ["db-password", "api-key"] {
        assert_cli_ok(
            &daemon.cli(&["security", "delete", "--name", name]),
            "delete secret",
        );
    }
    let left: Value = api_json(ns, "/api/security/secrets")?;
    assert_eq!(left, serde_json::json!([]));
    Ok(())
}

fn ctr(socket: &Path, args: &[&str]) -> Result<String> {
    hivemind_tests::daemon::ctr(socket, args)
}

/// A batch of records as a peer pushes it: the good record applies and runs,
/// each bad one is refused on its own with its reason, and reconciling goes on.
fn peer_records_are_checked_one_by_one(ns: &NetNs, data_dir: &Path, reference: &str) -> Result<()> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let app = |name: &str, volume: &str, wall_ms: u64| {
        serde_json::json!({
            "key": {"table": "apps", "key": name},
            "version": {"wall_ms": wall_ms, "counter": 0, "node": 7},
            "value": {
                "spec": {
                    "name": name, "image": reference, "service": null, "replicas": 1,
                    "resources": {"cpu": null, "memory": null},
                    "volumes": [{"name": volume, "mountPath": "/data"}],
                    "env": {}, "ports": [], "labels": {"app": name}
                },
                "generation": 1, "created_at": 0, "updated_at": 0
            }
        })
    };
    let undecodable = serde_json::json!({
        "key": {"table": "apps", "key": "broken"},
        "version": {"wall_ms": now_ms, "counter": 0, "node": 7},
        "value": {"spec": "not an app"}
    });
    let batch = serde_json::json!([
        app("pushed", "pushed-data", now_ms),
        undecodable,
        app("escape", "../../../../etc", now_ms),
        app("future", "future-data", now_ms + 600_000),
    ]);
    let (status, body) = push_as_a_member(ns, data_dir, &batch.to_string())?;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body)?;
    assert_eq!(answer["applied"], 1, "{answer}");
    let reasons: Vec<String> = answer["rejected"]
        .as_array()
        .context("rejected list")?
        .iter()
        .map(|r| format!("{} {}", r["key"]["key"], r["reason"]))
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].contains("broken") && reasons[0].contains("undecodable"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("escape") && reasons[1].contains("volumes[0].name"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains("future") && reasons[2].contains("ahead"),
        "{reasons:?}"
    );
    // The good record is an app like any other: placed, started, listed.
    wait_replicas(ns, "pushed", 1)?;
    for refused in ["broken", "escape", "future"] {
        assert!(
            api_json(ns, &format!("/api/apps/{refused}")).is_err(),
            "{refused} was stored"
        );
    }
    let (status, body) = http(ns, "DELETE", &api_url("/api/apps/pushed"), None)?;
    assert_eq!(status, 200, "{body}");
    wait_replicas(ns, "pushed", 0)?;
    Ok(())
}

/// `observability configure-tracing` to an OTLP/HTTP receiver in the daemon's namespace; an
/// endpoint that is no http(s) URL is refused, naming the field.
fn start_tracing(ns: &NetNs, daemon: &Daemon) -> Result<Collector> {
    let collector = Collector::start(ns, "127.0.0.1:14318".parse()?, 200, "")?;
    let bad = daemon.cli(&[
        "observability",
        "configure-tracing",
        "--endpoint",
        "ftp://127.0.0.1",
    ]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("endpoint"),
        "a bad endpoint is refused: {stderr}"
    );
    let stdout = assert_cli_ok(
        &daemon.cli(&[
            "observability",
            "configure-tracing",
            "--service-name",
            "hm-e2e",
            "--endpoint",
            "http://127.0.0.1:14318",
        ]),
        "configure-tracing",
    );
    assert!(
        stdout.contains("http://127.0.0.1:14318/v1/traces"),
        "{stdout}"
    );
    let shown = api_json(ns, "/api/observability/tracing")?;
    assert_eq!(shown["service_name"], "hm-e2e", "{shown}");
    Ok(collector)
}

/// `observability configure-logging` to a `_bulk` receiver in the daemon's namespace; an index
/// Elasticsearch would refuse is refused, naming the field.
fn start_log_shipping(ns: &NetNs, daemon: &Daemon) -> Result<Collector> {
    let bulk = Collector::start(
        ns,
        "127.0.0.1:19200".parse()?,
        200,
        r#"{"took":1,"errors":false,"items":[]}"#,
    )?;
    let bad = daemon.cli(&[
        "observability",
        "configure-logging",
        "--endpoint",
        "http://127.0.0.1:19200",
        "--index",
        "Bad/Index",
    ]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("index"),
        "a bad index is refused: {stderr}"
    );
    assert_cli_ok(
        &daemon.cli(&[
            "observability",
            "configure-logging",
            "--endpoint",
            "http://127.0.0.1:19200",
            "--index",
            "hm-logs",
        ]),
        "configure-logging",
    );
    Ok(bulk)
}

/// What reached the `_bulk` receiver: the container's start line with its app, container,
/// node and time, and the daemon's own "container started" event, each after its index
/// action; `/metrics` counts them; `--disable` stops the shipping.
fn shipped_lines(ns: &NetNs, daemon: &Daemon, bulk: &Collector, container: &str) -> Result<()> {
    let docs = |bulk: &Collector| -> Result<Vec<Value>> {
        let mut docs = Vec::new();
        for request in bulk.received() {
            assert_eq!(request.path, "/_bulk");
            let lines: Vec<&[u8]> = request.body.split(|b| *b == b'\n').collect();
            for pair in lines.chunks(2).filter(|p| p.len() == 2 && !p[0].is_empty()) {
                let action: Value = serde_json::from_slice(pair[0])?;
                assert_eq!(action["index"]["_index"], "hm-logs", "{action}");
                docs.push(serde_json::from_slice(pair[1])?);
            }
        }
        Ok(docs)
    };
    let started = format!("serving as {container}");
    let docs = eventually("shipped log lines", Duration::from_secs(20), || {
        let docs = docs(bulk)?;
        let line = docs.iter().any(|d| d["message"] == started.as_str());
        let own = docs
            .iter()
            .any(|d| d["source"] == "daemon" && d["message"] == "container started");
        Ok((line && own).then_some(docs))
    })?;
    let line = docs
        .iter()
        .find(|d| d["message"] == started.as_str())
        .context("the start line")?;
    assert_eq!(line["app"], "web", "{line}");
    assert_eq!(line["container"], container, "{line}");
    assert_eq!(line["source"], "container", "{line}");
    assert_eq!(line["stream"], "stdout", "{line}");
    assert!(
        line["node"].as_str().is_some_and(|n| !n.is_empty()),
        "{line}"
    );
    assert!(
        line["@timestamp"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")),
        "{line}"
    );
    // The receiver holds a batch before the daemon reads its answer and counts it; the
    // counter restarted with the daemon (the scenario restarts it), so only some are counted.
    eventually("the shipped lines counted", Duration::from_secs(10), || {
        let (_, metrics) = http(ns, "GET", &api_url("/metrics"), None)?;
        let shipped: f64 = metrics
            .lines()
            .find(|l| l.starts_with("hivemind_log_lines_shipped_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0);
        Ok((shipped >= 1.0).then_some(()))
    })?;
    assert_cli_ok(
        &daemon.cli(&["observability", "configure-logging", "--disable"]),
        "configure-logging --disable",
    );
    let (status, _) = http(ns, "GET", &api_url("/api/observability/logging"), None)?;
    assert_eq!(status, 404, "no shipping after --disable");
    Ok(())
}

/// The spans of the first deploy, as the receiver decoded them: the CLI's pull request with
/// `image.pull` and `image.unpack` under it, and `POST /api/deploy` with the container's
/// `container.start` and its network, run and ready steps under it, all of service `hm-e2e`.
fn deploy_spans(collector: &Collector) -> Result<()> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message as _;
    let wanted = [
        "POST /api/images/pull",
        "image.pull",
        "image.unpack",
        "POST /api/deploy",
        "container.start",
        "container.network",
        "container.run",
        "container.ready",
    ];
    let (spans, services) = eventually("the deploy's spans", Duration::from_secs(30), || {
        let mut spans: Vec<Span> = Vec::new();
        let mut services = std::collections::BTreeSet::new();
        for request in collector.received() {
            assert_eq!(request.path, "/v1/traces");
            let export = ExportTraceServiceRequest::decode(request.body.as_slice())?;
            for resource in export.resource_spans {
                for attribute in resource.resource.iter().flat_map(|r| &r.attributes) {
                    if attribute.key == "service.name" {
                        services.insert(format!("{:?}", attribute.value));
                    }
                }
                spans.extend(resource.scope_spans.into_iter().flat_map(|s| s.spans));
            }
        }
        let all = wanted.iter().all(|n| spans.iter().any(|s| s.name == *n));
        Ok(all.then_some((spans, services)))
    })?;
    assert!(
        services.len() == 1 && services.iter().all(|s| s.contains("hm-e2e")),
        "{services:?}"
    );
    let names = || spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>();
    let under = |parent: &Span, name: &str| {
        spans
            .iter()
            .find(|s| {
                s.name == name
                    && s.parent_span_id == parent.span_id
                    && s.trace_id == parent.trace_id
            })
            .cloned()
            .with_context(|| format!("{name} under {}: {:?}", parent.name, names()))
    };
    let root = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name && s.parent_span_id.is_empty())
            .cloned()
            .with_context(|| format!("a root span {name}: {:?}", names()))
    };
    let pull_request = root("POST /api/images/pull")?;
    let pull = under(&pull_request, "image.pull")?;
    under(&pull, "image.unpack")?;
    let deploy = root("POST /api/deploy")?;
    let route = deploy
        .attributes
        .iter()
        .find(|a| a.key == "http.route")
        .map(|a| format!("{:?}", a.value));
    assert!(
        route.as_deref().is_some_and(|r| r.contains("/api/deploy")),
        "{:?}",
        deploy.attributes
    );
    under(&deploy, "image.pull")?;
    let start = under(&deploy, "container.start")?;
    for step in ["container.network", "container.run", "container.ready"] {
        let child = under(&start, step)?;
        assert!(
            child.end_time_unix_nano >= child.start_time_unix_nano,
            "{step} has an end"
        );
    }
    Ok(())
}

/// A redeploy whose new version runs but never passes its readiness check
/// leaves the old container serving; a good redeploy then replaces both.
fn an_update_that_never_gets_ready_leaves_the_old_version_serving(
    ns: &NetNs,
    daemon: &Daemon,
    reference: &str,
    current: &str,
) -> Result<()> {
    let deploy = |extra: &[&str]| {
        let mut args = vec![
            "app",
            "deploy",
            "--image",
            reference,
            "--name",
            "web",
            "--env",
            "GREETING=hello",
            "--volume",
            "data:/data",
        ];
        args.extend_from_slice(extra);
        assert_cli_ok(&daemon.cli(&args), "redeploy web")
    };
    deploy(&["--ready-http", "/never-ready", "--ready-interval", "1s"]);
    let stuck = eventually("the new version runs", Duration::from_secs(30), || {
        let ids = running_ids(ns, "web")?;
        Ok((ids.len() == 2).then_some(ids))
    })?;
    std::thread::sleep(Duration::from_secs(5)); // readiness failing, two reconcile passes
    assert_eq!(
        running_ids(ns, "web")?,
        stuck,
        "the old version is kept: {stuck:?}"
    );
    assert!(stuck.contains(&current.to_string()), "{stuck:?}");
    let ip = container_ip(ns, current)?;
    assert_eq!(
        fetch(ns, &ip, "greeting")?,
        "hello",
        "the old version serves"
    );
    let app = api_json(ns, "/api/apps/web")?;
    assert_ne!(app["status"], "running", "not converged: {app}");
    // `rollout status` says where it stands and why: the new container is not ready, the old
    // one is still there; waiting for it fails with exit code 1.
    let new = stuck
        .iter()
        .find(|id| *id != current)
        .context("the new container")?;
    let status = daemon.cli(&["app", "rollout", "status", "--name", "web", "--wait", "2"]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        !status.status.success()
            && shown.contains("0/1 updated and ready, 1 updated, 1 old")
            && shown.contains(&format!("waiting: {new} on "))
            && shown.contains("progressing"),
        "{shown}{}",
        String::from_utf8_lossy(&status.stderr)
    );

    deploy(&[]);
    let replaced = wait_replicas(ns, "web", 1)?;
    assert!(
        !stuck.contains(&replaced[0]),
        "a third generation replaced both: {replaced:?} after {stuck:?}"
    );
    let done = assert_cli_ok(
        &daemon.cli(&["app", "rollout", "status", "--name", "web", "--wait", "60"]),
        "rollout status --wait",
    );
    assert!(
        done.contains("1/1 updated and ready, 1 updated, 0 old") && done.contains("complete"),
        "{done}"
    );
    Ok(())
}

/// `GET /metrics`: the running container's CPU, memory and eBPF counters
/// under the names Prometheus users know; `promtool check metrics` accepts
/// the classic format, and OpenMetrics comes when asked for.
fn metrics_show_the_container(ns: &NetNs, id: &str) -> Result<()> {
    let (status, text) = http(ns, "GET", &api_url("/metrics"), None)?;
    assert_eq!(status, 200, "{text}");
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{")) && l.contains(&format!("container=\"{id}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    for name in [
        "container_network_receive_packets_total",
        "container_network_transmit_packets_total",
        "container_network_receive_bytes_total",
        "container_memory_working_set_bytes",
    ] {
        assert!(
            value(name).is_some_and(|v| v > 0.0),
            "{name} of {id}:\n{text}"
        );
    }
    assert!(
        value("container_cpu_usage_seconds_total").is_some(),
        "{text}"
    );
    assert!(text.contains("app=\"web\""), "{text}");
    for name in [
        "container_network_receive_packets_dropped_total",
        "container_network_transmit_packets_dropped_total",
    ] {
        assert!(value(name).is_some(), "{name} of {id}:\n{text}");
    }
    // The cardinality budget: at most 40 series name the container.
    let series = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(&format!("container=\"{id}\"")))
        .count();
    assert!(
        (8..=40).contains(&series),
        "{series} series of {id}:\n{text}"
    );
    assert!(
        text.contains("hivemind_api_request_duration_seconds_count{"),
        "{text}"
    );
    // Map pressure: the running container is an entry of the endpoint and host-routing maps,
    // against their size.
    let map = |name: &str, map: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(&format!("map=\"{map}\"")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    for table in ["HM_ENDPOINTS", "HM_LXC"] {
        let entries = map("hivemind_bpf_map_entries", table);
        let capacity = map("hivemind_bpf_map_capacity", table);
        let pressure = map("hivemind_bpf_map_pressure", table);
        assert!(
            entries.is_some_and(|e| e >= 1.0) && capacity == Some(4096.0),
            "{table}: {entries:?} of {capacity:?}\n{text}"
        );
        assert_eq!(
            pressure,
            entries.map(|e| e / 4096.0),
            "{table} pressure\n{text}"
        );
    }
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("run promtool (apt-get install prometheus)")?;
    use std::io::Write as _;
    check
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(text.as_bytes())?;
    let checked = check.wait_with_output()?;
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let (status, open) = hivemind_tests::daemon::http_with(
        ns,
        Some(hivemind_tests::daemon::TEST_TOKEN),
        &[("accept", "application/openmetrics-text; version=1.0.0")],
        "GET",
        &api_url("/metrics"),
        None,
    )?;
    assert_eq!(status, 200);
    assert!(open.ends_with("# EOF\n"), "OpenMetrics when asked: {open}");
    Ok(())
}

/// Replication is served over mutual TLS only: no client certificate, 401;
/// a certificate from another CA, no handshake; a member that names itself
/// as another, 403. A node's own records (its node record, its subnet
/// claim) are taken only with that node's signature.
fn cluster_traffic_needs_a_member_certificate(
    ns: &NetNs,
    data_dir: &Path,
    node_id: &str,
) -> Result<()> {
    use hivemind::cluster::{Hlc, Record, RecordKey, RecordSignature};
    use hivemind::pki::{Ca, NodeTls};
    let ca = member::daemon_ca(data_dir)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone())?;
    let anonymous = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let (status, body) = member::push_with(ns, anonymous, &[], "[]")?;
    assert_eq!(status, 401, "no client certificate: {body}");
    assert!(body.contains("node certificate"), "{body}");

    // A certificate from another CA, shown to a client that trusts the
    // daemon: only the daemon's check of it can fail.
    let stranger = Ca::generate()?;
    let intruder = stranger.issue("intruder", &[], Duration::from_secs(600))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone())?;
    let foreign = NodeTls {
        ca: stranger,
        cert: intruder,
    }
    .client_config_trusting(roots)?;
    let refused = member::push_with(ns, foreign, &[], "[]");
    assert!(
        refused.is_err(),
        "a certificate from another CA: {refused:?}"
    );

    let honest = member::member(data_dir, "planter")?;
    let planter = honest.client_config()?;
    let (status, body) = member::push_with(
        ns,
        planter.clone(),
        &[(hivemind::cluster::NODE_HEADER, node_id)],
        "[]",
    )?;
    assert_eq!(status, 403, "a member naming itself as another: {body}");

    // Node records: only the node itself may write its own.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let node_record = |id: &str| -> Result<Record> {
        // What an attacker would plant: this node's subnet, pointed at
        // an underlay address of its choosing.
        let info = serde_json::json!({
            "id": id, "name": "hijacked", "api": "127.0.0.1:3000",
            "underlay": "127.0.0.66", "subnet": "10.244.0.0/24",
            "cpu_cores": 1.0, "memory_bytes": 1u64 << 30, "labels": {}, "started_at": 0,
        });
        Ok(Record {
            key: RecordKey::new("nodes", id),
            version: Hlc {
                wall_ms: now_ms,
                counter: 0,
                node: 7,
            },
            value: Some(info),
            signature: None,
        })
    };
    let unsigned = node_record(node_id)?;
    let mut forged = node_record(node_id)?;
    forged.signature = Some(RecordSignature {
        cert: honest.cert.cert_pem().to_string(),
        sig: hex::encode(honest.cert.sign(&forged.signed_bytes())?),
    });
    let mut claim = Record {
        key: RecordKey::new("subnets", format!("10.244.0.0/{node_id}")),
        version: forged.version,
        value: Some(Value::from(node_id)),
        signature: None,
    };
    claim.signature = forged.signature.clone();
    let batch = serde_json::to_string(&[unsigned, forged, claim])?;
    let (status, body) = member::push_with(ns, planter, &[], &batch)?;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body)?;
    assert_eq!(answer["applied"], 0, "{answer}");
    let reasons = answer["rejected"].to_string();
    assert!(reasons.contains("is not signed"), "{reasons}");
    assert!(
        reasons.matches("it is signed by node planter").count() == 2,
        "{reasons}"
    );
    Ok(())
}

/// The daemon comes back with its clock ten minutes behind the versions it
/// wrote: a change after the restart is kept, not silently lost to them.
fn clock_behind_after_restart(ns: &NetNs, daemon: &mut Daemon, current: &str) -> Result<()> {
    daemon.terminate()?;
    daemon.args.push("--clock-offset-ms=-600000".to_string());
    daemon.restart(ns)?;
    assert_cli_ok(
        &daemon.cli(&["app", "scale", "--name", "web", "--replicas", "2"]),
        "scale with the clock behind",
    );
    wait_replicas(ns, "web", 2)?;
    std::thread::sleep(Duration::from_secs(5)); // two reconcile periods
    assert_eq!(
        api_json(ns, "/api/apps/web")?["replicas"],
        2,
        "the scale was kept"
    );
    assert_cli_ok(
        &daemon.cli(&["app", "scale", "--name", "web", "--replicas", "1"]),
        "scale back",
    );
    let ids = wait_replicas(ns, "web", 1)?;
    assert_eq!(
        ids,
        vec![current.to_string()],
        "scale down removes the newest"
    );
    daemon.terminate()?;
    daemon.args.retain(|a| !a.starts_with("--clock-offset-ms"));
    daemon.restart(ns)
}

/// The version dpkg's database on this machine gives `package`.
fn installed_version(status: &str, package: &str) -> Result<String> {
    status
        .split("\n\n")
        .find(|p| p.lines().any(|l| l == format!("Package: {package}")))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("Version: ")))
        .map(str::to_string)
        .with_context(|| format!("{package} is not in /var/lib/dpkg/status"))
}

/// An OSV record of one package's affected range.
fn osv(id: &str, ecosystem: &str, package: &str, range: &str, events: Value, cvss: &str) -> Value {
    let mut record = serde_json::json!({
        "id": id,
        "summary": format!("test advisory {id}"),
        "affected": [{
            "package": {"ecosystem": ecosystem, "name": package},
            "ranges": [{"type": range, "events": events}],
        }],
    });
    if !cvss.is_empty() {
        record["severity"] = serde_json::json!([{"type": "CVSS_V3", "score": cvss}]);
    }
    record
}

const CRITICAL: &str = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H";
const HIGH: &str = "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H";

/// Offline image scans: an OSV database the test writes (a zip, as osv.dev publishes it) is
/// imported through the CLI; an image carrying this machine's real dpkg database, a Cargo.lock
/// and a requirements.txt, and an image with an Alpine database the test writes, are pulled
/// from the registry and scanned. Each finds exactly the records whose ranges take its
/// versions in its ecosystem's order (dpkg's epochs and `~`, apk's suffixes, SemVer, PEP 440),
/// a Debian package also by its source package; a corrupt file is refused and changes nothing.
fn image_scans(ns: &NetNs, daemon: &Daemon, registry: &Registry, dir: &Path) -> Result<()> {
    let status = std::fs::read_to_string("/var/lib/dpkg/status")?;
    let (os_release, release) = hivemind_tests::image::os_release()?;
    let debian = format!("Debian:{release}");
    let bash = installed_version(&status, "bash")?;
    let coreutils = installed_version(&status, "coreutils")?;
    let libc = installed_version(&status, "libc6")?;
    assert!(
        !coreutils.contains(':'),
        "coreutils {coreutils} has an epoch"
    );
    let cargo_lock = "version = 3\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n\n[[package]]\nname = \"smallvec\"\nversion = \"1.6.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n";
    let requirements = "Django==4.2.1\nrequests==2.31.0\n";
    let debian_image = hivemind_tests::image::build_test_image_with(
        &dir.join("scan-debian"),
        "debian",
        &[
            ("var/lib/dpkg/status", status.as_bytes()),
            ("etc/os-release", &os_release),
            ("app/Cargo.lock", cargo_lock.as_bytes()),
            ("srv/requirements.txt", requirements.as_bytes()),
        ],
        "hivemind.test/hm/scan-debian:1",
    )?;
    let apk = "C:Q1x=\nP:libcrypto3\nV:3.1.4-r5\no:openssl\n\nP:musl\nV:1.2.4-r2\no:musl\n\nP:zlib\nV:1.3.1-r0\no:zlib\n";
    let alpine_image = hivemind_tests::image::build_test_image_with(
        &dir.join("scan-alpine"),
        "alpine",
        &[
            ("lib/apk/db/installed", apk.as_bytes()),
            ("etc/alpine-release", b"3.19.1\n"),
        ],
        "hivemind.test/hm/scan-alpine:1",
    )?;
    registry.push(ns, &debian_image, "hm/scan-debian", "1")?;
    registry.push(ns, &alpine_image, "hm/scan-alpine", "1")?;
    let debian_ref = format!("{}/hm/scan-debian:1", registry.host());
    let alpine_ref = format!("{}/hm/scan-alpine:1", registry.host());

    let j = |v: &str| serde_json::json!(v);
    let records = [
        // bash: fixed in the installed version (not affected), in one just above (affected),
        // in one with `~` just below (not affected), and in another release (not matched).
        osv(
            "DEB-FIXED",
            &debian,
            "bash",
            "ECOSYSTEM",
            serde_json::json!([{"introduced": "0"}, {"fixed": j(&bash)}]),
            CRITICAL,
        ),
        osv(
            "DEB-BASH",
            &debian,
            "bash",
            "ECOSYSTEM",
            serde_json::json!([{"introduced": "0"}, {"fixed": format!("{bash}+deb1")}]),
            CRITICAL,
        ),
        osv(
            "DEB-TILDE",
            &debian,
            "bash",
            "ECOSYSTEM",
            serde_json::json!([{"introduced": "0"}, {"fixed": format!("{bash}~rc1")}]),
            CRITICAL,
        ),
        osv(
            "DEB-OTHER-RELEASE",
            "Debian:9",
            "bash",
            "ECOSYSTEM",
            serde_json::json!([{"introduced": "0"}]),
            CRITICAL,
        ),
        // coreutils: an epoch makes the fix newer than any version without one.
        osv(
            "DEB-EPOCH",
            &debian,
            "coreutils",
            "ECOSYSTEM",
            serde_json::json!([{"introduced": "0"}, {"fixed": "1:0.1-1"}]),
            HIGH,
        ),
        // libc6 is built from glibc: the advisory names the source package; no fix yet.
        osv(
            "DEB-GLIBC",
            &debian,
            "glibc",
            "ECOSYSTEM",
            serde_json::json!([{"introduced": "0"}, {"last_affected": j(&libc)}]),
            "",
        ),
        osv(
            "RUSTSEC-SMALLVEC",
            "crates.io",
            "smallvec",
            "SEMVER",
            serde_json::json!([{"introduced": "0"}, {"fixed": "1.6.1"}]),
            HIGH,
        ),
        osv(
            "PYSEC-DJANGO",
            "PyPI",
            "django",
            "ECOSYSTEM",
            serde_json::json!([{"introduced": "4.0"}, {"fixed": "4.2.2rc1"}]),
            "",
        ),
        osv(
            "PYSEC-REQUESTS",
            "PyPI",
            "requests",
            "ECOSYSTEM",
            serde_json::json!([{"introduced": "0"}, {"fixed": "2.31.0.dev1"}]),
            CRITICAL,
        ),
        // Alpine: by origin; `_git` sorts after the release, `_rc` before it.
        osv(
            "ALPINE-OPENSSL",
            "Alpine:v3.19",
            "openssl",
            "ECOSYSTEM",
            serde_json::json!([{"introduced": "0"}, {"fixed": "3.1.4-r6"}]),
            CRITICAL,
        ),
        osv(
            "ALPINE-MUSL-GIT",
            "Alpine:v3.19",
            "musl",
            "ECOSYSTEM",
            serde_json::json!([{"introduced": "0"}, {"fixed": "1.2.4_git20230717-r4"}]),
            HIGH,
        ),
        osv(
            "ALPINE-MUSL-RC",
            "Alpine:v3.19",
            "musl",
            "ECOSYSTEM",
            serde_json::json!([{"introduced": "0"}, {"fixed": "1.2.4_rc1-r9"}]),
            HIGH,
        ),
        osv(
            "ALPINE-ZLIB-3.18",
            "Alpine:v3.18",
            "zlib",
            "ECOSYSTEM",
            serde_json::json!([{"introduced": "0"}]),
            HIGH,
        ),
        osv(
            "GHSA-NPM",
            "npm",
            "lodash",
            "SEMVER",
            serde_json::json!([{"introduced": "0"}, {"fixed": "4.17.21"}]),
            HIGH,
        ),
    ];
    let archive = dir.join("osv-all.zip");
    {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&archive)?);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for record in &records {
            zip.start_file(
                format!("{}.json", record["id"].as_str().unwrap_or("x")),
                options,
            )?;
            std::io::Write::write_all(&mut zip, &serde_json::to_vec(record)?)?;
        }
        zip.finish()?;
    }
    let archive_path = archive.display().to_string();
    let out = assert_cli_ok(
        &daemon.cli(&[
            "security",
            "vulndb",
            "import",
            &archive_path,
            "--max-age-days",
            "30",
        ]),
        "vulndb import",
    );
    assert!(out.contains("imported"), "{out}");
    let db = api_json(ns, "/api/security/vulndb")?;
    let ecosystems: Vec<&str> = db["ecosystems"]
        .as_array()
        .context("ecosystems")?
        .iter()
        .filter_map(|e| e["ecosystem"].as_str())
        .collect();
    assert_eq!(
        ecosystems,
        ["Alpine", "Debian", "PyPI", "crates.io", "npm"],
        "{db}"
    );
    assert_eq!(db["max_age_days"], 30, "{db}");

    let scan = |image: &str, extra: &[&str]| -> Result<Value> {
        let mut args = vec!["-o", "json", "security", "scan-image", "--image", image];
        args.extend_from_slice(extra);
        let out = assert_cli_ok(&daemon.cli(&args), "scan-image");
        Ok(serde_json::from_str(&out)?)
    };
    let ids = |report: &Value| -> Vec<String> {
        let mut ids: Vec<String> = report["findings"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter_map(|f| f["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids.dedup();
        ids
    };
    let report = scan(&debian_ref, &[])?;
    assert_eq!(
        ids(&report),
        [
            "DEB-BASH",
            "DEB-EPOCH",
            "DEB-GLIBC",
            "PYSEC-DJANGO",
            "RUSTSEC-SMALLVEC"
        ],
        "{report}"
    );
    let findings_of = |id: &str| -> Vec<Value> {
        report["findings"]
            .as_array()
            .map(|f| f.iter().filter(|f| f["id"] == id).cloned().collect())
            .unwrap_or_default()
    };
    let finding = |id: &str| findings_of(id).first().cloned().unwrap_or(Value::Null);
    // Every installed package built from glibc is affected, each a finding.
    let glibc = findings_of("DEB-GLIBC");
    let libc6 = glibc
        .iter()
        .find(|f| f["package"] == "libc6")
        .context("libc6 among glibc's findings")?;
    assert!(
        glibc
            .iter()
            .all(|f| f["source"] == "glibc" && f["installed"] == libc.as_str()),
        "{glibc:?}"
    );
    assert_eq!(finding("DEB-BASH")["severity"], "critical");
    assert_eq!(finding("DEB-BASH")["installed"], bash.as_str());
    assert_eq!(finding("DEB-BASH")["fixed"], format!("{bash}+deb1"));
    assert_eq!(finding("DEB-EPOCH")["fixed"], "1:0.1-1");
    assert_eq!(finding("DEB-EPOCH")["severity"], "high");
    assert_eq!(libc6["fixed"], Value::Null);
    assert_eq!(libc6["severity"], "unknown");
    assert_eq!(finding("PYSEC-DJANGO")["location"], "srv/requirements.txt");
    assert_eq!(
        report["findings"][0]["severity"], "critical",
        "the worst first"
    );
    assert_eq!(report["cached"], false);
    assert!(
        report["distro"]
            .as_str()
            .is_some_and(|d| d.contains("Debian")),
        "{report}"
    );
    let packages = report["packages"].as_u64().unwrap_or(0);
    assert!(
        packages > 50,
        "{packages} packages read from the dpkg database"
    );
    let again = scan(&debian_ref, &[])?;
    assert_eq!(
        again["cached"], true,
        "a kept result for the same digest and database"
    );
    assert_eq!(ids(&again), ids(&report));

    let alpine = scan(&alpine_ref, &[])?;
    assert_eq!(
        ids(&alpine),
        ["ALPINE-MUSL-GIT", "ALPINE-OPENSSL"],
        "{alpine}"
    );
    assert_eq!(
        alpine["ecosystems"],
        serde_json::json!(["Alpine:v3.19"]),
        "{alpine}"
    );

    // The table names the findings; SARIF is what code-scanning tools read.
    let table = assert_cli_ok(
        &daemon.cli(&["security", "scan-image", "--image", &alpine_ref]),
        "scan-image table",
    );
    assert!(
        table.contains("2 findings: 1 critical, 1 high")
            && table.contains("libcrypto3 (openssl)")
            && table.contains("3.1.4-r6"),
        "{table}"
    );
    let sarif: Value = serde_json::from_str(&assert_cli_ok(
        &daemon.cli(&[
            "-o",
            "sarif",
            "security",
            "scan-image",
            "--image",
            &alpine_ref,
        ]),
        "scan-image sarif",
    ))?;
    assert_eq!(sarif["version"], "2.1.0");
    assert_eq!(
        sarif["runs"][0]["results"].as_array().map(Vec::len),
        Some(2)
    );

    // A corrupt file is refused with the reason, and the database is as it was.
    let corrupt = dir.join("corrupt.zip");
    let mut bytes = std::fs::read(&archive)?;
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&corrupt, &bytes)?;
    let refused = daemon.cli(&[
        "security",
        "vulndb",
        "import",
        &corrupt.display().to_string(),
    ]);
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && error.contains("not OSV data"),
        "{error}"
    );
    assert_eq!(
        api_json(ns, "/api/security/vulndb")?["ecosystems"],
        db["ecosystems"]
    );
    // Importing Alpine's records alone replaces Alpine's and keeps the others: with the
    // OpenSSL fix in the installed version, the Alpine image has one finding left.
    let alpine_only = dir.join("alpine.json");
    let fixed = osv(
        "ALPINE-OPENSSL",
        "Alpine:v3.19",
        "openssl",
        "ECOSYSTEM",
        serde_json::json!([{"introduced": "0"}, {"fixed": "3.1.4-r5"}]),
        CRITICAL,
    );
    std::fs::write(
        &alpine_only,
        serde_json::to_vec(&serde_json::json!([fixed, records[10]]))?,
    )?;
    assert_cli_ok(
        &daemon.cli(&[
            "security",
            "vulndb",
            "import",
            &alpine_only.display().to_string(),
        ]),
        "import alpine",
    );
    let rescanned = scan(&alpine_ref, &[])?;
    assert_eq!(rescanned["cached"], false, "a new database is a new scan");
    assert_eq!(ids(&rescanned), ["ALPINE-MUSL-GIT"], "{rescanned}");
    assert_eq!(ids(&scan(&debian_ref, &["--refresh"])?), ids(&report));
    admission(ns, daemon, &debian_ref, &alpine_ref)?;
    signatures(
        ns,
        daemon,
        registry,
        (&debian_ref, &debian_image.manifest_digest),
        (&alpine_ref, &alpine_image.manifest_digest),
        dir,
    )
}

/// `app deploy --name NAME --image IMAGE EXTRA...` through the CLI.
fn deploy_with(daemon: &Daemon, name: &str, image: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["app", "deploy", "--name", name, "--image", image];
    args.extend_from_slice(extra);
    daemon.cli(&args)
}

/// A P-256 key as cosign makes one, and its public half in PEM (`cosign.pub`).
fn cosign_key() -> Result<(ring::signature::EcdsaKeyPair, String)> {
    use base64::Engine as _;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("generate a key"))?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| anyhow::anyhow!("read the key"))?;
    let mut der = hivemind::image::cosign::P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(key.public_key().as_ref());
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    );
    Ok((key, pem))
}

/// A cosign signature of `digest` by `key`, as `cosign sign` writes it: the simple-signing
/// payload as a layer of a manifest (to be tagged `sha256-<hex>.sig`), its signature in the
/// layer's annotation.
fn cosign_signature(
    repository: &str,
    digest: &str,
    key: &ring::signature::EcdsaKeyPair,
) -> Result<hivemind_tests::image::TestImage> {
    use base64::Engine as _;
    let payload = serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))?;
    let signature = key
        .sign(&ring::rand::SystemRandom::new(), &payload)
        .map_err(|_| anyhow::anyhow!("sign"))?;
    let config = br#"{"architecture":"","config":{},"created":"0001-01-01T00:00:00Z","history":[{"created":"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let (config_digest, payload_digest) = (
        hivemind_tests::image::digest(&config),
        hivemind_tests::image::digest(&payload),
    );
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": hivemind_tests::image::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": payload_digest,
            "size": payload.len(),
            "annotations": {
                "dev.cosignproject.cosign/signature":
                    base64::engine::general_purpose::STANDARD.encode(signature.as_ref()),
            },
        }],
    }))?;
    Ok(hivemind_tests::image::TestImage {
        dir: std::path::PathBuf::new(),
        manifest_digest: hivemind_tests::image::digest(&manifest),
        manifest,
        config_digest: config_digest.clone(),
        layer_digest: payload_digest.clone(),
        diff_id: String::new(),
        chain_id: String::new(),
        blobs: vec![(config_digest, config), (payload_digest, payload)],
        ref_name: String::new(),
    })
}

/// Writes a cosign signature of `digest` by `key` into the registry, as `cosign sign` does.
fn cosign_sign(
    ns: &NetNs,
    registry: &Registry,
    repo: &str,
    digest: &str,
    key: &ring::signature::EcdsaKeyPair,
) -> Result<()> {
    let image = cosign_signature(&format!("{}/{repo}", registry.host()), digest, key)?;
    registry.push(
        ns,
        &image,
        repo,
        &format!("{}.sig", digest.replace(':', "-")),
    )
}

/// `--require-signature`: with a trusted key, an image signed by it deploys; an unsigned one,
/// and one signed by a key nobody trusts, are refused with the reason; the cluster's policy can
/// require signatures of every deploy.
fn signatures(
    ns: &NetNs,
    daemon: &Daemon,
    registry: &Registry,
    (debian_ref, debian_digest): (&str, &str),
    (alpine_ref, alpine_digest): (&str, &str),
    dir: &Path,
) -> Result<()> {
    let deploy = |name: &str, image: &str, extra: &[&str]| deploy_with(daemon, name, image, extra);
    let refused = deploy("signed", alpine_ref, &["--require-signature"]);
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && error.contains("no key is trusted"),
        "{error}"
    );

    let (release, release_pem) = cosign_key()?;
    let (stranger, _) = cosign_key()?;
    let public = dir.join("cosign.pub");
    std::fs::write(&public, &release_pem)?;
    let added = assert_cli_ok(
        &daemon.cli(&[
            "security",
            "trust",
            "add-key",
            "--name",
            "release",
            "--file",
            &public.display().to_string(),
        ]),
        "trust add-key",
    );
    assert!(added.contains("Trusted key release"), "{added}");
    let bad = dir.join("not-a-key.pub");
    std::fs::write(
        &bad,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )?;
    let refused = daemon.cli(&[
        "security",
        "trust",
        "add-key",
        "--name",
        "bad",
        "--file",
        &bad.display().to_string(),
    ]);
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && error.contains("P-256"),
        "{error}"
    );

    cosign_sign(ns, registry, "hm/scan-alpine", alpine_digest, &release)?;
    cosign_sign(ns, registry, "hm/scan-debian", debian_digest, &stranger)?;
    assert_cli_ok(
        &deploy("signed", alpine_ref, &["--require-signature"]),
        "deploy a signed image",
    );
    let refused = deploy(
        "unsigned",
        &format!("{}/hm/test-app:1", registry.host()),
        &["--require-signature"],
    );
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && error.contains("neither its registry nor this node holds a cosign signature"),
        "{error}"
    );
    let refused = deploy("stranger", debian_ref, &["--require-signature"]);
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && error.contains("no trusted key verifies it"),
        "{error}"
    );
    // The cluster's policy: every deploy needs a signature.
    assert_cli_ok(
        &daemon.cli(&[
            "security",
            "scan-policy",
            "set",
            "--mode",
            "off",
            "--require-signature",
        ]),
        "require signatures",
    );
    let refused = deploy("stranger", debian_ref, &[]);
    assert!(
        !refused.status.success(),
        "the cluster's policy let an untrusted signature in"
    );
    assert_cli_ok(
        &deploy("signed", alpine_ref, &[]),
        "a signed image under the cluster's policy",
    );
    assert_cli_ok(
        &daemon.cli(&["security", "scan-policy", "set", "--mode", "off"]),
        "policy off",
    );
    // An archive with an image and its signature (as `cosign save` writes one): imported, the
    // image deploys under --require-signature with no registry at all.
    let archived = hivemind_tests::image::build_test_image_with(
        &dir.join("signed-archive"),
        "archived",
        &[],
        "hivemind.test/hm/signed:1",
    )?;
    let signature = cosign_signature(
        "hivemind.test/hm/signed",
        &archived.manifest_digest,
        &release,
    )?;
    let archive = dir.join("signed.tar");
    let sig_name = format!(
        "hivemind.test/hm/signed:{}.sig",
        archived.manifest_digest.replace(':', "-")
    );
    hivemind_tests::image::write_oci_archive(
        &archive,
        &[
            (&archived, "hivemind.test/hm/signed:1"),
            (&signature, &sig_name),
        ],
    )?;
    assert_cli_ok(
        &daemon.cli(&["image", "import", &archive.display().to_string()]),
        "import a signed archive",
    );
    assert_cli_ok(
        &deploy(
            "archived",
            "hivemind.test/hm/signed:1",
            &["--require-signature"],
        ),
        "deploy a signed, imported image",
    );
    assert_cli_ok(
        &daemon.cli(&["app", "delete", "--name", "archived"]),
        "delete",
    );
    for name in ["stranger", "unsigned"] {
        let (status, _) = http(ns, "GET", &api_url(&format!("/api/apps/{name}")), None)?;
        assert_eq!(status, 404, "a refused deploy made app {name}");
    }
    assert_cli_ok(
        &daemon.cli(&["app", "delete", "--name", "signed"]),
        "delete",
    );
    assert_cli_ok(
        &daemon.cli(&["security", "trust", "rm", "--name", "release"]),
        "trust rm",
    );
    Ok(())
}

/// Deploys under a scan policy: `block` at critical refuses the Debian image (a critical
/// finding) with the findings in the error and creates nothing, and deploys the Alpine one
/// (high findings only); `warn` deploys the Debian image and records what breaks the policy
/// on the app; the cluster's policy holds a deploy that names none.
fn admission(ns: &NetNs, daemon: &Daemon, debian_ref: &str, alpine_ref: &str) -> Result<()> {
    let deploy = |name: &str, image: &str, extra: &[&str]| deploy_with(daemon, name, image, extra);
    let block = ["--scan-policy", "block", "--max-severity", "critical"];
    let refused = deploy("scanned", debian_ref, &block);
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && error.contains("breaks the scan policy (block at critical and above)")
            && error.contains("DEB-BASH (critical, bash"),
        "{error}"
    );
    let (status, _) = http(ns, "GET", &api_url("/api/apps/scanned"), None)?;
    assert_eq!(status, 404, "a refused deploy creates no app");
    let body = serde_json::json!({
        "image": debian_ref,
        "name": "scanned",
        "scan_policy": {"mode": "block", "max_severity": "critical"},
    });
    let (status, answer) = http(ns, "POST", &api_url("/api/deploy"), Some(&body.to_string()))?;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer.contains("\"scan_policy\"") && answer.contains("DEB-BASH"),
        "{answer}"
    );

    assert_cli_ok(
        &deploy("scanned", alpine_ref, &block),
        "deploy the alpine image",
    );
    let app = api_json(ns, "/api/apps/scanned")?;
    assert_eq!(app["scan"]["policy"], "block", "{app}");
    assert_eq!(
        app["scan"]["counts"],
        serde_json::json!({"high": 1}),
        "{app}"
    );
    assert_eq!(app["scan"]["breaking"], serde_json::json!([]), "{app}");

    assert_cli_ok(
        &deploy("warned", debian_ref, &["--scan-policy", "warn"]),
        "deploy under warn",
    );
    let app = api_json(ns, "/api/apps/warned")?;
    let breaking: Vec<&str> = app["scan"]["breaking"]
        .as_array()
        .context("breaking")?
        .iter()
        .filter_map(|b| b.as_str())
        .collect();
    assert_eq!(breaking.len(), 3, "{app}");
    assert!(
        ["DEB-BASH", "DEB-EPOCH", "RUSTSEC-SMALLVEC"]
            .iter()
            .all(|id| breaking.iter().any(|b| b.starts_with(id))),
        "{breaking:?}"
    );
    let listed = assert_cli_ok(&daemon.cli(&["app", "ls"]), "app ls");
    assert!(listed.contains("warn: 1 critical, 2 high"), "{listed}");

    // The cluster's policy: a deploy that names none is held to it.
    assert_cli_ok(
        &daemon.cli(&[
            "security",
            "scan-policy",
            "set",
            "--mode",
            "block",
            "--max-severity",
            "critical",
        ]),
        "scan-policy set",
    );
    let shown = assert_cli_ok(
        &daemon.cli(&["security", "scan-policy", "show"]),
        "scan-policy show",
    );
    assert!(shown.contains("block at critical and above"), "{shown}");
    let refused = deploy("held", debian_ref, &[]);
    assert!(
        !refused.status.success(),
        "the cluster's block policy let a critical image in"
    );
    // A deploy's own policy overrides the cluster's.
    assert_cli_ok(
        &deploy("held", debian_ref, &["--scan-policy", "off"]),
        "deploy with policy off",
    );
    assert_cli_ok(
        &daemon.cli(&["security", "scan-policy", "set", "--mode", "off"]),
        "scan-policy off",
    );
    for app in ["scanned", "warned", "held"] {
        assert_cli_ok(&daemon.cli(&["app", "delete", "--name", app]), "delete");
    }
    Ok(())
}
