//! The two-node cluster of the kernel tests (`overlay.rs`, `services_dataplane.rs`,
//! `policy_dataplane.rs`): nodes in network namespaces wired the way the daemon wires them,
//! containers on them, the data plane loaded per node. Namespaces are named with the pid and
//! deleted by guards, even on panic.
//!
//! Each test uses a part of this module.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use hivemind::dataplane::{Dataplane, IpcacheEntry};
use hivemind_common::{OVERLAY_DEVICE, OVERLAY_MAC, VXLAN_PORT, identity, vni};
use hivemind_tests::kernel::{add_container_veth, ifindex, ip, link_veth, sysctl};
use hivemind_tests::netns::NetNs;

pub const UNDERLAY: &str = "underlay";
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
pub const MTU: &str = "1450";

/// Connects two nodes' namespaces with the underlay veth.
pub fn link_underlay(a: &NetNs, b: &NetNs) {
    link_veth(a, b, UNDERLAY);
}

/// Configures a node the way the daemon's network module does (underlay veth excluded):
/// underlay address, bridge `hm0` with `gateway`/24, the overlay device, a route of every one
/// of `cidrs` to it (`src` the gateway), forwarding.
pub fn configure_node(ns: &NetNs, gateway: Ipv4Addr, underlay_ip: Ipv4Addr, cidrs: &[&str]) {
    let n = ns.name.as_str();
    let gateway_cidr = format!("{gateway}/24");
    let mac = OVERLAY_MAC.map(|b| format!("{b:02x}")).join(":");
    let port = VXLAN_PORT.to_string();
    let underlay_ip = format!("{underlay_ip}/24");
    let src = gateway.to_string();
    ip(&["-n", n, "addr", "add", &underlay_ip, "dev", UNDERLAY]);
    ip(&["-n", n, "link", "set", UNDERLAY, "up"]);
    // The bridge holding the node's container subnet.
    ip(&["-n", n, "link", "add", "hm0", "type", "bridge"]);
    ip(&["-n", n, "addr", "add", &gateway_cidr, "dev", "hm0"]);
    ip(&["-n", n, "link", "set", "hm0", "up"]);
    // The overlay device: collect_md, one fixed MAC cluster-wide, NOARP.
    ip(&[
        "-n",
        n,
        "link",
        "add",
        OVERLAY_DEVICE,
        "address",
        &mac,
        "mtu",
        MTU,
        "type",
        "vxlan",
        "external",
        "dstport",
        &port,
        "nolearning",
    ]);
    ip(&["-n", n, "link", "set", OVERLAY_DEVICE, "arp", "off"]);
    sysctl(
        ns,
        &format!("net.ipv6.conf.{OVERLAY_DEVICE}.disable_ipv6=1"),
    );
    ip(&["-n", n, "link", "set", OVERLAY_DEVICE, "up"]);
    for cidr in cidrs {
        ip(&[
            "-n",
            n,
            "route",
            "add",
            cidr,
            "dev",
            OVERLAY_DEVICE,
            "src",
            &src,
        ]);
    }
    sysctl(ns, "net.ipv4.ip_forward=1");
}

/// A container: its namespace, address and host-side veth (in its node's namespace).
pub struct Container {
    pub ns: NetNs,
    pub name: &'static str,
    pub ip: Ipv4Addr,
    pub host_if: String,
    pub endpoint_id: u32,
}

impl Container {
    /// The identity the tests' ipcache gives the container (see `Node::load_dataplane`).
    pub fn identity(&self) -> u32 {
        1000 + self.endpoint_id
    }
}

/// A node with any number of containers, routing the cluster and the service CIDRs.
pub struct Node {
    pub ns: NetNs,
    pub subnet: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub underlay_ip: Ipv4Addr,
    pub containers: Vec<Container>,
}

impl Node {
    /// Creates the node's namespace and its containers' (guards first: a failing setup still
    /// cleans up), named `<prefix>-<pid>-...`. `containers`: (name, last octet of the address).
    pub fn new(prefix: &str, tag: &str, index: u8, containers: &[(&'static str, u8)]) -> Self {
        let pid = std::process::id();
        let ns = NetNs::create(&format!("{prefix}-{pid}-node-{tag}")).expect("create node netns");
        let containers = containers
            .iter()
            .enumerate()
            .map(|(i, &(name, last))| Container {
                ns: NetNs::create(&format!("{prefix}-{pid}-{name}"))
                    .expect("create container netns"),
                name,
                ip: Ipv4Addr::new(10, 244, index, last),
                host_if: format!("hmc{i}"),
                endpoint_id: u32::from(index) * 100 + u32::from(last),
            })
            .collect();
        Self {
            ns,
            subnet: Ipv4Addr::new(10, 244, index, 0),
            gateway: Ipv4Addr::new(10, 244, index, 1),
            underlay_ip: Ipv4Addr::new(192, 168, 77, index),
            containers,
        }
    }

    /// Configures the node as the daemon does: bridge, overlay device, cluster and service
    /// routes, forwarding, one veth per container.
    pub fn configure(&self) {
        configure_node(
            &self.ns,
            self.gateway,
            self.underlay_ip,
            &[CLUSTER_CIDR, SERVICE_CIDR],
        );
        // Loose reverse-path filtering (a common distribution default); strict mode would
        // refuse a local backend's restored reply (source: the VIP, routed via hm-vxlan) to the
        // node itself.
        sysctl(&self.ns, "net.ipv4.conf.all.rp_filter=2");
        // As the daemon does: the hairpin address lives behind the bridge.
        let hairpin = format!(
            "{}/32",
            std::net::Ipv4Addr::from(hivemind_common::HAIRPIN_IP)
        );
        ip(&[
            "-n",
            &self.ns.name,
            "route",
            "replace",
            &hairpin,
            "dev",
            "hm0",
            "scope",
            "link",
        ]);
        for c in &self.containers {
            let addr = format!("{}/24", c.ip);
            add_container_veth(&self.ns, &c.ns, &c.host_if, "hm0", MTU, &addr, self.gateway);
        }
    }

    /// The ipcache entry the daemon writes on this node for `ip` with `identity`: an address
    /// of this node (one of its containers or its gateway), else one of `peer`, placed on
    /// `peer`'s underlay address.
    pub fn ipcache_entry(&self, peer: &Node, ip: Ipv4Addr, identity: u32) -> IpcacheEntry {
        if ip == self.gateway || self.containers.iter().any(|c| c.ip == ip) {
            IpcacheEntry::local(identity)
        } else {
            IpcacheEntry::remote(identity, peer.underlay_ip)
        }
    }

    /// Loads the data plane in the node's namespace: overlay, tunnel to `peer`, node config,
    /// host routing on or off, every container's endpoint, and the ipcache the daemon writes
    /// (every container of both nodes with an identity of its own, both gateways as the host).
    pub fn load_dataplane(&self, peer: &Node, host_routing: bool) -> Dataplane {
        let (subnet, underlay, gateway) = (peer.subnet, peer.underlay_ip, self.gateway);
        let endpoints: Vec<(String, u32, Ipv4Addr)> = self
            .containers
            .iter()
            .map(|c| (c.host_if.clone(), c.endpoint_id, c.ip))
            .collect();
        let ipcache: Vec<(Ipv4Addr, IpcacheEntry)> = self
            .containers
            .iter()
            .chain(&peer.containers)
            .map(|c| (c.ip, c.identity()))
            .chain([self.gateway, peer.gateway].map(|g| (g, identity::HOST)))
            .map(|(ip, id)| (ip, self.ipcache_entry(peer, ip, id)))
            .collect();
        self.ns
            .run(move || {
                let mut dp = Dataplane::load().expect("load dataplane");
                dp.attach_overlay(
                    ifindex(OVERLAY_DEVICE),
                    ifindex(UNDERLAY),
                    hivemind::dataplane::UnderlayProgram::Auto,
                )
                .expect("attach overlay");
                dp.set_tunnel(subnet, 24, underlay, vni::DEFAULT)
                    .expect("set tunnel");
                dp.set_node_config(ifindex("hm0"), gateway, 24)
                    .expect("node config");
                dp.set_host_routing(host_routing).expect("host routing");
                assert_eq!(dp.host_routing().expect("host routing"), host_routing);
                for (name, id, ip) in endpoints {
                    dp.attach_endpoint(ifindex(&name), id, ip)
                        .expect("attach endpoint");
                }
                for (ip, entry) in ipcache {
                    dp.set_ipcache(ip, entry).expect("ipcache");
                }
                dp
            })
            .expect("node thread")
    }

    pub fn container(&self, name: &str) -> &Container {
        self.containers
            .iter()
            .find(|c| c.name == name)
            .expect("known container")
    }
}

/// IPv4 datagrams the namespace's kernel forwarded (see `NetNs::forwarded_datagrams`).
pub fn forwarded_datagrams(ns: &NetNs) -> u64 {
    ns.forwarded_datagrams().expect("ForwDatagrams")
}

/// The cluster of the service and policy tests, configured (namespaces `<prefix>-<pid>-...`):
///
/// ```text
///  node a: client 10.244.1.2, a1 10.244.1.3     (hm0 10.244.1.1, underlay 192.168.77.1)
///  node b: b1 10.244.2.3                        (hm0 10.244.2.1, underlay 192.168.77.2)
/// ```
pub fn two_nodes(prefix: &str) -> (Node, Node) {
    // Guards first: every namespace (and with it every link) goes away on drop, panics included.
    let a = Node::new(prefix, "a", 1, &[("client", 2), ("a1", 3)]);
    let b = Node::new(prefix, "b", 2, &[("b1", 3)]);
    link_underlay(&a.ns, &b.ns);
    a.configure();
    b.configure();
    (a, b)
}
