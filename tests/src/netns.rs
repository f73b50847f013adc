//! Network namespaces the tests create, and ways to run code inside them.
//!
//! Only the network namespace is entered (setns on /run/netns/NAME), never the
//! mount namespace: `ip netns exec` remounts /sys and hides the cgroup mounts
//! that runc needs.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A named network namespace, deleted on drop.
pub struct NetNs {
    pub name: String,
    /// Whether dropping this value deletes the namespace.
    owned: bool,
}

impl NetNs {
    /// Creates `/run/netns/<name>` with loopback up.
    pub fn create(name: &str) -> Result<Self> {
        // A namespace left over by an earlier, killed run of the same test.
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(std::process::Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Self {
            name: name.to_string(),
            owned: true,
        };
        run(ns.command("ip").args(["link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// A handle on an existing namespace that does not delete it on drop.
    pub fn existing(name: &str) -> Self {
        Self {
            name: name.to_string(),
            owned: false,
        }
    }

    /// A handle on an existing namespace that deletes it on drop.
    pub fn existing_owned(name: &str) -> Self {
        Self {
            name: name.to_string(),
            owned: true,
        }
    }

    /// Keeps the namespace when this value is dropped.
    pub fn keep(&mut self) {
        self.owned = false;
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// A command whose process runs in this network namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        let path = self.path();
        // SAFETY: between fork and exec only async-signal-safe calls happen:
        // open(2) and setns(2) through nix, no allocation after the path was built.
        unsafe {
            command.pre_exec(move || {
                let file = File::open(&path)?;
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
        command
    }

    /// Runs `f` on a fresh thread that has entered this network namespace,
    /// so every socket it opens lives there.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        run_in(self.path(), f)
    }

    /// Waits until something accepts TCP connections on `127.0.0.1:port` in this namespace
    /// (a connection only, no request), for at most `within`; `Ok(false)` if nothing did.
    pub fn listening(&self, port: u16, within: std::time::Duration) -> Result<bool> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if self.run(move || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())? {
                return Ok(true);
            }
            if std::time::Instant::now() > deadline {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// IPv4 datagrams this namespace's kernel forwarded (`Ip: ForwDatagrams` of its
    /// `/proc/net/snmp`): host routing keeps container-to-container traffic out of it.
    pub fn forwarded_datagrams(&self) -> Result<u64> {
        let snmp = self.run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))??;
        let mut ip_lines = snmp.lines().filter(|l| l.starts_with("Ip:"));
        let (Some(names), Some(values)) = (ip_lines.next(), ip_lines.next()) else {
            bail!("no Ip: lines in /proc/net/snmp of {}", self.name);
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(name, _)| *name == "ForwDatagrams")
            .and_then(|(_, value)| value.parse().ok())
            .with_context(|| format!("no ForwDatagrams in /proc/net/snmp of {}", self.name))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a command to completion and fails with its stderr when it fails.
pub fn run(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("spawn {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `f` on a thread whose network namespace is the one at `path` (`/run/netns/NAME` or
/// `/proc/PID/ns/net`, a container's).
pub fn run_in<T: Send + 'static>(
    path: impl Into<PathBuf>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let path = path.into();
    std::thread::spawn(move || -> Result<T> {
        let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("setns {}", path.display()))?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in netns panicked"))?
}

/// A TCP server in a namespace that answers every connection with the address it came from
/// (a line) and closes it: what "outside the cluster" sees of a client.
pub struct PeerServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    peers: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<std::net::IpAddr, u64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeerServer {
    /// Listens on `addr` inside `ns`; returns once the socket is bound.
    pub fn start(ns: &NetNs, addr: std::net::SocketAddr) -> Result<Self> {
        use std::io::Write as _;
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let peers = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
        let (ready, bound) = std::sync::mpsc::channel();
        let path = ns.path();
        let (stop_flag, seen) = (stop.clone(), peers.clone());
        let thread = std::thread::spawn(move || {
            let listener = File::open(&path)
                .context("open netns")
                .and_then(|f| {
                    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")
                })
                .and_then(|()| {
                    let l = std::net::TcpListener::bind(addr).context("bind")?;
                    l.set_nonblocking(true).context("nonblocking")?;
                    Ok(l)
                });
            let listener = match listener {
                Ok(l) => {
                    let _ = ready.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            while !stop_flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = writeln!(stream, "{}", peer.ip());
                        if let Ok(mut seen) = seen.lock() {
                            *seen.entry(peer.ip()).or_insert(0) += 1;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
                }
            }
        });
        bound
            .recv()
            .context("peer server thread ended before binding")??;
        Ok(Self {
            stop,
            peers,
            thread: Some(thread),
        })
    }

    /// Connections so far, by the client address the server saw.
    pub fn peers(&self) -> std::collections::BTreeMap<std::net::IpAddr, u64> {
        self.peers.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
