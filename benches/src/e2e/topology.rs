//! The namespaces of one tier-3 configuration and the ways to wire them: plain routing, the
//! kernel's overlay with iptables or nftables policy or kube-proxy-style service DNAT, and
//! Hivemind's data plane.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use hivemind::{
    dataplane::{Dataplane, IpcacheEntry, ServiceBackend, UnderlayProgram},
    policy::{Allow, EndpointRules, PeerMatch, Protocol},
};
use hivemind_common::{
    IPPROTO_TCP, IPPROTO_UDP, OVERLAY_DEVICE, OVERLAY_MAC, VXLAN_PORT, identity, vni,
};
use hivemind_tests::netns::{NetNs, run as run_cmd};

use super::{CLIENT, ENDPOINT_A, ENDPOINT_B, HOST_IF, MTU, PORT, SERVER};

/// The four namespaces of one configuration; dropping them deletes every link and address.
pub(super) struct Topology {
    pub(super) na: NetNs,
    pub(super) nb: NetNs,
    pub(super) ca: NetNs,
    pub(super) cb: NetNs,
}

fn ipn(ns: &NetNs, args: &[&str]) -> Result<()> {
    run_cmd(Command::new("ip").arg("-n").arg(&ns.name).args(args)).map(|_| ())
}

/// The address of node `node`'s one container.
fn container_ip(node: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, node, 2)
}

/// The MAC of container 10.244.`node`.2, as the daemon derives it from the address.
fn container_mac(node: u8) -> String {
    hivemind_common::container_mac(container_ip(node).octets())
        .map(|b| format!("{b:02x}"))
        .join(":")
}

fn sysctl(ns: &NetNs, setting: &str) -> Result<()> {
    run_cmd(ns.command("sysctl").args(["-qw", setting])).map(|_| ())
}

impl Topology {
    /// Namespaces, underlay veth, bridge `hm0` with the gateway, one container per node.
    pub(super) fn new(prefix: &str) -> Result<Self> {
        let t = Self {
            na: NetNs::create(&format!("{prefix}-na"))?,
            nb: NetNs::create(&format!("{prefix}-nb"))?,
            ca: NetNs::create(&format!("{prefix}-ca"))?,
            cb: NetNs::create(&format!("{prefix}-cb"))?,
        };
        ipn(
            &t.na,
            &[
                "link", "add", "underlay", "type", "veth", "peer", "name", "underlay", "netns",
                &t.nb.name,
            ],
        )?;
        for (i, node, ctr) in [(1u8, &t.na, &t.ca), (2, &t.nb, &t.cb)] {
            ipn(
                node,
                &[
                    "addr",
                    "add",
                    &format!("192.168.77.{i}/24"),
                    "dev",
                    "underlay",
                ],
            )?;
            ipn(node, &["link", "set", "underlay", "up"])?;
            ipn(node, &["link", "set", "lo", "up"])?;
            ipn(node, &["link", "add", "hm0", "type", "bridge"])?;
            ipn(
                node,
                &["addr", "add", &format!("10.244.{i}.1/24"), "dev", "hm0"],
            )?;
            ipn(node, &["link", "set", "hm0", "up"])?;
            ipn(
                node,
                &[
                    "link",
                    "add",
                    HOST_IF,
                    "mtu",
                    MTU,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "mtu",
                    MTU,
                    // The container MAC the daemon gives (host routing writes it).
                    "address",
                    &container_mac(i),
                    "netns",
                    &ctr.name,
                ],
            )?;
            ipn(node, &["link", "set", HOST_IF, "master", "hm0", "up"])?;
            ipn(
                ctr,
                &["addr", "add", &format!("10.244.{i}.2/24"), "dev", "eth0"],
            )?;
            ipn(ctr, &["link", "set", "eth0", "up"])?;
            ipn(ctr, &["link", "set", "lo", "up"])?;
            ipn(
                ctr,
                &["route", "add", "default", "via", &format!("10.244.{i}.1")],
            )?;
            sysctl(node, "net.ipv4.ip_forward=1")?;
            sysctl(node, "net.ipv4.conf.all.rp_filter=2")?;
        }
        Ok(t)
    }

    fn nodes(&self) -> [(u8, u8, &NetNs); 2] {
        [(1, 2, &self.na), (2, 1, &self.nb)]
    }

    /// (1) Each node routes the other's container subnet via the underlay veth.
    pub(super) fn plain(&self) -> Result<()> {
        for (_, peer, node) in self.nodes() {
            ipn(
                node,
                &[
                    "route",
                    "add",
                    &format!("10.244.{peer}.0/24"),
                    "via",
                    &format!("192.168.77.{peer}"),
                    "dev",
                    "underlay",
                ],
            )?;
        }
        Ok(())
    }

    /// (2) The kernel's overlay as flannel's vxlan backend sets it up.
    pub(super) fn kernel_overlay(&self) -> Result<()> {
        let mac = |i: u8| format!("02:00:0a:f4:{i:02x}:00");
        for (me, peer, node) in self.nodes() {
            let port = VXLAN_PORT.to_string();
            ipn(
                node,
                &[
                    "link",
                    "add",
                    "vx0",
                    "address",
                    &mac(me),
                    "mtu",
                    MTU,
                    "type",
                    "vxlan",
                    "id",
                    "1",
                    "local",
                    &format!("192.168.77.{me}"),
                    "dev",
                    "underlay",
                    "dstport",
                    &port,
                    "nolearning",
                ],
            )?;
            ipn(
                node,
                &["addr", "add", &format!("10.244.{me}.0/32"), "dev", "vx0"],
            )?;
            ipn(node, &["link", "set", "vx0", "up"])?;
            let peer_gw = format!("10.244.{peer}.0");
            ipn(
                node,
                &[
                    "route",
                    "add",
                    &format!("10.244.{peer}.0/24"),
                    "via",
                    &peer_gw,
                    "dev",
                    "vx0",
                    "onlink",
                ],
            )?;
            ipn(
                node,
                &[
                    "neigh",
                    "replace",
                    &peer_gw,
                    "lladdr",
                    &mac(peer),
                    "dev",
                    "vx0",
                    "nud",
                    "permanent",
                ],
            )?;
            run_cmd(node.command("bridge").args([
                "fdb",
                "append",
                &mac(peer),
                "dev",
                "vx0",
                "dst",
                &format!("192.168.77.{peer}"),
            ]))?;
        }
        Ok(())
    }

    /// (3) The allow-policy as a linear FORWARD chain on node B: replies from B first, then
    /// `n - 2` rules for other sources, then client TCP and UDP; everything else dropped.
    pub(super) fn iptables(&self, n: usize) -> Result<()> {
        let mut text = String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n");
        text.push_str(":OUTPUT ACCEPT [0:0]\n");
        text.push_str(&format!("-A FORWARD -s {SERVER}/32 -j ACCEPT\n"));
        for i in 0..n.saturating_sub(2) {
            text.push_str(&format!(
                "-A FORWARD -s {}/32 -d {SERVER}/32 -p tcp --dport {PORT} -j ACCEPT\n",
                filler(i)
            ));
        }
        for proto in ["tcp", "udp"] {
            text.push_str(&format!(
                "-A FORWARD -s {CLIENT}/32 -d {SERVER}/32 -p {proto} --dport {PORT} -j ACCEPT\n"
            ));
        }
        text.push_str("COMMIT\n");
        pipe(&mut self.nb.command("iptables-restore"), &text)
    }

    /// (4) The same policy as one nftables verdict-map lookup (source . protocol . port).
    pub(super) fn nftables(&self, n: usize) -> Result<()> {
        let mut elements: Vec<String> = (0..n.saturating_sub(2))
            .map(|i| format!("{} . tcp . {PORT} : accept", filler(i)))
            .collect();
        elements.push(format!("{CLIENT} . tcp . {PORT} : accept"));
        elements.push(format!("{CLIENT} . udp . {PORT} : accept"));
        let text = format!(
            "table ip hmbench {{\n  map allow {{\n    type ipv4_addr . inet_proto . inet_service \
             : verdict\n    elements = {{ {} }}\n  }}\n  chain forward {{\n    type filter \
             hook forward priority 0; policy drop;\n    ip saddr {SERVER} accept\n    ip daddr \
             {SERVER} ip saddr . meta l4proto . th dport vmap @allow\n  }}\n}}\n",
            elements.join(", ")
        );
        pipe(self.nb.command("nft").args(["-f", "-"]), &text)
    }

    /// (6) kube-proxy's iptables mode on node A for `n` services of one backend each (container
    /// B): PREROUTING jumps to KUBE-SERVICES, one rule per service port to its KUBE-SVC chain,
    /// which jumps to its KUBE-SEP chain, which DNATs. The measured service (the last) has a
    /// TCP and a UDP port, the others TCP. With one endpoint kube-proxy writes no statistic
    /// match (it does for several: `-m statistic --mode random --probability 1/k`).
    pub(super) fn iptables_dnat(&self, n: usize) -> Result<()> {
        let mut text = String::from(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n",
        );
        let protos = |i: usize| {
            if i + 1 == n {
                &["tcp", "udp"][..]
            } else {
                &["tcp"][..]
            }
        };
        for i in 0..n {
            for proto in protos(i) {
                text.push_str(&format!(
                    ":KUBE-SVC-{i}-{proto} - [0:0]\n:KUBE-SEP-{i}-{proto} - [0:0]\n"
                ));
            }
        }
        text.push_str("-A PREROUTING -j KUBE-SERVICES\n");
        for i in 0..n {
            for proto in protos(i) {
                text.push_str(&format!(
                    "-A KUBE-SERVICES -d {}/32 -p {proto} --dport {PORT} -j KUBE-SVC-{i}-{proto}\n\
                     -A KUBE-SVC-{i}-{proto} -j KUBE-SEP-{i}-{proto}\n\
                     -A KUBE-SEP-{i}-{proto} -p {proto} -j DNAT --to-destination {SERVER}:{PORT}\n",
                    vip(i)
                ));
            }
        }
        text.push_str("COMMIT\n");
        pipe(&mut self.na.command("iptables-restore"), &text)
    }

    /// (7) kube-proxy's nftables mode on node A: one verdict map from VIP . protocol . port to
    /// a chain per service that DNATs to container B.
    pub(super) fn nftables_dnat(&self, n: usize) -> Result<()> {
        let protos = |i: usize| {
            if i + 1 == n {
                &["tcp", "udp"][..]
            } else {
                &["tcp"][..]
            }
        };
        let mut elements = Vec::new();
        let mut chains = String::new();
        for i in 0..n {
            for proto in protos(i) {
                elements.push(format!(
                    "{} . {proto} . {PORT} : goto service-{i}-{proto}",
                    vip(i)
                ));
                chains.push_str(&format!(
                    "  chain service-{i}-{proto} {{\n    meta l4proto {proto} dnat to \
                     {SERVER}:{PORT}\n  }}\n"
                ));
            }
        }
        let text = format!(
            "table ip hmbench {{\n{chains}  map service-ips {{\n    type ipv4_addr . inet_proto \
             . inet_service : verdict\n    elements = {{ {} }}\n  }}\n  chain prerouting {{\n    \
             type nat hook prerouting priority dstnat;\n    ip daddr . meta l4proto . th dport \
             vmap @service-ips\n  }}\n}}\n",
            elements.join(", ")
        );
        pipe(self.na.command("nft").args(["-f", "-"]), &text)
    }

    /// (5) Hivemind: hm-vxlan as the daemon creates it, the data plane per node with the
    /// underlay validation where `underlay` says and host routing on or off; `n` ingress CIDR
    /// rules on container B when `n > 0`.
    pub(super) fn hivemind(
        &self,
        n: usize,
        underlay: UnderlayProgram,
        host_routing: bool,
    ) -> Result<Vec<Dataplane>> {
        let mac = OVERLAY_MAC.map(|b| format!("{b:02x}")).join(":");
        let port = VXLAN_PORT.to_string();
        let mut planes = Vec::new();
        for (me, peer, node) in self.nodes() {
            ipn(
                node,
                &[
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
                ],
            )?;
            ipn(node, &["link", "set", OVERLAY_DEVICE, "arp", "off"])?;
            sysctl(
                node,
                &format!("net.ipv6.conf.{OVERLAY_DEVICE}.disable_ipv6=1"),
            )?;
            ipn(node, &["link", "set", OVERLAY_DEVICE, "up"])?;
            // The cluster and service CIDRs, as the daemon routes them.
            for cidr in ["10.244.0.0/16", "10.96.0.0/16"] {
                ipn(
                    node,
                    &[
                        "route",
                        "add",
                        cidr,
                        "dev",
                        OVERLAY_DEVICE,
                        "src",
                        &format!("10.244.{me}.1"),
                    ],
                )?;
            }
            let endpoint = if me == 1 { ENDPOINT_A } else { ENDPOINT_B };
            let dp = node.run(move || -> Result<Dataplane> {
                let mut dp = Dataplane::load().context("loading the data plane")?;
                dp.attach_overlay(
                    crate::rate::ifindex(OVERLAY_DEVICE)?,
                    crate::rate::ifindex("underlay")?,
                    underlay,
                )?;
                dp.set_tunnel(
                    Ipv4Addr::new(10, 244, peer, 0),
                    24,
                    Ipv4Addr::new(192, 168, 77, peer),
                    vni::DEFAULT,
                )?;
                dp.set_node_config(
                    crate::rate::ifindex("hm0")?,
                    Ipv4Addr::new(10, 244, me, 1),
                    24,
                )?;
                dp.attach_endpoint(crate::rate::ifindex(HOST_IF)?, endpoint, container_ip(me))?;
                dp.set_host_routing(host_routing)?;
                // The ipcache as the daemon writes it: each node's container with an identity
                // of its own and its gateway as the host, placed on the node's underlay
                // address when it is the peer's (host routing encapsulates on that alone).
                for n in [me, peer] {
                    let node = (n != me).then(|| Ipv4Addr::new(192, 168, 77, n));
                    for (ip, id) in [
                        (container_ip(n), identity::FIRST_ALLOCATED + u32::from(n)),
                        (Ipv4Addr::new(10, 244, n, 1), identity::HOST),
                    ] {
                        let entry = IpcacheEntry {
                            identity: id,
                            tunnel_endpoint: node,
                        };
                        dp.set_ipcache(ip, entry)
                            .with_context(|| format!("placing {ip} in the ipcache"))?;
                    }
                }
                Ok(dp)
            })??;
            planes.push(dp);
        }
        if n > 0 {
            let mut ingress = BTreeSet::new();
            let allow = |peer, protocol| Allow {
                peer,
                protocol,
                port_min: 5201,
                port_max: 5201,
            };
            for i in 0..n.saturating_sub(2) {
                ingress.insert(allow(PeerMatch::Cidr(filler(i), 32), Protocol::Tcp));
            }
            ingress.insert(allow(PeerMatch::Cidr(CLIENT, 32), Protocol::Tcp));
            ingress.insert(allow(PeerMatch::Cidr(CLIENT, 32), Protocol::Udp));
            let rules = EndpointRules {
                ingress: Some(ingress),
                egress: None,
            };
            planes[1]
                .set_endpoint_policy(ENDPOINT_B, &rules)
                .with_context(|| format!("loading {n} policy rules"))?;
        }
        Ok(planes)
    }
}

impl Topology {
    /// Load balancing at the socket on node A for container A's namespace, as the daemon
    /// does for its containers: the cgroup programs on the machine's cgroup2 root.
    pub(super) fn socket_lb(&self, plane: &mut Dataplane) -> Result<()> {
        let root = hivemind::runtime::cgroup::cgroup2_root().context("a cgroup2 hierarchy")?;
        plane.enable_socket_lb(&root)?;
        let cookie = self.ca.run(hivemind::network::current_netns_cookie)??;
        plane.set_socket_lb_netns(cookie, true)?;
        Ok(())
    }
}

/// Node A's underlay address: where the published-port configurations' client (node B's own
/// namespace, outside node A's containers) connects.
pub(super) const NODE_A: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);

impl Topology {
    /// A NodePort as kube-proxy's iptables mode makes it, for a local endpoint
    /// (externalTrafficPolicy: Local): on node A, PREROUTING DNAT of NODE_A:5201 (TCP and
    /// UDP) to container A; conntrack restores the replies' source.
    pub(super) fn iptables_published(&self) -> Result<()> {
        let mut text = String::from(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :POSTROUTING ACCEPT [0:0]\n:KUBE-NODEPORTS - [0:0]\n\
             -A PREROUTING -d 192.168.77.1/32 -j KUBE-NODEPORTS\n",
        );
        for proto in ["tcp", "udp"] {
            text.push_str(&format!(
                "-A KUBE-NODEPORTS -p {proto} --dport {PORT} -j DNAT --to-destination \
                 {CLIENT}:{PORT}\n"
            ));
        }
        text.push_str("COMMIT\n");
        pipe(&mut self.na.command("iptables-restore"), &text)
    }
}

/// The one backend of the benchmark's services: `ip`, port 5201, id 1.
fn backend_on_5201(ip: Ipv4Addr) -> Result<ServiceBackend> {
    Ok(ServiceBackend {
        id: 1,
        ip,
        port: PORT.parse()?,
        weight: 1,
    })
}

/// Hivemind's published port 5201 on node A's address (TCP and UDP), to container A, as the
/// daemon writes it for `--publish 5201:5201`.
pub(super) fn hivemind_published(plane: &mut Dataplane) -> Result<()> {
    let backend = backend_on_5201(CLIENT)?;
    let port = backend.port;
    plane.set_node_address(NODE_A)?;
    let mut published = std::collections::BTreeMap::new();
    for proto in [IPPROTO_TCP, IPPROTO_UDP] {
        plane.set_service(NODE_A, port, proto, &[backend])?;
        published.insert((CLIENT, port, proto), port);
    }
    plane.set_published(true, &published)?;
    Ok(())
}

/// VIP of service `i`: 10.96.0.1 upwards (Hivemind's service CIDR).
pub(super) fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + i as u32)
}

/// Loads `n` services of one backend (container B, port 5201) into node A's data plane: TCP
/// for each, UDP too for the measured (last) one.
pub(super) fn hivemind_services(plane: &mut Dataplane, n: usize) -> Result<()> {
    let backend = backend_on_5201(SERVER)?;
    let port = backend.port;
    for i in 0..n {
        plane
            .set_service(vip(i), port, IPPROTO_TCP, &[backend])
            .with_context(|| format!("service {i} of {n}"))?;
    }
    plane.set_service(vip(n.saturating_sub(1)), port, IPPROTO_UDP, &[backend])?;
    Ok(())
}

/// The source address of filler rule `i`: 10.250.0.0/16 onwards, never the client.
fn filler(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 250, 0, 1)) + i as u32)
}

fn pipe(command: &mut Command, input: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {command:?}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
