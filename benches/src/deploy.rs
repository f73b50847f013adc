//! Control plane against containerd itself: deploy latency (REST call to the first HTTP answer
//! of the new container) against `ctr run` of the same local image, and the daemon's memory
//! with many containers.
//!
//! Everything runs in one namespace of the harness: a containerd of its own (state under a
//! temporary directory), `hivemind daemon` on 127.0.0.1 with that containerd, and the test app
//! image (busybox httpd) imported from an OCI archive, so nothing is pulled over a network.
//! Apps, containers, the daemon, containerd and the namespace are removed on return.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use hivemind_tests::containerd::TestContainerd;
use hivemind_tests::daemon::{Daemon, api_url, ctr, eventually, http};
use hivemind_tests::image::build_test_image;
use hivemind_tests::netns::NetNs;

use hivemind::model::MAX_REPLICAS;

use crate::control::vm_rss_kb;
use crate::report::{Row, Target};

const SECTION: &str = "Control plane";
const IMAGE: &str = "localhost/hm/bench-app:1";
/// How long one deploy may take before the run is called failed.
const DEPLOY_LIMIT: Duration = Duration::from_secs(60);
/// Poll period while waiting for the first answer: the resolution of the figures.
const POLL: Duration = Duration::from_millis(5);

pub struct Config {
    /// Timed deploys of each kind (after one untimed warm-up of each).
    pub runs: usize,
    /// How long the fresh daemon idles before its memory is read.
    pub idle: Duration,
    /// Replicas of the app whose daemon memory is measured (and that take the flow load of
    /// the dashboard's scale figures).
    pub containers: u32,
    /// How long each of the dashboard's scale windows (without and with the load) lasts.
    pub window: Duration,
}

/// New flows a second the dashboard's scale figures put on the node.
const FLOW_RATE: u64 = 10_000;
/// Source ports the flow load sends from.
const LOAD_PORTS: u16 = 200;
/// Distinct (source port, destination, destination port) tuples the load cycles through at
/// least: more than the data plane's `HM_FLOW_SEEN` remembers (65,536), so every datagram is a
/// new flow.
const LOAD_TUPLES: usize = 150_000;

/// CPU time (user + system) of `pid` so far, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) end with ')'.
    let rest = stat.rsplit_once(')').context("malformed /proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse::<f64>()?)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// The dashboard's work of one second on the flows and traffic pages, as the page does it:
/// new flows from the cursor (at most 500), the traffic samples since the last, the apps and
/// the cluster's health. Returns the new cursor and how long the round took.
fn page_round(stack: &Stack, cursor: &str, since: u64) -> Result<(String, Duration)> {
    let started = Instant::now();
    let flows = stack.get(&format!("/api/flows/recent?limit=500&cursor={cursor}"))?;
    stack.get(&format!("/api/traffic?since={since}"))?;
    stack.get("/api/apps")?;
    stack.get("/api/health")?;
    let cursor = flows["cursor"].as_str().unwrap_or_default().to_string();
    Ok((cursor, started.elapsed()))
}

/// Flow events the node processed and lost so far (its `/metrics`).
fn flow_totals(stack: &Stack) -> Result<(f64, f64)> {
    let (status, text) = http(&stack.ns, "GET", &api_url("/metrics"), None)?;
    if status != 200 {
        bail!("GET /metrics: {status}");
    }
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Ok((
        sum("hivemind_flows_processed_total{"),
        sum("hivemind_flows_lost_total{"),
    ))
}

/// What `dashboard_at_scale` measured.
struct Scale {
    containers: usize,
    idle_cpu: f64,
    loaded_cpu: f64,
    flows_per_s: f64,
    lost: f64,
    sent_per_s: f64,
    rounds: Vec<Duration>,
    window: Duration,
}

/// The dashboard at scale: the daemon's CPU over `window` with the running containers and no
/// load, then over `window` again while the node sees `FLOW_RATE` new flows a second (UDP
/// datagrams from the node to every container, each from one of `LOAD_PORTS` source ports in
/// turn) and a client does the dashboard's work every second (`page_round`).
fn dashboard_at_scale(
    stack: &Stack,
    pid: u32,
    ips: &[Ipv4Addr],
    window: Duration,
) -> Result<Scale> {
    let before = cpu_seconds(pid)?;
    std::thread::sleep(window);
    let idle_cpu = (cpu_seconds(pid)? - before) / window.as_secs_f64();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        let ips = ips.to_vec();
        let ns = stack.ns.path();
        std::thread::spawn(move || {
            hivemind_tests::netns::run_in(ns, move || -> Result<u64> {
                let sockets: Vec<std::net::UdpSocket> = (0..LOAD_PORTS)
                    .map(|i| std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 40000 + i)))
                    .collect::<std::io::Result<_>>()?;
                // Destination ports enough for LOAD_TUPLES with this many containers.
                let per_port = ips.len() * usize::from(LOAD_PORTS);
                let dports = LOAD_TUPLES.div_ceil(per_port);
                let started = Instant::now();
                let mut sent = 0u64;
                let mut next = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Paced in steps of 10 ms.
                    let due = (started.elapsed().as_secs_f64() * FLOW_RATE as f64) as u64;
                    while sent < due {
                        let socket = &sockets[(next / ips.len()) % sockets.len()];
                        let ip = ips[next % ips.len()];
                        let dport = 1024 + (next / per_port) % dports;
                        let _ = socket.send_to(b"flow", (ip, dport as u16));
                        next += 1;
                        sent += 1;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(sent)
            })
        })
    };
    let (flows_before, lost_before) = flow_totals(stack)?;
    let before = cpu_seconds(pid)?;
    let started = Instant::now();
    let mut cursor = String::new();
    let mut rounds = Vec::new();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    while started.elapsed() < window {
        let round_started = Instant::now();
        let (next, took) = page_round(stack, &cursor, since)?;
        cursor = next;
        rounds.push(took);
        std::thread::sleep(Duration::from_secs(1).saturating_sub(round_started.elapsed()));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let loaded_cpu = (cpu_seconds(pid)? - before) / elapsed;
    let (flows_after, lost_after) = flow_totals(stack)?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the flow sender panicked"))???;
    rounds.sort();
    Ok(Scale {
        containers: ips.len(),
        idle_cpu,
        loaded_cpu,
        flows_per_s: (flows_after - flows_before) / elapsed,
        lost: lost_after - lost_before,
        sent_per_s: sent as f64 / elapsed,
        rounds,
        window,
    })
}

/// Removes the apps and stops the daemon, then containerd (in that order) when dropped.
struct Stack {
    daemon: Daemon,
    containerd: TestContainerd,
    ns: NetNs,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Ok(apps) = self.get("/api/apps")
            && let Some(apps) = apps.as_array()
        {
            for app in apps {
                if let Some(name) = app["name"].as_str() {
                    let _ = self.delete_app(name);
                }
            }
        }
        let _ = self.daemon.terminate();
    }
}

impl Stack {
    /// Imports `image` as `name` through an OCI archive written at `archive`.
    fn import(
        &self,
        image: &hivemind_tests::image::TestImage,
        name: &str,
        archive: &Path,
    ) -> Result<()> {
        image.write_oci_archive_named(archive, name)?;
        let imported = self
            .daemon
            .cli(&["image", "import", &archive.display().to_string()]);
        if !imported.status.success() {
            bail!(
                "image import: {}",
                String::from_utf8_lossy(&imported.stderr)
            );
        }
        Ok(())
    }

    fn get(&self, path: &str) -> Result<serde_json::Value> {
        let (status, body) = http(&self.ns, "GET", &api_url(path), None)?;
        if status != 200 {
            bail!("GET {path}: {status} {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// Deletes an app and waits until none of its containers is left.
    fn delete_app(&self, name: &str) -> Result<()> {
        let (status, body) = http(
            &self.ns,
            "DELETE",
            &api_url(&format!("/api/apps/{name}")),
            None,
        )?;
        if status != 200 {
            bail!("DELETE app {name}: {status} {body}");
        }
        eventually(
            &format!("containers of {name} removed"),
            Duration::from_secs(120),
            || {
                let left = self
                    .get("/api/containers")?
                    .as_array()
                    .map(|list| list.iter().filter(|c| c["app"] == name).count())
                    .unwrap_or(0);
                Ok((left == 0).then_some(()))
            },
        )
    }

    /// POST /api/deploy of `replicas` of the app image as `name`, port 80.
    fn deploy(&self, name: &str, replicas: u32) -> Result<()> {
        let body = serde_json::json!({
            "image": IMAGE, "name": name, "replicas": replicas, "ports": [80],
        });
        let (status, answer) = http(
            &self.ns,
            "POST",
            &api_url("/api/deploy"),
            Some(&body.to_string()),
        )?;
        if status != 200 && status != 201 {
            bail!("POST /api/deploy {name}: {status} {answer}");
        }
        Ok(())
    }

    /// The IPs of the running containers of `app`.
    fn running_ips(&self, app: &str) -> Result<Vec<Ipv4Addr>> {
        Ok(self
            .get("/api/containers")?
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|c| c["app"] == app && c["status"] == "running")
                    .filter_map(|c| c["ip"].as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// Whether `addr` answers `GET /greeting` with 200.
fn answers(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /greeting HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// Polls `find` (the address to try, once known) until it answers, inside `ns`; the time from
/// `start` to the first answer.
fn first_answer(
    ns: &NetNs,
    start: Instant,
    mut find: impl FnMut() -> Result<Option<SocketAddr>>,
) -> Result<Duration> {
    let mut addr = None;
    loop {
        if addr.is_none() {
            addr = find()?;
        }
        if let Some(a) = addr
            && ns.run(move || answers(a))?
        {
            return Ok(start.elapsed());
        }
        if start.elapsed() > DEPLOY_LIMIT {
            bail!("no answer within {}s", DEPLOY_LIMIT.as_secs());
        }
        std::thread::sleep(POLL);
    }
}

/// One deploy through the REST API: POST /api/deploy to the first 200 from the container.
fn hivemind_deploy(stack: &Stack, name: &str) -> Result<Duration> {
    let start = Instant::now();
    stack.deploy(name, 1)?;
    let took = first_answer(&stack.ns, start, || {
        Ok(stack
            .running_ips(name)?
            .first()
            .map(|ip| SocketAddr::from((*ip, 80))))
    })?;
    stack.delete_app(name)?;
    Ok(took)
}

/// One `ctr run -d --net-host` of the same image (its httpd on the namespace's port 80) to the
/// first 200 on 127.0.0.1:80.
fn ctr_run(stack: &Stack, socket: &Path, name: &str) -> Result<Duration> {
    let start = Instant::now();
    ctr(socket, &["run", "-d", "--net-host", IMAGE, name])?;
    let took = first_answer(&stack.ns, start, || {
        Ok(Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 80))))
    });
    let _ = ctr(socket, &["tasks", "kill", "--signal", "SIGKILL", name]);
    eventually("ctr task stopped", Duration::from_secs(20), || {
        Ok(ctr(socket, &["tasks", "rm", name]).is_ok().then_some(()))
    })?;
    ctr(socket, &["containers", "rm", name])?;
    took
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn run(
    binary: &Path,
    ns_name: &str,
    cfg: &Config,
    notes: &mut Vec<String>,
) -> Result<Vec<Row>> {
    if !binary.exists() {
        bail!("{} is missing: build it first", binary.display());
    }
    let dir = tempfile_dir()?;
    let result = measure(binary, ns_name, &dir, cfg, notes);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// What one image scan took, against reading its layer alone.
struct ScanTime {
    image_mb: usize,
    packages: u64,
    advisories: usize,
    scan: Duration,
    gunzip: Duration,
}

/// Imports an image of `mb` MB (the test app, this machine's dpkg database and os-release, and
/// incompressible bytes), an OSV database with one advisory for each of its packages, and
/// times `POST /api/security/scans` with `refresh` (the layers read and matched again each
/// time; the database warm), the median of 3, against `gzip -dc` of the same layer.
fn scan_time(stack: &Stack, dir: &Path, mb: usize) -> Result<ScanTime> {
    const NAME: &str = "localhost/hm/bench-scan:1";
    let status = std::fs::read_to_string("/var/lib/dpkg/status")?;
    let (os_release, release) = hivemind_tests::image::os_release()?;
    // xorshift: bytes gzip cannot shrink, so the layer is as large as the image.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut payload = Vec::with_capacity(mb << 20);
    while payload.len() < mb << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        payload.extend_from_slice(&state.to_le_bytes());
    }
    let image = hivemind_tests::image::build_test_image_with(
        &dir.join("scan-image"),
        "scan",
        &[
            ("var/lib/dpkg/status", status.as_bytes()),
            ("etc/os-release", &os_release),
            ("opt/payload/blob", &payload),
        ],
        NAME,
    )?;
    drop(payload);
    stack.import(&image, NAME, &dir.join("scan-image.tar"))?;
    let records: Vec<serde_json::Value> = status
        .split("\n\n")
        .filter_map(|p| p.lines().find_map(|l| l.strip_prefix("Package: ")))
        .enumerate()
        .map(|(i, package)| {
            serde_json::json!({
                "id": format!("BENCH-{i}"),
                "affected": [{
                    "package": {"ecosystem": format!("Debian:{release}"), "name": package},
                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:0"}]}],
                }],
            })
        })
        .collect();
    let body = serde_json::to_string(&records)?;
    let (code, answer) = http(
        &stack.ns,
        "POST",
        &api_url("/api/security/vulndb"),
        Some(&body),
    )?;
    if code != 200 {
        bail!("vulndb import: {code} {answer}");
    }
    let request = serde_json::json!({"image": NAME, "refresh": true}).to_string();
    let mut scans = Vec::new();
    let mut packages = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let (code, answer) = http(
            &stack.ns,
            "POST",
            &api_url("/api/security/scans"),
            Some(&request),
        )?;
        scans.push(started.elapsed());
        if code != 200 {
            bail!("scan: {code} {answer}");
        }
        let report: serde_json::Value = serde_json::from_str(&answer)?;
        packages = report["packages"].as_u64().unwrap_or(0);
        if report["findings"].as_array().map_or(0, Vec::len) == 0 {
            bail!(
                "the scan found none of the {} advisories: {answer:.500}",
                records.len()
            );
        }
    }
    let layer = image.blob_path(&image.layer_digest);
    let mut gunzips = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -dc {} > /dev/null", layer.display()))
            .status()?;
        gunzips.push(started.elapsed());
        if !out.success() {
            bail!("gzip -dc of the layer failed");
        }
    }
    scans.sort();
    gunzips.sort();
    Ok(ScanTime {
        image_mb: mb,
        packages,
        advisories: records.len(),
        scan: scans[1],
        gunzip: gunzips[1],
    })
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("hivemind-bench-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The time of an offline vulnerability scan of an image of `mb` MB (section `scan`): a fresh
/// stack (namespace, containerd, daemon), torn down on return.
pub fn scan(binary: &Path, ns_name: &str, mb: usize) -> Result<Vec<Row>> {
    if !binary.exists() {
        bail!("{} is missing: build it first", binary.display());
    }
    let dir = tempfile_dir()?;
    let result = start(binary, ns_name, &dir).and_then(|stack| scan_time(&stack, &dir, mb));
    let _ = std::fs::remove_dir_all(&dir);
    let scan = result?;
    Ok(vec![Row {
        section: "Image security",
        name: format!(
            "Image scan, warm database: a {} MB Debian-based image ({} packages from this \
             machine's dpkg database, {} advisories), its layer read from containerd",
            scan.image_mb, scan.packages, scan.advisories
        ),
        value: ms(scan.scan),
        baseline: Some(ms(scan.gunzip)),
        baseline_name: "gzip -dc of the image's layer".into(),
        unit: "ms",
        target: Target::ValueAtMost(5000.0),
    }])
}

/// A namespace with a containerd of its own and the daemon on it.
fn start(binary: &Path, ns_name: &str, dir: &Path) -> Result<Stack> {
    let ns = NetNs::create(ns_name)?;
    let containerd = TestContainerd::start(&ns, &dir.join("containerd"))?;
    let socket = containerd.socket.clone();
    // The ingress stays off: the `ctr run --net-host` baseline serves on this namespace's port 80.
    // A /22 of container addresses: the memory and scale figures run up to 500 containers.
    let daemon = Daemon::start_with(
        &ns,
        binary,
        &dir.join("data"),
        &socket,
        Ipv4Addr::LOCALHOST,
        [
            "--ingress-http-port",
            "0",
            "--ingress-https-port",
            "0",
            "--subnet",
            "10.244.0.0/22",
        ]
        .map(String::from)
        .to_vec(),
    )?;
    Ok(Stack {
        daemon,
        containerd,
        ns,
    })
}

fn measure(
    binary: &Path,
    ns_name: &str,
    dir: &Path,
    cfg: &Config,
    notes: &mut Vec<String>,
) -> Result<Vec<Row>> {
    let stack = start(binary, ns_name, dir)?;
    let socket = stack.containerd.socket.clone();
    let pid = stack.daemon.pid().context("daemon pid")?;
    let command = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !command.split('\0').any(|arg| arg == "daemon") {
        bail!("pid {pid} is not the daemon: {command:?}");
    }
    std::thread::sleep(cfg.idle);
    let fresh_kb = vm_rss_kb(pid)?;
    let image = build_test_image(&dir.join("image"))?;
    stack.import(&image, IMAGE, &dir.join("image.tar"))?;

    // One untimed run of each first: the image's snapshot, the shim binaries and the daemon's
    // first-use paths are warm for both.
    hivemind_deploy(&stack, "bench-warm").context("warm-up deploy")?;
    ctr_run(&stack, &socket, "bench-ctr-warm").context("warm-up ctr run")?;
    // Alternating, so a slow spell of the machine hits both alike.
    let mut hm = Vec::new();
    let mut raw = Vec::new();
    for i in 0..cfg.runs {
        hm.push(hivemind_deploy(&stack, &format!("bench-{i}")).context("deploy")?);
        raw.push(ctr_run(&stack, &socket, &format!("bench-ctr-{i}")).context("ctr run")?);
    }
    hm.sort();
    raw.sort();

    // Memory with many containers: apps of at most `MAX_REPLICAS` replicas, `containers` in
    // all, every one answering.
    let idle_kb = vm_rss_kb(pid)?;
    let started = Instant::now();
    let apps: Vec<(String, u32)> = (0..cfg.containers.div_ceil(MAX_REPLICAS))
        .map(|i| {
            let replicas = (cfg.containers - i * MAX_REPLICAS).min(MAX_REPLICAS);
            (format!("bench-many-{i}"), replicas)
        })
        .collect();
    for (name, replicas) in &apps {
        stack.deploy(name, *replicas)?;
    }
    let all_ips = || -> Result<Vec<Ipv4Addr>> {
        let mut ips = Vec::new();
        for (name, _) in &apps {
            ips.extend(stack.running_ips(name)?);
        }
        Ok(ips)
    };
    eventually(
        "every replica of the bench-many apps running",
        Duration::from_secs(30 + 5 * u64::from(cfg.containers)),
        || Ok((all_ips()?.len() == cfg.containers as usize).then_some(())),
    )?;
    let all_running = started.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    let many_kb = vm_rss_kb(pid)?;
    let scale = dashboard_at_scale(&stack, pid, &all_ips()?, cfg.window)?;
    for (name, _) in &apps {
        stack.delete_app(name)?;
    }
    drop(stack);

    let mut rows = vec![Row {
        section: SECTION,
        name: "Daemon idle memory (VmRSS): hivemind daemon, containerd runtime, eBPF data plane"
            .into(),
        value: fresh_kb as f64 / 1024.0,
        baseline: None,
        baseline_name: "none".into(),
        unit: "MB",
        target: Target::ValueAtMost(50.0),
    }];
    for (label, p) in [("p50", 0.5), ("p95", 0.95)] {
        rows.push(Row {
            section: SECTION,
            name: format!("Deploy latency {label}: REST deploy to first HTTP answer"),
            value: ms(percentile(&hm, p)),
            baseline: Some(ms(percentile(&raw, p))),
            baseline_name: "ctr run --net-host".into(),
            unit: "ms",
            target: Target::RatioAtMost(1.5),
        });
    }
    rows.push(Row {
        section: SECTION,
        name: format!("Daemon memory (VmRSS) with {} containers", cfg.containers),
        value: many_kb as f64 / 1024.0,
        baseline: Some(idle_kb as f64 / 1024.0),
        baseline_name: "the same daemon before, no container".into(),
        unit: "MB",
        target: Target::None,
    });
    let added = (scale.loaded_cpu - scale.idle_cpu) * 100.0;
    rows.push(Row {
        section: SECTION,
        name: format!(
            "Dashboard at scale: daemon CPU added by {FLOW_RATE} new flows/s and the page's \
             polls, {} containers",
            scale.containers
        ),
        value: added.max(0.0),
        baseline: None,
        baseline_name: "none".into(),
        unit: "% of a core",
        target: Target::ValueAtMost(10.0),
    });
    rows.push(Row {
        section: SECTION,
        name: format!(
            "Dashboard at scale: slowest second of the page's work (flows, traffic, apps, \
             health), {} containers",
            scale.containers
        ),
        value: scale.rounds.last().map_or(0.0, |d| ms(*d)),
        baseline: None,
        baseline_name: "none".into(),
        unit: "ms",
        target: Target::ValueAtMost(1000.0),
    });
    rows.push(Row {
        section: SECTION,
        name: "Dashboard at scale: flow events the daemon processed (info)".into(),
        value: scale.flows_per_s,
        baseline: Some(scale.sent_per_s),
        baseline_name: "new flows sent".into(),
        unit: "events/s",
        target: Target::None,
    });
    let list = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    notes.push(format!(
        "Deploy latency: `hivemind daemon` (this build) with a containerd of its own in a \
         namespace of the harness, the test app image (busybox httpd, 1 layer) imported from an \
         OCI archive beforehand. Hivemind: POST /api/deploy of a 1-replica app with port 80, \
         then GET /api/containers until the replica runs and `GET /greeting` to its IP until it \
         answers 200 (polled every {} ms); the app is deleted (untimed) before the next. \
         Baseline: `ctr run -d --net-host` of the same image in the same containerd (no \
         network namespace, no veth, no eBPF: a raw create-and-start), polled the same way on \
         127.0.0.1:80, then killed and removed. One untimed warm-up of each, then {} of each \
         alternating; sorted, in ms: Hivemind [{}], ctr run [{}].",
        POLL.as_millis(),
        cfg.runs,
        list(&hm),
        list(&raw)
    ));
    notes.push(format!(
        "Daemon idle memory: VmRSS of `hivemind daemon` {} s after its API first answered, \
         before any request that changes state: the data plane loaded and attached (overlay, \
         underlay), DNS server, membership, API; no container.",
        cfg.idle.as_secs()
    ));
    notes.push(format!(
        "Daemon memory with containers: VmRSS of the same daemon with no container (after the \
         latency runs, {:.1} MB) and 5 s after apps of {} replicas in all (at most \
         {MAX_REPLICAS} each) had every replica running ({:.1} s after the first POST); each replica is a container with its own network \
         namespace, veth and attached TC programs.",
        idle_kb as f64 / 1024.0,
        cfg.containers,
        all_running.as_secs_f64()
    ));
    notes.push(format!(
        "Dashboard at scale: with the {} replicas of the memory figure running, the daemon's \
         CPU time (utime + stime from /proc/PID/stat) over {:.0} s idle ({:.1}% of a core), \
         then over {:.0} s while the harness sends {FLOW_RATE} UDP datagrams a second from the \
         node's namespace to the replicas, cycling through {LOAD_TUPLES} tuples of {LOAD_PORTS} \
         source ports, the replicas and destination ports (more tuples than HM_FLOW_SEEN \
         holds, so each datagram is a new flow event of an endpoint no policy selects), and a client does what the dashboard's flows and traffic pages do \
         each second: GET /api/flows/recent?limit=500 from the last cursor, \
         /api/traffic?since, /api/apps and /api/health, over HTTPS with a new connection per \
         request ({:.1}% of a core). The added CPU is the difference. Rounds of the page's \
         work, sorted, in ms: [{}]; flow events lost by the ring buffer meanwhile: {:.0}.",
        scale.containers,
        scale.window.as_secs_f64(),
        scale.idle_cpu * 100.0,
        scale.window.as_secs_f64(),
        scale.loaded_cpu * 100.0,
        list(&scale.rounds),
        scale.lost
    ));
    Ok(rows)
}
