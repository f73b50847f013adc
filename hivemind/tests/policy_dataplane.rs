//! Network policy in the kernel, end to end: two nodes in network namespaces wired the way the
//! daemon wires them (as `services_dataplane.rs` does), containers on both, identities in the
//! ipcache, real TCP connections through the policy programs.
//!
//! ```text
//!  node a: client 10.244.1.2 (identity 1000), a1 10.244.1.3 (2000)   (hm0 10.244.1.1)
//!  node b: b1 10.244.2.3 (3000)                                       (hm0 10.244.2.1)
//!  service 10.96.0.10:80/tcp -> b1:8080
//! ```
//!
//! Every address lives in a namespace this test creates (named with the pid, deleted by guards
//! even on panic); nothing touches the root namespace. Needs root; without it the test prints
//! why and passes, except under `CI=true`.

use std::{
    ffi::CString,
    io::{ErrorKind, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use hivemind::dataplane::{Dataplane, ServiceBackend};
use hivemind::policy::{Allow, EndpointRules, PeerMatch, Protocol};
use hivemind_common::reason;
use hivemind_common::{OVERLAY_DEVICE, OVERLAY_MAC, VXLAN_PORT, vni};
use hivemind_tests::netns::NetNs;

const UNDERLAY: &str = "underlay";
const CLUSTER_CIDR: &str = "10.244.0.0/16";
const SERVICE_CIDR: &str = "10.96.0.0/16";
const MTU: &str = "1450";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const TCP: u8 = 6;
const HTTP_PORT: u16 = 80;
/// Where the backends listen (TCP and UDP alike): the service ports translate to it.
const BACKEND_PORT: u16 = 8080;

/// Whether the test can run here; panics instead of skipping under `CI=true`.
fn can_run(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let why = if unsafe { libc::geteuid() } != 0 {
        "not running as root"
    } else if Command::new("ip").arg("-V").output().is_err() {
        "the `ip` command (iproute2) is missing"
    } else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why}; CI treats a skipped kernel test as a failure");
    }
    eprintln!("skipping {test}: {why}");
    false
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sysctl(ns: &NetNs, setting: &str) {
    let out = ns
        .command("sysctl")
        .args(["-qw", setting])
        .output()
        .expect("run sysctl");
    assert!(
        out.status.success(),
        "sysctl {setting} in {}: {}",
        ns.name,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The ifindex of `name` in the calling thread's network namespace.
fn ifindex(name: &str) -> u32 {
    let name = CString::new(name).expect("no NUL");
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(
        index,
        0,
        "if_nametoindex: {}",
        std::io::Error::last_os_error()
    );
    index
}

/// A container: its namespace, address and host-side veth (in its node's namespace).
struct Container {
    ns: NetNs,
    name: &'static str,
    ip: Ipv4Addr,
    host_if: String,
    endpoint_id: u32,
}

struct Node {
    ns: NetNs,
    subnet: Ipv4Addr,
    gateway: Ipv4Addr,
    underlay_ip: Ipv4Addr,
    containers: Vec<Container>,
}

impl Node {
    /// Creates the node's namespace and its containers' (guards first: a failing setup still
    /// cleans up). `containers`: (name, last octet of the address).
    fn new(tag: &str, index: u8, containers: &[(&'static str, u8)]) -> Self {
        let pid = std::process::id();
        let ns = NetNs::create(&format!("hmpo-{pid}-node-{tag}")).expect("create node netns");
        let containers = containers
            .iter()
            .enumerate()
            .map(|(i, &(name, last))| Container {
                ns: NetNs::create(&format!("hmpo-{pid}-{name}")).expect("create container netns"),
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
    fn configure(&self) {
        let n = self.ns.name.as_str();
        let gateway = format!("{}/24", self.gateway);
        let mac = OVERLAY_MAC.map(|b| format!("{b:02x}")).join(":");
        let port = VXLAN_PORT.to_string();
        let underlay_ip = format!("{}/24", self.underlay_ip);
        let src = self.gateway.to_string();
        ip(&["-n", n, "addr", "add", &underlay_ip, "dev", UNDERLAY]);
        ip(&["-n", n, "link", "set", UNDERLAY, "up"]);
        ip(&["-n", n, "link", "add", "hm0", "type", "bridge"]);
        ip(&["-n", n, "addr", "add", &gateway, "dev", "hm0"]);
        ip(&["-n", n, "link", "set", "hm0", "up"]);
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
            &self.ns,
            &format!("net.ipv6.conf.{OVERLAY_DEVICE}.disable_ipv6=1"),
        );
        ip(&["-n", n, "link", "set", OVERLAY_DEVICE, "up"]);
        for cidr in [CLUSTER_CIDR, SERVICE_CIDR] {
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
        sysctl(&self.ns, "net.ipv4.ip_forward=1");
        // Loose reverse-path filtering (a common distribution default); strict mode would
        // refuse a local backend's restored reply (source: the VIP, routed via hm-vxlan) to the
        // node itself.
        sysctl(&self.ns, "net.ipv4.conf.all.rp_filter=2");
        for c in &self.containers {
            let cn = c.ns.name.as_str();
            let addr = format!("{}/24", c.ip);
            ip(&[
                "-n", n, "link", "add", &c.host_if, "mtu", MTU, "type", "veth", "peer", "name",
                "eth0", "mtu", MTU, "netns", cn,
            ]);
            ip(&["-n", n, "link", "set", &c.host_if, "master", "hm0", "up"]);
            ip(&["-n", cn, "addr", "add", &addr, "dev", "eth0"]);
            ip(&["-n", cn, "link", "set", "eth0", "up"]);
            ip(&["-n", cn, "route", "add", "default", "via", &src]);
        }
    }

    /// Loads the data plane in the node's namespace: overlay, tunnel to `peer`, node config,
    /// every container's endpoint.
    fn load_dataplane(&self, peer: &Node) -> Dataplane {
        let (subnet, underlay, gateway) = (peer.subnet, peer.underlay_ip, self.gateway);
        let endpoints: Vec<(String, u32)> = self
            .containers
            .iter()
            .map(|c| (c.host_if.clone(), c.endpoint_id))
            .collect();
        self.ns
            .run(move || {
                let mut dp = Dataplane::load().expect("load dataplane");
                dp.attach_overlay(ifindex(OVERLAY_DEVICE), ifindex(UNDERLAY))
                    .expect("attach overlay");
                dp.set_tunnel(subnet, 24, underlay, vni::DEFAULT)
                    .expect("set tunnel");
                dp.set_node_config(ifindex("hm0"), gateway, 24)
                    .expect("node config");
                for (name, id) in endpoints {
                    dp.attach_endpoint(ifindex(&name), id)
                        .expect("attach endpoint");
                }
                dp
            })
            .expect("node thread")
    }

    fn container(&self, name: &str) -> &Container {
        self.containers
            .iter()
            .find(|c| c.name == name)
            .expect("known container")
    }
}

/// The backends' servers; dropping this stops them.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// A TCP and a UDP server on `BACKEND_PORT` in `c`'s namespace, both answering
    /// "<name> <peer address>".
    fn start(&mut self, c: &Container) {
        let name = c.name;
        let (listener, udp) =
            c.ns.run(|| {
                let any = (Ipv4Addr::UNSPECIFIED, BACKEND_PORT);
                (
                    TcpListener::bind(any).expect("tcp listen"),
                    UdpSocket::bind(any).expect("udp bind"),
                )
            })
            .expect("netns thread");
        listener.set_nonblocking(true).expect("nonblocking");
        udp.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let stop = self.stop.clone();
        self.threads.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.write_all(format!("{name} {}", peer.ip()).as_bytes());
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("{name}: accept: {e}"),
                }
            }
        }));
        let stop = self.stop.clone();
        self.threads.push(thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(format!("{name} {}", peer.ip()).as_bytes(), peer);
                }
            }
        }));
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Parses "<name> <peer>".
fn parse_answer(answer: &str) -> (String, Ipv4Addr) {
    let (name, peer) = answer.split_once(' ').expect("answer has a space");
    (name.to_string(), peer.trim().parse().expect("peer address"))
}

/// One TCP connection from `ns` to `target:port`: the answer's backend name, or `None` if the
/// connection failed (a dropped SYN times out).
fn tcp_try(ns: &NetNs, target: Ipv4Addr, port: u16) -> Option<String> {
    ns.run(move || {
        let target = SocketAddr::V4(SocketAddrV4::new(target, port));
        let mut conn = TcpStream::connect_timeout(&target, Duration::from_millis(700)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut answer = String::new();
        conn.read_to_string(&mut answer).ok()?;
        Some(parse_answer(&answer).0)
    })
    .expect("client thread")
}

fn allow(peer: PeerMatch, port_min: u16, port_max: u16) -> Allow {
    Allow {
        peer,
        protocol: Protocol::Tcp,
        port_min,
        port_max,
    }
}

fn ingress(rules: &[Allow]) -> EndpointRules {
    EndpointRules {
        ingress: Some(rules.iter().copied().collect()),
        egress: None,
    }
}

const ID_CLIENT: u32 = 1000;
const ID_A1: u32 = 2000;
const ID_B1: u32 = 3000;

#[test]
fn policy_allows_and_denies_connections_in_the_kernel() {
    if !can_run("policy_allows_and_denies_connections_in_the_kernel") {
        return;
    }
    let a = Node::new("a", 1, &[("client", 2), ("a1", 3)]);
    let b = Node::new("b", 2, &[("b1", 3)]);
    ip(&[
        "-n", &a.ns.name, "link", "add", UNDERLAY, "type", "veth", "peer", "name", UNDERLAY,
        "netns", &b.ns.name,
    ]);
    a.configure();
    b.configure();
    let mut dp_a = a.load_dataplane(&b);
    let mut dp_b = b.load_dataplane(&a);
    let client = a.container("client");
    let a1 = a.container("a1");
    let b1 = b.container("b1");
    let mut servers = Servers {
        stop: Arc::new(AtomicBool::new(false)),
        threads: Vec::new(),
    };
    servers.start(a1);
    servers.start(b1);

    // What the daemon does: every node knows every container's identity (and its own gateway
    // as the host); each endpoint gets its own identity.
    for (node, dp) in [(&a, &mut dp_a), (&b, &mut dp_b)] {
        for (c, id) in [(client, ID_CLIENT), (a1, ID_A1), (b1, ID_B1)] {
            dp.set_ipcache(c.ip, 32, id).expect("ipcache");
        }
        dp.set_ipcache(node.gateway, 32, 1).expect("ipcache host");
        let on_node: Vec<(String, u32)> = node
            .containers
            .iter()
            .map(|c| {
                let id = match c.name {
                    "client" => ID_CLIENT,
                    "a1" => ID_A1,
                    _ => ID_B1,
                };
                (c.host_if.clone(), id)
            })
            .collect();
        for (host_if, id) in on_node {
            let index = node.ns.run(move || ifindex(&host_if)).expect("ns thread");
            dp.set_endpoint_identity(index, id).expect("identity");
        }
    }
    let ok = |from: &NetNs, to: Ipv4Addr, port: u16| tcp_try(from, to, port).is_some();

    // No policy: everything connects.
    assert!(ok(&client.ns, a1.ip, BACKEND_PORT));
    assert!(ok(&client.ns, b1.ip, BACKEND_PORT));
    assert!(ok(&b1.ns, a1.ip, BACKEND_PORT));

    // a1 and b1 accept the client only, on a port range containing the server's port.
    dp_a.set_endpoint_policy(
        a1.endpoint_id,
        &ingress(&[allow(PeerMatch::Identity(ID_CLIENT), 8000, 8100)]),
    )
    .expect("policy a1");
    dp_b.set_endpoint_policy(
        b1.endpoint_id,
        &ingress(&[allow(PeerMatch::Identity(ID_CLIENT), 8080, 8080)]),
    )
    .expect("policy b1");
    assert!(ok(&client.ns, a1.ip, BACKEND_PORT), "same node, allowed");
    assert!(ok(&client.ns, b1.ip, BACKEND_PORT), "across nodes, allowed");
    assert!(!ok(&b1.ns, a1.ip, BACKEND_PORT), "across nodes, denied");
    assert!(!ok(&a1.ns, b1.ip, BACKEND_PORT), "across nodes, denied");
    assert!(!ok(&a.ns, a1.ip, BACKEND_PORT), "the node itself, denied");
    // The denial on node a saw b1's identity, carried in the VNI.
    let (events, lost) = dp_a.drain_flows().expect("flows a");
    assert_eq!(lost, 0);
    assert!(
        events.iter().any(|e| e.verdict == "denied"
            && e.endpoint_id == a1.endpoint_id
            && e.peer_identity == ID_B1
            && e.direction == "ingress"
            && e.reason.code == reason::DROP_POLICY),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| e.verdict == "allowed"
            && e.src == client.ip
            && e.dst == a1.ip
            && e.dport == BACKEND_PORT),
        "{events:#?}"
    );
    let (events, _) = dp_b.drain_flows().expect("flows b");
    assert!(
        events
            .iter()
            .any(|e| e.verdict == "allowed" && e.peer_identity == ID_CLIENT),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.verdict == "denied" && e.peer_identity == ID_A1),
        "{events:#?}"
    );
    assert!(
        dp_a.endpoint_counters(a1.endpoint_id)
            .expect("counters")
            .drops[&reason::DROP_POLICY]
            >= 2
    );
    assert!(
        dp_b.endpoint_counters(b1.endpoint_id)
            .expect("counters")
            .drops[&reason::DROP_POLICY]
            >= 1
    );

    // Through a service VIP: the policy sees the backend (b1:8080) and the client identity.
    let vip_backend = ServiceBackend {
        id: 1,
        ip: b1.ip,
        port: BACKEND_PORT,
        weight: 1,
    };
    for dp in [&mut dp_a, &mut dp_b] {
        dp.set_service(VIP, HTTP_PORT, TCP, &[vip_backend])
            .expect("service");
    }
    assert_eq!(tcp_try(&client.ns, VIP, HTTP_PORT).as_deref(), Some("b1"));
    assert!(!ok(&a1.ns, VIP, HTTP_PORT), "a1 via the vip, denied");

    // A CIDR rule: node a's container subnet may reach b1 (the client and a1 alike).
    dp_b.set_endpoint_policy(
        b1.endpoint_id,
        &ingress(&[allow(PeerMatch::Cidr(a.subnet, 24), 8080, 8080)]),
    )
    .expect("cidr policy");
    assert!(ok(&a1.ns, b1.ip, BACKEND_PORT), "cidr allows a1");
    assert!(
        ok(&client.ns, b1.ip, BACKEND_PORT),
        "cidr allows the client"
    );
    // A port range that leaves the server's port out.
    dp_b.set_endpoint_policy(
        b1.endpoint_id,
        &ingress(&[allow(PeerMatch::Cidr(a.subnet, 24), 9000, 9100)]),
    )
    .expect("range policy");
    assert!(
        !ok(&client.ns, b1.ip, BACKEND_PORT),
        "port outside the range"
    );

    // Deleting b1's policy: new connections pass again.
    dp_b.set_endpoint_policy(b1.endpoint_id, &EndpointRules::default())
        .expect("delete policy");
    assert!(ok(&a1.ns, b1.ip, BACKEND_PORT));

    // An egress rule: the client may reach b1 only; the reply still comes back in.
    dp_a.set_endpoint_policy(
        client.endpoint_id,
        &EndpointRules {
            ingress: None,
            egress: Some([allow(PeerMatch::Identity(ID_B1), 8080, 8080)].into()),
        },
    )
    .expect("egress policy");
    assert!(ok(&client.ns, b1.ip, BACKEND_PORT), "egress allowed");
    assert!(!ok(&client.ns, a1.ip, BACKEND_PORT), "egress denied");
    let c = dp_a
        .endpoint_counters(client.endpoint_id)
        .expect("counters");
    assert!(c.drops[&reason::DROP_POLICY] >= 1, "{c:?}");
    let (events, _) = dp_a.drain_flows().expect("flows");
    assert!(
        events.iter().any(|e| e.verdict == "denied"
            && e.endpoint_id == client.endpoint_id
            && e.direction == "egress"
            && e.peer_identity == ID_A1),
        "{events:#?}"
    );

    drop(servers);
}
