//! A `hivemind daemon` under test, running inside the test's network
//! namespace, and the CLI and HTTP calls a user would make against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::netns::NetNs;

pub const API_PORT: u16 = 3000;

/// The admin token of every daemon under test (`--admin-token-file`): test
/// requests and CLI calls carry it unless a test says otherwise.
pub const TEST_TOKEN: &str =
    "hm_7e57700000a1_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The cluster key of every daemon under test (`--gossip-key-file`), so
/// testbed nodes can join one another.
pub const TEST_GOSSIP_KEY: &str =
    "5e55a1ed0000000000000000000000000000000000000000000000000000c0de";

/// The daemon process; killed (SIGKILL) on drop.
pub struct Daemon {
    /// Address of its API inside the namespace.
    pub ip: std::net::Ipv4Addr,
    /// Extra flags for `hivemind daemon`.
    pub args: Vec<String>,
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    pub containerd_socket: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    ns_name: String,
    /// Left running on purpose (`detach`): its pins stay too.
    detached: bool,
}

impl Daemon {
    /// Starts `binary daemon` in `ns` on 127.0.0.1 and waits (60 s at most)
    /// for its API.
    pub fn start(
        ns: &NetNs,
        binary: &Path,
        data_dir: &Path,
        containerd_socket: &Path,
    ) -> Result<Self> {
        let ip = std::net::Ipv4Addr::LOCALHOST;
        Self::start_with(ns, binary, data_dir, containerd_socket, ip, Vec::new())
    }

    /// Starts a daemon listening on `ip` with extra flags, without waiting
    /// for its API (see [`Daemon::wait_ready`]).
    pub fn launch_with(
        ns: &NetNs,
        binary: &Path,
        data_dir: &Path,
        containerd_socket: &Path,
        ip: std::net::Ipv4Addr,
        args: Vec<String>,
    ) -> Result<Self> {
        let mut daemon = Self {
            ip,
            args,
            binary: binary.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            containerd_socket: containerd_socket.to_path_buf(),
            log: data_dir.with_extension("log"),
            child: None,
            ns_name: ns.name.clone(),
            detached: false,
        };
        daemon.launch(ns)?;
        Ok(daemon)
    }

    /// Starts a daemon listening on `ip` with extra flags and waits for
    /// its API.
    pub fn start_with(
        ns: &NetNs,
        binary: &Path,
        data_dir: &Path,
        containerd_socket: &Path,
        ip: std::net::Ipv4Addr,
        args: Vec<String>,
    ) -> Result<Self> {
        let mut daemon = Self::launch_with(ns, binary, data_dir, containerd_socket, ip, args)?;
        daemon.wait_ready(ns)?;
        Ok(daemon)
    }

    fn spawn(&mut self, ns: &NetNs) -> Result<()> {
        self.launch(ns)?;
        self.wait_ready(ns)
    }

    /// Starts the process without waiting for its API.
    fn launch(&mut self, ns: &NetNs) -> Result<()> {
        let token_file = self.data_dir.with_extension("token");
        std::fs::write(&token_file, TEST_TOKEN).context("write the test token")?;
        let key_file = self.data_dir.with_extension("gossip-key");
        std::fs::write(&key_file, TEST_GOSSIP_KEY).context("write the test cluster key")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = ns
            .command(&self.binary.display().to_string())
            .args([
                "daemon",
                "--bind",
                &self.ip.to_string(),
                "--web-port",
                &API_PORT.to_string(),
            ])
            .args(&self.args)
            .arg("--admin-token-file")
            .arg(&token_file)
            .arg("--gossip-key-file")
            .arg(&key_file)
            .arg("--secrets-dir")
            .arg(secrets_dir_for(&self.data_dir))
            .arg("--bpf-pin-dir")
            .arg(bpf_pins_for(&self.data_dir))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--containerd")
            .arg(&self.containerd_socket)
            .env("RUST_LOG", "info,hivemind=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn hivemind daemon")?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits (60 s at most) until the API answers.
    pub fn wait_ready(&mut self, ns: &NetNs) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http(ns, "GET", &self.url("/api/health"), None) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("daemon exited with {status}:\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!("daemon API not up within 60s:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// URL of `path` on this daemon's API.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}:{API_PORT}{path}", self.ip)
    }

    /// GET a JSON document of this daemon's API.
    pub fn get(&self, path: &str) -> Result<Value> {
        let ns = NetNs::existing(&self.ns_name);
        let (status, body) = http(&ns, "GET", &self.url(path), None)?;
        if status != 200 {
            bail!("GET {path} answered {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON: {body}"))
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Leaves the process running when this value is dropped (for a testbed
    /// that outlives the command that made it).
    pub fn detach(&mut self) {
        self.child = None;
        self.detached = true;
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM and wait (30 s at most): a graceful stop.
    pub fn terminate(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("daemon did not stop within 30 s of SIGTERM")
    }

    /// kill -9, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again with the same data dir.
    pub fn restart(&mut self, ns: &NetNs) -> Result<()> {
        self.kill9();
        self.spawn(ns)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The cluster CA's certificate, which clients of this daemon trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.data_dir.join("pki/ca.crt")
    }

    /// Runs the CLI against this daemon, from inside the namespace.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(args)
            .output()
            .expect("run the hivemind CLI")
    }

    /// The CLI with `args` against this daemon, not started (for commands that run until
    /// stopped).
    pub fn cli_command(&self, args: &[&str]) -> std::process::Command {
        let mut command =
            NetNs::existing(&self.ns_name).command(&self.binary.display().to_string());
        command
            .arg("--server")
            .arg(self.url(""))
            .args(args)
            .env("HIVEMIND_TOKEN", TEST_TOKEN)
            .env("HIVEMIND_CA_CERT", self.ca_cert());
        command
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A detached daemon keeps running, and keeps its secret files and pins. A killed one's
        // pins still hold its programs and maps: they go now.
        if !self.detached {
            self.kill9();
            remove_secrets_dir(&self.data_dir);
            remove_bpf_pins(&self.data_dir);
        }
    }
}

fn data_dir_hash(data_dir: &Path) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// The tmpfs directory of a test daemon's secret files (`--secrets-dir`),
/// one per data dir, outside the data dir so that no tmpfs is ever mounted
/// in a test's temp dir.
pub fn secrets_dir_for(data_dir: &Path) -> PathBuf {
    PathBuf::from("/dev/shm/hivemind-test").join(data_dir_hash(data_dir))
}

/// Where a test daemon pins its data plane on bpffs (`--bpf-pin-dir`), one per data dir.
pub fn bpf_pins_for(data_dir: &Path) -> PathBuf {
    PathBuf::from("/sys/fs/bpf/hivemind-test").join(data_dir_hash(data_dir))
}

/// Removes a test daemon's pinned maps and links (its programs detach, its maps go).
pub fn remove_bpf_pins(data_dir: &Path) {
    let _ = std::fs::remove_dir_all(bpf_pins_for(data_dir));
}

/// Removes a test daemon's secret files.
pub fn remove_secrets_dir(data_dir: &Path) {
    let _ = std::fs::remove_dir_all(secrets_dir_for(data_dir));
}

pub fn api_url(path: &str) -> String {
    format!("https://127.0.0.1:{API_PORT}{path}")
}

/// One HTTP request from inside `ns` with the test admin token: (status, body).
pub fn http(ns: &NetNs, method: &str, url: &str, body: Option<&str>) -> Result<(u16, String)> {
    http_as(ns, Some(TEST_TOKEN), method, url, body)
}

/// One HTTP request from inside `ns`, with `token` (or none): (status, body).
pub fn http_as(
    ns: &NetNs,
    token: Option<&str>,
    method: &str,
    url: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    http_with(ns, token, &[], method, url, body)
}

/// One HTTP request from inside `ns` with `token` (or none) and extra
/// headers: (status, body).
pub fn http_with(
    ns: &NetNs,
    token: Option<&str>,
    headers: &[(&str, &str)],
    method: &str,
    url: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let token = token.map(str::to_string);
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let method: reqwest::Method = method.parse().context("method")?;
    let url = url.to_string();
    let body = body.map(str::to_string);
    ns.run(move || -> Result<(u16, String)> {
        // Plumbing for every test: the daemons' CAs are made per test, so
        // this client does not check who answers. What a user's client
        // trusts is tested with the CLI (`--ca-cert`, `login --ca-sha256`).
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(3))
            .danger_accept_invalid_certs(true)
            .build()?;
        let mut request = client.request(method, &url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send()?;
        let status = response.status().as_u16();
        Ok((status, response.text()?))
    })?
}

/// GET a JSON document of the API.
pub fn api_json(ns: &NetNs, path: &str) -> Result<Value> {
    let (status, body) = http(ns, "GET", &api_url(path), None)?;
    if status != 200 {
        bail!("GET {path} answered {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON: {body}"))
}

/// Retries `check` until it returns `Ok(Some(_))`, for at most `limit`.
pub fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        let last = match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "condition not met".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("{what}: not within {}s ({last})", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `ctr` against a containerd socket in Hivemind's namespace, for checks a
/// user would make by hand and for cleanup.
/// A free TCP port of 127.0.0.1 (for a listener the test starts next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `hivemind web --mock` (in-memory runtime, no kernel features, no root) on a free port of
/// 127.0.0.1 with the test admin token; killed when dropped.
pub struct MockWeb {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl MockWeb {
    /// Starts it and waits (30 s at most) until `up(port)` says it answers.
    pub fn start(binary: &Path, up: impl Fn(u16) -> bool) -> Result<Self> {
        let port = free_port();
        let dir = tempfile::tempdir().context("temp dir")?;
        let token_file = dir.path().join("test.token");
        std::fs::write(&token_file, TEST_TOKEN).context("write the token")?;
        let child = Command::new(binary)
            .args([
                "web",
                "--mock",
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--admin-token-file")
            .arg(&token_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start hivemind web --mock")?;
        let web = Self {
            port,
            child,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !up(port) {
            if std::time::Instant::now() > deadline {
                bail!("hivemind web --mock did not answer within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(web)
    }
}

impl Drop for MockWeb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sh -c script` in `container` through the containerd at `socket`, under a fresh exec
/// id: its standard output.
pub fn ctr_sh(socket: &Path, container: &str, script: &str) -> Result<String> {
    let exec_id = format!(
        "x{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    ctr(
        socket,
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

pub fn ctr(socket: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", "hivemind"])
        .args(args)
        .output()
        .context("run ctr")?;
    if !output.status.success() {
        bail!(
            "ctr {args:?} failed with {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Ids in the first column of a `ctr ... ls` listing.
pub fn ctr_ids(socket: &Path, args: &[&str]) -> Result<Vec<String>> {
    Ok(ctr(socket, args)?
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect())
}

/// Kills and removes every task, container and container snapshot in
/// Hivemind's containerd namespace: the cleanup of a failed test.
pub fn ctr_purge(socket: &Path) {
    for id in ctr_ids(socket, &["tasks", "ls"]).unwrap_or_default() {
        let _ = ctr(
            socket,
            &["tasks", "kill", "--all", "--signal", "SIGKILL", &id],
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    for id in ctr_ids(socket, &["tasks", "ls"]).unwrap_or_default() {
        let _ = ctr(socket, &["tasks", "rm", "--force", &id]);
    }
    for id in ctr_ids(socket, &["containers", "ls"]).unwrap_or_default() {
        let _ = ctr(socket, &["containers", "rm", &id]);
    }
}

/// Network namespaces under /run/netns whose name starts with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| name.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Unmounts and removes the namespaces under /run/netns starting with `prefix`.
pub fn remove_netns_with_prefix(prefix: &str) {
    for name in netns_with_prefix(prefix) {
        let path = Path::new("/run/netns").join(&name);
        let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&path);
    }
}
