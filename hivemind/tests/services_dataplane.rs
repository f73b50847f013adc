//! Service load balancing in the kernel, end to end: two nodes in network namespaces wired the
//! way the daemon wires them (as in `overlay.rs`), containers on both, the eBPF data plane on
//! every container veth and on the overlay, a service VIP with backends on both nodes, real
//! TCP and UDP sockets.
//!
//! ```text
//!  node a: client 10.244.1.2, backend a1 10.244.1.3     (hm0 10.244.1.1, underlay 192.168.77.1)
//!  node b: backend b1 10.244.2.3                        (hm0 10.244.2.1, underlay 192.168.77.2)
//!  service 10.96.0.10:80/tcp and 10.96.0.10:53/udp
//! ```
//!
//! Each node also routes the service CIDR to `hm-vxlan` (`src` its gateway) so that the node's
//! own connections reach the VIP, and runs with loose reverse-path filtering. Every address
//! lives in a namespace this test creates; nothing touches the root namespace. Needs root;
//! without it the test prints why and passes, except under `CI=true`.

use std::{
    collections::BTreeMap,
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
use hivemind_common::{OVERLAY_DEVICE, OVERLAY_MAC, VXLAN_PORT, vni};
use hivemind_tests::netns::NetNs;

const UNDERLAY: &str = "underlay";
const CLUSTER_CIDR: &str = "10.244.0.0/16";
const SERVICE_CIDR: &str = "10.96.0.0/16";
const MTU: &str = "1450";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const TCP: u8 = 6;
const UDP: u8 = 17;
const HTTP_PORT: u16 = 80;
const DNS_PORT: u16 = 53;
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
        let ns = NetNs::create(&format!("hmsv-{pid}-node-{tag}")).expect("create node netns");
        let containers = containers
            .iter()
            .enumerate()
            .map(|(i, &(name, last))| Container {
                ns: NetNs::create(&format!("hmsv-{pid}-{name}")).expect("create container netns"),
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

/// `n` TCP connections from `ns` to the VIP:80, each answered: (backend name, peer it saw).
fn tcp_ask(ns: &NetNs, n: usize) -> Vec<(String, Ipv4Addr)> {
    ns.run(move || {
        let target = SocketAddr::V4(SocketAddrV4::new(VIP, HTTP_PORT));
        (0..n)
            .map(|i| {
                let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(3))
                    .unwrap_or_else(|e| panic!("connection {i} to the vip: {e}"));
                assert_eq!(conn.peer_addr().expect("peer"), target);
                conn.set_read_timeout(Some(Duration::from_secs(3)))
                    .expect("timeout");
                let mut answer = String::new();
                conn.read_to_string(&mut answer)
                    .unwrap_or_else(|e| panic!("answer {i}: {e}"));
                parse_answer(&answer)
            })
            .collect()
    })
    .expect("client thread")
}

/// `n` UDP queries from `ns` to the VIP:53, each from a fresh socket (a fresh source port).
fn udp_ask(ns: &NetNs, n: usize) -> Vec<(String, Ipv4Addr)> {
    ns.run(move || {
        (0..n)
            .map(|i| {
                let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
                sock.set_read_timeout(Some(Duration::from_millis(500)))
                    .expect("timeout");
                let mut buf = [0u8; 512];
                // A lost datagram (e.g. the first one waiting for ARP) is retried.
                for _ in 0..5 {
                    sock.send_to(b"query", (VIP, DNS_PORT)).expect("send");
                    if let Ok((len, from)) = sock.recv_from(&mut buf) {
                        assert_eq!(from, SocketAddr::from((VIP, DNS_PORT)), "query {i}");
                        return parse_answer(std::str::from_utf8(&buf[..len]).expect("utf-8"));
                    }
                }
                panic!("query {i}: no answer from the vip");
            })
            .collect()
    })
    .expect("client thread")
}

fn tally(answers: &[(String, Ipv4Addr)]) -> BTreeMap<String, usize> {
    let mut by_backend = BTreeMap::new();
    for (name, _) in answers {
        *by_backend.entry(name.clone()).or_insert(0) += 1;
    }
    by_backend
}

#[test]
fn service_vip_balances_across_nodes_in_the_kernel() {
    if !can_run("service_vip_balances_across_nodes_in_the_kernel") {
        return;
    }
    // Guards first: every namespace (and with it every link) goes away on drop, panics included.
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

    let mut servers = Servers {
        stop: Arc::new(AtomicBool::new(false)),
        threads: Vec::new(),
    };
    let a1 = a.container("a1");
    let b1 = b.container("b1");
    let client = a.container("client");
    servers.start(a1);
    servers.start(b1);

    let backend = |c: &Container, id: u32, weight: u32| ServiceBackend {
        id,
        ip: c.ip,
        port: BACKEND_PORT,
        weight,
    };
    // Every node carries every service (the daemon writes the same records everywhere).
    let set_all = |dps: [&mut Dataplane; 2], port: u16, proto: u8, backends: &[ServiceBackend]| {
        for dp in dps {
            dp.set_service(VIP, port, proto, backends)
                .expect("set service");
        }
    };
    let both = [backend(a1, 1, 1), backend(b1, 2, 1)];
    set_all([&mut dp_a, &mut dp_b], HTTP_PORT, TCP, &both);
    set_all([&mut dp_a, &mut dp_b], DNS_PORT, UDP, &both);

    // Many connections from a container: every backend answers, local and remote, and each
    // saw the client's own address (no SNAT).
    let answers = tcp_ask(&client.ns, 40);
    let by_backend = tally(&answers);
    eprintln!("container -> vip: {by_backend:?}");
    assert_eq!(by_backend.len(), 2, "{by_backend:?}");
    assert!(
        answers.iter().all(|(_, peer)| *peer == client.ip),
        "{answers:?}"
    );

    // The node itself reaches the VIP (through hm-vxlan: DNAT there, a local backend via the
    // bridge, a remote one through the tunnel); the backends see the node's gateway address.
    let answers = tcp_ask(&a.ns, 30);
    let by_backend = tally(&answers);
    eprintln!("node -> vip: {by_backend:?}");
    assert_eq!(by_backend.len(), 2, "{by_backend:?}");
    assert!(
        answers.iter().all(|(_, peer)| *peer == a.gateway),
        "{answers:?}"
    );

    // UDP: answers come back from the VIP:53, both backends serve.
    let answers = udp_ask(&client.ns, 30);
    let by_backend = tally(&answers);
    eprintln!("udp container -> vip: {by_backend:?}");
    assert_eq!(by_backend.len(), 2, "{by_backend:?}");
    assert!(
        answers.iter().all(|(_, peer)| *peer == client.ip),
        "{answers:?}"
    );

    // Removing a backend: no new connection reaches it.
    set_all([&mut dp_a, &mut dp_b], HTTP_PORT, TCP, &both[..1]);
    let answers = tcp_ask(&client.ns, 30);
    assert_eq!(tally(&answers), BTreeMap::from([("a1".to_string(), 30)]));
    let answers = tcp_ask(&b.ns, 10);
    assert_eq!(tally(&answers), BTreeMap::from([("a1".to_string(), 10)]));

    // Weights 90/10 (the heavy one remote this time): roughly that split.
    set_all(
        [&mut dp_a, &mut dp_b],
        HTTP_PORT,
        TCP,
        &[backend(a1, 1, 10), backend(b1, 2, 90)],
    );
    let answers = tcp_ask(&client.ns, 200);
    let by_backend = tally(&answers);
    eprintln!("weights 10/90: {by_backend:?}");
    let heavy = by_backend.get("b1").copied().unwrap_or(0);
    assert!(heavy > 120, "{by_backend:?}");
    assert!(heavy < 200, "{by_backend:?}");

    // The programs say what they did.
    let ca = dp_a.service_counters().expect("counters");
    let cb = dp_b.service_counters().expect("counters");
    eprintln!("node-a services: {ca:?}\nnode-b services: {cb:?}");
    // Container connections (40 + 30 + 200), node-a's own (30) and UDP queries (30).
    assert!(ca.new_connections >= 40 + 30 + 30 + 30 + 200, "{ca:?}");
    assert!(
        ca.reverse_translated.packets >= ca.new_connections,
        "{ca:?}"
    );
    assert!(ca.drops.is_empty(), "{ca:?}");
    assert!(cb.new_connections >= 10, "{cb:?}");
    assert!(dp_a.conntrack_entries().expect("ct") >= 2 * 300);

    // Without backends the VIP refuses (dropped in the kernel, counted).
    set_all([&mut dp_a, &mut dp_b], HTTP_PORT, TCP, &[]);
    let refused = client
        .ns
        .run(|| {
            TcpStream::connect_timeout(
                &SocketAddr::from((VIP, HTTP_PORT)),
                Duration::from_millis(500),
            )
            .is_err()
        })
        .expect("client thread");
    assert!(refused, "connected to a service without backends");
    assert!(dp_a.service_counters().expect("counters").no_backend_drops >= 1);

    drop(servers);
}
