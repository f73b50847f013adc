//! A multi-node cluster on one machine (DESIGN.md, "The testbed"): each node
//! a network namespace with its own containerd (started by its daemon) and
//! daemon, joined by veth pairs to a bridge that lives in a namespace of its
//! own. Nothing touches the root namespace's links or routes.
//!
//! Addresses (all configured on the testbed's own namespaces):
//! bridge namespace 192.168.100.1 (the registry), node i 192.168.100.(10+i).

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

    fn containerd_socket(&self) -> PathBuf {
        self.data_dir.join("containerd.sock")
    }

    fn containerd_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data_dir.join("data/containerd/containerd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
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
        };
        for index in 1..=count {
            testbed.add_node(index)?;
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
            "--insecure-registry".to_string(),
            format!("{BRIDGE_IP}:{REGISTRY_PORT}"),
        ];
        if index > 1 {
            args.push("--join".to_string());
            args.push(format!("{}:7946", node_ip(1)));
        }
        let daemon = Daemon::start_with(
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
        node.id = node.fetch_id()?;
        self.nodes.push(node);
        Ok(())
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

impl Drop for Testbed {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.daemon.kill9();
        }
        for node in &self.nodes {
            ctr_purge(&node.containerd_socket());
            if let Some(pid) = node.containerd_pid() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            remove_netns_with_prefix(&format!("hm-{}-", node.id));
            crate::containerd::cleanup_after(&node.containerd_socket(), &node.data_dir);
        }
        self.registry = None;
    }
}
