//! End to end: `ContainerRuntime::exec` against a real containerd and runc,
//! in a network namespace of this test: exit codes, output, the container's
//! env and cwd, and a timed-out command killed with what it forked.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use containerd_client::services::v1::ListPidsRequest;
use containerd_client::services::v1::tasks_client::TasksClient;
use hivemind::containerd::Containerd;
use hivemind::runtime::containerd::ContainerdRuntime;
use hivemind::runtime::{ContainerRuntime, ContainerSpec, ExecOutput};
use hivemind_tests::containerd::{TestContainerd, prerequisites};
use hivemind_tests::image::build_test_image;
use hivemind_tests::netns::NetNs;
use hivemind_tests::registry::{REGISTRY_BIN, Registry};

const PORT: u16 = 5000;
const ID: &str = "hm-health-exec";

#[test]
fn exec_in_a_running_container() {
    if !prerequisites(
        "health exec end-to-end test",
        &["containerd", "runc", "ip", REGISTRY_BIN, "/bin/busybox"],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ns = NetNs::create(&format!("hm-hexec-{}", std::process::id())).unwrap();
    let daemon = TestContainerd::start(&ns, &tmp.path().join("containerd")).unwrap();
    let app = build_test_image(&tmp.path().join("app")).unwrap();
    let registry = Registry::start(&ns, &tmp.path().join("registry"), PORT).unwrap();
    registry.push(&ns, &app, "hm/test-app", "1").unwrap();

    let reference = format!("{}/hm/test-app:1", registry.host());
    let socket = daemon.socket.clone();
    let log_path = tmp.path().join("logs").join(format!("{ID}.log"));
    let result = ns.run(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                tokio::time::timeout(
                    Duration::from_secs(180),
                    scenario(socket, reference, log_path),
                )
                .await
                .expect("scenario timed out")
            })
    });
    if let Err(e) = &result {
        eprintln!("containerd log:\n{}", daemon.log_tail());
        panic!("{e:#}");
    }
    drop(registry);
    drop(daemon);
    drop(ns);
}

fn expect(failures: &mut Vec<String>, what: &str, got: ExecOutput, want: ExecOutput) {
    if got != want {
        failures.push(format!("{what}: got {got:?}, want {want:?}"));
    }
}

fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

async fn scenario(socket: PathBuf, reference: String, log_path: PathBuf) {
    let cd = Containerd::connect(&socket).await.unwrap();
    let runtime = ContainerdRuntime::new(cd.clone(), vec![]);
    let image = runtime.ensure_image(&reference, &|_| {}).await.unwrap();
    let spec = ContainerSpec {
        id: ID.into(),
        app: "health-exec".into(),
        image,
        env: BTreeMap::from([("GREETING".to_string(), "from-env".to_string())]),
        mounts: vec![],
        resources: Default::default(),
        netns: None,
        hostname: ID.into(),
        log_path,
        command: None,
        working_dir: None,
    };
    let pid = runtime.run(&spec).await.unwrap();
    let mut outcome = checks(&runtime, &cd, pid).await;
    if outcome.is_ok() {
        outcome = churn(&runtime, &spec).await;
    }
    // Clean up whatever the checks found.
    runtime.remove(ID, Duration::from_secs(5)).await.unwrap();
    assert!(!runtime.list().await.unwrap().contains_key(ID));
    if let Err(message) = outcome {
        panic!("{message}");
    }
}

/// Containers created while the previous one is removed: each removal sets off containerd's
/// garbage collector, which must never take the snapshot of a container being created.
async fn churn(runtime: &ContainerdRuntime, template: &ContainerSpec) -> Result<(), String> {
    let mut previous: Option<String> = None;
    let mut result = Ok(());
    for i in 0..10 {
        let spec = ContainerSpec {
            id: format!("hm-churn-{i}"),
            hostname: format!("hm-churn-{i}"),
            log_path: template
                .log_path
                .with_file_name(format!("hm-churn-{i}.log")),
            ..template.clone()
        };
        let (started, removed) = tokio::join!(runtime.run(&spec), async {
            match &previous {
                Some(id) => runtime.remove(id, Duration::from_secs(5)).await,
                None => Ok(()),
            }
        });
        if let Err(e) = removed {
            result = Err(format!("remove {previous:?}: {e}"));
        }
        previous = Some(spec.id.clone());
        if let Err(e) = started {
            result = Err(format!(
                "create and start {} during a removal: {e}",
                spec.id
            ));
            break;
        }
    }
    if let Some(id) = previous {
        runtime
            .remove(&id, Duration::from_secs(5))
            .await
            .map_err(|e| format!("remove {id}: {e}"))?;
    }
    result
}

/// The checks, as a Result so that the container is removed either way.
async fn checks(runtime: &ContainerdRuntime, cd: &Containerd, pid: u32) -> Result<(), String> {
    let limit = Duration::from_secs(20);
    let mut failures = Vec::new();

    // Exit code and output.
    let got = runtime
        .exec(ID, &sh("echo hi; exit 3"), limit)
        .await
        .map_err(|e| format!("exec: {e}"))?;
    expect(
        &mut failures,
        "exit 3",
        got,
        ExecOutput {
            exit_code: Some(3),
            output: "hi\n".into(),
        },
    );

    // stderr lands in the same output (the shim copies the two streams
    // separately: their interleaving is not kept); the process spec is the
    // container's: its env (the user's GREETING over the image's) and cwd.
    let got = runtime
        .exec(ID, &sh("echo $GREETING; pwd; echo oops >&2"), limit)
        .await
        .map_err(|e| format!("exec: {e}"))?;
    let mut lines: Vec<&str> = got.output.lines().collect();
    lines.sort_unstable();
    if got.exit_code != Some(0) || lines != ["/", "from-env", "oops"] {
        failures.push(format!("env, cwd, stderr: got {got:?}"));
    }

    // Output is capped at 4 KiB.
    let got = runtime
        .exec(
            ID,
            &sh("i=0; while [ $i -lt 200 ]; do echo 0123456789012345678901234567890123456789; i=$((i+1)); done"),
            limit,
        )
        .await
        .map_err(|e| format!("exec: {e}"))?;
    if got.exit_code != Some(0) || got.output.len() != 4096 {
        failures.push(format!(
            "long output: exit {:?}, {} bytes",
            got.exit_code,
            got.output.len()
        ));
    }

    // A command that outlives its timeout: killed, with the sleep its shell
    // forked, and reported as no exit code.
    let started = Instant::now();
    let got = runtime
        .exec(
            ID,
            &sh("echo started; sleep 30; echo never"),
            Duration::from_secs(1),
        )
        .await
        .map_err(|e| format!("exec: {e}"))?;
    let took = started.elapsed();
    expect(
        &mut failures,
        "timeout",
        got,
        ExecOutput {
            exit_code: None,
            output: "started\n".into(),
        },
    );
    if took > Duration::from_secs(10) {
        failures.push(format!("timed-out exec took {took:?}"));
    }
    let mut tasks = TasksClient::new(cd.channel.clone());
    let pids: Vec<u32> = tasks
        .list_pids(cd.request(ListPidsRequest {
            container_id: ID.into(),
        }))
        .await
        .map_err(|e| format!("list pids: {e}"))?
        .into_inner()
        .processes
        .iter()
        .map(|p| p.pid)
        .collect();
    if pids != [pid] {
        failures.push(format!(
            "after the timeout the container runs {pids:?}, want only its init {pid}"
        ));
    }

    // The container still serves execs afterwards; no output files remain.
    let got = runtime
        .exec(ID, &["/bin/true".to_string()], limit)
        .await
        .map_err(|e| format!("exec: {e}"))?;
    expect(
        &mut failures,
        "after timeout",
        got,
        ExecOutput {
            exit_code: Some(0),
            output: String::new(),
        },
    );
    // A command that cannot start is an error, and leaves nothing behind.
    if runtime
        .exec(ID, &["/bin/no-such-command".to_string()], limit)
        .await
        .is_ok()
    {
        failures.push("exec of a missing binary succeeded".into());
    }
    let leftovers: Vec<String> = std::fs::read_dir(std::env::temp_dir().join("hivemind-exec"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(&format!("{ID}.")))
                .collect()
        })
        .unwrap_or_default();
    if !leftovers.is_empty() {
        failures.push(format!("exec output files left: {leftovers:?}"));
    }

    // A container that does not exist is an error, not a result.
    if runtime.exec("hm-no-such", &sh("true"), limit).await.is_ok() {
        failures.push("exec in a missing container succeeded".into());
    }

    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}
