//! A real containerd per test: its own root, state, socket and config under
//! a directory the test owns, started inside the test's network namespace
//! (setns on the network namespace only; see [`crate::netns`]).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::NetNs;

/// True when the environment can run root end-to-end tests: root, and
/// every binary of `binaries` present (absolute paths or names on PATH).
/// Otherwise prints why and returns false; with CI=true it panics instead,
/// because a skipped end-to-end test in CI is a failure.
pub fn prerequisites(test: &str, binaries: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root (run as uid 0)".to_string());
    }
    for binary in binaries {
        if find_binary(binary).is_none() {
            missing.push(format!("binary {binary}"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let reason = format!("{test} skipped: needs {}", missing.join(", "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{reason} (CI=true: a skip is a failure)");
    }
    eprintln!("{reason}");
    false
}

pub fn find_binary(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).exists().then(|| PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.exists())
}

/// A containerd daemon; on drop it is stopped, its shims killed, mounts
/// under its directory detached and its root and state removed.
pub struct TestContainerd {
    pub socket: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
    dir: PathBuf,
    child: Child,
}

impl TestContainerd {
    /// Starts containerd with everything under `dir` and waits (30 s at
    /// most) until its socket accepts connections.
    pub fn start(ns: &NetNs, dir: &Path) -> Result<TestContainerd> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let root = dir.join("root");
        let state = dir.join("state");
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        let log = dir.join("containerd.log");
        let _ = std::fs::remove_file(&socket);
        let mut file = std::fs::File::create(&config)?;
        write!(
            file,
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             # CRI is not used by Hivemind and slows the start.\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n\
             [grpc]\n  address = \"{socket}\"\n\n\
             [ttrpc]\n  address = \"{socket}.ttrpc\"\n",
            root = root.display(),
            state = state.display(),
            socket = socket.display(),
        )?;
        let out = std::fs::File::create(&log)?;
        let child = ns
            .command("containerd")
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(&root)
            .arg("--state")
            .arg(&state)
            .arg("--address")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawn containerd")?;
        let mut daemon = TestContainerd {
            socket,
            root,
            state,
            log,
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if UnixStream::connect(&daemon.socket).is_ok() {
                return Ok(daemon);
            }
            if let Some(status) = daemon.child.try_wait()? {
                bail!("containerd exited with {status}: {}", daemon.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd socket not ready within 30s: {}",
                    daemon.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for TestContainerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_shims(&self.socket);
        detach_mounts_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.state);
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// After a containerd at `socket` was stopped: kills its shims and detaches
/// the mounts left under `dir`.
pub fn cleanup_after(socket: &Path, dir: &Path) {
    kill_shims(socket);
    detach_mounts_under(dir);
}

/// Every process as (pid, its /proc directory).
pub fn processes() -> Vec<(i32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
            Some((pid, entry.path()))
        })
        .collect()
}

/// Kills the containerd shims that were started for this daemon (their
/// command line names its socket): they outlive containerd by design.
fn kill_shims(socket: &Path) {
    let socket = socket.to_string_lossy().into_owned();
    for (pid, dir) in processes() {
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("containerd-shim") && cmdline.contains(&socket) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Lazily unmounts everything mounted under `dir`, deepest first.
fn detach_mounts_under(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
}
