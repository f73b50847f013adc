//! A multi-node cluster on one machine (ARCHITECTURE.md, `tests`): each node
//! a network namespace with its own containerd (started by its daemon) and
//! daemon, joined by veth pairs to a bridge that lives in a namespace of its
//! own. Nothing touches the root namespace's links or routes.
//!
//! Addresses (all configured on the testbed's own namespaces):
//! bridge namespace 192.168.100.1 (the registry), node i 192.168.100.(10+i).
//!
//! Nodes 1 and 2 route between containers in eBPF and balance services at the socket
//! (`--host-routing on --socket-lb on`, the defaults); node 3 runs both off (the kernel's
//! forwarding, per-packet service translation), so every cross-node scenario also checks that
//! both paths talk to each other.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::daemon::{Daemon, ctr_purge, eventually, remove_netns_with_prefix};
use crate::image::TestImage;
use crate::netns::{NetNs, run};
use crate::registry::Registry;

pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
pub const REGISTRY_PORT: u16 = 5000;

/// The cluster's service CIDR: not the default 10.96.0.0/16, so that every scenario checks that
/// `--service-cidr` reaches VIP allocation, DNS and the kernel's translation alike.
pub const SERVICE_CIDR: &str = "10.112.0.0/16";

/// The containers' MTU, given with `--mtu`: below what the nodes' 1500-byte links would give
/// (1450), so that every scenario checks the flag reaches the containers and the overlay.
pub const CONTAINER_MTU: u32 = 1400;

pub fn node_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 100, 10 + index as u8)
}

/// One node: its namespace and daemon.
pub struct TestNode {
    pub index: usize,
    /// The node id the daemon chose.
    pub id: String,
    pub name: String,
    pub ns: NetNs,
    pub daemon: Daemon,
    pub data_dir: PathBuf,
}

impl TestNode {
    pub fn ip(&self) -> Ipv4Addr {
        node_ip(self.index)
    }

    /// This node's id, as its daemon reports it.
    pub fn fetch_id(&self) -> Result<String> {
        let nodes = self.daemon.get("/api/nodes")?;
        nodes
            .as_array()
            .and_then(|n| n.iter().find(|n| n["is_self"] == true))
            .and_then(|n| n["id"].as_str())
            .map(str::to_string)
            .context("no self in /api/nodes")
    }

    pub fn containerd_socket(&self) -> PathBuf {
        self.data_dir.join("containerd.sock")
    }
}

pub struct Testbed {
    /// Short tag in every namespace name, unique per testbed.
    pub tag: String,
    pub bridge: NetNs,
    pub nodes: Vec<TestNode>,
    pub registry: Option<Registry>,
    pub dir: PathBuf,
    binary: PathBuf,
    /// The join token node 1 made for the others.
    join_token: Option<String>,
}

impl Testbed {
    /// Builds `count` nodes; node 1 starts the cluster, the others join it.
    pub fn up(tag: &str, count: usize, binary: &Path, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let bridge = NetNs::create(&format!("hmtb-{tag}-br"))?;
        run(bridge
            .command("ip")
            .args(["link", "add", "br0", "type", "bridge"]))?;
        run(bridge
            .command("ip")
            .args(["addr", "add", &format!("{BRIDGE_IP}/24"), "dev", "br0"]))?;
        run(bridge.command("ip").args(["link", "set", "br0", "up"]))?;
        let mut testbed = Self {
            tag: tag.to_string(),
            bridge,
            nodes: Vec::new(),
            registry: None,
            dir: dir.to_path_buf(),
            binary: binary.to_path_buf(),
            join_token: None,
        };
        // Node 1 first; the others join at the same moment (their subnet
        // claims race, as when several machines boot together).
        testbed.add_node(1)?;
        for index in 2..=count {
            testbed.add_node(index)?;
        }
        for node in &mut testbed.nodes[1..] {
            node.daemon.wait_ready(&node.ns)?;
            node.id = node.fetch_id()?;
        }
        testbed.wait_converged(count)?;
        Ok(testbed)
    }

    fn add_node(&mut self, index: usize) -> Result<()> {
        let name = format!("node-{index}");
        let ns = NetNs::create(&format!("hmtb-{}-n{index}", self.tag))?;
        let outer = format!("hmtb{}n{index}", &self.tag[..self.tag.len().min(6)]);
        // The veth is made in the node's namespace, its peer moved to the bridge.
        run(ns.command("ip").args([
            "link", "add", "eth0", "type", "veth", "peer", "name", &outer,
        ]))?;
        run(ns
            .command("ip")
            .args(["link", "set", &outer, "netns", &self.bridge.name]))?;
        run(self
            .bridge
            .command("ip")
            .args(["link", "set", &outer, "master", "br0", "up"]))?;
        run(ns.command("ip").args([
            "addr",
            "add",
            &format!("{}/24", node_ip(index)),
            "dev",
            "eth0",
        ]))?;
        run(ns.command("ip").args(["link", "set", "eth0", "up"]))?;
        let data_dir = self.dir.join(&name);
        std::fs::create_dir_all(&data_dir)?;
        let mut args = vec![
            "--node-name".to_string(),
            name.clone(),
            "--service-cidr".to_string(),
            SERVICE_CIDR.to_string(),
            "--insecure-registry".to_string(),
            format!("{BRIDGE_IP}:{REGISTRY_PORT}"),
            "--mtu".to_string(),
            CONTAINER_MTU.to_string(),
        ];
        if index == 3 {
            for flag in ["--host-routing", "--socket-lb"] {
                args.push(flag.to_string());
                args.push("off".to_string());
            }
        }
        if index > 1 {
            args.push("--join".to_string());
            args.push(format!("{}:7946", node_ip(1)));
            args.push("--join-token".to_string());
            args.push(self.join_token()?);
        }
        let daemon = Daemon::launch_with(
            &ns,
            &self.binary,
            &data_dir.join("data"),
            &data_dir.join("containerd.sock"),
            node_ip(index),
            args,
        )?;
        let mut node = TestNode {
            index,
            id: String::new(),
            name,
            ns,
            daemon,
            data_dir,
        };
        if index == 1 {
            node.daemon.wait_ready(&node.ns)?;
            node.id = node.fetch_id()?;
        }
        self.nodes.push(node);
        Ok(())
    }

    /// A join token from node 1, as an operator makes one.
    fn join_token(&mut self) -> Result<String> {
        if let Some(token) = &self.join_token {
            return Ok(token.clone());
        }
        let first = self.nodes.first().context("node 1 starts first")?;
        let created = first
            .daemon
            .cli(&["cluster", "join-token", "create", "--ttl", "1h"]);
        let token = String::from_utf8_lossy(&created.stdout).trim().to_string();
        if !created.status.success() || !token.starts_with("hmjoin_") {
            anyhow::bail!(
                "cluster join-token create: {token} {}",
                String::from_utf8_lossy(&created.stderr)
            );
        }
        self.join_token = Some(token.clone());
        Ok(token)
    }

    /// Waits until every node sees `count` alive members.
    pub fn wait_converged(&self, count: usize) -> Result<()> {
        for node in &self.nodes {
            eventually(
                &format!("{} sees {count} alive nodes", node.name),
                Duration::from_secs(60),
                || {
                    let nodes = node.daemon.get("/api/nodes")?;
                    let alive = nodes
                        .as_array()
                        .map(|n| {
                            n.iter()
                                .filter(|n| n["state"] == "alive" && n["subnet"].is_string())
                                .count()
                        })
                        .unwrap_or(0);
                    Ok((alive == count).then_some(()))
                },
            )?;
        }
        Ok(())
    }

    /// Starts a registry on the bridge namespace and pushes `image` to it as
    /// `repo:tag`; returns the reference the nodes pull.
    pub fn serve_image(&mut self, image: &TestImage, repo: &str, tag: &str) -> Result<String> {
        if self.registry.is_none() {
            let registry = Registry::start_on(
                &self.bridge,
                &self.dir.join("registry"),
                BRIDGE_IP,
                REGISTRY_PORT,
            )?;
            self.registry = Some(registry);
        }
        let registry = self.registry.as_ref().context("registry")?;
        registry.push(&self.bridge, image, repo, tag)?;
        Ok(format!("{BRIDGE_IP}:{REGISTRY_PORT}/{repo}:{tag}"))
    }

    pub fn node(&self, index: usize) -> &TestNode {
        &self.nodes[index - 1]
    }

    pub fn node_mut(&mut self, index: usize) -> &mut TestNode {
        &mut self.nodes[index - 1]
    }

    /// GET `url` from inside node `index`'s namespace.
    pub fn get_from(&self, index: usize, url: &str) -> Result<(u16, String)> {
        crate::daemon::http(&self.node(index).ns, "GET", url, None)
    }

    /// The pid of `container`'s task on node `index` (its namespaces are under /proc/PID/ns).
    pub fn task_pid(&self, index: usize, container: &str) -> Result<u32> {
        let tasks = crate::daemon::ctr(&self.node(index).containerd_socket(), &["tasks", "ls"])?;
        tasks
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next() == Some(container)).then(|| fields.next()?.parse().ok())?
            })
            .with_context(|| format!("task of {container}: {tasks}"))
    }

    /// Logs of every daemon, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.name, n.daemon.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The cluster's containers as node 1 (or the first live node) sees them.
    pub fn containers(&self, via: usize) -> Result<Vec<Value>> {
        Ok(self
            .node(via)
            .daemon
            .get("/api/containers")?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

/// What `down` needs to remove a testbed left running by `keep`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct TestbedState {
    pub bridge_ns: String,
    pub nodes: Vec<NodeState>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct NodeState {
    pub name: String,
    pub ns: String,
    pub id: String,
    pub ip: Ipv4Addr,
    pub data_dir: PathBuf,
    pub daemon_pid: Option<u32>,
}

impl Testbed {
    /// Leaves everything running and writes what `down` needs to
    /// `dir/testbed.json`.
    pub fn keep(mut self) -> Result<PathBuf> {
        let state = TestbedState {
            bridge_ns: self.bridge.name.clone(),
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeState {
                    name: n.name.clone(),
                    ns: n.ns.name.clone(),
                    id: n.id.clone(),
                    ip: n.ip(),
                    data_dir: n.data_dir.clone(),
                    daemon_pid: n.daemon.pid(),
                })
                .collect(),
        };
        let path = self.dir.join("testbed.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&state)?)?;
        for node in &mut self.nodes {
            node.daemon.detach();
            node.ns.keep();
        }
        self.bridge.keep();
        if let Some(registry) = self.registry.take() {
            std::mem::forget(registry);
        }
        self.nodes.clear();
        Ok(path)
    }

    /// Removes a testbed kept by [`Testbed::keep`].
    pub fn down(dir: &Path) -> Result<()> {
        let path = dir.join("testbed.json");
        let state: TestbedState = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("read {}", path.display()))?,
        )?;
        for node in &state.nodes {
            if let Some(pid) = node.daemon_pid {
                kill(pid as i32);
            }
        }
        for node in &state.nodes {
            teardown_node(&node.data_dir, &node.id);
            let _ = NetNs::existing_owned(&node.ns);
        }
        // The registry runs in the bridge namespace: kill what runs there.
        kill_in_netns(&state.bridge_ns);
        let _ = NetNs::existing_owned(&state.bridge_ns);
        std::fs::remove_file(&path)?;
        Ok(())
    }
}

fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Kills every process whose network namespace is /run/netns/`name`.
fn kill_in_netns(name: &str) {
    let Ok(target) = std::fs::metadata(format!("/run/netns/{name}")) else {
        return;
    };
    use std::os::unix::fs::MetadataExt;
    for (pid, dir) in crate::containerd::processes() {
        if let Ok(ns) = std::fs::metadata(dir.join("ns/net"))
            && ns.ino() == target.ino()
            && ns.dev() == target.dev()
        {
            kill(pid);
        }
    }
}

/// Removes a node's containers, its containerd and namespaces.
fn teardown_node(data_dir: &Path, id: &str) {
    let socket = data_dir.join("containerd.sock");
    ctr_purge(&socket);
    let pid_file = data_dir.join("data/containerd/containerd.pid");
    if let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|p| p.trim().parse().ok())
    {
        kill(pid);
    }
    remove_netns_with_prefix(&format!("hm-{id}-"));
    crate::daemon::remove_secrets_dir(&data_dir.join("data"));
    crate::daemon::remove_bpf_pins(&data_dir.join("data"));
    crate::containerd::cleanup_after(&socket, data_dir);
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.daemon.kill9();
        }
        for node in &self.nodes {
            teardown_node(&node.data_dir, &node.id);
        }
        self.registry = None;
    }
}

/// Runs `scenario` on a fresh testbed of `nodes` nodes: checks the
/// prerequisites (skipping, or failing under CI=true), prints the daemons'
/// logs when the scenario fails, and removes everything afterwards.
pub fn run_on_testbed(
    test: &str,
    nodes: usize,
    binary: &Path,
    scenario: impl FnOnce(&mut Testbed, &Path) -> Result<()>,
) -> Result<()> {
    if !crate::containerd::prerequisites(
        test,
        &[
            "containerd",
            "runc",
            "ctr",
            crate::registry::REGISTRY_BIN,
            crate::image::BUSYBOX,
        ],
    ) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    // Namespace names must be unique per test and short: a letter of the
    // test and the pid.
    let tag = format!(
        "{}{}",
        test.chars().next().unwrap_or('t'),
        std::process::id() % 100_000
    );
    let mut testbed = Testbed::up(&tag, nodes, binary, dir.path())?;
    let result = scenario(&mut testbed, dir.path());
    if let Err(e) = &result {
        // The logs first, the reason last: CI shows the tail of long output.
        eprintln!("{}", testbed.logs());
        eprintln!("{test} failed: {e:#}");
    }
    drop(testbed);
    result
}
