//! `hivemind daemon` alone on a fresh node: with nothing answering at the
//! containerd socket it starts containerd itself, state under the data dir,
//! and reuses that containerd after its own restart.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use hivemind_tests::containerd::prerequisites;
use hivemind_tests::daemon::{Daemon, api_json, eventually};
use hivemind_tests::netns::NetNs;

const BIN: &str = env!("CARGO_BIN_EXE_hivemind");

/// Kills the containerd the daemon started, even when the test fails.
struct KillPidFile(std::path::PathBuf);

impl Drop for KillPidFile {
    fn drop(&mut self) {
        if let Some(pid) = read_pid(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[test]
fn daemon_starts_and_reuses_its_own_containerd() -> Result<()> {
    if !prerequisites(
        "daemon_starts_and_reuses_its_own_containerd",
        &["containerd", "runc"],
    ) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let ns = NetNs::create(&format!("hmsup-{}", std::process::id()))?;
    let data_dir = dir.path().join("data");
    let socket = dir.path().join("run/containerd.sock");
    let pid_file = data_dir.join("containerd/containerd.pid");
    let _kill = KillPidFile(pid_file.clone());

    let mut daemon = Daemon::start(&ns, Path::new(BIN), &data_dir, &socket)?;
    let health = api_json(&ns, "/api/health")?;
    assert_eq!(health["runtime"]["ok"], true, "{health}");
    let pid = read_pid(&pid_file).context("the daemon wrote containerd's pid")?;
    assert!(alive(pid), "containerd runs");
    assert!(
        socket.exists(),
        "containerd listens where --containerd says"
    );
    assert!(
        data_dir.join("containerd/root").is_dir(),
        "containerd state under the data dir"
    );

    // containerd outlives a crash of the daemon, and the restarted daemon
    // uses it instead of starting another.
    daemon.kill9();
    assert!(alive(pid), "containerd survives the daemon");
    daemon.restart(&ns)?;
    eventually("health after restart", Duration::from_secs(20), || {
        let health = api_json(&ns, "/api/health")?;
        Ok((health["runtime"]["ok"] == true).then_some(()))
    })?;
    assert_eq!(read_pid(&pid_file), Some(pid), "no second containerd");
    drop(daemon);
    Ok(())
}
