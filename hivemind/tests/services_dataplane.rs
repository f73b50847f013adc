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

mod common;

use std::{
    collections::BTreeMap,
    io::Read as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    time::Duration,
};

use common::{Container, forwarded_datagrams, two_nodes};
use hivemind::dataplane::{Dataplane, ServiceBackend};
use hivemind_tests::kernel::{Servers, can_run, parse_answer};
use hivemind_tests::netns::NetNs;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const TCP: u8 = 6;
const UDP: u8 = 17;
const HTTP_PORT: u16 = 80;
const DNS_PORT: u16 = 53;
/// Where the backends listen (TCP and UDP alike): the service ports translate to it.
const BACKEND_PORT: u16 = 8080;

/// `n` TCP connections from `ns` to the VIP:80, each answered: (backend name, peer it saw).
fn tcp_ask(ns: &NetNs, n: usize) -> Vec<(String, Ipv4Addr)> {
    tcp_ask_at(ns, SocketAddrV4::new(VIP, HTTP_PORT), n)
}

/// `n` TCP connections from `ns` to `target`, each answered: (backend name, peer it saw).
fn tcp_ask_at(ns: &NetNs, target: SocketAddrV4, n: usize) -> Vec<(String, Ipv4Addr)> {
    ns.run(move || {
        let target = SocketAddr::V4(target);
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
fn service_vip_balances_across_nodes_with_host_routing() {
    if !can_run("service_vip_balances_across_nodes_with_host_routing") {
        return;
    }
    service_scenario("hmsv", true);
}

#[test]
fn service_vip_balances_across_nodes_through_the_kernel_path() {
    if !can_run("service_vip_balances_across_nodes_through_the_kernel_path") {
        return;
    }
    service_scenario("hmsk", false);
}

fn service_scenario(prefix: &str, host_routing: bool) {
    let (a, b) = two_nodes(prefix);
    let mut dp_a = a.load_dataplane(&b, host_routing);
    let mut dp_b = b.load_dataplane(&a, host_routing);

    let mut servers = Servers::default();
    let a1 = a.container("a1");
    let b1 = b.container("b1");
    let client = a.container("client");
    servers.start(&a1.ns, a1.name, BACKEND_PORT);
    servers.start(&b1.ns, b1.name, BACKEND_PORT);

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
    // With host routing, also what the daemon turns on with it by default: load balancing at
    // the socket, for the client's namespace. The node's own sockets stay on the per-packet
    // path here, so both paths are exercised.
    if host_routing {
        let root = hivemind::runtime::cgroup::cgroup2_root().expect("a cgroup2 hierarchy");
        dp_a.enable_socket_lb(&root).expect("socket programs");
        assert!(dp_a.socket_lb());
        let cookie = client
            .ns
            .run(hivemind::network::current_netns_cookie)
            .expect("client thread")
            .expect("netns cookie");
        dp_a.set_socket_lb_netns(cookie, true)
            .expect("translate the client");
        assert_eq!(
            dp_a.socket_lb_namespaces().expect("namespaces"),
            vec![cookie]
        );
    }
    let both = [backend(a1, 1, 1), backend(b1, 2, 1)];
    set_all([&mut dp_a, &mut dp_b], HTTP_PORT, TCP, &both);
    set_all([&mut dp_a, &mut dp_b], DNS_PORT, UDP, &both);

    // Many connections from a container: every backend answers, local and remote, and each
    // saw the client's own address (no SNAT).
    let forwarded = [forwarded_datagrams(&a.ns), forwarded_datagrams(&b.ns)];
    let answers = tcp_ask(&client.ns, 40);
    let by_backend = tally(&answers);
    eprintln!("container -> vip: {by_backend:?}");
    assert_eq!(by_backend.len(), 2, "{by_backend:?}");
    assert!(
        answers.iter().all(|(_, peer)| *peer == client.ip),
        "{answers:?}"
    );
    // Host routing delivered and encapsulated every packet of them itself, both ways: neither
    // kernel forwarded one. The kernel path forwards each on both nodes.
    let forwarded_now = [forwarded_datagrams(&a.ns), forwarded_datagrams(&b.ns)];
    eprintln!("forwarded datagrams {forwarded:?} -> {forwarded_now:?}");
    if host_routing {
        assert_eq!(forwarded, forwarded_now);
    } else {
        assert!(forwarded_now[0] >= forwarded[0] + 40, "{forwarded_now:?}");
        assert!(forwarded_now[1] > forwarded[1], "{forwarded_now:?}");
    }

    // Hairpin: a backend reaches its own service, itself included (per packet: a1's namespace
    // is not balanced at the socket); it sees the hairpin address as the client when it picked
    // itself.
    let answers = tcp_ask(&a1.ns, 30);
    let by_backend = tally(&answers);
    eprintln!("backend -> own vip: {by_backend:?}");
    assert_eq!(answers.len(), 30, "{answers:?}");
    assert_eq!(by_backend.len(), 2, "{by_backend:?}");
    let hairpin = Ipv4Addr::from(hivemind_common::HAIRPIN_IP);
    assert!(
        answers
            .iter()
            .all(|(name, peer)| *peer == if name == a1.name { hairpin } else { a1.ip }),
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

    // A published port on node a's address, from node b's own namespace (outside a's
    // containers): both backends answer, local and remote, each seeing b's address, and the
    // replies come from a's address and port (direct server return from b1's node).
    const PUBLISHED: u16 = 18081;
    for (dp, own) in [(&mut dp_a, a.underlay_ip), (&mut dp_b, b.underlay_ip)] {
        dp.set_node_address(own).expect("node address");
        dp.set_service(own, PUBLISHED, TCP, &both)
            .expect("published frontend");
        let published = both
            .iter()
            .map(|b| ((b.ip, b.port, TCP), PUBLISHED))
            .collect();
        dp.set_published(true, &published).expect("published");
    }
    let answers = tcp_ask_at(&b.ns, SocketAddrV4::new(a.underlay_ip, PUBLISHED), 20);
    let by_backend = tally(&answers);
    eprintln!("outside -> node a:{PUBLISHED}: {by_backend:?}");
    assert_eq!(by_backend.len(), 2, "{by_backend:?}");
    assert!(
        answers.iter().all(|(_, peer)| *peer == b.underlay_ip),
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
    if host_routing {
        // The client's connections (40 + 30 + 200) and its 30 UDP queries (a send each, more
        // for a retried one) went to a backend at the socket: no per-packet translation, no
        // conntrack entry. Node-a's own 30 took the per-packet path.
        assert!(ca.socket_translated >= 40 + 30 + 200 + 30, "{ca:?}");
        assert!(ca.new_connections >= ca.socket_translated + 30, "{ca:?}");
        let ct = dp_a.conntrack_entries().expect("ct");
        assert!((2 * 30..2 * 300).contains(&ct), "{ct} conntrack entries");
        assert!(ca.reverse_translated.packets >= 30, "{ca:?}");
    } else {
        // Container connections (40 + 30 + 200) and node-a's own (30); the 30 UDP
        // queries add at least one flow, fewer than 30 when a source port repeats
        // (a repeated 5-tuple is the same flow).
        assert_eq!(ca.socket_translated, 0, "{ca:?}");
        assert!(ca.new_connections > 40 + 30 + 30 + 200, "{ca:?}");
        assert!(
            ca.reverse_translated.packets >= ca.new_connections,
            "{ca:?}"
        );
        assert!(dp_a.conntrack_entries().expect("ct") >= 2 * 300);
    }
    assert!(ca.drops.is_empty(), "{ca:?}");
    assert!(cb.new_connections >= 10, "{cb:?}");

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
